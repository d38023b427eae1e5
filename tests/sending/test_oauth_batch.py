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


def test_a_providers_refusal_of_the_password_stops_the_send_with_the_oauth2_hint(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer
) -> None:
    from conftest import bind

    from sysmail_ops.errors import SMTPError

    templates.add_template(ws, "note", object_type="case", subject="Case {{ case_id }}",
                           html="<p>{{ case_id }}</p>", fields=["case_id"])  # fmt: skip
    bind(ws, xoauth2_smtp, "legacy")  # a password account, as bound before the switch
    xoauth2_smtp.basic_refusal = (
        "535 5.7.30 Basic authentication is not supported for Client Submission"
    )
    with pytest.raises(SMTPError) as err:
        send(ws, "legacy", "note", to="a@example.com", record={"case_id": "1"},
             options=SendOptions(backoff=0.01))  # fmt: skip
    assert err.value.step == "auth" and "5.7.30" in str(err.value)
    assert "switch the system email to OAuth2 (`sysmail-ops accounts edit legacy" in str(err.value)
    assert xoauth2_smtp.messages == []


def test_a_revoked_authorization_fails_the_queued_retries_with_the_one_line(
    ws: Workspace,
    xoauth2_smtp: XOAuth2SMTPServer,
    oauth_server: OAuthTestServer,
    authorized: None,
) -> None:
    from datetime import timedelta

    from sysmail_ops.sending import retry
    from sysmail_ops.store.database import utcnow

    xoauth2_smtp.fail_data_times = 1  # 451 at DATA: the message waits in the retry queue
    record = {"case_id": "C-9", "email": "q@example.com"}
    first = send(ws, "o365", "note", to="q@example.com", record=record,
                 options=SendOptions(max_attempts=1, backoff=0.01))  # fmt: skip
    assert first.counts == {"deferred": 1} and len(retry.list_deferred(ws)) == 1
    oauth_server.revoke_refresh_tokens()
    oauth_server.expire_access_tokens()
    result = retry.retry_deferred(ws, now=utcnow() + timedelta(hours=2))
    assert result.counts == {"failed": 1}, result
    row = sendlog.list_logs(ws, limit=1).iloc[0]
    assert row.status == "failed" and row.smtp_phase == "auth"
    assert "re-authorize with `sysmail-ops accounts authorize o365`" in row.smtp_reply
    assert xoauth2_smtp.messages == []
