"""The log for a warehouse: the send log and the archive's metadata as Parquet, one folder a day.

``export_days`` writes ``DIR/send_log/day=YYYY-MM-DD/data_0.parquet`` (rows by the
day they were queued, UTC) and ``DIR/archive/day=YYYY-MM-DD/data_0.parquet``
(archived messages by their date, UTC) with DuckDB's ``COPY ... PARTITION_BY``:
the Hive layout every warehouse loader reads. Each day of the range is written
into a scratch folder inside ``DIR`` first and then renamed into place, so a
re-export of a day replaces its partition whole (a day that has no rows any
more loses its partition), a reader never sees half a day, and the command can
run from cron every night over the last few days. The archive's message bodies
stay out: metadata only, no ``body_text``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import ValidationError
from sysmail_ops.records.sendlog import fold_orphans
from sysmail_ops.store import private
from sysmail_ops.store.database import utcnow

MAX_DAYS = 3660  # ten years in one call: a typo in a year is refused, not ten thousand folders

# table -> (the timestamp its day comes from, the columns exported)
TABLES: dict[str, tuple[str, list[str]]] = {
    "send_log": (
        "queued_at",
        ["id", "batch_id", "seq", "delivery_key", "message_id", "account", "template",
         "template_version", "use_case", "related_type", "related_id", "recipient", "role",
         "subject", "status", "smtp_phase", "smtp_code", "smtp_reply", "attempt", "queued_at",
         "sent_at", "duration_ms", "size_bytes", "next_attempt_at"],
    ),
    "archive": (
        "date",
        ["id", "message_id", "account", "direction", "from_addr", "to_addrs", "cc_addrs",
         "subject", "date", "related_type", "related_id", "size_bytes", "attachments",
         "attachment_sizes", "eml_path", "delivery_key", "batch_id", "folder", "in_reply_to",
         "thread_id", "reply_to_id", "content_hash", "parse_error", "fetched_at"],
    ),
}  # fmt: skip


@dataclass
class ExportResult:
    """What ``export_days`` wrote: rows per table and day, and the partitions it removed."""

    folder: Path
    since: date
    until: date
    rows: dict[str, dict[date, int]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        for table, days in self.rows.items():
            parts.append(f"{sum(days.values())} {table} row(s) in {len(days)} day(s)")
        gone = f"; {len(self.removed)} emptied day(s) removed" if self.removed else ""
        return f"exported {self.since} .. {self.until} to {self.folder}: {', '.join(parts)}{gone}"


def parse_day(value: str | date, flag: str) -> date:
    """An ISO day (``2026-03-02``); a ``ValidationError`` naming ``flag`` otherwise."""
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(f"{flag} takes a day as YYYY-MM-DD, got {value!r}") from None


def _writable_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ValidationError(f"{folder} is not a folder")
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ValidationError(f"cannot write to {folder}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValidationError(f"cannot write to {folder}: {probe} is not writable")


def export_days(
    ws: Workspace,
    to: str | os.PathLike[str],
    since: str | date,
    until: str | date | None = None,
) -> ExportResult:
    """Write the send log and archive metadata of the days ``since`` .. ``until`` (inclusive,
    UTC; ``until`` defaults to today) as day-partitioned Parquet under ``to``.

    Each exported day's partition is replaced whole. Bad days or a folder that cannot be
    written are a ``ValidationError`` before anything is written.
    """
    first = parse_day(since, "--since")
    last = parse_day(until, "--until") if until is not None else utcnow().date()
    if last < first:
        raise ValidationError(f"--until {last} is before --since {first}")
    if (last - first).days >= MAX_DAYS:
        raise ValidationError(f"at most {MAX_DAYS} days in one export, got {first} .. {last}")
    folder = Path(to).expanduser().absolute()
    _writable_folder(folder)
    fold_orphans(ws)  # rows a dead sender left in its journal belong to their day
    result = ExportResult(folder, first, last)
    scratch = folder / f".export-{uuid.uuid4().hex[:12]}"
    try:
        private.make_dirs(scratch)
    except OSError as exc:  # what os.access cannot tell (root, a read-only mount)
        raise ValidationError(f"cannot write to {folder}: {exc.strerror or exc}") from None
    try:
        with ws.store.connect(read_only=True) as con, private.private_umask():
            for table, (stamp, columns) in TABLES.items():
                out = scratch / table
                cols = ", ".join(columns)
                rows = con.execute(
                    f"SELECT CAST({stamp} AS DATE) AS day, count(*) FROM {table}"  # noqa: S608
                    f" WHERE {stamp} >= ? AND {stamp} < ? GROUP BY day ORDER BY day",
                    [first, last + timedelta(days=1)],
                ).fetchall()
                result.rows[table] = {d: int(n) for d, n in rows}
                if rows:
                    con.execute(
                        f"COPY (SELECT {cols}, strftime({stamp}, '%Y-%m-%d') AS day"  # noqa: S608
                        f" FROM {table} WHERE {stamp} >= ? AND {stamp} < ? ORDER BY {stamp}, id)"
                        f" TO '{_quoted(out)}' (FORMAT PARQUET, PARTITION_BY (day))",
                        [first, last + timedelta(days=1)],
                    )
                result.removed += _swap_days(folder / table, out, first, last)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


def _swap_days(target: Path, made: Path, first: date, last: date) -> list[str]:
    """Put each day's new partition in place of the old one; remove days now empty."""
    private.make_dirs(target)
    removed = []
    day = first
    while day <= last:
        name = f"day={day.isoformat()}"
        new, old = made / name, target / name
        if new.is_dir():
            if old.exists():
                aside = target / f".old-{name}-{uuid.uuid4().hex[:8]}"
                old.rename(aside)  # two renames: the day is never missing for long, never mixed
                new.rename(old)
                shutil.rmtree(aside, ignore_errors=True)
            else:
                new.rename(old)
        elif old.exists():
            shutil.rmtree(old)
            removed.append(f"{target.name}/{name}")
        day += timedelta(days=1)
    return removed


# --- a window of the log for a report run elsewhere (a Dask worker has no workspace) ------


def log_extract(ws: Workspace, since: datetime | None, until: datetime | None = None) -> bytes:
    """The send log rows queued in ``[since, until)`` (naive UTC; None: open) as Parquet bytes:
    what a report that reads the log gets when it runs on a cluster worker."""
    import tempfile

    fold_orphans(ws)
    with tempfile.TemporaryDirectory(prefix="sysmail-extract-") as tmp:
        path = Path(tmp) / "send_log.parquet"
        with ws.store.connect(read_only=True) as con, private.private_umask():
            con.execute(
                "COPY (SELECT * FROM send_log WHERE queued_at >= coalesce(?, queued_at)"  # noqa: S608
                " AND queued_at < coalesce(?, queued_at + INTERVAL 1 SECOND) ORDER BY id)"
                f" TO '{_quoted(path)}' (FORMAT PARQUET)",
                [since, until],
            )
        return path.read_bytes()


def open_log_extract(path: str | os.PathLike[str]) -> Workspace:
    """A scratch workspace beside ``path`` whose send log is that extract (``log_extract``):
    the analytics questions run on it as on the real one. Nothing else is in it."""
    source = Path(path)
    if not source.is_file():
        raise ValidationError(f"log extract {source} does not exist")
    scratch, _ = Workspace.init(source.parent / f"{source.stem}-workspace")
    with scratch.store.transaction() as con:
        con.execute("DELETE FROM send_log")
        con.execute("INSERT INTO send_log BY NAME SELECT * FROM read_parquet(?)", [str(source)])
    return scratch
