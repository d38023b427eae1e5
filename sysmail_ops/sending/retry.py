"""The deferred queue: mail a server put off (4xx, dropped connection) is tried again later.

Like an MTA's queue: the exact bytes (same Message-ID) wait in the
workspace's ``queue/`` folder; ``retry_deferred`` (``sysmail-ops
retry-deferred``, safe to run from cron) re-sends those whose next attempt is
due, with backoff growing from minutes to hours, and gives up after the
queue lifetime (default 2 days), marking them failed.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import NotFoundError, SMTPError, SysmailError
from sysmail_ops.mail.smtp import Outcome, SMTPConnection
from sysmail_ops.records import archive, sendlog, suppression
from sysmail_ops.records.sendlog import Journal, new_batch_id
from sysmail_ops.store import private
from sysmail_ops.store.database import utcnow

FIRST_RETRY = timedelta(minutes=5)
MAX_RETRY = timedelta(hours=4)
LIFETIME = timedelta(days=2)


def queue_dir(ws: Workspace) -> Path:
    return ws.home / "queue"


def next_delay(attempts: int) -> timedelta:
    """5 min, 10, 20, 40, ... capped at 4 h."""
    return min(FIRST_RETRY * (2 ** max(0, attempts - 1)), MAX_RETRY)


def enqueue(
    ws: Workspace,
    journal: Journal,
    message_id: str,
    mail_from: str,
    recipient: str,
    key: str | None,
    account: str,
    data: bytes,
    attempts: int,
    out: Outcome,
    context: dict[str, Any],
) -> None:
    """Keep the message bytes and journal a queue row for one recipient."""
    folder = queue_dir(ws)
    private.make_dirs(folder)
    name = archive.archive_id(message_id, "queue", account) + ".eml"
    path = folder / name
    if not path.exists():
        private.write_file(path, data)
    now = utcnow()
    journal.write(
        "deferred",
        {
            "message_id": message_id,
            "recipient": recipient,
            "delivery_key": key,
            "account": account,
            "eml_path": str(path.relative_to(ws.home)),
            "mail_from": mail_from,
            "attempts": attempts,
            "first_attempt_at": now,
            "next_attempt_at": now + next_delay(1),
            "last_reply": f"{out.code or ''} {out.reply}".strip()[:1000],
            "context": json.dumps(context),
        },
    )


def list_deferred(ws: Workspace) -> list[dict[str, Any]]:
    sendlog.fold_orphans(ws)
    with ws.store.connect() as con:
        rel = con.execute("SELECT * FROM deferred ORDER BY next_attempt_at")
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]


@dataclass
class RetryResult:
    batch_id: str
    counts: Counter[str] = field(default_factory=Counter)
    waiting: int = 0
    busy: bool = False  # another retry of this workspace's queue was running: nothing done

    def summary(self) -> str:
        if self.busy:
            return f"retry-deferred {self.batch_id}: another retry is running; nothing done"
        done = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items())) or "none due"
        return f"retry-deferred {self.batch_id}: {done}; {self.waiting} still waiting"


@contextmanager
def queue_lock(ws: Workspace) -> Iterator[bool]:
    """Hold the queue for one retry; yields False when another process holds it.

    Two retries at once would both send the rows due (``retry-deferred`` from cron while
    ``subscriptions run-due`` retries its own): the second one leaves them to the first.
    """
    folder = queue_dir(ws)
    private.make_dirs(folder)
    fd = private.open_append(folder / ".retry.lock")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # and with it the lock


def retry_deferred(
    ws: Workspace,
    *,
    now: datetime | None = None,
    lifetime: timedelta = LIFETIME,
    timeout: float = 30.0,
    key_prefix: str | None = None,
) -> RetryResult:
    """Re-send deferred deliveries whose next attempt is due; give up past ``lifetime``.

    ``key_prefix``: only deliveries whose key starts with it (``subscription:``). One retry
    at a time per workspace: one started while another runs returns at once, ``busy``.
    """
    now = now or utcnow()
    result = RetryResult(new_batch_id())
    with queue_lock(ws) as mine:
        if not mine:
            result.busy = True
            return result
        _retry_due(ws, now, lifetime, timeout, key_prefix, result)
    return result


def _retry_due(
    ws: Workspace,
    now: datetime,
    lifetime: timedelta,
    timeout: float,
    key_prefix: str | None,
    result: RetryResult,
) -> None:
    due = [
        r
        for r in list_deferred(ws)
        if r["next_attempt_at"] <= now
        and (key_prefix is None or (r["delivery_key"] or "").startswith(key_prefix))
    ]
    by_account: dict[str, list[dict[str, Any]]] = {}
    for row in due:
        by_account.setdefault(row["account"], []).append(row)
    journal = Journal(ws, result.batch_id)
    bundle = archive.Bundle(ws, "sent", result.batch_id)
    try:
        for name, rows in by_account.items():
            _retry_account(ws, journal, bundle, name, rows, now, lifetime, timeout, result)
    finally:
        bundle.close()
        journal.close()
    with ws.store.connect() as con:
        waiting = con.execute(
            "SELECT count(*) FROM deferred WHERE ? IS NULL OR starts_with(delivery_key, ?)",
            [key_prefix, key_prefix],
        ).fetchone()
    result.waiting = int(waiting[0]) if waiting else 0


def _retry_account(
    ws: Workspace,
    journal: Journal,
    bundle: archive.Bundle,
    name: str,
    rows: list[dict[str, Any]],
    now: datetime,
    lifetime: timedelta,
    timeout: float,
    result: RetryResult,
) -> None:
    try:
        account = accounts.get_account(ws, name)
    except NotFoundError:
        account = None
    conn: SMTPConnection | None = None
    down: Outcome | None = None
    if account is None:
        down = Outcome("failed", "connect", None, f"system email {name!r} no longer exists")
    else:
        try:  # an OAuth2 account may have lost its authorization: its one line, every row
            conn = SMTPConnection(
                account.server, accounts.password_for(ws, account), timeout=timeout
            )
            conn.open()
        except SMTPError as exc:
            status = "failed" if exc.step in ("tls", "auth") else "deferred"
            down = Outcome(status, exc.step, exc.code, str(exc))
        except SysmailError as exc:
            down = Outcome("failed", "auth", None, str(exc))
    listed = suppression.suppressed_set(ws)
    try:
        for row in rows:
            ctx = json.loads(row["context"])
            path = ws.home / row["eml_path"]
            started = utcnow()
            if ctx["use_case"] in suppression.USE_CASES and suppression.matches(
                listed, row["recipient"]
            ):  # unsubscribed while the message waited in the queue
                out = Outcome("suppressed", None, None, "on the suppression list")
            elif down is not None:
                out = down
            elif not path.exists():
                out = Outcome("failed", "queue", None, f"queued message file missing: {path}")
            else:
                assert conn is not None
                data = path.read_bytes()
                if not conn.is_open:
                    try:
                        conn.open()
                    except SMTPError as exc:
                        down = Outcome("deferred", exc.step, exc.code, str(exc))
                    except SysmailError as exc:  # a refused token that could not be renewed
                        down = Outcome("failed", "auth", None, str(exc))
                out = (
                    down
                    or conn.deliver(
                        row["mail_from"],
                        [row["recipient"]],
                        data,
                        smtputf8=ctx.get("smtputf8", False),
                    )[row["recipient"]]
                )
                if out.status == "sent" and account is not None and account.sent_archiving:
                    archive.record_sent(
                        journal,
                        bundle,
                        data,
                        message_id=row["message_id"],
                        account=row["account"],
                        from_addr=row["mail_from"],
                        to=ctx.get("to", []),
                        cc=ctx.get("cc", []),
                        subject=ctx.get("subject"),
                        related_type=ctx.get("related_type"),
                        related_id=ctx.get("related_id"),
                        attachments=ctx.get("attachments", []),
                        delivery_key=row["delivery_key"],
                        batch_id=ctx.get("batch_id"),
                    )
            attempt = row["attempts"] + 1
            expired = row["first_attempt_at"] + lifetime <= now
            if out.status == "deferred" and expired:
                out = Outcome(
                    "failed", out.phase, out.code, f"gave up after {lifetime}: {out.reply}"
                )
            journal.log(
                out,
                delivery_key=row["delivery_key"],
                message_id=row["message_id"],
                account=row["account"],
                template=ctx["template"],
                template_version=ctx["template_version"],
                use_case=ctx["use_case"],
                related_type=ctx.get("related_type"),
                related_id=ctx.get("related_id"),
                recipient=row["recipient"],
                role=ctx.get("role", "to"),
                subject=ctx.get("subject"),
                attempt=attempt,
                queued_at=started,
            )
            result.counts[out.status] += 1
            if out.status == "deferred":
                journal.write(
                    "deferred",
                    {
                        **{k: row[k] for k in sendlog.DEFERRED_COLUMNS},
                        "attempts": attempt,
                        "next_attempt_at": now + next_delay(attempt),
                        "last_reply": f"{out.code or ''} {out.reply}".strip()[:1000],
                    },
                )
            else:
                journal.write(
                    "done", {"message_id": row["message_id"], "recipient": row["recipient"]}
                )
    finally:
        if conn is not None:
            conn.close()
