"""Received Email Archiving: mail arriving in a system email's mailbox, fetched over IMAP.

``fetch(ws, ["service"])`` reads each folder of each account whose received
archiving is on, without changing anything on the server (EXAMINE,
``BODY.PEEK[]``), and archives every new message beside the sent mail:

- **Incremental.** Per account and folder the store keeps UIDVALIDITY and the
  last UID archived. Messages are fetched in UID batches of at most
  ``BATCH`` (100); each batch's rows and the new last UID are committed in one
  transaction, so a fetch killed midway re-reads at most one batch, and the
  re-read rows are not doubled (the archive id is the Message-ID's, or the
  content hash's where there is none; inserts skip an id already there).
- **A first fetch** (or one after UIDVALIDITY changed) takes a ``since``
  window (default: the last 30 days) instead of a whole mailbox.
- **Bounded memory.** A large message is streamed from the socket into a
  0600 file and parsed through ``mail.incoming``'s skeleton.
- **Threading.** In-Reply-To / References that name an archived or logged
  message link the reply to it (``reply_to_id``), its object
  (``related_type``/``related_id``) and its thread (``thread_id``).
- **Bounces.** Delivery reports go to ``records.bounces`` in the same
  transaction (send log ``bounced`` rows, suppression).
- **One fetch per account at a time.** A lock file per account: a second
  fetch (cron every minute) skips the account and says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sysmail_ops.config.accounts import Account, get_account, list_accounts, password_for
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import (
    IMAPError,
    InsecureAuthError,
    NotFoundError,
    OAuthError,
    ValidationError,
)
from sysmail_ops.mail.credentials import Secret
from sysmail_ops.mail.imap import (
    Fetched,
    IMAPConnection,
    IMAPServer,
    Login,
    password_login,
    password_masker,
    xoauth2_login,
)
from sysmail_ops.mail.incoming import Parsed, read_message
from sysmail_ops.records import bounces
from sysmail_ops.records.archive import Bundle, archive_id
from sysmail_ops.records.sendlog import new_batch_id
from sysmail_ops.store import audit, private
from sysmail_ops.store.database import utcnow

if TYPE_CHECKING:
    import duckdb

BATCH = 100  # messages per UID FETCH and per commit
BATCH_BYTES = 8 * 1024 * 1024  # in-memory bytes per batch (spooled messages count their cap)
SPOOL_OVER = 256 * 1024
DEFAULT_SINCE_DAYS = 30
DEFAULT_FOLDERS = ("INBOX",)


@dataclass
class FolderResult:
    """What one folder gave: new rows, messages read again (already archived), problems."""

    folder: str
    archived: int = 0
    duplicates: int = 0
    bounces: int = 0
    parse_errors: int = 0
    resync: bool = False
    first: bool = False
    last_uid: int = 0


@dataclass
class FetchResult:
    """One account's fetch: per folder, or why it was skipped or failed (``error``)."""

    account: str
    folders: list[FolderResult] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None

    @property
    def archived(self) -> int:
        return sum(f.archived for f in self.folders)

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        if self.skipped:
            return f"{self.account}: {self.skipped}"
        parts = []
        for f in self.folders:
            extra = [
                *(["first fetch"] if f.first else []),
                *(["UIDVALIDITY changed: resynced"] if f.resync else []),
                *([f"{f.duplicates} already archived"] if f.duplicates else []),
                *([f"{f.bounces} bounce(s)"] if f.bounces else []),
                *([f"{f.parse_errors} with parse problems, kept raw"] if f.parse_errors else []),
            ]
            parts.append(
                f"{f.folder} {f.archived} new" + (f" ({', '.join(extra)})" if extra else "")
            )
        text = f"{self.account}: " + ("; ".join(parts) if parts else "nothing fetched")
        return text + (f"; FAILED: {self.error}" if self.error else "")


def parse_since(value: str | date | datetime | None) -> date | None:
    """``--since``: an ISO date, or ``30d`` (days back); None for the default window."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = value.strip()
    if text[-1:] == "d" and text[:-1].isdigit() and len(text) <= 6:
        return (utcnow() - timedelta(days=int(text[:-1]))).date()
    try:
        return datetime.fromisoformat(text).date()
    except ValueError:
        raise ValidationError(f"--since takes an ISO date or Nd (days), got {value!r}") from None


def _check_folders(folders: list[str] | tuple[str, ...] | None) -> list[str]:
    names = list(folders or DEFAULT_FOLDERS)
    for name in names:
        if not name or not name.strip() or any(c in name for c in "\r\n\0") or len(name) > 200:
            raise ValidationError(f"--folder {name!r} is not a folder name")
    return list(dict.fromkeys(names))


# -- how to log in ------------------------------------------------------------------------


def imap_server(ws: Workspace, account: Account) -> IMAPServer:
    """Where the account's mailbox is (its IMAP login where set apart from the SMTP one)."""
    login, _ = _imap_credentials(ws, account)
    return IMAPServer(
        name=account.name,
        host=account.imap_host or account.smtp_host,
        port=account.imap_port or 993,
        security=account.imap_security or "ssl",
        login=login,
        ca_bundle=account.ca_bundle,
        allow_insecure_auth=account.allow_insecure_auth,
    )


def _imap_credentials(ws: Workspace, account: Account) -> tuple[str, str | None]:
    with ws.store.connect() as con:
        row = con.execute(
            "SELECT imap_login, imap_password_enc FROM accounts WHERE name = ?", [account.name]
        ).fetchone()
    login, enc = row if row else (None, None)
    return (login or account.login), enc


def imap_login(ws: Workspace, account: Account) -> tuple[Login | None, Callable[[bytes], bytes]]:
    """The login step for an account's mailbox and a masker for the server's replies.

    Separate IMAP credentials (``set_imap_credentials``) win over the account's
    own. This is the one place that chooses how to authenticate: another
    method (OAuth2's XOAUTH2) returns its own ``Login`` here.
    """
    login, enc = _imap_credentials(ws, account)
    if account.auth == "oauth2" and not enc:  # XOAUTH2 with the account's own tokens
        try:
            seen = [password_for(ws, account)]
        except OAuthError as exc:  # not authorized, revoked: this account's one line
            raise IMAPError(f"login: {exc}", step="login") from None

        def mask(reply: bytes) -> bytes:
            for token in seen:
                reply = password_masker(login, token)(reply)
            return reply

        return xoauth2_login(login, seen[0], seen), mask
    secret = (
        ws.secrets.decrypt(enc, f"the IMAP password of {account.name!r}")
        if enc
        else password_for(ws, account)
    )
    if not secret:
        raise IMAPError(
            f"login: {account.name!r} has no password to log in to its mailbox with; give it "
            f"one, or an IMAP login (`sysmail-ops archive imap-login {account.name} --login ...`)",
            step="login",
        )
    return password_login(login, secret), password_masker(login, secret)


def set_imap_credentials(
    ws: Workspace, name: str, *, login: str | None, password: Secret | str | None
) -> None:
    """Give an account a mailbox login apart from its SMTP one; both None clears it."""
    get_account(ws, name)
    if isinstance(password, str):
        password = Secret(password)
    if login is not None:
        login = login.strip()
        if not login or len(login) > 200 or any(c in login for c in "\r\n\0"):
            raise ValidationError("the IMAP login must be one line of at most 200 characters")
    if password is not None and any(c in password.reveal() for c in "\r\n\0"):
        raise ValidationError("the IMAP password must not contain line breaks")
    enc = ws.secrets.encrypt(password) if password else None
    with ws.store.transaction() as con:
        before = audit.row(con, "accounts", name=name)
        con.execute(
            "UPDATE accounts SET imap_login = ?, imap_password_enc = ? WHERE name = ?",
            [login, enc, name],
        )
        audit.record(con, "account", name, "edit", before, audit.row(con, "accounts", name=name))


# -- the fetch ----------------------------------------------------------------------------


@contextlib.contextmanager
def _account_lock(ws: Workspace, name: str) -> Iterator[bool]:
    """True when this process holds the account's fetch lock (released on exit or death)."""
    folder = ws.home / "locks"
    private.make_dirs(folder)
    fd = private.open_append(folder / f"imap-{name}.lock")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def fetch(
    ws: Workspace,
    accounts: list[str] | None = None,
    *,
    since: str | date | datetime | None = None,
    folders: list[str] | None = None,
    timeout: float = 30.0,
) -> list[FetchResult]:
    """Fetch new mail for the named accounts (default: all with received archiving on).

    One account's failure (login refused, connection lost) is its result's
    ``error`` and recorded in its status; the others go on.
    """
    since_date = parse_since(since)
    names = _check_folders(folders)
    _sweep_spool(ws)
    if accounts:
        chosen = [get_account(ws, n) for n in dict.fromkeys(accounts)]
    else:
        chosen = [a for a in list_accounts(ws) if a.received_archiving]
    results = []
    for account in chosen:
        if not account.received_archiving:
            results.append(
                FetchResult(
                    account.name,
                    skipped="Received Email Archiving is off: nothing fetched "
                    f"(turn it on with `accounts archiving {account.name} --received on`)",
                )
            )
            continue
        with _account_lock(ws, account.name) as mine:
            if not mine:
                results.append(
                    FetchResult(account.name, skipped="another fetch of this account is running")
                )
                continue
            results.append(_fetch_account(ws, account, names, since_date, timeout))
    return results


SPOOL_KEEP = timedelta(hours=6)


def _sweep_spool(ws: Workspace) -> None:
    """Remove what a fetch killed midway left in the spool (a part-read message, a batch file).

    Only files older than any fetch runs: another account's fetch may be using newer ones.
    """
    folder = ws.archive_dir / "received" / "spool"
    if not folder.is_dir():
        return
    cutoff = time.time() - SPOOL_KEEP.total_seconds()
    for path in folder.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()


def _spool_opener(
    ws: Workspace, opened: list[tuple[Path, IO[bytes]]]
) -> Callable[[int], IO[bytes]]:
    folder = ws.archive_dir / "received" / "spool"

    def spool(size: int) -> IO[bytes]:
        private.make_dirs(folder)
        path = folder / f"{uuid.uuid4().hex}.part"
        # Made 0600 from the start (store.private's mode); ``name`` is the path, for reading.
        fh = open(path, "wb", opener=lambda p, flags: os.open(p, flags, private.FILE_MODE))  # noqa: SIM115
        opened.append((path, fh))
        return fh

    return spool


def _fetch_account(
    ws: Workspace, account: Account, folders: list[str], since: date | None, timeout: float
) -> FetchResult:
    result = FetchResult(account.name)
    spooled: list[tuple[Path, IO[bytes]]] = []
    bundle = Bundle(ws, "received", new_batch_id())
    try:
        login, mask = imap_login(ws, account)
        conn = IMAPConnection(
            imap_server(ws, account),
            login,
            timeout=timeout,
            spool=_spool_opener(ws, spooled),
            spool_over=SPOOL_OVER,
            mask=mask,
        )
        with conn:
            missing = []
            for folder in folders:
                done = FolderResult(folder)
                try:
                    _fetch_folder(ws, account, conn, done, since, bundle, spooled)
                except IMAPError as exc:
                    if exc.step != "select" or conn.imap is None:
                        raise
                    missing.append(str(exc))  # a folder the server refused: the others go on
                    continue
                result.folders.append(done)
            if missing:
                result.error = "; ".join(missing)
    except (IMAPError, InsecureAuthError) as exc:
        result.error = str(exc)
    finally:
        bundle.close()
        for path, fh in spooled:  # what a failed batch left behind
            fh.close()
            path.unlink(missing_ok=True)
    _record_status(ws, result)
    return result


def _fetch_folder(
    ws: Workspace,
    account: Account,
    conn: IMAPConnection,
    done: FolderResult,
    since: date | None,
    bundle: Bundle,
    spooled: list[tuple[Path, IO[bytes]]],
) -> None:
    info = conn.examine(done.folder)
    with ws.store.connect() as con:
        row = con.execute(
            "SELECT uidvalidity, last_uid FROM imap_folders WHERE account = ? AND folder = ?",
            [account.name, done.folder],
        ).fetchone()
    after = 0
    window: date | None = since or (utcnow() - timedelta(days=DEFAULT_SINCE_DAYS)).date()
    if row is None:
        done.first = True
    elif int(row[0]) != info.uidvalidity:
        done.resync = True  # every UID changed meaning: read the window again, deduped by id
    else:
        after, window = int(row[1]), None
    done.last_uid = after
    sizes = conn.sizes(after, window)
    if not sizes and (done.first or done.resync):
        _commit(ws, account, done, info.uidvalidity, after, [])  # remember UIDVALIDITY
        return

    held = _Held(ws)

    def commit(last: int, items: list[_Item]) -> None:
        _commit(ws, account, done, info.uidvalidity, last, items, bundle, held)
        kept = {id(it.fetched.spooled.file) for it in items if it.fetched.spooled is not None}
        spooled[:] = [(p, h) for p, h in spooled if id(h) not in kept]

    # Batch N is committed in a second thread while batch N+1 is read from the server and
    # parsed: opening the store and inserting cost about as much as reading. One commit
    # at a time, in UID order, each waited for before the next: the same state as inline.
    pending: Future[None] | None = None
    with ThreadPoolExecutor(1, thread_name_prefix="received-commit") as pool:
        try:
            for batch in _batches(sizes):
                fetched = list(conn.fetch(batch))
                items = [_read(f, account.name) for f in fetched]
                if pending is not None:
                    pending.result()
                pending = pool.submit(commit, max(batch), items)
        finally:
            try:
                if pending is not None:
                    pending.result()
            finally:
                held.close()


def _batches(sizes: list[tuple[int, int]]) -> Iterator[list[int]]:
    batch: list[int] = []
    held = 0
    for uid, size in sizes:
        cost = min(size, SPOOL_OVER)
        if batch and (len(batch) >= BATCH or held + cost > BATCH_BYTES):
            yield batch
            batch, held = [], 0
        batch.append(uid)
        held += cost
    if batch:
        yield batch


@dataclass
class _Item:
    fetched: Fetched
    parsed: Parsed
    aid: str


def _read(f: Fetched, account: str) -> _Item:
    if f.spooled is not None:
        fh = f.spooled.file
        fh.flush()
        with open(fh.name, "rb") as src:
            parsed = read_message(src)
    else:
        parsed = read_message(f.data or b"")
    key = parsed.message_id or parsed.content_hash
    return _Item(f, parsed, archive_id(key, "received", account))


HOLD_SECONDS = 1.0


class _Held:
    """A store connection kept across consecutive batch commits, for at most HOLD_SECONDS.

    Opening the store costs ~30-100 ms here, as much as the batch's own work; a
    fetch's commits share one connection for a second at a time, then let go so
    a notebook or a send waiting for the store gets its turn (each batch is still
    its own transaction: committed, with its last UID, before the next).
    """

    def __init__(self, ws: Workspace):
        self.ws = ws
        self._cm: contextlib.AbstractContextManager[duckdb.DuckDBPyConnection] | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._since = 0.0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._con is not None and time.monotonic() - self._since > HOLD_SECONDS:
            self.close()
        if self._con is None:
            self._cm = self.ws.store.connect()
            self._con = self._cm.__enter__()
            self._since = time.monotonic()
        con = self._con
        con.begin()
        try:
            yield con
        except BaseException:
            con.rollback()
            self.close()
            raise
        con.commit()

    def close(self) -> None:
        cm, self._cm, self._con = self._cm, None, None
        if cm is not None:
            cm.__exit__(None, None, None)


def _commit(
    ws: Workspace,
    account: Account,
    done: FolderResult,
    uidvalidity: int,
    last_uid: int,
    items: list[_Item],
    bundle: Bundle | None = None,
    held: _Held | None = None,
) -> None:
    """One batch: raw files, rows, threads, bounces and the folder's last UID, together."""
    now = utcnow()
    with held.transaction() if held is not None else ws.store.transaction() as con:
        ids = [it.aid for it in items]
        existing = (
            {
                r[0]
                for r in con.execute(
                    "SELECT id FROM archive WHERE id IN (SELECT unnest(?::VARCHAR[]))", [ids]
                ).fetchall()
            }
            if ids
            else set()
        )
        new: list[_Item] = []
        for it in items:
            if it.aid in existing or it.aid in {n.aid for n in new}:
                done.duplicates += 1
                continue
            new.append(it)
        rows = [_row(ws, account, done.folder, uidvalidity, it, now, bundle) for it in new]
        if rows:
            _link_threads(con, rows)
            _insert_rows(ws, con, rows)
            for it in new:
                if it.parsed.message is not None:
                    done.bounces += bounces.record(con, ws, account.name, it.aid, it.parsed, now)
        con.execute(
            "INSERT OR REPLACE INTO imap_folders VALUES (?, ?, ?, ?, ?)",
            [account.name, done.folder, uidvalidity, last_uid, now],
        )
    done.archived += len(new)
    done.parse_errors += sum(1 for it in new if it.parsed.error)
    done.last_uid = last_uid
    for it in items:  # a spooled duplicate's file is not kept
        sp = it.fetched.spooled
        if sp is not None and it not in new:
            sp.file.close()
            Path(sp.file.name).unlink(missing_ok=True)


# The archive columns a received row fills, with their types (as the JSON reader reads them).
_TYPES = {
    **dict.fromkeys(
        ["id", "message_id", "account", "direction", "from_addr", "subject", "related_type",
         "related_id", "eml_path", "folder", "in_reply_to", "thread_id", "reply_to_id",
         "body_text", "content_hash", "parse_error"],
        "VARCHAR",
    ),
    **dict.fromkeys(["to_addrs", "cc_addrs", "attachments", "ref_ids"], "VARCHAR[]"),
    **dict.fromkeys(["date", "fetched_at"], "TIMESTAMP"),
    "size_bytes": "INTEGER",
    **dict.fromkeys(["eml_offset", "eml_length", "uidvalidity", "uid"], "BIGINT"),
    "attachment_sizes": "BIGINT[]",
}  # fmt: skip


_JSON = json.JSONEncoder(default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))
_SPEC = "{" + ", ".join(f"'{c}': '{t}'" for c, t in _TYPES.items()) + "}"


def _text_only(value: Any) -> Any:
    """A lone surrogate (an undecodable byte kept by the parser) cannot go into JSON text."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_text_only(v) for v in value]
    return value


def _insert_rows(ws: Workspace, con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]) -> None:
    """One INSERT of the batch, read by DuckDB from a JSON-lines file (as the send journal is).

    DuckDB's executemany costs ~20 ms a row here; a DataFrame twice what this does.
    """
    folder = ws.archive_dir / "received" / "spool"
    private.make_dirs(folder)
    path = folder / f"rows-{uuid.uuid4().hex}.jsonl"
    lines = (_JSON.encode({c: _text_only(r.get(c)) for c in _TYPES}) for r in rows)
    private.write_file(path, "\n".join(lines).encode("utf-8"))
    try:
        cols = ", ".join(_TYPES)
        con.execute(
            f"INSERT INTO archive ({cols}) SELECT {cols} FROM read_json(?, "  # noqa: S608
            f"format = 'newline_delimited', columns = {_SPEC}) ON CONFLICT DO NOTHING",
            [str(path)],
        )
    finally:
        path.unlink(missing_ok=True)


def _row(
    ws: Workspace,
    account: Account,
    folder: str,
    uidvalidity: int,
    it: _Item,
    now: datetime,
    bundle: Bundle | None,
) -> dict[str, Any]:
    p, f = it.parsed, it.fetched
    if f.spooled is not None:
        f.spooled.file.close()
        dest = ws.archive_dir / "received" / now.strftime("%Y/%m/%d")
        private.make_dirs(dest)
        target = dest / f"{it.aid}-{uuid.uuid4().hex[:6]}.eml"
        os.replace(f.spooled.file.name, target)
        rel, offset, length = str(target.relative_to(ws.home)), None, f.size
    else:
        assert bundle is not None
        rel, offset, length = bundle.append(now, f.data or b"")
    refs = p.references
    return {
        "id": it.aid,
        "message_id": p.message_id or p.content_hash,
        "account": account.name,
        "direction": "received",
        "from_addr": p.from_addr,
        "to_addrs": p.to,
        "cc_addrs": p.cc,
        "subject": p.subject,
        "date": p.date or _internaldate(f.internaldate) or now,
        "related_type": None,
        "related_id": None,
        "size_bytes": min(length, 2**31 - 1),
        "attachments": [n for n, _ in p.attachments],
        "attachment_sizes": [s for _, s in p.attachments],
        "eml_path": rel,
        "eml_offset": offset,
        "eml_length": length,
        "folder": folder,
        "uidvalidity": uidvalidity,
        "uid": f.uid,
        "in_reply_to": p.in_reply_to,
        "ref_ids": refs,
        "thread_id": None,
        "reply_to_id": None,
        "body_text": p.text,
        "content_hash": p.content_hash,
        "parse_error": p.error,
        "fetched_at": now,
    }


def _internaldate(value: str | None) -> datetime | None:
    if not value:
        return None
    from email.utils import parsedate_to_datetime

    try:  # "17-Jul-1996 02:44:25 -0700"
        day, mon, rest = value.strip().split("-", 2)
        when = parsedate_to_datetime(f"{day} {mon} {rest}")
    except (ValueError, TypeError, IndexError):
        return None
    from datetime import UTC

    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def _link_threads(con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]) -> None:
    """Point each reply at the message it answers: its object and its thread."""
    wanted = sorted({i for r in rows for i in [r["in_reply_to"], *r["ref_ids"]] if i})
    known: dict[str, tuple[str | None, str | None, str]] = {}
    if wanted:
        for mid, rtype, rid, thread in con.execute(
            "WITH w AS (SELECT unnest(?::VARCHAR[]) AS m) "
            "SELECT message_id, related_type, related_id, coalesce(thread_id, message_id) "
            "FROM archive JOIN w ON message_id = m",
            [wanted],
        ).fetchall():
            known.setdefault(mid, (rtype, rid, thread))
        for mid, rtype, rid in con.execute(  # sent without sent archiving: the log knows it
            "WITH w AS (SELECT unnest(?::VARCHAR[]) AS m) "
            "SELECT DISTINCT message_id, related_type, related_id FROM send_log JOIN w "
            "ON message_id = m",
            [wanted],
        ).fetchall():
            known.setdefault(mid, (rtype, rid, mid))
    for r in rows:  # earlier rows of this batch count too (a reply to a reply)
        for candidate in [r["in_reply_to"], *reversed(r["ref_ids"])]:
            if candidate and candidate in known:
                rtype, rid, thread = known[candidate]
                r["reply_to_id"] = candidate
                r["related_type"], r["related_id"] = rtype, rid
                r["thread_id"] = thread
                break
        else:
            first = r["ref_ids"][0] if r["ref_ids"] else r["in_reply_to"]
            r["thread_id"] = first or r["message_id"]
        known.setdefault(r["message_id"], (r["related_type"], r["related_id"], r["thread_id"]))


def _record_status(ws: Workspace, result: FetchResult) -> None:
    now = utcnow()
    with ws.store.transaction() as con:
        con.execute(
            "INSERT INTO imap_status (account, total_fetched) VALUES (?, 0) ON CONFLICT DO NOTHING",
            [result.account],
        )
        con.execute(
            "UPDATE imap_status SET last_fetch_at = ?, last_fetched = ?,"
            " total_fetched = total_fetched + ?,"
            " last_ok_at = CASE WHEN ? THEN ? ELSE last_ok_at END,"
            " last_error = CASE WHEN ? THEN last_error ELSE ? END,"
            " last_error_at = CASE WHEN ? THEN last_error_at ELSE ? END"
            " WHERE account = ?",
            [
                now, result.archived, result.archived,
                result.ok, now,
                result.ok, result.error,
                result.ok, now,
                result.account,
            ],
        )  # fmt: skip


# -- reading what was fetched -------------------------------------------------------------


STATUS_COLUMNS = (
    "account",
    "received_archiving",
    "folders",
    "last_fetch_at",
    "last_fetched",
    "total_fetched",
    "last_ok_at",
    "last_error",
    "last_error_at",
)


def status(ws: Workspace, name: str | None = None) -> list[dict[str, Any]]:
    """Per account: archiving on/off, folders with their last UID, last fetch, count, last error."""
    accounts = [get_account(ws, name)] if name else list_accounts(ws)
    with ws.store.connect() as con:
        st = {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT account, last_fetch_at, last_fetched, total_fetched, last_ok_at,"
                " last_error, last_error_at FROM imap_status"
            ).fetchall()
        }
        fl: dict[str, list[str]] = {}
        for acc, folder, uidv, last in con.execute(
            "SELECT account, folder, uidvalidity, last_uid FROM imap_folders ORDER BY folder"
        ).fetchall():
            fl.setdefault(acc, []).append(f"{folder} (UID {last}, UIDVALIDITY {uidv})")
    out = []
    for a in accounts:
        last_fetch, last_n, total, last_ok, err, err_at = st.get(a.name, (None,) * 6)
        out.append(
            dict(
                zip(
                    STATUS_COLUMNS,
                    [a.name, a.received_archiving, fl.get(a.name, []), last_fetch, last_n,
                     total or 0, last_ok, err, err_at],
                    strict=True,
                )
            )
        )  # fmt: skip
    return out


def thread(ws: Workspace, message_id: str) -> list[dict[str, Any]]:
    """Every archived message of the thread ``message_id`` belongs to, oldest first."""
    mid = message_id.strip()
    if not mid or any(c in mid for c in "\r\n\0") or len(mid) > 1000:
        raise ValidationError("a Message-ID is one line, such as <abc@example.com>")
    wanted = [mid if mid.startswith("<") else f"<{mid}>", mid]
    with ws.store.connect() as con:
        # The message itself, or (for mail logged but not archived) replies naming it as root.
        row = con.execute(
            "SELECT coalesce(thread_id, message_id) FROM archive"
            " WHERE message_id IN (SELECT unnest(?::VARCHAR[]))"
            " OR thread_id IN (SELECT unnest(?::VARCHAR[]))"
            " ORDER BY message_id IN (SELECT unnest(?::VARCHAR[])) DESC LIMIT 1",
            [wanted, wanted, wanted],
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no archived message with Message-ID {mid}")
        rel = con.execute(
            "SELECT id, date, direction, account, from_addr, to_addrs, subject, message_id,"
            " reply_to_id, related_type, related_id FROM archive"
            " WHERE coalesce(thread_id, message_id) = ? ORDER BY date, id",
            [row[0]],
        )
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
