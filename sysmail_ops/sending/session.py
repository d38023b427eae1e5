"""A sending session: one account, template and use case, kept ready between micro-batches.

``BatchSender`` loads the account, template, render budget and DKIM keys, opens a
journal, an archive bundle and an SMTP connection, and closes them all at the end of
its batch. A service that sends a few messages many times a second (``serve``'s event
intake) would pay that for every few messages. A ``Session`` is a ``BatchSender`` that
keeps what it loaded and its SMTP connection from one micro-batch to the next: each
micro-batch gets its own batch id, journal and bundle, as every batch does, and the
same engine sends it (dedupe by delivery key, every reply journalled as it arrives,
retries, the archive). The connection is still renewed after ``per_connection``
messages; one the server closed while we were idle is noticed before use and opened
again; ``close_idle`` lets it go after ``IDLE_CLOSE`` seconds without sending.

The caller decides when what it loaded may have changed (an edited template or
account: ``flows.microbatch`` watches the store) and then makes a new session. It
folds each micro-batch's journal on its own transaction (``fold_on``), beside its own
records, and calls ``finish`` once that has committed: one store visit per
micro-batch for the log, the archive rows and the caller's records together.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from typing import Any

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.mail.mime import Composed
from sysmail_ops.mail.smtp import Outcome
from sysmail_ops.records import archive
from sysmail_ops.records.sendlog import Journal, new_batch_id
from sysmail_ops.sending.delivery import Delivery
from sysmail_ops.sending.engine import BatchSender, SendOptions, SendResult
from sysmail_ops.sending.worker import Built, build_one
from sysmail_ops.store.database import utcnow

__all__ = ["IDLE_CLOSE", "Session"]

IDLE_CLOSE = 30.0  # seconds without a message after which the SMTP connection is closed


class Session(BatchSender):
    """Micro-batches through one account with one template version, over one connection."""

    def __init__(
        self, ws: Workspace, account: str, template: str, *, use_case: str, options: SendOptions
    ):
        super().__init__(ws, account, template, use_case=use_case, options=options)
        self.journal: Journal | None = None
        self.statuses: dict[str, str] = {}  # delivery key -> its last status in this batch
        self.last_used = time.monotonic()
        self.connections = 0  # SMTP connections opened (a test and a benchmark read it)

    def build_each(self, deliveries: Sequence[Delivery]) -> list[Built]:
        """Render and compose each delivery: ``(composed, subject, error)``, one each, in order."""
        return [build_one(self.composer, d) for d in deliveries]

    def begin(self) -> None:
        """Start a micro-batch: a new batch id, journal and archive bundle."""
        assert self.journal is None, "finish the previous micro-batch first"
        self.batch_id = new_batch_id()
        self.result = SendResult(self.batch_id)
        self.down = None  # a server that was down for the last batch is tried again
        self.statuses = {}
        self.journal = Journal(self.ws, self.batch_id)
        self.bundle = archive.Bundle(self.ws, "sent", self.batch_id)
        if self.conn is not None and self.conn.is_open and self.conn.closed_by_server():
            self.conn.close()  # the server hung up (its idle timeout, a 421) while we waited

    def send(
        self,
        deliveries: Sequence[Delivery],
        built: Sequence[Built],
        delivered: set[tuple[str, str]],
    ) -> SendResult:
        """Send built deliveries (``build_each``) in this micro-batch; each reply is journalled.

        ``delivered``: the (key, recipient) pairs already sent or queued for retry, read
        from the store by the caller; a delivery's recipients among them are skipped
        (``skipped_duplicate``), as are pairs repeated within the micro-batch.
        """
        assert self.journal is not None, "begin() first"
        seen: set[tuple[str, str]] = set()
        for d, (composed, subject, error) in zip(deliveries, built, strict=True):
            dup: set[str] = set()
            if composed is not None and d.key:
                for addr, _role in composed.recipients:
                    pair = (d.key, addr)
                    if pair in delivered or pair in seen:
                        dup.add(addr)
                    seen.add(pair)
            self._one(self.journal, d, utcnow(), composed, subject, error, frozenset(dup))
        self._flush()
        self.last_used = time.monotonic()
        return self.result

    def fold_on(self, con: Any) -> None:
        """Fold this micro-batch's journal into the store on the caller's transaction."""
        if self.journal is not None:
            self.journal.fold_on(con)

    def finish(self, *, folded: bool = True) -> None:
        """End the micro-batch once its fold has committed; the connection stays open.

        ``folded=False`` (the fold did not commit): the journal is left on disk for
        ``sendlog.fold_orphans``, as a killed process would leave it.
        """
        journal, self.journal = self.journal, None
        self.bundle.close()
        if journal is not None:
            if folded:
                os.unlink(journal.path)
            journal.close(fold=False)

    def close_idle(self, idle: float = IDLE_CLOSE) -> bool:
        """Close the connection after ``idle`` seconds without a message; True if closed."""
        if self.conn is None or time.monotonic() - self.last_used < idle:
            return False
        self.conn.close()
        return True

    def abandon(self) -> None:
        """After an unexpected error mid-batch: settle what is in flight (its reply is
        journalled) as far as the connection allows, then close the connection."""
        with contextlib.suppress(Exception):  # the connection is closed next either way
            self._drain()
        if self.conn is not None:
            self.conn.close()

    def close(self) -> None:
        if self.journal is not None:
            self.finish(folded=False)
        if self.conn is not None:
            self.conn.close()

    # -- the engine's hooks --------------------------------------------------------------

    def _connection(self) -> Any:
        before = self.conn
        conn = super()._connection()
        if conn is not before:
            self.connections += 1
        return conn

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
        **kw: Any,
    ) -> None:
        super()._log(journal, d, c, subject, addr, role, queued, status, out, **kw)
        # What ``flows`` reports per send: the last status that is not a skip.
        if d.key and (status != "skipped_duplicate" or d.key not in self.statuses):
            self.statuses[d.key] = status
