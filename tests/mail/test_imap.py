"""The IMAP client against a real Dovecot: TLS, STARTTLS, login, read-only fetch, streaming."""

from __future__ import annotations

import imaplib
import io
import os
from pathlib import Path

import pytest
from dovecot_fixture import UNICODE_PASSWORD, UNICODE_USER, Dovecot

from sysmail_ops.errors import IMAPError, InsecureAuthError
from sysmail_ops.mail.credentials import Secret
from sysmail_ops.mail.imap import (
    IMAPConnection,
    IMAPServer,
    Spooled,
    encode_folder,
    password_login,
)
from sysmail_ops.mail.imap import (
    test_connection as imap_test,
)

pytestmark = pytest.mark.slow


def msg(n: int, body: str = "hello") -> bytes:
    return (
        f"From: a@example.com\r\nTo: b@example.com\r\nSubject: m{n}\r\n"
        f"Message-ID: <m{n}@example.com>\r\n\r\n{body}\r\n"
    ).encode()


def server(dovecot: Dovecot, user: str, security: str = "ssl", **kw: object) -> IMAPServer:
    port = dovecot.port_tls if security == "ssl" else dovecot.port_plain
    return IMAPServer(
        name="service", host=dovecot.host, port=port, security=security, login=user,
        ca_bundle=str(dovecot.ca_path), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_fetch_reads_without_changing_flags(dovecot: Dovecot, mailbox: str, security: str) -> None:
    dovecot.append(mailbox, [msg(1), msg(2), msg(3)])
    srv = server(dovecot, mailbox, security)
    with IMAPConnection(srv, password_login(mailbox, Secret("secret"))) as conn:
        assert conn.tls_version and conn.tls_version.startswith("TLS")
        info = conn.examine("INBOX")
        assert info.exists == 3 and info.uidvalidity > 0
        sizes = conn.sizes()
        assert [u for u, _ in sizes] == [1, 2, 3]
        got = list(conn.fetch([u for u, _ in sizes]))
        assert [f.data for f in got] == [msg(1), msg(2), msg(3)]
        assert conn.sizes(after_uid=3) == []  # "4:*" names the last message: filtered out
        assert [u for u, _ in conn.sizes(after_uid=1)] == [2, 3]
    assert not any(b"\\Seen" in f for f in dovecot.flags(mailbox))


def test_wrong_password_is_one_clear_line(dovecot: Dovecot, mailbox: str) -> None:
    srv = server(dovecot, mailbox)
    with pytest.raises(IMAPError) as err:
        IMAPConnection(srv, password_login(mailbox, Secret("wrong-pw"))).open()
    assert err.value.step == "login"
    assert str(err.value).startswith(f"login: login as {mailbox} rejected:")
    assert "AUTHENTICATIONFAILED" in str(err.value)
    assert "wrong-pw" not in str(err.value)
    result = imap_test(srv, password_login(mailbox, Secret("wrong-pw")))
    assert not result.ok and result.step == "imap login"


def test_untrusted_certificate_is_refused(dovecot: Dovecot, mailbox: str) -> None:
    srv = IMAPServer("service", dovecot.host, dovecot.port_tls, "ssl", mailbox)  # no CA bundle
    with pytest.raises(IMAPError) as err:
        IMAPConnection(srv, password_login(mailbox, Secret("secret"))).open()
    assert err.value.step == "tls"
    assert "not accepted" in str(err.value) and "CA bundle" in str(err.value)


def test_no_login_in_clear_to_a_remote_host() -> None:
    srv = IMAPServer("service", "imap.example.com", 143, "none", "x")
    with pytest.raises(InsecureAuthError):
        IMAPConnection(srv, password_login("x", Secret("pw"))).open()


def test_connection_test_verdict(dovecot: Dovecot, mailbox: str) -> None:
    dovecot.append(mailbox, [msg(1)])
    result = imap_test(server(dovecot, mailbox), password_login(mailbox, Secret("secret")))
    assert result.ok, result.message
    assert "INBOX holds 1 message" in result.message
    missing = imap_test(
        server(dovecot, mailbox), password_login(mailbox, Secret("secret")), folder="Nope"
    )
    assert not missing.ok and missing.step == "imap select"


def test_login_is_pluggable(dovecot: Dovecot, mailbox: str) -> None:
    """A login step of the caller's own (as OAuth2 plugs in) is what authenticates."""
    calls: list[str] = []

    def custom(imap: imaplib.IMAP4) -> None:
        calls.append(imap.state)
        imap.login(mailbox, "secret")

    with IMAPConnection(server(dovecot, mailbox), custom) as conn:
        assert conn.examine("INBOX").exists == 0
    assert calls == ["NONAUTH"]


def test_large_message_streams_to_the_spool(dovecot: Dovecot, mailbox: str, tmp_path: Path) -> None:
    big = msg(1, "x" * 1000 + "\r\n" + ("y" * 998 + "\r\n") * 2000)
    dovecot.append(mailbox, [msg(2), big])
    spooled: list[Path] = []

    def spool(size: int) -> io.BufferedWriter:
        path = tmp_path / f"spool{len(spooled)}"
        spooled.append(path)
        return open(path, "wb")

    with IMAPConnection(
        server(dovecot, mailbox), password_login(mailbox, Secret("secret")), spool=spool,
        spool_over=64 * 1024,
    ) as conn:  # fmt: skip
        conn.examine("INBOX")
        got = list(conn.fetch([1, 2]))
    assert got[0].data == msg(2) and got[0].spooled is None
    assert got[1].data is None and isinstance(got[1].spooled, Spooled)
    got[1].spooled.file.close()
    assert spooled[0].read_bytes() == big and got[1].size == len(big)


def test_folder_names_are_quoted_and_utf7() -> None:
    assert encode_folder("INBOX") == '"INBOX"'
    assert encode_folder('a "b"') == '"a \\"b\\""'
    assert encode_folder("Réponses") == '"R&AOk-ponses"'
    with pytest.raises(IMAPError):
        encode_folder("a\r\nb")


def test_non_ascii_password(dovecot: Dovecot) -> None:
    user = UNICODE_USER
    with IMAPConnection(server(dovecot, user), password_login(user, Secret(UNICODE_PASSWORD))) as c:
        assert c.examine("INBOX").exists == 0
    assert os.path.exists(dovecot.conf)
