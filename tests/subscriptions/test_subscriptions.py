"""Report subscriptions end to end: real papermill kernels, real aiosmtpd server, real store."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import bind
from report_fixtures import write_echo_report
from smtp_testserver import SMTPTestServer

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import InUseError, NotFoundError, ValidationError
from sysmail_ops.sending import retry
from sysmail_ops.sending.batch import SendOptions, send
from sysmail_ops.store.database import utcnow
from sysmail_ops.subscriptions import model as subscriptions
from sysmail_ops.subscriptions import runs as subscription_runs
from sysmail_ops.templates import catalog as templates


@pytest.fixture
def report(tmp_path: Path) -> Path:
    return write_echo_report(tmp_path)


@pytest.fixture
def reports_account(ws: Workspace, smtp_server: SMTPTestServer) -> accounts.Account:
    return bind(ws, smtp_server, "reports", kind="other")


def subscribe(ws: Workspace, report: Path, name: str = "daily-rows", **kw: Any) -> Any:
    spec: dict[str, Any] = {
        "notebook": str(report),
        "recipients": [
            "ana@example.com",
            "bo@example.com",
            {"address": "li@example.com", "parameters": {"region": "APAC"}},
        ],
        "cron": "0 8 * * *",
        "timezone": "Europe/Berlin",
        "account": "reports",
        "owner": "owner@example.com",
    }
    spec.update(kw)
    return subscriptions.add_subscription(ws, name, **spec)


def tomorrow() -> datetime:
    return utcnow() + timedelta(days=1)


def received_by(server: SMTPTestServer) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for m in server.messages:
        for rcpt in m.rcpt_tos:
            out.setdefault(rcpt, []).append(m.message)
    return out


def html_of(message: Any) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


# --- saving -------------------------------------------------------------------------------


def test_add_normalises_and_reads_back(ws: Workspace, report: Path, reports_account: Any) -> None:
    s = subscribe(ws, report, cron="0  8 * *  mon", formats=["csv", "html_body", "csv"])
    assert s.cron == "0 8 * * mon"
    assert s.formats == ("csv", "html_body")
    assert s.template == "report-mail"
    got = subscriptions.get_subscription(ws, "daily-rows")
    assert got == s
    sets = got.parameter_sets()
    assert sorted(len(addrs) for _, addrs in sets.values()) == [1, 2]
    assert [r.address for r in got.recipients] == [
        "ana@example.com",
        "bo@example.com",
        "li@example.com",
    ]
    nxt = subscriptions.next_runs(got, 5)
    assert len(nxt) == 5 and all(t.weekday() == 0 for t in nxt)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"notebook": "no/such/report.ipynb"}, "report"),
        ({"parameters": {"colour": "red"}}, "colour"),
        ({"recipients": [{"address": "ana@example.com", "parameters": {"zone": 1}}]}, "zone"),
        ({"parameters": {"home": "/tmp"}}, "set by the runner"),
        ({"cron": "0 25 * * *"}, "invalid schedule"),
        ({"timezone": "Europe/Atlantis"}, "unknown timezone"),
        ({"recipients": ["not an address"]}, "recipient 1"),
        ({"recipients": []}, "at least one recipient"),
        ({"recipients": ["a@example.com", "A@example.com"]}, "listed twice"),
        ({"recipients": ["eve@example.com\r\nBcc: x@example.com"]}, "recipient 1"),
        ({"account": "nobody"}, "no system email named 'nobody'"),
        ({"template": "connection-test"}, "'report' template"),
        ({"template": "missing"}, "missing"),
        ({"formats": ["pdf"]}, "unknown delivery format pdf"),
        ({"owner": "owner at example"}, "owner"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_bad_subscriptions_are_refused_and_nothing_is_written(
    ws: Workspace, report: Path, reports_account: Any, change: dict[str, Any], message: str
) -> None:
    with pytest.raises((ValidationError, NotFoundError), match=message):
        subscribe(ws, report, **change)
    assert subscriptions.list_subscriptions(ws) == []


def test_duplicate_name_and_edit_pause_resume_remove(
    ws: Workspace, report: Path, reports_account: Any
) -> None:
    subscribe(ws, report)
    with pytest.raises(ValidationError, match="already exists"):
        subscribe(ws, report)
    s = subscriptions.edit_subscription(ws, "daily-rows", cron="30 7 * * mon-fri", recipients=None)
    assert s.cron == "30 7 * * mon-fri" and len(s.recipients) == 3
    with pytest.raises(ValidationError, match="invalid schedule"):
        subscriptions.edit_subscription(ws, "daily-rows", cron="nope")
    assert subscriptions.get_subscription(ws, "daily-rows").cron == "30 7 * * mon-fri"
    assert not subscriptions.set_enabled(ws, "daily-rows", False).enabled
    assert subscription_runs.run_due(ws, now=tomorrow()) == []  # paused: nothing runs
    assert subscriptions.set_enabled(ws, "daily-rows", True).enabled
    subscriptions.remove_subscription(ws, "daily-rows")
    with pytest.raises(NotFoundError):
        subscriptions.get_subscription(ws, "daily-rows")


def test_account_and_template_in_use_cannot_be_removed(
    ws: Workspace, report: Path, reports_account: Any
) -> None:
    templates.add_template(
        ws, "rows-mail", object_type="report", subject="Rows {{ slot }}",
        html="{{ report_html }}", fields=["slot", "report_html"],
    )  # fmt: skip
    subscribe(ws, report, template="rows-mail")
    with pytest.raises(InUseError, match="subscription daily-rows"):
        templates.remove_template(ws, "rows-mail")
    with pytest.raises(InUseError, match="subscription daily-rows"):
        accounts.remove_account(ws, "reports")
    subscriptions.remove_subscription(ws, "daily-rows")
    templates.remove_template(ws, "rows-mail")
    accounts.remove_account(ws, "reports")


def test_due_slot_follows_creation_and_claims(
    ws: Workspace, report: Path, reports_account: Any
) -> None:
    s = subscribe(ws, report)
    assert subscription_runs.due_slot(ws, s, utcnow()) is None  # slots before creation: not owed
    later = utcnow() + timedelta(days=3, hours=1)
    slot = subscription_runs.due_slot(ws, s, later)
    assert slot is not None and slot > utcnow() + timedelta(
        days=1
    )  # the latest, not the first missed


# --- running ------------------------------------------------------------------------------


def test_run_due_runs_once_per_parameter_set_and_mails_each_recipient_once(
    ws: Workspace, report: Path, reports_account: Any, smtp_server: SMTPTestServer
) -> None:
    subscribe(ws, report, formats=["html_body", "csv", "xlsx", "html_attachment"])
    now = tomorrow()
    results = subscription_runs.run_due(ws, now=now)
    assert len(results) == 1
    (res,) = results
    assert sorted(g.status for g in res.groups) == ["succeeded", "succeeded"]
    got = received_by(smtp_server)
    assert sorted(got) == ["ana@example.com", "bo@example.com", "li@example.com"]
    assert all(len(v) == 1 for v in got.values())
    assert "3 rows for EMEA" in html_of(got["ana@example.com"][0])
    assert "3 rows for APAC" in html_of(got["li@example.com"][0])
    assert "EMEA" not in html_of(got["li@example.com"][0])
    # The kernel read the workspace the scheduler was given, not $SYSMAIL_HOME.
    assert os.environ["SYSMAIL_HOME"] != str(ws.home)
    assert f"from {ws.home}" in html_of(got["ana@example.com"][0])
    parts = {p.get_filename(): p for p in got["ana@example.com"][0].iter_attachments()}
    assert sorted(parts) == ["report.html", "rows.csv", "rows.xlsx"]
    page = parts["report.html"].get_content()
    assert page.startswith("<!DOCTYPE html>") and ">EMEA</td>" in page

    runs = subscription_runs.list_runs(ws, "daily-rows")
    assert len(runs) == 2
    assert set(runs["status"]) == {"succeeded"}
    assert sorted(runs["recipients"]) == [1, 2] and sorted(runs["delivered"]) == [1, 2]
    assert (runs["kernel_seconds"] > 0).all() and (runs["execute_seconds"] > 0).all()
    for path in runs["output_path"]:
        assert Path(path).exists()

    # Cron calls again: the slot is done.
    assert subscription_runs.run_due(ws, now=now + timedelta(minutes=5)) == []
    # A manual rerun of the slot mails nobody twice.
    again = subscription_runs.run_now(ws, "daily-rows", now=now)
    assert sum(g.counts.get("skipped_duplicate", 0) for g in again.groups) == 3
    assert len(smtp_server.messages) == 3


def test_rerun_mails_only_those_missed(
    ws: Workspace, report: Path, reports_account: Any, smtp_server: SMTPTestServer
) -> None:
    subscribe(ws, report)
    smtp_server.reject_rcpt = {"bo@example.com": "550 5.1.1 mailbox unavailable"}
    now = tomorrow()
    (first,) = subscription_runs.run_due(ws, now=now)
    assert sorted(received_by(smtp_server)) == ["ana@example.com", "li@example.com"]
    emea = next(g for g in first.groups if "region" not in g.parameters)
    assert emea.counts == {"sent": 1, "failed": 1}
    smtp_server.reject_rcpt = {}
    subscription_runs.run_now(ws, "daily-rows", now=now)
    got = received_by(smtp_server)
    assert {k: len(v) for k, v in got.items()} == {
        "ana@example.com": 1,
        "bo@example.com": 1,
        "li@example.com": 1,
    }


def test_run_due_retries_deferred_subscription_mail_once_and_only_its_own(
    ws: Workspace, reports_account: Any, smtp_server: SMTPTestServer
) -> None:
    """run-due re-sends the deferred mail of subscriptions (not other use cases'), and never
    while another retry of the queue runs: both would send the same rows."""
    templates.add_template(ws, "note", object_type="contact", subject="Hi", html="<p>Hi</p>")
    smtp_server.reject_rcpt = {"li@example.com": "451 4.3.0 later", "ed@example.com": "421 busy"}
    fast = SendOptions(backoff=0.01)
    key = "subscription:daily-rows:2026-11-30T07:00Z:li@example.com"
    send(ws, "reports", "note", to="li@example.com", record={}, key=key, options=fast)
    send(ws, "reports", "note", to="ed@example.com", record={}, key="case-7", options=fast)
    assert len(retry.list_deferred(ws)) == 2 and smtp_server.messages == []
    smtp_server.reject_rcpt = {}
    later = utcnow() + timedelta(hours=1)
    with retry.queue_lock(ws) as mine:  # a retry-deferred from cron is running
        assert mine
        results = subscription_runs.run_due(ws, now=later)
        assert results == [] and results.retried is not None and results.retried.busy
        assert "left to the retry-deferred running now" in subscription_runs._retry_summary(
            results.retried
        )
        assert retry.retry_deferred(ws, now=later).busy
    assert smtp_server.messages == []
    results = subscription_runs.run_due(ws, now=later)
    assert results.retried is not None and results.retried.counts == {"sent": 1}
    assert results.retried.waiting == 0 and not subscription_runs.not_delivered(results)
    assert [list(m.rcpt_tos) for m in smtp_server.messages] == [["li@example.com"]]
    assert [r["delivery_key"] for r in retry.list_deferred(ws)] == ["case-7"]  # not ours
    again = subscription_runs.run_due(ws, now=later)
    assert again == [] and again.retried is None  # nothing due: nothing to say


def test_a_failing_report_is_recorded_and_the_owner_told_once(
    ws: Workspace, report: Path, reports_account: Any, smtp_server: SMTPTestServer
) -> None:
    subscribe(
        ws,
        report,
        recipients=["ana@example.com", {"address": "li@example.com", "parameters": {"fail": True}}],
    )
    now = tomorrow()
    (res,) = subscription_runs.run_due(ws, now=now)
    assert res.owner_notified
    got = received_by(smtp_server)
    assert sorted(got) == ["ana@example.com", "owner@example.com"]  # the good set still went out
    notice = got["owner@example.com"][0]
    assert "daily-rows failed" in notice["Subject"]
    assert "report failed on purpose for EMEA" in notice.get_body(("plain",)).get_content()
    runs = subscription_runs.list_runs(ws, "daily-rows")
    failed = runs[runs["status"] == "failed"].iloc[0]
    assert "RuntimeError" in failed["error"] and "on purpose" in failed["error"]
    assert failed["failing_cell"] is not None and failed["failing_cell"] >= 0
    assert Path(failed["output_path"]).exists()  # the executed notebook is kept
    subscription_runs.run_now(ws, "daily-rows", now=now)
    assert len(received_by(smtp_server)["owner@example.com"]) == 1  # once per slot


def test_skip_if_empty(
    ws: Workspace, report: Path, reports_account: Any, smtp_server: SMTPTestServer
) -> None:
    subscribe(ws, report, parameters={"rows": 0}, skip_if_empty=True)
    (res,) = subscription_runs.run_due(ws, now=tomorrow())
    assert [g.status for g in res.groups] == ["skipped_empty", "skipped_empty"]
    assert smtp_server.messages == []


def test_a_claim_left_by_a_dead_scheduler_is_taken_over(
    ws: Workspace, report: Path, reports_account: Any, smtp_server: SMTPTestServer
) -> None:
    s = subscribe(ws, report, recipients=["ana@example.com"])
    now = tomorrow()
    slot = subscription_runs.due_slot(ws, s, now)
    assert slot is not None
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    with ws.store.transaction() as con:
        con.execute(
            "INSERT INTO subscription_claims VALUES (?, ?, ?, ?, NULL)",
            [s.name, slot, utcnow(), f"{subscription_runs._HOST}:{dead}:feedbeef"],
        )
    (res,) = subscription_runs.run_due(ws, now=now)
    assert res.skipped is None and [g.status for g in res.groups] == ["succeeded"]
    # ... while a live one is respected.
    with ws.store.transaction() as con:
        con.execute(
            "UPDATE subscription_claims SET finished_at = NULL, claimed_by = ?",
            [f"{subscription_runs._HOST}:{os.getpid()}:cafe"],
        )
    again = subscription_runs.run_now(ws, s.name, now=now)
    assert again.skipped and "being run" in again.skipped


def test_a_claim_held_by_another_users_process_on_this_host_is_live(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_yours(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(subscription_runs, "os", SimpleNamespace(kill=not_yours))
    now = utcnow()
    assert subscription_runs._claim_is_live(f"{subscription_runs._HOST}:4242:cafe", now, now)


@pytest.mark.slow
def test_two_schedulers_at_once_run_each_slot_once(
    ws: Workspace, report: Path, reports_account: Any, smtp_server: SMTPTestServer
) -> None:
    subscribe(ws, report)
    now = tomorrow().isoformat()
    cmd = [sys.executable, "-m", "sysmail_ops", "--home", str(ws.home),
           "subscriptions", "run-due", "--now", now]  # fmt: skip
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    got = received_by(smtp_server)
    assert {k: len(v) for k, v in got.items()} == {
        "ana@example.com": 1,
        "bo@example.com": 1,
        "li@example.com": 1,
    }
    assert len(subscription_runs.list_runs(ws)) == 2
    printed = "".join(o for o, _ in outs)
    assert printed.count("2 run(s) [2 succeeded], 3 sent") == 1, printed
    # The other one found the slot claimed (or, if it looked after the first finished, done).
    others = ("being run by", "nothing due", "claimed by another scheduler")
    assert sum(printed.count(x) for x in others) == 1, printed


def test_the_attached_page_embeds_the_charts_the_mail_references_by_cid() -> None:
    import pandas as pd

    from sysmail_ops.mail.mime import InlineImage
    from sysmail_ops.subscriptions.notebooks import ReportOutput

    png = b"\x89PNG\r\n\x1a\n-not-really"
    out = ReportOutput(
        html='<div><img src="cid:chart-1@report" alt="c"><p>x</p></div>',
        images=[InlineImage("chart-1@report", png)],
        tables={"t": pd.DataFrame({"a": [1]})},
        row_count=1,
        summary=None,
    )
    page = subscription_runs.standalone_html(out).decode()
    assert "cid:" not in page
    assert 'src="data:image/png;base64,iVBORw0KGgotbm90LXJlYWxseQ=="' in page
