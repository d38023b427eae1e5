"""Ops questions over the send log, aggregated by DuckDB: pandas only gets the answer.

Each function takes the workspace and a period (``since``/``until``: a
datetime, an ISO date/time or an age such as ``7d``; rows are chosen by
``queued_at`` in ``[since, until)``) and, where it makes sense, system emails
(``accounts``). It opens the store once, lets DuckDB scan and group the log,
and returns a small DataFrame; no connection stays open and the log is never
loaded whole, so a year of mail costs the same memory as a day.

A **delivery** is one message to one recipient, counted by its latest attempt
in the period (the log has one row per attempt: a message deferred twice then
sent has three rows and counts once, as sent). A row without a message
(``skipped_duplicate``, ``suppressed``, ``dry_run``) is a delivery of its own.
Only ``sent``, ``deferred`` and ``failed`` are attempts at the recipient's
server (``ATTEMPTED``); rates are over those.

For ad-hoc SQL, ``sql`` runs one SELECT on a read-only connection where the
views ``deliveries`` (``DELIVERIES_COLUMNS``) and ``attempts`` (every log row)
are defined over the whole log. Times are naive UTC (as stored), days UTC days.
"""

# SQL here is built from this module's own fragments; every value is a parameter.
# ruff: noqa: S608

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sysmail_ops.analytics.queries import ATTEMPTED, _when
from sysmail_ops.errors import ValidationError
from sysmail_ops.records import sendlog

if TYPE_CHECKING:  # pandas is imported when a frame is built
    import duckdb
    import pandas as pd

    from sysmail_ops.config.workspace import Workspace

__all__ = [
    "DELIVERIES_COLUMNS",
    "QUESTIONS",
    "Scope",
    "all_questions",
    "busiest_hours",
    "failures_by_code",
    "failures_by_domain",
    "headline",
    "headline_of",
    "latency",
    "rate_by_account",
    "rate_by_day",
    "retries",
    "scope",
    "sql",
    "suppressions_and_bounces",
    "top_failures",
    "totals_by_status",
    "volume_by_template",
    "volume_by_use_case",
]

When = str | datetime | None
Accounts = str | Sequence[str] | None


@dataclass(frozen=True)
class Scope:
    """Which log rows a question looks at: queued in ``[since, until)``, of ``accounts``."""

    since: datetime | None = None
    until: datetime | None = None
    accounts: tuple[str, ...] = ()

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = ["true"]
        params: list[Any] = []
        if self.since is not None:
            clauses.append("queued_at >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("queued_at < ?")
            params.append(self.until)
        if self.accounts:
            clauses.append("account IN (SELECT unnest(?::VARCHAR[]))")
            params.append(list(self.accounts))
        return " AND ".join(clauses), params


def scope(since: When = None, until: When = None, accounts: Accounts = None) -> Scope:
    """A checked ``Scope``: ages and ISO times read as UTC, ``until`` after ``since``."""
    start, end = _when(since, "since"), _when(until, "until")
    if start and end and end <= start:
        raise ValidationError(
            f"until ({end:%Y-%m-%d %H:%M}) is not after since ({start:%Y-%m-%d %H:%M})"
        )
    names = [accounts] if isinstance(accounts, str) else list(accounts or [])
    if any(not isinstance(n, str) or not n.strip() for n in names):
        raise ValidationError("accounts are system email names (text)")
    return Scope(start, end, tuple(names))


# How a question sees the log, in one connection. ``superseded``: the deferred rows in scope
# that a later attempt of the same delivery follows; it is built first, as a small temp table
# of ids (an anti-join of the few retry rows, not a window over every row). A sent, failed or
# skipped row is always the last of its delivery: nothing is tried after it. Then
# ``scoped``: the rows in scope; ``final``: the latest attempt of each delivery; ``first``
# (when asked for, also a temp table): when each retried delivery was first queued.
_SUPERSEDED = """
CREATE OR REPLACE TEMP TABLE superseded AS
WITH later AS (SELECT message_id, recipient, id FROM send_log WHERE {where_m} AND attempt > 1)
SELECT l.id FROM send_log l SEMI JOIN later ON later.message_id = l.message_id
    AND later.recipient = l.recipient AND later.id > l.id
WHERE {where} AND l.status = 'deferred'"""
_FIRST = """
CREATE OR REPLACE TEMP TABLE first AS
WITH {ctes}
SELECT message_id, recipient, min(queued_at) AS first_queued_at FROM scoped
WHERE attempt = 1 AND status = 'deferred' AND message_id <> ''
GROUP BY ALL"""
_CTES = """
scoped AS NOT MATERIALIZED (SELECT * FROM send_log WHERE {where}),
final AS NOT MATERIALIZED (
    SELECT * FROM scoped WHERE status <> 'deferred' OR id NOT IN (SELECT id FROM superseded)
)"""
# Each delivery's wait from first queued to ``end``; only a retried one (attempt > 1) looks up
# its first attempt (a join of thousands, not of every row).
_WAITS = """
SELECT f.account, f.attempt AS attempts, f.status, epoch({end} - f.queued_at) AS wait
FROM final f WHERE f.attempt = 1 AND f.status IN {status}
UNION ALL
SELECT f.account, f.attempt, f.status,
    epoch({end} - coalesce(first.first_queued_at, f.queued_at))
FROM final f LEFT JOIN first USING (message_id, recipient)
WHERE f.attempt > 1 AND f.status IN {status}"""
_SENT_SQL = "('sent')"
_ATTEMPTED_SQL = "('sent', 'deferred', 'failed')"

DELIVERIES_COLUMNS = {
    "log_id": "the id of the delivery's latest log row (``sysmail-ops logs show ID``)",
    "delivery_key": "the idempotency key",
    "message_id": "the Message-ID ('' when nothing was composed)",
    "account": "the system email",
    "template": "the object template",
    "use_case": "workflow, report_subscription, survey, ...",
    "related_type": "the object type the mail is about",
    "related_id": "the object id",
    "recipient": "the address",
    "domain": "the recipient's domain, lower case",
    "subject": "the subject",
    "status": "the latest attempt's status: sent, deferred, failed, suppressed, ...",
    "smtp_phase": "the SMTP step of the latest answer (rcpt, data, connect, ...)",
    "smtp_code": "the latest SMTP reply code (NULL: no server answer)",
    "reply_class": "'2xx', '4xx', '5xx' or 'none'",
    "smtp_reply": "the latest server reply",
    "attempts": "how many attempts so far",
    "first_queued_at": "when the first attempt was queued",
    "queued_at": "when the latest attempt was queued",
    "sent_at": "when the server accepted it (NULL unless sent)",
    "wait_seconds": "first queued to accepted, in seconds (NULL unless sent)",
    "size_bytes": "the message size",
}


_DELIVERIES = """
SELECT f.id AS log_id, f.delivery_key, f.message_id, f.account, f.template, f.use_case,
    f.related_type, f.related_id, f.recipient,
    lower(split_part(f.recipient, '@', -1)) AS domain, f.subject, f.status, f.smtp_phase,
    f.smtp_code, coalesce((f.smtp_code // 100)::VARCHAR || 'xx', 'none') AS reply_class,
    f.smtp_reply, f.attempt AS attempts,
    coalesce(first.first_queued_at, f.queued_at) AS first_queued_at, f.queued_at, f.sent_at,
    epoch(f.sent_at - coalesce(first.first_queued_at, f.queued_at)) AS wait_seconds,
    f.size_bytes
FROM final f LEFT JOIN first USING (message_id, recipient)"""


@dataclass
class _Session:
    """One connection prepared for one scope: the temp tables the questions share."""

    scope: Scope
    con: duckdb.DuckDBPyConnection
    has_first: bool = False

    def prepare(self) -> None:
        where, params = self.scope.where()
        self.con.execute(_SUPERSEDED.format(where=where, where_m=where), [*params, *params])

    def ctes(self) -> str:
        return _CTES.format(where=self.scope.where()[0])

    def need_first(self) -> None:
        if not self.has_first:
            self.con.execute(_FIRST.format(ctes=self.ctes()), self.scope.where()[1])
            self.has_first = True

    def frame(self, body: str, params: Sequence[Any], first: bool) -> pd.DataFrame:
        if first:
            self.need_first()
        query = f"WITH {self.ctes()}, {body}"
        df: pd.DataFrame = self.con.execute(query, [*self.scope.where()[1], *params]).df()
        return df


_ACTIVE: ContextVar[_Session | None] = ContextVar("sysmail_ops_analytics_session", default=None)


@contextmanager
def _session(
    ws: Workspace, sc: Scope, *, read_only: bool = False, prepare: bool = True
) -> Iterator[_Session]:
    """Open the store once for several questions over one scope."""
    sendlog.fold_orphans(ws)
    with ws.store.connect(read_only=read_only) as con:
        session = _Session(sc, con)
        if prepare:
            session.prepare()
        token = _ACTIVE.set(session)
        try:
            yield session
        finally:
            _ACTIVE.reset(token)


def _frame(
    ws: Workspace, sc: Scope, body: str, params: Sequence[Any] = (), *, first: bool = False
) -> pd.DataFrame:
    """Run ``WITH scoped, final, <body>`` (``first`` built when asked): one store visit."""
    active = _ACTIVE.get()
    if active is not None and active.scope == sc:
        return active.frame(body, params, first)
    with _session(ws, sc) as session:
        return session.frame(body, params, first)


def _ints(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    for c in cols:
        df[c] = df[c].fillna(0).astype("int64")
    return df


def _rates_sql(key: str, key_sql: str, where: str = "true") -> str:
    return (
        f"rated AS (SELECT {key_sql} AS {key}, count(*) AS attempted,"
        " count(*) FILTER (status = 'sent') AS sent,"
        " count(*) FILTER (status = 'deferred') AS deferred,"
        " count(*) FILTER (status = 'failed') AS failed"
        f" FROM final WHERE status IN {_ATTEMPTED_SQL} AND {where} GROUP BY ALL)"
        f" SELECT *, round(sent / attempted, 4) AS delivery_rate FROM rated ORDER BY {key}"
    )


def rate_by_account(ws: Workspace, since: When = None, until: When = None,
                    accounts: Accounts = None) -> pd.DataFrame:  # fmt: skip
    """Per account: deliveries attempted, sent, deferred, failed and the delivery rate."""
    df = _frame(ws, scope(since, until, accounts), _rates_sql("account", "account"))
    return _ints(df, "attempted", *ATTEMPTED)


def rate_by_day(ws: Workspace, since: When = None, until: When = None,
                accounts: Accounts = None) -> pd.DataFrame:  # fmt: skip
    """Per UTC day (of the delivery's latest attempt): the same figures as ``rate_by_account``."""
    df = _frame(ws, scope(since, until, accounts), _rates_sql("day", "queued_at::DATE"))
    df = _ints(df, "attempted", *ATTEMPTED)
    df["day"] = [d.date() if hasattr(d, "date") else d for d in df["day"]]
    return df


def totals_by_status(ws: Workspace, since: When = None, until: When = None,
                     accounts: Accounts = None) -> pd.DataFrame:  # fmt: skip
    """Deliveries per final status (every known status, zeros included) and their share."""
    import pandas as pd

    df = _frame(
        ws,
        scope(since, until, accounts),
        "t AS (SELECT status, count(*) AS n FROM final GROUP BY ALL) SELECT * FROM t",
    )
    counts = dict(zip(df["status"], df["n"], strict=True))
    order = list(sendlog.STATUSES) + sorted(set(counts) - set(sendlog.STATUSES))
    out = pd.DataFrame({"status": order, "deliveries": [int(counts.get(s, 0)) for s in order]})
    total = out["deliveries"].sum()
    out["share"] = (out["deliveries"] / total).round(4) if total else 0.0
    return out


def headline(ws: Workspace, since: When = None, until: When = None,
             accounts: Accounts = None) -> str:  # fmt: skip
    """One line: "198 of 200 deliveries sent (99.0%), 2 failed, 0 deferred"."""
    totals = totals_by_status(ws, since, until, accounts).set_index("status")["deliveries"]
    return headline_of({s: int(totals.get(s, 0)) for s in ATTEMPTED})


def headline_of(counts: pd.DataFrame | dict[str, int]) -> str:
    """``headline`` from counts already asked: ``{"sent": n, ...}``, or a ``rate_by_*`` answer."""
    if not isinstance(counts, dict):
        counts = {s: int(counts[s].sum()) if len(counts) else 0 for s in ATTEMPTED}
    sent, failed, deferred = (int(counts.get(s, 0)) for s in ("sent", "failed", "deferred"))
    tried = sent + failed + deferred
    if not tried:
        return "no deliveries in this period"
    return (
        f"{sent} of {tried} deliveries sent ({sent / tried:.1%}), {failed} failed, "
        f"{deferred} deferred"
    )


def top_failures(ws: Workspace, since: When = None, until: When = None,
                 accounts: Accounts = None, n: int = 5) -> pd.DataFrame:  # fmt: skip
    """The ``n`` commonest SMTP codes of failed or deferred deliveries, with the latest example.

    Columns: ``smtp_code`` (empty when no server answered), ``status``,
    ``deliveries``, ``accounts``, ``example_recipient``, ``example_reply``, ``last_seen``.
    """
    df = _frame(
        ws,
        scope(since, until, accounts),
        "bad AS (SELECT smtp_code, status, count(*) AS deliveries,"
        " string_agg(DISTINCT account, ', ' ORDER BY account) AS accounts,"
        " arg_max(recipient, id) AS example_recipient, arg_max(smtp_reply, id) AS example_reply,"
        " max(queued_at) AS last_seen FROM final WHERE status IN ('failed', 'deferred')"
        " GROUP BY ALL)"
        " SELECT * FROM bad ORDER BY deliveries DESC, last_seen DESC LIMIT ?",
        [_positive(n, "n")],
    )
    df["smtp_code"] = df["smtp_code"].astype("Int64")
    return _ints(df, "deliveries")


def failures_by_code(ws: Workspace, since: When = None, until: When = None,
                     accounts: Accounts = None) -> pd.DataFrame:  # fmt: skip
    """Failed and still-deferred deliveries by SMTP reply class and code.

    Columns: ``reply_class`` (``5xx`` permanent, ``4xx`` temporary, ``none``: no
    server answered), ``smtp_code``, ``failed``, ``deferred``, ``deliveries``,
    ``share`` (of all failed and deferred), ``example_reply`` (the latest), ``last_seen``.
    """
    df = _frame(
        ws,
        scope(since, until, accounts),
        "bad AS (SELECT coalesce((smtp_code // 100)::VARCHAR || 'xx', 'none') AS reply_class,"
        " smtp_code, count(*) FILTER (status = 'failed') AS failed,"
        " count(*) FILTER (status = 'deferred') AS deferred, count(*) AS deliveries,"
        " arg_max(smtp_reply, id) AS example_reply, max(queued_at) AS last_seen"
        " FROM final WHERE status IN ('failed', 'deferred') GROUP BY ALL)"
        " SELECT *, round(deliveries / sum(deliveries) OVER (), 4) AS share FROM bad"
        " ORDER BY deliveries DESC, smtp_code NULLS LAST",
    )
    df["smtp_code"] = df["smtp_code"].astype("Int64")
    df = _ints(df, "failed", "deferred", "deliveries")
    return df[["reply_class", "smtp_code", "failed", "deferred", "deliveries", "share",
               "example_reply", "last_seen"]]  # fmt: skip


def failures_by_domain(ws: Workspace, since: When = None, until: When = None,
                       accounts: Accounts = None, n: int = 20) -> pd.DataFrame:  # fmt: skip
    """The ``n`` recipient domains with most failed or deferred deliveries.

    Columns: ``domain``, ``attempted``, ``sent``, ``failed``, ``deferred``,
    ``failure_rate`` ((failed + deferred) / attempted), ``top_code`` (the
    commonest failing code), ``example_reply`` (the latest failure's).
    """
    df = _frame(
        ws,
        scope(since, until, accounts),
        # counts per domain as written (the pipeline writes domains lower case), folded to
        # lower case on the few hundred groups; the failure details come from the failures
        # alone: mode and arg_max over every row would cost more than all the counting
        "raw AS (SELECT split_part(recipient, '@', -1) AS domain, count(*) AS attempted,"
        " count(*) FILTER (status = 'sent') AS sent,"
        " count(*) FILTER (status = 'failed') AS failed,"
        " count(*) FILTER (status = 'deferred') AS deferred"
        f" FROM final WHERE status IN {_ATTEMPTED_SQL} GROUP BY 1),"
        " g AS (SELECT lower(domain) AS domain, sum(attempted) AS attempted, sum(sent) AS sent,"
        " sum(failed) AS failed, sum(deferred) AS deferred FROM raw GROUP BY 1"
        " HAVING sum(failed) + sum(deferred) > 0"
        " ORDER BY sum(failed) + sum(deferred) DESC, 1 LIMIT ?),"
        " bad AS (SELECT lower(split_part(recipient, '@', -1)) AS domain,"
        " mode(smtp_code) AS top_code, arg_max(smtp_reply, id) AS example_reply FROM final"
        " WHERE status IN ('failed', 'deferred') GROUP BY 1)"
        " SELECT g.*, round((failed + deferred) / attempted, 4) AS failure_rate, top_code,"
        " example_reply FROM g JOIN bad USING (domain)"
        " ORDER BY failed + deferred DESC, domain",
        [_positive(n, "n")],
    )
    df["top_code"] = df["top_code"].astype("Int64")
    df = _ints(df, "attempted", "sent", "failed", "deferred")
    return df[["domain", "attempted", "sent", "failed", "deferred", "failure_rate", "top_code",
               "example_reply"]]  # fmt: skip


def retries(ws: Workspace, since: When = None, until: When = None,
            accounts: Accounts = None) -> pd.DataFrame:  # fmt: skip
    """Deliveries by how many attempts they took, and how long they waited in the queue.

    One row per attempt count (1 = first try): ``deliveries``, ``sent``,
    ``failed``, ``deferred`` (still waiting), and the wait from first queued to
    the latest answer (accepted, refused or deferred) in seconds: ``wait_p50_s``,
    ``wait_p95_s``, ``wait_max_s``. Only attempts at a server count.
    """
    df = _frame(
        ws,
        scope(since, until, accounts),
        f"w AS ({_WAITS.format(end='coalesce(f.sent_at, f.queued_at)', status=_ATTEMPTED_SQL)})"
        " SELECT attempts, count(*) AS deliveries, count(*) FILTER (status = 'sent') AS sent,"
        " count(*) FILTER (status = 'failed') AS failed,"
        " count(*) FILTER (status = 'deferred') AS deferred,"
        " round(quantile_cont(wait, 0.5), 3) AS wait_p50_s,"
        " round(quantile_cont(wait, 0.95), 3) AS wait_p95_s, round(max(wait), 3) AS wait_max_s"
        " FROM w GROUP BY attempts ORDER BY attempts",
        first=True,
    )
    return _ints(df, "attempts", "deliveries", "sent", "failed", "deferred")


def _volume(ws: Workspace, sc: Scope, key: str) -> pd.DataFrame:
    df = _frame(
        ws,
        sc,
        f"v AS (SELECT {key}, count(*) AS deliveries, count(*) FILTER (status = 'sent') AS sent,"
        " count(*) FILTER (status = 'failed') AS failed,"
        " count(*) FILTER (status = 'deferred') AS deferred,"
        f" count(*) FILTER (status NOT IN {_ATTEMPTED_SQL}) AS not_sent"
        " FROM final GROUP BY ALL)"
        " SELECT *, round(deliveries / sum(deliveries) OVER (), 4) AS share FROM v"
        f" ORDER BY deliveries DESC, {key}",
    )
    return _ints(df, "deliveries", "sent", "failed", "deferred", "not_sent")


def volume_by_use_case(ws: Workspace, since: When = None, until: When = None,
                       accounts: Accounts = None) -> pd.DataFrame:  # fmt: skip
    """Deliveries per use case: sent, failed, deferred, ``not_sent`` (skipped, suppressed,
    dry run) and the share of all deliveries; biggest first."""
    return _volume(ws, scope(since, until, accounts), "use_case")


def volume_by_template(ws: Workspace, since: When = None, until: When = None,
                       accounts: Accounts = None) -> pd.DataFrame:  # fmt: skip
    """Deliveries per object template, with the same columns as ``volume_by_use_case``."""
    return _volume(ws, scope(since, until, accounts), "template")


def busiest_hours(ws: Workspace, since: When = None, until: When = None,
                  accounts: Accounts = None) -> pd.DataFrame:  # fmt: skip
    """Deliveries per hour of the day (UTC, 0-23, every hour listed).

    ``deliveries`` in that hour over the period, ``busy_days`` (days with mail
    in that hour), ``mean_per_day`` (over those days) and ``peak`` (the most in
    one such hour, with ``peak_at``, the hour it happened).
    """
    df = _frame(
        ws,
        scope(since, until, accounts),
        "slots AS (SELECT date_trunc('hour', queued_at) AS slot, count(*) AS n FROM final"
        " GROUP BY ALL),"
        " hours AS (SELECT hour(slot) AS hour, sum(n) AS deliveries, count(*) AS busy_days,"
        " max(n) AS peak, arg_max(slot, n) AS peak_at FROM slots GROUP BY ALL)"
        " SELECT h.hour, coalesce(deliveries, 0) AS deliveries,"
        " coalesce(busy_days, 0) AS busy_days,"
        " round(coalesce(deliveries / busy_days, 0), 1) AS mean_per_day,"
        " coalesce(peak, 0) AS peak, peak_at"
        " FROM range(24) AS h(hour) LEFT JOIN hours USING (hour) ORDER BY h.hour",
    )
    return _ints(df, "hour", "deliveries", "busy_days", "peak")


def latency(ws: Workspace, since: When = None, until: When = None,
            accounts: Accounts = None) -> pd.DataFrame:  # fmt: skip
    """Time from queued (first attempt) to accepted by the server, per account and overall.

    Columns: ``account`` (``(all)`` for the overall row, listed first),
    ``sent``, ``p50_s``, ``p95_s``, ``max_s``: seconds, over sent deliveries.
    """
    df = _frame(
        ws,
        scope(since, until, accounts),
        f"s AS ({_WAITS.format(end='f.sent_at', status=_SENT_SQL)})"
        " SELECT coalesce(account, '(all)') AS account, count(*) AS sent,"
        " round(quantile_cont(wait, 0.5), 3) AS p50_s,"
        " round(quantile_cont(wait, 0.95), 3) AS p95_s, round(max(wait), 3) AS max_s"
        " FROM s GROUP BY ROLLUP (account) ORDER BY account IS NOT NULL, account",
        first=True,
    )
    return _ints(df, "sent")


def suppressions_and_bounces(ws: Workspace, since: When = None, until: When = None,
                             accounts: Accounts = None) -> pd.DataFrame:  # fmt: skip
    """Per UTC day: bounces and addresses put on the suppression list.

    ``bounces``: deliveries refused for good by the server (failed with a 5xx
    reply) or reported ``bounced`` later (a delivery status notification);
    ``suppressed_<reason>`` for each suppression reason (unsubscribe, manual,
    bounce, complaint) by the day the address was listed, and
    ``suppressed``, their sum. Only days with something are listed. The
    suppression list is the workspace's: ``accounts`` narrows the bounces only.
    """
    from sysmail_ops.records.suppression import REASONS

    sc = scope(since, until, accounts)
    listed = ["true"]
    params: list[Any] = []
    if sc.since is not None:
        listed.append("created_at >= ?")
        params.append(sc.since)
    if sc.until is not None:
        listed.append("created_at < ?")
        params.append(sc.until)
    per_reason = ", ".join(f"count(*) FILTER (reason = '{r}') AS suppressed_{r}" for r in REASONS)
    df = _frame(
        ws,
        sc,
        "b AS (SELECT queued_at::DATE AS day, count(*) AS bounces FROM final"
        " WHERE (status = 'failed' AND smtp_code BETWEEN 500 AND 599) OR status = 'bounced'"
        " GROUP BY ALL),"
        f" s AS (SELECT created_at::DATE AS day, {per_reason}, count(*) AS suppressed"
        f" FROM suppression WHERE {' AND '.join(listed)} GROUP BY ALL)"
        " SELECT day, coalesce(b.bounces, 0) AS bounces,"
        + ", ".join(f"coalesce(s.suppressed_{r}, 0) AS suppressed_{r}" for r in REASONS)
        + ", coalesce(s.suppressed, 0) AS suppressed FROM b FULL JOIN s USING (day) ORDER BY day",
        params,
    )
    df["day"] = [d.date() if hasattr(d, "date") else d for d in df["day"]]
    return _ints(df, "bounces", "suppressed", *(f"suppressed_{r}" for r in REASONS))


def _positive(n: int, what: str) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValidationError(f"{what} must be a whole number of 1 or more, got {n!r}")
    return n


# name -> function: what ``all_questions`` answers (and the benchmark times)
QUESTIONS = {
    "rate_by_account": rate_by_account,
    "rate_by_day": rate_by_day,
    "failures_by_code": failures_by_code,
    "failures_by_domain": failures_by_domain,
    "retries": retries,
    "volume_by_use_case": volume_by_use_case,
    "volume_by_template": volume_by_template,
    "busiest_hours": busiest_hours,
    "latency": latency,
    "suppressions_and_bounces": suppressions_and_bounces,
}


def all_questions(ws: Workspace, since: When = None, until: When = None,
                  accounts: Accounts = None) -> dict[str, pd.DataFrame]:  # fmt: skip
    """Every ops question for one period, by name (``QUESTIONS``), in one store visit."""
    with _session(ws, scope(since, until, accounts)):
        return {name: fn(ws, since, until, accounts) for name, fn in QUESTIONS.items()}


# -- ad-hoc SQL --------------------------------------------------------------------------

MAX_ROWS = 100_000


def sql(ws: Workspace, query: str, params: Sequence[Any] | None = None, *,
        max_rows: int = MAX_ROWS) -> pd.DataFrame:  # fmt: skip
    """Run one SELECT over the log on a **read-only** connection; the answer as a DataFrame.

    Views: ``deliveries`` (one row per delivery, its latest attempt; columns in
    ``DELIVERIES_COLUMNS``) and ``attempts`` (every log row, as ``send_log``).
    Every table can be read; nothing can be written: anything but one SELECT
    is refused before it runs, and the connection is opened read-only anyway.
    More than ``max_rows`` rows is refused too: aggregate in SQL (``GROUP BY``).
    """
    import duckdb

    if not isinstance(query, str) or not query.strip():
        raise ValidationError("the query is empty")
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise ValidationError(f"the query is not valid SQL: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise ValidationError(f"one statement at a time, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise ValidationError(f"only SELECT queries run here (read-only), got {kind.name}")
    # the deliveries view costs a pass over the log to set up: only when the query names it
    wanted = re.search(r"\bdeliveries\b", query, re.IGNORECASE) is not None
    with _session(ws, Scope(), read_only=True, prepare=wanted) as session:
        con = session.con
        if wanted:
            session.need_first()
            con.execute(f"CREATE TEMP VIEW deliveries AS WITH {session.ctes()} {_DELIVERIES}")
        con.execute("CREATE TEMP VIEW attempts AS SELECT * FROM send_log")
        try:
            rel = con.sql(query, params=list(params) if params else None)
            if rel is None:
                raise ValidationError("the query returned no rows")
            df: pd.DataFrame = rel.limit(max_rows + 1).df()
        except duckdb.Error as exc:
            raise ValidationError(f"the query failed: {_first_line(exc)}") from None
    if len(df) > max_rows:
        raise ValidationError(
            f"the query returned more than {max_rows:,} rows: aggregate in SQL or raise max_rows"
        )
    return df


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
