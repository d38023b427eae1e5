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

The package ``flows`` re-exports these functions beside the rules and events.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext, suppress
from itertools import islice
from typing import Any

from sysmail_ops.config import accounts, directory
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import SysmailError, ValidationError
from sysmail_ops.flows.conditions import Condition, ConditionError
from sysmail_ops.flows.events import (
    Event,
    EventResult,
    Intake,
    SendStatus,
    claim,
    intake,
    key_for,
    parse_lines,
    raw_id,
    record_events,
    release,
)
from sysmail_ops.flows.rules import (
    Rule,
    fetch_rules,
    parse_recipient,
)
from sysmail_ops.sending import batch as sending
from sysmail_ops.sending.batch import Delivery, SendOptions
from sysmail_ops.templates import catalog as templates

__all__ = ["CHUNK", "CLAIM_WAIT", "notify", "notify_jsonl", "notify_many"]
CHUNK = 2000  # events per round: one sender per rule, one store visit to record them
CLAIM_WAIT = 60.0  # seconds to wait for another process sending the same event

# --- matching and sending -----------------------------------------------------------------


class _Notifier:
    """The enabled rules, their conditions and the directory, loaded once per call."""

    def __init__(self, ws: Workspace, options: SendOptions | None, con: Any = None):
        self.ws = ws
        self.options = options
        with nullcontext(con) if con is not None else ws.store.connect() as c:  # one visit
            self.rules = fetch_rules(c, enabled_only=True)
            self.roles = directory.fetch_roles(c)
        self.conditions: dict[str, Condition | None] = {}
        self.recipients: dict[str, list[tuple[str, str]]] = {}
        self.broken: dict[str, str] = {}
        for r in self.rules:
            try:
                self.conditions[r.name] = r.compiled_condition()
                self.recipients[r.name] = [parse_recipient(spec) for spec in r.recipients]
            except SysmailError as exc:
                self.broken[r.name] = str(exc)
        self._fields: dict[str, frozenset[str]] = {}

    def fields(self, rule: Rule) -> frozenset[str]:
        """The record fields a rule's template reads; looked up when a rule first matches."""
        if rule.template not in self._fields:
            t = templates.get_template(self.ws, rule.template)
            self._fields[rule.template] = templates.compile_template(t).fields_used
        return self._fields[rule.template]

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
            try:
                needed = self.fields(rule)
            except SysmailError as exc:
                self.broken[rule.name] = str(exc)
                raise ValidationError(f"rule {rule.name}: {exc}") from None
            missing = sorted(needed - ctx.keys())
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
        for kind, value in self.recipients[rule.name]:
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
            bad = self._unrenderable(rule, items)
            if bad:  # the usual cause: drop those events, send the rest together
                good = [(n, d) for n, d in items if n not in bad]
                batches, errors = self.send(rule, good) if good else ([], {})
                return batches, {**bad, **errors}
            batches, errors = [], {}
            for n in events:  # something else: find the event, one at a time
                b, e = self.send(rule, [(m, d) for m, d in items if m == n])
                batches += b
                errors.update(e)
            return batches, errors
        except SysmailError as exc:  # the account cannot send: a login, a certificate, a key
            return [], {n: f"rule {rule.name}: {exc}" for n, _ in items}

    def _unrenderable(self, rule: Rule, items: list[tuple[int, Delivery]]) -> dict[int, str]:
        """The events whose record the rule's template cannot render, with why."""
        compiled = templates.compile_template(templates.get_template(self.ws, rule.template))
        budget = templates.render_budget(self.ws)
        bad: dict[int, str] = {}
        for n, d in items:
            if n not in bad:
                try:
                    compiled.render(d.record, budget)
                except SysmailError as exc:
                    bad[n] = f"rule {rule.name}: {exc}"
        return bad


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


def _statuses(con: Any, batches: Sequence[str]) -> dict[tuple[str, str], str]:
    """(key, recipient) -> what became of its first delivery in these batches.

    That is its last status other than ``skipped_duplicate`` (a deferred try
    then sent says ``sent``); when every row is a skip, it was delivered before.
    A repeat of the pair in the same batch (an event given twice) is a skip.
    """
    if not batches:
        return {}
    rows = con.execute(
        "SELECT delivery_key, recipient, arg_max(status, seq) FILTER "
        "(status != 'skipped_duplicate') FROM send_log WHERE list_contains(?, batch_id) "
        "GROUP BY delivery_key, recipient",
        [list(batches)],
    ).fetchall()
    return {(k, r.lower()): s or "skipped_duplicate" for k, r, s in rows}


def _start(notifier: _Notifier, item: Intake) -> tuple[EventResult, list[tuple[Rule, Delivery]]]:
    """An event's result so far and its planned deliveries: none for a bad event (its
    error) or one that no rule matches (``no_match``)."""
    ev = item.event
    res = EventResult(ev.id if ev else raw_id(item.raw), "error", source=item.source)
    if ev is None:
        res.error = item.error
        return res, []
    try:
        res.matched, planned = notifier.plan(ev)
    except ValidationError as exc:
        res.error = str(exc)
        return res, []
    res.status = "notified" if res.matched else "no_match"
    return res, planned


def _round(notifier: _Notifier, intakes: list[Intake]) -> list[EventResult]:
    """Plan every event, send per rule, read back each send's status, record the events."""
    results: list[EventResult] = []
    by_rule: dict[str, tuple[Rule, list[tuple[int, Delivery]]]] = {}
    for n, item in enumerate(intakes):
        res, planned = _start(notifier, item)
        results.append(res)
        for rule, d in planned:
            by_rule.setdefault(rule.name, (rule, []))[1].append((n, d))
    claims = _claim(notifier.ws, by_rule, results)
    try:
        batches: list[str] = []
        for rule, items in by_rule.values():
            sent, errors = notifier.send(rule, items)
            batches += sent
            for n, message in errors.items():
                results[n].status, results[n].error = "error", message
    except BaseException:
        with suppress(SysmailError), notifier.ws.store.transaction() as con:
            release(con, claims)
        raise
    with notifier.ws.store.transaction() as con:  # one visit: read the sends, record events
        release(con, claims)
        statuses = _statuses(con, batches)
        seen: set[tuple[str, str]] = set()
        for rule, items in by_rule.values():
            for n, d in items:
                assert d.key is not None
                addr, pair = d.to[0], (d.key, d.to[0].lower())
                status = "skipped_duplicate" if pair in seen else statuses.get(pair, "not sent")
                seen.add(pair)
                results[n].sends.append(SendStatus(rule.name, addr, d.key, status))
        for res in results:
            if res.status != "error" and res.matched:
                res.status = _event_status({s.status for s in res.sends})
        record_events(con, intakes, results)
    return results


def _claim(
    ws: Workspace,
    by_rule: dict[str, tuple[Rule, list[tuple[int, Delivery]]]],
    results: list[EventResult],
) -> list[int]:
    """Claim the events about to be sent; wait while another process sends one of them.

    An event delivered twice at once (a caller that retried too soon) is thus
    sent by one process; the other finds its mail delivered and skips it. After
    ``CLAIM_WAIT`` seconds the events still held elsewhere are errors and send
    nothing; the others go out.
    """
    ids = [results[n].event_id or "" for _, items in by_rule.values() for n, _ in items]
    deadline = time.monotonic() + CLAIM_WAIT
    delay = 0.05
    while True:
        last = time.monotonic() >= deadline
        with ws.store.transaction() as con:
            claims, held = claim(con, ids, partial=last)
        if not held:
            return claims
        if last:
            break
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    for name, (rule, items) in list(by_rule.items()):
        for n, _ in items:
            who = held.get(results[n].event_id or "")
            if who:
                results[n].status = "error"
                results[n].error = f"being sent by {who} (another process): deliver it again later"
        by_rule[name] = (rule, [(n, d) for n, d in items if results[n].event_id not in held])
    return claims


def _event_status(got: set[str]) -> str:
    if got - {"sent", "skipped_duplicate", "dry_run", "deferred"}:
        return "failed"
    return "deferred" if "deferred" in got else "notified"


def _process(
    ws: Workspace, intakes: Iterable[Intake], options: SendOptions | None
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
    """Handle many events: one sender per rule per round of up to 2,000 events.

    Returns one result per event, in order; bad events carry their error and
    the others still go out.
    """
    return _process(ws, (intake(e, f"{source} #{n}") for n, e in enumerate(events, 1)), options)


def notify_jsonl(
    ws: Workspace,
    lines: Iterable[str | bytes],
    *,
    source: str = "stdin",
    options: SendOptions | None = None,
) -> list[EventResult]:
    """Handle one event per JSON line (what ``sysmail-ops notify`` reads).

    A line that is not JSON, not an object or not a valid event is an error
    for that line only; blank lines are skipped.
    """
    return _process(ws, parse_lines(lines, source), options)
