"""A long batch through an OAuth2 account: tokens that expire mid-batch are refreshed
transparently; no message is lost or doubled (the sink and the log agree)."""

from __future__ import annotations

import time

import pytest
from oauth_fixtures import XOAuth2SMTPServer, authorize_device, bind_oauth
from oauth_server import OAuthTestServer

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.mail.smtp import SMTPConnection
from sysmail_ops.records import sendlog
from sysmail_ops.sending.batch import SendOptions, send, send_batch
from sysmail_ops.templates import catalog as templates

N = 60


@pytest.fixture(autouse=True, params=["sendmail", "pipelining"])
def smtp_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    forced = request.param == "pipelining"
    monkeypatch.setattr(SMTPConnection, "use_pipelining", property(lambda self: forced))
    return str(request.param)


@pytest.fixture
def authorized(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer
) -> None:
    templates.add_template(
        ws, "note", object_type="case", subject="Case {{ case_id }}",
        html="<p>Case {{ case_id }}</p>", fields=["case_id", "email"],
    )  # fmt: skip
    account = bind_oauth(ws, xoauth2_smtp)
    authorize_device(ws, account, oauth_server)


def test_tokens_expiring_mid_batch_are_refreshed_without_losing_or_doubling_a_message(
    ws: Workspace,
    xoauth2_smtp: XOAuth2SMTPServer,
    oauth_server: OAuthTestServer,
    authorized: None,
) -> None:
    def provider_clock(received: int) -> None:
        if received in (12, 37):  # every live token ends: the next login must refresh
            oauth_server.expire_access_tokens()

    xoauth2_smtp.after_message = provider_clock
    records = [{"email": f"r{i}@example.com", "case_id": f"C-{i}"} for i in range(N)]
    options = SendOptions(per_connection=5, backoff=0.01, workers=0)
    result = send_batch(ws, "o365", "note", records, key_column="case_id", options=options)

    assert result.counts == {"sent": N}, result.errors
    got = xoauth2_smtp.messages
    assert sorted(m.rcpt_tos[0] for m in got) == sorted(r["email"] for r in records)
    ids = [m.message["Message-ID"] for m in got]
    assert len(set(ids)) == N  # none doubled
    log = sendlog.list_logs(ws, batch_id=result.batch_id, limit=None)
    assert len(log) == N and set(log.status) == {"sent"} and set(log.attempt) == {1}
    assert set(log.message_id) == set(ids)
    # Refused twice (the expired tokens), renewed each time with the refresh token.
    assert [a.success for a in xoauth2_smtp.auth_attempts].count(False) == 2
    assert oauth_server.records.grants_used.count("refresh_token") == 2
    assert len(set(xoauth2_smtp.tokens_seen)) == 3

    again = send_batch(ws, "o365", "note", records, key_column="case_id", options=options)
    assert again.counts == {"skipped_duplicate": N} and len(xoauth2_smtp.messages) == N


def test_an_expired_token_is_refreshed_before_the_login(
    ws: Workspace,
    xoauth2_smtp: XOAuth2SMTPServer,
    oauth_server: OAuthTestServer,
    authorized: None,
) -> None:
    oauth_server.access_lifetime = 1.0  # the next tokens live one second
    oauth_server.expire_access_tokens()
    options = SendOptions(backoff=0.01)
    one = {"case_id": "C-1", "email": "a@example.com"}
    assert send(ws, "o365", "note", to="a@example.com", record=one, options=options).counts == {
        "sent": 1
    }
    time.sleep(1.2)  # that token is now past its life, for us and for the provider
    two = {"case_id": "C-2", "email": "b@example.com"}
    assert send(ws, "o365", "note", to="b@example.com", record=two, options=options).counts == {
        "sent": 1
    }
    attempts = [a.success for a in xoauth2_smtp.auth_attempts]
    assert attempts == [False, True, True]  # only the token expired by the provider was refused
    assert oauth_server.records.grants_used[-2:] == ["refresh_token", "refresh_token"]
