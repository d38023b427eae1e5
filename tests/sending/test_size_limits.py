"""Message size limits (RFC 1870 SIZE and the account's maximum) against a real aiosmtpd server.

An oversized message is refused before MAIL with one line naming its size and
the limit, logged ``failed`` with phase ``size``; the server never sees it and
the rest of the batch goes on.
"""

from __future__ import annotations

import os

import pandas as pd
import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import ValidationError
from sysmail_ops.mail.mime import Attachment
from sysmail_ops.mail.smtp import SMTPConnection
from sysmail_ops.records import sendlog
from sysmail_ops.sending.batch import SendOptions, send, send_deliveries
from sysmail_ops.sending.delivery import Delivery
from sysmail_ops.templates import catalog as templates

FAST = SendOptions(backoff=0.01)


@pytest.fixture(autouse=True, params=["sendmail", "pipelining"])
def smtp_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    forced = request.param == "pipelining"
    monkeypatch.setattr(SMTPConnection, "use_pipelining", property(lambda self: forced))
    return str(request.param)


@pytest.fixture
def note(ws: Workspace) -> templates.Template:
    return templates.add_template(
        ws, "note", object_type="case", subject="Note for {{ name }}", html="<p>Hi {{ name }}</p>"
    )


def blob(size: int, name: str = "report.bin") -> Attachment:
    return Attachment(name, os.urandom(size), "application/octet-stream")


def log_rows(ws: Workspace) -> pd.DataFrame:
    return sendlog.list_logs(ws, limit=None).sort_values("id").reset_index(drop=True)


def test_over_the_servers_size_is_refused_before_mail_and_logged(
    ws: Workspace, smtp_server: SMTPTestServer, note: object
) -> None:
    bind(ws, smtp_server)
    smtp_server.size_limit = 200_000
    result = send(
        ws, "service", "note", to="eve@example.com", record={"name": "Eve"},
        attachments=[blob(300_000)], options=FAST,
    )  # fmt: skip
    assert result.counts == {"failed": 1}
    assert smtp_server.messages == []  # never reached DATA (nor MAIL)
    (line,) = result.errors
    row = log_rows(ws).iloc[0]
    assert (row.status, row.smtp_phase, row.recipient) == ("failed", "size", "eve@example.com")
    size = int(row.size_bytes)
    assert size > 400_000  # base64 makes 300 kB of attachment 400 kB of message
    assert f"({size:,} bytes)" in line and f"({size:,} bytes)" in row.smtp_reply
    assert "over the limit of 0.2 MB" in line
    assert "server SIZE 0.2 MB" in line and "account maximum 20.0 MB" in line
    assert "\n" not in line


def test_over_the_accounts_maximum_is_refused_though_the_server_would_take_it(
    ws: Workspace, smtp_server: SMTPTestServer, note: object
) -> None:
    bind(ws, smtp_server, max_message_bytes=100_000)
    result = send(
        ws, "service", "note", to="eve@example.com", record={"name": "Eve"},
        attachments=[blob(150_000)], options=FAST,
    )  # fmt: skip
    assert result.counts == {"failed": 1}
    assert smtp_server.messages == []
    assert "account maximum 0.1 MB" in result.errors[0]
    assert "server not asked" in result.errors[0]
    assert smtp_server.connections == 0  # over the account's own maximum: no need to ask
    assert log_rows(ws).iloc[0].smtp_phase == "size"


def test_over_the_accounts_maximum_is_refused_even_when_the_server_is_down(
    ws: Workspace, smtp_server: SMTPTestServer, note: object, refused_port: int
) -> None:
    bind(ws, smtp_server, max_message_bytes=100_000, smtp_port=refused_port)
    big = send(
        ws, "service", "note", to="eve@example.com", record={"name": "Eve"},
        attachments=[blob(150_000)], options=FAST,
    )  # fmt: skip
    assert big.counts == {"failed": 1}  # refused for good, not deferred to the retry queue
    small = send(ws, "service", "note", to="eve@example.com", record={"name": "Eve"}, options=FAST)
    assert small.counts == {"deferred": 1}  # this one waits for the server, as any message


def test_within_both_limits_is_sent_whole(
    ws: Workspace, smtp_server: SMTPTestServer, note: object
) -> None:
    bind(ws, smtp_server, max_message_bytes=300_000)
    smtp_server.size_limit = 200_000
    data = os.urandom(100_000)
    result = send(
        ws, "service", "note", to="eve@example.com", record={"name": "Eve"},
        attachments=[Attachment("a.bin", data, "application/octet-stream")], options=FAST,
    )  # fmt: skip
    assert result.counts == {"sent": 1}
    (got,) = smtp_server.messages
    (part,) = [p for p in got.message.walk() if p.get_filename() == "a.bin"]
    assert part.get_content() == data  # not truncated


def test_a_server_without_size_leaves_the_accounts_maximum(
    ws: Workspace, smtp_server: SMTPTestServer, note: object
) -> None:
    bind(ws, smtp_server, max_message_bytes=50_000)
    smtp_server.size_limit = None  # EHLO states no SIZE
    deliveries = [
        Delivery(to=["a@example.com"], record={"name": "A"}, attachments=[blob(30_000)]),
        Delivery(to=["b@example.com"], record={"name": "B"}, attachments=[blob(60_000)]),
    ]
    result = send_deliveries(ws, "service", "note", deliveries, options=FAST)
    assert result.counts == {"sent": 1, "failed": 1}
    assert "server states no SIZE" in result.errors[0]
    assert [m.rcpt_tos for m in smtp_server.messages] == [("a@example.com",)]


def test_in_a_batch_the_big_one_fails_and_the_rest_goes_on(
    ws: Workspace, smtp_server: SMTPTestServer, note: object
) -> None:
    bind(ws, smtp_server)
    smtp_server.size_limit = 100_000
    deliveries = [
        Delivery(to=["a@example.com"], record={"name": "A"}, key="k-a"),
        Delivery(to=["b@example.com"], record={"name": "B"}, key="k-b",
                 attachments=[blob(120_000)]),
        Delivery(to=["c@example.com"], record={"name": "C"}, key="k-c"),
    ]  # fmt: skip
    result = send_deliveries(ws, "service", "note", deliveries, options=FAST)
    assert result.counts == {"sent": 2, "failed": 1}
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == ["a@example.com", "c@example.com"]
    log = log_rows(ws)
    failed = log[log.status == "failed"]
    assert list(failed.recipient) == ["b@example.com"] and list(failed.smtp_phase) == ["size"]
    assert result.errors[0].startswith("k-b: message is ")


def test_dry_run_checks_the_accounts_maximum_without_connecting(
    ws: Workspace, smtp_server: SMTPTestServer, note: object
) -> None:
    bind(ws, smtp_server, max_message_bytes=50_000)
    result = send(
        ws, "service", "note", to="eve@example.com", record={"name": "Eve"},
        attachments=[blob(60_000)], options=SendOptions(dry_run=True),
    )  # fmt: skip
    assert result.counts == {"failed": 1}
    assert smtp_server.connections == 0
    assert "account maximum" in result.errors[0]


def test_bad_maximum_is_refused_and_nothing_written(ws: Workspace) -> None:
    for bad in (10, -5, 2**40, 1.5, True, "20MB"):
        with pytest.raises(ValidationError, match="maximum message size"):
            accounts.add_account(
                ws, "x", from_address="x@example.com", smtp_host="127.0.0.1",
                smtp_security="none", max_message_bytes=bad,
            )  # fmt: skip
    assert accounts.list_accounts(ws) == []


def test_a_maximum_of_0_is_no_maximum(ws: Workspace) -> None:
    accounts.add_account(
        ws, "x", from_address="x@example.com", smtp_host="127.0.0.1",
        smtp_security="none", max_message_bytes=0,
    )  # fmt: skip
    assert accounts.get_account(ws, "x").max_message_bytes is None
