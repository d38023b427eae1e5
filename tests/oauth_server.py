"""A local OAuth2 authorization server for the suite, standing in for Microsoft and Google.

Standard library only (``http.server`` over TLS from the test CA), on a free loopback
port. It follows RFC 6749 (client credentials, refresh token, authorization code with
PKCE, RFC 7636), RFC 8628 (device authorization), RFC 7523 (JWT bearer: Google's
service accounts, the JWT checked against the registered public key), RFC 7009
(revocation) and RFC 7662 (introspection). Token responses carry what msal reads
(``client_info``, an ``id_token``), so msal's own code runs against it.

Every path works under any prefix (msal asks for ``/{tenant}/v2.0/.well-known/...``):

    GET  .../.well-known/openid-configuration | oauth-authorization-server
    POST /oauth2/devicecode     device authorization (RFC 8628 3.1)
    GET  /oauth2/authorize      the browser step: approves as ``server.sign_in_as`` and
                                redirects to the client's redirect_uri with a code
    POST /oauth2/token          every grant above
    POST /oauth2/revoke         RFC 7009
    POST /oauth2/introspect     RFC 7662 (what Dovecot's oauth2 passdb asks)

The test plays the user: ``approve(user_code, user)`` or ``deny(user_code)``.
``access_lifetime`` sets how long an access token lives (seconds);
``expire_access_tokens()`` ends every live one at once (the provider's clock ran
out), ``revoke_refresh_tokens()`` revokes every grant (the admin revoked the app).
Tokens are random and never printed; ``issued_access_tokens`` lists them, so a test
can look for them where they must not be.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass
class Client:
    client_id: str
    secret: str | None = None  # None: a public client (device flow, installed app)
    public_key_pem: bytes | None = None  # a service account's key (JWT bearer)
    delegation: bool = True  # a service account may impersonate (domain-wide delegation)


@dataclass
class Grant:
    """What a refresh token stands for."""

    client_id: str
    user: str
    scope: str
    revoked: bool = False


@dataclass
class AccessToken:
    client_id: str
    user: str
    scope: str
    expires_at: float
    revoked: bool = False


@dataclass
class DeviceRequest:
    client_id: str
    scope: str
    user_code: str
    expires_at: float
    status: str = "pending"  # pending | approved | denied
    user: str = ""


@dataclass
class CodeRequest:
    client_id: str
    scope: str
    redirect_uri: str
    challenge: str
    user: str
    used: bool = False


@dataclass
class Records:
    grants_used: list[str] = field(default_factory=list)  # grant_type of each token answer
    refused: list[str] = field(default_factory=list)  # error of each refusal
    revoked: list[str] = field(default_factory=list)  # token_type_hint of each revocation


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class OAuthTestServer:
    """A running authorization server on a free loopback port (HTTPS)."""

    def __init__(self, tls_context: ssl.SSLContext, host: str = "127.0.0.1"):
        self.host, self._tls = host, tls_context
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self.port = 0
        self.reset()

    # -- set-up ------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.clients: dict[str, Client] = {}
            self.access_lifetime = 3600.0
            self.device_interval = 1
            self.sign_in_as: str | None = None  # who approves at /authorize (None: denies)
            self._grants: dict[str, Grant] = {}
            self._tokens: dict[str, AccessToken] = {}
            self._devices: dict[str, DeviceRequest] = {}
            self._codes: dict[str, CodeRequest] = {}
            self.records = Records()
            self.revocation_down = False  # an injected fault: /oauth2/revoke answers 503

    def register(self, client: Client) -> Client:
        with self._lock:
            self.clients[client.client_id] = client
        return client

    @property
    def base(self) -> str:
        return f"https://{self.host}:{self.port}"

    def start(self) -> None:
        owner = self

        class Handler(_Handler):
            server_owner = owner

        httpd = ThreadingHTTPServer((self.host, 0), Handler)
        httpd.daemon_threads = True
        httpd.socket = self._tls.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self.port = httpd.server_address[1]
        threading.Thread(target=httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    # -- the test plays the user and the admin ---------------------------------------------

    def pending_user_codes(self) -> list[str]:
        with self._lock:
            return [d.user_code for d in self._devices.values() if d.status == "pending"]

    def approve(self, user_code: str, user: str) -> None:
        self._decide(user_code, "approved", user)

    def deny(self, user_code: str) -> None:
        self._decide(user_code, "denied", "")

    def _decide(self, user_code: str, status: str, user: str) -> None:
        with self._lock:
            for d in self._devices.values():
                if d.user_code == user_code:
                    d.status, d.user = status, user
                    return
        raise KeyError(user_code)

    def expire_access_tokens(self) -> None:
        with self._lock:
            for t in self._tokens.values():
                t.expires_at = min(t.expires_at, time.time() - 1)

    def revoke_refresh_tokens(self) -> None:
        with self._lock:
            for g in self._grants.values():
                g.revoked = True

    def valid_user(self, token: str) -> str | None:
        """Who ``token`` speaks for, while it is valid (what an XOAUTH2 server checks)."""
        with self._lock:
            t = self._tokens.get(token)
            if t is None or t.revoked or t.expires_at <= time.time():
                return None
            return t.user

    def mint(self, user: str, client_id: str = "test") -> str:
        """An access token for ``user``, as if a grant had just given it."""
        _, body = self._issue("test", client_id, user, "")
        return str(body["access_token"])

    @property
    def issued_access_tokens(self) -> list[str]:
        with self._lock:
            return list(self._tokens)

    @property
    def issued_refresh_tokens(self) -> list[str]:
        with self._lock:
            return list(self._grants)

    # -- the endpoints ---------------------------------------------------------------------

    def metadata(self, prefix: str) -> dict[str, Any]:
        base = self.base
        return {
            "issuer": base + prefix,
            "authorization_endpoint": base + "/oauth2/authorize",
            "token_endpoint": base + "/oauth2/token",
            "device_authorization_endpoint": base + "/oauth2/devicecode",
            "revocation_endpoint": base + "/oauth2/revoke",
            "introspection_endpoint": base + "/oauth2/introspect",
            "grant_types_supported": [
                "authorization_code",
                "refresh_token",
                "client_credentials",
                DEVICE_GRANT,
                JWT_BEARER,
            ],
            "code_challenge_methods_supported": ["S256"],
            "response_types_supported": ["code"],
        }

    def device_authorization(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        client = self.clients.get(form.get("client_id", ""))
        if client is None:
            return 400, {"error": "invalid_client", "error_description": "unknown client"}
        code = secrets.token_urlsafe(24)
        user_code = "".join(secrets.choice("BCDFGHJKLMNPQRSTVWXZ") for _ in range(8))
        with self._lock:
            self._devices[code] = DeviceRequest(
                client.client_id, form.get("scope", ""), user_code, time.time() + 600
            )
        return 200, {
            "device_code": code,
            "user_code": user_code,
            "verification_uri": self.base + "/device",
            "expires_in": 600,
            "interval": self.device_interval,
            "message": f"open {self.base}/device and enter {user_code}",
        }

    def authorize(self, query: dict[str, str]) -> tuple[int, str]:
        """The browser step: (status, Location or an error text)."""
        client = self.clients.get(query.get("client_id", ""))
        redirect = query.get("redirect_uri", "")
        if client is None or not redirect.startswith("http://127.0.0.1:"):
            return 400, "unknown client or a redirect that is not a loopback address"
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return 400, "PKCE (S256) is required"
        state = query.get("state", "")
        if self.sign_in_as is None:
            params = {"error": "access_denied", "state": state}
        else:
            code = secrets.token_urlsafe(24)
            with self._lock:
                self._codes[code] = CodeRequest(
                    client.client_id,
                    query.get("scope", ""),
                    redirect,
                    query["code_challenge"],
                    self.sign_in_as,
                )
            params = {"code": code, "state": state}
        return 302, redirect + "?" + urllib.parse.urlencode(params)

    def token(self, form: dict[str, str], basic: tuple[str, str] | None) -> tuple[int, Any]:
        grant = form.get("grant_type", "")
        client_id = basic[0] if basic else form.get("client_id", "")
        secret = basic[1] if basic else form.get("client_secret")
        client = self.clients.get(client_id)
        if grant == JWT_BEARER:
            return self._jwt_bearer(form.get("assertion", ""))
        if client is None:
            return self._refuse("invalid_client", "unknown client", 401)
        if client.secret is not None and secret != client.secret:
            return self._refuse("invalid_client", "AADSTS7000215: Invalid client secret", 401)
        if grant == "client_credentials":
            if client.secret is None:
                return self._refuse("unauthorized_client", "a public client has no app access")
            return self._issue(grant, client.client_id, "app:" + client_id, form.get("scope", ""))
        if grant == "refresh_token":
            with self._lock:
                g = self._grants.get(form.get("refresh_token", ""))
            if g is None or g.revoked or g.client_id != client_id:
                return self._refuse(
                    "invalid_grant",
                    "AADSTS70000: The refresh token was revoked or has expired. "
                    "The user must sign in again.",
                )
            return self._issue(grant, client_id, g.user, g.scope, refresh=True)
        if grant == DEVICE_GRANT:
            code = form.get("device_code", "")
            with self._lock:
                d = self._devices.get(code)
            if d is None or d.client_id != client_id:
                return self._refuse("invalid_grant", "unknown device code")
            if d.expires_at < time.time():
                return self._refuse("expired_token", "the device code expired")
            if d.status == "pending":
                return self._refuse("authorization_pending", "waiting for the user")
            if d.status == "denied":
                return self._refuse("access_denied", "the user declined")
            with self._lock:
                del self._devices[code]
            return self._issue(grant, client_id, d.user, d.scope, refresh=True, oidc=True)
        if grant == "authorization_code":
            with self._lock:
                c = self._codes.get(form.get("code", ""))
                fresh = c is not None and not c.used
                if c is not None:
                    c.used = True
            if not fresh or c is None or c.client_id != client_id:
                return self._refuse("invalid_grant", "unknown or used authorization code")
            if form.get("redirect_uri") != c.redirect_uri:
                return self._refuse("invalid_grant", "redirect_uri differs")
            verifier = form.get("code_verifier", "")
            if _b64url(hashlib.sha256(verifier.encode()).digest()) != c.challenge:
                return self._refuse("invalid_grant", "PKCE verification failed")
            return self._issue(grant, client_id, c.user, c.scope, refresh=True)
        return self._refuse("unsupported_grant_type", grant)

    def _jwt_bearer(self, assertion: str) -> tuple[int, Any]:
        """RFC 7523: a JWT signed by a registered service account's key, ``sub`` = the user."""
        import jwt

        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
            client = self.clients.get(unverified.get("iss", ""))
            if client is None or client.public_key_pem is None:
                return self._refuse("invalid_client", "unknown service account", 401)
            claims = jwt.decode(
                assertion,
                client.public_key_pem,
                algorithms=["RS256"],
                # google-auth signs for Google's endpoint, whatever the key's token_uri says
                audience=[self.base + "/oauth2/token", "https://oauth2.googleapis.com/token"],
                leeway=60,
            )
        except jwt.PyJWTError as exc:
            return self._refuse("invalid_grant", f"bad assertion: {type(exc).__name__}")
        user = claims.get("sub")
        if user and not client.delegation:
            return self._refuse(
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client "
                "not authorized for any of the scopes requested.",
            )
        return self._issue(
            JWT_BEARER, client.client_id, user or client.client_id, str(claims.get("scope", ""))
        )

    def _issue(
        self,
        grant: str,
        client_id: str,
        user: str,
        scope: str,
        *,
        refresh: bool = False,
        oidc: bool = False,
    ) -> tuple[int, Any]:
        token = secrets.token_urlsafe(32)
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": token,
            "expires_in": self.access_lifetime,
            "scope": scope,
        }
        with self._lock:
            self._tokens[token] = AccessToken(
                client_id, user, scope, time.time() + self.access_lifetime
            )
            if refresh:
                rt = secrets.token_urlsafe(32)
                self._grants[rt] = Grant(client_id, user, scope)
                body["refresh_token"] = rt
            self.records.grants_used.append(grant)
        if oidc:  # what msal makes its account from (it does not check the signature)
            now = int(time.time())
            claims = {
                "iss": self.base,
                "sub": user,
                "aud": client_id,
                "iat": now,
                "exp": now + 3600,
                "preferred_username": user,
                "tid": "test-tenant",
                "oid": hashlib.sha256(user.encode()).hexdigest()[:32],
            }
            head = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
            body["id_token"] = f"{head}.{_b64url(json.dumps(claims).encode())}."
            info = {"uid": claims["oid"], "utid": "test-tenant"}
            body["client_info"] = _b64url(json.dumps(info).encode())
        return 200, body

    def _refuse(self, error: str, description: str, status: int = 400) -> tuple[int, Any]:
        with self._lock:
            self.records.refused.append(error)
        return status, {"error": error, "error_description": description}

    def revoke(self, form: dict[str, str]) -> tuple[int, Any]:
        """RFC 7009: only the client a token was issued to may revoke it (2.1); an
        unknown token is answered 200 all the same (2.2)."""
        if self.revocation_down:
            return 503, {"error": "temporarily_unavailable", "error_description": "try later"}
        token = form.get("token", "")
        with self._lock:
            held = self._grants.get(token) or self._tokens.get(token)
            if held is not None and held.client_id != form.get("client_id"):
                why = "the token was issued to another client"
                return 400, {"error": "unauthorized_client", "error_description": why}
            if held is not None:
                held.revoked = True
            self.records.revoked.append(form.get("token_type_hint", ""))
        return 200, {}

    def is_revoked(self, token: str) -> bool:
        with self._lock:
            held = self._grants.get(token) or self._tokens.get(token)
            return held is not None and held.revoked

    def introspect(self, form: dict[str, str]) -> tuple[int, Any]:
        token = form.get("token", "")
        user = self.valid_user(token)
        if user is None:
            return 200, {"active": False}
        with self._lock:
            t = self._tokens[token]
        return 200, {
            "active": True,
            "sub": user,
            "username": user,
            "email": user,
            "scope": t.scope,
            "client_id": t.client_id,
            "exp": int(t.expires_at),
        }


class _Handler(BaseHTTPRequestHandler):
    server_owner: OAuthTestServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines carry codes: never logged

    def _send(self, status: int, body: Any, location: str | None = None) -> None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        owner = self.server_owner
        url = urllib.parse.urlsplit(self.path)
        for well_known in (
            "/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server",
        ):
            if url.path.endswith(well_known):
                prefix = url.path[: -len(well_known)]
                self._send(200, owner.metadata(prefix))
                return
        if url.path == "/oauth2/authorize":
            status, where = owner.authorize(dict(urllib.parse.parse_qsl(url.query)))
            if status == 302:
                self._send(302, b"", location=where)
            else:
                self._send(status, {"error": "invalid_request", "error_description": where})
            return
        self._send(404, {"error": "not_found"})

    def do_POST(self) -> None:
        owner = self.server_owner
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        basic = None
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            basic = (urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password))
        path = urllib.parse.urlsplit(self.path).path
        routes = {
            "/oauth2/token": lambda: owner.token(form, basic),
            "/oauth2/devicecode": lambda: owner.device_authorization(form),
            "/oauth2/revoke": lambda: owner.revoke(form),
            "/oauth2/introspect": lambda: owner.introspect(form),
        }
        if path not in routes:
            self._send(404, {"error": "not_found"})
            return
        status, body = routes[path]()
        self._send(status, body)
