"""The sending log and archive explorer: filters, pages, one row's details, "did X get it?".

Everything is asked of DuckDB a page at a time: a filter becomes a WHERE
clause, a page is ``ORDER BY id DESC LIMIT size OFFSET ...`` plus one count,
so the log is never loaded whole. The log's count is capped, as log explorers
do: a short page gives the exact total for free, otherwise rows are counted
only up to ``COUNT_CAP`` (or the current page), and beyond it the page says
"more than 1,000" instead of scanning millions of rows for an exact figure.
Each call opens the store, asks, and closes it: nothing stays open between
two clicks of the explorer.

Filters are checked before any query: a bad value (an unknown status, a
malformed address, a page of 0) is one ``ValidationError`` naming the field.
"""

# SQL here is built from this module's own fragments; every value is a parameter.
# ruff: noqa: S608

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any

from sysmail_ops.analytics.queries import _when
from sysmail_ops.errors import NotFoundError, SysmailError, ValidationError
from sysmail_ops.records import archive, sendlog
from sysmail_ops.records.suppression import normalise

if TYPE_CHECKING:
    import pandas as pd

    from sysmail_ops.config.workspace import Workspace

__all__ = [
    "PAGE_COLUMNS",
    "ArchiveFilter",
    "LogDetails",
    "LogFilter",
    "Page",
    "RenderedMail",
    "archive_filter",
    "archive_page",
    "conversation",
    "did_they_get_it",
    "log_details",
    "log_filter",
    "log_page",
    "log_rows",
    "render_message",
    "verdict",
]

MAX_PAGE_SIZE = 500
COUNT_CAP = 1000  # the log explorer counts matching rows up to here ("more than 1,000")
PAGE_COLUMNS = [
    "id", "queued_at", "account", "template", "use_case", "recipient", "subject", "status",
    "smtp_code", "attempt", "delivery_key",
]  # fmt: skip
_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9-]{1,63}")
_TEXT_MAX = 500


def _label(names: Mapping[str, str] | None, key: str) -> str:
    return (names or {}).get(key, key)


def _text(value: object, what: str) -> str | None:
    """A plain one-line filter value, or None when empty."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be text, got {type(value).__name__}")
    value = value.strip()
    if not value:
        return None
    if len(value) > _TEXT_MAX or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValidationError(f"{what} must be one line of at most {_TEXT_MAX} characters")
    return value


def _domain(value: object, what: str) -> str | None:
    text = _text(value, what)
    if text is None:
        return None
    text = text.lstrip("@").rstrip(".").lower()
    try:
        ascii_domain = text.encode("idna").decode() if not text.isascii() else text
    except UnicodeError:
        raise ValidationError(f"{what} {text!r} is not a domain name") from None
    if not _DOMAIN.fullmatch(ascii_domain):
        raise ValidationError(f"{what} {text!r} is not a domain name (like example.com)")
    return ascii_domain


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- the sending log ---------------------------------------------------------------------


@dataclass(frozen=True)
class LogFilter:
    """Which send-log rows to show. Empty fields do not filter. Build with ``log_filter``."""

    since: datetime | None = None
    until: datetime | None = None
    account: str | None = None
    status: str | None = None
    use_case: str | None = None
    template: str | None = None
    recipient: str | None = None
    domain: str | None = None
    key: str | None = None
    batch: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = ["true"]
        params: list[Any] = []
        pairs: list[tuple[str, Any]] = [
            ("queued_at >= ?", self.since),
            ("queued_at < ?", self.until),
            ("account = ?", self.account),
            ("status = ?", self.status),
            ("use_case = ?", self.use_case),
            ("template = ?", self.template),
            # the cheap suffix test first narrows the rows the case-blind match reads
            ("ends_with(recipient, ?)", self.recipient and "@" + self.recipient.rpartition("@")[2]),
            ("recipient ILIKE ? ESCAPE '\\'", self.recipient and _like_escape(self.recipient)),
            ("ends_with(recipient, ?)", self.domain and "@" + self.domain),
            ("delivery_key = ?", self.key),
            ("batch_id = ?", self.batch),
        ]
        for condition, value in pairs:
            if value is not None:
                clauses.append(condition)
                params.append(value)
        return " AND ".join(clauses), params


def log_filter(
    *,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    account: str | None = None,
    status: str | None = None,
    use_case: str | None = None,
    template: str | None = None,
    to: str | None = None,
    domain: str | None = None,
    key: str | None = None,
    batch: str | None = None,
    names: Mapping[str, str] | None = None,
) -> LogFilter:
    """A checked ``LogFilter``. ``to`` is an address, or a domain when it has no ``@``.

    ``names`` maps a field to the name the user knows it by (``{"to": "--to"}``),
    for the error message.
    """
    n = names or {}
    start = _when(since, _label(n, "since"))
    end = _when(until, _label(n, "until"))
    if start and end and end <= start:
        raise ValidationError(
            f"{_label(n, 'until')} ({end:%Y-%m-%d %H:%M}) is not after "
            f"{_label(n, 'since')} ({start:%Y-%m-%d %H:%M})"
        )
    status = _text(status, _label(n, "status"))
    if status is not None and status not in sendlog.STATUSES:
        raise ValidationError(
            f"unknown {_label(n, 'status')} {status!r}: choose one of "
            + ", ".join(sendlog.STATUSES)
        )
    use_case = _text(use_case, _label(n, "use_case"))
    if use_case is not None and use_case not in sendlog.USE_CASES:
        raise ValidationError(
            f"unknown {_label(n, 'use_case')} {use_case!r}: choose one of "
            + ", ".join(sendlog.USE_CASES)
        )
    recipient = None
    dom = _domain(domain, _label(n, "domain"))
    to_text = _text(to, _label(n, "to"))
    if to_text is not None:
        if "@" in to_text:
            recipient = normalise(to_text, _label(n, "to"))
        elif dom is None:
            dom = _domain(to_text, _label(n, "to"))
        else:
            raise ValidationError(f"{_label(n, 'to')} takes an address when a domain is given")
    return LogFilter(
        since=start,
        until=end,
        account=_text(account, _label(n, "account")),
        status=status,
        use_case=use_case,
        template=_text(template, _label(n, "template")),
        recipient=recipient,
        domain=dom,
        key=_text(key, _label(n, "key")),
        batch=_text(batch, _label(n, "batch")),
    )


@dataclass(frozen=True)
class Page:
    """One page of rows: ``rows`` (a DataFrame), ``total`` matching, ``page`` (1-based).

    ``capped``: more than ``total`` rows match (the count stopped there).
    """

    rows: pd.DataFrame
    total: int
    page: int
    size: int
    capped: bool = False

    @property
    def pages(self) -> int:
        """Pages known to hold rows (more may follow when ``capped``)."""
        return max(1, -(-self.total // self.size))

    @property
    def has_next(self) -> bool:
        return self.page < self.pages or self.capped

    @property
    def first(self) -> int:
        """The 1-based position of the page's first row (0 when the page is empty)."""
        return (self.page - 1) * self.size + 1 if len(self.rows) else 0

    @property
    def last(self) -> int:
        return self.first + len(self.rows) - 1 if len(self.rows) else 0

    def describe(self) -> str:
        if not self.total:
            return "no rows match"
        span = f"rows {self.first:,}-{self.last:,}" if self.rows.size else "no rows here"
        if self.capped:
            return f"{span} of more than {self.total:,} (page {self.page} of {self.pages:,}+)"
        return f"{span} of {self.total:,} (page {self.page} of {self.pages:,})"


def _paging(page: int, size: int) -> tuple[int, int]:
    if not isinstance(page, int) or isinstance(page, bool) or page < 1:
        raise ValidationError(f"page must be a whole number of 1 or more, got {page!r}")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_PAGE_SIZE:
        raise ValidationError(f"page size must be 1 to {MAX_PAGE_SIZE}, got {size!r}")
    return page, size


def log_page(
    ws: Workspace,
    flt: LogFilter | None = None,
    page: int = 1,
    size: int = 50,
    *,
    total: int | None = None,
    count_cap: int = COUNT_CAP,
) -> Page:
    """Page ``page`` of the rows matching ``flt``, newest first (``PAGE_COLUMNS``).

    ``total``: the exact count a previous page of the same filter gave, so that
    paging on does not count again. The count is exact up to ``count_cap`` rows
    (or up to the end of this page, when further): beyond it the page is
    ``capped`` and ``total`` is the cap, read "more than ``total``". A page
    shorter than ``size`` is the last one, so its total is known without counting.
    """
    page, size = _paging(page, size)
    if not isinstance(count_cap, int) or isinstance(count_cap, bool) or count_cap < 1:
        raise ValidationError(f"count cap must be a whole number of 1 or more, got {count_cap!r}")
    where, params = (flt or LogFilter()).where()
    offset = (page - 1) * size
    limit = max(count_cap, offset + size) + 1  # rows counted at most
    columns = ", ".join(PAGE_COLUMNS)
    capped = False
    sendlog.fold_orphans(ws)
    with ws.store.connect() as con:
        df: pd.DataFrame
        if total is None and where == "true":  # no filter: the table's count is metadata
            row = con.execute("SELECT count(*) FROM send_log").fetchone()
            total = int(row[0]) if row else 0
        if total is None and limit == count_cap + 1:
            # the first pages: one scan picks the newest `limit` ids, which give both the
            # (capped) count and this page's ids; a rare filter is then read once, not twice
            found = [i for (i,) in con.execute(
                f"SELECT id FROM send_log WHERE {where} ORDER BY id DESC LIMIT ?",
                [*params, limit],
            ).fetchall()]  # fmt: skip
            total, capped = (limit - 1, True) if len(found) >= limit else (len(found), False)
            df = con.execute(
                f"SELECT {columns} FROM send_log WHERE id IN (SELECT unnest(?)) ORDER BY id DESC",
                [found[offset : offset + size]],
            ).df()
        else:
            df = con.execute(
                f"SELECT {columns} FROM send_log WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?",
                [*params, size, offset],
            ).df()
            if total is not None:
                pass
            elif len(df) < size and (len(df) or page == 1):
                total = offset + len(df)  # the last page: nothing after it
            else:
                # count at most `limit` rows: the scan stops there instead of reading them all
                row = con.execute(
                    f"SELECT count(*) FROM (SELECT 1 FROM send_log WHERE {where} LIMIT ?)",
                    [*params, limit],
                ).fetchone()
                total = int(row[0]) if row else 0
                if total >= limit:
                    total, capped = limit - 1, True
    df["smtp_code"] = df["smtp_code"].astype("Int64")
    return Page(df, total, page, size, capped)


def log_rows(ws: Workspace, flt: LogFilter | None = None, limit: int | None = 100) -> pd.DataFrame:
    """Every column of the rows matching ``flt``, newest first, at most ``limit`` (None: all)."""
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValidationError(f"limit must be 1 or more, got {limit!r}")
    where, params = (flt or LogFilter()).where()
    sendlog.fold_orphans(ws)
    sql = f"SELECT * FROM send_log WHERE {where} ORDER BY id DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    with ws.store.connect() as con:
        df: pd.DataFrame = con.execute(sql, params).df()
    return df


@dataclass
class LogDetails:
    """One log row, every attempt of its delivery, and its archived message if kept."""

    row: dict[str, Any]
    attempts: pd.DataFrame
    archive: dict[str, Any] | None = None
    raw: bytes | None = None
    archive_error: str | None = None


def _plain(value: Any) -> Any:
    import pandas as pd

    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value.item() if hasattr(value, "item") else value


def log_details(ws: Workspace, log_id: int) -> LogDetails:
    """Row ``log_id`` with every attempt of the same delivery and its archived ``.eml``."""
    if not isinstance(log_id, int) or isinstance(log_id, bool) or log_id < 1:
        raise ValidationError(f"a log row id is a whole number of 1 or more, got {log_id!r}")
    sendlog.fold_orphans(ws)
    with ws.store.connect() as con:
        rel = con.execute("SELECT * FROM send_log WHERE id = ?", [log_id])
        cols = [d[0] for d in rel.description]
        found = rel.fetchone()
        if found is None:
            raise NotFoundError(f"no send log row {log_id}")
        row = dict(zip(cols, found, strict=True))
        if row["message_id"]:
            same, params = "message_id = ? AND recipient = ?", [row["message_id"], row["recipient"]]
        else:
            same, params = "id = ?", [log_id]
        attempts: pd.DataFrame = con.execute(
            "SELECT id, attempt, queued_at, sent_at, status, smtp_phase, smtp_code, smtp_reply,"
            f" duration_ms, next_attempt_at FROM send_log WHERE {same} ORDER BY id",
            params,
        ).df()
        entry = None
        if row["message_id"]:
            arel = con.execute(
                "SELECT * FROM archive WHERE message_id = ? AND direction = 'sent'"
                " ORDER BY account = ? DESC LIMIT 1",
                [row["message_id"], row["account"]],
            )
            acols = [d[0] for d in arel.description]
            afound = arel.fetchone()
            entry = dict(zip(acols, afound, strict=True)) if afound else None
    attempts["smtp_code"] = attempts["smtp_code"].astype("Int64")
    details = LogDetails(row, attempts, entry)
    if entry is not None:
        try:
            details.raw = archive.raw_message(ws, entry["id"])
        except SysmailError as exc:
            details.archive_error = str(exc)
    return details


def did_they_get_it(
    ws: Workspace,
    address: str,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
) -> pd.DataFrame:
    """Every mail to ``address`` queued in the period, and what became of it.

    One row per delivery, newest first: ``first_queued_at``, ``account``,
    ``template``, ``use_case``, ``subject``, ``outcome`` (the latest attempt's
    status), ``attempts``, ``smtp_code``, ``smtp_reply``, ``sent_at``,
    ``log_id`` (the latest row, for ``log_details``), ``delivery_key``,
    ``archived`` (whether the sent message is in the archive).
    """
    flt = log_filter(since=since, until=until, to=address)
    if flt.recipient is None:
        raise ValidationError(f"an address is needed (like ann@example.com), got {address!r}")
    where, params = flt.where()
    sendlog.fold_orphans(ws)
    with ws.store.connect() as con:
        df: pd.DataFrame = con.execute(
            f"WITH rows AS (SELECT * FROM send_log WHERE {where}),"
            " d AS (SELECT CASE WHEN message_id = '' THEN id::VARCHAR ELSE message_id END AS mid,"
            " min(queued_at) AS first_queued_at, arg_max(account, id) AS account,"
            " arg_max(template, id) AS template, arg_max(use_case, id) AS use_case,"
            " arg_max(subject, id) AS subject, arg_max(status, id) AS outcome,"
            " max(attempt) AS attempts, arg_max(smtp_code, id) AS smtp_code,"
            " arg_max(smtp_reply, id) AS smtp_reply, max(sent_at) AS sent_at, max(id) AS log_id,"
            " arg_max(delivery_key, id) AS delivery_key, arg_max(message_id, id) AS message_id"
            " FROM rows GROUP BY mid, lower(recipient))"
            " SELECT d.* EXCLUDE (mid, message_id), EXISTS (SELECT 1 FROM archive a"
            " WHERE a.message_id = d.message_id AND d.message_id <> ''"
            " AND a.direction = 'sent') AS archived FROM d ORDER BY log_id DESC",
            params,
        ).df()
    df["smtp_code"] = df["smtp_code"].astype("Int64")
    return df


def verdict(address: str, mails: pd.DataFrame) -> str:
    """One line for ``did_they_get_it``: "3 mails to ann@example.com: 2 sent, 1 failed (550)"."""
    if mails.empty:
        return f"no mail to {address} in this period"
    counts = mails["outcome"].value_counts()
    parts = [f"{int(n)} {status}" for status, n in counts.items()]
    failed = mails[mails["outcome"] == "failed"]["smtp_code"].dropna().unique()
    codes = (
        f" (failed with {', '.join(str(int(c)) for c in sorted(failed))})" if len(failed) else ""
    )
    noun = "mail" if len(mails) == 1 else "mails"
    return f"{len(mails)} {noun} to {address}: {', '.join(parts)}{codes}"


# -- the archive -------------------------------------------------------------------------

DIRECTIONS = ("sent", "received")
ARCHIVE_COLUMNS = [
    "id", "date", "direction", "account", "from_addr", "to_addrs", "subject", "related_type",
    "related_id", "size_bytes", "message_id",
]  # fmt: skip


@dataclass(frozen=True)
class ArchiveFilter:
    """Which archived messages to show. Build with ``archive_filter``."""

    since: datetime | None = None
    until: datetime | None = None
    direction: str | None = None
    account: str | None = None
    related: tuple[str, str] | None = None
    address: str | None = None
    subject: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = ["true"]
        params: list[Any] = []
        pairs: list[tuple[str, Any]] = [
            ("date >= ?", self.since),
            ("date < ?", self.until),
            ("direction = ?", self.direction),
            ("account = ?", self.account),
            ("related_type = ? AND related_id = ?", self.related),
            (
                "(lower(from_addr) = ?"
                " OR list_contains(list_transform(to_addrs, lambda x: lower(x)), ?)"
                " OR list_contains(list_transform(cc_addrs, lambda x: lower(x)), ?))",
                self.address and (self.address,) * 3,
            ),
            ("subject ILIKE ? ESCAPE '\\'", self.subject and f"%{_like_escape(self.subject)}%"),
        ]
        for condition, value in pairs:
            if value is not None:
                clauses.append(condition)
                params.extend(value if isinstance(value, tuple) else (value,))
        return " AND ".join(clauses), params


def archive_filter(
    *,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    direction: str | None = None,
    account: str | None = None,
    related: str | None = None,
    address: str | None = None,
    subject: str | None = None,
) -> ArchiveFilter:
    """A checked ``ArchiveFilter``; ``related`` is ``TYPE:ID`` (the object the mail is about)."""
    start, end = _when(since, "since"), _when(until, "until")
    if start and end and end <= start:
        raise ValidationError(
            f"until ({end:%Y-%m-%d %H:%M}) is not after since ({start:%Y-%m-%d %H:%M})"
        )
    direction = _text(direction, "direction")
    if direction is not None and direction not in DIRECTIONS:
        raise ValidationError(f"direction is sent or received, got {direction!r}")
    obj = None
    rel = _text(related, "object")
    if rel is not None:
        obj_type, sep, obj_id = rel.partition(":")
        if not sep or not obj_type.strip() or not obj_id.strip():
            raise ValidationError(f"object takes TYPE:ID (like case:42), got {rel!r}")
        obj = (obj_type.strip(), obj_id.strip())
    addr = _text(address, "address")
    return ArchiveFilter(
        since=start,
        until=end,
        direction=direction,
        account=_text(account, "account"),
        related=obj,
        address=normalise(addr, "address").lower() if addr else None,
        subject=_text(subject, "subject"),
    )


def archive_page(
    ws: Workspace,
    flt: ArchiveFilter | None = None,
    page: int = 1,
    size: int = 50,
    *,
    oldest_first: bool = False,
) -> Page:
    """Page ``page`` of the archived messages matching ``flt``, newest first by default."""
    page, size = _paging(page, size)
    where, params = (flt or ArchiveFilter()).where()
    order = "date, id" if oldest_first else "date DESC, id DESC"
    sendlog.fold_orphans(ws)
    with ws.store.connect() as con:
        row = con.execute(f"SELECT count(*) FROM archive WHERE {where}", params).fetchone()
        total = int(row[0]) if row else 0
        df: pd.DataFrame = con.execute(
            f"SELECT {', '.join(ARCHIVE_COLUMNS)} FROM archive WHERE {where}"
            f" ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, size, (page - 1) * size],
        ).df()
    return Page(df, total, page, size)


def conversation(ws: Workspace, related: str, size: int = MAX_PAGE_SIZE) -> pd.DataFrame:
    """The mail about one object (``TYPE:ID``), sent and received, oldest first."""
    if not _text(related, "object"):
        raise ValidationError("object takes TYPE:ID (like case:42)")
    return archive_page(ws, archive_filter(related=related), 1, size, oldest_first=True).rows


# -- showing a message -------------------------------------------------------------------

_MAX_INLINE_IMAGES = 5_000_000  # bytes of cid: images turned into data: URIs, at most


@dataclass
class RenderedMail:
    """What a viewer shows of one message: headers, text, HTML (cid: images inlined)."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    text: str | None = None
    html: str | None = None
    attachments: list[tuple[str, str, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


_SHOWN_HEADERS = ("From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID")


def render_message(raw: bytes) -> RenderedMail:
    """Parse a raw message for display: never raises on malformed mail (problems are noted)."""
    out = RenderedMail()
    try:
        msg = BytesParser(policy=policy.default).parsebytes(raw)
    except Exception as exc:  # a parser bug on hostile input: show what we can
        out.problems.append(f"cannot parse the message: {type(exc).__name__}")
        out.text = raw.decode("utf-8", "replace")
        return out
    assert isinstance(msg, EmailMessage)
    for name in _SHOWN_HEADERS:
        for value in msg.get_all(name, []):
            try:
                out.headers.append((name, str(value)))
            except Exception:  # a header the policy cannot decode
                out.problems.append(f"unreadable {name} header")
    for kind in ("plain", "html"):
        part = msg.get_body(preferencelist=(kind,))
        if part is None:
            continue
        try:
            content = part.get_content()
        except Exception as exc:  # unknown charset, broken transfer encoding
            out.problems.append(f"the {kind} part cannot be decoded: {type(exc).__name__}")
            payload = part.get_payload(decode=True)
            content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
        if kind == "plain":
            out.text = str(content)
        else:
            out.html = str(content)
    images: dict[str, str] = {}
    budget = _MAX_INLINE_IMAGES
    for part in msg.walk():
        if part.is_multipart():
            continue
        cid = str(part.get("Content-ID", "")).strip().strip("<>")
        ctype = part.get_content_type()
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else 0
        if cid and ctype.startswith("image/") and isinstance(payload, bytes) and size <= budget:
            budget -= size
            images[cid] = f"data:{ctype};base64,{base64.b64encode(payload).decode()}"
        filename = part.get_filename()
        if filename or part.get_content_disposition() == "attachment":
            out.attachments.append((str(filename or "(no name)"), ctype, size))
    if out.html and images:
        out.html = re.sub(
            r"cid:([^\"'\s>)]+)",
            lambda m: images.get(m.group(1), m.group(0)),
            out.html,
        )
    return out
