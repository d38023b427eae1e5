"""A report mail over the size limit: send it again without its largest attachments.

The sending pipeline refuses a message over the server's SIZE or the
account's maximum (logged ``failed``, phase ``size``) and says which, with
the sizes. For a report subscription that is not the end: each recipient
refused so gets the mail again without the attachments that made it too big,
largest first, with a note saying what was left out and why; the owner is
told the sizes (``runs`` sends the notice).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.mail.mime import Attachment
from sysmail_ops.sending import batch as sending

MB = 2**20
# An attachment part: base64 (4 bytes per 3, a CRLF per 76) plus its headers and boundary.
_PART_OVERHEAD = 512
MARGIN = 0.98  # aim under the limit by 2%: a header or the boundary may differ by a few bytes


def encoded_size(a: Attachment) -> int:
    """About what ``a`` adds to the message, in bytes."""
    b64 = 4 * ((len(a.data) + 2) // 3)
    return b64 + 2 * (b64 // 76 + 1) + _PART_OVERHEAD


def fit(
    attachments: Sequence[Attachment], size: int, limit: int
) -> tuple[list[Attachment], list[Attachment]]:
    """(kept, left out): the largest left out first until ``size`` comes under ``limit``."""
    left_out: list[Attachment] = []
    for a in sorted(attachments, key=lambda a: len(a.data), reverse=True):
        if size <= limit * MARGIN:
            break
        left_out.append(a)
        size -= encoded_size(a)
    kept = [a for a in attachments if a not in left_out]
    return kept, left_out


def _mb(size: int) -> str:
    return f"{size / MB:.1f} MB"


def describe(left_out: Sequence[Attachment]) -> str:
    return ", ".join(f"{a.filename} ({_mb(len(a.data))})" for a in left_out)


@dataclass
class Refit:
    """What the second send did: the counts of both sends together, and the owner's lines."""

    counts: Counter[str]
    recipients: int = 0  # mailed again without attachments
    owner_lines: list[str] = field(default_factory=list)


def refit_record(
    record: Mapping[str, Any], left_out: Sequence[Attachment], size: int, limit: int
) -> dict[str, Any]:
    """The record of a mail sent again without ``left_out``: a note saying what was left out
    (``attachments_note``, also added to ``summary``), and no "attached as report.html" line
    when report.html is among them."""
    note = (
        f"Left out of this mail: {describe(left_out)}; with them it would be {_mb(size)}, "
        f"over the {_mb(limit)} limit of the mail server. Ask the report's owner for them."
    )
    summary = str(record.get("summary") or "")
    refit = {
        **record,
        "attachments_note": note,
        "summary": f"{summary} ({note})" if summary else note,
    }
    if any(a.filename == "report.html" for a in left_out):
        refit["html_attachment_note"] = ""
    return refit


def resend_without_big_attachments(
    ws: Workspace,
    account: str,
    template: str,
    deliveries: Sequence[sending.Delivery],
    first: sending.SendResult,
    *,
    use_case: str,
) -> Refit:
    """Mail each delivery ``first`` refused for its size again, its largest attachments left
    out and a note in its record (``attachments_note``, also added to ``summary``)."""
    by_key = {d.key or ", ".join(d.to): d for d in deliveries}
    again: list[sending.Delivery] = []
    lines: list[str] = []
    for key, (size, limit) in first.too_big.items():
        d = by_key.get(key)
        if d is None or not d.attachments:
            lines.append(
                f"{', '.join(d.to) if d else key}: the mail is {_mb(size)}, over the limit of "
                f"{_mb(limit)}, and has no attachment to leave out: not sent"
            )
            continue
        kept, left_out = fit(d.attachments, size, limit)
        record = refit_record(d.record, left_out, size, limit)
        again.append(replace(d, attachments=kept, record=record))
        lines.append(
            f"{', '.join(d.to)}: the mail was {_mb(size)} ({size:,} bytes), over the limit of "
            f"{_mb(limit)}; sent again without {describe(left_out)}"
        )
    counts = Counter(first.counts)
    if again:
        second = sending.send_deliveries(ws, account, template, again, use_case=use_case)
        retried = sum(len(d.to) + len(d.cc) + len(d.bcc) for d in again)
        counts["failed"] -= retried
        counts.update(second.counts)
        for key, (size, limit) in second.too_big.items():
            lines.append(
                f"{key}: still {_mb(size)} without those attachments, over {_mb(limit)}: not sent"
            )
    return Refit(+counts, len(again), lines)
