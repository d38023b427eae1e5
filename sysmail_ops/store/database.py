"""The DuckDB store: schema migrations and short-lived connections.

DuckDB lets one process at a time open a database file, even read-only, so
nobody keeps a connection while idle: each operation opens the file, does its
work and closes it. An operation that meets another process's lock retries
with backoff for up to ``lock_wait`` seconds (``SYSMAIL_LOCK_WAIT``, default
30) before telling the user which workspace is busy and, when DuckDB says,
which process holds it.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sysmail_ops.errors import StoreBusyError
from sysmail_ops.store.migrations import MIGRATIONS
from sysmail_ops.store.private import private_umask

if TYPE_CHECKING:  # imported when a store is opened: the compose worker never needs it
    import duckdb
    import pandas as pd

ENV_LOCK_WAIT = "SYSMAIL_LOCK_WAIT"
DEFAULT_LOCK_WAIT = 30.0
_HOLDER = re.compile(r"held in (?P<prog>\S+) \(PID (?P<pid>\d+)\)")


# Transactions committed in this process, on any store, that may have edited the configuration
# (all but those opened with ``config=False``): what a reader kept of it is stale once
# this moves (``flows.microbatch``). Another process's edits need the file, so a reader
# holding it open learns of them when its hold begins.
_config_edits = 0
_edits_lock = threading.Lock()


def _edited() -> None:
    global _config_edits
    with _edits_lock:
        _config_edits += 1


def config_edits() -> int:
    return _config_edits


def utcnow() -> datetime:
    """Now, as the naive UTC timestamp the store keeps."""
    return datetime.now(UTC).replace(tzinfo=None)


def _is_lock_error(exc: BaseException) -> bool:
    return "could not set lock" in str(exc).lower()


def _default_lock_wait() -> float:
    raw = os.environ.get(ENV_LOCK_WAIT)
    try:
        return float(raw) if raw else DEFAULT_LOCK_WAIT
    except ValueError:
        return DEFAULT_LOCK_WAIT


class Store:
    """One workspace database. Holds no connection between operations."""

    def __init__(self, path: Path, lock_wait: float | None = None):
        self.path = path
        self.lock_wait = _default_lock_wait() if lock_wait is None else lock_wait
        self._write_lock = threading.RLock()
        self._migrated = False

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def _open(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        import duckdb

        deadline = time.monotonic() + self.lock_wait
        delay = 0.01
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.Error as exc:
                if not _is_lock_error(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise StoreBusyError(self._busy_message(str(exc))) from None
            jitter = random.uniform(0.5, 1)  # noqa: S311 - spreads retries, not a secret
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())) * jitter)
            delay = min(delay * 1.6, 0.25)

    def _busy_message(self, detail: str) -> str:
        m = _HOLDER.search(detail)
        holder = f"process {m['pid']} ({Path(m['prog']).name})" if m else "another process"
        return (
            f"the workspace {self.path.parent} is busy: {holder} has held its database for "
            f"more than {self.lock_wait:g} s; try again later or raise {ENV_LOCK_WAIT}"
        )

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one operation, closed at the end of the block.

        ``read_only`` opens the file so that no statement can change it (ad-hoc
        SQL); it waits for another process's lock the same way.
        DuckDB makes the database file, its WAL and its spill folder with no
        mode of ours: they are made under the private umask (0600, 0700).
        """
        with private_umask():
            con = self._open(read_only)
            try:
                yield con
            finally:
                con.close()

    @contextmanager
    def transaction(
        self, *, beside: bool = False, config: bool = True
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside BEGIN ... COMMIT; rolled back on any error.

        The transactions of one process's threads go one at a time, unless ``beside``:
        DuckDB runs it beside another thread's (each sees its own snapshot), for a writer
        whose rows no other thread writes (``serve``'s intake records new events while its
        worker writes the log); a conflict would raise ``duckdb.TransactionException``.
        ``config=False``: the caller writes none of the configuration (accounts, templates,
        rules, role directory, settings, event sources), so its commit leaves
        ``config_edits()`` alone.
        """
        with contextlib.nullcontext() if beside else self._write_lock, self.connect() as con:
            con.begin()
            try:
                yield con
            except BaseException:
                con.rollback()
                raise
            con.commit()
            if config:
                _edited()

    def migrate(self) -> list[int]:
        """Apply the numbered migrations not yet recorded. Returns the versions applied."""
        if self._migrated:
            return []
        applied: list[int] = []
        with self.transaction() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                " name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
            )
            done = {r[0] for r in con.execute("SELECT version FROM schema_migrations").fetchall()}
            for version, name, sql in sorted(MIGRATIONS):
                if version in done:
                    continue
                con.execute(sql)
                con.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, utcnow()]
                )
                applied.append(version)
        self._migrated = True
        return applied

    def select(
        self,
        table: str,
        where: Sequence[tuple[str, Any]] = (),
        *,
        order_by: str,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Rows of ``table`` as a DataFrame, filtered by the conditions whose value is given.

        ``where`` pairs an SQL condition with its parameter (a tuple for several
        ``?``); a pair whose value is ``None`` or empty is left out. The table,
        conditions and order are the caller's own SQL, never user input.
        """
        clauses: list[str] = ["true"]
        params: list[Any] = []
        for condition, value in where:
            if value is None or value == "":
                continue
            clauses.append(condition)
            params.extend(value if isinstance(value, tuple) else (value,))
        sql = f"SELECT * FROM {table} WHERE {' AND '.join(clauses)} ORDER BY {order_by}"  # noqa: S608
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self.connect() as con:
            return con.execute(sql, params).df()

    def schema_version(self) -> int:
        with self.connect() as con:
            row = con.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0]) if row and row[0] is not None else 0
