"""Report subscriptions: who gets which report notebook, with which parameters, when.

A subscription names a report notebook (``reports/``), its parameters, its
recipients (each may override parameters, e.g. its own region), a cron
schedule in an IANA timezone, the system email and ``report`` template that
mail it, the delivery formats, skip-if-empty, the locale its reports write
numbers and dates in (``en``, ``de``, ``zh``...) and an owner who hears about
failures. Everything is checked when it is saved, so a schedule never finds
a broken subscription at 08:00 on Monday. Running them is
``subscription_runs``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import NotFoundError, ValidationError
from sysmail_ops.store import audit
from sysmail_ops.store.database import utcnow
from sysmail_ops.store.named import check_name, insert_named, update_named
from sysmail_ops.subscriptions import formats as report_formats
from sysmail_ops.subscriptions import notebooks as reports
from sysmail_ops.subscriptions import schedule
from sysmail_ops.templates import catalog as templates

FORMATS = ("html_body", "html_attachment", "csv", "xlsx")
FORMAT_HELP = {
    "html_body": "the report's HTML in the mail body (charts as inline images)",
    "html_attachment": "the report's HTML as report.html",
    "csv": "each named table as a CSV attachment",
    "xlsx": "each named table as an XLSX attachment",
}
DEFAULT_TEMPLATE = "report-mail"
DEFAULT_LOCALE = "en"
_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED_PARAMETERS = ("home",)  # the runner passes the workspace itself


@dataclass(frozen=True)
class Recipient:
    """One address, with the parameters it overrides (``{"region": "APAC"}``)."""

    address: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Subscription:
    name: str
    notebook: str  # absolute path of the report notebook
    recipients: tuple[Recipient, ...]
    cron: str
    timezone: str
    account: str
    template: str
    owner: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    formats: tuple[str, ...] = ("html_body",)
    tables: tuple[str, ...] | None = None  # which named tables to attach; None: all
    skip_if_empty: bool = False
    enabled: bool = True
    timeout: float = 600.0  # seconds per notebook execution
    locale: str = DEFAULT_LOCALE  # how its reports write numbers and dates (en, de, zh...)
    description: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def parameter_sets(self) -> dict[str, tuple[dict[str, Any], list[str]]]:
        """Distinct merged parameter sets -> (parameters, addresses); one notebook run each."""
        out: dict[str, tuple[dict[str, Any], list[str]]] = {}
        for r in self.recipients:
            merged = {**self.parameters, **r.parameters}
            key = canonical(merged)
            out.setdefault(key, (merged, []))[1].append(r.address)
        return out

    def parameters_for(self, address: str | None) -> dict[str, Any]:
        """The merged parameters of one recipient (the base ones for an outsider)."""
        for r in self.recipients:
            if address and r.address.lower() == address.lower():
                return {**self.parameters, **r.parameters}
        return dict(self.parameters)

    def report_defaults(self) -> dict[str, Any]:
        """What the runner gives a report that declares ``locale`` / ``timezone`` parameters
        (and the subscription or recipient did not set)."""
        return {"locale": self.locale, "timezone": self.timezone}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["recipients"] = [
            {"address": r.address, "parameters": dict(r.parameters)} for r in self.recipients
        ]
        return d


def canonical(params: Mapping[str, Any]) -> str:
    """One spelling per parameter set: sorted keys, compact JSON."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- validation ---------------------------------------------------------------------------


def _check_parameters(values: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ValidationError(f"{what} must be a mapping of name -> value")
    out = {}
    for k, v in values.items():
        if not isinstance(k, str) or not _PARAM.fullmatch(k):
            raise ValidationError(f"{what}: {k!r} is not a parameter name")
        if k in RESERVED_PARAMETERS:
            raise ValidationError(f"{what}: {k!r} is set by the runner (the workspace folder)")
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            raise ValidationError(
                f"{what}: {k} must be a string, number, true/false, null or a list of them"
            ) from None
        out[k] = v
    return out


def _check_recipients(
    values: Iterable[Recipient | str | Mapping[str, Any]],
) -> tuple[Recipient, ...]:
    if isinstance(values, str | bytes):
        values = [values]
    out: list[Recipient] = []
    seen: set[str] = set()
    for n, v in enumerate(values, 1):
        if isinstance(v, Recipient):
            addr, params = v.address, v.parameters
        elif isinstance(v, str):
            addr, params = v, {}
        elif isinstance(v, Mapping):
            addr, params = v.get("address", ""), v.get("parameters") or {}
        else:
            raise ValidationError(f"recipient {n}: expected an address, got {v!r}")
        addr = accounts.check_address(str(addr), f"recipient {n}")
        if addr.lower() in seen:
            raise ValidationError(f"recipient {addr} is listed twice")
        seen.add(addr.lower())
        out.append(Recipient(addr, _check_parameters(params, f"parameters of {addr}")))
    if not out:
        raise ValidationError("a subscription needs at least one recipient")
    return tuple(out)


def _validate(ws: Workspace, s: Subscription) -> Subscription:
    name = check_name(s.name)
    notebook = reports.resolve_notebook(s.notebook)
    params = _check_parameters(s.parameters, "parameters")
    recipients = _check_recipients(s.recipients)
    reports.check_parameters(notebook, params)
    for r in recipients:
        reports.check_parameters(notebook, {**params, **r.parameters})
    tz = schedule.check_timezone(s.timezone)
    cron = schedule.check_cron(s.cron)
    accounts.get_account(ws, s.account)
    t = templates.get_template(ws, s.template)
    if t.object_type != "report":
        raise ValidationError(
            f"template {s.template!r} is for {t.object_type!r} objects; a subscription needs a"
            " 'report' template"
        )
    formats = tuple(dict.fromkeys(s.formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValidationError(
            f"unknown delivery format {', '.join(unknown) or '(none)'}: choose from"
            f" {', '.join(FORMATS)}"
        )
    tables = tuple(dict.fromkeys(s.tables)) if s.tables is not None else None
    if tables is not None and any(not t or not isinstance(t, str) for t in tables):
        raise ValidationError("table names must be non-empty")
    owner = accounts.check_address(s.owner or "", "owner")
    if not isinstance(s.timeout, int | float) or not 1 <= s.timeout <= 24 * 3600:
        raise ValidationError(f"timeout must be 1 to 86400 seconds, got {s.timeout!r}")
    description = (s.description or "").strip() or None
    if description and len(description) > 500:
        raise ValidationError("description is longer than 500 characters")
    return replace(
        s,
        name=name,
        locale=report_formats.check_locale(s.locale),
        notebook=str(notebook),
        parameters=params,
        recipients=recipients,
        timezone=tz.key,
        cron=cron,
        formats=formats,
        tables=tables,
        owner=owner,
        timeout=float(s.timeout),
        description=description,
        skip_if_empty=bool(s.skip_if_empty),
        enabled=bool(s.enabled),
    )


# --- storage ------------------------------------------------------------------------------

_COLUMNS = tuple(f.name for f in fields(Subscription))
_JSON = ("parameters", "recipients")


def _to_row(s: Subscription) -> list[Any]:
    d = s.to_dict()
    return [json.dumps(d[c]) if c in _JSON else d[c] for c in _COLUMNS]


def _from_row(row: Sequence[Any]) -> Subscription:
    d = dict(zip(_COLUMNS, row, strict=True))
    d["parameters"] = json.loads(d["parameters"])
    d["recipients"] = tuple(
        Recipient(r["address"], r["parameters"]) for r in json.loads(d["recipients"])
    )
    d["formats"] = tuple(d["formats"])
    d["tables"] = tuple(d["tables"]) if d["tables"] is not None else None
    return Subscription(**d)


_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM subscriptions"  # noqa: S608 - our column names


def list_subscriptions(ws: Workspace, *, enabled_only: bool = False) -> list[Subscription]:
    where = " WHERE enabled" if enabled_only else ""
    with ws.store.connect() as con:
        rows = con.execute(_SELECT + where + " ORDER BY name").fetchall()
    return [_from_row(r) for r in rows]


def get_subscription(ws: Workspace, name: str) -> Subscription:
    with ws.store.connect() as con:
        row = con.execute(_SELECT + " WHERE name = ?", [name]).fetchone()
    if row is None:
        raise NotFoundError(f"no subscription named {name!r}")
    return _from_row(row)


def add_subscription(
    ws: Workspace,
    name: str,
    *,
    notebook: str,
    recipients: Iterable[Recipient | str | Mapping[str, Any]],
    cron: str,
    timezone: str,
    account: str,
    owner: str,
    template: str = DEFAULT_TEMPLATE,
    parameters: Mapping[str, Any] | None = None,
    formats: Sequence[str] = ("html_body",),
    tables: Sequence[str] | None = None,
    skip_if_empty: bool = False,
    enabled: bool = True,
    timeout: float = 600.0,
    description: str | None = None,
    locale: str = DEFAULT_LOCALE,
) -> Subscription:
    """Save a new subscription after checking everything it names."""
    now = utcnow()
    s = _validate(
        ws,
        Subscription(
            name=name,
            notebook=notebook,
            recipients=tuple(recipients),  # type: ignore[arg-type]
            cron=cron,
            timezone=timezone,
            account=account,
            template=template,
            owner=owner,
            parameters=parameters or {},
            formats=tuple(formats),
            tables=tuple(tables) if tables is not None else None,
            skip_if_empty=skip_if_empty,
            enabled=enabled,
            timeout=timeout,
            description=description,
            locale=locale,
            created_at=now,
            updated_at=now,
        ),
    )
    with ws.store.transaction() as con:
        insert_named(con, "subscriptions", _COLUMNS, _to_row(s), "subscription")
        after = audit.row(con, "subscriptions", name=s.name)
        audit.record(con, "subscription", s.name, "add", None, after)
    return s


_EDITABLE = {f.name for f in fields(Subscription)} - {"name", "created_at", "updated_at"}


def edit_subscription(ws: Workspace, name: str, /, **changes: Any) -> Subscription:
    """Change some fields (``None`` leaves a field as it is); checked like a new one."""
    unknown = set(changes) - _EDITABLE
    if unknown:
        raise ValidationError(f"cannot edit {', '.join(sorted(unknown))} of a subscription")
    current = get_subscription(ws, name)
    given = {k: v for k, v in changes.items() if v is not None}
    for k in ("recipients", "formats", "tables"):
        if k in given and not isinstance(given[k], tuple):
            given[k] = tuple(given[k])
    s = _validate(ws, replace(current, **given, updated_at=utcnow()))
    with ws.store.transaction() as con:
        before = audit.row(con, "subscriptions", name=name)
        update_named(con, "subscriptions", _COLUMNS, _to_row(s))
        after = audit.row(con, "subscriptions", name=name)
        audit.record(con, "subscription", name, "edit", before, after)
    return s


def set_enabled(ws: Workspace, name: str, enabled: bool) -> Subscription:
    """Pause (False) or resume (True) without re-checking the rest."""
    get_subscription(ws, name)
    with ws.store.transaction() as con:
        before = audit.row(con, "subscriptions", name=name)
        con.execute(
            "UPDATE subscriptions SET enabled = ?, updated_at = ? WHERE name = ?",
            [enabled, utcnow(), name],
        )
        after = audit.row(con, "subscriptions", name=name)
        audit.record(con, "subscription", name, "resume" if enabled else "pause", before, after)
    return get_subscription(ws, name)


def remove_subscription(ws: Workspace, name: str) -> None:
    """Delete a subscription; its run history stays (the send log points at it)."""
    get_subscription(ws, name)
    with ws.store.transaction() as con:
        before = audit.row(con, "subscriptions", name=name)
        con.execute("DELETE FROM subscription_claims WHERE subscription = ?", [name])
        con.execute("DELETE FROM subscriptions WHERE name = ?", [name])
        audit.record(con, "subscription", name, "remove", before, None)


def next_runs(s: Subscription, n: int = 5, after: datetime | None = None) -> list[datetime]:
    """The next ``n`` slots (naive UTC)."""
    return schedule.next_slots(s.cron, schedule.check_timezone(s.timezone), after or utcnow(), n)
