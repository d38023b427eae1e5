"""The sending pipeline: render -> compose -> dedupe -> send -> log -> archive.

Every use case (a manual send, a batch, subscriptions, workflow events,
campaigns, the toolkit's own notices) delivers through ``send`` or
``send_batch``. Nothing else talks SMTP; nothing else writes the send log.

Guarantees:
- a delivery key already sent (or queued for retry) to a recipient is skipped
  and logged ``skipped_duplicate``; a send without a key is never deduplicated;
- each reply is journalled the moment it arrives, so a killed process loses
  at most the one message whose 250 was not yet written, per connection;
- temporary failures (4xx, dropped connections) are retried with backoff, then
  queued for ``retry_deferred``; permanent ones (5xx) are recorded, not retried.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from tqdm import tqdm

from sysmail_ops import accounts as accounts_mod
from sysmail_ops import archive, deferred, sendlog, suppression, templates
from sysmail_ops.compose import Attachment, Composed, InlineImage, compose
from sysmail_ops.errors import (
    InsecureAuthError,
    SMTPError,
    SysmailError,
    ValidationError,
)
from sysmail_ops.pipeline import Pipeline
from sysmail_ops.records import read_records
from sysmail_ops.sendlog import Journal, new_batch_id
from sysmail_ops.store import utcnow
from sysmail_ops.transport import Outcome, SMTPConnection
from sysmail_ops.workspace import Workspace


@dataclass
class Delivery:
    """One message of a batch: who gets it and the record its template renders."""

    to: Sequence[str]
    record: Mapping[str, Any]
    cc: Sequence[str] = ()
    bcc: Sequence[str] = ()
    reply_to: str | None = None
    key: str | None = None
    related: tuple[str, str] | None = None
    attachments: Sequence[Attachment] = ()
    inline_images: Sequence[InlineImage] = ()
    headers: Mapping[str, str] = field(default_factory=dict)  # extra headers, checked for CR/LF
    # A personal unsubscribe link (``surveys.unsubscribe_url``): List-Unsubscribe with it and
    # the account's mailto; List-Unsubscribe-Post (RFC 8058 one-click) when it is https.
    unsubscribe_url: str | None = None


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


@dataclass
class SendResult:
    """What a send or batch did, counted per status (one count per recipient)."""

    batch_id: str
    counts: Counter[str] = field(default_factory=Counter)
    messages: int = 0
    errors: list[str] = field(default_factory=list)
    preview_dir: str | None = None

    def summary(self) -> str:
        parts = [f"{n} {s}" for s, n in sorted(self.counts.items())] or ["nothing to send"]
        return f"batch {self.batch_id}: " + ", ".join(parts)


def personal_unsubscribe(url: str, account: accounts_mod.Account) -> dict[str, str]:
    """List-Unsubscribe (the link, then the account's mailto) and, for https, one-click POST."""
    if not isinstance(url, str):
        raise ValidationError(f"unsubscribe_url must be text, got {type(url).__name__}")
    url = url.strip()
    if not url.startswith(("https://", "http://")) or len(url) > 2000:
        raise ValidationError(f"unsubscribe_url must be an http(s) URL, got {url[:60]!r}")
    if any(c.isspace() or c in "<>," or not c.isprintable() for c in url):
        raise ValidationError("unsubscribe_url must not contain spaces, line breaks, commas or <>")
    links = [f"<{url}>"]
    if account.unsubscribe_mailto:
        links.append(f"<mailto:{account.unsubscribe_mailto}?subject=unsubscribe>")
    headers = {"List-Unsubscribe": ", ".join(links)}
    if url.startswith("https://"):  # RFC 8058: one-click only for an https URI
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


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


class _Sender:
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
        with ws.store.connect() as con:  # one store visit (~30 ms each) for both
            self.account = accounts_mod.get_account(ws, account, con=con)
            self.template = templates.get_template(ws, template, template_version, con=con)
        self.compiled = templates.compile_template(self.template)
        self.use_case = use_case
        self.opt = options
        self.batch_id = new_batch_id()
        self.result = SendResult(self.batch_id)
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
        self.extra_headers = self._list_unsubscribe()
        # Loaded once per batch: the send loop tests membership without visiting the store.
        self.suppressed = (
            suppression.suppressed_set(ws) if use_case in suppression.USE_CASES else frozenset()
        )

    def _headers(self, d: Delivery) -> Mapping[str, str]:
        """The account's extra headers, then the delivery's own (which win)."""
        if not d.headers and d.unsubscribe_url is None:
            return self.extra_headers
        merged = {k.lower(): (k, v) for k, v in self.extra_headers.items()}
        for k, v in d.headers.items():
            if not isinstance(k, str):
                raise ValidationError(f"header names must be text, got {type(k).__name__}")
            merged[k.lower()] = (k, v)
        if d.unsubscribe_url is not None:
            if "list-unsubscribe" in {k.lower() for k in d.headers}:
                raise ValidationError("give either unsubscribe_url or a List-Unsubscribe header")
            merged.pop("list-unsubscribe-post", None)
            for k, v in personal_unsubscribe(d.unsubscribe_url, self.account).items():
                merged[k.lower()] = (k, v)
        return dict(merged.values())

    def _list_unsubscribe(self) -> dict[str, str]:
        a = self.account
        if a.kind != "marketing" or not (a.unsubscribe_mailto or a.unsubscribe_url):
            return {}
        links = []
        if a.unsubscribe_mailto:
            links.append(f"<mailto:{a.unsubscribe_mailto}?subject=unsubscribe>")
        if a.unsubscribe_url:
            links.append(f"<{a.unsubscribe_url}>")
        headers = {"List-Unsubscribe": ", ".join(links)}
        if a.unsubscribe_url:
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        return headers

    # -- building ------------------------------------------------------------------------

    def prepare(self, d: Delivery) -> tuple[Composed, str]:
        """Render and compose one delivery; raises on bad input, sends nothing."""
        rendered = self.compiled.render(d.record)
        composed = compose(
            from_addr=self.account.from_address,
            from_name=self.account.display_name,
            to=d.to,
            cc=d.cc,
            bcc=d.bcc,
            reply_to=d.reply_to,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            attachments=d.attachments,
            inline_images=d.inline_images,
            extra_headers=self._headers(d),
        )
        return composed, rendered.subject

    # -- the loop ------------------------------------------------------------------------

    def run(self, deliveries: Iterable[Delivery], total: int | None = None) -> SendResult:
        """Send every delivery, a chunk at a time, folding the journal after each chunk.

        One thread renders, sends and writes log rows. Sending is pipelined
        across messages (``pipeline.Pipeline``): the next message is built while
        the server takes in the previous one, whose reply is journalled before
        the next message's data goes out. (Rendering or archiving in a second
        thread was measured slower: the threads fight over the GIL and every
        server reply waits for it.)
        """
        sendlog.fold_orphans(self.ws)
        journal = Journal(self.ws, self.batch_id)
        self.bundle = archive.Bundle(self.ws, "sent", self.batch_id)
        bar = (
            tqdm(total=total, unit="msg", desc=f"send {self.account.name}")
            if self.opt.progress
            else None
        )
        try:
            for item in self._prepared(deliveries, journal):
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

    def _prepared(self, deliveries: Iterable[Delivery], journal: Journal) -> Iterator[Any]:
        """Render, compose and mark duplicates, a chunk at a time.

        Before each chunk the journal is folded and the chunk's keys looked up,
        in one visit to the store.
        """
        it = iter(deliveries)
        while chunk := list(islice(it, self.opt.chunk)):
            # Earlier chunks are settled and folded by now, so the store answers for
            # them; only repeats within this chunk need remembering: memory stays flat.
            self._flush()
            done = journal.fold(d.key for d in chunk if d.key)
            seen: set[tuple[str, str]] = set()
            for d in chunk:
                queued = utcnow()
                try:
                    composed, subject = self.prepare(d)
                except SysmailError as exc:
                    yield (d, queued, None, "", exc, frozenset())
                    continue
                dup = set()
                if d.key:
                    for addr, _role in composed.recipients:
                        if (d.key, addr) in done or (d.key, addr) in seen:
                            dup.add(addr)
                        seen.add((d.key, addr))
                yield (d, queued, composed, subject, None, frozenset(dup))

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
        if self.opt.dry_run:
            path = self.ws.preview_dir / self.batch_id / f"{self.result.messages:06d}.eml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(composed.data)
            self.result.preview_dir = str(path.parent)
            settle(pending, "dry_run", Outcome("dry_run"))
            return
        if composed.needs_smtputf8 and not self._supports_smtputf8():
            why = "an address needs SMTPUTF8, which the server does not offer"
            settle(pending, "failed", Outcome("failed", "mail", None, why))
            return
        self._deliver(journal, d, composed, subject, pending, queued)

    def _supports_smtputf8(self) -> bool:
        try:
            return self._connection().supports_smtputf8
        except _ConnectionDown:
            return True  # decided when the queue retries; the message is deferred below

    def _connection(self) -> SMTPConnection:
        if self.down is not None:
            raise _ConnectionDown(self.down)
        if self.conn is not None and self.conn.is_open:
            if self.sent_on_conn < self.opt.per_connection:
                return self.conn
            self._drain()
            self.conn.close()
        password = accounts_mod.password_for(self.ws, self.account)
        delay = self.opt.backoff
        for attempt in range(1, self.opt.max_attempts + 1):
            conn = SMTPConnection(self.account, password, timeout=self.opt.timeout)
            try:
                conn.open()
            except InsecureAuthError:
                raise
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


def send(
    ws: Workspace,
    account: str,
    template: str,
    *,
    to: str | Sequence[str],
    record: Mapping[str, Any],
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    reply_to: str | None = None,
    attachments: Sequence[Attachment] = (),
    inline_images: Sequence[InlineImage] = (),
    use_case: str = "manual",
    related: tuple[str, str] | None = None,
    key: str | None = None,
    options: SendOptions | None = None,
    headers: Mapping[str, str] | None = None,
    unsubscribe_url: str | None = None,
) -> SendResult:
    """Send one templated message through one system email.

    Bad input (unknown account or template, a missing field, an invalid
    address, CR/LF in a header) raises before anything is sent or written.
    For marketing, follow-up and survey sends a recipient on the suppression
    list is not mailed but logged ``suppressed``.
    """
    recipients = [to] if isinstance(to, str) else list(to)
    delivery = Delivery(
        recipients,
        record,
        cc,
        bcc,
        reply_to,
        key,
        related,
        attachments,
        inline_images,
        headers=dict(headers or {}),
        unsubscribe_url=unsubscribe_url,
    )
    sender = _Sender(ws, account, template, use_case=use_case, options=options or SendOptions())
    sender.prepare(delivery)  # raise on bad input before a journal exists
    result = sender.run([delivery], total=1)
    return result


def send_deliveries(
    ws: Workspace,
    account: str,
    template: str,
    deliveries: Sequence[Delivery],
    *,
    use_case: str = "manual",
    options: SendOptions | None = None,
) -> SendResult:
    """Send prepared deliveries (each its own recipients, record, attachments, images).

    For callers that build messages themselves (subscriptions, rules, campaigns).
    Every delivery is rendered and composed first, so bad input raises before
    anything is sent or written.
    """
    sender = _Sender(ws, account, template, use_case=use_case, options=options or SendOptions())
    for d in deliveries:
        sender.prepare(d)
    return sender.run(deliveries, total=len(deliveries))


def records_to_deliveries(
    records: Iterable[Mapping[str, Any]],
    *,
    to_column: str = "email",
    key_column: str | None = None,
    key_prefix: str = "",
    related_type: str | None = None,
    related_column: str | None = None,
) -> Iterator[Delivery]:
    """One delivery per record: the address from ``to_column``, the key from ``key_column``."""
    for n, rec in enumerate(records, 1):
        addr = rec.get(to_column)
        if not isinstance(addr, str) or not addr.strip():
            raise ValidationError(f"record {n} has no address in column {to_column!r}")
        key = None
        if key_column:
            raw = rec.get(key_column)
            if raw is None or str(raw) == "":
                raise ValidationError(f"record {n} has no key in column {key_column!r}")
            key = f"{key_prefix}{raw}"
        related = None
        if related_type and related_column and rec.get(related_column) is not None:
            related = (related_type, str(rec[related_column]))
        yield Delivery([addr.strip()], rec, key=key, related=related)


def send_batch(
    ws: Workspace,
    account: str,
    template: str,
    records: Any,
    *,
    to_column: str = "email",
    key_column: str | None = None,
    key_prefix: str = "",
    use_case: str = "manual",
    related_type: str | None = None,
    related_column: str | None = None,
    options: SendOptions | None = None,
    unsubscribe_links: bool = False,
) -> SendResult:
    """Send ``template`` to every record (one message each) through ``account``.

    Every record is checked first (address, key, the fields the template uses);
    any bad record stops the batch before anything is sent or written. A file
    is read twice, so memory does not grow with its length. With
    ``unsubscribe_links`` each message gets its recipient's own unsubscribe
    link (``surveys.unsubscribe_url``): in ``List-Unsubscribe`` and as the
    template field ``unsubscribe_url``.
    """
    opts = options or SendOptions()
    sender = _Sender(ws, account, template, use_case=use_case, options=opts)
    needed = sender.compiled.fields_used
    problems: list[str] = []
    total = 0

    def deliveries() -> Iterator[Delivery]:
        made = records_to_deliveries(
            read_records(records),
            to_column=to_column,
            key_column=key_column,
            key_prefix=key_prefix,
            related_type=related_type,
            related_column=related_column,
        )
        return map(_with_unsubscribe, made) if unsubscribe_links else made

    def _with_unsubscribe(d: Delivery) -> Delivery:
        from sysmail_ops.surveys import unsubscribe_url  # the token module reads settings

        try:
            d.unsubscribe_url = unsubscribe_url(ws, d.to[0])
        except ValidationError:
            return d  # a bad address: the checks below name the record
        d.record = {**d.record, "unsubscribe_url": d.unsubscribe_url}
        return d

    if isinstance(records, Iterator):
        raise ValidationError("send_batch needs records it can read twice (a list, a file)")
    for total, d in enumerate(deliveries(), 1):
        try:
            accounts_mod.check_address(d.to[0], f"record {total}: address")
        except ValidationError as exc:
            problems.append(str(exc))
        missing = [f for f in needed if f not in d.record]
        if missing:
            problems.append(f"record {total}: missing field(s) {', '.join(sorted(missing))}")
        if len(problems) >= 5:
            break
    if problems:
        more = " (and maybe more)" if len(problems) >= 5 else ""
        raise ValidationError("; ".join(problems) + more + "; nothing was sent")
    return sender.run(deliveries(), total=total)
