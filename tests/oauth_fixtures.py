"""OAuth2 for the suite: a local authorization server and an XOAUTH2 SMTP server.

``oauth_server`` is ``oauth_server.OAuthTestServer`` over TLS from the session's test
CA, with a Microsoft-style public client (``PUBLIC_CLIENT``), a confidential one
(``APP_CLIENT`` / ``APP_SECRET``) and nothing else registered. ``xoauth2_smtp`` is the
suite's aiosmtpd server (STARTTLS) offering AUTH XOAUTH2, which accepts only an access
token that the authorization server says is valid right now, for the user named in it.
``bind_oauth`` binds a system email to both.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session
from oauth_server import Client, OAuthTestServer
from smtp_testserver import AuthAttempt, ReceivedMessage, SMTPTestServer, _Handler

from sysmail_ops.config import accounts, oauth
from sysmail_ops.config.workspace import Workspace

MAILBOX = "sender@example.com"
PUBLIC_CLIENT = "11111111-aaaa-4bbb-8ccc-000000000001"
APP_CLIENT = "22222222-aaaa-4bbb-8ccc-000000000002"
APP_SECRET = "app-secret~Zq8Q" + "x" * 20
TENANT = "test-tenant"
# Microsoft's reply to a token it does not accept; Google first sends a 334 with JSON.
REFUSED = "535 5.7.3 Authentication unsuccessful"


class _XOAuth2Handler(_Handler):
    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
        data: LoginPassword,
    ) -> AuthResult:  # fmt: skip
        refusal = self.owner.basic_refusal  # type: ignore[attr-defined]
        if refusal:  # a provider that has left passwords behind
            self.owner._record(AuthAttempt(data.login.decode(), mechanism, False))
            return AuthResult(success=False, handled=False, message=refusal)
        return super().authenticate(server, session, envelope, mechanism, data)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        owner = self.owner
        assert isinstance(owner, XOAuth2SMTPServer)
        if len(args) > 1:
            blob = base64.b64decode(args[1])
        else:
            got = await server.challenge_auth("")
            if got is MISSING:
                return AuthResult(success=False, handled=True)
            blob = bytes(got)
        fields = dict(
            part.split("=", 1) for part in blob.decode("utf-8", "replace").split("\x01") if part
        )
        user = fields.get("user", "")
        bearer = fields.get("auth", "")
        token = bearer[len("Bearer ") :] if bearer.startswith("Bearer ") else ""
        ok = bool(user) and (owner.oauth.valid_user(token) or "").lower() == user.lower()
        owner._record(AuthAttempt(user, "XOAUTH2", ok))
        if ok:
            owner.tokens_seen.append(token)
            return AuthResult(success=True, handled=False, auth_data=user)
        if owner.google_style:  # a 334 with the error in JSON, then 535 after the empty line
            error = {"status": "401", "schemes": "Bearer", "scope": "https://mail.google.com/"}
            await server.challenge_auth(json.dumps(error).encode())
            return AuthResult(
                success=False, handled=False, message="535 5.7.8 Username and Password not accepted"
            )
        return AuthResult(success=False, handled=False, message=REFUSED)


class XOAuth2SMTPServer(SMTPTestServer):
    """The suite's SMTP server plus AUTH XOAUTH2 checked against ``oauth``."""

    handler_class = _XOAuth2Handler

    def __init__(self, oauth: OAuthTestServer, *args: Any, **kwargs: Any) -> None:
        self.oauth = oauth
        super().__init__(*args, **kwargs)

    def reset(self) -> None:
        super().reset()
        self.google_style = False
        self.basic_refusal: str | None = None  # refuse every password login with this reply
        self.tokens_seen: list[str] = []
        # Called with the count of messages received so far, after each one.
        self.after_message: Callable[[int], None] | None = None

    def _record(self, item: ReceivedMessage | AuthAttempt) -> None:
        super()._record(item)
        if isinstance(item, ReceivedMessage) and self.after_message is not None:
            self.after_message(len(self.messages))


@pytest.fixture(scope="session")
def _oauth_session(server_tls_context: ssl.SSLContext) -> Iterator[OAuthTestServer]:
    server = OAuthTestServer(server_tls_context)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def oauth_server(_oauth_session: OAuthTestServer) -> Iterator[OAuthTestServer]:
    """The authorization server, fresh: a public and a confidential client registered."""
    _oauth_session.reset()
    _oauth_session.register(Client(PUBLIC_CLIENT))
    _oauth_session.register(Client(APP_CLIENT, secret=APP_SECRET))
    yield _oauth_session
    _oauth_session.reset()


@pytest.fixture(scope="session")
def _xoauth2_session(
    _oauth_session: OAuthTestServer, server_tls_context: ssl.SSLContext, tls_ca_path: Path
) -> Iterator[XOAuth2SMTPServer]:
    server = XOAuth2SMTPServer(_oauth_session, "starttls", server_tls_context, tls_ca_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def xoauth2_smtp(
    _xoauth2_session: XOAuth2SMTPServer, oauth_server: OAuthTestServer
) -> Iterator[XOAuth2SMTPServer]:
    """STARTTLS, AUTH (XOAUTH2 with a live token from ``oauth_server``) required."""
    _xoauth2_session.reset()
    yield _xoauth2_session
    _xoauth2_session.reset()


def bind_oauth(
    ws: Workspace,
    smtp: XOAuth2SMTPServer,
    name: str = "o365",
    *,
    provider: str = "microsoft",
    flow: str = "device",
    **extra: Any,
) -> accounts.Account:
    """A system email on ``smtp`` whose tokens come from ``smtp.oauth``."""
    fields: dict[str, Any] = {
        "kind": "customer_service",
        "from_address": MAILBOX,
        "smtp_host": smtp.host,
        "smtp_port": smtp.port,
        "smtp_security": "starttls",
        "ca_bundle": str(smtp.ca_path),
        "auth": "oauth2",
        "oauth_provider": provider,
        "oauth_flow": flow,
        "oauth_client_id": APP_CLIENT if flow == "client_credentials" else PUBLIC_CLIENT,
        "oauth_tenant": TENANT,
        "oauth_endpoint": smtp.oauth.base,
    }
    if flow == "client_credentials":
        fields["oauth_client_secret"] = APP_SECRET
    fields.update(extra)
    return accounts.add_account(ws, name, **fields)


class Authorizing:
    """``oauth.authorize`` in a thread, as the CLI runs it; what it says is kept."""

    def __init__(self, ws: Workspace, account: accounts.Account, **kw: Any) -> None:
        self.lines: list[str] = []
        self.said = threading.Event()
        self.result: str | None = None
        self.error: BaseException | None = None

        def say(line: str) -> None:
            self.lines.append(line)
            self.said.set()

        def run() -> None:
            try:
                self.result = oauth.authorize(ws, account.oauth, say=say, **kw)
            except BaseException as exc:  # handed to the test
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def shown(self) -> str:
        for _ in range(300):
            if self.said.wait(0.1) or not self.thread.is_alive():
                break
        if self.error is not None:
            raise self.error
        assert self.lines, "the flow never said what to do"
        return self.lines[0]

    def finish(self) -> str:
        self.thread.join(60)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def device_code(line: str) -> str:
    found = re.search(r"enter the code (\S+)", line)
    assert found, line
    return found.group(1)


def authorize_device(ws: Workspace, account: accounts.Account, server: OAuthTestServer) -> str:
    """Run the device flow for ``account``, approving as its mailbox; returns the verdict."""
    flow = Authorizing(ws, account)
    server.approve(device_code(flow.shown()), account.login)
    return flow.finish()
