"""Notify events in micro-batches over sending sessions kept between them (``serve``'s intake).

``notify_many`` is made for one call: it loads the rules, makes a sender per rule (the
account and template loaded, a journal, an SMTP connection), closes them at its end,
and visits the store a dozen times. The intake's worker notifies a few events many
times a second, so ``MicroBatcher`` keeps, from one micro-batch to the next:

- the enabled rules, their conditions and the role directory (``notifications._Notifier``);
- one ``sending.session.Session`` per (account, template, use case), with its SMTP
  connection, shared by the rules that use the same three;

and visits the store twice per micro-batch, one transaction each: before sending (the
claims, the delivery keys already sent) and after (the journals folded, the events
recorded, the caller's own rows). What it keeps is checked against a fingerprint of the
tables it came from (accounts, templates, rules, the role directory, settings); after
any change they are loaded again and new sessions opened. The check runs at each
micro-batch, or, for a caller that holds the store open (``notify(held=...)``), once
per hold and after each edit this process commits (``store.database.config_edits``):
no other process can edit them while the file is held.

It is the same pipeline as ``notify``: the same keys, claims, log, archive and events
table, and the same results (``EventResult``) for the same events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import SysmailError
from sysmail_ops.flows.events import (
    EventResult,
    Intake,
    SendStatus,
    claim,
    claim_in_memory,
    claim_rows_written,
    lapsed_claims,
    record_events,
    release,
    release_in_memory,
)
from sysmail_ops.flows.notifications import _event_status, _Notifier, _start
from sysmail_ops.flows.rules import Rule
from sysmail_ops.records import sendlog
from sysmail_ops.sending.delivery import Delivery
from sysmail_ops.sending.engine import SendOptions
from sysmail_ops.sending.session import IDLE_CLOSE, Session
from sysmail_ops.store.database import config_edits

__all__ = ["FINGERPRINT", "MicroBatcher"]

# What the kept rules and sessions were loaded from; any edit changes one of these.
FINGERPRINT = (
    "SELECT (SELECT (count(*), max(updated_at)) FROM accounts), "
    "(SELECT (count(*), max(created_at)) FROM templates), "
    "(SELECT (count(*), max(updated_at)) FROM workflow_rules), "
    "(SELECT (count(*), bit_xor(hash(role, name, address))) FROM role_directory), "
    "(SELECT (count(*), max(updated_at)) FROM settings)"
)
ORPHANS_EVERY = 1.0  # seconds between looks for journals of dead processes to fold

_Key = tuple[str, str, str]  # account, template, use case
_Planned = tuple[int, Rule, Delivery]  # the event's index, the rule, one delivery


class MicroBatcher:
    """Notifies lists of events, keeping rules and sending sessions between calls.

    One thread uses it at a time (the intake's worker). ``close`` ends the sessions.
    """

    def __init__(self, ws: Workspace, options: SendOptions | None = None):
        self.ws = ws
        self.options = options or SendOptions()
        self._fingerprint: Any = None
        self._notifier: _Notifier | None = None
        self._sessions: dict[_Key, Session] = {}
        self._unfolded: list[Session] = []  # a micro-batch whose fold has not committed yet
        self._orphans_at = 0.0
        self._held: object = None  # the caller's hold of the store at the last call
        self._edits = -1  # config_edits() when the fingerprint was last taken
        # Claims in memory in this hold (see events): claim_rows_written() when it began,
        # or None when claims are rows (no hold, or claims in the store when it began).
        self._rows_written: int | None = None
        self._lapsed: dict[str, list[int]] = {}  # claim rows of dead processes, by event

    @property
    def connections(self) -> int:
        """SMTP connections the current sessions opened (tests and benchmarks read it)."""
        return sum(s.connections for s in self._sessions.values())

    def notify(
        self,
        intakes: Sequence[Intake],
        record: Callable[[Any, list[EventResult | None]], None] | None = None,
        *,
        held: object = None,
    ) -> list[EventResult | None]:
        """Notify ``intakes`` as ``notify_many`` would; one result each, in order.

        An event another process is sending right now (its claim) is left alone: its
        result is None, for the caller to offer again later. ``record(con, results)``
        writes the caller's own rows on the transaction that records the events (no
        configuration). ``held``: the caller holds the store open for the whole call and
        names that hold (the same value while it lasts), so the configuration is looked
        at only when a hold begins or this process has edited it since (see the module).
        Raises only what is no event's fault (the store busy) or unexpected.
        """
        begun = held is not None and held != self._held  # another process may have been here
        new_hold = held is None or begun  # no hold: every call looks as a new hold would
        if begun or time.monotonic() - self._orphans_at > ORPHANS_EVERY:
            sendlog.fold_orphans(self.ws)  # a dead process's sends, before the lookup
            self._orphans_at = time.monotonic()
        results: list[EventResult | None] = []
        edits, written = config_edits(), claim_rows_written()  # before the snapshot
        in_memory: list[str] = []
        try:
            with self.ws.store.transaction(config=False) as con:  # before sending: one visit
                self._fold(con)
                if new_hold or edits != self._edits or self._notifier is None:
                    self._refresh(con)
                    self._edits = edits  # an edit committed after the count is seen next time
                if new_hold:
                    lapsed = None if held is None else lapsed_claims(con)
                    self._rows_written = None if lapsed is None else written
                    self._lapsed = lapsed or {}
                self._held = held  # looked at in this hold
                groups = self._plan(intakes, results)
                ids = sorted({_id(results, n) for items in groups.values() for n, _, _ in items})
                claims, in_memory, elsewhere = self._claim(con, ids)
                for items in groups.values():
                    items[:] = [p for p in items if _id(results, p[0]) not in elsewhere]
                for n, res in enumerate(results):
                    if res is not None and res.event_id in elsewhere:
                        results[n] = None
                keys = [d.key for items in groups.values() for _, _, d in items if d.key]
                delivered = sendlog.delivered(self.ws, keys, con=con)
        except BaseException:
            release_in_memory(in_memory)  # as claim rows roll back with the transaction
            self._held = None  # what it looked at may have rolled back: look again
            raise
        self._finish_folded()
        try:
            for key, items in groups.items():
                if items:
                    self._send(key, items, results, delivered)
        except BaseException:
            # What went out is journalled: fold it (the next lookup must see it), free the
            # events, and let the caller decide about the events. The sessions start anew.
            for s in {*self._sessions.values(), *self._unfolded}:
                s.abandon()
            self._sessions.clear()
            try:
                with self.ws.store.transaction(config=False) as con:
                    self._fold(con)
                    release(con, claims)
                self._finish_folded()
                release_in_memory(in_memory)
            except Exception:  # noqa: S110 - folded at the next visit; our claims stay ours
                pass  # until this thread claims these events again
            raise
        with self.ws.store.transaction(config=False) as con:  # after sending: one visit
            self._fold(con)
            release(con, claims)
            done = [(i, r) for i, r in zip(intakes, results, strict=True) if r is not None]
            for _item, res in done:
                if res.status != "error" and res.matched:
                    res.status = _event_status({s.status for s in res.sends})
            if done:
                record_events(con, [i for i, _ in done], [r for _, r in done])
            if record is not None:
                record(con, results)
        # Committed: the claims go, as claim rows would have with it. (Had it failed, this
        # thread would keep them, as a claim row stays, until it claims the events again.)
        release_in_memory(in_memory)
        self._finish_folded()
        return results

    def close_idle(self, idle: float = IDLE_CLOSE) -> None:
        """Close the SMTP connections unused for ``idle`` seconds (reopened when needed)."""
        for s in self._sessions.values():
            s.close_idle(idle)

    def close(self) -> None:
        for s in self._sessions.values():
            s.close()
        self._sessions.clear()
        for s in self._unfolded:
            s.close()
        self._unfolded.clear()

    # -- the steps -----------------------------------------------------------------------

    def _claim(self, con: Any, ids: list[str]) -> tuple[list[int], list[str], dict[str, str]]:
        """Claim the events: claim rows, the events claimed in memory, those held elsewhere.

        In memory while the hold that began without claims in the store lasts and no other
        thread of this process has written claim rows since (``events.claim_in_memory``):
        it saves a query, an INSERT and a DELETE per micro-batch.
        """
        if self._rows_written is not None:
            got = claim_in_memory(ids, self._rows_written)
            if got is not None:
                mine, elsewhere = got
                try:
                    release(con, [r for eid in mine for r in self._lapsed.pop(eid, [])])
                except BaseException:
                    release_in_memory(mine)
                    raise
                return [], mine, elsewhere
            self._rows_written = None  # rows until the hold ends
        claims, elsewhere = claim(con, ids, partial=True)
        return claims, [], elsewhere

    def _refresh(self, con: Any) -> None:
        """Load the rules again, and open new sessions, when the configuration changed."""
        fingerprint = con.execute(FINGERPRINT).fetchone()
        if self._notifier is not None and fingerprint == self._fingerprint:
            return
        self._notifier = _Notifier(self.ws, self.options, con=con)
        self._fingerprint = fingerprint
        for s in self._sessions.values():
            if s.conn is not None:
                s.conn.close()
        self._sessions.clear()

    def _plan(
        self, intakes: Sequence[Intake], results: list[EventResult | None]
    ) -> dict[_Key, list[_Planned]]:
        """Each event's result so far, and its deliveries grouped by session."""
        assert self._notifier is not None
        groups: dict[_Key, list[_Planned]] = {}
        for n, item in enumerate(intakes):
            res, planned = _start(self._notifier, item)
            results.append(res)
            for rule, d in planned:
                key = (rule.account, rule.template, rule.flow_type)
                groups.setdefault(key, []).append((n, rule, d))
        return groups

    def _session(self, key: _Key) -> Session:
        s = self._sessions.get(key)
        if s is None:
            account, template, use_case = key
            s = Session(self.ws, account, template, use_case=use_case, options=self.options)
            self._sessions[key] = s
        return s

    def _send(
        self,
        key: _Key,
        items: list[_Planned],
        results: list[EventResult | None],
        delivered: set[tuple[str, str]],
    ) -> None:
        """Send one session's deliveries; an event that cannot be built sends none of them."""

        def fail(n: int, rule: Rule, message: str) -> None:
            res = results[n]
            assert res is not None
            res.status, res.error = "error", f"rule {rule.name}: {message}"

        try:
            session = self._session(key)
        except SysmailError as exc:  # the account or template is gone
            for n, rule, _d in items:
                fail(n, rule, str(exc))
            return
        built = session.build_each([d for _, _, d in items])
        bad = set()
        for (n, rule, _d), (_c, _s, error) in zip(items, built, strict=True):
            if error is not None:
                fail(n, rule, str(error))
                bad.add(n)
        keep = [i for i, (n, _r, _d) in enumerate(items) if n not in bad]
        if not keep:
            return
        session.begin()
        self._unfolded.append(session)
        try:
            session.send([items[i][2] for i in keep], [built[i] for i in keep], delivered)
        except SysmailError as exc:  # the account cannot send: a login, a certificate, a key
            self._sessions.pop(key, None)
            if session.conn is not None:
                session.conn.close()
            for n, rule, _d in (items[i] for i in keep):
                fail(n, rule, str(exc))
            return
        for n, rule, d in (items[i] for i in keep):
            res = results[n]
            assert res is not None and d.key is not None
            status = session.statuses.get(d.key, "not sent")
            res.sends.append(SendStatus(rule.name, d.to[0], d.key, status))

    def _fold(self, con: Any) -> None:
        for s in self._unfolded:
            s.fold_on(con)

    def _finish_folded(self) -> None:
        """After the transaction that folded them committed: their journals go."""
        unfolded, self._unfolded = self._unfolded, []
        for s in unfolded:
            s.finish()


def _id(results: list[EventResult | None], n: int) -> str:
    res = results[n]
    assert res is not None
    return res.event_id or ""
