"""A private Dovecot IMAP server for the tests (Debian's dovecot-imapd).

One instance per session, on free loopback ports, from a throwaway config in a
temporary folder: implicit TLS (certificate from the session's test CA) and a
plain port (STARTTLS offered there). Each test gets its own mailbox user, so
tests never see each other's mail. Stopped at the end of the session.
See ../shared/recipes/dovecot-for-tests.md.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from system_servers import in_ci, require_program

CONFIG = """\
base_dir = {d}/run
state_dir = {d}/run
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = {d}/users
}}
passdb {{
  driver = static
  args = password=secret
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%u
}}
mail_location = maildir:~/Maildir
mail_fsync = never
service imap-login {{
  inet_listener imap {{
    port = {plain}
  }}
  inet_listener imaps {{
    port = {tls}
    ssl = yes
  }}
}}
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
"""


UNICODE_USER, UNICODE_PASSWORD = "umlaut", "pässwört"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Dovecot:
    """A running private Dovecot: where it listens, its CA, and a way to add users."""

    root: Path
    port_tls: int
    port_plain: int
    ca_path: Path
    host: str = "127.0.0.1"

    @property
    def conf(self) -> Path:
        return self.root / "dovecot.conf"

    def log(self) -> str:
        try:
            return (self.root / "dovecot.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def add_user(self) -> str:
        """A new mailbox user (password ``secret``); its mail lives under root/mail/<user>.

        Any name logs in with ``secret`` (a static passdb): Dovecot may not notice a
        users file changed within the same second. ``UNICODE_USER`` has a non-ASCII one.
        """
        return "u" + uuid.uuid4().hex[:10]

    def client(self, user: str, password: str = "secret") -> imaplib.IMAP4_SSL:  # noqa: S107
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        imap = imaplib.IMAP4_SSL(self.host, self.port_tls, ssl_context=ctx, timeout=30)
        imap.login(user, password)
        return imap

    def append(
        self, user: str, messages: list[bytes], folder: str = "INBOX", date: float | None = None
    ) -> None:
        """Put messages in with IMAP APPEND (``date``: their INTERNALDATE, epoch seconds)."""
        imap = self.client(user)
        try:
            imap.create(folder)  # NO when it exists: fine
            when = imaplib.Time2Internaldate(date if date is not None else time.time())
            for data in messages:
                typ, resp = imap.append(folder, None, when, data)
                assert typ == "OK", resp
        finally:
            imap.logout()

    def recreate(self, user: str, folder: str) -> None:
        """Delete and recreate a folder: a new UIDVALIDITY, every message gone."""
        imap = self.client(user)
        try:
            if folder.upper() == "INBOX":  # INBOX cannot be deleted: empty and expunge it
                imap.select("INBOX")
                imap.store("1:*", "+FLAGS", "\\Deleted")
                imap.expunge()
                imap.close()
                # A new UIDVALIDITY for INBOX: rename it away (Dovecot makes a new INBOX).
                imap.rename("INBOX", "old-" + uuid.uuid4().hex[:6])
            else:
                imap.delete(folder)
                imap.create(folder)
        finally:
            imap.logout()

    def flags(self, user: str, folder: str = "INBOX") -> list[bytes]:
        imap = self.client(user)
        try:
            imap.select(folder, readonly=True)
            _, data = imap.fetch("1:*", "(FLAGS)")
            return [d for d in data if d]
        finally:
            imap.logout()


def start_dovecot(root: Path, ca: trustme.CA) -> Dovecot:
    program = require_program("dovecot", "dovecot-imapd")
    if os.geteuid() != 0:
        reason = "the private Dovecot runs its login processes as dovenull: run as root (CI)"
        if in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # noqa: S103 - traversable by the mail user (nobody) and Dovecot's own users
    (root / "run").mkdir()
    mail = root / "mail"
    mail.mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(mail, nobody.pw_uid, nobody.pw_gid)
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    for extra in cert.cert_chain_pems[1:]:
        with (root / "cert.pem").open("ab") as fh:
            fh.write(extra.bytes())
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    (root / "users").write_text(f"{UNICODE_USER}:{{PLAIN}}{UNICODE_PASSWORD}::::\n")
    server = Dovecot(root, free_port(), free_port(), root / "ca.pem")
    server.conf.write_text(
        CONFIG.format(
            d=root,
            plain=server.port_plain,
            tls=server.port_tls,
            uid=nobody.pw_uid,
            gid=nobody.pw_gid,
        )
    )
    # The daemon keeps the descriptors it is given: no pipes, or run() waits for it forever.
    with (root / "start.log").open("wb") as out:
        subprocess.run(
            [program, "-c", str(server.conf)], check=True, stdout=out, stderr=out,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", server.port_tls), 1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("Dovecot did not start:\n" + server.log()) from None
            time.sleep(0.05)
    return server


def stop_dovecot(server: Dovecot) -> None:
    doveadm = shutil.which("doveadm") or "doveadm"
    subprocess.run(
        [doveadm, "-c", str(server.conf), "stop"],
        check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture(scope="session")
def dovecot(tls_ca: trustme.CA) -> Iterator[Dovecot]:
    """The session's private Dovecot (skips with a reason where it is not installed)."""
    # Not under pytest's own tmp folder: a pytest run (ours or a neighbour's) makes its
    # base 0700, and Dovecot's unprivileged processes must pass through every parent.
    root = Path(tempfile.mkdtemp(prefix="sysmail-dovecot-"))
    try:
        server = start_dovecot(root, tls_ca)
        try:
            yield server
        finally:
            stop_dovecot(server)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def mailbox(dovecot: Dovecot) -> str:
    """A fresh, empty mailbox user on the session's Dovecot (password ``secret``)."""
    return dovecot.add_user()
