"""Real `sysmail-ops` processes fed bad outside input: one line per problem, never a traceback."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import bind
from report_fixtures import write_echo_report
from smtp_testserver import SMTPTestServer

from sysmail_ops import flows as workflows
from sysmail_ops.cli import main
from sysmail_ops.cli.templates import MAX_TEMPLATE_FILE_BYTES
from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.flows.events import MAX_EVENT_LINE_BYTES, MAX_EVENTS_BYTES
from sysmail_ops.inputs import (
    MAX_DOCUMENT_BYTES,
    MAX_JSON_DEPTH,
    MAX_LINE_BYTES,
    MAX_RECORDS_BYTES,
)
from sysmail_ops.mail.mime import MAX_ATTACHMENT_BYTES
from sysmail_ops.records import sendlog
from sysmail_ops.templates import catalog as templates


def cli_argv(ws: Workspace) -> list[str]:
    exe = shutil.which("sysmail-ops", path=str(Path(sys.executable).parent))
    assert exe
    return [exe, "--home", str(ws.home)]


def cli(ws: Workspace, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli_argv(ws), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def event(eid: str, email: str) -> str:
    return json.dumps(
        {
            "id": eid,
            "flow_type": "approval_flow",
            "flow_name": "travel",
            "event": "approved",
            "object_type": "approval",
            "object_id": eid,
            "record": {"applicant_email": email, "request": "Travel"},
        }
    )


def test_notify_reports_a_deep_line_and_a_huge_number_and_mails_the_rest(
    ws: Workspace, smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    bind(ws, smtp_server, "workflow", kind="workflow_notification")
    templates.add_template(
        ws, "granted", object_type="approval", subject="Approved: {{ request }}", html="<p>ok</p>"
    )
    workflows.add_rule(
        ws, "granted", flow_type="approval_flow", flow_name="travel", event="approved",
        account="workflow", template="granted", recipients=["field:applicant_email"],
    )  # fmt: skip
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            [
                event("E-1", "eve@example.com"),
                "[" * 5000 + "]" * 5000,
                '{"id": ' + "7" * 5000 + "}",
                event("E-2", "bo@example.org"),
            ]
        )
        + "\n"
    )
    proc = cli(ws, "notify", "--events", str(events))
    assert proc.returncode == 1, proc.stderr  # the documented "some event had a problem"
    assert proc.stderr == ""
    out = proc.stdout.splitlines()
    assert out == [
        "E-1: notified (granted -> eve@example.com sent)",
        f"events.jsonl line 2: error: not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels",
        "events.jsonl line 3: error: not valid JSON: a number has more than 4300 digits",
        "E-2: notified (granted -> bo@example.org sent)",
        "4 event(s): 2 ok, 2 with a problem",
    ]
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        "bo@example.org",
        "eve@example.com",
    ]
    rows = workflows.list_events(ws, limit=None)
    assert sorted(r["status"] for r in rows) == ["error", "error", "notified", "notified"]


@pytest.fixture
def batch(ws: Workspace, smtp_server: SMTPTestServer) -> Workspace:
    bind(ws, smtp_server)
    templates.add_template(
        ws, "greeting", object_type="contact", subject="Hi {{ name }}", html="<p>Hi {{ name }}</p>"
    )
    return ws


def send_batch(ws: Workspace, records: Path) -> subprocess.CompletedProcess[str]:
    return cli(ws, "send-batch", "service", "--template", "greeting", "--records", str(records))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "latin1.csv",
            b"email,name\nzoe@example.com,Zo\xe9\n",
            "latin1.csv line 2 is not UTF-8 text",
        ),
        (
            "latin1.jsonl",
            b'{"email": "zoe@example.com", "name": "Zo\xe9"}\n',
            "latin1.jsonl line 1 is not UTF-8 text",
        ),
        (
            "latin1.json",
            b'[{"email": "zoe@example.com", "name": "Zo\xe9"}]',
            "latin1.json is not UTF-8 text (byte 42)",
        ),
        (
            "deep.jsonl",
            b'{"email": "zoe@example.com", "name": ' + b"[" * 5000 + b"]" * 5000 + b"}\n",
            f"deep.jsonl line 1 is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels",
        ),
        (
            "huge.json",
            b'[{"email": "zoe@example.com", "name": ' + b"1" * 5000 + b"}]",
            "is not valid JSON: a number has more than 4300 digits",
        ),
        (
            "wide.csv",
            b'email,name\nzoe@example.com,"' + b"x" * 200_000 + b'"\n',
            "wide.csv line 2 is not valid CSV: field larger than field limit (131072)",
        ),
        (
            "cr.csv",
            b"email,name\rzoe@example.com,Zoe\r",
            "cr.csv line 1 is not valid CSV: a line ends in CR alone",
        ),
    ],
)
def test_send_batch_refuses_bad_records_files_on_one_line(
    batch: Workspace,
    smtp_server: SMTPTestServer,
    tmp_path: Path,
    name: str,
    content: bytes,
    message: str,
) -> None:
    records = tmp_path / name
    records.write_bytes(content)
    proc = send_batch(batch, records)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert smtp_server.messages == []
    assert sendlog.list_logs(batch).empty


def test_send_batch_stops_reading_a_records_file_that_never_ends(
    batch: Workspace, smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    """/dev/zero has no size and no line end: the reader stops at the line cap."""
    zero = tmp_path / "zero.csv"
    zero.symlink_to("/dev/zero")
    proc = send_batch(batch, zero)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.strip().endswith(
        f"zero.csv line 1 is longer than {MAX_LINE_BYTES // 2**20} MiB"
    ), proc.stderr
    assert proc.stderr.count("\n") == 1
    assert smtp_server.messages == []
    # A 2 GB file is refused by its size, before a byte of it is read.
    big = tmp_path / "big.csv"
    with big.open("wb") as fh:
        fh.truncate(2 * 1024**3)
    proc = send_batch(batch, big)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.strip().endswith(
        f"records file {big} is larger than {MAX_RECORDS_BYTES // 2**20} MiB"
    ), proc.stderr
    assert smtp_server.messages == [] and sendlog.list_logs(batch).empty
    assert accounts.get_account(batch, "service").name == "service"


# --- the other files a command reads: in-process runs, each answer one line on stderr -------


@pytest.fixture
def run(ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def _run(*argv: str, stdin: bytes = b"") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
        code = main(["--home", str(ws.home), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def refused(result: tuple[int, str, str], message: str) -> None:
    code, out, err = result
    assert code == 2 and out == "", err
    assert err.count("\n") == 1 and message in err, err


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    made = {
        "latin1": b'{"name": "Zo\xe9"}',
        "deep": b'{"name": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        "huge": b'{"name": ' + b"9" * 5000 + b"}",
        "surrogate": b'{"name": "\\ud800"}',
    }
    out = {}
    for name, content in made.items():
        out[name] = tmp_path / f"{name}.json"
        out[name].write_bytes(content)
    out["zero"] = tmp_path / "zero.json"
    out["zero"].symlink_to("/dev/zero")
    out["big"] = tmp_path / "big.json"
    with out["big"].open("wb") as fh:
        fh.truncate(2 * 1024**3)
    return out


def test_send_record_and_attachment_files(
    run, batch: Workspace, smtp_server: SMTPTestServer, files: dict[str, Path]
) -> None:
    send = ("send", "service", "--template", "greeting", "--to", "eve@example.com")
    for name, message in (
        ("latin1", "latin1.json is not UTF-8 text (byte 13)"),
        ("deep", f"deep.json is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels"),
        ("huge", "huge.json is not valid JSON: a number has more than 4300 digits"),
        ("surrogate", "surrogate.json is not valid JSON: '\\ud800' (a lone surrogate)"),
        ("zero", f"record file {files['zero']} is larger than {MAX_DOCUMENT_BYTES // 2**20} MiB"),
        ("big", f"record file {files['big']} is larger than {MAX_DOCUMENT_BYTES // 2**20} MiB"),
    ):
        refused(run(*send, "--record", str(files[name])), message)
    cap = f"is larger than {MAX_ATTACHMENT_BYTES // 2**20} MiB"
    refused(run(*send, "--field", "name=Eve", "--attach", str(files["zero"])), cap)
    refused(run(*send, "--field", "name=Eve", "--attach", str(files["big"])), cap)
    assert smtp_server.messages == []


def test_template_source_and_preview_record_files(
    run, batch: Workspace, files: dict[str, Path], tmp_path: Path
) -> None:
    add = ("templates", "add", "t", "--object", "contact", "--subject", "s")
    html = tmp_path / "latin1.html"
    html.write_bytes(b"<p>Zo\xe9</p>")
    refused(run(*add, "--html-file", str(html)), f"--html-file {html} is not UTF-8 text (byte 6)")
    cap = f"is larger than {MAX_TEMPLATE_FILE_BYTES // 2**20} MiB"
    refused(run(*add, "--html-file", str(files["zero"])), cap)
    refused(run(*add, "--html-file", str(files["big"])), cap)
    refused(run(*add, "--html-file", "-", stdin=b"<p>\xff</p>"), "--html-file - is not UTF-8 text")
    refused(run(*add, "--html-file", "-", stdin=b"x" * (MAX_TEMPLATE_FILE_BYTES + 1)), cap)
    ok = tmp_path / "ok.html"
    ok.write_text("<p>Hi {{ name }}</p>")
    refused(run(*add, "--html-file", str(ok), "--text-file", str(files["zero"])), cap)
    assert "t" not in [t.name for t in templates.list_templates(batch)]
    for name, message in (
        ("latin1", "is not UTF-8 text"),
        ("deep", "nested deeper than"),
        ("huge", "a number has more than 4300 digits"),
        ("zero", f"is larger than {MAX_DOCUMENT_BYTES // 2**20} MiB"),
        ("big", f"is larger than {MAX_DOCUMENT_BYTES // 2**20} MiB"),
    ):
        refused(run("templates", "preview", "greeting", "--record", str(files[name])), message)
    refused(
        run("templates", "preview", "greeting", "--record", "-", stdin=b"[" * 5000),
        "nested deeper than",
    )


def test_subscription_recipients_files_and_parameters(
    run, ws: Workspace, smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    bind(ws, smtp_server, "reports", kind="other")
    report = write_echo_report(tmp_path)
    add = (
        "subscriptions", "add", "rows", "--notebook", str(report), "--schedule", "0 8 * * mon",
        "--timezone", "UTC", "--account", "reports", "--owner", "owner@example.com",
    )  # fmt: skip
    people = tmp_path / "people.csv"
    people.write_bytes(b"email,region\nli@example.com,\xff\n")
    refused(run(*add, "--recipients-file", str(people)), "people.csv line 2 is not UTF-8 text")
    zero = tmp_path / "zero.csv"
    zero.symlink_to("/dev/zero")
    refused(run(*add, "--recipients-file", str(zero)), "zero.csv line 1 is longer than 1 MiB")
    # A cell or a -p value that looks like JSON but is too deep or too long is kept as text.
    people.write_text(
        "email,rows,region\nli@example.com," + "[" * 5000 + "," + "9" * 5000 + "\n", newline=""
    )
    code, _, err = run(
        *add, "--recipients-file", str(people),
        "-p", "rows=" + "[" * 5000, "-p", "region=" + "1" * 5000,
    )  # fmt: skip
    assert code == 0, err
    shown = json.loads(run("subscriptions", "show", "rows", "--json")[1])
    assert shown["parameters"] == {"rows": "[" * 5000, "region": "1" * 5000}
    assert shown["recipients"][0]["parameters"] == {"rows": "[" * 5000, "region": "9" * 5000}


def test_notify_reads_an_events_stream_that_never_ends_up_to_its_cap(
    ws: Workspace, tmp_path: Path
) -> None:
    zero = tmp_path / "zero.jsonl"
    zero.symlink_to("/dev/zero")
    proc = cli(ws, "notify", "--events", str(zero))
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr
    assert proc.stdout.splitlines() == [
        f"zero.jsonl line 1: error: a line is longer than {MAX_EVENT_LINE_BYTES // 2**20} MiB",
        f"zero.jsonl: error: stopped reading: the events are larger than "
        f"{MAX_EVENTS_BYTES // 2**20} MiB",
        "2 event(s): 0 ok, 2 with a problem",
    ]
    with Path("/dev/zero").open("rb") as stdin:
        piped = subprocess.run(
            [*cli_argv(ws), "notify", "--events", "-"],
            stdin=stdin,
            capture_output=True,
            timeout=120,
        )
    assert piped.returncode == 1 and b"stdin: error: stopped reading" in piped.stdout


def test_notify_refuses_an_events_file_over_its_cap_or_unreadable(
    ws: Workspace, tmp_path: Path
) -> None:
    big = tmp_path / "big.jsonl"
    with big.open("wb") as fh:
        fh.truncate(2 * 1024**3)
    proc = cli(ws, "notify", "--events", str(big))
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr == (
        f"sysmail-ops: error: events file {big} is larger than {MAX_EVENTS_BYTES // 2**20} MiB\n"
    )
    proc = cli(ws, "notify", "--events", str(tmp_path))
    assert proc.returncode == 2
    assert (
        proc.stderr == f"sysmail-ops: error: cannot read events file {tmp_path}: Is a directory\n"
    )
    assert workflows.list_events(ws) == []
