"""System emails: the sender accounts, at most ten, with their archiving flags.

An ``Account`` never holds a password: ``password_for`` decrypts (or resolves
``env:NAME``) at the moment of use, so a repr, a listing or a JSON dump cannot
leak one.
"""

from __future__ import annotations

import ssl
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sysmail_ops.config import oauth
from sysmail_ops.config.secrets import check_reference, resolve_reference
from sysmail_ops.errors import InUseError, LimitError, NotFoundError, ValidationError
from sysmail_ops.mail.addresses import check_address, is_loopback
from sysmail_ops.mail.credentials import MASK, Secret
from sysmail_ops.mail.dkim import check_selector
from sysmail_ops.mail.headers import check_sender
from sysmail_ops.mail.smtp import SMTPServer
from sysmail_ops.store import access, audit
from sysmail_ops.store.database import utcnow
from sysmail_ops.store.named import check_name, insert_named, update_named
from sysmail_ops.store.references import users_of

if TYPE_CHECKING:
    from sysmail_ops.config.workspace import Workspace

MAX_ACCOUNTS = 10
DEFAULT_MAX_MESSAGE_BYTES = 20 * 1024 * 1024  # without a preset's or the admin's own limit
MAX_SIGNATURE = 64 * 1024  # characters per signature part
KINDS = ("customer_service", "marketing", "workflow_notification", "other")
KIND_LABELS = {
    "customer_service": "Customer service",
    "marketing": "Marketing",
    "workflow_notification": "Workflow notification",
    "other": "Other",
}
SECURITIES = ("starttls", "ssl", "none")
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
# The admin guide: both archiving switches on for customer service and
# marketing, off for workflow notification (and for anything else).
ARCHIVING_BY_KIND = {
    "customer_service": True,
    "marketing": True,
    "workflow_notification": False,
    "other": False,
}


@dataclass(frozen=True)
class Account:
    """One bound system email. Holds no password, only how one is kept."""

    name: str
    kind: str
    from_address: str
    login: str
    smtp_host: str
    smtp_port: int
    smtp_security: str
    sent_archiving: bool
    received_archiving: bool
    created_at: datetime
    updated_at: datetime
    description: str | None = None
    display_name: str | None = None
    auth_source: str = "none"  # "stored" (encrypted), "env" (reference) or "none"
    password_env: str | None = None
    ca_bundle: str | None = None
    allow_insecure_auth: bool = False
    imap_host: str | None = None
    imap_port: int | None = None
    imap_security: str | None = None
    rate_limit_per_minute: int | None = None
    unsubscribe_mailto: str | None = None
    unsubscribe_url: str | None = None
    # Largest message sent (bytes); None: DEFAULT_MAX_MESSAGE_BYTES. The server's SIZE also holds.
    max_message_bytes: int | None = None
    # Signature (``{{ sender.signature }}``), appended where a template does not place it.
    signature_html: str | None = None
    signature_text: str | None = None
    signature_auto: bool = True
    # DKIM: the selectors in use (the private keys are stored encrypted, never in an Account).
    dkim_domain: str | None = None
    dkim_rsa_selector: str | None = None
    dkim_ed25519_selector: str | None = None
    # How it logs in: password (or none given: a relay without login), none, oauth2 (XOAUTH2).
    auth: str = "password"
    oauth_provider: str | None = None  # microsoft | google | generic
    oauth_flow: str | None = None  # device | client_credentials | service_account | ...
    oauth_client_id: str | None = None
    oauth_tenant: str | None = None
    oauth_endpoint: str | None = None  # authority host or issuer URL; None: the provider's
    oauth_scopes: str | None = None  # space-separated; None: the provider's defaults

    @property
    def oauth(self) -> oauth.OAuthClient:
        """This account's OAuth2 settings (plain values; the tokens stay in the store)."""
        return oauth.OAuthClient(
            account=self.name,
            login=self.login,
            provider=self.oauth_provider or "generic",
            flow=self.oauth_flow or "device",
            client_id=self.oauth_client_id,
            tenant=self.oauth_tenant,
            endpoint=self.oauth_endpoint,
            scopes=tuple((self.oauth_scopes or "").split()),
            ca_bundle=self.ca_bundle,
        )

    @property
    def password_display(self) -> str:
        if self.auth == "oauth2":
            return f"(OAuth2: {self.oauth_provider}, {self.oauth_flow})"
        if self.auth_source == "stored":
            return MASK
        if self.auth_source == "env":
            return f"env:{self.password_env}"
        return ""

    @property
    def needs_login(self) -> bool:
        return self.auth == "oauth2" or (self.auth == "password" and self.auth_source != "none")

    @property
    def server(self) -> SMTPServer:
        """How ``mail.smtp`` reaches this account's server (plain values, no password)."""
        return SMTPServer(
            name=self.name,
            host=self.smtp_host,
            port=self.smtp_port,
            security=self.smtp_security,
            login=self.login,
            needs_login=self.needs_login,
            ca_bundle=self.ca_bundle,
            allow_insecure_auth=self.allow_insecure_auth,
            auth="xoauth2" if self.auth == "oauth2" else "password",
        )

    def hints(self) -> list[str]:
        """Warning-level remarks on settings that are allowed but probably wrong."""
        out = []
        if self.smtp_security == "ssl" and self.smtp_port == 587:
            out.append("port 587 normally speaks STARTTLS, not implicit TLS: --security starttls?")
        if self.smtp_security == "starttls" and self.smtp_port == 465:
            out.append("port 465 normally speaks implicit TLS, not STARTTLS: --security ssl?")
        if self.smtp_security == "none" and not is_loopback(self.smtp_host):
            if self.needs_login and not self.allow_insecure_auth:
                out.append(
                    "AUTH will be refused: the connection to this non-local host is "
                    "unencrypted (use starttls/ssl, or --allow-insecure-auth)"
                )
            else:
                out.append("mail to this non-local host travels unencrypted")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view: timestamps as ISO strings, the password masked."""
        d = asdict(self)
        d["password"] = self.password_display
        d["created_at"] = self.created_at.isoformat() + "Z"
        d["updated_at"] = self.updated_at.isoformat() + "Z"
        return d


_COLUMNS = [f.name for f in fields(Account) if f.name not in ("auth_source",)]


def derive_imap_host(smtp_host: str) -> str:
    """imap.example.com for smtp.example.com; the same host where nothing is obvious."""
    for prefix in ("smtp.", "smtp-", "mail."):
        if smtp_host.lower().startswith(prefix):
            return ("imap" + smtp_host[4:]) if prefix != "mail." else smtp_host
    return smtp_host


def _check_text(value: str | None, what: str, max_len: int = 200) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if any(c in value for c in "\r\n\0"):
        raise ValidationError(f"{what} must not contain line breaks")
    if len(value) > max_len:
        raise ValidationError(f"{what} is longer than {max_len} characters")
    return value or None


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ValidationError(f"unknown {what} {value!r}: choose one of {', '.join(choices)}")
    return value


def _check_port(value: Any, what: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{what} must be a number from 1 to 65535, got {value!r}") from None
    if not 1 <= port <= 65535:
        raise ValidationError(f"{what} must be from 1 to 65535, got {port}")
    return port


def _check_host(value: str, what: str) -> str:
    value = (value or "").strip()
    if not value or any(c.isspace() for c in value) or "/" in value:
        raise ValidationError(f"{what} {value!r} is not a host name or address")
    return value


def _check_ca_bundle(path: str | None) -> str | None:
    if not path:
        return None
    p = Path(path).expanduser().resolve()
    try:
        ssl.create_default_context(cafile=str(p))
    except (OSError, ssl.SSLError) as exc:
        raise ValidationError(f"CA bundle {p} cannot be loaded: {exc}") from None
    return str(p)


def _validate(v: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise account fields in place; raises ValidationError."""
    name = v["name"] = (v.get("name") or "").strip()
    if not name:
        raise ValidationError("a system email needs a name")
    check_name(name)
    v["kind"] = _check_choice(v["kind"], KINDS, "kind")
    v["smtp_security"] = _check_choice(v["smtp_security"], SECURITIES, "security")
    v["from_address"] = check_address(v.get("from_address") or "", "email account")
    v["login"] = _check_text(v.get("login"), "login") or v["from_address"]
    v["description"] = _check_text(v.get("description"), "description", 500)
    v["display_name"] = _check_text(v.get("display_name"), "display name")
    v["smtp_host"] = _check_host(v.get("smtp_host") or "", "SMTP server")
    port = v.get("smtp_port")
    v["smtp_port"] = _check_port(
        DEFAULT_PORTS[v["smtp_security"]] if port is None else port, "SMTP port"
    )
    v["ca_bundle"] = _check_ca_bundle(v.get("ca_bundle"))
    imap_host = v.get("imap_host") or derive_imap_host(v["smtp_host"])
    v["imap_host"] = _check_host(imap_host, "IMAP host")
    v["imap_security"] = _check_choice(v.get("imap_security") or "ssl", SECURITIES, "IMAP security")
    default_imap_port = 993 if v["imap_security"] == "ssl" else 143
    imap_port = v.get("imap_port")
    if imap_port == 0 and not isinstance(imap_port, bool):  # 0: back to the default
        imap_port = None
    v["imap_port"] = _check_port(default_imap_port if imap_port is None else imap_port, "IMAP port")
    for flag in ("sent_archiving", "received_archiving"):
        if v.get(flag) is None:
            v[flag] = ARCHIVING_BY_KIND[v["kind"]]
    v["allow_insecure_auth"] = bool(v.get("allow_insecure_auth"))
    rate = v.get("rate_limit_per_minute")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int) or rate < 0):
        raise ValidationError(
            f"rate limit must be a whole number of messages per minute (0: no limit), got {rate!r}"
        )
    v["rate_limit_per_minute"] = rate or None
    if v.get("unsubscribe_mailto"):
        v["unsubscribe_mailto"] = check_address(v["unsubscribe_mailto"], "unsubscribe address")
    url = _check_text(v.get("unsubscribe_url"), "unsubscribe URL", 2000)
    if url and not url.startswith("https://"):
        raise ValidationError(f"unsubscribe URL must start with https://, got {url!r}")
    v["unsubscribe_url"] = url
    _check_size_and_signing(v)
    oauth.check_settings(v)
    # What goes into a header is checked by the rules that compose applies at every send.
    check_sender(
        v["from_address"],
        v["display_name"],
        unsubscribe_url=url,
        unsubscribe_mailto=v.get("unsubscribe_mailto") or None,
    )
    return v


def _check_size_and_signing(v: dict[str, Any]) -> None:
    """Message size limit, signature and DKIM selectors (issue 14's fields)."""
    size = v.get("max_message_bytes")
    if size == 0 and not isinstance(size, bool):  # 0: back to the default
        v["max_message_bytes"] = size = None
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, int) or not 1024 <= size <= 2**31
    ):
        raise ValidationError(
            f"maximum message size must be a whole number of bytes from 1 KiB to 2 GiB, "
            f"got {size!r}"
        )
    for part in ("signature_html", "signature_text"):
        text = v.get(part)
        if text is None:
            continue
        if not isinstance(text, str):
            raise ValidationError(f"the {part.replace('_', ' ')} must be text")
        if len(text) > MAX_SIGNATURE or "\0" in text:
            raise ValidationError(
                f"the {part.replace('_', ' ')} must be text without NUL, at most "
                f"{MAX_SIGNATURE:,} characters"
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(f"the {part.replace('_', ' ')} is not valid Unicode") from None
        v[part] = text if text.strip() else None
    v["signature_auto"] = True if v.get("signature_auto") is None else bool(v["signature_auto"])
    selectors = [v.get("dkim_rsa_selector"), v.get("dkim_ed25519_selector")]
    for key in ("dkim_rsa_selector", "dkim_ed25519_selector"):
        if v.get(key):
            v[key] = check_selector(v[key])
    if any(selectors):
        domain = v.get("dkim_domain") or v["from_address"].rpartition("@")[2]
        v["dkim_domain"] = _check_host(domain, "DKIM domain").lower().rstrip(".")
    else:
        v["dkim_domain"] = None


def _row_to_account(row: dict[str, Any]) -> Account:
    kind = "stored" if row.pop("password_enc") else ("env" if row.get("password_env") else "none")
    return Account(auth_source=kind, **row)


def _fetch(con: Any, name: str | None = None) -> list[Account]:
    cols = ", ".join([*_COLUMNS, "password_enc"])
    sql = f"SELECT {cols} FROM accounts"  # noqa: S608 - column names are ours
    if name:
        rel = con.execute(sql + " WHERE name = ?", [name])
    else:
        rel = con.execute(sql + " ORDER BY name")
    names = [d[0] for d in rel.description]
    return [_row_to_account(dict(zip(names, r, strict=True))) for r in rel.fetchall()]


def list_accounts(ws: Workspace) -> list[Account]:
    with ws.store.connect() as con:
        return _fetch(con)


def get_account(ws: Workspace, name: str, *, con: Any = None) -> Account:
    """One system email; ``con`` reuses an open store connection (else one is opened)."""
    if con is None:
        with ws.store.connect() as con:
            return get_account(ws, name, con=con)
    found = _fetch(con, name)
    if not found:
        raise NotFoundError(f"no system email named {name!r}")
    return found[0]


def _password_columns(
    ws: Workspace, password: Secret | str | None, password_ref: str | None
) -> dict[str, str | None]:
    if password is not None and password_ref:
        raise ValidationError("give either a password or a password reference, not both")
    if password_ref:
        return {"password_enc": None, "password_env": check_reference(password_ref)}
    if isinstance(password, str):
        password = Secret(password)
    if password:
        if any(c in password.reveal() for c in "\r\n\0"):
            raise ValidationError("the password must not contain line breaks")
        return {"password_enc": ws.secrets.encrypt(password), "password_env": None}
    return {"password_enc": None, "password_env": None}


def add_account(
    ws: Workspace,
    name: str,
    *,
    from_address: str,
    smtp_host: str,
    kind: str = "other",
    password: Secret | str | None = None,
    password_ref: str | None = None,
    smtp_security: str = "starttls",
    smtp_port: int | None = None,
    **optional: Any,
) -> Account:
    """Bind a new system email. Nothing is written when any check fails.

    ``optional`` takes the other ``Account`` fields (description, display_name,
    login, ca_bundle, allow_insecure_auth, imap_*, sent_archiving,
    received_archiving); archiving defaults follow the kind. For ``auth="oauth2"``,
    ``oauth_client_secret`` and ``oauth_key`` (a Google service-account key, JSON)
    are stored encrypted.
    """
    client_secret, key = optional.pop("oauth_client_secret", None), optional.pop("oauth_key", None)
    unknown = set(optional) - set(_COLUMNS)
    if unknown:
        raise ValidationError(f"unknown account field(s): {', '.join(sorted(unknown))}")
    values = _validate(
        dict(
            optional,
            name=name,
            from_address=from_address,
            smtp_host=smtp_host,
            kind=kind,
            smtp_security=smtp_security,
            smtp_port=smtp_port,
        )
    )
    password_cols = _password_columns(ws, password, password_ref)
    values.update(password_cols)
    has_password = bool(password_cols["password_enc"] or password_cols["password_env"])
    values["auth"] = _resolve_auth(optional.get("auth"), "none", has_password)
    values.update(_auth_columns(ws, values, _secret(client_secret), _secret(key)))
    values["created_at"] = values["updated_at"] = utcnow()
    with ws.store.transaction() as con:
        row = con.execute("SELECT count(*), count(*) FILTER (name = ?) FROM accounts", [name])
        total, same = row.fetchone() or (0, 0)
        if total >= MAX_ACCOUNTS and not same:
            raise LimitError(
                f"at most {MAX_ACCOUNTS} system emails can be bound and {total} of "
                f"{MAX_ACCOUNTS} are in use: remove one before adding {name!r}"
            )
        cols = [c for c in [*_COLUMNS, "password_enc", *_OAUTH_SECRETS] if c in values]
        insert_named(con, "accounts", cols, [values[c] for c in cols], "system email")
        audit.record(con, "account", name, "add", None, audit.row(con, "accounts", name=name))
    return get_account(ws, name)


def edit_account(
    ws: Workspace,
    name: str,
    /,
    *,
    password: Secret | str | None = None,
    password_ref: str | None = None,
    clear_password: bool = False,
    **changes: Any,
) -> Account:
    """Change fields of a system email; ``None`` values leave a field as it is."""
    client_secret, key = changes.pop("oauth_client_secret", None), changes.pop("oauth_key", None)
    changes = {k: v for k, v in changes.items() if v is not None}
    unknown = set(changes) - (set(_COLUMNS) - {"name", "created_at", "updated_at", "password_env"})
    if unknown:
        raise ValidationError(f"cannot edit field(s): {', '.join(sorted(unknown))}")
    current = get_account(ws, name)
    values = _validate({**asdict(current), **changes})
    if clear_password and (password is not None or password_ref):
        raise ValidationError("--clear-password cannot be combined with a new password")
    cols = [c for c in _COLUMNS if c not in ("name", "created_at", "password_env")]
    sets = {c: values[c] for c in cols}
    if clear_password or password is not None or password_ref:
        sets.update(_password_columns(ws, None if clear_password else password, password_ref))
    if "password_enc" in sets:
        has_password = bool(sets["password_enc"] or sets["password_env"])
    else:
        has_password = current.auth_source != "none"
    sets["auth"] = _resolve_auth(changes.get("auth"), current.auth, has_password)
    sets.update(_auth_columns(ws, sets, _secret(client_secret), _secret(key)))
    if any(getattr(current, c) != sets[c] for c in _OAUTH_SETTINGS):
        sets.update(oauth_token_enc=None, oauth_authorized_at=None, oauth_authorized_as=None)
    sets["updated_at"] = utcnow()
    with ws.store.transaction() as con:
        before = audit.row(con, "accounts", name=name)
        update_named(con, "accounts", ["name", *sets], [name, *sets.values()])
        audit.record(con, "account", name, "edit", before, audit.row(con, "accounts", name=name))
    return get_account(ws, name)


def set_archiving(
    ws: Workspace, name: str, *, sent: bool | None = None, received: bool | None = None
) -> Account:
    """Switch "Sent Email Archiving" / "Received Email Archiving" for one system email."""
    return edit_account(ws, name, sent_archiving=sent, received_archiving=received)


def remove_account(ws: Workspace, name: str) -> None:
    """Unbind a system email, unless a subscription, rule or campaign still sends through it."""
    get_account(ws, name)
    with ws.store.transaction() as con:
        users = users_of(con, "accounts", name)
        if users:
            raise InUseError(f"system email {name!r} is still used by {', '.join(users)}")
        before = audit.row(con, "accounts", name=name)
        con.execute("DELETE FROM account_tests WHERE account = ?", [name])
        con.execute("DELETE FROM accounts WHERE name = ?", [name])
        audit.record(con, "account", name, "remove", before, None)


# Stored encrypted beside an OAuth2 account (never in an ``Account``).
_OAUTH_SECRETS = ("oauth_client_secret_enc", "oauth_key_enc")
# Settings whose change makes the stored tokens useless: they are dropped.
_OAUTH_SETTINGS = (
    "auth",
    "login",
    "oauth_provider",
    "oauth_flow",
    "oauth_client_id",
    "oauth_tenant",
    "oauth_endpoint",
    "oauth_scopes",
)


def _secret(value: Secret | str | None) -> Secret | None:
    return Secret(value) if isinstance(value, str) else value


def _resolve_auth(explicit: str | None, current: str, has_password: bool) -> str:
    """The auth method after an add or edit: a password (or its reference) means
    ``password``, no password means ``none`` (a relay without login), unless
    ``oauth2`` is asked for or kept."""
    if explicit == "password" and not has_password:
        raise ValidationError(
            "auth password needs a password: --password-stdin or --password-env NAME "
            "(or --auth none for a relay without login)"
        )
    if explicit is not None:
        return explicit
    if current == "oauth2":
        return current
    return "password" if has_password else "none"


def _auth_columns(
    ws: Workspace, values: dict[str, Any], client_secret: Secret | None, key: Secret | None
) -> dict[str, Any]:
    """The stored secrets that go with the auth method, encrypted: ``none`` drops a
    password; a client secret or service-account key is stored as given."""
    out: dict[str, Any] = {}
    if values.get("auth") == "none":
        out.update(password_enc=None, password_env=None)
    if client_secret is not None:
        if any(c in client_secret.reveal() for c in "\r\n\0"):
            raise ValidationError("the client secret must not contain line breaks")
        out["oauth_client_secret_enc"] = ws.secrets.encrypt(client_secret)
    if key is not None:
        out["oauth_key_enc"] = ws.secrets.encrypt(oauth.check_service_account_key(key.reveal()))
    return out


def password_for(ws: Workspace, account: Account) -> Secret:
    """What the login presents, at the moment of use: the clear password (empty when the
    relay needs no login), or for OAuth2 a valid access token (``oauth.access_token``)."""
    access.check_writable(f"sending through {account.name!r}")  # every send and test asks here
    if account.auth == "oauth2":
        return oauth.access_token(ws, account.oauth)
    if account.auth_source == "env":
        return resolve_reference(account.password_env or "")
    if account.auth_source == "none":
        return Secret("")
    with ws.store.connect() as con:
        row = con.execute(
            "SELECT password_enc FROM accounts WHERE name = ?", [account.name]
        ).fetchone()
    if not row or not row[0]:
        return Secret("")
    return ws.secrets.decrypt(row[0], f"the password of {account.name!r}")


def usage(ws: Workspace) -> tuple[int, int]:
    """(used, limit): "4 of 10 used"."""
    with ws.store.connect() as con:
        row = con.execute("SELECT count(*) FROM accounts").fetchone()
    return (int(row[0]) if row else 0), MAX_ACCOUNTS
