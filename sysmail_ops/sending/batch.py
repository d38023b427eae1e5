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

import contextlib
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import chain, islice
from typing import Any

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import BadRecordsError, ValidationError
from sysmail_ops.inputs import convert_fields, parse_types, read_numbered_records
from sysmail_ops.mail.addresses import check_address
from sysmail_ops.mail.mime import Attachment, InlineImage
from sysmail_ops.sending.delivery import Delivery, personal_unsubscribe
from sysmail_ops.sending.engine import BatchSender, SendOptions, SendResult
from sysmail_ops.sending.links import unsubscribe_url
from sysmail_ops.sending.spool import Spool
from sysmail_ops.sending.worker import AUTO_THRESHOLD, ComposePool

__all__ = [
    "Delivery",
    "SendOptions",
    "SendResult",
    "personal_unsubscribe",
    "records_to_deliveries",
    "send",
    "send_batch",
    "send_deliveries",
]


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
    sender = BatchSender(ws, account, template, use_case=use_case, options=options or SendOptions())
    built = sender.build([delivery])  # raise on bad input before a journal exists
    return sender.run([delivery], total=1, built=built)


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
    sender = BatchSender(ws, account, template, use_case=use_case, options=options or SendOptions())
    built = sender.build(deliveries)
    return sender.run(deliveries, total=len(deliveries), built=built)


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


LISTED = 1000  # bad records listed one line each; past that they are counted


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
    types: str | Mapping[str, str] | None = None,
) -> SendResult:
    """Send ``template`` to every record (one message each) through ``account``.

    Every record is checked and built (rendered and composed, under the render
    budget) before the first message goes out: its address, its key, its typed
    fields (``types``, e.g. ``"amount=float,count=int"``: ``inputs.parse_types``;
    CSV values are text otherwise, JSON values keep their types), the fields the
    template uses, and the render itself. If any record is bad, nothing is sent
    or written: ``BadRecordsError`` lists one line per bad record, such as
    ``record 3 (line 4): amount: '12,5' is not a number``. Otherwise what the
    check rendered is what is sent (``spool.Spool``): each record is rendered
    once, and the records file is read once (an iterator of records will do).

    With ``unsubscribe_links`` each message gets its recipient's own unsubscribe
    link (``links.unsubscribe_url``): in ``List-Unsubscribe`` and as the
    template field ``unsubscribe_url``.
    """
    opts = options or SendOptions()
    field_types = parse_types(types)
    sender = BatchSender(ws, account, template, use_case=use_case, options=opts)
    needed = sorted(sender.compiled.fields_used)
    problems: list[str] = []
    bad = 0
    typed_seen: set[str] = set()
    labels: deque[str] = deque()  # the record label of each delivery handed to the builder

    def checked() -> Iterator[Delivery]:
        """The deliveries of the records that pass the checks made before building."""
        nonlocal bad
        numbered = read_numbered_records(records)
        for n, (where, rec) in enumerate(numbered, 1):
            label = f"record {n} ({where})" if where else f"record {n}"
            found: list[str] = []
            if field_types:
                typed_seen.update(f for f in field_types if f in rec)
                found += [f"{f}: {why}" for f, why in convert_fields(rec, field_types)]
            d = _delivery(rec, to_column, key_column, key_prefix, related_type, related_column)
            if isinstance(d, str):
                found.append(d)
            elif unsubscribe_links:
                _with_unsubscribe(ws, d)
            fields = rec if isinstance(d, str) else d.record
            found += [f"{f}: missing (the template uses it)" for f in needed if f not in fields]
            if found:
                bad += 1
                if len(problems) < LISTED:
                    problems.append(f"{label}: {'; '.join(found)}")
                continue
            assert not isinstance(d, str)
            d.kept = n  # a worker that renders it keeps the rendering under this number
            labels.append(label)
            yield d

    # While the records are checked, the sender folds dead batches' journals and connects.
    warm = threading.Thread(target=sender.warm_up, name="send-warm-up", daemon=True)
    with Spool(ws.home) as spool:
        try:
            warm.start()
            deliveries = checked()
            head = list(islice(deliveries, AUTO_THRESHOLD))
            sender.start_workers(len(head))  # a long batch (or workers asked for): start now
            chunks = _chunked(chain(head, deliveries), opts.chunk)
            # Rendered by the workers that compose and send next, if the batch has them.
            pool = sender.started_workers() or ComposePool(sender.composer, 0)
            with contextlib.nullcontext() if pool is sender.started_workers() else pool:
                for chunk, results, _following in pool.renderings(chunks):
                    for d, (rendered, error) in zip(chunk, results, strict=True):
                        label = labels.popleft()
                        if error is not None:
                            bad += 1
                            if len(problems) < LISTED:
                                problems.append(f"{label}: {error}")
                        elif not bad:  # once one is bad nothing is sent: keep no more
                            d.rendered = rendered
                            spool.add(d)
            unseen = [f for f in field_types if f not in typed_seen]
            if unseen and spool.count + bad:
                raise ValidationError(
                    f"types name {', '.join(map(repr, unseen))}, which no record has"
                )
            if bad:
                raise _bad_records(problems, bad)
        except BaseException:
            sender.stop_workers()
            _close_when_done(warm, sender)
            raise
        warm.join()
        return sender.run(iter(spool), total=spool.count)


WARM_UP_WAIT = 10.0  # seconds a stopped batch waits for its warm-up's connection attempt


def _close_when_done(warm: threading.Thread, sender: BatchSender) -> None:
    """Close the connection a batch that will not run opened. The caller may exit next,
    and a thread still running then can crash the interpreter on its way out (seen:
    SIGABRT inside DuckDB, SIGSEGV later): wait for the warm-up to be done with the store,
    then for its connection attempt, up to ``WARM_UP_WAIT`` (a server that hangs)."""
    if warm.ident is not None:
        sender.store_done.wait()
        warm.join(WARM_UP_WAIT)
    if not warm.is_alive():
        sender.close_connection()
        return

    def close() -> None:
        warm.join()
        sender.close_connection()

    threading.Thread(target=close, name="send-warm-up-close", daemon=True).start()


def _bad_records(problems: list[str], bad: int) -> BadRecordsError:
    shown = "; ".join(problems[:5])
    more = f"; and {bad - 5:,} more" if bad > 5 else ""
    return BadRecordsError(f"{shown}{more}: {bad:,} bad record(s), nothing was sent", problems, bad)


def _delivery(
    rec: dict[str, Any],
    to_column: str,
    key_column: str | None,
    key_prefix: str,
    related_type: str | None,
    related_column: str | None,
) -> Delivery | str:
    """The record's delivery, or what is wrong with its address or key."""
    addr = rec.get(to_column)
    if not isinstance(addr, str) or not addr.strip():
        return f"{to_column}: no address"
    try:
        check_address(addr.strip(), to_column)
    except ValidationError as exc:
        return str(exc)
    key = None
    if key_column:
        raw = rec.get(key_column)
        if raw is None or str(raw) == "":
            return f"{key_column}: no key"
        key = f"{key_prefix}{raw}"
    related = None
    if related_type and related_column and rec.get(related_column) is not None:
        related = (related_type, str(rec[related_column]))
    return Delivery([addr.strip()], rec, key=key, related=related)


def _with_unsubscribe(ws: Workspace, d: Delivery) -> None:
    d.unsubscribe_url = unsubscribe_url(ws, d.to[0])
    d.record = {**d.record, "unsubscribe_url": d.unsubscribe_url}


def _chunked(items: Iterable[Delivery], size: int) -> Iterator[list[Delivery]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk
