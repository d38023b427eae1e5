"""The email object: archived mail, metadata in DuckDB and the raw ``.eml`` on disk.

Sent archiving: when a system email's "Sent Email Archiving" is on, each sent
message is kept here (the send log records the send either way). Received
archiving (IMAP) arrives in a later module and writes the same table with
direction ``received``.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from sysmail_ops.errors import NotFoundError, ValidationError
from sysmail_ops.sendlog import fold_orphans
from sysmail_ops.workspace import Workspace


def archive_id(message_id: str, direction: str, account: str) -> str:
    """A short stable id: the same message archived twice is one entry."""
    digest = hashlib.sha256(f"{direction}\0{account}\0{message_id}".encode()).hexdigest()
    return digest[:16]


_made: set[Path] = set()


def write_eml(ws: Workspace, direction: str, when: datetime, aid: str, data: bytes) -> Path:
    """Store the raw message under archive/<direction>/YYYY/MM/DD/<id>.eml.

    Written in place (no temp file and rename: file creation is the cost here);
    callers record the archive row only after this returns, so a crash leaves
    at worst a file without a row, never a row without its file.
    """
    folder = ws.archive_dir / direction / when.strftime("%Y/%m/%d")
    if folder not in _made:
        folder.mkdir(parents=True, exist_ok=True)
        _made.add(folder)
    path = folder / f"{aid}.eml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return path


def list_archive(
    ws: Workspace,
    *,
    account: str | None = None,
    related: str | None = None,
    direction: str | None = None,
    limit: int | None = 100,
) -> pd.DataFrame:
    """Archived messages, newest first. ``related`` is ``TYPE:ID``."""
    fold_orphans(ws)
    where: list[str] = ["true"]
    params: list[Any] = []
    if account:
        where.append("account = ?")
        params.append(account)
    if direction:
        where.append("direction = ?")
        params.append(direction)
    if related:
        obj_type, sep, obj_id = related.partition(":")
        if not sep or not obj_type or not obj_id:
            raise ValidationError(f"--object takes TYPE:ID, got {related!r}")
        where.append("related_type = ? AND related_id = ?")
        params += [obj_type, obj_id]
    sql = f"SELECT * FROM archive WHERE {' AND '.join(where)} ORDER BY date DESC, id"  # noqa: S608
    if limit:
        sql += f" LIMIT {int(limit)}"
    with ws.store.connect() as con:
        return con.execute(sql, params).df()


def get_entry(ws: Workspace, aid: str) -> dict[str, Any]:
    with ws.store.connect() as con:
        df = con.execute("SELECT * FROM archive WHERE id = ?", [aid]).df()
    if df.empty:
        raise NotFoundError(f"no archived message {aid!r}")
    return {str(k): v for k, v in df.iloc[0].to_dict().items()}


def raw_message(ws: Workspace, aid: str) -> bytes:
    entry = get_entry(ws, aid)
    path = Path(entry["eml_path"])
    if not path.is_absolute():
        path = ws.home / path
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"the .eml of archived message {aid} is missing: {path}") from None


def prune(ws: Workspace, before: datetime) -> int:
    """Delete archived messages dated before ``before``, rows and files."""
    with ws.store.transaction() as con:
        paths = [
            r[0]
            for r in con.execute("SELECT eml_path FROM archive WHERE date < ?", [before]).fetchall()
        ]
        con.execute("DELETE FROM archive WHERE date < ?", [before])
    for p in paths:
        path = Path(p) if Path(p).is_absolute() else ws.home / p
        path.unlink(missing_ok=True)
    return len(paths)
