"""The test SMTP server itself: each kind, AUTH, recording and every fault, via plain smtplib."""

from __future__ import annotations

import smtplib
import ssl

import pytest
from smtp_testserver import GOOD_LOGIN, GOOD_PASSWORD, SMTPTestServer

MESSAGE = (
    b"From: sender@example.com\r\n"
    b"To: a@example.com, b@example.com\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"\r\n"
    b"Hello.\r\n"
)


def send(server: SMTPTestServer, rcpts: list[str] | None = None) -> dict[str, tuple[int, bytes]]:
    with server.connect() as client:
        client.login(GOOD_LOGIN, GOOD_PASSWORD)
        return client.sendmail("sender@example.com", rcpts or ["a@example.com"], MESSAGE)


@pytest.mark.parametrize("kind", ["smtp_server", "smtps_server", "plain_smtp_server"])
def test_each_kind_authenticates_and_records(kind: str, request: pytest.FixtureRequest) -> None:
    server: SMTPTestServer = request.getfixturevalue(kind)
    assert send(server, ["a@example.com", "b@example.com"]) == {}
    [got] = server.messages
    assert got.mail_from == "sender@example.com"
    assert got.rcpt_tos == ("a@example.com", "b@example.com")
    assert got.raw == MESSAGE
    assert got.message["subject"] == "Grüße"
    assert got.login == GOOD_LOGIN
    assert got.tls is (kind != "plain_smtp_server")
    assert server.auth_logins == [GOOD_LOGIN]
    assert "s3cret" not in repr(server.auth_attempts)


def test_starttls_verifies_for_ip_and_localhost(smtp_server: SMTPTestServer) -> None:
    for host in ("127.0.0.1", "localhost"):
        ctx = ssl.create_default_context(cafile=smtp_server.ca_path)
        with smtplib.SMTP(host, smtp_server.port, timeout=5) as client:
            client.starttls(context=ctx)
            client.login(GOOD_LOGIN, GOOD_PASSWORD)


def test_starttls_server_offers_no_auth_before_tls(smtp_server: SMTPTestServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.login(GOOD_LOGIN, GOOD_PASSWORD)


def test_wrong_password_is_535_and_mail_needs_auth(smtp_server: SMTPTestServer) -> None:
    with smtp_server.connect() as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
            client.login(GOOD_LOGIN, "wrong")
        assert exc.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("sender@example.com", ["a@example.com"], MESSAGE)
        assert refused.value.smtp_code == 530
    # smtplib tries each offered mechanism in turn before giving up
    attempts = {(a.mechanism, a.login, a.success) for a in smtp_server.auth_attempts}
    assert attempts == {("PLAIN", GOOD_LOGIN, False), ("LOGIN", GOOD_LOGIN, False)}
    assert smtp_server.messages == []


def test_auth_can_be_made_optional(plain_smtp_server: SMTPTestServer) -> None:
    plain_smtp_server.auth_required = False
    with plain_smtp_server.connect() as client:
        client.sendmail("sender@example.com", ["a@example.com"], MESSAGE)
    assert plain_smtp_server.messages[0].login is None


def test_reject_connect_421_then_accepts(smtp_server: SMTPTestServer) -> None:
    smtp_server.reject_connect_with = "421 4.3.2 Service not available"
    smtp_server.reject_connect_times = 1
    with pytest.raises(smtplib.SMTPConnectError) as exc:
        smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5)
    assert exc.value.smtp_code == 421
    send(smtp_server)
    assert smtp_server.connections == 2
    assert len(smtp_server.messages) == 1


def test_reject_connect_on_smtps(smtps_server: SMTPTestServer) -> None:
    smtps_server.reject_connect_with = "421 4.7.0 Try again later"
    for _ in range(2):  # without reject_connect_times: every connection
        with pytest.raises(smtplib.SMTPConnectError):
            smtps_server.connect()


def test_fail_data_451_twice_then_success(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail_data_times = 2
    with smtp_server.connect() as client:
        client.login(GOOD_LOGIN, GOOD_PASSWORD)
        for _ in range(2):
            with pytest.raises(smtplib.SMTPDataError) as exc:
                client.sendmail("sender@example.com", ["a@example.com"], MESSAGE)
            assert exc.value.smtp_code == 451
        assert client.sendmail("sender@example.com", ["a@example.com"], MESSAGE) == {}
    assert len(smtp_server.messages) == 1


def test_reject_one_recipient_others_receive(plain_smtp_server: SMTPTestServer) -> None:
    plain_smtp_server.reject_rcpt = {"Nobody@Example.com": "550 5.1.1 no such user"}
    refused = send(plain_smtp_server, ["a@example.com", "nobody@example.com", "b@example.com"])
    assert refused == {"nobody@example.com": (550, b"5.1.1 no such user")}
    assert plain_smtp_server.messages[0].rcpt_tos == ("a@example.com", "b@example.com")


@pytest.mark.parametrize("kind", ["smtp_server", "smtps_server", "plain_smtp_server"])
def test_drop_on_data_disconnects_without_reply(kind: str, request: pytest.FixtureRequest) -> None:
    server: SMTPTestServer = request.getfixturevalue(kind)
    server.drop_on_data = 1
    client = server.connect()
    try:
        client.login(GOOD_LOGIN, GOOD_PASSWORD)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.sendmail("sender@example.com", ["a@example.com"], MESSAGE)
    finally:
        client.close()
    assert server.messages == []
    send(server)  # the next message goes through
    assert len(server.messages) == 1


def test_reset_clears_faults_and_records(smtp_server: SMTPTestServer) -> None:
    send(smtp_server)
    smtp_server.fail_data_times = 3
    smtp_server.reject_rcpt = {"a@example.com": "550 no"}
    smtp_server.reset()
    assert (smtp_server.messages, smtp_server.auth_logins, smtp_server.connections) == ([], [], 0)
    send(smtp_server)
    assert len(smtp_server.messages) == 1


def test_refused_port(refused_port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP("127.0.0.1", refused_port, timeout=5)
