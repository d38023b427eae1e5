"""Shared fixtures. Keep each group under its own heading."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from smtp_testserver import GOOD_LOGIN, GOOD_PASSWORD, Security, SMTPTestServer, closed_port

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace

pytest_plugins = [
    "workspace_fixtures",  # the `ws` fixture and the isolated environment
    "system_servers",  # Chromium (`browser`, `page`) and other Debian servers, or a skip
    "dovecot_fixture",  # a private Dovecot IMAP server (`dovecot`, `mailbox`), or a skip
    "oauth_fixtures",  # a local OAuth2 server and an XOAUTH2 SMTP server (`oauth_server`, ...)
]

# --- TLS: one test CA for the session ---------------------------------------------------


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_ca_path(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test CA as PEM: what a client passes as ``cafile``."""
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def server_tls_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    """Server side: a certificate for 127.0.0.1, ::1 and localhost signed by the test CA."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1", "::1", "localhost").configure_cert(ctx)
    return ctx


# --- SMTP: real aiosmtpd servers, one per kind for the session, reset around each test ---


def _serve(security: Security, ctx: ssl.SSLContext, ca_path: Path) -> Iterator[SMTPTestServer]:
    server = SMTPTestServer(security, ctx, ca_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _smtp_server_session(
    server_tls_context: ssl.SSLContext, tls_ca_path: Path
) -> Iterator[SMTPTestServer]:
    yield from _serve("starttls", server_tls_context, tls_ca_path)


@pytest.fixture(scope="session")
def _smtps_server_session(
    server_tls_context: ssl.SSLContext, tls_ca_path: Path
) -> Iterator[SMTPTestServer]:
    yield from _serve("ssl", server_tls_context, tls_ca_path)


@pytest.fixture(scope="session")
def _plain_smtp_server_session(
    server_tls_context: ssl.SSLContext, tls_ca_path: Path
) -> Iterator[SMTPTestServer]:
    yield from _serve("none", server_tls_context, tls_ca_path)


def _fresh(server: SMTPTestServer) -> Iterator[SMTPTestServer]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def smtp_server(_smtp_server_session: SMTPTestServer) -> Iterator[SMTPTestServer]:
    """STARTTLS offered, AUTH required and only after STARTTLS (security=starttls)."""
    yield from _fresh(_smtp_server_session)


@pytest.fixture
def smtps_server(_smtps_server_session: SMTPTestServer) -> Iterator[SMTPTestServer]:
    """Implicit TLS from the first byte (security=ssl), AUTH required."""
    yield from _fresh(_smtps_server_session)


@pytest.fixture
def plain_smtp_server(_plain_smtp_server_session: SMTPTestServer) -> Iterator[SMTPTestServer]:
    """No TLS at all (security=none); AUTH offered and required in the clear (loopback)."""
    yield from _fresh(_plain_smtp_server_session)


@pytest.fixture
def refused_port() -> int:
    """A loopback port with no listener: connecting is refused."""
    return closed_port()


# --- System emails bound to the test servers ---------------------------------------------


def bind(
    ws: Workspace,
    server: SMTPTestServer,
    name: str = "service",
    *,
    kind: str = "customer_service",
    password: str | None = GOOD_PASSWORD,
    **extra: object,
) -> accounts.Account:
    """Bind a system email to a running test server, trusting its CA."""
    fields: dict[str, object] = {
        "kind": kind,
        "from_address": GOOD_LOGIN,
        "smtp_host": server.host,
        "smtp_port": server.port,
        "smtp_security": server.security,
        "ca_bundle": str(server.ca_path) if server.security != "none" else None,
        "password": password,
    }
    fields.update(extra)
    return accounts.add_account(ws, name, **fields)  # type: ignore[arg-type]


@pytest.fixture
def service(ws: Workspace, smtp_server: SMTPTestServer) -> accounts.Account:
    """A customer-service system email on the STARTTLS + AUTH server (archiving on)."""
    return bind(ws, smtp_server)
