"""The email object: archived mail, metadata in DuckDB and the raw ``.eml`` on disk.

Sent archiving: when a system email's "Sent Email Archiving" is on, each sent
message is kept here (the send log records the send either way). Received
archiving (``records.received``, over IMAP) writes the same table with
direction ``received``; ``prune`` takes both.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import NotFoundError, ValidationError
from sysmail_ops.records.sendlog import Journal, fold_orphans
from sysmail_ops.store import private
from sysmail_ops.store.database import utcnow

if TYPE_CHECKING:
    import pandas as pd


def archive_id(message_id: str, direction: str, account: str) -> str:
    """A short stable id: the same message archived twice is one entry."""
    digest = hashlib.sha256(f"{direction}\0{account}\0{message_id}".encode()).hexdigest()
    return digest[:16]


def record_sent(
    journal: Journal,
    bundle: Bundle,
    data: bytes,
    *,
    message_id: str,
    account: str,
    from_addr: str,
    to: list[str],
    cc: list[str],
    subject: str | None,
    related_type: str | None,
    related_id: str | None,
    attachments: list[str],
    delivery_key: str | None,
    batch_id: str | None,
) -> None:
    """Archive one sent message: its bytes into the bundle, then its row into the journal.

    In that order, so a crash leaves at worst bytes without a row, never a row
    without its bytes.
    """
    when = utcnow()
    path, offset, length = bundle.append(when, data)
    journal.write(
        "archive",
        {
            "id": archive_id(message_id, "sent", account),
            "message_id": message_id,
            "account": account,
            "direction": "sent",
            "from_addr": from_addr,
            "to_addrs": to,
            "cc_addrs": cc,
            "subject": subject,
            "date": when,
            "related_type": related_type,
            "related_id": related_id,
            "size_bytes": length,
            "attachments": attachments,
            "eml_path": path,
            "delivery_key": delivery_key,
            "batch_id": batch_id,
            "eml_offset": offset,
            "eml_length": length,
        },
    )


def list_archive(
    ws: Workspace,
    *,
    account: str | None = None,
    related: str | None = None,
    direction: str | None = None,
    limit: int | None = 100,
    oldest_first: bool = False,
) -> pd.DataFrame:
    """Archived messages, newest first. ``related`` is ``TYPE:ID``.

    ``oldest_first`` reads a conversation in order (``archive list --object``).
    """
    obj: tuple[str, str] | None = None
    if related:
        obj_type, sep, obj_id = related.partition(":")
        if not sep or not obj_type or not obj_id:
            raise ValidationError(f"--object takes TYPE:ID, got {related!r}")
        obj = (obj_type, obj_id)
    fold_orphans(ws)
    return ws.store.select(
        "archive",
        [
            ("account = ?", account),
            ("direction = ?", direction),
            ("related_type = ? AND related_id = ?", obj),
        ],
        order_by="date, id" if oldest_first else "date DESC, id",
        limit=limit,
    )


def get_entry(ws: Workspace, aid: str) -> dict[str, Any]:
    with ws.store.connect() as con:
        df = con.execute("SELECT * FROM archive WHERE id = ?", [aid]).df()
    if df.empty:
        raise NotFoundError(f"no archived message {aid!r}")
    return {str(k): v for k, v in df.iloc[0].to_dict().items()}


def raw_message(ws: Workspace, aid: str) -> bytes:
    """The archived message as it was sent or received, byte for byte."""
    import pandas as pd

    entry = get_entry(ws, aid)
    path = ws.home / entry["eml_path"]
    offset, length = entry.get("eml_offset"), entry.get("eml_length")
    try:
        with path.open("rb") as fh:
            if offset is None or pd.isna(offset):
                return fh.read()
            fh.seek(int(offset))
            return fh.read(int(length or 0))
    except FileNotFoundError:
        raise NotFoundError(f"the raw file of archived message {aid} is missing: {path}") from None


class Bundle:
    """One append-only file of raw messages for a batch: archive/<dir>/YYYY/MM/DD/<batch>.emls.

    Creating a file per message costs 0.1-1 ms on this kind of disk, more than
    sending it; appending costs microseconds. Each archive row keeps the
    offset and length of its message, so ``raw_message`` returns it exactly.
    """

    def __init__(self, ws: Workspace, direction: str, batch_id: str):
        self.ws, self.direction, self.batch_id = ws, direction, batch_id
        self.fd = -1
        self.offset = 0
        self.rel = ""

    def append(self, when: datetime, data: bytes) -> tuple[str, int, int]:
        """Write one message; returns (relative path, offset, length) for its row."""
        if self.fd < 0:
            folder = self.ws.archive_dir / self.direction / when.strftime("%Y/%m/%d")
            private.make_dirs(folder)
            path = folder / f"{self.batch_id}.emls"
            self.fd = private.open_append(path)
            self.offset = os.fstat(self.fd).st_size
            self.rel = str(path.relative_to(self.ws.home))
        start = self.offset
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.offset += len(data)
        return self.rel, start, len(data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def prune(ws: Workspace, before: datetime) -> int:
    """Delete archived messages dated before ``before``, rows and raw files."""
    with ws.store.transaction() as con:
        n_row = con.execute("SELECT count(*) FROM archive WHERE date < ?", [before]).fetchone()
        paths = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT eml_path FROM archive WHERE date < ?", [before]
            ).fetchall()
        }
        con.execute("DELETE FROM archive WHERE date < ?", [before])
        still = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT eml_path FROM archive WHERE list_contains(?, eml_path)",
                [sorted(paths)],
            ).fetchall()
        }
    for p in paths - still:  # a bundle goes once none of its messages is left
        (ws.home / p).unlink(missing_ok=True)
    return int(n_row[0]) if n_row else 0
