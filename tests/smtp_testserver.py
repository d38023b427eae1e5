"""A real aiosmtpd server for the suite: STARTTLS, SMTPS or plain; AUTH; recording; faults.

The fixtures in ``conftest.py`` (``smtp_server``, ``smtps_server``, ``plain_smtp_server``)
hand each test a running, freshly reset ``SMTPTestServer``. Faults are plain attributes
set on it, all cleared by ``reset()``:

    server.reject_connect_with = "421 4.3.2 Service not available"  # greet with it, hang up
    server.reject_connect_times = 2          # ... only for the first 2 connections (None: all)
    server.fail_data_times = 2               # answer the first 2 DATA with fail_data_reply
    server.fail_data_reply = "452 4.3.1 Insufficient system storage"
    server.reject_rcpt = {"nobody@example.com": "550 5.1.1 no such user"}
    server.drop_on_data = 1                  # hang up after the 1st message's data, no reply
    server.auth_required = False             # accept MAIL without AUTH (a relay with no login)
    server.echo_auth = True                  # refuse AUTH with a 535 that echoes the credentials
    server.echo_auth_on_data = True          # after a good AUTH, refuse DATA echoing them (554)
    server.size_limit = 50_000               # EHLO says SIZE 50000 (and aiosmtpd holds to it)

An echo carries the password in clear and in its base64 AUTH forms (PLAIN's
``\0login\0password``, LOGIN's password alone and login alone), as a careless server might.

Only GOOD_LOGIN / GOOD_PASSWORD authenticate; anything else gets 535. Passwords are
never recorded, only the login of each attempt.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import smtplib
import socket
import ssl
import threading
import weakref
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import DATA_SIZE_DEFAULT, SMTP, AuthResult, LoginPassword

# aiosmtpd's INFO lines ("connection lost") come from the server thread, sometimes after
# pytest closed the test's log capture ("--- Logging error ---" in CI's output); the
# tests assert on what the server recorded, not on its log.
logging.getLogger("mail.log").setLevel(logging.WARNING)

GOOD_LOGIN = "sender@example.com"
GOOD_PASSWORD = "s3cret-Pa55"
DEFAULT_REJECT_CONNECT = "421 4.3.2 Service not available, closing transmission channel"
DEFAULT_FAIL_DATA = "451 4.3.0 Temporary failure, try again later"

Security = Literal["starttls", "ssl", "none"]


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted message, as the server saw it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes  # envelope.original_content: the bytes on the wire, CRLF, dots unstuffed
    message: EmailMessage  # parsed with policy.default
    login: str | None  # who authenticated on that connection
    tls: bool  # whether the connection was encrypted (STARTTLS or SMTPS)


@dataclass(frozen=True)
class AuthAttempt:
    login: str
    mechanism: str
    success: bool


def closed_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on (bound then released), for "connection refused" tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def echoed_credentials(login: bytes, password: bytes) -> str:
    """What a careless server echoes: the password in clear and in its base64 AUTH forms."""
    forms = [b"\0" + login + b"\0" + password, password, login]
    encoded = " ".join(base64.b64encode(f).decode("ascii") for f in forms)
    return f"{password.decode('utf-8', 'replace')} {encoded}"


def credential_forms(login: str, password: str) -> list[str]:
    """The password in clear and every base64 form an AUTH exchange puts it (or the login) in."""
    lg, pw = login.encode(), password.encode()
    forms = [b"\0" + lg + b"\0" + pw, pw, lg, lg + b"\0" + lg + b"\0" + pw]
    return [password, *(base64.b64encode(f).decode("ascii") for f in forms)]


def assert_no_credentials(
    text: str, login: str = GOOD_LOGIN, password: str = GOOD_PASSWORD
) -> None:
    """No form of the test server's credentials (padded or not) is in ``text``."""
    for form in credential_forms(login, password):
        assert form.rstrip("=") not in text, f"{form!r} leaked in {text!r}"


class _SMTP(SMTP):
    async def _handle_client(self) -> None:
        # aiosmtpd has no hook before its 220 greeting; this is the only way to refuse.
        reply = self.event_handler.on_connect()
        if reply is not None:
            await self.push(reply)
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()


class _Handler:
    # aiosmtpd scans the handler: names starting with handle_ are hooks and auth_ are AUTH
    # mechanisms, so none of this class's other names may start with either.
    def __init__(self, owner: SMTPTestServer) -> None:
        self.owner = owner

    def on_connect(self) -> str | None:
        return self.owner._on_connect()

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.owner.auth_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        rejects = {addr.lower(): reply for addr, reply in self.owner.reject_rcpt.items()}
        if address.lower() in rejects:
            return rejects[address.lower()]
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        owner = self.owner
        if owner._take("drop_on_data"):
            assert isinstance(server.transport, asyncio.WriteTransport)
            server.transport.abort()
            await asyncio.sleep(60)  # connection_lost() cancels this: no reply is ever sent
        if owner._take("fail_data_times"):
            return owner.fail_data_reply
        if owner.echo_auth_on_data and getattr(session, "echoed_credentials", None):
            return f"554 5.7.1 refused for {session.echoed_credentials}"
        raw = envelope.original_content
        owner._record(
            ReceivedMessage(
                mail_from=envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos),
                raw=raw,
                message=BytesParser(policy=policy.default).parsebytes(raw),
                login=session.auth_data if session.authenticated else None,
                tls=server.transport is not None
                and server.transport.get_extra_info("ssl_object") is not None,
            )
        )
        return "250 2.0.0 OK queued"

    def authenticate(
        self, server: SMTP, session: Any, envelope: Any, mechanism: str, data: LoginPassword
    ) -> AuthResult:
        login = data.login.decode("utf-8", "replace")
        ok = login == GOOD_LOGIN and data.password == GOOD_PASSWORD.encode()
        self.owner._record(AuthAttempt(login, mechanism, ok))
        if self.owner.echo_auth:
            echo = echoed_credentials(data.login, data.password)
            return AuthResult(success=False, handled=False, message=f"535 5.7.8 bad {echo}")
        if ok and self.owner.echo_auth_on_data:
            session.echoed_credentials = echoed_credentials(data.login, data.password)
        # handled defaults to True, which would mean "reply already sent": the client hangs.
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)


class _Controller(Controller):
    """Controller that builds _SMTP, supports port 0 and stops with clients connected."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def factory(self) -> SMTP:
        smtp = _SMTP(self.handler, **self.SMTP_kwargs)
        smtp.data_size_limit = self.handler.owner.size_limit  # its EHLO's SIZE (RFC 1870)
        self._sessions.add(smtp)
        return smtp

    def _trigger_server(self) -> None:
        if self.port == 0 and isinstance(self.server, asyncio.Server):
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()

    async def _drop_sessions(self) -> None:
        for smtp in list(self._sessions):
            if isinstance(smtp.transport, asyncio.WriteTransport):
                smtp.transport.abort()
        await asyncio.sleep(0.01)

    def stop(self, no_assert: bool = False) -> None:
        if self._thread is not None and self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self._drop_sessions(), self.loop).result(5)
        super().stop(no_assert)


class SMTPTestServer:
    """A running aiosmtpd server on a free loopback port, recording what it receives."""

    handler_class: type[_Handler] = _Handler  # a subclass adds AUTH mechanisms (auth_NAME)

    def __init__(
        self,
        security: Security,
        tls_context: ssl.SSLContext | None = None,
        ca_path: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if security != "none" and tls_context is None:
            raise ValueError(f"security={security!r} needs a server tls_context")
        self.security, self.host, self.port, self.ca_path = security, host, 0, ca_path
        self._tls_context = tls_context
        self._lock = threading.Lock()
        self._controller: _Controller | None = None
        self.reset()

    def reset(self) -> None:
        """Clear faults and records (the fixtures call it around every test)."""
        with self._lock:
            self.reject_connect_with: str | None = None
            self.reject_connect_times: int | None = None
            self.fail_data_times = 0
            self.fail_data_reply = DEFAULT_FAIL_DATA
            self.reject_rcpt: dict[str, str] = {}
            self.drop_on_data = 0
            self.auth_required = True
            self.echo_auth = False
            self.echo_auth_on_data = False
            self.size_limit: int | None = DATA_SIZE_DEFAULT  # SIZE for new connections; None: none
            self._messages: list[ReceivedMessage] = []
            self._auth_attempts: list[AuthAttempt] = []
            self._connections = 0

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Accepted messages, oldest first (a copy)."""
        with self._lock:
            return list(self._messages)

    @property
    def auth_attempts(self) -> list[AuthAttempt]:
        with self._lock:
            return list(self._auth_attempts)

    @property
    def auth_logins(self) -> list[str]:
        """The login of every AUTH attempt, good or bad, oldest first."""
        return [attempt.login for attempt in self.auth_attempts]

    @property
    def connections(self) -> int:
        """Connections accepted since the last reset (refused ones included)."""
        with self._lock:
            return self._connections

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this server's certificate."""
        return ssl.create_default_context(cafile=self.ca_path)

    def connect(self, timeout: float = 5) -> smtplib.SMTP:
        """An smtplib client, already over TLS for starttls/ssl (not logged in)."""
        if self.security == "ssl":
            return smtplib.SMTP_SSL(
                self.host, self.port, timeout=timeout, context=self.client_context()
            )
        client = smtplib.SMTP(self.host, self.port, timeout=timeout)
        if self.security == "starttls":
            client.starttls(context=self.client_context())
        return client

    def start(self) -> None:
        kwargs: dict[str, Any] = {}
        if self.security == "starttls":
            kwargs.update(tls_context=self._tls_context, auth_require_tls=True)
        else:
            # aiosmtpd only counts STARTTLS as TLS, so SMTPS must not require it for AUTH.
            kwargs.update(auth_require_tls=False)
        handler = self.handler_class(self)
        self._controller = _Controller(
            handler,
            hostname=self.host,
            port=0,
            ssl_context=self._tls_context if self.security == "ssl" else None,
            server_hostname="localhost",  # else aiosmtpd calls getfqdn() per connection
            authenticator=handler.authenticate,
            auth_required=False,  # enforced in handle_MAIL, so tests can switch it off
            enable_SMTPUTF8=True,
            **kwargs,
        )
        self._controller.start()
        self.port = self._controller.port
        self.reset()  # forget the start-up probe connection

    def drop_connections(self) -> None:
        """Hang up on every connected client at once, as a server's idle timeout does."""
        controller = self._controller
        if controller is not None:
            asyncio.run_coroutine_threadsafe(controller._drop_sessions(), controller.loop).result(5)

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> SMTPTestServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _on_connect(self) -> str | None:
        with self._lock:
            self._connections += 1
            if self.reject_connect_with is None:
                return None
            if self.reject_connect_times is None:
                return self.reject_connect_with
            if self.reject_connect_times > 0:
                self.reject_connect_times -= 1
                return self.reject_connect_with
            return None

    def _take(self, counter: str) -> bool:
        """Use up one of a fault's remaining times; False once none are left."""
        with self._lock:
            left = getattr(self, counter)
            if left > 0:
                setattr(self, counter, left - 1)
                return True
            return False

    def _record(self, item: ReceivedMessage | AuthAttempt) -> None:
        with self._lock:
            if isinstance(item, AuthAttempt):
                self._auth_attempts.append(item)
            else:
                self._messages.append(item)
