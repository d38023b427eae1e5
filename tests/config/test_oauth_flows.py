"""OAuth2 accounts end to end: msal, google-auth and authlib against the local
authorization server, then mail through the XOAUTH2 SMTP server that checks the tokens."""

from __future__ import annotations

import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oauth_fixtures import (
    MAILBOX,
    PUBLIC_CLIENT,
    Authorizing,
    XOAuth2SMTPServer,
    bind_oauth,
    device_code,
)
from oauth_server import Client, OAuthTestServer

from sysmail_ops.config import accounts, oauth
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import OAuthError, ValidationError
from sysmail_ops.mail.credentials import Token
from sysmail_ops.sending import connection_test
from sysmail_ops.sending.batch import SendOptions, send
from sysmail_ops.store import audit
from sysmail_ops.templates import catalog as templates

FAST = SendOptions(backoff=0.01)


@pytest.fixture
def note(ws: Workspace) -> templates.Template:
    return templates.add_template(
        ws, "note", object_type="case", subject="Case {{ case_id }}",
        html="<p>Case {{ case_id }}</p>", fields=["case_id"],
    )  # fmt: skip


def sent_once(ws: Workspace, smtp: XOAuth2SMTPServer, note: object, case: str = "C-1") -> None:
    result = send(ws, "o365", "note", to="eve@example.com", record={"case_id": case}, options=FAST)
    assert result.counts == {"sent": 1}, result.errors


# --- Microsoft: device flow (msal) -----------------------------------------------------------


def test_device_flow_end_to_end(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer, note: object
) -> None:
    account = bind_oauth(ws, xoauth2_smtp)
    with pytest.raises(OAuthError, match="not authorized for OAuth2 yet: run `sysmail-ops"):
        accounts.password_for(ws, account)
    flow = Authorizing(ws, account)
    line = flow.shown()
    assert f"open {oauth_server.base}/device and enter the code" in line
    code = device_code(line)
    assert oauth_server.pending_user_codes() == [code]
    oauth_server.approve(code, MAILBOX)  # the admin signs in and enters the code
    assert flow.finish() == "o365: authorized (microsoft, device)"
    assert oauth.status(ws, "o365").startswith(f"authorized as {MAILBOX} on ")
    assert oauth_server.records.grants_used == ["urn:ietf:params:oauth:grant-type:device_code"]

    sent_once(ws, xoauth2_smtp, note)
    (got,) = xoauth2_smtp.messages
    assert got.login == MAILBOX and got.tls
    assert xoauth2_smtp.tokens_seen == oauth_server.issued_access_tokens  # the cached one
    # Scopes asked for: SMTP and IMAP (msal adds offline_access, openid, profile itself).
    assert oauth_server.records.grants_used == ["urn:ietf:params:oauth:grant-type:device_code"]


def test_device_flow_declined_is_one_line_and_stores_nothing(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer
) -> None:
    account = bind_oauth(ws, xoauth2_smtp)
    flow = Authorizing(ws, account)
    oauth_server.deny(device_code(flow.shown()))
    with pytest.raises(OAuthError) as err:
        flow.finish()
    assert "access_denied" in str(err.value) and "\n" not in str(err.value)
    assert oauth.status(ws, "o365").startswith("not authorized yet")


def test_an_expired_token_is_refreshed_before_use_with_msal(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer, note: object
) -> None:
    account = bind_oauth(ws, xoauth2_smtp)
    flow = Authorizing(ws, account)
    oauth_server.approve(device_code(flow.shown()), MAILBOX)
    flow.finish()
    first = accounts.password_for(ws, account)
    assert accounts.password_for(ws, account).reveal() == first.reveal()  # cached
    oauth_server.expire_access_tokens()
    renewed = first.renewed() if isinstance(first, Token) else None
    assert renewed is not None and renewed.reveal() != first.reveal()
    assert oauth_server.records.grants_used[-1] == "refresh_token"
    assert accounts.password_for(ws, account).reveal() == renewed.reveal()  # stored, encrypted


def test_a_revoked_refresh_token_is_diagnosed_in_one_line(
    ws: Workspace,
    xoauth2_smtp: XOAuth2SMTPServer,
    oauth_server: OAuthTestServer,
    note: object,
) -> None:
    account = bind_oauth(ws, xoauth2_smtp)
    flow = Authorizing(ws, account)
    oauth_server.approve(device_code(flow.shown()), MAILBOX)
    flow.finish()
    oauth_server.revoke_refresh_tokens()  # the admin revoked the app's sessions
    oauth_server.expire_access_tokens()
    line = "re-authorize with `sysmail-ops accounts authorize o365`"
    result = connection_test.test_account(ws, "o365")  # the cached token: refused, renewal fails
    assert not result.ok and result.step == "auth" and line in result.message
    assert "invalid_grant" in result.message and "\n" not in result.message
    with pytest.raises(OAuthError, match=re.escape(line)):
        send(ws, "o365", "note", to="eve@example.com", record={"case_id": "1"}, options=FAST)
    assert xoauth2_smtp.messages == []
    assert connection_test.recent_tests(ws, "o365", 1)[0]["message"] == result.message


# --- Microsoft: client credentials (msal) ----------------------------------------------------


def test_client_credentials_need_no_one_and_send(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer, note: object
) -> None:
    account = bind_oauth(ws, xoauth2_smtp, flow="client_credentials")
    # app-only tokens speak for the app; the mailbox grants it send rights (here: accepted as
    # the mailbox, as Exchange does once the service principal has mailbox permission)
    oauth_server.register(Client(account.oauth_client_id or "", secret=_app_secret()))
    xoauth2_smtp.oauth = _AppAsMailbox(oauth_server)  # type: ignore[assignment]
    try:
        verdict = oauth.authorize(ws, account.oauth, say=pytest.fail)
        assert verdict == "o365: authorized (microsoft, client credentials)"
        result = connection_test.test_account(ws, "o365")
        assert result.ok, result.message
        assert result.message.endswith(f"logged in as {MAILBOX} (OAuth2, XOAUTH2)")
        sent_once(ws, xoauth2_smtp, note)
    finally:
        xoauth2_smtp.oauth = oauth_server
    assert set(oauth_server.records.grants_used) == {"client_credentials"}


def _app_secret() -> str:
    from oauth_fixtures import APP_SECRET

    return APP_SECRET


class _AppAsMailbox:
    """The XOAUTH2 check for app-only tokens: the app's token is good for the mailbox."""

    def __init__(self, server: OAuthTestServer) -> None:
        self.server = server

    def valid_user(self, token: str) -> str | None:
        user = self.server.valid_user(token)
        return MAILBOX if user and user.startswith("app:") else user


def test_a_wrong_client_secret_is_one_line(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer
) -> None:
    account = bind_oauth(
        ws, xoauth2_smtp, flow="client_credentials", oauth_client_secret="not-the-secret"
    )
    with pytest.raises(OAuthError) as err:
        oauth.authorize(ws, account.oauth, say=pytest.fail)
    message = str(err.value)
    assert "refused the OAuth2 client of 'o365' (invalid_client" in message
    assert "not-the-secret" not in message and "\n" not in message


# --- Google: service account with domain-wide delegation (google-auth) ------------------------


def service_account_key(server: OAuthTestServer, *, delegation: bool = True) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    email = "mailer@sysmail-test.iam.gserviceaccount.com"
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    server.register(Client(email, public_key_pem=public, delegation=delegation))
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "sysmail-test",
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": email,
            "client_id": "1234567890",
            "token_uri": server.base + "/oauth2/token",
        }
    )


def test_google_service_account_impersonates_the_mailbox(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer, note: object
) -> None:
    key = service_account_key(oauth_server)
    bind_oauth(
        ws, xoauth2_smtp, provider="google", flow="service_account", oauth_key=key,
        oauth_client_id=None, oauth_tenant=None, oauth_endpoint=None,
    )  # fmt: skip
    xoauth2_smtp.google_style = True
    sent_once(ws, xoauth2_smtp, note)
    assert xoauth2_smtp.messages[0].login == MAILBOX  # sub = the mailbox (domain-wide delegation)
    assert oauth_server.records.grants_used == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    oauth_server.expire_access_tokens()
    sent_once(ws, xoauth2_smtp, note, case="C-2")  # a fresh JWT grant, without anyone
    assert len(set(xoauth2_smtp.tokens_seen)) == 2


def test_google_service_account_without_delegation_is_one_line(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer
) -> None:
    key = service_account_key(oauth_server, delegation=False)
    bind_oauth(
        ws, xoauth2_smtp, provider="google", flow="service_account", oauth_key=key,
        oauth_client_id=None, oauth_tenant=None, oauth_endpoint=None,
    )  # fmt: skip
    result = connection_test.test_account(ws, "o365")
    assert not result.ok and result.step == "auth"
    assert "unauthorized_client" in result.message and "\n" not in result.message
    assert "BEGIN PRIVATE KEY" not in result.message


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("not json", "cannot be used"),
        ('{"type": "authorized_user"}', "not a service-account key"),
        ('{"type": "service_account", "client_email": "a@b", "token_uri": "x"}', "cannot be"),
    ],
)
def test_a_bad_service_account_key_is_refused_and_nothing_is_written(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, text: str, why: str
) -> None:
    with pytest.raises(ValidationError, match=why):
        bind_oauth(ws, xoauth2_smtp, provider="google", flow="service_account", oauth_key=text,
                   oauth_client_id=None, oauth_tenant=None, oauth_endpoint=None)  # fmt: skip
    assert accounts.list_accounts(ws) == []


# --- Google / generic: installed app, loopback redirect, PKCE (authlib) -----------------------


def browser(ca: Path) -> Callable[[str], str]:
    """What the person's browser does: open the URL, follow the redirect to the loopback."""

    def visit(url: str) -> str:
        ctx = ssl.create_default_context(cafile=str(ca))
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
        with opener.open(url, timeout=10) as resp:
            return str(resp.read().decode())

    return visit


def test_installed_app_flow_with_pkce_then_refresh_by_google_auth(
    ws: Workspace,
    xoauth2_smtp: XOAuth2SMTPServer,
    oauth_server: OAuthTestServer,
    tls_ca_path: Path,
    note: object,
) -> None:
    oauth_server.register(Client("desktop-app", secret="desktop-not-really-secret"))
    account = bind_oauth(
        ws, xoauth2_smtp, provider="google", flow="authorization_code",
        oauth_client_id="desktop-app", oauth_client_secret="desktop-not-really-secret",
        oauth_tenant=None,
    )  # fmt: skip
    oauth_server.sign_in_as = MAILBOX
    flow = Authorizing(ws, account, wait=30)
    url = flow.shown().split("sign in at: ", 1)[1]
    assert "code_challenge_method=S256" in url and "access_type=offline" in url
    redirect = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["redirect_uri"][0]
    assert redirect.startswith("http://127.0.0.1:")
    with pytest.raises(urllib.error.HTTPError) as probe:  # a browser's favicon.ico: not it
        urllib.request.urlopen(redirect + "favicon.ico", timeout=10)  # noqa: S310 - loopback
    assert probe.value.code == 404
    probe.value.close()
    assert "you can close this window" in browser(tls_ca_path)(url)
    assert flow.finish() == "o365: authorized (google, authorization code)"
    sent_once(ws, xoauth2_smtp, note)
    oauth_server.expire_access_tokens()
    sent_once(ws, xoauth2_smtp, note, case="C-2")
    assert oauth_server.records.grants_used == ["authorization_code", "refresh_token"]
    oauth_server.revoke_refresh_tokens()  # google-auth's RefreshError, read as one line
    oauth_server.expire_access_tokens()
    result = connection_test.test_account(ws, "o365")
    assert not result.ok and "re-authorize with `sysmail-ops accounts authorize o365`" in (
        result.message
    )


def test_installed_app_flow_refused_in_the_browser(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer, tls_ca_path: Path
) -> None:
    account = bind_oauth(ws, xoauth2_smtp, provider="generic", flow="authorization_code",
                         oauth_tenant=None)  # fmt: skip
    oauth_server.sign_in_as = None  # the person clicks "Cancel"
    flow = Authorizing(ws, account, wait=30)
    browser(tls_ca_path)(flow.shown().split("sign in at: ", 1)[1])
    with pytest.raises(OAuthError, match="access_denied"):
        flow.finish()


# --- generic: device flow (authlib) --------------------------------------------------------------


def test_generic_device_flow_then_refresh(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer, note: object
) -> None:
    account = bind_oauth(ws, xoauth2_smtp, provider="generic", flow="device",
                         oauth_client_id=PUBLIC_CLIENT, oauth_tenant=None)  # fmt: skip
    flow = Authorizing(ws, account)
    oauth_server.approve(device_code(flow.shown()), MAILBOX)
    assert flow.finish() == "o365: authorized (generic, device)"
    sent_once(ws, xoauth2_smtp, note)
    oauth_server.expire_access_tokens()
    sent_once(ws, xoauth2_smtp, note, case="C-2")
    assert oauth_server.records.grants_used[-1] == "refresh_token"


def test_generic_client_credentials_with_authlib(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer, note: object
) -> None:
    account = bind_oauth(ws, xoauth2_smtp, provider="generic", flow="client_credentials",
                         oauth_tenant=None, oauth_scopes="mail.send")  # fmt: skip
    xoauth2_smtp.oauth = _AppAsMailbox(oauth_server)  # type: ignore[assignment]
    try:
        assert oauth.authorize(ws, account.oauth, say=pytest.fail) == (
            "o365: authorized (generic, client credentials)"
        )
        sent_once(ws, xoauth2_smtp, note)
    finally:
        xoauth2_smtp.oauth = oauth_server
    assert oauth_server.records.grants_used == ["client_credentials"]


# --- revoking an authorization -------------------------------------------------------------------


def test_revoke_ends_the_grant_at_the_provider_and_deletes_the_tokens(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer, note: object
) -> None:
    account = bind_oauth(ws, xoauth2_smtp, provider="generic", flow="device",
                         oauth_client_id=PUBLIC_CLIENT, oauth_tenant=None)  # fmt: skip
    flow = Authorizing(ws, account)
    oauth_server.approve(device_code(flow.shown()), MAILBOX)
    flow.finish()
    sent_once(ws, xoauth2_smtp, note)
    (refresh,) = oauth_server.issued_refresh_tokens
    (access,) = oauth_server.issued_access_tokens

    oauth_server.revocation_down = True  # the provider fails: nothing is deleted here
    with pytest.raises(OAuthError, match=r"refused to revoke .*temporarily_unavailable.*nothing"):
        oauth.revoke(ws, account.oauth)
    assert oauth.status(ws, "o365").startswith("authorized")
    oauth_server.revocation_down = False

    verdict = oauth.revoke(ws, account.oauth)
    assert verdict == "o365: authorization revoked at the provider; stored tokens deleted"
    assert oauth_server.records.revoked == ["refresh_token", "access_token"]
    assert oauth_server.is_revoked(refresh) and oauth_server.is_revoked(access)
    assert oauth.status(ws, "o365").startswith("not authorized yet")
    with pytest.raises(OAuthError, match="not authorized for OAuth2 yet"):
        send(ws, "o365", "note", to="eve@example.com", record={"case_id": "C-2"}, options=FAST)
    assert oauth.revoke(ws, account.oauth) == "o365: not authorized: nothing to revoke"
    assert audit.list_entries(ws.store)[0].action == "forget authorization"


def test_revoke_for_microsoft_deletes_the_tokens_and_says_how_to_end_the_grant_there(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer
) -> None:
    account = bind_oauth(ws, xoauth2_smtp)
    flow = Authorizing(ws, account)
    oauth_server.approve(device_code(flow.shown()), MAILBOX)
    flow.finish()
    verdict = oauth.revoke(ws, account.oauth)
    assert verdict.startswith("o365: stored tokens deleted. Microsoft offers apps no token")
    assert oauth_server.records.revoked == []  # nothing to call: said, not pretended
    assert oauth.status(ws, "o365").startswith("not authorized yet")
