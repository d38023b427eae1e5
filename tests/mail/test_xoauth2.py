"""SASL XOAUTH2 in mail.smtp against a real aiosmtpd server that checks tokens with a
real (local) authorization server; and the hint on a provider's refusal of passwords."""

from __future__ import annotations

import base64

import pytest
from oauth_fixtures import MAILBOX, XOAuth2SMTPServer
from smtp_testserver import GOOD_LOGIN, GOOD_PASSWORD

from sysmail_ops.errors import OAuthError
from sysmail_ops.mail.credentials import Secret, Token
from sysmail_ops.mail.smtp import (
    SMTPConnection,
    SMTPServer,
    basic_auth_hint,
    xoauth2_response,
)
from sysmail_ops.mail.smtp import (
    test_connection as smtp_test,
)


def server_for(smtp: XOAuth2SMTPServer, auth: str = "xoauth2", login: str = MAILBOX) -> SMTPServer:
    return SMTPServer(
        name="o365",
        host=smtp.host,
        port=smtp.port,
        security="starttls",
        login=login,
        ca_bundle=str(smtp.ca_path),
        auth=auth,
    )


def test_the_initial_response_is_the_providers_format() -> None:
    raw = xoauth2_response("someone@example.com", "ya29.abc")
    assert raw == "user=someone@example.com\x01auth=Bearer ya29.abc\x01\x01"
    # the documented example (Google's XOAUTH2 protocol page), base64 of the same shape
    assert base64.b64encode(raw.encode()).startswith(b"dXNlcj1zb21lb25lQGV4YW1wbGUuY29tAWF1dGg9")


def test_a_valid_token_logs_in_and_the_message_is_accepted(xoauth2_smtp: XOAuth2SMTPServer) -> None:
    token = xoauth2_smtp.oauth.mint(MAILBOX)
    with SMTPConnection(server_for(xoauth2_smtp), Token(token)) as conn:
        out = conn.deliver(MAILBOX, ["eve@example.com"], b"Subject: hi\r\n\r\nbody\r\n")
    assert out["eve@example.com"].status == "sent"
    assert [(a.login, a.mechanism, a.success) for a in xoauth2_smtp.auth_attempts] == [
        (MAILBOX, "XOAUTH2", True)
    ]
    assert xoauth2_smtp.messages[0].login == MAILBOX


def test_a_refused_token_is_renewed_once_and_the_login_goes_on(
    xoauth2_smtp: XOAuth2SMTPServer,
) -> None:
    stale = xoauth2_smtp.oauth.mint(MAILBOX)
    xoauth2_smtp.oauth.expire_access_tokens()  # the provider's clock ran out before ours
    fresh = xoauth2_smtp.oauth.mint(MAILBOX)
    asked = []

    def renew() -> Token:
        asked.append(1)
        return Token(fresh)

    conn = SMTPConnection(server_for(xoauth2_smtp), Token(stale, renew))
    conn.open()
    conn.close()
    assert asked == [1]
    assert [a.success for a in xoauth2_smtp.auth_attempts] == [False, True]
    assert xoauth2_smtp.tokens_seen == [fresh]


@pytest.mark.parametrize("google_style", [False, True], ids=["microsoft", "google-334"])
def test_a_refused_token_without_renewal_names_the_step_and_never_shows_the_token(
    xoauth2_smtp: XOAuth2SMTPServer, google_style: bool
) -> None:
    xoauth2_smtp.google_style = google_style
    stale = xoauth2_smtp.oauth.mint(MAILBOX)
    xoauth2_smtp.oauth.expire_access_tokens()
    result = smtp_test(server_for(xoauth2_smtp), Token(stale))
    assert not result.ok and result.step == "auth" and result.code == 535
    assert result.message.startswith(f"auth: XOAUTH2 login as {MAILBOX} rejected: 535 5.7.")
    assert stale not in repr(result)


def test_a_renewal_that_fails_is_its_own_line(xoauth2_smtp: XOAuth2SMTPServer) -> None:
    stale = xoauth2_smtp.oauth.mint(MAILBOX)
    xoauth2_smtp.oauth.expire_access_tokens()

    def renew() -> Token:
        raise OAuthError("re-authorize with `sysmail-ops accounts authorize o365`")

    conn = SMTPConnection(server_for(xoauth2_smtp), Token(stale, renew))
    with pytest.raises(OAuthError, match="re-authorize"):
        conn.open()
    assert not conn.is_open
    result = smtp_test(server_for(xoauth2_smtp), Token(stale, renew))
    assert not result.ok and result.step == "auth" and "re-authorize with" in result.message


def test_a_server_without_xoauth2_is_told_plainly(smtp_server: object) -> None:
    from smtp_testserver import SMTPTestServer

    assert isinstance(smtp_server, SMTPTestServer)
    server = SMTPServer(
        name="o365", host=smtp_server.host, port=smtp_server.port, security="starttls",
        login=MAILBOX, ca_bundle=str(smtp_server.ca_path), auth="xoauth2",
    )  # fmt: skip
    result = smtp_test(server, Token("whatever"))
    assert not result.ok and result.step == "auth"
    assert "does not offer AUTH XOAUTH2 (it offers: LOGIN PLAIN)" in result.message


def test_a_token_repr_never_shows_it() -> None:
    token = Token("eyJ0eXAiOiJKV1QiLCJhbGciOi.secret-part")
    assert "secret-part" not in repr(token) + str(token) + f"{token}"
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(token)


REFUSALS = [
    ("535 5.7.30 Basic authentication is not supported for Client Submission", "Microsoft 365"),
    (
        "535 5.7.8 Username and Password not accepted. For more information, go to "
        "https://support.google.com/mail/?p=BadCredentials",
        "Google refused the password",
    ),
    (
        "534 5.7.9 Application-specific password required. Learn more at "
        "https://support.google.com/mail/?p=InvalidSecondFactor",
        "app password",
    ),
]


@pytest.mark.parametrize(("reply", "who"), REFUSALS)
def test_a_providers_refusal_of_passwords_gets_the_oauth2_hint(
    xoauth2_smtp: XOAuth2SMTPServer, reply: str, who: str
) -> None:
    xoauth2_smtp.basic_refusal = reply
    server = server_for(xoauth2_smtp, auth="password", login=GOOD_LOGIN)
    result = smtp_test(server, Secret(GOOD_PASSWORD))
    assert not result.ok and result.step == "auth"
    assert who in result.message and "switch the system email to OAuth2" in result.message
    assert "`sysmail-ops accounts authorize o365`" in result.message
    assert "\n" not in result.message


def test_an_ordinary_wrong_password_gets_no_oauth2_hint(xoauth2_smtp: XOAuth2SMTPServer) -> None:
    server = server_for(xoauth2_smtp, auth="password", login=GOOD_LOGIN)
    result = smtp_test(server, Secret("wrong"))
    assert not result.ok and result.step == "auth" and "OAuth2" not in result.message
    assert basic_auth_hint("535 5.7.8 Authentication credentials invalid") is None
