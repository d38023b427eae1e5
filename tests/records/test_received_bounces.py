"""Bounces fetched from a real Dovecot: the send log's `bounced` rows and the suppression list."""

from __future__ import annotations

import email

import pytest
from dovecot_fixture import Dovecot
from received_helpers import bind_mailbox, case_template, dsn, message
from smtp_testserver import SMTPTestServer

from sysmail_ops.config.settings import set_setting
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.records import bounces, received, sendlog, suppression
from sysmail_ops.sending.batch import send

pytestmark = pytest.mark.slow


def marketing(ws: Workspace, to: str, case: str = "7") -> str:
    """Send one marketing mail; returns its Message-ID from the log."""
    result = send(ws, "service", "case-update", to=to, record={"name": "Bob", "case_id": case},
                  use_case="marketing", related=("case", case))  # fmt: skip
    rows = sendlog.list_logs(ws, batch_id=result.batch_id, limit=None)
    return str(rows.iloc[0]["message_id"])


def statuses(ws: Workspace, recipient: str) -> list[str]:
    df = sendlog.list_logs(ws, limit=None)
    return sorted(df[df.recipient == recipient].status)


def test_hard_bounce_marks_the_send_bounced_and_suppresses_the_address(
    ws: Workspace, dovecot: Dovecot, mailbox: str, smtp_server: SMTPTestServer
) -> None:
    bind_mailbox(ws, dovecot, mailbox, smtp_server)
    case_template(ws)
    mid = marketing(ws, "bob@example.net")
    marketing(ws, "carol@example.net")
    dovecot.append(mailbox, [dsn(mid, "bob@example.net"), message(1)])
    [res] = received.fetch(ws)
    assert res.archived == 2 and res.folders[0].bounces == 1

    [b] = bounces.list_bounces(ws).to_dict("records")
    assert (b["recipient"], b["hard"], b["status"], b["detector"]) == (
        "bob@example.net", True, "5.1.1", "dsn"
    )  # fmt: skip
    assert "User unknown" in b["diagnostic"] and b["original_message_id"] == mid
    log = sendlog.list_logs(ws, limit=None)
    sent = log[(log.recipient == "bob@example.net") & (log.status == "sent")].iloc[0]
    assert b["log_id"] == sent["id"] and b["delivery_key"] == sent["delivery_key"]
    bounced = log[log.status == "bounced"].iloc[0]
    assert bounced["message_id"] == mid and bounced["smtp_code"] == 550
    assert bounced["use_case"] == "marketing" and bounced["smtp_phase"] == "dsn"
    assert statuses(ws, "carol@example.net") == ["sent"]  # only the reported one

    entry = suppression.get_entry(ws, "bob@example.net")
    assert entry is not None and entry.reason == "bounce"
    assert "5.1.1" in str(entry.source)

    before = len(smtp_server.messages)
    marketing(ws, "bob@example.net", case="8")
    assert len(smtp_server.messages) == before  # a later marketing send skips the address
    assert statuses(ws, "bob@example.net") == ["bounced", "sent", "suppressed"]

    # The same DSN fetched again (a resync) records nothing twice.
    received.fetch(ws)
    assert len(bounces.list_bounces(ws)) == 1
    assert statuses(ws, "bob@example.net") == ["bounced", "sent", "suppressed"]


def test_soft_bounces_suppress_at_the_setting(
    ws: Workspace, dovecot: Dovecot, mailbox: str, smtp_server: SMTPTestServer
) -> None:
    bind_mailbox(ws, dovecot, mailbox, smtp_server)
    case_template(ws)
    set_setting(ws, "soft_bounce_limit", 2)
    mid = marketing(ws, "dan@example.net")
    full = "smtp; 452 4.2.2 <{rcpt}>: Mailbox full"
    dovecot.append(mailbox, [dsn(mid, "dan@example.net", "4.2.2", "s1", full)])
    received.fetch(ws)
    assert suppression.get_entry(ws, "dan@example.net") is None  # one soft bounce: counted
    [b] = bounces.list_bounces(ws).to_dict("records")
    assert b["hard"] is False and b["status"] == "4.2.2"
    dovecot.append(mailbox, [dsn(mid, "dan@example.net", "4.2.2", "s2", full)])
    received.fetch(ws)
    entry = suppression.get_entry(ws, "dan@example.net")
    assert entry is not None and entry.reason == "bounce"
    assert "2 soft bounces in 7 days" in str(entry.source)


def test_non_standard_bounce_by_heuristics_links_by_envelope(
    ws: Workspace, dovecot: Dovecot, mailbox: str, smtp_server: SMTPTestServer
) -> None:
    """A qmail-style bounce (no DSN, no original Message-ID): flufl.bounce's qmail detector."""
    bind_mailbox(ws, dovecot, mailbox, smtp_server)
    case_template(ws)
    marketing(ws, "erin@example.net")
    qmail = (
        b"From: MAILER-DAEMON@mx.example.net\r\nTo: service@example.com\r\n"
        b"Subject: failure notice\r\nMessage-ID: <q1@mx.example.net>\r\n\r\n"
        b"Hi. This is the qmail-send program at mx.example.net.\r\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
        b"This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
        b"<erin@example.net>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n\r\n"
        b"--- Below this line is a copy of the message.\r\n\r\nFrom: service@example.com\r\n"
    )
    dovecot.append(mailbox, [qmail])
    received.fetch(ws)
    [b] = bounces.list_bounces(ws).to_dict("records")
    assert (b["recipient"], b["hard"], b["detector"]) == ("erin@example.net", True, "heuristic")
    assert b["log_id"] is not None  # the latest mail from this account to that address
    assert statuses(ws, "erin@example.net") == ["bounced", "sent"]
    assert suppression.get_entry(ws, "erin@example.net") is not None


def test_ordinary_mail_is_no_bounce() -> None:
    msg = email.message_from_bytes(message(1))
    assert bounces.detect(msg) == []
