"""CLI: rules, notify (file and stdin), events list, directory: output, --json, exit codes."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer

from sysmail_ops.cli import main
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.templates import catalog as templates


@pytest.fixture
def run(ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def _run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["--home", str(ws.home), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


@pytest.fixture
def workflow(ws: Workspace, smtp_server: SMTPTestServer) -> Workspace:
    bind(ws, smtp_server, "workflow", kind="workflow_notification")
    templates.add_template(
        ws,
        "approval-granted",
        object_type="approval",
        subject="Approved: {{ request }}",
        html="<p>{{ approver }} approved <b>{{ request }}</b>.</p>",
    )
    return ws


def line(eid: str, **record: Any) -> str:
    rec = {"applicant_email": "eve@example.com", "request": "Travel", "approver": "Ana"}
    rec.update(record)
    return json.dumps(
        {
            "id": eid,
            "flow_type": "approval_flow",
            "flow_name": "travel",
            "event": "approved",
            "object_type": "approval",
            "object_id": eid,
            "record": rec,
        }
    )


ADD = ("rules", "add", "granted", "--flow-type", "approval_flow", "--flow-name", "travel",
       "--event", "approved", "--account", "workflow", "--template", "approval-granted",
       "--to", "field:applicant_email")  # fmt: skip


def test_rules_commands(run, workflow: Workspace) -> None:
    code, out, err = run("directory", "add", "finance", "Fay Finance", "fay@example.com")
    assert code == 0 and "added Fay Finance <fay@example.com> to finance" in out, err
    code, out, err = run(*ADD, "--to", "role:finance", "--condition", "amount > 1000")
    assert code == 0, err
    assert out.startswith("added granted: approval_flow travel approved if amount > 1000")
    code, out, _ = run("rules", "list")
    assert "granted" in out and "field:applicant_email, role:finance" in out and "1 rule" in out
    listed = json.loads(run("rules", "list", "--json")[1])
    assert listed[0]["recipients"] == ["field:applicant_email", "role:finance"]
    code, out, err = run("rules", "edit", "granted", "--condition", "", "--to", "ops@example.com")
    assert code == 0 and "-> ops@example.com" in out, err
    shown = json.loads(run("rules", "show", "granted", "--json")[1])
    assert shown["condition"] is None and shown["recent_events"] == []
    assert run("rules", "pause", "granted")[1] == "paused granted\n"
    assert json.loads(run("rules", "show", "granted", "--json")[1])["enabled"] is False
    assert run("rules", "resume", "granted")[1] == "resumed granted\n"
    code, out, _ = run("rules", "show", "granted")
    assert "condition:" in out and "(none)" in out and "last events matched (0)" in out
    code, _, err = run("templates", "remove", "approval-granted")
    assert code == 2 and "still used by rule granted" in err
    code, _, err = run("accounts", "remove", "workflow")
    assert code == 2 and "still used by rule granted" in err
    assert run("rules", "remove", "granted") == (0, "removed granted\n", "")
    code, _, err = run("rules", "show", "granted")
    assert code == 2 and "no rule named 'granted'" in err


def test_rules_add_bad_input_exit_2_one_line(run, workflow: Workspace) -> None:
    for extra, message in (
        (("--to", "bad@"), "is not valid"),
        (("--to", "role:nobody"), "no one holds role 'nobody'"),
        (("--condition", "open('x')"), "function calls are not allowed"),
        (("--account", "nope"), "no system email named 'nope'"),
    ):
        code, out, err = run(*ADD, *extra)
        assert code == 2 and out == "" and message in err and err.count("\n") == 1, err
    assert json.loads(run("rules", "list", "--json")[1]) == []
    with pytest.raises(SystemExit) as info:
        run(*ADD[:4], "workflowish")
    assert info.value.code == 2


def test_notify_file_redelivery_bad_lines_and_exit_codes(
    run, workflow: Workspace, smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    assert run(*ADD)[0] == 0
    good = tmp_path / "events.jsonl"
    good.write_text(line("AP-1") + "\n\n" + line("AP-2", applicant_email="bo@example.org") + "\n")
    code, out, err = run("notify", "--events", str(good))
    assert code == 0, err
    assert "AP-1: notified (granted -> eve@example.com sent)" in out
    assert "2 event(s): 2 ok, 0 with a problem" in out
    code, out, _ = run("notify", "--events", str(good), "--json")
    assert code == 0
    assert [s["status"] for r in json.loads(out) for s in r["sends"]] == ["skipped_duplicate"] * 2
    assert len(smtp_server.messages) == 2

    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(
        b"{not json\n"
        + line("AP-3", applicant_email="nope").encode()
        + b"\n\xff\xfe\n"
        + line("AP-4", applicant_email="zoe@example.net").encode()
        + b"\n"
    )
    code, out, err = run("notify", "--events", str(mixed))
    assert code == 1, err
    assert "mixed.jsonl line 1: error: not valid JSON" in out
    assert "AP-3 (mixed.jsonl line 2): error: rule granted: field `applicant_email`" in out
    assert "mixed.jsonl line 3: error: not UTF-8 text" in out
    assert "AP-4: notified" in out and "4 event(s): 1 ok, 3 with a problem" in out
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        "bo@example.org",
        "eve@example.com",
        "zoe@example.net",
    ]

    code, _, err = run("notify", "--events", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "does not exist" in err

    rows = json.loads(run("events", "list", "--json", "--limit", "100")[1])
    assert len(rows) == 8
    code, out, _ = run("events", "list", "--status", "error")
    assert out.count("error") == 3 and "not UTF-8" in out
    errors = json.loads(run("events", "list", "--status", "error", "--json")[1])
    assert {e["source"] for e in errors} == {f"mixed.jsonl line {n}" for n in (1, 2, 3)}
    assert len(json.loads(run("events", "list", "--event-id", "AP-1", "--json")[1])) == 2
    assert len(json.loads(run("events", "list", "--rule", "granted", "--json")[1])) == 5
    code, out, _ = run("rules", "show", "granted")
    assert "last events matched (5)" in out
    assert run("events", "prune", "--before", "2000-01-01")[1] == (
        "deleted 0 event row(s) received before 2000-01-01\n"
    )
    code, _, err = run("events", "prune", "--before", "soon")
    assert code == 2 and "ISO date" in err
    code, out, _ = run("events", "prune", "--before", "2999-01-01")
    assert code == 0 and "deleted 8 event row(s)" in out
    assert json.loads(run("events", "list", "--json")[1]) == []


def test_notify_stdin(run, workflow: Workspace, smtp_server: SMTPTestServer) -> None:
    assert run(*ADD)[0] == 0
    code, out, err = run("notify", "--events", "-", stdin=line("S-1") + "\n")
    assert code == 0 and "S-1: notified" in out, err
    code, out, _ = run("notify", "--events", "-", stdin="")
    assert code == 0 and "0 event(s)" in out
    assert len(smtp_server.messages) == 1


def test_notify_stdin_through_the_installed_command(
    workflow: Workspace, smtp_server: SMTPTestServer
) -> None:
    """A real process reading a real pipe, as another system would call it."""
    exe = shutil.which("sysmail-ops", path=str(Path(sys.executable).parent))
    assert exe
    assert main(["--home", str(workflow.home), *ADD]) == 0
    data = (line("P-1") + "\n" + line("P-2", applicant_email="x") + "\n").encode()
    proc = subprocess.run(
        [exe, "--home", str(workflow.home), "notify", "--events", "-"],
        input=data,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert b"P-1: notified" in proc.stdout and b"P-2 (stdin line 2): error" in proc.stdout
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == ["eve@example.com"]
    again = subprocess.run(
        [exe, "--home", str(workflow.home), "notify", "--events", "-"],
        input=data[: data.index(b"\n") + 1],
        capture_output=True,
        timeout=120,
    )
    assert again.returncode == 0 and b"skipped_duplicate" in again.stdout
    assert len(smtp_server.messages) == 1


def test_directory_commands(run, ws: Workspace, tmp_path: Path) -> None:
    assert run("directory", "add", "finance", "Fay", "fay@example.com")[0] == 0
    code, _, err = run("directory", "add", "finance", "Fay", "fay@example.com")
    assert code == 2 and "already lists" in err
    code, _, err = run("directory", "add", "finance", "Fay", "fay@")
    assert code == 2 and "not valid" in err
    people = tmp_path / "people.csv"
    people.write_text(
        "role,name,email\nfinance,Fay F.,fay@example.com\nlegal,Lee,lee@example.com\n"
    )
    code, out, err = run("directory", "import", str(people))
    assert code == 0 and "1 added, 1 updated, 0 unchanged" in out, err
    code, out, _ = run("directory", "list")
    assert "Fay F." in out and "lee@example.com" in out and "2 entries" in out
    assert json.loads(run("directory", "list", "--role", "legal", "--json")[1])[0]["name"] == "Lee"
    assert run("directory", "remove", "legal")[1] == "removed 1 entry from legal\n"
    code, _, err = run("directory", "remove", "legal")
    assert code == 2 and "no role named 'legal'" in err
    code, _, err = run("directory", "import", str(tmp_path / "none.csv"))
    assert code == 2 and "does not exist" in err
