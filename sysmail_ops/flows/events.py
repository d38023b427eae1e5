"""Flow events: what another system tells us happened, and the table of what became of each.

An event names its flow type, flow name and event, the object it is about
(type and id), when it occurred, and a record: the fields conditions and
templates read. It arrives as a mapping (a JSON line) and is checked here;
``workflows`` matches it against the rules and sends. Every event received,
good or bad, gets one row in ``workflow_events`` with its outcome: the rules
it matched and each send's status by key, that it matched no rule, or its
error.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import ValidationError
from sysmail_ops.flows.rules import check_flow_type, check_label
from sysmail_ops.inputs import OverCapError, capped_lines, parse_json, size_text
from sysmail_ops.store.database import utcnow

EVENT_FIELDS = ("id", "flow_type", "flow_name", "event", "object_type", "object_id")
OPTIONAL_FIELDS = ("occurred_at", "record")
EVENT_STATUSES = ("notified", "no_match", "deferred", "failed", "error", "sending")
CLAIM = "being sent by "  # the error column of a 'sending' row: who holds the claim
FOREIGN_CLAIM_LEASE = timedelta(minutes=30)  # a claim from another host, after which it lapses
MAX_EVENT_LINE_BYTES = 1024 * 1024  # one event line; a real event is a few hundred bytes
MAX_EVENTS_BYTES = 64 * 1024 * 1024  # one ``notify`` input: larger batches go in several calls
_HOST = socket.gethostname()


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
        values = {}
        for f in EVENT_FIELDS:
            v = data[f]
            if isinstance(v, bool) or not isinstance(v, str | int):
                raise ValidationError(f"{f} must be text, got {type(v).__name__}")
            values[f] = check_label(str(v), f)
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
    try:
        return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is before the year 1 in UTC
        raise ValidationError(f"occurred_at {value!r} is out of range in UTC") from None


@dataclass(frozen=True)
class SendStatus:
    """One send of one rule to one recipient, and what the pipeline made of it."""

    rule: str
    recipient: str
    key: str
    status: str  # sent, skipped_duplicate, failed, deferred, dry_run; "not sent" after an error


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
            where = f" ({self.source})" if self.event_id else ""
            return f"{who}{where}: {self.status}: {self.error}"
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
class Intake:
    source: str
    event: Event | None = None
    raw: Mapping[str, Any] | None = None
    error: str | None = None


def intake(item: Any, source: str) -> Intake:
    if isinstance(item, Event):
        item = {**asdict(item), "occurred_at": item.occurred_at}
    raw = item if isinstance(item, Mapping) else None
    try:
        return Intake(source, Event.from_dict(item), raw)
    except ValidationError as exc:
        return Intake(source, None, raw, str(exc))


def parse_lines(lines: Iterable[str | bytes], source: str) -> Iterator[Intake]:
    """One intake per JSON line; a line that is not UTF-8, JSON or an event is its own error.

    So is a line longer than ``MAX_EVENT_LINE_BYTES``, nested deeper than
    ``inputs.MAX_JSON_DEPTH`` or holding a number of thousands of digits: the
    next line is read as usual. A file object is read line by line under these
    caps, never whole; past ``MAX_EVENTS_BYTES`` one last error says so and the
    reading stops (an input that never ends, such as ``/dev/zero``).
    """
    try:
        for n, raw in enumerate(
            capped_lines(lines, max_line=MAX_EVENT_LINE_BYTES, max_total=MAX_EVENTS_BYTES), 1
        ):
            where = f"{source} line {n}"
            if raw is None:
                yield Intake(
                    where, error=f"a line is longer than {size_text(MAX_EVENT_LINE_BYTES)}"
                )
                continue
            try:
                line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            except UnicodeDecodeError:
                yield Intake(where, error="not UTF-8 text")
                continue
            if not line.strip():
                continue
            try:
                data = parse_json(line)
            except ValidationError as exc:
                yield Intake(where, error=str(exc))
                continue
            yield intake(data, where)
    except OverCapError as exc:
        yield Intake(
            source, error=f"stopped reading: the events are larger than {size_text(exc.cap)}"
        )


def raw_id(raw: Mapping[str, Any] | None) -> str | None:
    value = raw.get("id") if raw else None
    return str(value)[:200] if isinstance(value, str | int) and str(value).strip() else None


# --- the events table ---------------------------------------------------------------------

_EVENT_COLUMNS = (
    "event_id", "flow_type", "flow_name", "event", "object_type", "object_id", "occurred_at",
    "received_at", "source", "record", "status", "matched_rules", "error", "sends",
)  # fmt: skip
# Each column's type where it is not VARCHAR.
_EVENT_TYPES = {
    "occurred_at": "TIMESTAMP",
    "received_at": "TIMESTAMP",
    "matched_rules": "VARCHAR[]",
}


def record_events(con: Any, intakes: list[Intake], results: list[EventResult]) -> None:
    """One row per event received, inserted together on the caller's transaction.

    The columns go as lists, unnested by DuckDB: a DataFrame cost ~15 ms per call
    whatever its size, most of a micro-batch's time in ``serve``'s intake.
    """
    now = utcnow()
    columns: dict[str, list[Any]] = {c: [] for c in _EVENT_COLUMNS}
    for item, res in zip(intakes, results, strict=True):
        ev, raw = item.event, item.raw or {}

        def text(name: str, ev: Event | None = ev, raw: Mapping[str, Any] = raw) -> str | None:
            value = getattr(ev, name) if ev else raw.get(name)
            return str(value)[:200] if isinstance(value, str | int) else None

        record = ev.record if ev else raw.get("record")
        row = {
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
            "matched_rules": [str(m) for m in res.matched],
            "error": res.error,
            "sends": json.dumps([asdict(s) for s in res.sends]),
        }
        for c in _EVENT_COLUMNS:
            columns[c].append(row[c])
    select = ", ".join(f"unnest(?::{_EVENT_TYPES.get(c, 'VARCHAR')}[])" for c in _EVENT_COLUMNS)
    con.execute(
        f"INSERT INTO workflow_events ({', '.join(_EVENT_COLUMNS)}) SELECT {select}",
        [columns[c] for c in _EVENT_COLUMNS],
    )


# --- claims: one process sends an event at a time ------------------------------------------
#
# A claim is a 'sending' row of workflow_events, seen by every process. A caller that holds
# the store open (``serve``'s worker) may claim in memory instead (``claim_in_memory``):
# while it holds the file no other process can open it to look, so only this process's
# other threads need to see the claim, and ``claim`` does (``_unwritten``). Claim rows this
# process writes are counted: a caller claiming in memory goes back to rows after one.

_claims_lock = threading.Lock()
_unwritten: dict[str, tuple[str, datetime]] = {}  # event id -> holder, since (no row)
_rows_written = 0  # claims this process has written as rows


def claim_rows_written() -> int:
    return _rows_written


def lapsed_claims(con: Any) -> dict[str, list[int]] | None:
    """The claim rows in the store, by event id, when none is held by a live process
    (another thread of this one counts as live): rows left by processes that died
    mid-send, to be released as their events are claimed again. None when one is."""
    now = utcnow()
    lapsed: dict[str, list[int]] = {}
    for row_id, eid, by, at in con.execute(
        "SELECT id, event_id, error, received_at FROM workflow_events WHERE status = 'sending'"
    ).fetchall():
        if _holder(by, at, now):
            return None
        lapsed.setdefault(eid, []).append(row_id)
    return lapsed


def claim_in_memory(
    event_ids: Sequence[str], rows_written: int
) -> tuple[list[str], dict[str, str]] | None:
    """``claim`` without a row, for a caller that holds the store open (no other process
    can open it) and found no live claim in it when its hold began, ``rows_written``
    being ``claim_rows_written()`` then; the events claimed and those another thread
    holds. None when this process has written claim rows since: the caller claims with
    rows. The caller releases what the store held for the events (``lapsed_claims``).
    """
    now = utcnow()
    with _claims_lock:
        if _rows_written != rows_written:
            return None
        wanted = sorted(set(event_ids))
        held = _held_in_memory(wanted)
        mine = [eid for eid in wanted if eid not in held]
        for eid in mine:
            _unwritten.setdefault(eid, (me(), now))
        return mine, held


def release_in_memory(event_ids: Sequence[str]) -> None:
    with _claims_lock:
        for eid in event_ids:
            _unwritten.pop(eid, None)


def _held_in_memory(wanted: Sequence[str]) -> dict[str, str]:
    """Of ``wanted``, the events another thread of this process claimed in memory."""
    held = {}
    for eid in wanted:
        claimed = _unwritten.get(eid)
        if claimed is not None and claimed[0] != me():
            held[eid] = _held_by(*claimed)
    return held


def _holder(claimed_by: str | None, claimed_at: datetime, now: datetime) -> str:
    """Who holds a claim row: a live process, or another thread of this one; "" when it
    is this thread's own or left by a process that died (it has lapsed)."""
    holder = (claimed_by or "").removeprefix(CLAIM)
    return holder if holder != me() and _live(holder, claimed_at, now) else ""


def _held_by(holder: str, since: datetime) -> str:
    return f"{holder} since {since:%H:%M:%S}Z"


def me() -> str:
    """Who claims: host, process and thread."""
    return f"{_HOST}:{os.getpid()}:{threading.get_ident()}"


def _live(claimed_by: str, claimed_at: datetime, now: datetime) -> bool:
    host, _, rest = claimed_by.partition(":")
    pid = rest.partition(":")[0]
    if host != _HOST:
        return now - claimed_at < FOREIGN_CLAIM_LEASE
    try:
        os.kill(int(pid or 0), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def claim(con: Any, event_ids: Sequence[str], *, partial: bool) -> tuple[list[int], dict[str, str]]:
    """Mark events as being sent by this thread, unless a live process (or another thread
    of this one, with a row or in memory) already is.

    Returns the claim rows' ids and, for each event held elsewhere, who holds
    it; with ``partial=False`` nothing is claimed while any is held. DuckDB
    lets one process at a time open the store, so this check and insert
    cannot interleave with another process's.
    """
    global _rows_written
    wanted = sorted(set(event_ids))
    if not wanted:
        return [], {}
    now = utcnow()
    with _claims_lock:
        rows = con.execute(
            "SELECT id, event_id, error, received_at FROM workflow_events "
            "WHERE status = 'sending' AND list_contains(?, event_id)",
            [wanted],
        ).fetchall()
        held = _held_in_memory(wanted)
        lapsed: list[int] = []  # left by a process that died mid-send: its sends are in the log
        for row_id, eid, by, at in rows:
            holder = _holder(by, at, now)
            if holder:
                held[eid] = _held_by(holder, at)
            else:
                lapsed.append(row_id)
        mine = [eid for eid in wanted if eid not in held]
        if not mine or (held and not partial):
            return [], held
        release(con, lapsed)
        ids = con.execute(
            "INSERT INTO workflow_events (event_id, received_at, status, matched_rules, "
            "error, sends) SELECT unnest(?::VARCHAR[]), ?, 'sending', [], ?, '[]' RETURNING id",
            [mine, now, CLAIM + me()],
        ).fetchall()
        _rows_written += 1
    return [int(r[0]) for r in ids], held


def release(con: Any, claim_ids: Sequence[int]) -> None:
    if claim_ids:
        con.execute("DELETE FROM workflow_events WHERE list_contains(?, id)", [list(claim_ids)])


def list_events(
    ws: Workspace,
    *,
    status: str | Sequence[str] | None = None,
    event_id: str | None = None,
    rule: str | None = None,
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
    if rule:
        where.append("list_contains(matched_rules, ?)")
        params.append(rule)
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


def prune_events(ws: Workspace, before: datetime) -> int:
    """Delete event rows received before ``before`` (retention); claims in flight stay."""
    with ws.store.transaction() as con:
        row = con.execute(
            "SELECT count(*) FROM workflow_events WHERE received_at < ? AND status != 'sending'",
            [before],
        ).fetchone()
        con.execute(
            "DELETE FROM workflow_events WHERE received_at < ? AND status != 'sending'", [before]
        )
    return int(row[0]) if row else 0
