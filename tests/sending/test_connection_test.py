"""Connection tests against real servers: each step's verdict, recorded."""

from __future__ import annotations

from pathlib import Path

from conftest import bind
from smtp_testserver import GOOD_LOGIN, GOOD_PASSWORD, SMTPTestServer

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.records import sendlog
from sysmail_ops.sending import connection_test as conntest


def test_starttls_auth_ok_with_greeting_and_record(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    bind(ws, smtp_server)
    result = conntest.test_account(ws, "service")
    assert result.ok, result.message
    assert "TLSv1." in result.message and f"logged in as {GOOD_LOGIN}" in result.message
    assert result.greeting
    assert smtp_server.auth_logins == [GOOD_LOGIN]
    tests = conntest.recent_tests(ws, "service")
    assert len(tests) == 1 and tests[0]["ok"] and tests[0]["step"] == "done"


def test_implicit_tls(ws: Workspace, smtps_server: SMTPTestServer) -> None:
    bind(ws, smtps_server)
    assert conntest.test_account(ws, "service").ok


def test_wrong_password_fails_at_auth_with_code(ws: Workspace, smtp_server: SMTPTestServer) -> None:
    bind(ws, smtp_server, password="wrong-password")
    result = conntest.test_account(ws, "service")
    assert not result.ok
    assert (result.step, result.code) == ("auth", 535)
    assert "rejected: 535" in result.message
    assert "wrong-password" not in str(result) + repr(result)
    assert conntest.recent_tests(ws, "service")[0]["step"] == "auth"


def test_untrusted_certificate_fails_at_tls(ws: Workspace, smtp_server: SMTPTestServer) -> None:
    bind(ws, smtp_server, ca_bundle=None)
    result = conntest.test_account(ws, "service")
    assert not result.ok and result.step == "tls"
    assert "certificate" in result.message and "CA bundle" in result.message
    assert smtp_server.auth_logins == [], "no password may travel before TLS is verified"


def test_wrong_ca_fails_at_tls(ws: Workspace, smtps_server: SMTPTestServer, tmp_path: Path) -> None:
    import trustme

    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    bind(ws, smtps_server, ca_bundle=str(other))
    result = conntest.test_account(ws, "service")
    assert not result.ok and result.step == "tls"


def test_closed_port_fails_at_connect(ws: Workspace, refused_port: int) -> None:
    accounts.add_account(
        ws, "service", from_address="a@example.com", smtp_host="127.0.0.1", smtp_port=refused_port
    )
    result = conntest.test_account(ws, "service", timeout=3)
    assert not result.ok and result.step == "connect"
    assert "connection refused" in result.message


def test_unknown_host_fails_at_connect(ws: Workspace) -> None:
    accounts.add_account(ws, "service", from_address="a@example.com", smtp_host="nohost.invalid")
    result = conntest.test_account(ws, "service", timeout=3)
    assert not result.ok and result.step == "connect"
    assert "cannot resolve host 'nohost.invalid'" in result.message


def test_421_greeting_fails_at_connect(ws: Workspace, smtp_server: SMTPTestServer) -> None:
    bind(ws, smtp_server)
    smtp_server.reject_connect_with = "421 4.3.2 Service not available"
    result = conntest.test_account(ws, "service")
    assert not result.ok and (result.step, result.code) == ("connect", 421)


def test_starttls_required_when_configured(
    ws: Workspace, plain_smtp_server: SMTPTestServer
) -> None:
    bind(ws, plain_smtp_server, smtp_security="starttls")
    result = conntest.test_account(ws, "service")
    assert not result.ok and result.step == "tls"
    assert "does not offer STARTTLS" in result.message
    assert plain_smtp_server.auth_logins == []


def test_plain_loopback_relay_without_password_skips_auth(
    ws: Workspace, plain_smtp_server: SMTPTestServer
) -> None:
    plain_smtp_server.auth_required = False
    bind(ws, plain_smtp_server, password=None)
    result = conntest.test_account(ws, "service", send_to="admin@example.com")
    assert result.ok and "no login" in result.message
    assert plain_smtp_server.auth_logins == []
    assert len(plain_smtp_server.messages) == 1


def test_insecure_auth_to_remote_host_is_refused_before_connecting(ws: Workspace) -> None:
    accounts.add_account(
        ws,
        "relay",
        from_address="a@example.com",
        smtp_host="192.0.2.10",  # TEST-NET-1: never contacted, the refusal comes first
        smtp_security="none",
        password="secret-for-relay",
    )
    result = conntest.test_account(ws, "relay", timeout=1)
    assert not result.ok and result.step == "auth"
    assert "refusing to send the password" in result.message
    assert "secret-for-relay" not in result.message


def test_send_to_delivers_a_test_message(ws: Workspace, smtp_server: SMTPTestServer) -> None:
    bind(ws, smtp_server, display_name="Example Service")
    result = conntest.test_account(ws, "service", send_to="admin@example.com")
    assert result.ok and result.sent_to == "admin@example.com"
    (msg,) = smtp_server.messages
    assert msg.rcpt_tos == ("admin@example.com",)
    assert msg.tls and msg.login == GOOD_LOGIN
    assert str(msg.message["Subject"]) == "Test message from system email service"
    # the toolkit's own notice takes the same road as every send: logged, use case "system"
    (row,) = sendlog.list_logs(ws).itertuples()
    assert (row.template, row.use_case, row.status) == ("connection-test", "system", "sent")


def test_send_to_refused_recipient_is_reported(ws: Workspace, smtp_server: SMTPTestServer) -> None:
    bind(ws, smtp_server)
    smtp_server.reject_rcpt = {"nobody@example.com": "550 5.1.1 no such user"}
    result = conntest.test_account(ws, "service", send_to="nobody@example.com")
    assert not result.ok and (result.step, result.code) == ("send", 550)


def test_password_never_written_anywhere_after_tests(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    bind(ws, smtp_server)
    conntest.test_account(ws, "service", send_to="admin@example.com")
    accounts.edit_account(ws, "service", password=GOOD_PASSWORD)
    conntest.test_account(ws, "service")
    for path in ws.home.rglob("*"):
        if path.is_file() and path != ws.key_path:
            assert GOOD_PASSWORD.encode() not in path.read_bytes(), path
