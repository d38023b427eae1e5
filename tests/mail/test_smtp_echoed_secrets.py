"""A server that echoes the AUTH data: the password never leaves SMTPConnection unmasked."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from smtp_testserver import (
    GOOD_LOGIN,
    GOOD_PASSWORD,
    SMTPTestServer,
    assert_no_credentials,
    credential_forms,
)

from sysmail_ops.errors import SMTPError
from sysmail_ops.mail.credentials import MASK, Secret
from sysmail_ops.mail.pipelining import Pipeline
from sysmail_ops.mail.smtp import Outcome, SMTPConnection, SMTPServer, mask_secret

MESSAGE = b"From: sender@example.com\r\nTo: a@example.com\r\nSubject: hi\r\n\r\nHello\r\n"


def server_of(smtp: SMTPTestServer, password: str = GOOD_PASSWORD) -> SMTPConnection:
    server = SMTPServer(
        name="service",
        host=smtp.host,
        port=smtp.port,
        security=smtp.security,
        login=GOOD_LOGIN,
        ca_bundle=str(smtp.ca_path),
    )
    return SMTPConnection(server, Secret(password), timeout=5)


def test_auth_reply_echoing_the_credentials_is_masked_in_the_error(
    smtp_server: SMTPTestServer,
) -> None:
    smtp_server.echo_auth = True
    conn = server_of(smtp_server)
    with pytest.raises(SMTPError) as raised:
        conn.open()
    exc = raised.value
    assert (exc.step, exc.code) == ("auth", 535)
    assert MASK in exc.reply and MASK in str(exc)
    for text in (str(exc), exc.reply, repr(exc), str(exc.args)):
        assert_no_credentials(text)


@pytest.mark.parametrize("pipelining", [False, True])
def test_replies_after_auth_echoing_the_credentials_are_masked(
    smtp_server: SMTPTestServer, pipelining: bool
) -> None:
    smtp_server.echo_auth_on_data = True
    conn = server_of(smtp_server)
    conn.pipelining = pipelining
    with conn:
        outcomes = conn.deliver(GOOD_LOGIN, ["a@example.com"], MESSAGE)
    [outcome] = outcomes.values()
    assert (outcome.status, outcome.code) == ("failed", 554)
    assert MASK in outcome.reply
    assert_no_credentials(outcome.reply)


def test_pipelined_replies_are_masked(smtp_server: SMTPTestServer) -> None:
    smtp_server.echo_auth_on_data = True
    conn = server_of(smtp_server)
    conn.pipelining = True
    got: list[dict[str, Outcome] | None] = []
    with conn:
        pipe = Pipeline(conn)
        for rcpt in ("a@example.com", "b@example.com"):
            pipe.submit(GOOD_LOGIN, [rcpt], MESSAGE, smtputf8=False, done=got.append)
        pipe.drain()
    replies = [o.reply for d in got if d for o in d.values()]
    assert len(replies) == 2 and all(MASK in r for r in replies)
    for r in replies:
        assert_no_credentials(r)


def test_masking_leaves_replies_without_the_secret_alone() -> None:
    reply = b"250 2.0.0 OK queued as 4Fz1Qx"
    assert mask_secret(reply, "user@example.com", "Tr0ub4dor&3") == reply
    assert mask_secret(reply, "user@example.com", "") == reply


printable = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=40)


@given(login=printable, password=printable, before=printable, after=printable)
def test_no_form_of_the_password_survives_masking(
    login: str, password: str, before: str, after: str
) -> None:
    """Whatever the server wraps around it, no clear or base64 form of the credentials is left."""
    assume(password not in MASK)
    forms = credential_forms(login, password)
    for form in forms:
        reply = f"535 {before} {form} {after}".encode()
        masked = mask_secret(reply, login, password).decode("utf-8", "replace")
        assert password not in masked
        for encoded in forms[1:]:
            assert encoded.rstrip("=") not in masked


@pytest.mark.parametrize("password", ["pässwort-Ünïcode", "пароль", "密码🔑"])
def test_a_non_ascii_password_is_sent_as_utf8_not_a_traceback(
    smtp_server: SMTPTestServer, password: str
) -> None:
    """smtplib encodes AUTH data as ASCII: a non-ASCII password raised UnicodeEncodeError."""
    smtp_server.echo_auth = True  # the server's reply shows what it decoded (masked here)
    conn = server_of(smtp_server, password)
    with pytest.raises(SMTPError) as raised:
        conn.open()
    assert (raised.value.step, raised.value.code) == ("auth", 535)
    assert smtp_server.auth_logins and set(smtp_server.auth_logins) == {GOOD_LOGIN}
    assert MASK in raised.value.reply
    assert_no_credentials(str(raised.value), GOOD_LOGIN, password)
