"""Notification rules: which workflow, approval-flow or business-flow event mails whom.

A rule names a flow type, a flow name (or ``*`` for any), an event (free
text such as ``approved``), an optional condition over the event's record
(``conditions``), the system email and template that send, and recipients:
fixed addresses, ``field:applicant_email`` (an address in the record) and
``role:finance`` (the people of a role in the ``directory``). Everything is
checked when a rule is saved. Notifying is ``workflows.notify``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from typing import Any

from sysmail_ops.config import accounts, directory
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import NotFoundError, ValidationError
from sysmail_ops.flows.conditions import Condition, compile_condition
from sysmail_ops.store import audit
from sysmail_ops.store.database import utcnow
from sysmail_ops.store.named import check_name, insert_named, update_named
from sysmail_ops.templates import catalog as templates

FLOW_TYPES = ("workflow", "approval_flow", "business_flow")
ANY_FLOW = "*"
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Rule:
    """One notification rule, as stored."""

    name: str
    flow_type: str
    flow_name: str
    event: str
    account: str
    template: str
    recipients: tuple[str, ...]
    condition: str | None = None
    enabled: bool = True
    description: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def matches(self, flow_type: str, flow_name: str, event: str) -> bool:
        """Flow type, flow name (or ``*``) and event all match (exact, case-sensitive)."""
        return (
            self.flow_type == flow_type
            and self.flow_name in (ANY_FLOW, flow_name)
            and self.event == event
        )

    def compiled_condition(self) -> Condition | None:
        return compile_condition(self.condition)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["recipients"] = list(self.recipients)
        for k in ("created_at", "updated_at"):
            d[k] = d[k].isoformat() + "Z" if d[k] else None
        return d


def check_flow_type(value: str) -> str:
    if value not in FLOW_TYPES:
        raise ValidationError(f"unknown flow type {value!r}: choose one of {', '.join(FLOW_TYPES)}")
    return value


def check_label(value: Any, what: str, max_len: int = 200) -> str:
    """A flow name or event: non-empty one-line text."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{what} must not be empty")
    value = value.strip()
    if _CONTROL.search(value):
        raise ValidationError(f"{what} must be one line without control characters")
    if len(value) > max_len:
        raise ValidationError(f"{what} is longer than {max_len} characters")
    return value


def parse_recipient(spec: str) -> tuple[str, str]:
    """``("address", addr)``, ``("field", name)`` or ``("role", role)`` for one recipient."""
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("field", "role"):
        rest = rest.strip()
        if kind == "field":
            if not _FIELD.fullmatch(rest):
                raise ValidationError(f"recipient {spec!r}: {rest!r} is not a field name")
            return "field", rest
        return "role", directory.check_role(rest)
    return "address", accounts.check_address(spec.strip(), f"recipient {spec!r}")


def _check_recipients(ws: Workspace, values: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    out: list[str] = []
    known_roles: dict[str, list[str]] | None = None
    for raw in values:
        if not isinstance(raw, str):
            raise ValidationError(f"recipient {raw!r} must be text")
        kind, value = parse_recipient(raw)
        if kind == "role":
            known_roles = known_roles if known_roles is not None else directory.roles(ws)
            if value not in known_roles:
                raise ValidationError(
                    f"recipient role:{value}: no one holds role {value!r} in the directory"
                    " (sysmail-ops directory add)"
                )
        spec = value if kind == "address" else f"{kind}:{value}"
        if spec.lower() in (s.lower() for s in out):
            raise ValidationError(f"recipient {spec} is listed twice")
        out.append(spec)
    if not out:
        raise ValidationError("a rule needs at least one recipient")
    return tuple(out)


def _validate(ws: Workspace, r: Rule) -> Rule:
    name = check_name(r.name, "rule name")
    flow_type = check_flow_type(r.flow_type)
    flow_name = check_label(r.flow_name, "flow name")
    event = check_label(r.event, "event", 100)
    condition = (r.condition or "").strip() or None
    compile_condition(condition)
    accounts.get_account(ws, r.account)
    templates.get_template(ws, r.template)
    recipients = _check_recipients(ws, r.recipients)
    description = (r.description or "").strip() or None
    if description and (len(description) > 500 or _CONTROL.search(description)):
        raise ValidationError("description must be one line of at most 500 characters")
    return replace(
        r,
        name=name,
        flow_type=flow_type,
        flow_name=flow_name,
        event=event,
        condition=condition,
        recipients=recipients,
        description=description,
        enabled=bool(r.enabled),
    )


# --- storage ------------------------------------------------------------------------------

_COLUMNS = tuple(f.name for f in fields(Rule))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM workflow_rules"  # noqa: S608 - our column names


def _row(r: Rule) -> list[Any]:
    return [list(r.recipients) if c == "recipients" else getattr(r, c) for c in _COLUMNS]


def _from_row(row: Sequence[Any]) -> Rule:
    d = dict(zip(_COLUMNS, row, strict=True))
    d["recipients"] = tuple(d["recipients"])
    return Rule(**d)


def list_rules(ws: Workspace, *, enabled_only: bool = False) -> list[Rule]:
    """Every rule (or the enabled ones), by name."""
    with ws.store.connect() as con:
        return fetch_rules(con, enabled_only=enabled_only)


def fetch_rules(con: Any, *, enabled_only: bool = False) -> list[Rule]:
    """``list_rules`` on an open connection (notifying reads rules and roles in one visit)."""
    where = " WHERE enabled" if enabled_only else ""
    return [_from_row(r) for r in con.execute(_SELECT + where + " ORDER BY name").fetchall()]


def get_rule(ws: Workspace, name: str) -> Rule:
    with ws.store.connect() as con:
        row = con.execute(_SELECT + " WHERE name = ?", [name]).fetchone()
    if row is None:
        raise NotFoundError(f"no rule named {name!r}")
    return _from_row(row)


def add_rule(
    ws: Workspace,
    name: str,
    *,
    flow_type: str,
    flow_name: str,
    event: str,
    account: str,
    template: str,
    recipients: Iterable[str] | str,
    condition: str | None = None,
    enabled: bool = True,
    description: str | None = None,
) -> Rule:
    """Save a new rule after checking everything it names; nothing is written on bad input."""
    now = utcnow()
    r = _validate(
        ws,
        Rule(
            name=name,
            flow_type=flow_type,
            flow_name=flow_name,
            event=event,
            account=account,
            template=template,
            recipients=recipients,  # type: ignore[arg-type]  # checked into a tuple
            condition=condition,
            enabled=enabled,
            description=description,
            created_at=now,
            updated_at=now,
        ),
    )
    with ws.store.transaction() as con:
        insert_named(con, "workflow_rules", _COLUMNS, _row(r), "rule")
        after = audit.row(con, "workflow_rules", name=r.name)
        audit.record(con, "rule", r.name, "add", None, after)
    return r


_EDITABLE = {f.name for f in fields(Rule)} - {"name", "created_at", "updated_at"}


def edit_rule(ws: Workspace, name: str, /, **changes: Any) -> Rule:
    """Change some fields (``None`` leaves one as it is, ``condition=""`` drops it)."""
    unknown = set(changes) - _EDITABLE
    if unknown:
        raise ValidationError(
            f"cannot edit {', '.join(sorted(unknown))} of a rule: choose from"
            f" {', '.join(sorted(_EDITABLE))}"
        )
    given = {k: v for k, v in changes.items() if v is not None}
    if not given:
        raise ValidationError(f"nothing to change in rule {name!r}")
    current = get_rule(ws, name)
    r = _validate(ws, replace(current, **given, updated_at=utcnow()))
    with ws.store.transaction() as con:
        before = audit.row(con, "workflow_rules", name=name)
        update_named(con, "workflow_rules", _COLUMNS, _row(r))
        after = audit.row(con, "workflow_rules", name=name)
        audit.record(con, "rule", name, "edit", before, after)
    return r


def _set_enabled(ws: Workspace, name: str, enabled: bool) -> Rule:
    get_rule(ws, name)
    with ws.store.transaction() as con:
        before = audit.row(con, "workflow_rules", name=name)
        con.execute(
            "UPDATE workflow_rules SET enabled = ?, updated_at = ? WHERE name = ?",
            [enabled, utcnow(), name],
        )
        after = audit.row(con, "workflow_rules", name=name)
        audit.record(con, "rule", name, "resume" if enabled else "pause", before, after)
    return get_rule(ws, name)


def pause_rule(ws: Workspace, name: str) -> Rule:
    """Stop a rule from matching events until resumed."""
    return _set_enabled(ws, name, False)


def resume_rule(ws: Workspace, name: str) -> Rule:
    """Let a paused rule match events again (events received meanwhile are not replayed)."""
    return _set_enabled(ws, name, True)


def remove_rule(ws: Workspace, name: str) -> None:
    """Delete a rule; the events it matched keep its name in their history."""
    get_rule(ws, name)
    with ws.store.transaction() as con:
        before = audit.row(con, "workflow_rules", name=name)
        con.execute("DELETE FROM workflow_rules WHERE name = ?", [name])
        audit.record(con, "rule", name, "remove", before, None)
