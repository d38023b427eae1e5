"""CLI: send, send-batch, retry-deferred, logs, archive: output, --json, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from smtp_testserver import SMTPTestServer

from sysmail_ops.cli import main
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.templates import catalog as templates


@pytest.fixture
def run(ws: Workspace, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    def _run(*argv: str) -> tuple[int, str, str]:
        code = main(["--home", str(ws.home), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


@pytest.fixture
def greeting(ws: Workspace) -> templates.Template:
    return templates.add_template(
        ws, "greeting", object_type="contact", subject="Hi {{ name }}", html="<p>Hi {{ name }}</p>"
    )


def test_send_with_an_unreadable_attachment_is_refused_on_one_line(
    run, smtp_server: SMTPTestServer, service: object, greeting: object, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pdf"
    code, out, err = run(
        "send", "service", "--template", "greeting", "--to", "eve@example.com",
        "--field", "name=Eve", "--attach", str(missing),
    )  # fmt: skip
    assert code == 2 and out == ""
    assert err.strip().endswith(
        f"cannot read attachment {str(missing)!r}: No such file or directory"
    )
    assert "\n" not in err.strip()
    assert smtp_server.messages == []


def test_send_then_logs_and_archive(
    run, smtp_server: SMTPTestServer, service: object, greeting: object, tmp_path: Path
) -> None:
    record = tmp_path / "r.json"
    record.write_text(json.dumps({"name": "Eve"}))
    attachment = tmp_path / "notes.txt"
    attachment.write_text("hello")
    code, out, err = run(
        "send", "service", "--template", "greeting", "--to", "eve@example.com",
        "--record", str(record), "--attach", str(attachment), "--related", "contact:7",
        "--key", "k-1",
    )  # fmt: skip
    assert code == 0, err
    assert "1 sent" in out
    (got,) = smtp_server.messages
    assert [p.get_filename() for p in got.message.iter_attachments()] == ["notes.txt"]
    code, out, _ = run("send", "service", "--template", "greeting", "--to", "eve@example.com",
                       "--field", "name=Eve", "--key", "k-1", "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["counts"] == {"skipped_duplicate": 1}

    code, out, _ = run("logs", "list")
    assert code == 0 and "skipped_duplicate" in out and "eve@example.com" in out
    rows = json.loads(run("logs", "list", "--json")[1])
    assert [r["status"] for r in rows] == ["skipped_duplicate", "sent"]
    code, out, _ = run("logs", "show", str(rows[1]["id"]))
    assert code == 0 and "Hi Eve" in out
    code, out, _ = run("logs", "summary")
    assert code == 0 and "service" in out
    assert json.loads(run("logs", "summary", "--json")[1])[0]["last_24h"] == 1

    entries = json.loads(run("archive", "list", "--json")[1])
    assert len(entries) == 1 and entries[0]["attachments"] == ["notes.txt"]
    code, out, _ = run("archive", "list", "--object", "contact:7")
    assert entries[0]["id"] in out
    code, out, _ = run("archive", "show", entries[0]["id"])
    assert code == 0 and "Hi Eve" in out
    code, _, err = run("archive", "show", "nope")
    assert code == 2 and "no archived message" in err


def test_send_bad_input_exit_2(run, smtp_server: SMTPTestServer, service: object,
                               greeting: object) -> None:  # fmt: skip
    code, _, err = run("send", "service", "--template", "greeting", "--to", "eve@example.com")
    assert code == 2 and "name" in err and err.count("\n") == 1
    code, _, err = run("send", "service", "--template", "greeting", "--to", "x",
                       "--field", "name=Eve")  # fmt: skip
    assert code == 2 and "not valid" in err
    code, _, err = run("send", "service", "--template", "greeting", "--to", "eve@example.com",
                       "--field", "nonsense")  # fmt: skip
    assert code == 2 and "NAME=VALUE" in err
    assert smtp_server.messages == []


def test_send_failure_exit_1(run, smtp_server: SMTPTestServer, service: object,
                             greeting: object) -> None:  # fmt: skip
    smtp_server.reject_rcpt = {"gone@example.com": "550 5.1.1 no such user"}
    code, out, _ = run("send", "service", "--template", "greeting", "--to", "gone@example.com",
                       "--field", "name=X")  # fmt: skip
    assert code == 1 and "1 failed" in out
    rows = json.loads(run("logs", "list", "--status", "failed", "--json")[1])
    assert rows[0]["smtp_code"] == 550


def test_send_batch_dry_run_and_real(
    run, smtp_server: SMTPTestServer, service: object, greeting: object, tmp_path: Path
) -> None:
    path = tmp_path / "c.csv"
    path.write_text("email,id,name\na@example.com,1,A\nb@example.com,2,B\n")
    code, out, _ = run("send-batch", "service", "--template", "greeting", "--records", str(path),
                       "--key-column", "id", "--dry-run", "--no-progress")  # fmt: skip
    assert code == 0 and "2 dry_run" in out and "previews:" in out
    assert smtp_server.messages == []
    code, out, _ = run("send-batch", "service", "--template", "greeting", "--records", str(path),
                       "--key-column", "id", "--no-progress")  # fmt: skip
    assert code == 0 and "2 sent" in out
    code, _, err = run("send-batch", "service", "--template", "greeting", "--records",
                       str(tmp_path / "missing.csv"))  # fmt: skip
    assert code == 2 and "does not exist" in err


def test_retry_deferred_and_prune(
    run, smtp_server: SMTPTestServer, service: object, greeting: object
) -> None:
    code, out, _ = run("retry-deferred")
    assert code == 0 and "none due" in out
    assert json.loads(run("retry-deferred", "--json")[1])["waiting"] == 0
    code, out, _ = run("logs", "prune", "--before", "2000-01-01")
    assert code == 0 and "deleted 0" in out
    code, _, err = run("logs", "prune", "--before", "yesterday")
    assert code == 2 and "ISO date" in err
    code, out, _ = run("archive", "prune", "--before", "2000-01-01")
    assert code == 0 and "deleted 0" in out
    code, _, err = run("logs", "list", "--since", "soon")
    assert code == 2 and "--since" in err
