"""A report mail too big for the server: recipients get it without the big attachments and a
note; the owner is told the sizes. Real kernels, a real aiosmtpd server with a small SIZE."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import bind
from report_fixtures import write_echo_report
from smtp_testserver import SMTPTestServer

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.mail.mime import Attachment
from sysmail_ops.records import sendlog
from sysmail_ops.store.database import utcnow
from sysmail_ops.subscriptions import attachments as fitting
from sysmail_ops.subscriptions import model as subscriptions
from sysmail_ops.subscriptions import runs as subscription_runs


@pytest.fixture
def report(tmp_path: Path) -> Path:
    return write_echo_report(tmp_path)


def test_too_big_for_the_server_goes_again_without_the_attachments(
    ws: Workspace, report: Path, smtp_server: SMTPTestServer
) -> None:
    bind(ws, smtp_server, "reports", kind="other")
    subscriptions.add_subscription(
        ws, "big-rows", notebook=str(report),
        recipients=["ana@example.com", {"address": "li@example.com",
                                        "parameters": {"region": "APAC"}}],
        cron="0 8 * * *", timezone="Europe/Berlin", account="reports",
        owner="owner@example.com", parameters={"rows": 4000},
        formats=["html_body", "csv", "xlsx"],
    )  # fmt: skip
    smtp_server.size_limit = 60_000
    (res,) = subscription_runs.run_due(ws, now=utcnow() + timedelta(days=1))
    assert sorted(g.status for g in res.groups) == ["succeeded", "succeeded"]
    assert res.owner_notified
    got: dict[str, list[Any]] = {}
    for m in smtp_server.messages:
        got.setdefault(m.rcpt_tos[0], []).append(m)
    assert sorted(got) == ["ana@example.com", "li@example.com", "owner@example.com"]
    for addr in ("ana@example.com", "li@example.com"):
        (m,) = got[addr]  # once, whole but for the attachments
        assert len(m.raw) <= 60_000
        names = [p.get_filename() for p in m.message.iter_attachments()]
        assert "rows.csv" not in names or "rows.xlsx" not in names
        body = m.message.get_body(("html",)).get_content()
        assert "Left out of this mail: rows." in body and "over the 0.1 MB limit" in body
        assert "4000 rows for" in body  # the report itself is there
    notice = got["owner@example.com"][0].message.get_body(("plain",)).get_content()
    assert "over the mail size limit" in notice
    assert "ana@example.com: the mail was" in notice and "bytes), over the limit of" in notice
    assert "sent again without rows." in notice
    # The log tells both attempts: refused for size, then sent.
    log = sendlog.list_logs(ws, limit=None)
    ana = log[log.recipient == "ana@example.com"].sort_values("id")
    assert list(ana.status) == ["failed", "sent"] and ana.smtp_phase.iloc[0] == "size"
    runs = subscription_runs.list_runs(ws, "big-rows")
    assert sorted(runs["delivered"]) == [1, 1] and set(runs["failed"]) == {0}
    # A rerun of the slot mails nobody twice.
    again = subscription_runs.run_now(ws, "big-rows", now=utcnow() + timedelta(days=1))
    assert sum(g.counts.get("skipped_duplicate", 0) for g in again.groups) == 2
    assert len([m for m in smtp_server.messages if m.rcpt_tos[0] != "owner@example.com"]) == 2


def test_fit_leaves_out_the_largest_first() -> None:
    small = Attachment("small.csv", b"x" * 1_000)
    mid = Attachment("mid.csv", b"x" * 30_000)
    big = Attachment("big.xlsx", b"x" * 90_000)
    size = 10_000 + sum(fitting.encoded_size(a) for a in (small, mid, big))
    kept, left = fitting.fit([small, mid, big], size, 60_000)
    assert [a.filename for a in left] == ["big.xlsx"]
    assert [a.filename for a in kept] == ["small.csv", "mid.csv"]
    kept, left = fitting.fit([small, mid, big], size, 20_000)
    assert [a.filename for a in left] == ["big.xlsx", "mid.csv"]
    assert fitting.describe(left) == "big.xlsx (0.1 MB), mid.csv (0.0 MB)"
    encoded = fitting.encoded_size(big) - fitting._PART_OVERHEAD
    assert 120_000 <= encoded <= 124_000  # base64: 4/3, plus a CRLF per 76


def test_an_account_maximum_too_small_even_without_attachments_is_told_not_looped(
    ws: Workspace, report: Path, smtp_server: SMTPTestServer
) -> None:
    bind(ws, smtp_server, "reports", kind="other", max_message_bytes=2_000)
    subscriptions.add_subscription(
        ws, "tiny", notebook=str(report), recipients=["ana@example.com"],
        cron="0 8 * * *", timezone="Europe/Berlin", account="reports",
        owner="owner@example.com", formats=["html_body", "csv"],
    )  # fmt: skip
    (res,) = subscription_runs.run_due(ws, now=utcnow() + timedelta(days=1))
    (g,) = res.groups
    assert g.counts.get("failed") == 1 and g.counts.get("sent", 0) == 0
    assert any("still" in line and "not sent" in line for line in g.oversize)
    assert accounts.get_account(ws, "reports").max_message_bytes == 2_000
    log = sendlog.list_logs(ws, limit=None)
    ana = log[log.recipient == "ana@example.com"]
    assert list(ana.status) == ["failed", "failed"] and set(ana.smtp_phase) == {"size"}
    assert res.owner_notified  # the notice (a small mail) says why
    (notice,) = [m for m in smtp_server.messages if m.rcpt_tos == ("owner@example.com",)]
    text = notice.message.get_body(("plain",)).get_content()
    assert "without those attachments" in text and "not sent" in text


def test_a_mail_sent_again_without_report_html_no_longer_says_it_is_attached() -> None:
    page = Attachment("report.html", b"x" * 900, "text/html")
    sheet = Attachment("report.csv", b"y" * 300, "text/csv")
    record = {"summary": "12 rows", "html_attachment_note": subscription_runs.HTML_ATTACHMENT_NOTE}

    without_page = fitting.refit_record(record, [page], 1_200, 1_000)
    assert without_page["html_attachment_note"] == ""
    assert "report.html (" in without_page["attachments_note"]
    assert without_page["summary"].startswith("12 rows (Left out of this mail: report.html")

    without_sheet = fitting.refit_record(record, [sheet], 1_200, 1_000)
    assert without_sheet["html_attachment_note"] == subscription_runs.HTML_ATTACHMENT_NOTE
    assert record["summary"] == "12 rows"  # the original record is left as it was
