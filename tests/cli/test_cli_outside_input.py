"""Real `sysmail-ops` processes fed bad outside input: one line per problem, never a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.flows import notifications as workflows
from sysmail_ops.inputs import MAX_JSON_DEPTH, MAX_LINE_BYTES, MAX_RECORDS_BYTES
from sysmail_ops.records import sendlog
from sysmail_ops.templates import catalog as templates


def cli(ws: Workspace, *argv: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("sysmail-ops", path=str(Path(sys.executable).parent))
    assert exe
    return subprocess.run(
        [exe, "--home", str(ws.home), *argv],
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
