"""The HTTP event intake behind ``serve``: sources, the durable queue and its worker.

A calling system (a source) posts events with its own bearer token. ``sources add``
makes the token and keeps only its SHA-256 (a 256-bit random token needs no slow hash);
a token is checked with ``hmac.compare_digest``. An accepted event is a committed row of
``event_intake`` before the caller hears ``202``; its id is scoped to its source, so a
redelivery finds the row and is answered from it. A worker notifies queued events in
micro-batches through ``microbatch.MicroBatcher`` (the pipeline of ``notify``: its dedupe
keys, claims, log, archive; with its rules and SMTP sessions kept between micro-batches)
and records each event's outcome on its row on the transaction that folds the log rows.
A crash before that leaves the rows queued: the restart sends them again and the
pipeline's keys skip what was mailed. A token seen valid is remembered (its hash), and
checked again on the transaction that records a post's events.

The pipeline sees an intake event's id as ``SOURCE/ID``: two sources may use the same id.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import NotFoundError, StoreBusyError, SysmailError, ValidationError
from sysmail_ops.flows.events import EventResult, Intake, intake, parse_lines
from sysmail_ops.flows.microbatch import MicroBatcher
from sysmail_ops.inputs import parse_json
from sysmail_ops.sending.engine import SendOptions
from sysmail_ops.sending.session import IDLE_CLOSE
from sysmail_ops.store.database import config_edits, utcnow

log = logging.getLogger("sysmail_ops.flows.intake")

__all__ = [
    "BATCH",
    "INTERVAL",
    "QUEUE_LIMIT",
    "Accepted",
    "IntakeQueue",
    "Post",
    "QueueFull",
    "Source",
    "Unauthorized",
    "add_source",
    "authenticate",
    "list_sources",
    "parse_post",
    "prune",
    "revoke_source",
    "token_hash",
]

QUEUE_LIMIT = 10_000  # events queued and not yet notified; past it posts get 429
BATCH = 500  # events per micro-batch, at most
INTERVAL = 0.2  # seconds the idle worker sleeps between looks, unless a post wakes it
POISON_ATTEMPTS = 3  # tries of an event alone before it is marked error
RETRY_FIRST = 0.5  # seconds before an event that failed alone is tried again; doubles
RETRY_MAX = 30.0  # ... up to this
HELD_RETRY = 1.0  # seconds before an event another process is sending is looked at again
MAX_ID = 150  # an event id's length within its source (the pipeline sees SOURCE/ID)
IDLE_RELEASE = 2.0  # seconds without traffic after which the store file is let go
QUEUE_MEMORY = 64 * 2**20  # characters of queued bodies kept in memory; past it, read again
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
QUEUED = "queued"
_Row = tuple[int, str, str, str]  # a queued event: its row id, source, event id, JSON body
_Kept = tuple[int, str, str, str | None]  # one in memory: its body may be left in the store


# --- sources ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    name: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def token_hash(token: str) -> str:
    """What is kept of a token, and what a front process hands on instead of the token."""
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
            "INSERT INTO event_sources VALUES (?, ?, ?, NULL)", [name, token_hash(token), utcnow()]
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
    return authenticate_hash(con, token_hash(token)) if token else None


def authenticate_hash(con: Any, wanted: str) -> str | None:
    """The active source whose token has this SHA-256 (``token_hash``), or None."""
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
class Post:
    """One post's good events (each answer and its JSON), waiting for the commit that
    records them; ``commit_posts`` fills in the answers, or ``error``."""

    source: str
    fresh: list[tuple[Accepted, str]]
    token_hash: str | None = None  # checked again in the commit (a token taken from the cache)
    done: bool = False
    error: BaseException | None = None


class QueueFull(SysmailError):
    """More events are queued than the bound allows: the caller tries again later."""


class Unauthorized(SysmailError):
    """The post's token is no longer valid (its source was revoked): nothing was recorded."""


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


def parse_post(body: bytes) -> tuple[list[Accepted], list[tuple[Accepted, str]]]:
    """A post's answers, one per line (a bad line has its error), and its good events
    each with its answer and its JSON, to be recorded (``IntakeQueue.commit_posts``).

    Needs no store: ``serve``'s front process reads bodies and the owner records them.
    """
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
    return answers, fresh


class IntakeQueue:
    """The intake of one ``serve``: accepts posts, answers status, runs the worker thread.

    Web threads and the worker share the workspace's store. While events flow, one
    connection is held open (``_hold``), so each thread's short connection comes from
    DuckDB's in-process cache (a few ms instead of ~30-70 ms); after ``IDLE_RELEASE``
    seconds without traffic the file is let go, so the CLI and notebooks can use it.

    While the file is held no other process can open it, so what this process learned
    from the store in a hold stays true until the hold ends or this process changes it:

    - a token verified in the store since the hold began, with no configuration edit
      (a source added or revoked is one) committed by this process since, is not looked
      up again when a post's events are recorded;
    - the queued rows are read from the store once per hold, then kept in memory: a
      commit adds its rows, the worker takes its micro-batches from there (in the order
      they were accepted) and drops what it recorded, without a query per micro-batch;
    - the worker tells its ``MicroBatcher`` which hold each micro-batch runs in, so it
      looks at the configuration and at other processes' claims once per hold too.
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
        self._waiting: list[Post] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._hold_lock = threading.Lock()
        # SHA-256 of a token seen valid -> its source, and (hold, config_edits()) when seen
        self._tokens: dict[str, tuple[str, tuple[int, int]]] = {}
        self._hold_count = 0  # holds of the store begun: one more after each let-go
        self._held: ExitStack | None = None
        self._last_use = 0.0
        self._thread: threading.Thread | None = None
        self._batcher = MicroBatcher(ws, self.options)
        self.idle_close = IDLE_CLOSE  # seconds after which an unused SMTP connection is closed
        self._suspects: dict[int, _Suspect] = {}  # rows of a failed micro-batch, tried alone
        self._not_before: dict[int, float] = {}  # rows waiting out a backoff (monotonic time)
        self._last_success = 0.0  # when a micro-batch last went through (monotonic time)
        # The queued rows (id -> row), in the order accepted, as of the hold ``_queue_hold``;
        # past QUEUE_MEMORY bytes of bodies a row is kept without its body (None), read
        # from the store when its micro-batch comes.
        self._queue: dict[int, _Kept] = {}
        self._queue_bytes = 0
        self._queue_hold = -1
        self._load_queue(self._hold_count)

    @property
    def pending(self) -> int:
        """Events queued (accepted, not yet notified), as of the last look at the store:
        this process's commits since count, another process's count at the next hold."""
        return len(self._queue)

    def _load_queue(self, hold: int) -> None:
        """Read the queued rows from the store, as of the hold ``hold``.

        Under the commit's leader lock: a commit's rows are in the store and in memory
        together, so none is missed or (once notified) put back.
        """
        with self._leader:
            with self.ws.store.connect() as con:
                rows = con.execute(
                    "SELECT id, source, event_id, CASE WHEN sum(length(body)) OVER (ORDER BY id)"
                    " <= ? THEN body END FROM event_intake WHERE state = ? ORDER BY id",
                    [QUEUE_MEMORY, QUEUED],
                ).fetchall()
            with self._lock:
                self._queue, self._queue_bytes = {}, 0
                self._keep(rows)
                self._queue_hold = hold
                for gone in (self._suspects.keys() | self._not_before.keys()) - self._queue.keys():
                    self._suspects.pop(gone, None)
                    self._not_before.pop(gone, None)

    def _keep(self, rows: Sequence[_Kept]) -> None:
        """Queue rows in memory (the caller holds ``_lock``), bodies within QUEUE_MEMORY."""
        for row_id, src, eid, body in rows:
            if body is not None and self._queue_bytes + len(body) <= QUEUE_MEMORY:
                self._queue_bytes += len(body)
            else:
                body = None
            self._queue[row_id] = (row_id, src, eid, body)

    def _with_bodies(self, rows: list[_Kept]) -> list[_Row]:
        """The rows with their bodies: those kept without one are read from the store."""
        missing = [r[0] for r in rows if r[3] is None]
        bodies: dict[int, str] = {}
        if missing:
            with self.ws.store.connect() as con:
                bodies = dict(
                    con.execute(
                        "SELECT id, body FROM event_intake WHERE state = ? "
                        "AND list_contains(?, id)",
                        [QUEUED, missing],
                    ).fetchall()
                )
        out: list[_Row] = []
        for row_id, src, eid, body in rows:
            body = body if body is not None else bodies.get(row_id)
            if body is None:  # no longer queued in the store
                self._drop(row_id)
            else:
                out.append((row_id, src, eid, body))
        return out

    def _drop(self, row_id: int) -> None:
        """The row is no longer queued."""
        with self._lock:
            row = self._queue.pop(row_id, None)
            if row is not None and row[3] is not None:
                self._queue_bytes -= len(row[3])

    def _hold(self) -> int:
        with self._hold_lock:
            return self._hold_count

    # -- the held connection -------------------------------------------------------------

    def _touch(self) -> None:
        with self._hold_lock:
            self._last_use = time.monotonic()
            if self._held is None:
                self._hold_count += 1
                stack = ExitStack()
                stack.enter_context(self.ws.store.connect())
                self._held = stack

    def _release_if_idle(self) -> None:
        with self._hold_lock:
            if self._held is not None and time.monotonic() - self._last_use > IDLE_RELEASE:
                self._held.close()
                self._held = None

    # -- web side ------------------------------------------------------------------------

    def source_for(self, token: str | None, *, cached: bool = False) -> str | None:
        """The active source whose token this is, or None.

        ``cached``: a token seen valid before is taken without a store visit; for a post,
        whose ``accept(..., token=)`` checks it again in the transaction that records the
        events (a revoked token then writes nothing and gets ``Unauthorized``).
        """
        self._touch()
        wanted = token_hash(token) if token else None
        if cached and wanted is not None:
            with self._lock:
                known = self._tokens.get(wanted)
            if known is not None:
                return known[0]
        return self.source_for_hash(wanted) if wanted is not None else None

    def source_for_hash(self, wanted: str) -> str | None:
        """``source_for`` with the token's SHA-256 (``token_hash``), always from the store."""
        self._touch()
        seen = self._now()
        with self.ws.store.connect() as con:
            found = authenticate_hash(con, wanted)
        with self._lock:
            if found is not None:
                self._tokens[wanted] = (found, seen)
            else:
                self._tokens.pop(wanted, None)
        return found

    def _now(self) -> tuple[int, int]:
        """The hold of the store and the count of this process's configuration edits (a
        source added or revoked is one), as of now."""
        return self._hold(), config_edits()

    def accept(self, source: str, body: bytes, *, token: str | None = None) -> list[Accepted]:
        """Record the good events of a post (committed before this returns); one answer each.

        Raises ``QueueFull`` (nothing written) when they would pass the queue bound.
        ``token``: the post's, checked again on the transaction that records its events
        (``Unauthorized``, nothing written, when it is no longer valid).
        """
        self._touch()
        answers, fresh = parse_post(body)
        mine = Post(source, fresh, token_hash(token) if token else None)
        [error] = self.commit_posts([mine])
        if error is not None:
            raise error
        return answers

    def commit_posts(self, posts: list[Post]) -> list[BaseException | None]:
        """Record the events of posts whose bodies were read already (``parse_post``, in
        this process or in ``serve``'s front process); one error (or None) per post.

        A post without events has its token checked all the same. Posts are committed in
        groups: one thread at a time commits every post waiting by then in one
        transaction; a post whose events a previous leader committed just returns.
        """
        self._touch()
        mine = []
        for p in posts:
            if not p.fresh:
                if p.token_hash is not None:  # nothing to record: the token is checked
                    with self.ws.store.connect() as con:
                        self._check_tokens(con, [p])
                continue
            with self._lock:
                if self.pending >= self.limit:  # full: refused before any store visit
                    p.error = self._full()
                    continue
                self._waiting.append(p)
            mine.append(p)
        if mine:
            with self._leader:
                if not all(p.done for p in mine):
                    with self._lock:
                        group, self._waiting = self._waiting, []
                    with contextlib.suppress(Exception):  # each post of the group holds it
                        self._commit(group)
            if any(not got.redelivered for p in mine if p.error is None for got, _ in p.fresh):
                self._wake.set()
        return [p.error for p in posts]

    def _commit(self, group: list[Post]) -> None:
        """Record the events of several posts in one transaction (the caller is the leader).

        It runs beside the worker's transactions: they write the log and the outcome of
        events already here, never a new event's row. Should DuckDB still see a conflict,
        the group is recorded again, alone.
        """
        import duckdb  # here: every CLI command imports this module, few open the store

        try:
            try:
                try:
                    added = self._record(group, beside=True)
                except duckdb.ConstraintException:  # a redelivered id: again, skipping those
                    added = self._record(group, beside=True, known=True)
            except duckdb.TransactionException as exc:  # from either: again, alone
                log.info("intake: recording posts met a conflict (%s); again, alone", exc)
                added = self._record(group, beside=False, known=True)
            with self._lock:  # committed: the worker may take them
                self._keep(added)
        except BaseException as exc:
            for p in group:
                p.error = p.error or exc
            raise
        finally:
            for p in group:
                p.done = True

    def _record(self, group: list[Post], *, beside: bool, known: bool = False) -> list[_Row]:
        """One transaction recording the posts' new events; the rows it added.

        ``known``: some ids may be recorded already (a redelivery). Without it the rows go
        in with a plain INSERT, which fails on a known id (``duckdb.ConstraintException``:
        nothing is written; the caller records the group again with ``known``). DuckDB's
        ``ON CONFLICT DO NOTHING`` costs ~2.4 ms more per INSERT of a few rows, and
        redeliveries are rare.
        """
        for p in group:
            p.error = None
        now = utcnow()
        with self.ws.store.transaction(beside=beside, config=False) as con:
            posts = self._check_tokens(con, group)
            if self.pending + sum(len(p.fresh) for p in posts) > self.limit:
                posts = self._fitting(con, posts)
            return self._insert_all(con, posts, now, known=known)

    def _fitting(self, con: Any, posts: list[Post]) -> list[Post]:
        """Near the bound: the posts whose new events fit, in order; the others get
        ``QueueFull`` (a post is taken whole or not at all)."""
        known = set(_statuses(con, [(p.source, got.id) for p in posts for got, _ in p.fresh]))
        room = self.limit - self.pending
        fits = []
        for p in posts:
            new = {(p.source, got.id or "") for got, _ in p.fresh} - known
            if len(new) > room:
                p.error = self._full()
                continue
            room -= len(new)
            known |= new
            fits.append(p)
        return fits

    def _insert_all(self, con: Any, posts: list[Post], now: datetime, *, known: bool) -> list[_Row]:
        """Record the posts' events: one INSERT (with ``known``, one that skips the ids
        already recorded, whose status is then looked up); the rows added."""
        first: dict[tuple[str, str], str] = {}
        for p in posts:
            for got, data in p.fresh:
                first.setdefault((p.source, got.id or ""), data)
        rows = _insert(con, [(*key, data) for key, data in first.items()], now, skip_known=known)
        added = {(src, eid) for _id, src, eid, _body in rows}
        recorded = _statuses(con, [k for k in first if k not in added])
        for p in posts:
            for got, _ in p.fresh:
                key = (p.source, got.id or "")
                if key in added:  # its first line is new; a second line of it, a redelivery
                    got.redelivered, got.status = key in recorded, QUEUED
                    recorded[key] = QUEUED
                else:
                    got.redelivered, got.status = True, recorded[key]
        return rows

    def _check_tokens(self, con: Any, group: list[Post]) -> list[Post]:
        """The posts whose token is still valid; the others get ``Unauthorized``.

        A token verified in this hold of the store, with no configuration edited since,
        is known valid (see the class); the others are looked up.
        """
        now = self._now()
        with self._lock:
            hashes = sorted(
                {
                    p.token_hash
                    for p in group
                    if p.token_hash is not None
                    and self._tokens.get(p.token_hash) != (p.source, now)
                }
            )
        if not hashes:
            return group
        valid = set(
            con.execute(
                "SELECT name, token_hash FROM event_sources WHERE revoked_at IS NULL "
                "AND list_contains(?, token_hash)",
                [hashes],
            ).fetchall()
        )
        kept = []
        for p in group:
            if p.token_hash is None or p.token_hash not in hashes:
                kept.append(p)
            elif (p.source, p.token_hash) in valid:
                kept.append(p)
                with self._lock:
                    self._tokens[p.token_hash] = (p.source, now)
            else:
                p.error = Unauthorized("the source's token is no longer valid")
                with self._lock:
                    self._tokens.pop(p.token_hash, None)
        return kept

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
            if self._thread.is_alive():  # still sending: its sessions are its own to close
                self._thread = None
                return
            self._thread = None
        self._batcher.close()
        with self._hold_lock:
            if self._held is not None:
                self._held.close()
                self._held = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)  # idle: a post wakes the worker at once
            self._wake.clear()
            try:
                # No pause between micro-batches: what arrived while one was sent is the next
                # one, so the batch grows with the load and its cost is shared by more events.
                while not self._stop.is_set() and self.work_once():
                    pass
            except SysmailError as exc:  # the store busy, say: the rows stay queued
                log.warning("intake worker: %s; trying again", exc)
                self._stop.wait(1.0)
            except Exception as exc:
                log.warning("intake worker failed (%s); trying again", _reason(exc))
                self._stop.wait(1.0)
            self._batcher.close_idle(self.idle_close)
            self._release_if_idle()

    def work_once(self) -> int:
        """Notify one micro-batch of queued events and record their outcomes; how many.

        A micro-batch that fails unexpectedly (not a bad event, which is its own error,
        nor the store busy) is tried again one event at a time; an event that still fails
        alone after ``POISON_ATTEMPTS`` tries, spaced out, is marked ``error`` with the
        reason, once another event has gone through since it first failed (so a failure
        of everything, such as a full disk, marks nothing).
        """
        now = time.monotonic()
        waiting = {i for i, t in self._not_before.items() if t > now}
        if self.pending <= len(waiting):  # nothing queued, or only what waits: no store visit
            return 0
        self._touch()  # held from here to the end of the micro-batch (only we let go)
        hold = self._hold()
        if hold != self._queue_hold:  # another process may have used the store meanwhile
            self._load_queue(hold)
        with self._lock:
            todo = (r for i, r in self._queue.items() if i not in waiting)
            kept = list(itertools.islice(todo, self.batch))
        rows = self._with_bodies(kept)
        fresh = [r for r in rows if r[0] not in self._suspects]
        groups = ([fresh] if fresh else []) + [[r] for r in rows if r[0] in self._suspects]
        for group in groups:
            self._notify(group, hold)
        return len(rows)

    def _notify(self, rows: list[_Row], hold: int) -> None:
        """Notify some queued rows and record their outcomes (a poison event: see above)."""
        intakes = [
            intake(_for_pipeline(source, body), f"http #{n}")
            for n, (_id, source, _eid, body) in enumerate(rows, 1)
        ]
        done = utcnow()

        def record(con: Any, results: list[EventResult | None]) -> None:
            got = [(r[0], res) for r, res in zip(rows, results, strict=True) if res is not None]
            if got:
                con.execute(
                    "UPDATE event_intake SET state = 'done', status = d.status, "
                    "result = d.result, done_at = ? FROM (SELECT unnest(?::BIGINT[]) AS id, "
                    "unnest(?::VARCHAR[]) AS status, unnest(?::VARCHAR[]) AS result) d "
                    "WHERE event_intake.id = d.id",
                    [done, [i for i, _ in got], [res.status for _, res in got],
                     [_result(res) for _, res in got]],
                )  # fmt: skip

        try:
            results = self._batcher.notify(intakes, record, held=hold)
        except StoreBusyError:
            raise  # the store, not the events: the rows stay queued
        except Exception as exc:
            self._failed(rows, exc)
            return
        self._last_success = time.monotonic()
        for (row_id, *_rest), res in zip(rows, results, strict=True):
            if res is None:  # another process is sending it: look again shortly
                self._not_before[row_id] = time.monotonic() + HELD_RETRY
                continue
            self._suspects.pop(row_id, None)
            self._not_before.pop(row_id, None)
            self._drop(row_id)

    def _failed(self, rows: list[_Row], exc: Exception) -> None:
        now = time.monotonic()
        reason = _reason(exc)
        if len(rows) > 1:
            log.warning(
                "intake: a micro-batch of %d events failed (%s); trying them one at a time",
                len(rows), reason,
            )  # fmt: skip
            for row_id, *_rest in rows:
                self._suspects.setdefault(row_id, _Suspect(now))
            return
        row_id, source, event_id, _body = rows[0]
        s = self._suspects.setdefault(row_id, _Suspect(now))
        s.attempts += 1
        if s.attempts < POISON_ATTEMPTS or self._last_success <= s.first_failed:
            self._not_before[row_id] = now + min(RETRY_MAX, RETRY_FIRST * 2 ** (s.attempts - 1))
            return
        why = f"could not be processed: {reason}"
        with self.ws.store.transaction(config=False) as con:
            con.execute(
                "UPDATE event_intake SET state = 'done', status = 'error', result = ?, "
                "done_at = ? WHERE id = ? AND state = ?",
                [json.dumps({"matched": [], "sends": [], "error": why}), utcnow(), row_id, QUEUED],
            )
        del self._suspects[row_id]
        self._not_before.pop(row_id, None)
        self._drop(row_id)
        log.error(
            "intake: event %s of source %s marked error after %d attempts: %s",
            event_id, source, s.attempts, reason,
        )  # fmt: skip


@dataclass
class _Suspect:
    """A row of a micro-batch that failed: tried alone from then on."""

    first_failed: float  # monotonic time
    attempts: int = 0  # failures alone


def _statuses(con: Any, keys: list[tuple[str, str | None]]) -> dict[tuple[str, str], str]:
    """The recorded status of each (source, event id) the intake knows, of ``keys``."""
    if not keys:
        return {}
    return {
        (src, eid): status
        for src, eid, status in con.execute(
            "SELECT e.source, e.event_id, coalesce(e.status, e.state) "
            "FROM event_intake e JOIN (SELECT unnest(?::VARCHAR[]) AS s, "
            "unnest(?::VARCHAR[]) AS i) k ON e.source = k.s AND e.event_id = k.i",
            [[k[0] for k in keys], [k[1] for k in keys]],
        ).fetchall()
    }


def _insert(
    con: Any, rows: list[tuple[str, str, str]], now: datetime, *, skip_known: bool
) -> list[_Row]:
    """Queue new events (source, event id, JSON); the rows inserted.

    An id the intake knows already is skipped with ``skip_known``; without it, it raises
    ``duckdb.ConstraintException``.
    """
    if not rows:
        return []
    conflict = " ON CONFLICT DO NOTHING" if skip_known else ""
    bodies = {(src, eid): body for src, eid, body in rows}  # ours: not sent back
    return [
        (int(row_id), src, eid, bodies[src, eid])
        for row_id, src, eid in con.execute(
            "INSERT INTO event_intake (source, event_id, body, received_at, state) "
            "SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), ?, ?"
            f"{conflict} RETURNING id, source, event_id",
            [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], now, QUEUED],
        ).fetchall()
    ]


def _reason(exc: BaseException) -> str:
    """One line naming an unexpected error: its type and the first line of its message."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
