"""Post-action notifications: events of workflows, approval flows and business flows.

Another system tells us "approval AP-7 of flow travel was approved"
(``notify``, ``notify_many`` or ``sysmail-ops notify --events FILE.jsonl``);
every enabled rule (``rules``) whose flow type, flow name and event match and
whose condition holds mails its recipients through the sending pipeline with
the key ``event:ID:rule:RULE:ADDRESS``, so a redelivered event never mails
twice (the log says ``skipped_duplicate``). Every event received gets a row
in ``workflow_events`` with what became of it: the rules it matched and each
send's status, that it matched no rule, or its error. A bad event (missing
fields, unknown flow type, a recipient field without a valid address, a
condition that cannot be evaluated) sends nothing and is reported; the other
events of the batch still go out.

Importing this module registers the rules' usage checks: a system email or a
template a rule uses cannot be removed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import pandas as pd

from sysmail_ops import accounts, directory, sending, templates
from sysmail_ops.conditions import Condition, ConditionError
from sysmail_ops.errors import SysmailError, ValidationError
from sysmail_ops.rules import (
    FLOW_TYPES,
    Rule,
    add_rule,
    check_flow_type,
    check_label,
    edit_rule,
    get_rule,
    list_rules,
    parse_recipient,
    pause_rule,
    remove_rule,
    resume_rule,
)
from sysmail_ops.sending import Delivery, SendOptions
from sysmail_ops.store import utcnow
from sysmail_ops.workspace import Workspace

__all__ = [
    "FLOW_TYPES",
    "Event",
    "EventResult",
    "Rule",
    "SendStatus",
    "add_rule",
    "edit_rule",
    "get_rule",
    "list_events",
    "list_rules",
    "notify",
    "notify_jsonl",
    "notify_many",
    "pause_rule",
    "remove_rule",
    "resume_rule",
]

EVENT_FIELDS = ("id", "flow_type", "flow_name", "event", "object_type", "object_id")
OPTIONAL_FIELDS = ("occurred_at", "record")
EVENT_STATUSES = ("notified", "no_match", "deferred", "failed", "error")
CHUNK = 500  # events per round: one send per rule, one store visit to record them


@dataclass(frozen=True)
class Event:
    """One thing that happened in a flow, with the record its templates render."""

    id: str
    flow_type: str
    flow_name: str
    event: str
    object_type: str
    object_id: str
    record: Mapping[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None  # naive UTC; None: when it was received

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """Check an event given as a mapping (a JSON line); ValidationError names the problem."""
        if not isinstance(data, Mapping):
            raise ValidationError(f"an event must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(map(str, data)) - set(EVENT_FIELDS) - set(OPTIONAL_FIELDS))
        if unknown:
            raise ValidationError(
                f"unknown event field(s) {', '.join(unknown)}: an event has "
                f"{', '.join(EVENT_FIELDS + OPTIONAL_FIELDS)}"
            )
        missing = [f for f in EVENT_FIELDS if data.get(f) in (None, "")]
        if missing:
            raise ValidationError(f"event is missing {', '.join(missing)}")
        values = {
            f: check_label(str(data[f]) if isinstance(data[f], int) else data[f], f)
            for f in EVENT_FIELDS
        }
        check_flow_type(values["flow_type"])
        record = data.get("record") or {}
        if not isinstance(record, Mapping) or not all(isinstance(k, str) for k in record):
            raise ValidationError("record must be a JSON object of field names to values")
        return cls(**values, record=dict(record), occurred_at=_when(data.get("occurred_at")))

    def context(self) -> dict[str, Any]:
        """What conditions and templates see: the event's own fields, then the record's."""
        meta = {
            "event_id": self.id,
            "flow_type": self.flow_type,
            "flow_name": self.flow_name,
            "event": self.event,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "occurred_at": self.occurred_at.isoformat() if self.occurred_at else None,
        }
        return {**meta, **self.record}


def _when(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(
                f"occurred_at {value!r} is not an ISO 8601 time (2026-11-28T10:00:00Z)"
            ) from None
    else:
        raise ValidationError(f"occurred_at must be an ISO 8601 text, got {type(value).__name__}")
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt


@dataclass(frozen=True)
class SendStatus:
    """One send of one rule to one recipient, and what the pipeline made of it."""

    rule: str
    recipient: str
    key: str
    status: str  # sent, skipped_duplicate, failed, deferred, dry_run


@dataclass
class EventResult:
    """What became of one event."""

    event_id: str | None
    status: str  # one of EVENT_STATUSES
    matched: list[str] = field(default_factory=list)
    sends: list[SendStatus] = field(default_factory=list)
    error: str | None = None
    source: str = "api"

    @property
    def ok(self) -> bool:
        """Nothing to act on: mailed (or already mailed), or no rule wanted it."""
        return self.status in ("notified", "no_match")

    def summary(self) -> str:
        who = self.event_id or self.source
        if self.error:
            return f"{who}: {self.status}: {self.error}"
        if not self.matched:
            return f"{who}: matched no rule"
        sends = ", ".join(f"{s.rule} -> {s.recipient} {s.status}" for s in self.sends)
        return f"{who}: {self.status} ({sends})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def key_for(event_id: str, rule: str, recipient: str) -> str:
    """The delivery key that makes a redelivered event mail nobody twice."""
    return f"event:{event_id}:rule:{rule}:{recipient}"


# --- intake -------------------------------------------------------------------------------


@dataclass
class _Intake:
    source: str
    event: Event | None = None
    raw: Mapping[str, Any] | None = None
    error: str | None = None


def _intake(item: Any, source: str) -> _Intake:
    if isinstance(item, Event):
        item = {**asdict(item), "occurred_at": item.occurred_at}
    raw = item if isinstance(item, Mapping) else None
    try:
        return _Intake(source, Event.from_dict(item), raw)
    except ValidationError as exc:
        return _Intake(source, None, raw, str(exc))


def _lines(lines: Iterable[str], source: str) -> Iterator[_Intake]:
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source} line {n}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            yield _Intake(where, error=f"{where}: not valid JSON: {exc.msg}")
            continue
        got = _intake(data, where)
        if got.error:
            got.error = f"{where}: {got.error}"
        yield got


# --- matching and sending -----------------------------------------------------------------


class _Notifier:
    """The enabled rules, their conditions and the directory, loaded once per call."""

    def __init__(self, ws: Workspace, options: SendOptions | None):
        self.ws = ws
        self.options = options
        self.rules = list_rules(ws, enabled_only=True)
        self.conditions: dict[str, Condition | None] = {}
        self.broken: dict[str, str] = {}
        self.fields: dict[str, frozenset[str]] = {}
        for r in self.rules:
            try:
                self.conditions[r.name] = r.compiled_condition()
                self.fields[r.name] = templates.compile_template(
                    templates.get_template(ws, r.template)
                ).fields_used
            except SysmailError as exc:
                self.broken[r.name] = str(exc)
        self.roles = directory.roles(ws)

    def plan(self, ev: Event) -> tuple[list[str], list[tuple[Rule, Delivery]]]:
        """The rules an event matches and one delivery per recipient; raises on bad input."""
        ctx = ev.context()
        matched: list[str] = []
        planned: list[tuple[Rule, Delivery]] = []
        for rule in self.rules:
            if not rule.matches(ev.flow_type, ev.flow_name, ev.event):
                continue
            if rule.name in self.broken:
                raise ValidationError(f"rule {rule.name}: {self.broken[rule.name]}")
            cond = self.conditions[rule.name]
            try:
                if cond is not None and not cond.evaluate(ctx):
                    continue
            except ConditionError as exc:
                raise ValidationError(f"rule {rule.name}: condition: {exc}") from None
            missing = sorted(self.fields[rule.name] - ctx.keys())
            if missing:
                listed = ", ".join(f"`{f}`" for f in missing)
                raise ValidationError(
                    f"rule {rule.name}: template {rule.template} needs {listed}, missing from "
                    "the record"
                )
            matched.append(rule.name)
            related = (ev.object_type, ev.object_id)
            for addr in self._recipients(rule, ctx):
                key = key_for(ev.id, rule.name, addr)
                planned.append((rule, Delivery([addr], ctx, key=key, related=related)))
        return matched, planned

    def _recipients(self, rule: Rule, ctx: Mapping[str, Any]) -> list[str]:
        out: dict[str, str] = {}
        for spec in rule.recipients:
            kind, value = parse_recipient(spec)
            if kind == "address":
                found = [value]
            elif kind == "role":
                found = self.roles.get(value, [])
                if not found:
                    raise ValidationError(f"rule {rule.name}: no one holds role {value!r}")
            else:
                found = _field_addresses(rule, value, ctx)
            for addr in found:
                out.setdefault(addr.lower(), addr)
        return list(out.values())

    def send(
        self, rule: Rule, items: list[tuple[int, Delivery]]
    ) -> tuple[list[str], dict[int, str]]:
        """Send one rule's deliveries with one sender; returns batch ids and per-event errors.

        A delivery the pipeline refuses (a template that cannot render this record)
        would stop the whole group, so the group is then sent event by event.
        """
        try:
            result = sending.send_deliveries(
                self.ws,
                rule.account,
                rule.template,
                [d for _, d in items],
                use_case=rule.flow_type,
                options=self.options,
            )
            return [result.batch_id], {}
        except ValidationError as exc:
            events = sorted({n for n, _ in items})
            if len(events) == 1:
                return [], {events[0]: f"rule {rule.name}: {exc}"}
            batches: list[str] = []
            errors: dict[int, str] = {}
            for n in events:
                b, e = self.send(rule, [(m, d) for m, d in items if m == n])
                batches += b
                errors.update(e)
            return batches, errors
        except SysmailError as exc:  # the account cannot send: a login, a certificate, a key
            return [], {n: f"rule {rule.name}: {exc}" for n, _ in items}


def _field_addresses(rule: Rule, name: str, ctx: Mapping[str, Any]) -> list[str]:
    if name not in ctx:
        raise ValidationError(f"rule {rule.name}: field `{name}` is missing from the record")
    value = ctx[name]
    values = value if isinstance(value, list) else [value]
    if not values or any(not isinstance(v, str) or not v.strip() for v in values):
        raise ValidationError(f"rule {rule.name}: field `{name}` holds no address: {value!r}")
    try:
        return [accounts.check_address(v.strip(), f"field `{name}`") for v in values]
    except ValidationError as exc:
        raise ValidationError(f"rule {rule.name}: {exc}") from None


def _statuses(ws: Workspace, batches: Sequence[str]) -> dict[tuple[str, str], str]:
    """(key, recipient) -> the last status the send log holds for it in these batches."""
    if not batches:
        return {}
    with ws.store.connect() as con:
        rows = con.execute(
            "SELECT delivery_key, recipient, status FROM send_log "
            "WHERE list_contains(?, batch_id) "
            "QUALIFY row_number() OVER (PARTITION BY delivery_key, recipient "
            "ORDER BY batch_id DESC, seq DESC) = 1",
            [list(batches)],
        ).fetchall()
    return {(k, r.lower()): s for k, r, s in rows}


def _round(notifier: _Notifier, intakes: list[_Intake]) -> list[EventResult]:
    """Plan every event, send per rule, read back each send's status, record the events."""
    results: list[EventResult] = []
    by_rule: dict[str, tuple[Rule, list[tuple[int, Delivery]]]] = {}
    for n, item in enumerate(intakes):
        ev = item.event
        res = EventResult(ev.id if ev else _raw_id(item.raw), "error", source=item.source)
        results.append(res)
        if ev is None:
            res.error = item.error
            continue
        try:
            res.matched, planned = notifier.plan(ev)
        except ValidationError as exc:
            res.error = str(exc)
            continue
        res.status = "notified" if res.matched else "no_match"
        for rule, d in planned:
            by_rule.setdefault(rule.name, (rule, []))[1].append((n, d))
    batches: list[str] = []
    for rule, items in by_rule.values():
        sent, errors = notifier.send(rule, items)
        batches += sent
        for n, message in errors.items():
            results[n].status, results[n].error = "error", message
    statuses = _statuses(notifier.ws, batches)
    for rule, items in by_rule.values():
        for n, d in items:
            assert d.key is not None
            addr = d.to[0]
            status = statuses.get((d.key, addr.lower()), "not sent")
            results[n].sends.append(SendStatus(rule.name, addr, d.key, status))
    for res in results:
        if res.status != "error" and res.matched:
            res.status = _event_status({s.status for s in res.sends})
    _record(notifier.ws, intakes, results)
    return results


def _event_status(got: set[str]) -> str:
    if got - {"sent", "skipped_duplicate", "dry_run", "deferred"}:
        return "failed"
    return "deferred" if "deferred" in got else "notified"


def _raw_id(raw: Mapping[str, Any] | None) -> str | None:
    value = raw.get("id") if raw else None
    return str(value)[:200] if isinstance(value, str | int) and str(value).strip() else None


def _process(
    ws: Workspace, intakes: Iterable[_Intake], options: SendOptions | None
) -> list[EventResult]:
    notifier = _Notifier(ws, options)
    results: list[EventResult] = []
    it = iter(intakes)
    while chunk := list(islice(it, CHUNK)):
        results += _round(notifier, chunk)
    return results


def notify(
    ws: Workspace, event: Event | Mapping[str, Any], *, options: SendOptions | None = None
) -> EventResult:
    """Handle one event: mail what its matching rules ask for, record it, say what happened.

    A bad event does not raise: its result (and its row in the events table)
    carries the error.
    """
    return notify_many(ws, [event], options=options)[0]


def notify_many(
    ws: Workspace,
    events: Iterable[Event | Mapping[str, Any]],
    *,
    options: SendOptions | None = None,
    source: str = "api",
) -> list[EventResult]:
    """Handle many events: one sender per rule per round of up to 500 events.

    Returns one result per event, in order; bad events carry their error and
    the others still go out.
    """
    return _process(ws, (_intake(e, f"{source} #{n}") for n, e in enumerate(events, 1)), options)


def notify_jsonl(
    ws: Workspace,
    lines: Iterable[str],
    *,
    source: str = "stdin",
    options: SendOptions | None = None,
) -> list[EventResult]:
    """Handle one event per JSON line (what ``sysmail-ops notify`` reads).

    A line that is not JSON, not an object or not a valid event is an error
    for that line only; blank lines are skipped.
    """
    return _process(ws, _lines(lines, source), options)


# --- the events table ---------------------------------------------------------------------

_EVENT_COLUMNS = (
    "event_id", "flow_type", "flow_name", "event", "object_type", "object_id", "occurred_at",
    "received_at", "source", "record", "status", "matched_rules", "error", "sends",
)  # fmt: skip


def _record(ws: Workspace, intakes: list[_Intake], results: list[EventResult]) -> None:
    """One row per event received, in one store visit."""
    now = utcnow()
    rows = []
    for item, res in zip(intakes, results, strict=True):
        ev, raw = item.event, item.raw or {}

        def text(name: str, ev: Event | None = ev, raw: Mapping[str, Any] = raw) -> str | None:
            value = getattr(ev, name) if ev else raw.get(name)
            return str(value)[:200] if isinstance(value, str | int) else None

        record = ev.record if ev else raw.get("record")
        rows.append(
            {
                "event_id": res.event_id,
                "flow_type": text("flow_type"),
                "flow_name": text("flow_name"),
                "event": text("event"),
                "object_type": text("object_type"),
                "object_id": text("object_id"),
                "occurred_at": (ev.occurred_at or now) if ev else None,
                "received_at": now,
                "source": item.source,
                "record": json.dumps(record, default=str) if isinstance(record, Mapping) else None,
                "status": res.status,
                "matched_rules": json.dumps(res.matched),
                "error": res.error,
                "sends": json.dumps([asdict(s) for s in res.sends]),
            }
        )
    frame = pd.DataFrame(rows, columns=list(_EVENT_COLUMNS)).astype(
        {c: "object" for c in _EVENT_COLUMNS if c not in ("occurred_at", "received_at")}
    )
    frame["occurred_at"] = pd.to_datetime(frame["occurred_at"])
    cols = ", ".join(_EVENT_COLUMNS)
    select = ", ".join(
        "from_json(matched_rules, '[\"VARCHAR\"]')"
        if c == "matched_rules"
        else f"{c}::" + ("TIMESTAMP" if c.endswith("_at") else "VARCHAR")
        for c in _EVENT_COLUMNS
    )
    with ws.store.transaction() as con:
        con.register("incoming_events", frame)
        con.execute(f"INSERT INTO workflow_events ({cols}) SELECT {select} FROM incoming_events")  # noqa: S608
        con.unregister("incoming_events")


def list_events(
    ws: Workspace,
    *,
    status: str | Sequence[str] | None = None,
    event_id: str | None = None,
    limit: int | None = 100,
) -> list[dict[str, Any]]:
    """The events received, newest first, with what became of each."""
    where: list[str] = []
    params: list[Any] = []
    if status:
        wanted = [status] if isinstance(status, str) else list(status)
        bad = [s for s in wanted if s not in EVENT_STATUSES]
        if bad:
            raise ValidationError(
                f"unknown event status {', '.join(bad)}: choose from {', '.join(EVENT_STATUSES)}"
            )
        where.append("list_contains(?, status)")
        params.append(wanted)
    if event_id:
        where.append("event_id = ?")
        params.append(event_id)
    sql = f"SELECT id, {', '.join(_EVENT_COLUMNS)} FROM workflow_events"  # noqa: S608
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC"
    if limit is not None:
        if limit < 1:
            raise ValidationError("limit must be at least 1")
        sql += f" LIMIT {int(limit)}"
    with ws.store.connect() as con:
        cur = con.execute(sql, params)
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    for r in rows:
        r["record"] = json.loads(r["record"]) if r["record"] else None
        r["sends"] = json.loads(r["sends"])
        r["matched_rules"] = list(r["matched_rules"])
    return rows
