"""The audit trail: who changed which configuration, when, from where, and how.

Every change the library makes to system emails, templates, subscriptions,
workflow rules, campaigns, the role directory and settings appends one row
to the ``audit`` table, in the same transaction as the change itself: a
change that rolls back leaves no audit row, and an audit row always names a
change that happened.

A row says when (UTC), who (the OS user, or the console user), where the
change came from (``cli``, ``console`` or ``python``), what it touched (kind
and name), the action and, field by field, the old and new values. The
fields are found by comparing the stored row before and after the change, so
a column added later is audited without anyone touching this module. A
column whose name says it holds a secret (a password, a token, a key, a
secret, anything encrypted) is never written here: only that it changed
("password changed").

Who and where: ``acting(source, user)`` around a block (the command line
does this in ``main``), else ``SYSMAIL_AUDIT_SOURCE`` / ``SYSMAIL_AUDIT_USER``
in the environment (the console sets them for its kernels), else ``python``
and the OS user running the process.
"""

from __future__ import annotations

import getpass
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sysmail_ops.errors import ValidationError
from sysmail_ops.store import access
from sysmail_ops.store.database import Store, utcnow

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "ENV_SOURCE",
    "ENV_USER",
    "SOURCES",
    "Change",
    "Entry",
    "acting",
    "actor",
    "diff",
    "is_secret",
    "list_entries",
    "parse_since",
    "record",
    "row",
    "secret_name",
]

SOURCES = ("cli", "console", "python")
ENV_SOURCE = "SYSMAIL_AUDIT_SOURCE"
ENV_USER = "SYSMAIL_AUDIT_USER"
# Bookkeeping columns every change moves: not news in an audit row.
IGNORED = frozenset({"created_at", "updated_at"})
# A value longer than this (a template body) is kept as its start and its length.
MAX_VALUE = 300

_ACTING: ContextVar[tuple[str, str | None] | None] = ContextVar("sysmail_audit", default=None)

# --- secrets ------------------------------------------------------------------------------

_SECRET_ANYWHERE = frozenset({"password", "passwd", "secret", "credential", "credentials"})
_SECRET_LAST = frozenset({"token", "key", "apikey", "passphrase", "pin"})
# Suffixes that say how a secret is kept, not what it is: "oauth_refresh_token_enc".
_KEPT_AS = frozenset({"enc", "encrypted", "hash", "hashed", "ref", "env", "value"})


def is_secret(field: str) -> bool:
    """Whether a column (or setting) name says it holds a secret, so its value is never audited.

    Anything naming a password, passwd, secret or credential, anything encrypted
    (``*_enc``), and names ending in token / key (``api_key``, ``refresh_token_enc``);
    ``survey_token_days`` ends in days and is an ordinary number.
    """
    words = [w for w in re.split(r"[^a-z0-9]+", field.lower()) if w]
    if not words:
        return False
    if any(w in _SECRET_ANYWHERE for w in words) or words[-1] in ("enc", "encrypted"):
        return True
    while len(words) > 1 and words[-1] in _KEPT_AS:
        words.pop()
    return words[-1] in _SECRET_LAST


# --- who and where ------------------------------------------------------------------------


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name, no passwd entry (some containers)
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _check_source(source: str) -> str:
    if source not in SOURCES:
        raise ValidationError(
            f"unknown audit source {source!r}: choose one of {', '.join(SOURCES)}"
        )
    return source


@contextmanager
def acting(source: str, user: str | None = None) -> Iterator[None]:
    """Changes made inside the block are recorded as made from ``source`` by ``user``
    (default: the OS user). The command line wraps each command in ``acting("cli")``."""
    token = _ACTING.set((_check_source(source), user))
    try:
        yield
    finally:
        _ACTING.reset(token)


def actor() -> tuple[str, str]:
    """(user, source) a change made now is recorded with."""
    acting_now = _ACTING.get()
    if acting_now is not None:
        source, user = acting_now
    else:
        env_source = os.environ.get(ENV_SOURCE, "")
        source = env_source if env_source in SOURCES else "python"
        user = os.environ.get(ENV_USER) or None
    return (_one_line(user) if user else _os_user()), source


def _one_line(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", " ", text).strip()[:200] or "unknown"


# --- what changed -------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One field of one change: old and new value, or only that a secret changed."""

    field: str
    old: Any = None
    new: Any = None
    secret: bool = False

    def to_dict(self) -> dict[str, Any]:
        if self.secret:
            return {"field": self.field, "secret": True}
        return {"field": self.field, "old": self.old, "new": self.new}

    def describe(self) -> str:
        if self.secret:
            return f"{secret_name(self.field)} changed"
        return f"{self.field}: {_show(self.old)} -> {_show(self.new)}"


def secret_name(field: str) -> str:
    """What a secret column holds, without how it is kept: password_enc -> password,
    imap_password_enc -> imap_password, console_password_hash -> console_password."""
    words = field.split("_")
    while len(words) > 1 and words[-1] in _KEPT_AS:
        words.pop()
    return "_".join(words)


def _plain(value: Any) -> Any:
    """A stored value as JSON can hold it, long text cut to its start and length."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    text = str(value)
    if len(text) > MAX_VALUE:
        return f"{text[:MAX_VALUE]}... ({len(text):,} characters)"
    return text


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "on" if value else "off"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = _one_line(text) if text.strip() else repr(text)
    return text if len(text) <= 60 else text[:57] + "..."


def diff(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    ignore: Sequence[str] = (),
) -> list[Change]:
    """The fields that differ between two stored rows (``None``: the object did not exist).

    A secret column gives a ``Change`` with no value; the bookkeeping
    timestamps and the ``ignore`` fields are left out.
    """
    skip = IGNORED | set(ignore)
    old, new = dict(before or {}), dict(after or {})
    out = []
    secrets_seen: set[str] = set()
    for field in [*old, *(k for k in new if k not in old)]:
        if field in skip:
            continue
        a, b = old.get(field), new.get(field)
        if _same(a, b):
            continue
        if is_secret(field):
            if secret_name(field) in secrets_seen:
                continue  # password_enc and password_env: one "password changed"
            secrets_seen.add(secret_name(field))
            out.append(Change(field, secret=True))
        else:
            out.append(Change(field, _plain(a), _plain(b)))
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return list(a) == list(b)
    return bool(a == b)


# --- writing ------------------------------------------------------------------------------


def row(con: duckdb.DuckDBPyConnection, table: str, **key: Any) -> dict[str, Any] | None:
    """The stored row of ``table`` whose columns equal ``key`` (every column), or None.

    ``table`` and the key names are the caller's own identifiers, never user input.
    """
    where = " AND ".join(f"{k} = ?" for k in key) or "true"
    rel = con.execute(f"SELECT * FROM {table} WHERE {where} LIMIT 1", list(key.values()))  # noqa: S608
    found = rel.fetchone()
    if found is None:
        return None
    return dict(zip([d[0] for d in rel.description], found, strict=True))


def record(
    con: duckdb.DuckDBPyConnection,
    kind: str,
    name: str,
    action: str,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    *,
    ignore: Sequence[str] = (),
    note: str | None = None,
) -> bool:
    """Append one change to the audit table on ``con`` (the change's own transaction).

    ``before``/``after`` are the stored rows around the change (``row``). An edit
    that changed no field is not recorded; returns whether a row was written.
    """
    changes = diff(before, after, ignore)
    if before is not None and after is not None and not changes:
        return False
    access.check_writable(f"changing {kind} {name!r}")  # raised inside the change's transaction
    user, source = actor()
    parts = [note] if note else []
    if before is not None and after is not None:
        parts += [c.describe() for c in changes]
    elif before is None:  # an addition: its values are in ``changes``, its secrets only named
        parts += [c.describe().replace("changed", "set") for c in changes if c.secret]
    summary = "; ".join(parts)
    con.execute(
        "INSERT INTO audit (changed_at, actor, source, object_kind, object_name, action, changes,"
        " summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            utcnow(),
            user,
            source,
            kind,
            name,
            action,
            json.dumps([c.to_dict() for c in changes], ensure_ascii=False),
            summary,
        ],
    )
    return True


# --- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One audit row as read back."""

    id: int
    changed_at: datetime
    actor: str
    source: str
    object_kind: str
    object_name: str
    action: str
    changes: list[dict[str, Any]]
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "changed_at": self.changed_at.isoformat() + "Z",
            "actor": self.actor,
            "source": self.source,
            "object_kind": self.object_kind,
            "object_name": self.object_name,
            "action": self.action,
            "changes": self.changes,
            "summary": self.summary,
        }


def parse_since(value: str | datetime | None) -> datetime | None:
    """``--since``: 30m, 24h, 7d, or an ISO date / date-time (UTC)."""
    if value is None or isinstance(value, datetime):
        return value
    text = value.strip()
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if text[-1:] in units and text[:-1].isdigit() and len(text) <= 8:
        return utcnow() - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        return datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        raise ValidationError(
            f"--since takes 30m, 24h, 7d or an ISO date such as 2026-11-30, got {value[:40]!r}"
        ) from None


def list_entries(
    store: Store,
    *,
    since: str | datetime | None = None,
    kind: str | None = None,
    name: str | None = None,
    limit: int | None = None,
) -> list[Entry]:
    """Audit rows, newest first, optionally since a time, of one kind and/or one object."""
    start = parse_since(since)
    if limit is not None and limit < 1:
        raise ValidationError(f"--limit takes a positive whole number, got {limit}")
    df_cols = ", ".join(Entry.__dataclass_fields__)
    clauses, params = ["true"], []
    for clause, value in (
        ("changed_at >= ?", start),
        ("object_kind = ?", kind),
        ("object_name = ?", name),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    sql = f"SELECT {df_cols} FROM audit WHERE {' AND '.join(clauses)} ORDER BY id DESC"  # noqa: S608
    if limit:
        sql += f" LIMIT {int(limit)}"
    with store.connect() as con:
        rows = con.execute(sql, params).fetchall()
    out = []
    for r in rows:
        d = dict(zip(Entry.__dataclass_fields__, r, strict=True))
        d["changes"] = json.loads(d["changes"])
        out.append(Entry(**d))
    return out
