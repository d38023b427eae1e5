"""The terminal never gets control characters from outside: they are shown escaped.

A subject, an event id, a server reply or a log row may carry ESC sequences,
carriage returns or bidi overrides; printed as they are, they recolour, clear
or overwrite the operator's terminal. JSON output keeps them as JSON escapes.
"""

from __future__ import annotations

import io
import json
import smtplib
import sys
from pathlib import Path

import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer

from sysmail_ops.cli import main
from sysmail_ops.cli.output import safe
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.sending import batch as sending
from sysmail_ops.sink.server import CaptureSink
from sysmail_ops.templates import catalog as templates

# ESC sequences, CR, backspace, DEL, a C1 CSI, a bidi override, a line separator.
NASTY = ["\x1b", "\r", "\x08", "\x7f", "\x9b", "\u202e", "\u2028"]


def assert_clean(text: str) -> None:
    for ch in NASTY:
        assert ch not in text, f"{ch!r} reached the terminal in {text!r}"


@pytest.fixture
def run(ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def _run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["--home", str(ws.home), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def test_safe_escapes_controls_and_keeps_text() -> None:
    assert safe("Bericht für Köln — 3 ✓") == "Bericht für Köln — 3 ✓"
    assert safe("a\x1b[31mred\rb\tc\nd") == "a\\x1b[31mred\\rb\\tc\\nd"
    assert safe("\x7f\x9b\u202eevil\u2028\ud800") == "\\x7f\\x9b\\u202eevil\\u2028\\ud800"
    assert safe(None) == "" and safe(3) == "3"


def test_sink_list_shows_a_captured_subject_escaped(
    run,
    ws: Workspace,  # type: ignore[no-untyped-def]
) -> None:
    raw = (
        b"From: ops@example.com\r\nTo: a@example.com\r\n"
        b"Subject: =?utf-8?q?Hi_=1B[31mred=0Dfake_=C2=9B2J_=E2=80=AEevil?=\r\n\r\nbody\r\n"
    )
    with CaptureSink(ws.mailbox_dir, ws.sink_dir, port=0) as sink:
        client = smtplib.SMTP(sink.host, sink.port, timeout=5)
        with client:
            client.sendmail("ops@example.com", ["a@example.com"], raw)
    code, out, err = run("sink", "list")
    assert code == 0, err
    assert_clean(out + err)
    assert "Hi \\x1b[31mred\\rfake \\x9b2J \\u202eevil" in out
    code, out, err = run("sink", "list", "--json")
    assert code == 0, err
    assert_clean(out)
    [entry] = json.loads(out)
    assert entry["subject"] == "Hi \x1b[31mred\rfake \x9b2J \u202eevil"


def test_notify_shows_event_ids_and_errors_escaped(
    run,
    ws: Workspace,
    smtp_server: SMTPTestServer,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    bind(ws, smtp_server, "workflow", kind="workflow_notification")
    events = tmp_path / "events.jsonl"
    evil_id = json.dumps({"id": "ev-\x1b[2J\x1b[H\u202e", "flow_type": "approval_flow",
                          "flow_name": "x", "event": "approved"})  # fmt: skip
    events.write_bytes(evil_id.encode() + b"\n\x1b[31m{not json\r\n")
    code, out, err = run("notify", "--events", str(events))
    assert_clean(out + err)
    assert "ev-\\x1b[2J" in out
    code, out, err = run("events", "list")
    assert code == 0, err
    assert_clean(out + err)
    code, out, err = run("notify", "--events", str(tmp_path / "no\x1b[31m\rsuch.jsonl"))
    assert code == 2 and err.count("\n") == 1
    assert_clean(out + err)


def test_logs_and_accounts_show_server_replies_and_subjects_escaped(
    run,
    ws: Workspace,
    smtp_server: SMTPTestServer,  # type: ignore[no-untyped-def]
) -> None:
    bind(ws, smtp_server)
    templates.add_template(
        ws, "note", object_type="case", subject="Case {{ title }}", html="<p>{{ title }}</p>"
    )
    smtp_server.reject_rcpt = {"x@example.com": "550 5.1.1 \x1b[31mno such user\x1b[0m\x08\x08"}
    sending.send(ws, "service", "note", to="x@example.com", record={"title": "\x1b[2Jwiped\x08x"})
    code, out, err = run("logs", "list")
    assert code == 0, err
    assert_clean(out + err)
    assert "\\x1b[2Jwiped\\x08x" in out
    code, out, err = run("logs", "show", "1")
    assert code == 0, err
    assert_clean(out + err)
    assert "\\x1b[31mno such user" in out
    code, out, err = run("logs", "show", "1", "--json")
    assert_clean(out)
    assert "\x1b[31mno such user" in json.loads(out)["smtp_reply"]

    smtp_server.reject_connect_with = "421 4.3.2 \x1b[31mgo away\x1b[0m\r"
    code, out, err = run("accounts", "test", "service")
    assert code == 1
    assert_clean(out + err)
    assert "\\x1b[31mgo away" in out
    code, out, err = run("accounts", "show", "service")
    assert code == 0, err
    assert_clean(out + err)
    assert "\\x1b[31mgo away" in out


def test_safe_lines_escapes_each_line_and_keeps_the_breaks() -> None:
    from sysmail_ops.cli.output import safe_lines

    text = "sent 2 to ann@example.com\n  error: bad \x1b[2J subject\r\x9b"
    assert safe_lines(text).splitlines() == [
        "sent 2 to ann@example.com",
        "  error: bad \\x1b[2J subject\\r\\x9b",
    ]
