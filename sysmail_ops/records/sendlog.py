"""The send log: one row per recipient per delivery attempt.

The send loop never opens the store per message. Each batch appends its rows
to a journal (an append-only JSON-lines file, one ``write`` per row, flushed to
the kernel at once so a killed process loses nothing it recorded) and folds the
journal into DuckDB in chunks. A journal left by a dead process is folded by
the next one that looks; folding is idempotent (rows carry batch id and
sequence number).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import NotFoundError, ValidationError
from sysmail_ops.store import private
from sysmail_ops.store.database import utcnow

if TYPE_CHECKING:
    import pandas as pd

    from sysmail_ops.mail.smtp import Outcome

# "bounced": a delivery report received later (records.bounces) for a "sent" row; its own row.
STATUSES = (
    "sent", "deferred", "failed", "skipped_duplicate", "dry_run", "suppressed", "bounced",
)  # fmt: skip
USE_CASES = (
    "manual",
    "system",
    "workflow",
    "approval_flow",
    "business_flow",
    "report_subscription",
    "follow_up",
    "survey",
    "marketing",
)
LOG_COLUMNS = [
    "batch_id",
    "seq",
    "delivery_key",
    "message_id",
    "account",
    "template",
    "template_version",
    "use_case",
    "related_type",
    "related_id",
    "recipient",
    "role",
    "subject",
    "status",
    "smtp_phase",
    "smtp_code",
    "smtp_reply",
    "attempt",
    "queued_at",
    "sent_at",
    "duration_ms",
    "size_bytes",
    "next_attempt_at",
]
ARCHIVE_COLUMNS = [
    "id",
    "message_id",
    "account",
    "direction",
    "from_addr",
    "to_addrs",
    "cc_addrs",
    "subject",
    "date",
    "related_type",
    "related_id",
    "size_bytes",
    "attachments",
    "eml_path",
    "delivery_key",
    "batch_id",
    "eml_offset",
    "eml_length",
]
DEFERRED_COLUMNS = [
    "message_id",
    "recipient",
    "delivery_key",
    "account",
    "eml_path",
    "mail_from",
    "attempts",
    "first_attempt_at",
    "next_attempt_at",
    "last_reply",
    "context",
]
TIME_COLUMNS = {"queued_at", "sent_at", "next_attempt_at", "date", "first_attempt_at"}


def journal_dir(ws: Workspace) -> Path:
    return ws.home / "journal"


def new_batch_id() -> str:
    return utcnow().strftime("%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:8]


def _encode(value: Any) -> Any:
    """json's fallback: only values it cannot write itself (timestamps) come here."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


# One encoder for every line: json.dumps(default=...) would build a new one per call.
_ENCODER = json.JSONEncoder(default=_encode)


@dataclass
class Journal:
    """The append-only journal of one batch, locked while its process lives.

    It is written in segments: ``fold_behind`` closes the current one and
    folds it in a background thread while writing goes on in the next (DuckDB
    works without the GIL, so the sending thread hardly notices). Every
    segment stays locked until it is folded; one left by a killed process is
    an orphan like any other journal.
    """

    ws: Workspace
    batch_id: str
    path: Path = field(init=False)
    _fd: int = field(init=False, default=-1)
    _seq: int = field(init=False, default=0)
    _segment: int = field(init=False, default=0)
    _pending: int = field(init=False, default=0)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _behind: ThreadPoolExecutor | None = field(init=False, default=None)
    _last: Future[set[tuple[str, str]]] | None = field(init=False, default=None)
    _kinds: set[str] = field(init=False, default_factory=set)  # kinds of line written
    _folded: bool = field(init=False, default=False)  # ``fold`` or ``fold_behind`` ran

    def __post_init__(self) -> None:
        private.make_dirs(journal_dir(self.ws))
        self.path, self._fd = self._open_segment()

    def _open_segment(self) -> tuple[Path, int]:
        """A new segment, locked before it is visible: ``fold_orphans`` never takes it.

        It is made as ``.new``, locked, then renamed. ``fold_orphans`` removes an
        empty ``.new`` it can lock (a writer killed before the rename left it), so
        it may take this one between its making and its lock: the lock waits for
        it (it holds it an instant), and a segment it removed is made again.
        """
        suffix = f"-{self._segment}" if self._segment else ""
        path = journal_dir(self.ws) / f"{self.batch_id}{suffix}.jsonl"
        making = path.with_suffix(".new")
        while True:
            fd = os.open(making, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_nlink:
                    os.rename(making, path)
                    return path, fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # removed by ``fold_orphans`` before we locked it: make it again

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def log(self, out: Outcome, *, status: str | None = None, **fields: Any) -> None:
        """Journal one send-log row: ``fields`` name its columns, ``out`` the server's answer."""
        status = status or out.status
        row = dict.fromkeys(LOG_COLUMNS)
        row.update(fields)
        row["batch_id"], row["seq"], row["status"] = self.batch_id, self.next_seq(), status
        row["smtp_phase"], row["smtp_code"] = out.phase, out.code
        row["smtp_reply"] = out.reply[:1000] if out.reply else None
        row["sent_at"] = utcnow() if status == "sent" else None
        self.write("log", row)

    def write(self, kind: str, row: dict[str, Any]) -> None:
        """Record one row; it is in the kernel's hands when this returns."""
        line = (_ENCODER.encode({"k": kind, **row}) + "\n").encode()
        with self._lock:
            os.write(self._fd, line)
            self._pending += 1
            self._kinds.add(kind)

    @property
    def pending(self) -> int:
        return self._pending

    def fold(self, lookup: Iterable[str] = ()) -> set[tuple[str, str]]:
        """Move what the journal holds into the store and empty it (waits for ``fold_behind``).

        Returns ``delivered(lookup)`` asked in the same transaction, so a batch
        opens the store once per chunk, not twice.
        """
        self.wait()
        with self._lock, self.ws.store.transaction() as con:
            _fold_into(con, self.path)
            found = _delivered(con, lookup)
            os.ftruncate(self._fd, 0)
            self._pending = 0
            self._folded = True
        return found

    def fold_on(self, con: Any) -> None:
        """Move all the journal holds into the store on the caller's transaction, once.

        For a journal never folded before (``sending.session``): the caller removes it
        once that transaction has committed; until then its rows stay on disk, and a
        crash leaves them for ``fold_orphans``.
        """
        self.wait()
        with self._lock:
            if self._folded:
                _fold_into(con, self.path)
            else:
                _fold_new(con, self.path, self._kinds)

    def fold_behind(self, lookup: Iterable[str] = ()) -> Future[set[tuple[str, str]]]:
        """Fold what is written so far in the background; the future answers ``lookup``.

        Writing goes on in a new segment meanwhile. Folds run one after the
        other, in the order they were asked for.
        """
        wanted = list(lookup)
        with self._lock:
            self._folded = True
            done = (self.path, self._fd)
            self._segment += 1
            self.path, self._fd = self._open_segment()
            self._pending = 0
        if self._behind is None:
            self._behind = ThreadPoolExecutor(1, thread_name_prefix="journal-fold")
        self._last = self._behind.submit(self._fold_segment, *done, wanted)
        return self._last

    def _fold_segment(self, path: Path, fd: int, lookup: list[str]) -> set[tuple[str, str]]:
        try:
            with self.ws.store.transaction() as con:
                # One DuckDB thread: the fold must not take the CPU the sending thread needs.
                con.execute("SET threads = 1")
                _fold_into(con, path)
                found = _delivered(con, lookup)
            path.unlink(missing_ok=True)  # after the commit: a crash between folds it again
        finally:
            os.close(fd)
        return found

    def wait(self) -> None:
        """Until the folds running behind have ended (raising what one raised)."""
        if self._last is not None:
            last, self._last = self._last, None
            last.result()

    def close(self, *, fold: bool = True) -> None:
        if self._fd < 0:
            return
        try:
            if fold:
                self.fold()
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = -1
            if self._behind is not None:
                self._behind.shutdown(wait=True)  # a fold still running keeps its segment locked
                self._behind = None


# The type of every key a journal line may carry (one schema for all kinds of line).
_JOURNAL_TYPES = {
    "k": "VARCHAR",
    **dict.fromkeys(
        [
            "batch_id", "delivery_key", "message_id", "account", "template", "use_case",
            "related_type", "related_id", "recipient", "role", "subject", "status",
            "smtp_phase", "smtp_reply", "id", "direction", "from_addr", "eml_path",
            "mail_from", "last_reply", "context",
        ],
        "VARCHAR",
    ),
    **dict.fromkeys(
        ["seq", "template_version", "smtp_code", "attempt", "size_bytes", "attempts"], "INTEGER"
    ),
    **dict.fromkeys(["eml_offset", "eml_length"], "BIGINT"),
    "duration_ms": "DOUBLE",
    **dict.fromkeys(sorted(TIME_COLUMNS), "TIMESTAMP"),
    **dict.fromkeys(["to_addrs", "cc_addrs", "attachments"], "VARCHAR[]"),
}  # fmt: skip
_JOURNAL_SPEC = "{" + ", ".join(f"'{k}': '{t}'" for k, t in _JOURNAL_TYPES.items()) + "}"


def _complete_lines(path: Path) -> int:
    """Cut a torn last line (a writer killed mid-write: that row never counted)."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as fh:
        fh.seek(max(0, size - 1))
        if fh.read(1) == b"\n":
            return size
        fh.seek(0)
        data = fh.read()
        keep = data.rfind(b"\n") + 1
        fh.truncate(keep)
    return keep


def _fold_file(ws: Workspace, path: Path) -> int:
    with ws.store.transaction() as con:
        return _fold_into(con, path)


def _fold_into(con: Any, path: Path) -> int:
    """Insert a journal's rows into the store; DuckDB reads the JSON itself (no GIL).

    Returns how many send-log rows it inserted (rows already in the store are skipped).
    """
    if _complete_lines(path) == 0:
        return 0
    log_cols = ", ".join(LOG_COLUMNS)
    arch_cols = ", ".join(ARCHIVE_COLUMNS)
    dfr_cols = ", ".join(DEFERRED_COLUMNS)
    con.execute(
        "CREATE TEMP TABLE j AS SELECT * FROM read_json(?, format = 'newline_delimited', "  # noqa: S608
        f"columns = {_JOURNAL_SPEC})",
        [str(path)],
    )
    kinds = dict(con.execute("SELECT k, count(*) FROM j GROUP BY k").fetchall())
    inserted = 0
    if kinds.get("log"):
        (inserted,) = con.execute(
            f"INSERT INTO send_log ({log_cols}) SELECT {log_cols} FROM j "  # noqa: S608
            "WHERE k = 'log' AND NOT EXISTS (SELECT 1 FROM send_log l "
            "WHERE l.batch_id = j.batch_id AND l.seq = j.seq)"
        ).fetchone()
    if kinds.get("archive"):
        con.execute(
            f"INSERT INTO archive ({arch_cols}) SELECT {arch_cols} FROM j "  # noqa: S608
            "WHERE k = 'archive' ON CONFLICT DO NOTHING"
        )
    if kinds.get("deferred"):
        con.execute(
            f"INSERT OR REPLACE INTO deferred ({dfr_cols}) SELECT {dfr_cols} "  # noqa: S608
            "FROM j WHERE k = 'deferred'"
        )
    if kinds.get("done"):
        con.execute(
            "DELETE FROM deferred WHERE (message_id, recipient) IN "
            "(SELECT (message_id, recipient) FROM j WHERE k = 'done')"
        )
    con.execute("DROP TABLE j")
    return int(inserted)


def _fold_new(con: Any, path: Path, kinds: set[str]) -> None:
    """``_fold_into`` for a journal folded once, whole, on the transaction that ends its
    batch (``Journal.fold_on``): none of its rows can be in the store, and the kinds of
    line it holds are known. Each kind goes straight from the file to its table: no
    temporary table, no count, no join with the whole log (a micro-batch of a few
    messages spent ~5 ms in those).
    """
    if _complete_lines(path) == 0:
        return
    src = f"read_json(?, format = 'newline_delimited', columns = {_JOURNAL_SPEC})"
    log, arch, dfr = (", ".join(c) for c in (LOG_COLUMNS, ARCHIVE_COLUMNS, DEFERRED_COLUMNS))
    sql = {  # our own column names and spec, never input
        "log": f"INSERT INTO send_log ({log}) SELECT {log} FROM {src} WHERE k = 'log'",  # noqa: S608
        "archive": f"INSERT INTO archive ({arch}) SELECT {arch} FROM {src} "  # noqa: S608
        "WHERE k = 'archive' ON CONFLICT DO NOTHING",
        "deferred": f"INSERT OR REPLACE INTO deferred ({dfr}) SELECT {dfr} FROM {src} "  # noqa: S608
        "WHERE k = 'deferred'",
        "done": "DELETE FROM deferred WHERE (message_id, recipient) IN "  # noqa: S608
        f"(SELECT (message_id, recipient) FROM {src} WHERE k = 'done')",
    }
    for kind in ("log", "archive", "deferred", "done"):  # the order _fold_into keeps
        if kind in kinds:
            con.execute(sql[kind], [str(path)])


# <batch id>[-<segment>]: a batch id ends in 8 hex digits, so a 1-6 digit tail is a segment.
_SEGMENT = re.compile(r"(.+?)(?:-(\d{1,6}))?")


def _write_order(path: Path) -> tuple[str, int]:
    """A batch's segments in the order they were written: <id>, <id>-1, <id>-2, ..., <id>-10."""
    m = _SEGMENT.fullmatch(path.stem)
    assert m is not None
    return m[1], int(m[2] or 0)


def fold_orphans(ws: Workspace) -> int:
    """Fold the journals of batches whose process is gone (killed, crashed).

    Returns how many send-log rows it inserted: a row already in the store (a
    segment folded, then left on disk by a kill before its removal) does not count.
    """
    folded = 0
    folder = journal_dir(ws)
    if not folder.exists():
        return 0
    for path in sorted(folder.glob("*.jsonl"), key=_write_order):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its batch is still running
            if os.fstat(fd).st_nlink == 0:
                continue  # folded and removed by its own batch since we opened it
            folded += _fold_file(ws, path)
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    for path in folder.glob("*.new"):
        _remove_unborn(path)
    return folded


def _remove_unborn(path: Path) -> None:
    """Remove a segment its writer died making: created, not yet renamed, so empty.

    Its writer locks it before the rename (``Journal._open_segment``), so one
    whose lock is held is being renamed. One that locks here is a dead
    writer's, or one whose writer made it a moment ago and waits for this lock:
    that writer sees it removed and makes it again.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its writer is renaming it
        st = os.fstat(fd)
        # Removed (nlink 0) or renamed since we opened it, or holding rows: not an unborn one.
        with contextlib.suppress(FileNotFoundError):
            if st.st_nlink and st.st_size == 0 and os.path.samestat(st, os.stat(path)):
                path.unlink()
    finally:
        os.close(fd)


def delivered(ws: Workspace, keys: Iterable[str], *, con: Any = None) -> set[tuple[str, str]]:
    """(key, recipient) pairs already sent, or waiting in the deferred queue.

    ``con``: asked on the caller's connection (and transaction) instead of a new one.
    """
    wanted = sorted(set(keys))
    if not wanted:
        return set()
    if con is not None:
        return _delivered(con, wanted)
    with ws.store.connect() as con:
        return _delivered(con, wanted)


def _delivered(con: Any, keys: Iterable[str]) -> set[tuple[str, str]]:
    wanted = sorted(set(keys))
    if not wanted:
        return set()
    rows = con.execute(
        "WITH wanted AS (SELECT unnest(?::VARCHAR[]) AS k) "
        "SELECT delivery_key, recipient FROM send_log JOIN wanted ON delivery_key = k "
        "WHERE status = 'sent' "
        "UNION SELECT delivery_key, recipient FROM deferred JOIN wanted ON delivery_key = k",
        [wanted],
    ).fetchall()
    return {(k, r) for k, r in rows}


# -- reading the log -----------------------------------------------------------------------


def _since(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if value[-1:] in units and value[:-1].isdigit():
        return utcnow() - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        return datetime.fromisoformat(value).replace(tzinfo=None)
    except ValueError:
        raise ValidationError(f"--since takes 24h, 7d, 30m or an ISO date, got {value!r}") from None


def list_logs(
    ws: Workspace,
    *,
    status: str | None = None,
    account: str | None = None,
    since: str | datetime | None = None,
    batch_id: str | None = None,
    limit: int | None = 100,
) -> pd.DataFrame:
    """Log rows, newest first, as a DataFrame."""
    fold_orphans(ws)
    if status and status not in STATUSES:
        raise ValidationError(f"unknown status {status!r}: choose one of {', '.join(STATUSES)}")
    return ws.store.select(
        "send_log",
        [
            ("status = ?", status),
            ("account = ?", account),
            ("batch_id = ?", batch_id),
            ("queued_at >= ?", _since(since)),
        ],
        order_by="id DESC",
        limit=limit,
    )


def get_log(ws: Workspace, log_id: int) -> dict[str, Any]:
    import pandas as pd

    with ws.store.connect() as con:
        df = con.execute("SELECT * FROM send_log WHERE id = ?", [log_id]).df()
    if df.empty:
        raise NotFoundError(f"no send log row {log_id}")
    return {str(k): (None if pd.isna(v) else v) for k, v in df.iloc[0].to_dict().items()}


SUMMARY_COLUMNS = ("account", "status", "last_24h", "last_7d")


def summary(ws: Workspace) -> pd.DataFrame:
    """Rows per account and status over the last 24 hours and 7 days."""
    import pandas as pd

    frame = pd.DataFrame(summary_rows(ws), columns=list(SUMMARY_COLUMNS))
    return frame.astype({"last_24h": "int64", "last_7d": "int64"})


def summary_rows(ws: Workspace) -> list[tuple[str, str, int, int]]:
    """``summary`` as plain tuples (``SUMMARY_COLUMNS``), without pandas: the CLI's read."""
    fold_orphans(ws)
    now = utcnow()
    with ws.store.connect() as con:
        rows = con.execute(
            "SELECT account, status,"
            " count(*) FILTER (queued_at >= ?) AS last_24h,"
            " count(*) FILTER (queued_at >= ?) AS last_7d"
            " FROM send_log GROUP BY ALL HAVING last_7d > 0 ORDER BY account, status",
            [now - timedelta(days=1), now - timedelta(days=7)],
        ).fetchall()
    return [(str(a), str(s), int(d), int(w)) for a, s, d, w in rows]


def prune(ws: Workspace, before: datetime) -> int:
    """Delete log rows queued before ``before`` (retention). Returns how many."""
    with ws.store.transaction() as con:
        row = con.execute("SELECT count(*) FROM send_log WHERE queued_at < ?", [before]).fetchone()
        con.execute("DELETE FROM send_log WHERE queued_at < ?", [before])
    return int(row[0]) if row else 0
