"""Email addresses: syntax checks (email-validator, no DNS) and loopback hosts."""

from __future__ import annotations

import ipaddress
import re

from sysmail_ops.errors import ValidationError

__all__ = ["check_address", "is_loopback"]


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses: AUTH may travel unencrypted there."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# Domains email-validator has accepted, as given -> as it normalised them (lower case).
_DOMAINS: dict[str, str] = {}
_SIMPLE_LOCAL = re.compile(r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*")  # a subset of RFC 5322 dot-atom


def check_address(address: str, what: str = "address") -> str:
    """Normalise an email address with email-validator (syntax only, no DNS).

    email-validator takes tens of microseconds an address and a batch rarely
    repeats one. Its verdict is its verdict on the domain plus a dot-atom check
    of the local part, which it leaves as is when lower case. So once it has
    accepted a domain, a lower-case dot-atom local part at that domain, within
    the length limits, gets the same answer without asking again; anything
    else is asked (a test compares both on thousands of addresses).
    """
    local, _, domain = address.rpartition("@")
    known = _DOMAINS.get(domain)
    if known and len(local) <= 64 and len(address) <= 254 and _SIMPLE_LOCAL.fullmatch(local):
        return f"{local}@{known}"
    if any(c in address for c in "\r\n"):
        raise ValidationError(f"{what} must not contain line breaks")
    from email_validator import EmailNotValidError, validate_email  # ~25 ms to import

    try:
        normal: str = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValidationError(f"{what} {address!r} is not valid: {exc}") from None
    got = normal.rpartition("@")[2]
    if got.isascii() and got == domain.lower():
        if len(_DOMAINS) > 10_000:
            _DOMAINS.clear()
        _DOMAINS[domain] = got
    return normal
