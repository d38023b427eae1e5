"""The local capture SMTP server: the embedded default for trying things (like Mailpit).

It listens on loopback, offers STARTTLS with its own self-signed certificate and
AUTH with any login, accepts every message and keeps it byte-exact as an ``.eml``
file plus one JSON line in ``index.jsonl``. Nothing is relayed anywhere.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import signal
import ssl
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from sysmail_ops.errors import SysmailError, ValidationError
from sysmail_ops.mail.addresses import is_loopback
from sysmail_ops.store import private

if TYPE_CHECKING:  # aiosmtpd and cryptography's x509 are imported when a sink starts
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

INDEX_NAME = "index.jsonl"
CERT_NAME = "sink-cert.pem"
KEY_NAME = "sink-key.pem"
CERT_DAYS = 825
_INDEX_LOCK = threading.Lock()  # one per process: every sink here may share a mailbox


def ensure_certificate(cert_dir: Path) -> tuple[Path, Path]:
    """The sink's certificate and key in ``cert_dir``: made on first use, reused after.

    Self-signed for localhost, 127.0.0.1 and ::1, and marked as a CA so a client
    can pass the certificate itself as ``cafile``. Remade when unreadable or expiring.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    cert_path, key_path = cert_dir / CERT_NAME, cert_dir / KEY_NAME
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_path, key_path)
        if cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=1):
            return cert_path, key_path
    except (OSError, ValueError, ssl.SSLError):
        pass
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sysmail-ops capture sink")])
    now = datetime.now(UTC)
    san = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        private.make_dirs(cert_dir)
        private.write_file(key_path, key_pem)
        private.write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise SysmailError(f"cannot write the capture sink's certificate: {exc}") from None
    return cert_path, key_path


def _clean(value: object) -> str | None:
    # Header values may carry lone surrogates from undecodable bytes; JSON must not.
    return None if value is None else str(value).encode("utf-8", "replace").decode("utf-8")


def store_message(
    mailbox_dir: Path, raw: bytes, mail_from: str, rcpt_tos: list[str], **extra: Any
) -> dict[str, Any]:
    """Keep ``raw`` as ``<UTC timestamp>-<short uuid>.eml`` and index it; returns the entry."""
    now = datetime.now(UTC)
    name = f"{now:%Y%m%dT%H%M%S.%fZ}-{uuid.uuid4().hex[:8]}.eml"
    private.write_file(mailbox_dir / name, raw)
    try:
        headers = BytesHeaderParser(policy=policy.default).parsebytes(raw)
        subject, message_id = _clean(headers["subject"]), _clean(headers["message-id"])
    except Exception:  # a malformed header must not lose the message
        subject = message_id = None
    entry = {
        "received_at": now.isoformat(),
        "mail_from": mail_from,
        "rcpt_tos": list(rcpt_tos),
        "subject": subject,
        "message_id": message_id,
        "size": len(raw),
        "file": name,
        **extra,
    }
    line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
    with _INDEX_LOCK:  # one write() on an O_APPEND file: whole lines, also across processes
        fd = private.open_append(mailbox_dir / INDEX_NAME)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    return entry


def list_mailbox(mailbox_dir: Path) -> list[dict[str, Any]]:
    """The index entries, oldest first; a missing index is empty, a torn line is skipped."""
    try:
        text = (mailbox_dir / INDEX_NAME).read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


class _Handler:
    def __init__(self, mailbox_dir: Path) -> None:
        self.mailbox_dir = mailbox_dir

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        transport = server.transport
        entry = store_message(
            self.mailbox_dir,
            envelope.original_content,
            envelope.mail_from,
            envelope.rcpt_tos,
            login=session.auth_data if session.authenticated else None,
            tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
        )
        return f"250 2.0.0 OK captured as {entry['file']}"


def _accept_any(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    """Any login and password will do; keep only the login."""
    from aiosmtpd.smtp import AuthResult

    return AuthResult(success=True, auth_data=data.login.decode("utf-8", "replace"))


@functools.cache
def _controller_class() -> type[Controller]:
    """aiosmtpd's Controller, fixed for port 0 and stopping with clients still connected.

    Made on first use, so that importing this module does not import aiosmtpd (or asyncio).
    """
    import asyncio

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

    class _Controller(Controller):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

        def factory(self) -> SMTP:
            smtp = super().factory()
            self._sessions.add(smtp)
            return smtp

        def _run(self, ready_event: threading.Event) -> None:
            try:
                super()._run(ready_event)
            finally:
                ready_event.set()  # a failed bind would otherwise make start() wait ready_timeout

        def _trigger_server(self) -> None:
            if self._thread_exception is not None:
                raise self._thread_exception
            # aiosmtpd 1.4 probes self.port, which is still 0 when the OS picked the port.
            if self.port == 0 and isinstance(self.server, asyncio.Server):
                self.port = self.server.sockets[0].getsockname()[1]
            super()._trigger_server()

        async def _drop_sessions(self) -> None:
            for smtp in list(self._sessions):
                if isinstance(smtp.transport, asyncio.WriteTransport):
                    smtp.transport.abort()
            await asyncio.sleep(0.01)  # let connection_lost() run and close the sockets

        def stop(self, no_assert: bool = False) -> None:
            # Without this, a connection still open at stop leaves an unclosed transport
            # (a ResourceWarning at garbage collection, an error under pytest).
            if self._thread is not None and self.loop.is_running():
                done = asyncio.run_coroutine_threadsafe(self._drop_sessions(), self.loop)
                done.result(timeout=5)
            super().stop(no_assert)

    return _Controller


def _not_login_data_notice(record: logging.LogRecord) -> bool:
    # aiosmtpd 1.4 logs a deprecation notice about its own use of login_data on every
    # successful AUTH; it is noise for the sink's user, so only that record is dropped.
    return not record.getMessage().startswith("Session.login_data is deprecated")


logging.getLogger("mail.log").addFilter(_not_login_data_notice)


class CaptureSink:
    """The capture server in a background thread; ``port`` is the real one once started."""

    def __init__(
        self,
        mailbox_dir: Path,
        cert_dir: Path,
        host: str = "127.0.0.1",
        port: int = 1025,
        *,
        allow_remote: bool = False,
    ) -> None:
        if not allow_remote and not is_loopback(host):
            raise ValidationError(
                f"the capture sink accepts any login and keeps every message, so it only "
                f"listens on loopback; {host!r} is not (pass allow_remote=True to insist)"
            )
        self.mailbox_dir, self.cert_dir = Path(mailbox_dir), Path(cert_dir)
        self.host, self.port = host, port
        self.ca_path = self.cert_dir / CERT_NAME
        self._controller: Controller | None = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        """Bind and serve; a busy port or an unwritable folder is a ``SysmailError``."""
        if self._controller is not None:
            return
        try:
            private.make_dirs(self.mailbox_dir)
        except OSError as exc:
            raise SysmailError(f"capture sink cannot create its mailbox: {exc}") from None
        cert_path, key_path = ensure_certificate(self.cert_dir)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert_path, key_path)
        # With port 0 asyncio would bind localhost's IPv4 and IPv6 to two different ports.
        bind = "127.0.0.1" if self.host == "localhost" and self.port == 0 else self.host
        controller = _controller_class()(
            _Handler(self.mailbox_dir),
            hostname=bind,
            port=self.port,
            server_hostname="localhost",  # else aiosmtpd calls getfqdn() per connection
            ident="sysmail-ops capture sink",
            tls_context=tls,
            require_starttls=False,
            auth_required=False,
            auth_require_tls=False,  # loopback only: AUTH on the plain connection is fine
            authenticator=_accept_any,
            enable_SMTPUTF8=True,
        )
        try:
            controller.start()
        except OSError as exc:
            controller.stop(no_assert=True)
            controller.loop.close()  # the thread gave up before running it
            raise SysmailError(
                f"capture sink cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        self.port = controller.port
        self._controller = controller

    def stop(self) -> None:
        """Stop serving; safe to call twice."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> CaptureSink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_forever(sink: CaptureSink, out: Callable[[str], object] = print) -> None:
    """Serve until Ctrl-C or SIGTERM, then stop cleanly (``sysmail-ops sink``)."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
    try:
        sink.start()
        out(f"capture sink listening on {sink.host}:{sink.port} (STARTTLS, AUTH any login)")
        out(f"mail goes to {sink.mailbox_dir}")
        out(f"clients verify STARTTLS with cafile {sink.ca_path}")
        out("stop with Ctrl-C")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    out("capture sink stopped")


__all__ = ["CaptureSink", "ensure_certificate", "is_loopback", "list_mailbox", "run_forever"]
