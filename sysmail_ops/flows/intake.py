"""The HTTP event intake behind ``serve``: sources, the durable queue and its worker.

A calling system (a source) posts events with its own bearer token. ``sources add``
makes the token and keeps only its SHA-256 (a 256-bit random token needs no slow hash);
a token is checked with ``hmac.compare_digest``. An accepted event is a committed row of
``event_intake`` before the caller hears ``202``; its id is scoped to its source, so a
redelivery finds the row and is answered from it. A worker notifies queued events in
micro-batches through ``notify_many`` (the one pipeline: its dedupe keys, log, archive),
then records each event's outcome on its row. A crash between the two leaves the rows
queued: the restart sends them again and the pipeline's keys skip what was mailed.

The pipeline sees an intake event's id as ``SOURCE/ID``: two sources may use the same id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import NotFoundError, SysmailError, ValidationError
from sysmail_ops.flows.events import EventResult, Intake, intake, parse_lines
from sysmail_ops.flows.notifications import notify_many
from sysmail_ops.inputs import parse_json
from sysmail_ops.sending.engine import SendOptions
from sysmail_ops.store.database import utcnow

log = logging.getLogger("sysmail_ops.flows.intake")

__all__ = [
    "BATCH",
    "INTERVAL",
    "QUEUE_LIMIT",
    "Accepted",
    "IntakeQueue",
    "QueueFull",
    "Source",
    "add_source",
    "authenticate",
    "list_sources",
    "revoke_source",
]

QUEUE_LIMIT = 10_000  # events queued and not yet notified; past it posts get 429
BATCH = 500  # events per micro-batch
INTERVAL = 0.2  # seconds the worker waits for more before looking again
MAX_ID = 150  # an event id's length within its source (the pipeline sees SOURCE/ID)
IDLE_RELEASE = 2.0  # seconds without traffic after which the store file is let go
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
QUEUED = "queued"


# --- sources ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    name: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def check_source_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValidationError(
            f"source name {name!r}: use 1-40 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def add_source(ws: Workspace, name: str) -> str:
    """Add a source and return its bearer token: shown once, only its hash is kept.

    A revoked source's name may be added again; it gets a new token.
    """
    check_source_name(name)
    token = secrets.token_urlsafe(32)
    with ws.store.transaction() as con:
        row = con.execute("SELECT revoked_at FROM event_sources WHERE name = ?", [name]).fetchone()
        if row is not None and row[0] is None:
            raise ValidationError(f"source {name} exists; revoke it first to give it a new token")
        con.execute("DELETE FROM event_sources WHERE name = ?", [name])
        con.execute(
            "INSERT INTO event_sources VALUES (?, ?, ?, NULL)", [name, _hash(token), utcnow()]
        )
    return token


def list_sources(ws: Workspace) -> list[Source]:
    with ws.store.connect() as con:
        rows = con.execute(
            "SELECT name, created_at, revoked_at FROM event_sources ORDER BY name"
        ).fetchall()
    return [Source(*r) for r in rows]


def revoke_source(ws: Workspace, name: str) -> None:
    """Its token stops working at once; its events already accepted are still notified."""
    with ws.store.transaction() as con:
        row = con.execute("SELECT revoked_at FROM event_sources WHERE name = ?", [name]).fetchone()
        if row is None:
            raise NotFoundError(f"no source named {name!r}")
        if row[0] is not None:
            raise ValidationError(f"source {name} is already revoked")
        con.execute("UPDATE event_sources SET revoked_at = ? WHERE name = ?", [utcnow(), name])


def authenticate(con: Any, token: str | None) -> str | None:
    """The active source whose token this is, or None. Every hash is compared in full."""
    if not token:
        return None
    wanted = _hash(token)
    found = None
    for name, stored in con.execute(
        "SELECT name, token_hash FROM event_sources WHERE revoked_at IS NULL"
    ).fetchall():
        if hmac.compare_digest(stored, wanted):
            found = name
    return found


# --- the queue ----------------------------------------------------------------------------


@dataclass
class Accepted:
    """One line of a post: accepted (202), known already (200) or refused (its error)."""

    line: int
    id: str | None
    status: str | None = None  # queued, or the recorded status of a redelivered event
    redelivered: bool = False
    error: str | None = None


@dataclass(eq=False)
class _Pending:
    """One post's good events, waiting for the group commit that records them."""

    source: str
    fresh: list[tuple[Accepted, str]]
    done: bool = False
    error: BaseException | None = None


class QueueFull(SysmailError):
    """More events are queued than the bound allows: the caller tries again later."""


def read_body(body: bytes) -> list[Intake]:
    """One event as a JSON object (pretty-printed or not), or JSON lines."""
    stripped = body.strip()
    if stripped.startswith(b"{"):
        try:
            data = parse_json(stripped.decode("utf-8"))
        except (ValidationError, UnicodeDecodeError):
            data = None
        if isinstance(data, Mapping):
            return [intake(data, "line 1")]
    return list(parse_lines(body.splitlines(), "body"))


class IntakeQueue:
    """The intake of one ``serve``: accepts posts, answers status, runs the worker thread.

    Web threads and the worker share the workspace's store. While events flow, one
    connection is held open (``_hold``), so each thread's short connection comes from
    DuckDB's in-process cache (a few ms instead of ~30-70 ms); after ``IDLE_RELEASE``
    seconds without traffic the file is let go, so the CLI and notebooks can use it.
    """

    def __init__(
        self,
        ws: Workspace,
        *,
        limit: int = QUEUE_LIMIT,
        batch: int = BATCH,
        interval: float = INTERVAL,
        options: SendOptions | None = None,
    ):
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError(f"the intake queue limit must be a whole number >= 1: {limit!r}")
        self.ws = ws
        self.limit = limit
        self.batch = batch
        self.interval = interval
        self.options = options or SendOptions(max_attempts=2, backoff=0.5, workers=0)
        self._lock = threading.Lock()
        self._leader = threading.Lock()  # held by the thread committing a group of posts
        self._waiting: list[_Pending] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._hold_lock = threading.Lock()
        self._held: ExitStack | None = None
        self._last_use = 0.0
        self._thread: threading.Thread | None = None
        with ws.store.connect() as con:
            row = con.execute("SELECT count(*) FROM event_intake WHERE state = ?", [QUEUED])
            self.pending = int(row.fetchone()[0])  # type: ignore[index]

    # -- the held connection -------------------------------------------------------------

    def _touch(self) -> None:
        with self._hold_lock:
            self._last_use = time.monotonic()
            if self._held is None:
                stack = ExitStack()
                stack.enter_context(self.ws.store.connect())
                self._held = stack

    def _release_if_idle(self) -> None:
        with self._hold_lock:
            if self._held is not None and time.monotonic() - self._last_use > IDLE_RELEASE:
                self._held.close()
                self._held = None

    # -- web side ------------------------------------------------------------------------

    def source_for(self, token: str | None) -> str | None:
        self._touch()
        with self.ws.store.connect() as con:
            return authenticate(con, token)

    def accept(self, source: str, body: bytes) -> list[Accepted]:
        """Record the good events of a post (committed before this returns); one answer each.

        Raises ``QueueFull`` (nothing written) when they would pass the queue bound.
        """
        self._touch()
        answers: list[Accepted] = []
        fresh: list[tuple[Accepted, str]] = []
        for n, item in enumerate(read_body(body), 1):
            raw_id = item.raw.get("id") if item.raw else None
            shown = str(raw_id)[:MAX_ID] if isinstance(raw_id, str | int) else None
            got = Accepted(n, shown, error=item.error)
            answers.append(got)
            if item.event is None:
                continue
            if len(item.event.id) > MAX_ID:
                got.error = f"id is longer than {MAX_ID} characters"
                continue
            got.id = item.event.id
            assert item.raw is not None
            fresh.append((got, json.dumps(item.raw, default=str)))
        if not fresh:
            return answers
        mine = _Pending(source, fresh)
        with self._lock:
            if self.pending >= self.limit:  # full: refused before any store visit
                raise self._full()
            self._waiting.append(mine)
        # Group commit: one thread at a time commits every post waiting by then in one
        # transaction; a post whose events a previous leader committed just returns.
        with self._leader:
            if not mine.done:
                with self._lock:
                    group, self._waiting = self._waiting, []
                self._commit(group)
        if mine.error is not None:
            raise mine.error
        if any(not got.redelivered for got, _ in fresh):
            self._wake.set()
        return answers

    def _commit(self, group: list[_Pending]) -> None:
        """Record the events of several posts in one transaction (the caller is the leader)."""
        try:
            now = utcnow()
            with self.ws.store.transaction() as con:
                keys = [(p.source, got.id) for p in group for got, _ in p.fresh]
                known = {
                    (src, eid): status
                    for src, eid, status in con.execute(
                        "SELECT e.source, e.event_id, coalesce(e.status, e.state) "
                        "FROM event_intake e JOIN (SELECT unnest(?::VARCHAR[]) AS s, "
                        "unnest(?::VARCHAR[]) AS i) k ON e.source = k.s AND e.event_id = k.i",
                        [[k[0] for k in keys], [k[1] for k in keys]],
                    ).fetchall()
                }
                rows: list[tuple[str, str, str]] = []
                room = self.limit - self.pending
                for p in group:
                    new: list[tuple[str, str, str]] = []
                    for got, data in p.fresh:
                        key = (p.source, got.id or "")
                        if key in known:
                            got.redelivered, got.status = True, known[key]
                        else:
                            known[key] = got.status = QUEUED
                            new.append((p.source, key[1], data))
                    if len(new) > room:
                        p.error = self._full()
                        for source, eid, _ in new:
                            del known[(source, eid)]
                        continue
                    room -= len(new)
                    rows += new
                if rows:
                    con.execute(
                        "INSERT INTO event_intake (source, event_id, body, received_at, state) "
                        "SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
                        "unnest(?::VARCHAR[]), ?, ?",
                        [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], now,
                         QUEUED],
                    )  # fmt: skip
            with self._lock:
                self.pending += len(rows)
        except BaseException as exc:
            for p in group:
                p.error = p.error or exc
            raise
        finally:
            for p in group:
                p.done = True

    def _full(self) -> QueueFull:
        return QueueFull(
            f"{self.pending:,} events are queued (the bound is {self.limit:,}): try again shortly"
        )

    def status(self, source: str, event_id: str) -> dict[str, Any] | None:
        """What became of one of the source's events; None if it never reached us."""
        self._touch()
        with self.ws.store.connect() as con:
            row = con.execute(
                "SELECT event_id, state, status, result, received_at, done_at FROM event_intake "
                "WHERE source = ? AND event_id = ?",
                [source, event_id],
            ).fetchone()
        if row is None:
            return None
        eid, state, status, result, received, done = row
        out: dict[str, Any] = {
            "id": eid,
            "status": status or state,
            "received_at": received.isoformat() + "Z",
            "done_at": done.isoformat() + "Z" if done else None,
        }
        if result:
            out.update(json.loads(result))
        return out

    # -- the worker ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread (notifies what an earlier run left queued, too)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="intake-worker", daemon=True)
            self._thread.start()
            self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._hold_lock:
            if self._held is not None:
                self._held.close()
                self._held = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                # A full batch goes at once; after a partial one the next starts ``interval``
                # after it began (its cost, mostly fixed, is shared by more events), unless the
                # queue was idle: then the first events go at once.
                began = time.monotonic()
                while not self._stop.is_set() and (done := self.work_once()):
                    if done < self.batch:
                        self._stop.wait(max(0.0, began + self.interval - time.monotonic()))
                    began = time.monotonic()
            except SysmailError as exc:  # the store busy, say: the rows stay queued
                log.warning("intake worker: %s; trying again", exc)
                self._stop.wait(1.0)
            except Exception:
                log.exception("intake worker failed; trying again")
                self._stop.wait(1.0)
            self._release_if_idle()

    def work_once(self) -> int:
        """Notify one micro-batch of queued events and record their outcomes; how many."""
        if self.pending == 0:  # nothing queued: the store is not even opened
            return 0
        with self.ws.store.connect() as con:
            rows = con.execute(
                "SELECT id, source, event_id, body FROM event_intake WHERE state = ? "
                "ORDER BY id LIMIT ?",
                [QUEUED, self.batch],
            ).fetchall()
        if not rows:
            return 0
        self._touch()
        events = [_for_pipeline(source, body) for _id, source, _eid, body in rows]
        results = notify_many(self.ws, events, options=self.options, source="http")
        done = utcnow()
        import pandas as pd

        frame = pd.DataFrame(
            {
                "id": [r[0] for r in rows],
                "status": [res.status for res in results],
                "result": [_result(res) for res in results],
            }
        )
        with self.ws.store.transaction() as con:
            con.register("intake_done", frame)
            con.execute(
                "UPDATE event_intake SET state = 'done', status = d.status, result = d.result, "
                "done_at = ? FROM intake_done d WHERE event_intake.id = d.id",
                [done],
            )
            con.unregister("intake_done")
        with self._lock:
            self.pending = max(0, self.pending - len(rows))
        return len(rows)


def _result(res: EventResult) -> str:
    sends = [{"rule": s.rule, "recipient": s.recipient, "status": s.status} for s in res.sends]
    return json.dumps({"matched": res.matched, "sends": sends, "error": res.error})


def _for_pipeline(source: str, body: str) -> dict[str, Any]:
    data = json.loads(body)
    return {**data, "id": f"{source}/{data['id']}"}


# --- retention ----------------------------------------------------------------------------


def prune(ws: Workspace, before: datetime, *, dry_run: bool = False) -> int:
    """Delete the intake rows of events done before ``before``; how many (``dry_run``: count,
    delete nothing). Queued rows stay however old: they are accepted and not yet notified.

    A pruned event's id is unknown again: posted once more, it is accepted as new (202)
    and notified, and the pipeline's delivery keys skip each recipient the send log still
    holds as sent; once those log rows are pruned too, it is mailed again.
    """
    if dry_run:
        with ws.store.connect() as con:
            found = con.execute(
                "SELECT count(*) FROM event_intake WHERE state = 'done' AND done_at < ?", [before]
            ).fetchone()
    else:
        with ws.store.transaction() as con:  # DuckDB answers a DELETE with its row count
            found = con.execute(
                "DELETE FROM event_intake WHERE state = 'done' AND done_at < ?", [before]
            ).fetchone()
    return int(found[0]) if found else 0
