"""The sending engine: one batch through one account with one template version.

``sending`` is the public face (``send``, ``send_batch``, ``send_deliveries``);
this module is the loop behind it: build (``compose_pool``), dedupe, pipeline
over SMTP, journal each reply as it arrives, archive, retry or queue.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from sysmail_ops.config import accounts as accounts_mod
from sysmail_ops.config import signing
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import SMTPError, SysmailError, ValidationError
from sysmail_ops.mail.credentials import Secret
from sysmail_ops.mail.mime import Composed
from sysmail_ops.mail.pipelining import Pipeline
from sysmail_ops.mail.smtp import Outcome, SMTPConnection
from sysmail_ops.records import archive, sendlog, suppression
from sysmail_ops.records.sendlog import Journal, new_batch_id
from sysmail_ops.sending import retry as deferred
from sysmail_ops.sending.delivery import Composer, Delivery, message_id_secret
from sysmail_ops.sending.worker import Built, ComposePool, auto_workers
from sysmail_ops.store import private
from sysmail_ops.store.database import utcnow
from sysmail_ops.templates import catalog as templates


@dataclass
class SendOptions:
    """Knobs of one send; the defaults suit a production relay."""

    max_attempts: int = 3  # tries within this process for temporary failures
    backoff: float = 2.0  # seconds before the second try; doubles each time
    per_connection: int = 100  # reconnect after this many messages
    timeout: float = 30.0
    chunk: int = 2000  # deliveries between journal folds (one store visit each)
    dry_run: bool = False
    progress: bool = False
    # Processes that render and compose beside the sending one; None: one for a batch of
    # 1,000+ on a machine with a CPU to spare (``compose_pool.auto_workers``), 0: none.
    workers: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_attempts", "per_connection", "chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"SendOptions.{name} must be a whole number >= 1: {value!r}")
        if not self.timeout > 0 or not self.backoff >= 0:
            raise ValidationError("SendOptions.timeout must be > 0 and backoff >= 0")
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 0):
            raise ValidationError(f"SendOptions.workers must be None or >= 0: {self.workers!r}")


@dataclass
class SendResult:
    """What a send or batch did, counted per status (one count per recipient)."""

    batch_id: str
    counts: Counter[str] = field(default_factory=Counter)
    messages: int = 0
    errors: list[str] = field(default_factory=list)
    preview_dir: str | None = None
    # Messages refused for their size: delivery key (else its To) -> (size, limit), in bytes.
    too_big: dict[str, tuple[int, int]] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{n} {s}" for s, n in sorted(self.counts.items())] or ["nothing to send"]
        return f"batch {self.batch_id}: " + ", ".join(parts)


def _mb(size: int | None) -> str:
    return f"{(size or 0) / 2**20:.1f} MB"


KEEP_BUILT_BYTES = 32 * 2**20  # messages built up front and kept for sending, at most
FOLD_TAIL = 400  # messages before a batch's end: its last fold behind


def _keys(chunk: list[Delivery]) -> list[str]:
    return [d.key for d in chunk if d.key]


def _with_built(
    chunks: Iterator[list[Delivery]], built: Iterator[Built]
) -> Iterator[tuple[list[Delivery], Iterator[Built], list[Delivery] | None]]:
    """``ComposePool.chunks`` for messages already built (``BatchSender.build``)."""
    current = next(chunks, None)
    while current is not None:
        following = next(chunks, None)
        yield current, islice(built, len(current)), following
        current = following


class _ConnectionDown(Exception):
    def __init__(self, outcome: Outcome):
        self.outcome = outcome


@dataclass(eq=False)
class _Job:
    """One composed message on its way: the recipients still pending and its attempt."""

    journal: Journal
    d: Delivery
    c: Composed
    subject: str
    roles: dict[str, str]  # recipient -> role, those still to be delivered
    queued: Any
    delay: float  # before the next attempt; doubles each time
    attempt: int = 1
    archived: bool = False
    started: float = 0.0


class BatchSender:
    """One batch through one account with one template version."""

    def __init__(
        self,
        ws: Workspace,
        account: str,
        template: str,
        *,
        use_case: str,
        options: SendOptions,
        template_version: int | None = None,
    ):
        if use_case not in sendlog.USE_CASES:
            raise ValidationError(
                f"unknown use case {use_case!r}: choose one of {', '.join(sendlog.USE_CASES)}"
            )
        self.ws = ws
        with ws.store.connect() as con:  # one store visit (~30 ms each) for all of them
            self.account = accounts_mod.get_account(ws, account, con=con)
            self.template = templates.get_template(ws, template, template_version, con=con)
            budget = templates.render_budget(ws, con=con)
            dkim_keys = signing.dkim_keys(ws, self.account, con=con)
        self.composer = Composer(
            self.account, self.template, budget, dkim_keys, message_id_secret(ws)
        )
        self.max_bytes = self.account.max_message_bytes or accounts_mod.DEFAULT_MAX_MESSAGE_BYTES
        self.server_max: int | None = None  # the connected server's SIZE (RFC 1870), if any
        self._limit = self.max_bytes  # the limit the last refused message was over
        self.server_asked = False  # connected once: server_max is what its EHLO said
        self.compiled = self.composer.compiled
        self.use_case = use_case
        self.opt = options
        self.batch_id = new_batch_id()
        self.result = SendResult(self.batch_id)
        self._pool: ComposePool | None = None  # started early by ``start_workers``
        self.conn: SMTPConnection | None = None
        self.pipe: Pipeline | None = None
        self.resend: list[_Job] = []  # never reached the server: send again, same attempt
        self.retry: list[_Job] = []  # deferred, tries left: send again after a backoff
        self.sent_on_conn = 0
        self.down: Outcome | None = None
        self.last_send = 0.0
        self.min_interval = (
            60.0 / self.account.rate_limit_per_minute if self.account.rate_limit_per_minute else 0
        )
        # Loaded once per batch: the send loop tests membership without visiting the store.
        self.suppressed = (
            suppression.suppressed_set(ws) if use_case in suppression.USE_CASES else frozenset()
        )
        self._warmed = False  # ``warm_up`` folded the orphans and tried the connection
        self._warm_error: Exception | None = None  # what its connection attempt raised
        # Set once ``warm_up`` is done with the store (the fold, the password or token): a
        # batch that stops early waits for it, so that the process never exits while that
        # thread is inside DuckDB (a daemon thread stopped there aborts the interpreter).
        self.store_done = threading.Event()
        self._password: Secret | None = None  # fetched by ``warm_up`` for the first connection

    # -- the loop ------------------------------------------------------------------------

    def build(self, deliveries: Sequence[Delivery]) -> list[Built] | None:
        """Build every delivery before anything is sent; raise the first bad one's error.

        Returns the messages for ``run`` to send as they are (one build per
        message), unless together they exceed ``KEEP_BUILT_BYTES``: then
        ``run`` builds them again rather than hold them all.
        """
        kept: list[Built] | None = []
        size = 0
        with ComposePool(self.composer, self._workers(len(deliveries))) as pool:
            for _chunk, results, _following in pool.chunks([list(deliveries)]):
                for item in results:
                    composed, _subject, error = item
                    if error is not None:
                        raise error
                    if kept is not None and composed is not None:
                        size += composed.size
                        kept.append(item)
                        if size > KEEP_BUILT_BYTES:
                            kept = None
        return kept

    def start_workers(self, expected: int) -> None:
        """Start the compose workers before ``run`` (they take ~0.3 s to come up)."""
        if self._pool is None and self._workers(expected):
            self._pool = ComposePool(self.composer, self._workers(expected))

    def started_workers(self) -> ComposePool | None:
        """The workers ``start_workers`` started, if any (``send_batch`` renders with them
        while it checks the records, then ``run`` composes with them)."""
        return self._pool

    def stop_workers(self) -> None:
        """Stop workers started early, for a batch that will not ``run`` after all."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def warm_up(self) -> None:
        """What ``run`` does first, done ahead (``send_batch`` runs it in a thread while it
        checks the records): fold the journals of dead batches, and connect (DNS, TLS,
        AUTH; for OAuth2 the token). Nothing of this batch is written or sent. A refused
        connection is not tried again: ``run`` raises it when it first needs the server.
        ``store_done`` is set when the part that uses the store is over.
        """
        try:
            sendlog.fold_orphans(self.ws)
            self._warmed = True
            if self.opt.dry_run:
                return
            try:
                self._password = accounts_mod.password_for(self.ws, self.account)
            except Exception as exc:  # a secret or token that cannot be had: run raises it
                self._warm_error = exc
                return
        finally:
            self.store_done.set()
        try:
            self._connection()
        except _ConnectionDown:
            pass  # ``down`` is set: ``run`` defers each message, as if it had tried itself
        except Exception as exc:  # refused (AUTH, TLS, a token): raised where run connects
            self._warm_error = exc

    def close_connection(self) -> None:
        """Close the connection ``warm_up`` opened for a batch that will not ``run``."""
        if self.conn is not None:
            self.conn.close()

    def _workers(self, total: int | None) -> int:
        return auto_workers(total) if self.opt.workers is None else self.opt.workers

    def run(
        self,
        deliveries: Iterable[Delivery],
        total: int | None = None,
        built: list[Built] | None = None,
    ) -> SendResult:
        """Send every delivery, a chunk at a time, folding the journal after each chunk.

        One thread sends and writes log rows. Sending is pipelined across
        messages (``pipeline.Pipeline``): the next message is built while the
        server takes in the previous one, whose reply is journalled before the
        next message's data goes out. A long batch has its messages built in a
        second process (``compose_pool``); a second thread would not help: the
        threads fight over the GIL and every server reply waits for it.
        """
        from tqdm import tqdm

        pool, self._pool = self._pool, None
        if pool is None:
            pool = ComposePool(self.composer, 0 if built is not None else self._workers(total))
        with pool:
            if not self._warmed:
                sendlog.fold_orphans(self.ws)
            journal = Journal(self.ws, self.batch_id)
            self.bundle = archive.Bundle(self.ws, "sent", self.batch_id)
            bar = (
                tqdm(total=total, unit="msg", desc=f"send {self.account.name}")
                if self.opt.progress
                else None
            )
            try:
                for item in self._prepared(pool, deliveries, journal, built):
                    self._one(journal, *item)
                    if bar is not None:
                        bar.update(1)
                self._flush()
            finally:
                if bar is not None:
                    bar.close()
                if self.conn is not None:
                    self.conn.close()
                self.bundle.close()
                journal.close()
        return self.result

    def _prepared(
        self,
        pool: ComposePool,
        deliveries: Iterable[Delivery],
        journal: Journal,
        built: list[Built] | None,
    ) -> Iterator[Any]:
        """Render, compose and mark duplicates, a chunk at a time.

        At each chunk the journal's rows so far are folded into the store in a
        background thread, which also looks up the keys of the chunk after
        this one; so the store's answer for a chunk misses only the chunk just
        before it, whose keys are remembered here. Memory stays flat: two
        chunks' keys at most.
        """
        it = iter(deliveries)
        chunks = iter(lambda: list(islice(it, self.opt.chunk)), [])
        source = pool.chunks(chunks) if built is None else _with_built(chunks, iter(built))
        behind: Future[set[tuple[str, str]]] | None = None
        before: set[tuple[str, str]] = set()  # the previous chunk's (key, recipient) pairs
        for chunk, results, following in source:
            self._flush()  # settle the previous chunk, so its rows are in the journal
            done = journal.fold(_keys(chunk)) if behind is None else behind.result()
            behind = journal.fold_behind(_keys(following or []))
            # In the last chunk, fold once more shortly before the end: the fold that
            # ``run`` waits for at the end then has only the tail to do.
            tail = (
                len(chunk) - FOLD_TAIL if following is None and len(chunk) > 2 * FOLD_TAIL else -1
            )
            seen: set[tuple[str, str]] = set()
            for i, (d, (composed, subject, error)) in enumerate(zip(chunk, results, strict=True)):
                if i == tail:
                    journal.fold_behind()
                queued = utcnow()
                if composed is None:
                    yield (d, queued, None, "", error, frozenset())
                    continue
                dup = set()
                if d.key:
                    for addr, _role in composed.recipients:
                        pair = (d.key, addr)
                        if pair in done or pair in seen or pair in before:
                            dup.add(addr)
                        seen.add(pair)
                yield (d, queued, composed, subject, None, frozenset(dup))
            before = seen

    def _one(
        self,
        journal: Journal,
        d: Delivery,
        queued: Any,
        composed: Composed | None,
        subject: str,
        error: SysmailError | None,
        duplicates: frozenset[str],
    ) -> None:
        if composed is None:
            assert error is not None
            self.result.errors.append(f"{d.key or ', '.join(d.to)}: {error}")
            for addr in d.to:
                out = Outcome("failed", "render", None, str(error))
                self._log(journal, d, None, None, addr, "to", queued, "failed", out)
            return
        self.result.messages += 1

        def settle(pairs: Iterable[tuple[str, str]], status: str, out: Outcome) -> None:
            for addr, role in pairs:
                self._log(journal, d, composed, subject, addr, role, queued, status, out)

        pending = [(a, r) for a, r in composed.recipients if a not in duplicates]
        settle(
            [(a, r) for a, r in composed.recipients if a in duplicates],
            "skipped_duplicate",
            Outcome("skipped_duplicate", None, None, "already delivered"),
        )
        if self.suppressed:
            listed = [(a, r) for a, r in pending if suppression.matches(self.suppressed, a)]
            if listed:
                on_list = Outcome("suppressed", None, None, "on the suppression list")
                settle(listed, "suppressed", on_list)
                pending = [p for p in pending if p not in listed]
        if not pending:
            return
        too_big = self._too_big(composed, dry_run=self.opt.dry_run)
        if too_big is not None:
            self.result.errors.append(f"{d.key or ', '.join(d.to)}: {too_big}")
            self.result.too_big[d.key or ", ".join(d.to)] = (composed.size, self._limit)
            settle(pending, "failed", Outcome("failed", "size", None, too_big))
            return
        if self.opt.dry_run:
            path = self.ws.preview_dir / self.batch_id / f"{self.result.messages:06d}.eml"
            private.make_dirs(path.parent)
            private.write_file(path, composed.data)
            self.result.preview_dir = str(path.parent)
            settle(pending, "dry_run", Outcome("dry_run"))
            return
        if composed.needs_smtputf8 and not self._supports_smtputf8():
            why = "an address needs SMTPUTF8, which the server does not offer"
            settle(pending, "failed", Outcome("failed", "mail", None, why))
            return
        self._deliver(journal, d, composed, subject, pending, queued)

    def _too_big(self, composed: Composed, *, dry_run: bool) -> str | None:
        """Why ``composed`` may not be sent (over the account's maximum or the server's SIZE),
        as one line with the sizes and the limit; None when it fits. Checked before MAIL.

        Over the account's maximum it is refused whatever the server; under it, the
        server's SIZE is asked for (connecting, unless a dry run) and holds too.
        """
        size = composed.size
        if size <= self.max_bytes:
            if dry_run:
                return None
            if self.conn is None or not self.conn.is_open:
                try:
                    self._connection()  # the server's SIZE comes with its EHLO
                except _ConnectionDown:
                    return None  # the attempt defers the message, as for any message
            if self.server_max is None or size <= self.server_max:
                return None
        server = self.server_max if self.server_asked else None
        limit = server if server and server < self.max_bytes else self.max_bytes
        self._limit = limit
        if server:
            said = f"server SIZE {_mb(server)}"
        else:
            said = "server states no SIZE" if self.server_asked else "server not asked"
        return (
            f"message is {_mb(size)} ({size:,} bytes), over the limit of {_mb(limit)} "
            f"({said}; account maximum {_mb(self.max_bytes)}): not sent"
        )

    def _supports_smtputf8(self) -> bool:
        try:
            return self._connection().supports_smtputf8
        except _ConnectionDown:
            return True  # decided when the queue retries; the message is deferred below

    def _connection(self) -> SMTPConnection:
        if self._warm_error is not None:
            error, self._warm_error = self._warm_error, None
            raise error
        if self.down is not None:
            raise _ConnectionDown(self.down)
        if self.conn is not None and self.conn.is_open:
            if self.sent_on_conn < self.opt.per_connection:
                return self.conn
            self._drain()
            self.conn.close()
        password, self._password = self._password, None  # warm_up's, for one connection
        if password is None:
            password = accounts_mod.password_for(self.ws, self.account)
        delay = self.opt.backoff
        for attempt in range(1, self.opt.max_attempts + 1):
            conn = SMTPConnection(self.account.server, password, timeout=self.opt.timeout)
            try:
                conn.open()  # InsecureAuthError (not an SMTPError) goes up as it is
            except SMTPError as exc:
                permanent = exc.step in ("tls", "auth") or (exc.code or 0) >= 500
                if permanent:
                    raise
                if attempt == self.opt.max_attempts:
                    self.down = Outcome("deferred", exc.step, exc.code, str(exc))
                    raise _ConnectionDown(self.down) from None
                time.sleep(delay)
                delay *= 2
                continue
            self.conn, self.pipe, self.sent_on_conn = conn, Pipeline(conn), 0
            self.server_max, self.server_asked = conn.size_limit, True
            return conn
        raise AssertionError("unreachable")

    def _deliver(
        self,
        journal: Journal,
        d: Delivery,
        c: Composed,
        subject: str,
        pending: list[tuple[str, str]],
        queued: Any,
    ) -> None:
        self._attempt(_Job(journal, d, c, subject, dict(pending), queued, self.opt.backoff))
        self._follow_up()

    def _attempt(self, job: _Job) -> None:
        """Hand one attempt to the pipeline; ``_settle`` hears how it went."""
        self._pace()
        job.started = time.perf_counter()
        try:
            self._connection()
        except _ConnectionDown as down:
            self._settle(job, dict.fromkeys(job.roles, down.outcome))
            return
        self.sent_on_conn += 1
        assert self.pipe is not None
        self.pipe.submit(
            job.c.envelope_from,
            list(job.roles),
            job.c.data,
            smtputf8=job.c.needs_smtputf8,
            done=lambda outcomes: self._settle(job, outcomes),
        )
        if self.min_interval:  # paced: each message completes before the next starts
            self._drain()

    def _settle(self, job: _Job, outcomes: dict[str, Outcome] | None) -> None:
        """Journal one attempt's outcome (called as its reply arrives); line up what is left."""
        if outcomes is None:
            self.resend.append(job)
            return
        ms = (time.perf_counter() - job.started) * 1000
        retry = {}
        last = job.attempt == self.opt.max_attempts or self.down is not None
        for addr, out in outcomes.items():
            status = out.status
            self._log(
                job.journal,
                job.d,
                job.c,
                job.subject,
                addr,
                job.roles[addr],
                job.queued,
                status,
                out,
                attempt=job.attempt,
                ms=ms,
                final=status != "deferred" or last,
            )
            if status == "deferred":
                retry[addr] = job.roles[addr]
        if any(o.status == "sent" for o in outcomes.values()) and not job.archived:
            job.archived = self._archive(job.journal, job.d, job.c, job.subject)
        if not retry:
            return
        if last:
            for addr, role in retry.items():
                self._queue(
                    job.journal, job.d, job.c, job.subject, addr, role, job.attempt, outcomes[addr]
                )
            return
        job.roles, job.attempt = retry, job.attempt + 1
        self.retry.append(job)

    def _follow_up(self) -> None:
        """Send again what came back: at once if it never reached the server, else after a pause."""
        while self.resend or self.retry:
            if self.resend:
                self._attempt(self.resend.pop(0))
                continue
            self._drain()  # a retry waits for what is in flight (which may come back too)
            if self.resend:
                continue
            job = self.retry.pop(0)
            time.sleep(job.delay)
            job.delay *= 2
            self._attempt(job)

    def _drain(self) -> None:
        if self.pipe is not None:
            self.pipe.drain()

    def _flush(self) -> None:
        """Settle everything in flight, retries included."""
        self._drain()
        while self.resend or self.retry:
            self._follow_up()
            self._drain()

    def _pace(self) -> None:
        if self.min_interval:
            wait = self.last_send + self.min_interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.last_send = time.monotonic()

    # -- records -------------------------------------------------------------------------

    def _log(
        self,
        journal: Journal,
        d: Delivery,
        c: Composed | None,
        subject: str | None,
        addr: str,
        role: str,
        queued: Any,
        status: str,
        out: Outcome,
        *,
        attempt: int = 1,
        ms: float | None = None,
        final: bool = True,
    ) -> None:
        journal.log(
            out,
            status=status,
            delivery_key=d.key,
            message_id=c.message_id if c else "",
            account=self.account.name,
            template=self.template.name,
            template_version=self.template.version,
            use_case=self.use_case,
            related_type=d.related[0] if d.related else None,
            related_id=str(d.related[1]) if d.related else None,
            recipient=addr,
            role=role,
            subject=subject,
            attempt=attempt,
            queued_at=queued,
            duration_ms=round(ms, 2) if ms is not None else None,
            size_bytes=c.size if c else None,
        )
        if final:
            self.result.counts[status] += 1

    def _queue(
        self,
        journal: Journal,
        d: Delivery,
        c: Composed,
        subject: str,
        addr: str,
        role: str,
        attempts: int,
        out: Outcome,
    ) -> None:
        """Hand a still-deferred recipient to the retry queue (``retry-deferred``)."""
        context = {
            "batch_id": self.batch_id,
            "template": self.template.name,
            "template_version": self.template.version,
            "use_case": self.use_case,
            "related_type": d.related[0] if d.related else None,
            "related_id": str(d.related[1]) if d.related else None,
            "role": role,
            "subject": subject,
            "to": list(d.to),
            "cc": list(d.cc),
            "attachments": list(c.attachment_names),
            "smtputf8": c.needs_smtputf8,
        }
        deferred.enqueue(
            self.ws,
            journal,
            c.message_id,
            c.envelope_from,
            addr,
            d.key,
            self.account.name,
            c.data,
            attempts,
            out,
            context,
        )

    def _archive(self, journal: Journal, d: Delivery, c: Composed, subject: str) -> bool:
        if not self.account.sent_archiving:
            return False
        archive.record_sent(
            journal,
            self.bundle,
            c.data,
            message_id=c.message_id,
            account=self.account.name,
            from_addr=self.account.from_address,
            to=list(d.to),
            cc=list(d.cc),
            subject=subject,
            related_type=d.related[0] if d.related else None,
            related_id=str(d.related[1]) if d.related else None,
            attachments=list(c.attachment_names),
            delivery_key=d.key,
            batch_id=self.batch_id,
        )
        return True
