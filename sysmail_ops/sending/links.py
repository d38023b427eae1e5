"""The personal links a message carries: signed, expiring tokens for survey
answers and one-click unsubscribes (RFC 8058), under the workspace's public URL.

A token is ``v1.<claims>.<signature>``: the claims as compact JSON in
URL-safe base64, then HMAC-SHA256 over ``v1.<claims>`` with a key derived
(HKDF) from the workspace secret key. Nothing is stored per token and no id
in it can be guessed or counted up: changing any character breaks the
signature, which is compared in constant time before the claims are read.
The key is never printed; replacing the workspace key invalidates every
link sent before.

The claims are readable by whoever holds the link (like a JWT): the person
it was mailed to, and the campaign and contact names. They are signed, not
secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sysmail_ops.config import settings
from sysmail_ops.config.secrets import SecretBox
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import ValidationError
from sysmail_ops.records.suppression import normalise

PURPOSES = ("survey", "unsubscribe")
VERSION = "v1"
MAX_TOKEN = 2048  # characters; a real one is a few hundred
_KEY_INFO = b"sysmail-ops link tokens v1"
_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


class TokenError(ValidationError):
    """A link token is forged, tampered with, cut short or meant for something else."""


class TokenExpiredError(TokenError):
    """A link token was genuine but its time is up."""


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says: for what, which campaign, which contact, which address."""

    purpose: str
    campaign: str | None
    contact: str
    email: str
    expires_at: datetime | None  # naive UTC, as the store keeps time; None: never


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# SecretBox -> its derived signing key. A box holds one key for its life, so the cache
# can never be stale; a workspace opened anew (another key) brings a new box.
_KEYS: weakref.WeakKeyDictionary[SecretBox, bytes] = weakref.WeakKeyDictionary()


def _key(ws: Workspace) -> bytes:
    box = ws.secrets
    key = _KEYS.get(box)
    if key is None:
        key = _KEYS[box] = box.derive_key(_KEY_INFO)
    return key


def _sign(key: bytes, message: str) -> str:
    return _b64(hmac.new(key, message.encode("ascii"), hashlib.sha256).digest())


def _text(value: Any, what: str, max_len: int = 200) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"a token needs a {what} (non-empty text)")
    value = value.strip()
    if len(value) > max_len or any(c in value for c in "\r\n\0"):
        raise ValidationError(
            f"the token's {what} must be one line of at most {max_len} characters"
        )
    return value


def make_token(
    ws: Workspace,
    *,
    purpose: str,
    campaign: str | None,
    contact: str,
    email: str,
    expires_at: datetime | None = None,
) -> str:
    """A signed token for a link in one person's mail.

    ``expires_at`` (naive UTC, or aware) defaults to now + ``survey_token_days``
    for surveys; unsubscribe links do not expire unless given a time, since a
    person may unsubscribe from an old mail.
    """
    if purpose not in PURPOSES:
        raise ValidationError(
            f"unknown token purpose {purpose!r}: choose one of survey, unsubscribe"
        )
    claims: dict[str, Any] = {"p": purpose[0], "k": _text(contact, "contact")}
    if campaign is not None:
        claims["c"] = _text(campaign, "campaign")
    claims["e"] = normalise(email, "token email")
    if expires_at is None and purpose == "survey":
        days = settings.get_setting(ws, "survey_token_days")
        expires_at = datetime.now(UTC) + timedelta(days=days)
    if expires_at is not None:
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        claims["x"] = int(expires_at.timestamp())
    body = _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    signed = f"{VERSION}.{body}"
    return f"{signed}.{_sign(_key(ws), signed)}"


def verify_token(ws: Workspace, token: str, purpose: str) -> TokenClaims:
    """The claims of a genuine, unexpired token for ``purpose``.

    Raises ``TokenExpiredError`` ("this link has expired") or ``TokenError``
    ("this link is not valid") for anything forged, tampered with, cut short,
    or made for another purpose; the message never repeats the token.
    """
    invalid = TokenError("this link is not valid")
    if purpose not in PURPOSES:
        raise ValidationError(
            f"unknown token purpose {purpose!r}: choose one of survey, unsubscribe"
        )
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN:
        raise invalid
    token = token.strip()
    if not _ALPHABET.issuperset(token):
        raise invalid
    version, _, rest = token.partition(".")
    body, _, signature = rest.partition(".")
    if version != VERSION or not body or not signature:
        raise invalid
    expected = _sign(_key(ws), f"{version}.{body}")
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii")):
        raise invalid
    try:
        claims = json.loads(_unb64(body))
        kind = {"s": "survey", "u": "unsubscribe"}[claims["p"]]
        contact, email = claims["k"], claims["e"]
        campaign = claims.get("c")
        expiry = claims.get("x")
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise invalid from None  # signed by us yet unreadable: treat like a forgery
    if kind != purpose:
        raise invalid
    expires_at = None
    if expiry is not None:
        expires_at = datetime.fromtimestamp(int(expiry), UTC).replace(tzinfo=None)
        if datetime.now(UTC).replace(tzinfo=None) >= expires_at:
            raise TokenExpiredError(
                f"this link has expired (it was valid until {expires_at:%Y-%m-%d %H:%M} UTC)"
            )
    return TokenClaims(kind, campaign, contact, email, expires_at)


def public_base(ws: Workspace) -> str:
    """Where ``sysmail-ops serve`` is reached from outside (the ``public_base_url`` setting)."""
    return str(settings.get_setting(ws, "public_base_url"))


def unsubscribe_url(ws: Workspace, email: str, campaign: str | None = None) -> str:
    """A personal unsubscribe link for ``email`` (no expiry), for List-Unsubscribe and footers."""
    token = make_token(ws, purpose="unsubscribe", campaign=campaign, contact=email, email=email)
    return f"{public_base(ws)}/unsubscribe/{token}"
