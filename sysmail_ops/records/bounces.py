"""Bounces: delivery reports found among received mail, fed to the log and the suppression list.

Recognising a bounce is Mailman's ``flufl.bounce``: RFC 3464 delivery status
notifications (``multipart/report``) and the common non-standard formats
(Postfix, Exim, qmail, Exchange, ...). For a DSN the per-recipient ``Status``
(e.g. 5.1.1) and ``Diagnostic-Code`` are read from its
``message/delivery-status`` part; for the other formats flufl.bounce's own
verdict (permanent or temporary) stands.

Each bounce:

- is kept in ``bounces`` (recipient, hard or soft, status, diagnostic, which
  received message reported it);
- is linked to the send it reports on: the log row whose Message-ID is the
  original's (from the report's ``message/rfc822`` or ``text/rfc822-headers``
  part), else the latest ``sent`` row to that recipient from that account
  (the envelope);
- adds a send log row with status ``bounced`` for that delivery (same
  batch-independent fields, ``smtp_phase`` ``dsn``, the status and diagnostic
  as the reply), which the analytics count;
- puts the address on the suppression list with reason ``bounce`` when it is
  hard (5.x.x), or when it is the ``soft_bounce_limit``-th soft one (default 3)
  within 7 days.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from email.message import Message
from typing import TYPE_CHECKING, Any

from sysmail_ops.config.settings import get_setting
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import ValidationError
from sysmail_ops.mail.incoming import Parsed, normalise_id
from sysmail_ops.records.sendlog import LOG_COLUMNS
from sysmail_ops.records.suppression import normalise

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

SOFT_WINDOW = timedelta(days=7)
_STATUS = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")
_CODE = re.compile(r"\b([245]\d\d)\b")


def _text(value: Any) -> str:
    return " ".join(str(value or "").split())


def _dsn_blocks(msg: Message) -> dict[str, tuple[str | None, str | None]]:
    """Recipient -> (status, diagnostic) from each message/delivery-status part."""
    out: dict[str, tuple[str | None, str | None]] = {}
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status" or not part.is_multipart():
            continue
        for block in part.get_payload():
            if not isinstance(block, Message):
                continue
            rcpt = block.get("Final-Recipient") or block.get("Original-Recipient")
            if not rcpt:
                continue
            addr = _text(rcpt).split(";", 1)[-1].strip().strip("<>").lower()
            status = _STATUS.search(_text(block.get("Status")))
            diag = _text(block.get("Diagnostic-Code")).split(";", 1)[-1].strip() or None
            out[addr] = (status.group(0) if status else None, diag[:1000] if diag else None)
    return out


def _original_id(msg: Message) -> str | None:
    """The Message-ID of the mail the report is about, where the report includes its headers."""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822" and part.is_multipart():
            inner = part.get_payload(0)
            if isinstance(inner, Message) and inner.get("Message-ID"):
                return normalise_id(_text(inner.get("Message-ID")))
        if ctype == "text/rfc822-headers":
            from email.parser import HeaderParser

            payload = part.get_payload(decode=True)
            text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
            found = HeaderParser().parsestr(text).get("Message-ID")
            if found:
                return normalise_id(_text(found))
    return None


def _quiet_detectors() -> None:
    """flufl.bounce logs a detector's exception with its traceback; we report it ourselves."""
    log = logging.getLogger("flufl.bounce")
    if log.propagate:
        log.addHandler(logging.NullHandler())
        log.propagate = False


_DAEMONS = ("mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon")


def may_be_bounce(msg: Message) -> bool:
    """Whether a message looks like a delivery report at all, before the detectors run.

    A report is sent with the null reverse-path (RFC 5321 4.5.5, so ``Return-Path: <>``),
    from a mailer daemon or postmaster, or is a ``multipart/report`` (RFC 6522); the
    detectors cost ~4 ms a message, which a customer's reply need not pay.
    """
    if msg.get_content_type() == "multipart/report":
        return True
    if str(msg.get("Return-Path", "x")).strip() in ("<>", ""):
        return True
    sender = " ".join(str(msg.get(h, "")) for h in ("From", "Sender")).lower()
    return any(d in sender for d in _DAEMONS)


def detect(msg: Message) -> list[dict[str, Any]]:
    """The bounced recipients a message reports: address, hard, status, diagnostic, detector.

    Empty for mail that is not a bounce. Never raises on odd input: a detector
    that fails on a message counts as not recognising it.
    """
    from flufl.bounce import all_failures

    if not may_be_bounce(msg):
        return []
    _quiet_detectors()
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # one of its heuristics tripping on hostile input
        return []
    blocks = _dsn_blocks(msg)
    found: list[dict[str, Any]] = []
    for raw, perm in [*((a, True) for a in permanent), *((a, False) for a in temporary)]:
        addr = raw.decode("ascii", "replace").strip().strip("<>").lower()
        if not addr or "@" not in addr or any(f["recipient"] == addr for f in found):
            continue
        status, diag = blocks.get(addr, (None, None))
        hard = status.startswith("5") if status else perm
        found.append(
            {
                "recipient": addr,
                "hard": hard,
                "status": status,
                "diagnostic": diag,
                "detector": "dsn" if addr in blocks else "heuristic",
            }
        )
    return found


def record(
    con: duckdb.DuckDBPyConnection,
    ws: Workspace,
    account: str,
    archive_id: str,
    parsed: Parsed,
    now: datetime,
) -> int:
    """Record the bounces a received message reports (inside the fetch's transaction)."""
    assert parsed.message is not None
    found = detect(parsed.message)
    if not found:
        return 0
    original = _original_id(parsed.message)
    limit = int(get_setting(ws, "soft_bounce_limit", con=con))
    for n, b in enumerate(found, 1):
        log = _log_row(con, account, b["recipient"], original)
        con.execute(
            "INSERT INTO bounces VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                archive_id, account, b["recipient"], b["hard"], b["status"], b["diagnostic"],
                b["detector"], original or (log or {}).get("message_id"),
                (log or {}).get("id"), (log or {}).get("delivery_key"), now,
            ],
        )  # fmt: skip
        if log is not None:
            _log_bounced(con, log, b, archive_id, n)
        _maybe_suppress(con, b, account, limit, now)
    return len(found)


def _log_row(
    con: duckdb.DuckDBPyConnection, account: str, recipient: str, original: str | None
) -> dict[str, Any] | None:
    cols = ["id", *LOG_COLUMNS]
    select = (
        f"SELECT {', '.join(cols)} FROM send_log WHERE lower(recipient) = ? AND status = 'sent'"  # noqa: S608
    )
    row = None
    if original:
        row = con.execute(
            select + " AND message_id = ? ORDER BY id DESC LIMIT 1", [recipient, original]
        ).fetchone()
    if row is None:  # the envelope: the latest mail from this account to that address
        row = con.execute(
            select + " AND account = ? ORDER BY id DESC LIMIT 1", [recipient, account]
        ).fetchone()
    return dict(zip(cols, row, strict=True)) if row else None


def _log_bounced(
    con: duckdb.DuckDBPyConnection, log: dict[str, Any], b: dict[str, Any], aid: str, n: int
) -> None:
    """The delivery's outcome: a send log row ``bounced`` beside the ``sent`` one it reports on."""
    batch = f"bounce-{aid}"
    if con.execute(
        "SELECT 1 FROM send_log WHERE batch_id = ? AND recipient = ?", [batch, log["recipient"]]
    ).fetchone():
        return
    row = {c: log[c] for c in LOG_COLUMNS}
    code = _CODE.search(b["diagnostic"] or "")
    row.update(
        batch_id=batch,
        seq=n,
        status="bounced",
        smtp_phase="dsn",
        smtp_code=int(code.group(1)) if code else None,
        smtp_reply=" ".join(filter(None, [b["status"], b["diagnostic"]]))[:1000] or None,
        next_attempt_at=None,
    )
    con.execute(
        f"INSERT INTO send_log ({', '.join(LOG_COLUMNS)}) VALUES "  # noqa: S608 - our columns
        f"({', '.join('?' * len(LOG_COLUMNS))})",
        [row[c] for c in LOG_COLUMNS],
    )


def _maybe_suppress(
    con: duckdb.DuckDBPyConnection, b: dict[str, Any], account: str, limit: int, now: datetime
) -> None:
    try:
        addr = normalise(b["recipient"])
    except ValidationError:
        return  # not an address we could ever have mailed
    if b["hard"]:
        why = f"hard bounce {b['status'] or ''} via {account}".replace("  ", " ")
    else:
        (soft,) = con.execute(
            "SELECT count(*) FROM bounces WHERE lower(recipient) = ? AND NOT hard"
            " AND received_at >= ?",
            [addr, now - SOFT_WINDOW],
        ).fetchone() or (0,)
        if soft < limit:
            return
        why = f"{soft} soft bounces in 7 days via {account}"
    con.execute(
        "INSERT INTO suppression VALUES (?, 'bounce', ?, ?) ON CONFLICT DO NOTHING",
        [addr, why[:200], now],
    )


def list_bounces(ws: Workspace, *, limit: int | None = 100) -> pd.DataFrame:
    """Recorded bounces, newest first."""
    return ws.store.select("bounces", [], order_by="received_at DESC, recipient", limit=limit)
