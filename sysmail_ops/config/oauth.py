"""OAuth2 for system emails: authorize once, then an access token at each XOAUTH2 login.

An account with ``auth = oauth2`` names a provider and a flow:

- ``microsoft``: ``device`` (delegated, RFC 8628: a code to enter at a URL)
  or ``client_credentials`` (app-only, for unattended service mailboxes), with
  ``msal``, Microsoft's own library (authorities, national clouds, its token
  cache and refresh rules, AADSTS errors);
- ``google``: ``service_account`` (domain-wide delegation, impersonating the
  mailbox) with ``google-auth``, Google's own library, which signs the JWT
  grant with the key; or ``authorization_code`` (an installed app: browser
  sign-in, loopback redirect, PKCE) with ``authlib``'s client, refreshed by
  ``google-auth``;
- ``generic``: any server publishing RFC 8414 / OpenID metadata, with
  ``authlib``: ``client_credentials``, ``device`` or ``authorization_code``.

``authorize`` runs the flow and stores what it gets; ``access_token`` gives
a token at each login, from the cache while it has more than a tenth of its
life (at most five minutes) left, else refreshed. The refresh token, msal's
cache, the client secret, the service-account key and the cached access
token are stored encrypted with the workspace key (``SecretBox``); none is
logged, printed, or put in an exception or a repr.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sysmail_ops.errors import OAuthError, ValidationError
from sysmail_ops.mail.credentials import Secret, Token
from sysmail_ops.mail.smtp import tls_context
from sysmail_ops.store import audit
from sysmail_ops.store.database import utcnow

if TYPE_CHECKING:
    import requests

    from sysmail_ops.config.workspace import Workspace

AUTHS = ("password", "none", "oauth2")
PROVIDERS = ("microsoft", "google", "generic")
FLOWS: dict[str, tuple[str, ...]] = {
    "microsoft": ("device", "client_credentials"),
    "google": ("service_account", "authorization_code"),
    "generic": ("device", "authorization_code", "client_credentials"),
}
DEFAULT_FLOW = {"microsoft": "device", "google": "service_account", "generic": "device"}
MICROSOFT_LOGIN = "https://login.microsoftonline.com"
GOOGLE_ISSUER = "https://accounts.google.com"
# Delegated Microsoft scopes: send, read for received archiving, and a refresh token.
MICROSOFT_SCOPES = (
    "https://outlook.office.com/SMTP.Send",
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "offline_access",
)
MICROSOFT_APP_SCOPES = ("https://outlook.office365.com/.default",)  # app-only: the app's roles
GOOGLE_SCOPES = ("https://mail.google.com/",)
_MSAL_RESERVED = frozenset({"offline_access", "openid", "profile"})  # msal adds them itself
# Errors by which a token endpoint says the grant (refresh token, device code) is gone.
_GRANT_GONE = frozenset(
    {"invalid_grant", "interaction_required", "expired_token", "access_denied", "invalid_token"}
)
HTTP_TIMEOUT = 30.0
MAX_MARGIN = 300.0  # refresh at most this long before expiry ...
MARGIN_SHARE = 0.1  # ... or when less than this share of the token's life is left
LOOPBACK_WAIT = 300.0  # seconds the browser sign-in may take


def reauthorize(name: str) -> str:
    return f"re-authorize with `sysmail-ops accounts authorize {name}`"


@dataclass(frozen=True)
class OAuthClient:
    """One account's OAuth2 settings: plain values, never a secret."""

    account: str  # the system email's name
    login: str  # the mailbox: XOAUTH2's user=, the service account's subject
    provider: str
    flow: str
    client_id: str | None = None
    tenant: str | None = None  # Microsoft: directory (tenant) ID or domain
    endpoint: str | None = None  # Microsoft: authority host; google/generic: issuer URL
    scopes: tuple[str, ...] = ()
    ca_bundle: str | None = None

    @property
    def needs_authorization(self) -> bool:
        """Whether a person must sign in once (the app-only flows need no one)."""
        return self.flow in ("device", "authorization_code")


def default_scopes(provider: str, flow: str) -> tuple[str, ...]:
    if provider == "microsoft":
        return MICROSOFT_APP_SCOPES if flow == "client_credentials" else MICROSOFT_SCOPES
    if provider == "google":
        return GOOGLE_SCOPES
    return ()


# --- checking the settings (accounts._validate) ---------------------------------------------


def check_settings(v: dict[str, Any]) -> None:
    """Check and normalise the auth fields of an account's values, in place."""
    auth = v.get("auth") or "password"
    if auth not in AUTHS:
        raise ValidationError(f"unknown auth {auth!r}: choose one of {', '.join(AUTHS)}")
    v["auth"] = auth
    keys = ("oauth_provider", "oauth_flow", "oauth_client_id", "oauth_tenant")
    for key in (*keys, "oauth_endpoint", "oauth_scopes"):
        value = v.get(key)
        if value is not None and (not isinstance(value, str) or _bad_text(value)):
            raise ValidationError(f"{key.replace('_', ' ')} must be one line of text")
        v[key] = value.strip() or None if isinstance(value, str) else None
    if auth != "oauth2":
        return
    provider = v["oauth_provider"]
    if provider not in PROVIDERS:
        raise ValidationError(
            f"auth oauth2 needs --oauth-provider: one of {', '.join(PROVIDERS)}"
            + (f" (got {provider!r})" if provider else "")
        )
    flow = v["oauth_flow"] = v["oauth_flow"] or DEFAULT_FLOW[provider]
    if flow not in FLOWS[provider]:
        raise ValidationError(
            f"provider {provider} has no flow {flow!r}: choose one of {', '.join(FLOWS[provider])}"
        )
    if not v["oauth_client_id"] and flow != "service_account":
        raise ValidationError(
            f"the {provider} {flow.replace('_', ' ')} flow needs --oauth-client-id "
            "(the application (client) ID registered with the provider)"
        )
    if provider == "microsoft" and flow == "client_credentials" and not v["oauth_tenant"]:
        raise ValidationError(
            "app-only Microsoft access needs --oauth-tenant (the directory (tenant) ID)"
        )
    if provider == "generic" and not v["oauth_endpoint"]:
        raise ValidationError("a generic provider needs --oauth-endpoint (the issuer URL)")
    endpoint = v["oauth_endpoint"]
    if endpoint:
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme != "https" or not url.hostname or url.query or url.fragment:
            raise ValidationError(
                f"the OAuth endpoint must be an https URL without query, got {endpoint!r}"
            )
        v["oauth_endpoint"] = endpoint.rstrip("/")
    if v["oauth_scopes"]:
        v["oauth_scopes"] = " ".join(v["oauth_scopes"].split())


def _bad_text(value: str) -> bool:
    return len(value) > 2000 or any(c in value for c in "\r\n\0")


def check_service_account_key(text: str) -> Secret:
    """A Google service-account key (JSON), checked so that a wrong file is refused at once."""
    from google.oauth2 import service_account

    try:
        info = json.loads(text)
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise ValueError("not a service-account key (its type is not service_account)")
        service_account.Credentials.from_service_account_info(info)
    except ValueError as exc:  # JSONDecodeError and google-auth's MalformedError are ValueErrors
        why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ValidationError(f"the service-account key cannot be used: {why}") from None
    return Secret(text)


# --- the token state, stored encrypted -------------------------------------------------------


def _read(ws: Workspace, name: str) -> tuple[dict[str, Any] | None, Secret | None, Secret | None]:
    """(token state, client secret, service-account key), decrypted."""
    with ws.store.connect() as con:
        row = con.execute(
            "SELECT oauth_token_enc, oauth_client_secret_enc, oauth_key_enc FROM accounts "
            "WHERE name = ?",
            [name],
        ).fetchone()
    if row is None:
        return None, None, None
    token_enc, secret_enc, key_enc = row
    state = None
    box = ws.secrets
    if token_enc:
        state = json.loads(box.decrypt(token_enc, f"the OAuth2 tokens of {name!r}").reveal())
    secret = box.decrypt(secret_enc, f"the client secret of {name!r}") if secret_enc else None
    key = box.decrypt(key_enc, f"the service-account key of {name!r}") if key_enc else None
    return state, secret, key


def _save(
    ws: Workspace, name: str, state: dict[str, Any], *, authorized_as: str | None = None
) -> None:
    blob = ws.secrets.encrypt(Secret(json.dumps(state)))
    with ws.store.transaction() as con:
        if authorized_as is None:  # a refresh: the same authorization, not a change to audit
            con.execute("UPDATE accounts SET oauth_token_enc = ? WHERE name = ?", [blob, name])
        else:
            before = audit.row(con, "accounts", name=name)
            con.execute(
                "UPDATE accounts SET oauth_token_enc = ?, oauth_authorized_at = ?, "
                "oauth_authorized_as = ? WHERE name = ?",
                [blob, utcnow(), authorized_as, name],
            )
            after = audit.row(con, "accounts", name=name)
            audit.record(con, "account", name, "authorize", before, after)


def forget(ws: Workspace, name: str) -> None:
    """Drop the stored tokens (the settings changed: they belong to another client)."""
    with ws.store.transaction() as con:
        before = audit.row(con, "accounts", name=name)
        con.execute(
            "UPDATE accounts SET oauth_token_enc = NULL, oauth_authorized_at = NULL, "
            "oauth_authorized_as = NULL WHERE name = ?",
            [name],
        )
        after = audit.row(con, "accounts", name=name)
        audit.record(con, "account", name, "forget authorization", before, after)


MS_NO_REVOCATION = (
    "Microsoft offers apps no token revocation: to end the grant there too, revoke the "
    "mailbox user's sessions (Entra admin center, or Revoke-MgUserSignInSession)"
)


def revoke(ws: Workspace, client: OAuthClient) -> str:
    """End the account's OAuth2 authorization; a one-line verdict.

    The tokens it holds (refresh, then access) are revoked at the provider's RFC 7009
    revocation endpoint (Google's, or a generic issuer's from its metadata), then
    deleted here (audited). Microsoft has no such endpoint for apps: the tokens are
    deleted here and the verdict says how to end the grant there. If the provider
    cannot be reached or refuses, nothing is deleted and one line says why.
    """
    state, secret, _key = _read(ws, client.account)
    if not state:
        return f"{client.account}: not authorized: nothing to revoke"
    if client.provider == "microsoft":
        forget(ws, client.account)
        return f"{client.account}: stored tokens deleted. {MS_NO_REVOCATION}"
    held = [(state.get(kind), kind) for kind in ("refresh_token", "access_token")]
    with _closing_sessions():
        meta = _metadata(client)
        endpoint = meta.get("revocation_endpoint")
        if not endpoint:
            forget(ws, client.account)
            return (
                f"{client.account}: stored tokens deleted; the provider publishes no revocation "
                "endpoint: end the grant in its console"
            )
        session = _authlib(client, secret)
        for token, kind in held:
            if token:
                _revoke_one(client, session, endpoint, token, kind)
    forget(ws, client.account)
    return f"{client.account}: authorization revoked at the provider; stored tokens deleted"


def _revoke_one(client: OAuthClient, session: Any, endpoint: str, token: str, kind: str) -> None:
    import requests

    try:
        resp = session.revoke_token(endpoint, token=token, token_type_hint=kind)
    except (requests.RequestException, OSError) as exc:
        why = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise OAuthError(
            f"cannot reach the provider to revoke {client.account!r}: {why}; "
            "nothing was deleted: try again"
        ) from None
    if resp.status_code == 200:  # RFC 7009 2.2: also for a token it no longer knows
        return
    try:
        body = resp.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    said = " ".join(str(body.get("error_description") or "").split())[:200]
    error = str(body.get("error") or f"HTTP {resp.status_code}")
    raise OAuthError(
        f"the provider refused to revoke the {kind.replace('_', ' ')} of {client.account!r} "
        f"({error}{': ' + said if said else ''}); nothing was deleted"
    )


def status(ws: Workspace, name: str) -> str:
    """One line for `accounts show`: authorized when and as whom, or not yet."""
    with ws.store.connect() as con:
        row = con.execute(
            "SELECT oauth_authorized_at, oauth_authorized_as, oauth_token_enc IS NOT NULL "
            "FROM accounts WHERE name = ?",
            [name],
        ).fetchone()
    if row is None or not row[2]:
        return f"not authorized yet: run `sysmail-ops accounts authorize {name}`"
    when, who = row[0], row[1]
    said = f" as {who}" if who else ""
    return f"authorized{said} on {when.isoformat(timespec='seconds')}Z" if when else "authorized"


def _fresh(state: dict[str, Any] | None) -> bool:
    if not state or not state.get("access_token"):
        return False
    lifetime = float(state.get("lifetime") or 0)
    margin = min(MAX_MARGIN, lifetime * MARGIN_SHARE)
    return time.time() < float(state.get("expires_at") or 0) - margin


# --- the access token at each login ----------------------------------------------------------


def access_token(ws: Workspace, client: OAuthClient, *, force: bool = False) -> Token:
    """A valid access token for ``client``'s account: cached, or refreshed now.

    ``force`` refreshes even a token that looks valid (the server refused it).
    The token's ``renew`` does that, for ``mail.smtp``'s login.
    """
    state, secret, key = _read(ws, client.account)
    if force or not _fresh(state):
        if client.needs_authorization and not (state and _can_refresh(state)):
            raise OAuthError(
                f"{client.account!r} is not authorized for OAuth2 yet: run "
                f"`sysmail-ops accounts authorize {client.account}`"
            )
        with _closing_sessions():
            state = _refresh(client, state or {}, secret, key)
        _save(ws, client.account, state)
    assert state is not None
    return Token(
        state["access_token"], renew=functools.partial(access_token, ws, client, force=True)
    )


def _can_refresh(state: dict[str, Any]) -> bool:
    return bool(state.get("refresh_token") or state.get("msal_cache"))


def _refresh(
    client: OAuthClient, state: dict[str, Any], secret: Secret | None, key: Secret | None
) -> dict[str, Any]:
    if client.provider == "microsoft":
        if client.flow == "client_credentials":
            return _ms_client_credentials(client, secret)
        return _ms_refresh(client, state)
    if client.provider == "google" and client.flow == "service_account":
        return _google_service_account(client, key)
    if client.flow == "client_credentials":
        return _generic_client_credentials(client, secret)
    if client.provider == "google":
        return _google_refresh(client, state, secret)
    return _generic_refresh(client, state, secret)


def _state(token: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What is kept of a token response: the token, its expiry and lifetime, a refresh token."""
    if not token.get("access_token"):
        raise OAuthError("the token endpoint answered without an access token")
    lifetime = float(token.get("expires_in") or 3600)
    out = {
        "access_token": token["access_token"],
        "expires_at": time.time() + lifetime,
        "lifetime": lifetime,
    }
    if token.get("refresh_token"):
        out["refresh_token"] = token["refresh_token"]
    out.update(extra)
    return out


def _error_line(client: OAuthClient, error: str | None, description: str | None) -> OAuthError:
    """One line for a refusal by the token endpoint; a lost grant says how to re-authorize."""
    said = " ".join(str(description or "").split())[:200]
    why = f"{error}: {said}" if said else str(error or "refused")
    if error in _GRANT_GONE and client.needs_authorization:
        return OAuthError(
            f"the OAuth2 authorization of {client.account!r} was revoked or has expired "
            f"({why}); {reauthorize(client.account)}"
        )
    if error in ("invalid_client", "unauthorized_client") or error in _GRANT_GONE:
        return OAuthError(
            f"the provider refused the OAuth2 client of {client.account!r} ({why}): check "
            "its client ID, secret or key and its grants with the provider"
        )
    return OAuthError(f"the provider refused a token for {client.account!r} ({why})")


def _unreachable(client: OAuthClient, exc: BaseException) -> OAuthError:
    why = " ".join(str(exc).split())[:200] or type(exc).__name__
    return OAuthError(f"cannot get an OAuth2 token for {client.account!r}: {why}")


# --- HTTP: the account's trust (system store + its CA bundle), a timeout --------------------


_opened = threading.local()  # the sessions of the token request under way, closed after it


@contextlib.contextmanager
def _closing_sessions() -> Iterator[None]:
    outer = getattr(_opened, "sessions", None)
    _opened.sessions = []
    try:
        yield
    finally:
        for s in _opened.sessions:
            s.close()
        _opened.sessions = outer


def _session(client: OAuthClient, session: requests.Session | None = None) -> requests.Session:
    import requests
    from requests.adapters import HTTPAdapter

    class _Trust(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["ssl_context"] = tls_context(client.ca_bundle)
            super().init_poolmanager(*args, **kwargs)

    s = session if session is not None else requests.Session()
    if getattr(_opened, "sessions", None) is not None:
        _opened.sessions.append(s)
    s.mount("https://", _Trust())
    s.request = functools.partial(s.request, timeout=HTTP_TIMEOUT)  # type: ignore[method-assign]
    return s


def _metadata(client: OAuthClient) -> dict[str, Any]:
    """The issuer's endpoints (OpenID discovery, else RFC 8414 metadata)."""
    import requests

    issuer = client.endpoint or (GOOGLE_ISSUER if client.provider == "google" else "")
    s = _session(client)
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        try:
            resp = s.get(issuer + path)
        except requests.RequestException as exc:
            raise _unreachable(client, exc) from None
        if resp.status_code == 200:
            try:
                meta = resp.json()
            except ValueError:
                break
            if isinstance(meta, dict) and meta.get("token_endpoint"):
                return meta
    raise OAuthError(
        f"no OAuth2 metadata at {issuer}/.well-known/openid-configuration or "
        "oauth-authorization-server: check --oauth-endpoint (the issuer URL)"
    )


# --- Microsoft (msal) --------------------------------------------------------------------------


def _scopes(client: OAuthClient) -> tuple[str, ...]:
    return client.scopes or default_scopes(client.provider, client.flow)


def _msal_app(client: OAuthClient, cache: Any, secret: Secret | None = None) -> Any:
    import msal

    authority = f"{(client.endpoint or MICROSOFT_LOGIN)}/{client.tenant or 'organizations'}"
    options: dict[str, Any] = {
        "authority": authority,
        "token_cache": cache,
        "http_client": _session(client),
    }
    if client.endpoint:  # a national cloud or a private authority: no discovery at Microsoft
        options["instance_discovery"] = False
    try:
        if secret is not None:
            return msal.ConfidentialClientApplication(
                client.client_id, client_credential=secret.reveal(), **options
            )
        return msal.PublicClientApplication(client.client_id, **options)
    except ValueError as exc:  # msal: the authority's discovery failed
        raise OAuthError(
            f"the Microsoft authority {authority} cannot be used: "
            f"{' '.join(str(exc).split())[:200]}"
        ) from None
    except OSError as exc:
        raise _unreachable(client, exc) from None


def _msal_scopes(client: OAuthClient) -> list[str]:
    return [s for s in _scopes(client) if s not in _MSAL_RESERVED]


def _ms_client_credentials(client: OAuthClient, secret: Secret | None) -> dict[str, Any]:
    import msal

    if not secret:
        raise OAuthError(
            f"{client.account!r} has no client secret: set it with `sysmail-ops accounts edit "
            f"{client.account} --oauth-secret-stdin`"
        )
    app = _msal_app(client, msal.TokenCache(), secret)  # a fresh cache: a new token each time
    result = _msal_call(client, app.acquire_token_for_client, _msal_scopes(client))
    if "access_token" not in result:
        raise _error_line(client, result.get("error"), result.get("error_description"))
    return _state(result)


def _msal_call(client: OAuthClient, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    import requests

    try:
        return fn(*args, **kw)
    except (requests.RequestException, OSError) as exc:
        raise _unreachable(client, exc) from None


def _ms_refresh(client: OAuthClient, state: dict[str, Any]) -> dict[str, Any]:
    import msal

    cache = msal.SerializableTokenCache()
    cache.deserialize(state.get("msal_cache") or "{}")
    app = _msal_app(client, cache)
    accounts = app.get_accounts()
    mine = [a for a in accounts if a.get("username", "").lower() == client.login.lower()]
    account = (mine or accounts or [None])[0]
    if account is None:
        raise _error_line(client, "invalid_grant", "no signed-in account in the token cache")
    result = _msal_call(
        client, app.acquire_token_silent_with_error, _msal_scopes(client), account,
        force_refresh=True,
    )  # fmt: skip
    if not result or "access_token" not in result:
        result = result or {"error": "invalid_grant", "error_description": "no refresh token"}
        raise _error_line(client, result.get("error"), result.get("error_description"))
    return _state(result, msal_cache=cache.serialize())


def _ms_device(client: OAuthClient, say: Callable[[str], None]) -> tuple[dict[str, Any], str]:
    import msal

    cache = msal.SerializableTokenCache()
    app = _msal_app(client, cache)
    flow = _msal_call(client, app.initiate_device_flow, scopes=_msal_scopes(client))
    if "user_code" not in flow:
        raise _error_line(client, flow.get("error"), flow.get("error_description"))
    say(_device_prompt(client, flow))
    result = _msal_call(client, app.acquire_token_by_device_flow, flow)
    if "access_token" not in result:
        raise _error_line(client, result.get("error"), result.get("error_description"))
    who = (result.get("id_token_claims") or {}).get("preferred_username") or ""
    return _state(result, msal_cache=cache.serialize()), who


def _device_prompt(client: OAuthClient, flow: dict[str, Any]) -> str:
    uri = flow.get("verification_uri") or flow.get("verification_url") or "?"
    minutes = max(1, int(flow.get("expires_in") or 900) // 60)
    return (
        f"To authorize {client.account} ({client.login}): open {_one_line(uri)} and enter the "
        f"code {_one_line(str(flow['user_code']))} within {minutes} minutes. Waiting..."
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


# --- Google (google-auth) ----------------------------------------------------------------------


def _google_service_account(client: OAuthClient, key: Secret | None) -> dict[str, Any]:
    from google.auth import exceptions
    from google.auth.transport.requests import Request
    from google.oauth2 import service_account

    if not key:
        raise OAuthError(
            f"{client.account!r} has no service-account key: set it with `sysmail-ops accounts "
            f"edit {client.account} --oauth-key-file KEY.json`"
        )
    info = json.loads(key.reveal())
    creds = service_account.Credentials.from_service_account_info(
        info, scopes=list(_scopes(client)), subject=client.login
    )
    return _google_token(client, creds, Request(_session(client)), exceptions)


def _google_refresh(
    client: OAuthClient, state: dict[str, Any], secret: Secret | None
) -> dict[str, Any]:
    from google.auth import exceptions
    from google.auth.transport.requests import Request
    from google.oauth2.credentials import Credentials

    creds = Credentials(
        None,
        refresh_token=state.get("refresh_token"),
        token_uri=state.get("token_endpoint") or _metadata(client)["token_endpoint"],
        client_id=client.client_id,
        client_secret=secret.reveal() if secret else None,
        scopes=list(_scopes(client)),
    )
    out = _google_token(client, creds, Request(_session(client)), exceptions)
    out["refresh_token"] = creds.refresh_token or state.get("refresh_token")
    out["token_endpoint"] = creds.token_uri
    return out


def _google_token(client: OAuthClient, creds: Any, request: Any, exceptions: Any) -> dict[str, Any]:
    try:
        creds.refresh(request)
    except exceptions.RefreshError as exc:
        body = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
        error = body.get("error") or str(exc.args[0] if exc.args else "").split(":")[0]
        raise _error_line(client, error, body.get("error_description")) from None
    except exceptions.TransportError as exc:
        raise _unreachable(client, exc) from None
    expiry = creds.expiry.replace(tzinfo=UTC) if creds.expiry else None
    lifetime = (expiry - datetime.now(UTC)).total_seconds() if expiry else 3600.0
    return _state({"access_token": creds.token, "expires_in": max(lifetime, 1.0)})


# --- generic servers and the installed-app flow (authlib) --------------------------------------


def _authlib(client: OAuthClient, secret: Secret | None, **kw: Any) -> Any:
    from authlib.integrations.requests_client import OAuth2Session

    session = OAuth2Session(
        client.client_id,
        secret.reveal() if secret else None,
        scope=" ".join(_scopes(client)) or None,
        token_endpoint_auth_method="client_secret_post" if secret else "none",
        **kw,
    )
    return _session(client, session)


def _authlib_call(client: OAuthClient, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    import requests
    from authlib.integrations.base_client import OAuthError as AuthlibError

    try:
        return dict(fn(*args, **kw))
    except AuthlibError as exc:
        raise _error_line(client, exc.error, exc.description) from None
    except (requests.RequestException, OSError) as exc:
        raise _unreachable(client, exc) from None


def _generic_client_credentials(client: OAuthClient, secret: Secret | None) -> dict[str, Any]:
    meta = _metadata(client)
    s = _authlib(client, secret)
    token = _authlib_call(
        client, s.fetch_token, meta["token_endpoint"], grant_type="client_credentials"
    )
    return _state(token)


def _generic_refresh(
    client: OAuthClient, state: dict[str, Any], secret: Secret | None
) -> dict[str, Any]:
    url = state.get("token_endpoint") or _metadata(client)["token_endpoint"]
    s = _authlib(client, secret)
    token = _authlib_call(client, s.refresh_token, url, refresh_token=state.get("refresh_token"))
    token.setdefault("refresh_token", state.get("refresh_token"))  # not every server rotates it
    return _state(token, token_endpoint=url)


def _generic_device(
    client: OAuthClient, secret: Secret | None, say: Callable[[str], None]
) -> dict[str, Any]:
    import requests
    from authlib.integrations.base_client import OAuthError as AuthlibError

    meta = _metadata(client)
    if not meta.get("device_authorization_endpoint"):
        raise OAuthError(f"{client.endpoint} offers no device authorization endpoint (RFC 8628)")
    s = _authlib(client, secret)
    data = {"client_id": client.client_id, "scope": " ".join(_scopes(client))}
    try:
        flow = s.post(meta["device_authorization_endpoint"], data=data, withhold_token=True).json()
    except (requests.RequestException, OSError, ValueError) as exc:
        raise _unreachable(client, exc) from None
    if "user_code" not in flow:
        raise _error_line(client, flow.get("error"), flow.get("error_description"))
    say(_device_prompt(client, flow))
    interval = float(flow.get("interval") or 5)
    deadline = time.monotonic() + float(flow.get("expires_in") or 900)
    while time.monotonic() < deadline:
        time.sleep(interval)
        try:
            token = s.fetch_token(
                meta["token_endpoint"],
                grant_type="urn:ietf:params:oauth:grant-type:device_code",
                device_code=flow["device_code"],
            )
        except AuthlibError as exc:
            if exc.error == "authorization_pending":
                continue
            if exc.error == "slow_down":  # RFC 8628 3.5: five seconds more from now on
                interval += 5
                continue
            raise _error_line(client, exc.error, exc.description) from None
        except (requests.RequestException, OSError) as exc:
            raise _unreachable(client, exc) from None
        return _state(dict(token), token_endpoint=meta["token_endpoint"])
    raise _error_line(client, "expired_token", "the code was not entered in time")


def _authorization_code(
    client: OAuthClient,
    secret: Secret | None,
    say: Callable[[str], None],
    open_browser: bool,
    wait: float,
) -> dict[str, Any]:
    """The installed-app flow: browser sign-in, redirect to a loopback port, PKCE (RFC 7636)."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from authlib.common.security import generate_token

    class _Redirect(BaseHTTPRequestHandler):
        """The loopback redirect's one request: keep its query, tell the browser it is done."""

        def do_GET(self) -> None:  # http.server's name
            query = urllib.parse.urlsplit(self.path).query
            params = urllib.parse.parse_qs(query)
            if "code" not in params and "error" not in params:  # /favicon.ico, a probe: not it
                self.send_error(404)
                return
            self.server.query = query  # type: ignore[attr-defined]
            body = b"sysmail-ops: authorization received, you can close this window.\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the request line carries the authorization code: never logged

    meta = _metadata(client)
    server = HTTPServer(("127.0.0.1", 0), _Redirect)
    server.query = None  # type: ignore[attr-defined]
    server.timeout = 1.0
    redirect = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        s = _authlib(client, secret, redirect_uri=redirect, code_challenge_method="S256")
        verifier = generate_token(64)
        google = client.provider == "google"  # a refresh token only with these two
        extra = {"access_type": "offline", "prompt": "consent"} if google else {}
        url, state = s.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier, login_hint=client.login, **extra
        )
        say(f"To authorize {client.account} ({client.login}), sign in at: {url}")
        if open_browser:
            import webbrowser

            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
        deadline = time.monotonic() + wait
        while server.query is None and time.monotonic() < deadline:  # type: ignore[attr-defined]
            server.handle_request()
        query = server.query  # type: ignore[attr-defined]
    finally:
        server.server_close()
    if query is None:
        raise _error_line(client, "expired_token", "no sign-in came back in time")
    params = dict(urllib.parse.parse_qsl(query))
    if "error" in params:
        raise _error_line(client, params["error"], params.get("error_description"))
    if params.get("state") != state:
        raise OAuthError(f"the sign-in for {client.account!r} came back with a wrong state")
    token = _authlib_call(
        client, s.fetch_token, meta["token_endpoint"], code=params.get("code", ""),
        code_verifier=verifier, grant_type="authorization_code", state=state,
    )  # fmt: skip
    if not token.get("refresh_token"):
        raise OAuthError(
            f"the provider gave {client.account!r} no refresh token: it could not send "
            "unattended; check the client's offline access"
        )
    return _state(token, token_endpoint=meta["token_endpoint"])


# --- authorize ------------------------------------------------------------------------------


def authorize(
    ws: Workspace,
    client: OAuthClient,
    *,
    say: Callable[[str], None] = print,
    open_browser: bool = False,
    wait: float = LOOPBACK_WAIT,
) -> str:
    """Run the account's flow now and store its tokens; returns a one-line verdict.

    ``say`` shows what the person must do (the device code and URL, or the
    sign-in URL). The app-only flows need no one: a first token proves the settings.
    """
    _, secret, key = _read(ws, client.account)
    with _closing_sessions():
        state, who = _authorize(client, say, open_browser, wait, secret, key)
    _save(ws, client.account, state, authorized_as=who or client.login)
    verdict = f"{client.account}: authorized ({client.provider}, {client.flow.replace('_', ' ')})"
    if who and who.lower() != client.login.lower():
        verdict += (
            f"; signed in as {who}, but the system email logs in as {client.login}: "
            "the mailbox must be the one signed in (or grant it send-as)"
        )
    return verdict


def _authorize(
    client: OAuthClient,
    say: Callable[[str], None],
    open_browser: bool,
    wait: float,
    secret: Secret | None,
    key: Secret | None,
) -> tuple[dict[str, Any], str]:
    """The flow itself: (token state, who signed in)."""
    who = ""
    if client.flow == "device":
        if client.provider == "microsoft":
            state, who = _ms_device(client, say)
        else:
            state = _generic_device(client, secret, say)
    elif client.flow == "authorization_code":
        state = _authorization_code(client, secret, say, open_browser, wait)
    else:
        state = _refresh(client, {}, secret, key)
        who = client.login
    return state, who
