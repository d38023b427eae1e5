"""Ops questions over the send log, answered in DuckDB SQL as small DataFrames, and charts.

``ops``: the ops questions (delivery rate, failures, retries, volume, hours,
latency, bounces) and read-only ad-hoc SQL; ``opscharts``: a chart for each;
``explore``: the log and archive explorer's filters, pages and details;
``queries``: the pandas helpers over a loaded log; ``charts``: report charts.

May import: ``records``, ``config``, ``store``, ``errors``.
"""

from sysmail_ops.analytics import charts, explore, ops, opscharts, queries
from sysmail_ops.analytics.queries import (
    ATTEMPTED,
    delivery_chart,
    headline,
    load_log,
    outcomes,
    period,
    rate_by_account,
    rate_by_day,
    top_failures,
    totals_by_status,
)

__all__ = [
    "ATTEMPTED",
    "charts",
    "delivery_chart",
    "explore",
    "headline",
    "load_log",
    "ops",
    "opscharts",
    "outcomes",
    "period",
    "queries",
    "rate_by_account",
    "rate_by_day",
    "top_failures",
    "totals_by_status",
]
