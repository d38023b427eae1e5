"""Ops questions over the send log, answered in DuckDB SQL as small DataFrames, and charts.

May import: ``records``, ``config``, ``store``, ``errors``.
"""

from sysmail_ops.analytics import charts, queries
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
    "headline",
    "load_log",
    "outcomes",
    "period",
    "queries",
    "rate_by_account",
    "rate_by_day",
    "top_failures",
    "totals_by_status",
]
