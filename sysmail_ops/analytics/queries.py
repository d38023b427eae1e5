"""Delivery analytics over the send log: DuckDB selects, pandas shapes, matplotlib draws.

``load_log`` reads the log rows of a period (and accounts) into a DataFrame;
every other function takes that DataFrame, so a notebook can filter or join
it first and the functions stay testable without a store. The log has one
row per recipient per attempt: a message deferred twice and then sent has
three rows. The figures here count **deliveries** (a message to one
recipient) by their latest attempt (``outcomes``), so that message counts
once, as sent. ``skipped_duplicate`` and ``dry_run`` rows are not attempts:
they are counted in ``totals_by_status`` but not in delivery rates.

Times are naive UTC (as stored); days are UTC days.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sysmail_ops.analytics import charts
from sysmail_ops.errors import ValidationError
from sysmail_ops.records import sendlog
from sysmail_ops.store.database import utcnow

if TYPE_CHECKING:  # pandas is imported by the functions that build frames (~0.3 s)
    import pandas as pd
    from matplotlib.figure import Figure

    from sysmail_ops.config.workspace import Workspace

__all__ = [
    "ATTEMPTED",
    "delivery_chart",
    "headline",
    "load_log",
    "outcomes",
    "period",
    "rate_by_account",
    "rate_by_day",
    "top_failures",
    "totals_by_status",
]

ATTEMPTED = ("sent", "deferred", "failed")  # statuses that are a try at the recipient's server
COLUMNS = [
    "id",
    "queued_at",
    "sent_at",
    "account",
    "template",
    "use_case",
    "recipient",
    "subject",
    "status",
    "smtp_phase",
    "smtp_code",
    "smtp_reply",
    "attempt",
    "message_id",
    "delivery_key",
    "related_type",
    "related_id",
    "duration_ms",
    "size_bytes",
]
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _when(value: str | datetime | None, what: str) -> datetime | None:
    """A datetime, an ISO date/time, or an age such as ``7d``, ``24h``, ``30m``, ``2w``."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo is None else _naive_utc(value)
    text = str(value).strip()
    if text[-1:] in _UNITS and text[:-1].isdigit():
        return utcnow() - timedelta(**{_UNITS[text[-1]]: int(text[:-1])})
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"{what} takes a date, an ISO time or an age like 7d, 24h, 30m, 2w; got {value!r}"
        ) from None
    return parsed if parsed.tzinfo is None else _naive_utc(parsed)


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def period(
    days: int | None = None,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
) -> tuple[datetime | None, datetime | None]:
    """The ``(since, until)`` a report's parameters mean: ``since`` wins over ``days``."""
    start = _when(since, "since")
    if start is None and days is not None:
        if int(days) < 1:
            raise ValidationError(f"days must be 1 or more, got {days!r}")
        start = utcnow() - timedelta(days=int(days))
    end = _when(until, "until")
    if start and end and end <= start:
        raise ValidationError(
            f"until ({end:%Y-%m-%d %H:%M}) is not after since ({start:%Y-%m-%d %H:%M})"
        )
    return start, end


def load_log(
    ws: Workspace,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    accounts: str | Sequence[str] | None = None,
) -> pd.DataFrame:
    """Send-log rows queued in ``[since, until)`` for ``accounts`` (all when None), oldest first.

    Journals of finished or crashed batches are folded first, so the rows are
    complete. One short store visit.
    """
    start, end = _when(since, "since"), _when(until, "until")
    names = [accounts] if isinstance(accounts, str) else list(accounts or [])
    where: list[str] = ["true"]
    params: list[Any] = []
    if start is not None:
        where.append("queued_at >= ?")
        params.append(start)
    if end is not None:
        where.append("queued_at < ?")
        params.append(end)
    if names:
        where.append("account IN (SELECT unnest(?::VARCHAR[]))")
        params.append(names)
    sendlog.fold_orphans(ws)
    sql = f"SELECT {', '.join(COLUMNS)} FROM send_log WHERE {' AND '.join(where)} ORDER BY id"  # noqa: S608
    with ws.store.connect() as con:
        df: pd.DataFrame = con.execute(sql, params).df()
    df["smtp_code"] = df["smtp_code"].astype("Int64")
    return df


def outcomes(log: pd.DataFrame) -> pd.DataFrame:
    """The latest attempt of each delivery (message and recipient): one row per delivery."""
    if log.empty:
        return log.copy()
    return log.sort_values("id").drop_duplicates(["message_id", "recipient"], keep="last")


def totals_by_status(log: pd.DataFrame) -> pd.DataFrame:
    """Deliveries per final status (every known status, zeros included) and their share."""
    import pandas as pd

    counts = outcomes(log)["status"].value_counts()
    order = list(sendlog.STATUSES) + sorted(set(counts.index) - set(sendlog.STATUSES))
    out = pd.DataFrame({"status": order, "deliveries": [int(counts.get(s, 0)) for s in order]})
    total = out["deliveries"].sum()
    out["share"] = (out["deliveries"] / total).round(4) if total else 0.0
    return out


def _rates(df: pd.DataFrame, key: str) -> pd.DataFrame:
    import pandas as pd

    tried = df[df["status"].isin(ATTEMPTED)]
    cols = [key, "attempted", *ATTEMPTED, "delivery_rate"]
    if tried.empty:
        return pd.DataFrame({c: pd.Series(dtype="object" if c == key else "float") for c in cols})
    table = pd.crosstab(tried[key], tried["status"]).reindex(columns=list(ATTEMPTED), fill_value=0)
    table.insert(0, "attempted", table.sum(axis=1))
    table["delivery_rate"] = (table["sent"] / table["attempted"]).round(4)
    table.columns.name = None
    return table.reset_index()[cols]


def rate_by_account(log: pd.DataFrame) -> pd.DataFrame:
    """Per account: deliveries attempted, sent, deferred, failed and the delivery rate."""
    return _rates(outcomes(log), "account")


def rate_by_day(log: pd.DataFrame) -> pd.DataFrame:
    """Per UTC day (of the delivery's latest attempt): the same figures as ``rate_by_account``."""
    import pandas as pd

    df = outcomes(log).copy()
    df["day"] = pd.to_datetime(df["queued_at"]).dt.date if not df.empty else []
    return _rates(df, "day")


def top_failures(log: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The ``n`` commonest SMTP codes of failed or deferred deliveries, with one example each.

    Columns: ``smtp_code`` (empty when no server answered: refused, timeout),
    ``status``, ``deliveries``, ``accounts``, ``example_recipient``,
    ``example_reply`` (the latest such delivery), ``last_seen``.
    """
    import pandas as pd

    bad = outcomes(log)
    bad = bad[bad["status"].isin(["failed", "deferred"])]
    cols = ["smtp_code", "status", "deliveries", "accounts", "example_recipient"]
    cols += ["example_reply", "last_seen"]
    if bad.empty:
        return pd.DataFrame(columns=cols)
    latest = bad.sort_values("id").groupby(["smtp_code", "status"], dropna=False).tail(1)
    grouped = bad.groupby(["smtp_code", "status"], dropna=False)
    counts = grouped.agg(
        deliveries=("id", "size"),
        accounts=("account", lambda s: ", ".join(sorted(set(s)))),
        last_seen=("queued_at", "max"),
    ).reset_index()
    examples = latest[["smtp_code", "status", "recipient", "smtp_reply"]].rename(
        columns={"recipient": "example_recipient", "smtp_reply": "example_reply"}
    )
    out = counts.merge(examples, on=["smtp_code", "status"], how="left")
    out = out.sort_values(["deliveries", "last_seen"], ascending=[False, False]).head(n)
    return out[cols].reset_index(drop=True)


def headline(log: pd.DataFrame) -> str:
    """One line for a mail's summary: "198 of 200 deliveries sent (99.0%), 2 failed, 0 deferred"."""
    counts = outcomes(log)["status"].value_counts()
    sent, failed, deferred = (int(counts.get(s, 0)) for s in ("sent", "failed", "deferred"))
    tried = sent + failed + deferred
    if not tried:
        return "no deliveries in this period"
    return (
        f"{sent} of {tried} deliveries sent ({sent / tried:.1%}), {failed} failed, "
        f"{deferred} deferred"
    )


def delivery_chart(log: pd.DataFrame, *, title: str = "Deliveries per day") -> Figure:
    """Stacked bars of sent / deferred / failed deliveries per UTC day.

    Drawn on a bare ``Figure`` (Agg canvas, no pyplot state), so it works the
    same in a kernel, a script or a thread; pass it to ``reportkit.chart``.
    """
    daily = rate_by_day(log)
    labels = [f"{d:%d %b}" for d in daily["day"]] if not daily.empty else []
    series = {s: [int(v) for v in daily[s]] if not daily.empty else [] for s in ATTEMPTED}
    return charts.stacked_bars(labels, series, title=title, colors=charts.STATUS_COLORS)
