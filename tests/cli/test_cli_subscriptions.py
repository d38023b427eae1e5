"""CLI: subscriptions add/list/show/edit/pause/resume/preview/test-send/run/run-due/runs, cron."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import bind
from report_fixtures import write_echo_report
from smtp_testserver import SMTPTestServer

from sysmail_ops.cli import main
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.store.database import utcnow


@pytest.fixture
def run(ws: Workspace, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    def _run(*argv: str) -> tuple[int, str, str]:
        code = main(["--home", str(ws.home), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


@pytest.fixture
def added(run, ws: Workspace, smtp_server: SMTPTestServer, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    bind(ws, smtp_server, "reports", kind="other")
    report = write_echo_report(tmp_path)
    people = tmp_path / "people.csv"
    people.write_text("email,region\nli@example.com,APAC\nmo@example.com,\n")
    code, out, err = run(
        "subscriptions", "add", "rows", "--notebook", str(report), "--schedule", "0 8 * * mon",
        "--timezone", "Europe/Berlin", "--account", "reports", "--owner", "owner@example.com",
        "-p", "rows=2", "--recipient", "ana@example.com", "--recipient", "bo@example.com region=US",
        "--recipients-file", str(people), "--format", "html_body,csv",
    )  # fmt: skip
    assert code == 0, err
    assert "4 recipient(s) in 3 parameter set(s)" in out and "next run: " in out
    return report


def test_add_list_show_edit_pause_resume(run, added: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("subscriptions", "list")
    assert code == 0 and "rows" in out and "0 8 * * mon Europe/Berlin" in out
    assert "1 subscription" in out
    code, out, _ = run("subscriptions", "show", "rows")
    assert code == 0
    assert 'bo@example.com region="US"' in out and 'li@example.com region="APAC"' in out
    assert out.count(" CET") + out.count(" CEST") == 5  # next five runs, local time
    data = json.loads(run("subscriptions", "show", "rows", "--json")[1])
    assert data["parameters"] == {"rows": 2} and len(data["next_runs"]) == 5
    assert data["recipients"][3] == {"address": "mo@example.com", "parameters": {}}
    code, out, _ = run("subscriptions", "edit", "rows", "--schedule", "0 9 * * *")
    assert code == 0 and "'0 9 * * *'" in out
    assert data["locale"] == "en"  # the default
    assert run("subscriptions", "edit", "rows", "--locale", "de-CH")[0] == 0
    assert "locale:        de_CH" in run("subscriptions", "show", "rows")[1]
    assert run("subscriptions", "pause", "rows")[0] == 0
    assert "paused" in run("subscriptions", "list")[1]
    code, out, _ = run("subscriptions", "resume", "rows")
    assert code == 0 and "next run" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--schedule", "every monday"], "invalid schedule"),
        (["-p", "rows"], "NAME=VALUE"),
        (["-p", "nope=1"], "nope"),
        (["--recipient", "not-an-address"], "recipient"),
        (["--format", "pdf"], "unknown delivery format"),
        (["--locale", "klingon"], "unknown locale 'klingon'"),
    ],
)
def test_bad_edits_exit_2_and_change_nothing(
    run, added: Path, argv: list[str], message: str
) -> None:  # type: ignore[no-untyped-def]
    before = run("subscriptions", "show", "rows", "--json")[1]
    code, out, err = run("subscriptions", "edit", "rows", *argv)
    assert code == 2 and out == ""
    assert err.startswith("sysmail-ops: error: ") and message in err and err.count("\n") == 1
    assert run("subscriptions", "show", "rows", "--json")[1] == before


def test_run_due_runs_and_history(run, added: Path, smtp_server: SMTPTestServer) -> None:  # type: ignore[no-untyped-def]
    monday = utcnow() + timedelta(days=8)
    now = monday.strftime("%Y-%m-%dT%H:%MZ")
    code, out, err = run("subscriptions", "run-due", "--now", now)
    assert code == 0, err
    assert "rows " in out and "3 run(s) [3 succeeded], 4 sent" in out
    assert len(smtp_server.messages) == 4
    assert run("subscriptions", "run-due", "--now", now)[1].strip() == "nothing due"
    code, out, _ = run("subscriptions", "runs", "rows")
    assert code == 0 and out.count("succeeded") == 3
    rows = json.loads(run("subscriptions", "runs", "--json")[1])
    assert sorted(r["delivered"] for r in rows) == [1, 1, 2]
    code, out, _ = run("subscriptions", "run", "rows", "--now", now)
    assert code == 0 and "0 sent, 4 already delivered" in out
    assert run("subscriptions", "run-due", "--now", "tomorrow")[0] == 2


def test_run_due_exits_1_when_not_delivered_then_retries_the_deferred_only(
    run, added: Path, smtp_server: SMTPTestServer
) -> None:  # type: ignore[no-untyped-def]
    """A 550 and a 451 at the slot: run-due says so with exit 1. A later run-due re-sends
    the deferred mail from the retry queue; the refused one waits for an explicit run."""
    code, _, err = run(
        "subscriptions", "edit", "rows", "--schedule", "0 * * * *", "--timezone", "UTC"
    )
    assert code == 0, err
    # Hourly: the next full hour is a slot after the subscription was made, and the queue's
    # times (taken from the clock) stay within its two-day lifetime.
    hour = utcnow().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1, minutes=1)
    at = hour.strftime("%Y-%m-%dT%H:%MZ")
    later = (hour + timedelta(minutes=45)).strftime("%Y-%m-%dT%H:%MZ")
    smtp_server.reject_rcpt = {
        "bo@example.com": "550 5.1.1 no such mailbox",
        "li@example.com": "451 4.3.0 try again later",
    }
    code, out, err = run("subscriptions", "run-due", "--now", at)
    assert code == 1, (out, err)
    assert "2 sent, 0 already delivered, 2 not delivered" in out
    assert sorted(r for m in smtp_server.messages for r in m.rcpt_tos) == [
        "ana@example.com", "mo@example.com",
    ]  # fmt: skip
    smtp_server.reject_rcpt = {"bo@example.com": "550 5.1.1 no such mailbox"}
    code, out, err = run("subscriptions", "run-due", "--now", later)
    assert code == 0, (out, err)
    assert out.strip().endswith("deferred subscription mail: 1 sent; 0 still waiting")
    got = sorted(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert got == ["ana@example.com", "li@example.com", "mo@example.com"]  # not bo: a 5xx
    code, out, _ = run("subscriptions", "run-due", "--now", later)
    assert (code, out.strip()) == (0, "nothing due")
    # An explicit run mails the refused one again: refused again, exit 1 as well ...
    code, out, _ = run("subscriptions", "run", "rows", "--now", later)
    assert code == 1 and "0 sent, 3 already delivered, 1 not delivered" in out
    # ... and once the mailbox is back, it gets the report; nobody gets it twice.
    smtp_server.reject_rcpt = {}
    code, out, _ = run("subscriptions", "run", "rows", "--now", later)
    assert code == 0 and "1 sent, 3 already delivered, 0 not delivered" in out
    got = sorted(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert got == ["ana@example.com", "bo@example.com", "li@example.com", "mo@example.com"]


def test_preview_and_test_send(
    run, added: Path, ws: Workspace, smtp_server: SMTPTestServer
) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run("subscriptions", "preview", "rows", "--recipient", "bo@example.com")
    assert code == 0, err
    assert "1 dry_run" in out and smtp_server.messages == []
    emls = list((ws.preview_dir).rglob("*.eml"))
    assert len(emls) == 1 and b"2 rows for US" in emls[0].read_bytes()
    code, out, _ = run("subscriptions", "test-send", "rows", "--to", "me@example.com",
                       "--as", "li@example.com")  # fmt: skip
    assert code == 0 and "1 sent" in out
    (msg,) = smtp_server.messages
    assert msg.rcpt_tos == ("me@example.com",)
    assert "2 rows for APAC" in str(msg.message.get_body(("html",)).get_content())


def test_remove_then_cron(run, added: Path, ws: Workspace) -> None:  # type: ignore[no-untyped-def]
    assert run("accounts", "remove", "reports")[0] == 2  # in use
    assert run("subscriptions", "remove", "rows")[0] == 0
    assert run("subscriptions", "show", "rows")[0] == 2
    code, out, _ = run("cron")
    assert code == 0
    lines = [x for x in out.splitlines() if x and not x.startswith("#")]
    assert len(lines) == 3
    assert all(f"--home {ws.home}" in x for x in lines)
    assert "subscriptions run-due" in lines[0] and "retry-deferred" in lines[1]
    assert lines[2].startswith("*/5 * * * *") and " archive fetch >> " in lines[2]
    code, out, _ = run("cron", "--systemd")
    assert code == 0 and "OnCalendar=*:0/5" in out and "[Install]" in out
    assert "ExecStart=" in out and " archive fetch\n" in out
    assert "sysmail-ops-archive-fetch.timer" in out
