"""The do-not-contact list: addresses that marketing, follow-up and survey mail skips.

An address lands here when its owner unsubscribes (``sysmail-ops serve``, the
``List-Unsubscribe`` one-click POST) or when an admin adds it. The sending
pipeline loads the list once per batch and logs a listed recipient of those
use cases as ``suppressed`` instead of mailing it; workflow notices, reports
and the toolkit's own mail are not marketing and still go out.

Addresses are kept normalised: checked with ``mail.addresses.check_address``,
lower-cased, the domain in IDNA form, which is how the pipeline writes its
recipients, so the lookup is a plain set membership.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import NotFoundError, ValidationError
from sysmail_ops.mail.addresses import check_address
from sysmail_ops.store.database import utcnow

if TYPE_CHECKING:
    import pandas as pd

REASONS = ("unsubscribe", "manual", "bounce", "complaint")
# The use cases that honour the list: mail a person may refuse.
USE_CASES = frozenset({"marketing", "follow_up", "survey"})
COLUMNS = ["address", "reason", "source", "created_at"]


@dataclass(frozen=True)
class Entry:
    """One suppressed address: why, from where, since when."""

    address: str
    reason: str
    source: str | None
    created_at: datetime


def normalise(address: str, what: str = "address") -> str:
    """The form the list keeps: a checked address, lower case, IDNA domain."""
    if not isinstance(address, str):
        raise ValidationError(f"{what} must be text, got {type(address).__name__}")
    normal = check_address(address.strip(), what)
    local, _, domain = normal.rpartition("@")
    if not domain.isascii():
        from email_validator import EmailNotValidError, validate_email

        with contextlib.suppress(EmailNotValidError):  # check_address accepted it anyway
            domain = validate_email(normal, check_deliverability=False).ascii_domain or domain
    return f"{local}@{domain}".lower()


def _lookup_form(address: str) -> str:
    """A cheap lookup key for an address the pipeline has already checked."""
    return address.strip().lower()


def _key(address: str) -> str:
    try:
        return normalise(address)
    except ValidationError:  # not an address: it cannot be listed either
        return _lookup_form(address)


def add(
    ws: Workspace, address: str, *, reason: str = "manual", source: str | None = None
) -> tuple[Entry, bool]:
    """Suppress an address. Returns its entry and whether it was new.

    Adding an address already listed keeps the first entry (its reason and
    date say when the person first asked), so a repeated unsubscribe is harmless.
    """
    addr = normalise(address)
    if reason not in REASONS:
        raise ValidationError(f"unknown reason {reason!r}: choose one of {', '.join(REASONS)}")
    if source is not None:
        source = source.strip()
        if len(source) > 200 or any(c in source for c in "\r\n\0"):
            raise ValidationError("source must be one line of at most 200 characters")
        source = source or None
    with ws.store.transaction() as con:
        row = con.execute(
            f"SELECT {', '.join(COLUMNS)} FROM suppression WHERE address = ?",  # noqa: S608
            [addr],
        ).fetchone()
        if row is not None:
            return Entry(*row), False
        entry = Entry(addr, reason, source, utcnow())
        con.execute(
            "INSERT INTO suppression VALUES (?, ?, ?, ?)",
            [entry.address, entry.reason, entry.source, entry.created_at],
        )
    return entry, True


def remove(ws: Workspace, address: str) -> Entry:
    """Take an address off the list (it may be mailed again). Returns the removed entry."""
    addr = normalise(address)
    with ws.store.transaction() as con:
        row = con.execute(
            f"SELECT {', '.join(COLUMNS)} FROM suppression WHERE address = ?",  # noqa: S608
            [addr],
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{addr} is not on the suppression list")
        con.execute("DELETE FROM suppression WHERE address = ?", [addr])
    return Entry(*row)


def list_suppressed(ws: Workspace, *, reason: str | None = None) -> pd.DataFrame:
    """The list as a DataFrame (address, reason, source, created_at), newest first."""
    if reason is not None and reason not in REASONS:
        raise ValidationError(f"unknown reason {reason!r}: choose one of {', '.join(REASONS)}")
    sql = f"SELECT {', '.join(COLUMNS)} FROM suppression"  # noqa: S608
    params: list[Any] = []
    if reason:
        sql += " WHERE reason = ?"
        params.append(reason)
    with ws.store.connect() as con:
        return con.execute(sql + " ORDER BY created_at DESC, address", params).df()


def get_entry(ws: Workspace, address: str) -> Entry | None:
    """The entry of one address, or None when it is not suppressed."""
    addr = normalise(address)
    with ws.store.connect() as con:
        row = con.execute(
            f"SELECT {', '.join(COLUMNS)} FROM suppression WHERE address = ?",  # noqa: S608
            [addr],
        ).fetchone()
    return Entry(*row) if row else None


def is_suppressed(ws: Workspace, addrs: Iterable[str]) -> set[str]:
    """Those of ``addrs`` (as given) that are on the list; one store visit for all."""
    given = {a: _key(a) for a in addrs if isinstance(a, str)}
    if not given:
        return set()
    with ws.store.connect() as con:
        rows = con.execute(
            "SELECT address FROM suppression WHERE address IN (SELECT unnest(?::VARCHAR[]))",
            [sorted(set(given.values()))],
        ).fetchall()
    listed = {r[0] for r in rows}
    return {a for a, key in given.items() if key in listed}


def suppressed_set(ws: Workspace) -> frozenset[str]:
    """The whole list, for the send loop to test membership without visiting the store."""
    with ws.store.connect() as con:
        return frozenset(r[0] for r in con.execute("SELECT address FROM suppression").fetchall())


def matches(listed: frozenset[str], address: str) -> bool:
    """Whether a recipient as the pipeline writes it is in a set from ``suppressed_set``."""
    return bool(listed) and _lookup_form(address) in listed
