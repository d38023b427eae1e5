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

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sysmail_ops.config import accounts as accounts_mod
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import ValidationError
from sysmail_ops.inputs import read_records
from sysmail_ops.mail.mime import Attachment, InlineImage
from sysmail_ops.sending.delivery import Delivery, personal_unsubscribe
from sysmail_ops.sending.engine import BatchSender, SendOptions, SendResult
from sysmail_ops.sending.links import unsubscribe_url
from sysmail_ops.sending.worker import AUTO_THRESHOLD
from sysmail_ops.templates import catalog as templates

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

    Every record is checked first (address, key, the fields the template uses, and
    that it renders within the render budget); any bad record stops the batch
    before anything is sent or written. A file
    is read twice, so memory does not grow with its length. With
    ``unsubscribe_links`` each message gets its recipient's own unsubscribe
    link (``links.unsubscribe_url``): in ``List-Unsubscribe`` and as the
    template field ``unsubscribe_url``.
    """
    opts = options or SendOptions()
    sender = BatchSender(ws, account, template, use_case=use_case, options=opts)
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
        try:
            d.unsubscribe_url = unsubscribe_url(ws, d.to[0])
        except ValidationError:
            return d  # a bad address: the checks below name the record
        d.record = {**d.record, "unsubscribe_url": d.unsubscribe_url}
        return d

    if isinstance(records, Iterator):
        raise ValidationError("send_batch needs records it can read twice (a list, a file)")
    try:
        for total, d in enumerate(deliveries(), 1):
            if total == AUTO_THRESHOLD:  # a long batch: its workers start while the rest is read
                sender.start_workers(total)
            try:
                accounts_mod.check_address(d.to[0], f"record {total}: address")
            except ValidationError as exc:
                problems.append(str(exc))
            missing = [f for f in needed if f not in d.record]
            if missing:
                problems.append(f"record {total}: missing field(s) {', '.join(sorted(missing))}")
            else:  # a record that makes the template go over its render budget
                try:
                    sender.composer.check_budget(d.record)
                except templates.RenderBudgetError as exc:
                    problems.append(f"record {total}: {exc}")
            if len(problems) >= 5:
                break
        if problems:
            more = " (and maybe more)" if len(problems) >= 5 else ""
            raise ValidationError("; ".join(problems) + more + "; nothing was sent")
    except BaseException:
        sender.stop_workers()
        raise
    return sender.run(deliveries(), total=total)
