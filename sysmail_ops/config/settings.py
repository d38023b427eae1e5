"""Workspace settings: a few named values kept in the store, each checked and with a default.

Only the names below exist; a value is checked when it is set (bad input
writes nothing) and read back as its type. A setting never set reads as its
default, so a new workspace needs no set-up.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import NotFoundError, ValidationError
from sysmail_ops.store import audit
from sysmail_ops.store.database import utcnow

if TYPE_CHECKING:
    import duckdb


def _url(value: Any) -> str:
    """An http(s) base URL without query or fragment, kept without its trailing slash."""
    text = str(value).strip()
    if any(c.isspace() or not c.isprintable() for c in text) or any(c in text for c in "<>\"'"):
        raise ValidationError("public_base_url must not contain spaces, line breaks, quotes or <>")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            f"public_base_url must be an http:// or https:// URL, got {text[:80]!r}"
        )
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValidationError(
            "public_base_url takes no query, fragment or user name: scheme://host[:port][/path]"
        )
    try:
        _ = parts.port
    except ValueError:
        raise ValidationError(f"public_base_url has a bad port: {text[:80]!r}") from None
    return text.rstrip("/")


def _whole(name: str, unit: str, low: int, high: int) -> Callable[[Any], int]:
    """A whole number from ``low`` to ``high`` (``5000000``, ``5_000_000`` or ``5,000,000``)."""

    def check(value: Any) -> int:
        if isinstance(value, bool):
            raise ValidationError(f"{name} takes a whole number of {unit}, got {value!r}")
        text = str(value).strip().replace(",", "").replace("_", "")
        if not text.isdigit() or len(text) > 12:
            raise ValidationError(f"{name} takes a whole number of {unit}, got {str(value)[:40]!r}")
        n = int(text)
        if not low <= n <= high:
            raise ValidationError(f"{name} must be from {low:,} to {high:,} {unit}, got {n:,}")
        return n

    return check


def _seconds(name: str, low: float, high: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool):
            raise ValidationError(f"{name} takes a number of seconds, got {value!r}")
        text = str(value).strip().removesuffix("s").strip()
        try:
            n = float(text) if len(text) <= 20 else math.nan
        except ValueError:
            n = math.nan
        if not math.isfinite(n):
            raise ValidationError(f"{name} takes a number of seconds, got {str(value)[:40]!r}")
        if not low <= n <= high:
            raise ValidationError(f"{name} must be from {low:g} to {high:g} seconds, got {n:g}")
        return n

    return check


def _days(name: str, low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool):
            raise ValidationError(f"{name} takes a whole number of days, got {value!r}")
        try:
            n = int(str(value).strip())
        except ValueError:
            raise ValidationError(
                f"{name} takes a whole number of days, got {str(value)[:40]!r}"
            ) from None
        if not low <= n <= high:
            raise ValidationError(f"{name} must be from {low} to {high} days, got {n}")
        return n

    return check


def _cluster(value: Any) -> str:
    """A Dask scheduler address (``tcp://host:8786``, ``tls://...``), or "" for the local pool."""
    text = str(value).strip()
    if not text:
        return ""
    parts = urlsplit(text)
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or parts.path not in ("", "/"):
        raise ValidationError(
            "report_cluster must be tcp://HOST:PORT or tls://HOST:PORT (or empty),"
            f" got {text[:80]!r}"
        )
    try:
        _ = parts.port
    except ValueError:
        raise ValidationError(f"report_cluster has a bad port: {text[:80]!r}") from None
    return text.rstrip("/")


@dataclass(frozen=True)
class Definition:
    """One known setting: its default, its check and what it is for."""

    name: str
    default: Any
    check: Callable[[Any], Any]
    help: str


DEFINITIONS: dict[str, Definition] = {
    d.name: d
    for d in (
        Definition(
            "public_base_url",
            "http://127.0.0.1:8025",
            _url,
            "base URL of survey and unsubscribe links: where `sysmail-ops serve` is reached "
            "(e.g. behind the company's reverse proxy)",
        ),
        Definition(
            "survey_token_days",
            30,
            _days("survey_token_days", 1, 365),
            "days a survey link stays valid",
        ),
        Definition(
            "survey_quiet_days",
            30,
            _days("survey_quiet_days", 0, 3650),
            "a contact surveyed in the last N days is not surveyed again (0: no rule)",
        ),
        Definition(
            "render_time_limit",
            2.0,
            _seconds("render_time_limit", 0.05, 60),
            "seconds one template render (subject, HTML and text) may take",
        ),
        Definition(
            "render_output_limit",
            5_000_000,
            _whole("render_output_limit", "characters", 1_000, 100_000_000),
            "characters one render may output; also the largest value a template may build "
            "(and all it builds may total 4 times this)",
        ),
        Definition(
            "render_loop_limit",
            100_000,
            _whole("render_loop_limit", "iterations", 10, 10_000_000),
            "loop iterations one render may run, all its loops together",
        ),
        Definition(
            "soft_bounce_limit",
            3,
            _whole("soft_bounce_limit", "bounces", 1, 1000),
            "soft bounces (4.x.x) of one address within 7 days that put it on the "
            "suppression list, as one hard bounce does",
        ),
        Definition(
            "report_cluster",
            "",
            _cluster,
            "the Dask scheduler (tcp://HOST:8786) that `subscriptions run-due` runs report "
            "notebooks on; empty: the local worker pool",
        ),
        Definition(
            "intake_queue_limit",
            10_000,
            _whole("intake_queue_limit", "events", 1, 10_000_000),
            "events `serve` holds accepted and not yet notified; past it POST /events gets "
            "429 with Retry-After (`serve --queue-limit` overrides it)",
        ),
    )
}


@dataclass(frozen=True)
class Setting:
    """A setting's current value and where it comes from."""

    name: str
    value: Any
    default: Any
    is_default: bool
    updated_at: datetime | None
    help: str


def _definition(name: str) -> Definition:
    try:
        return DEFINITIONS[name]
    except KeyError:
        raise NotFoundError(
            f"no setting named {name!r}: choose one of {', '.join(DEFINITIONS)}"
        ) from None


def _stored(
    ws: Workspace, name: str | None = None, *, con: duckdb.DuckDBPyConnection | None = None
) -> dict[str, tuple[str, datetime]]:
    if con is None:
        with ws.store.connect() as con:
            return _stored(ws, name, con=con)
    sql = "SELECT key, value, updated_at FROM settings"
    params: list[Any] = []
    if name is not None:
        sql += " WHERE key = ?"
        params.append(name)
    return {k: (v, t) for k, v, t in con.execute(sql, params).fetchall()}


# db path -> (read at, stored values): a mail merge asks per recipient, the store
# is opened once per few seconds. Another process's change shows within CACHE_SECONDS.
CACHE_SECONDS = 5.0
_CACHE: dict[str, tuple[float, dict[str, tuple[str, datetime]]]] = {}


def _cached(
    ws: Workspace, con: duckdb.DuckDBPyConnection | None = None
) -> dict[str, tuple[str, datetime]]:
    key = str(ws.db_path)
    hit = _CACHE.get(key)
    now = time.monotonic()
    if hit is None or now - hit[0] > CACHE_SECONDS:
        hit = (now, _stored(ws, con=con))
        _CACHE[key] = hit
    return hit[1]


def get_setting(ws: Workspace, name: str, *, con: duckdb.DuckDBPyConnection | None = None) -> Any:
    """The value of one setting (its default when never set), as its type.

    Read through a cache of a few seconds, since a batch asks once per message;
    ``con`` reuses an open store connection when the cache must be filled.
    """
    d = _definition(name)
    row = _cached(ws, con).get(name)
    if row is None:
        return d.default
    try:
        return d.check(row[0])
    except ValidationError:  # written by an older version with other rules
        return d.default


def set_setting(ws: Workspace, name: str, value: Any) -> Any:
    """Check and store one setting; returns the value as stored. Bad input writes nothing."""
    d = _definition(name)
    checked = d.check(value)
    with ws.store.transaction() as con:
        before = _stored(ws, name, con=con).get(name)
        con.execute(
            "INSERT OR REPLACE INTO settings (key, value, updated_at) VALUES (?, ?, ?)",
            [name, str(checked), utcnow()],
        )
        _audit(con, name, before, str(checked))
    _CACHE.pop(str(ws.db_path), None)
    return checked


def reset_setting(ws: Workspace, name: str) -> Any:
    """Forget a stored value, so the default applies again; returns the default."""
    d = _definition(name)
    with ws.store.transaction() as con:
        before = _stored(ws, name, con=con).get(name)
        con.execute("DELETE FROM settings WHERE key = ?", [name])
        if before is not None:
            _audit(con, name, before, None)
    _CACHE.pop(str(ws.db_path), None)
    return d.default


def _audit(
    con: duckdb.DuckDBPyConnection, name: str, before: tuple[str, datetime] | None, new: str | None
) -> None:
    """One audit row for a setting (the setting is the field); a default shows as its value."""
    default = str(DEFINITIONS[name].default)
    old = before[0] if before else default
    action = "reset" if new is None else "edit"
    note = "back to the default" if new is None else (None if before else "was the default")
    audit.record(con, "setting", name, action, {name: old}, {name: new or default}, note=note)


def list_settings(ws: Workspace) -> list[Setting]:
    """Every known setting, in a fixed order, with its value and default (read fresh)."""
    stored = _stored(ws)
    out = []
    for d in DEFINITIONS.values():
        raw = stored.get(d.name)
        value = d.default
        if raw is not None:
            try:
                value = d.check(raw[0])
            except ValidationError:
                raw = None
        out.append(Setting(d.name, value, d.default, raw is None, raw[1] if raw else None, d.help))
    return out


def url_hint(url: str) -> str | None:
    """A remark on a public base URL that works but is probably not what the admin wants."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return (
            "links point at this machine only: recipients elsewhere cannot open them; "
            "set public_base_url to the address your reverse proxy serves"
        )
    if parts.scheme != "https":
        return (
            "mail clients offer one-click unsubscribe (RFC 8058) only for https links, "
            "so List-Unsubscribe-Post is left out"
        )
    return None
