"""A chart for each ops question (``analytics.ops``): pass it the question's DataFrame.

Drawn like ``analytics.charts`` (a bare ``Figure`` on the Agg canvas, no
pyplot state; matplotlib is imported when a chart is drawn), so they show in
a notebook, go into a report mail with ``reportkit.chart`` or to a file with
``charts.png_bytes``. An empty answer draws an empty chart saying "no data".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sysmail_ops.analytics import charts

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "CHARTS",
    "delivery_chart",
    "domains_chart",
    "failures_chart",
    "hours_chart",
    "latency_chart",
    "rate_chart",
    "retries_chart",
    "show",
    "suppressions_chart",
    "volume_chart",
]

_BLUE, _ORANGE, _RED, _GREY = "#1565c0", "#ef6c00", "#c62828", "#757575"
_MANY = 31  # more days than this: areas and lines on a date axis instead of bars


def _figure(title: str, *, width: float = 7.2, height: float = 3.2) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def rate_chart(by_day: pd.DataFrame, *, title: str = "Deliveries per day") -> Figure:
    """``ops.rate_by_day`` (or ``rate_by_account``): sent / deferred / failed stacked, with
    the delivery rate on a second axis when there are days."""
    key = "day" if "day" in by_day.columns else "account"
    if by_day.empty:
        fig, ax = _figure(title)
        _no_data(ax)
        return fig
    fig, ax = _figure(title)
    statuses = ("sent", "deferred", "failed")
    colors = [charts.STATUS_COLORS[st] for st in statuses]
    if key == "day" and len(by_day) > _MANY:
        # a year of days: one filled area per status on a date axis (1,000 bars draw slowly)
        labels: list[Any] = list(by_day["day"])
        values = [[float(v) for v in by_day[st]] for st in statuses]
        ax.stackplot(labels, *values, labels=list(statuses), colors=colors, linewidth=0)
    else:
        labels = [str(v) for v in by_day[key]]
        bottom = [0.0] * len(labels)
        for status, color in zip(statuses, colors, strict=True):
            heights = [float(v) for v in by_day[status]]
            ax.bar(labels, heights, bottom=bottom, label=status, color=color)
            bottom = [b + v for b, v in zip(bottom, heights, strict=True)]
    ax.set_ylabel("deliveries")
    rate = ax.twinx()
    rate.plot(labels, [float(v) * 100 for v in by_day["delivery_rate"]], color=_GREY,
              marker="." if len(labels) <= _MANY else "", linewidth=1,
              label="delivery rate")  # fmt: skip
    rate.set_ylim(0, 105)
    rate.set_ylabel("delivery rate %")
    rate.spines[["top"]].set_visible(False)
    fig.legend(frameon=False, fontsize=8, loc="outside lower center", ncols=4)
    if len(labels) <= _MANY or key != "day":
        _thin_ticks(ax, len(labels))
    else:
        ax.tick_params(axis="x", labelsize=8)
    return fig


def _thin_ticks(ax: Axes, n: int, most: int = 12) -> None:
    """At most ``most`` x labels: a year of days stays readable."""
    if n > most:
        step = -(-n // most)
        for i, label in enumerate(ax.get_xticklabels()):
            label.set_visible(i % step == 0)
    ax.tick_params(axis="x", labelrotation=30 if n > 6 else 0, labelsize=8)


def failures_chart(df: pd.DataFrame, *, title: str = "Failures by SMTP code") -> Figure:
    """``ops.failures_by_code``: failed and deferred deliveries per code, by reply class."""
    fig, ax = _figure(title)
    if df.empty:
        _no_data(ax)
        return fig
    import pandas as pd

    labels = [
        "no answer" if pd.isna(code) else f"{int(code)} ({cls})"
        for code, cls in zip(df["smtp_code"], df["reply_class"], strict=True)
    ]
    ax.barh(labels[::-1], list(df["failed"])[::-1], color=_RED, label="failed")
    ax.barh(labels[::-1], list(df["deferred"])[::-1], left=list(df["failed"])[::-1],
            color=charts.STATUS_COLORS["deferred"], label="deferred")  # fmt: skip
    ax.set_xlabel("deliveries")
    ax.legend(frameon=False, fontsize=8)
    return fig


def domains_chart(df: pd.DataFrame, *, title: str = "Failing recipient domains") -> Figure:
    """``ops.failures_by_domain``: failed and deferred deliveries per domain."""
    fig, ax = _figure(title, height=max(2.4, 0.3 * len(df) + 1))
    if df.empty:
        _no_data(ax)
        return fig
    names = [str(d) for d in df["domain"]][::-1]
    ax.barh(names, list(df["failed"])[::-1], color=_RED, label="failed")
    ax.barh(names, list(df["deferred"])[::-1], left=list(df["failed"])[::-1],
            color=charts.STATUS_COLORS["deferred"], label="deferred")  # fmt: skip
    ax.set_xlabel("deliveries")
    ax.legend(frameon=False, fontsize=8)
    return fig


def retries_chart(df: pd.DataFrame, *, title: str = "Attempts per delivery") -> Figure:
    """``ops.retries``: deliveries by attempts (log scale), with the p95 queue wait."""
    fig, ax = _figure(title)
    if df.empty:
        _no_data(ax)
        return fig
    labels = [str(int(a)) for a in df["attempts"]]
    ax.bar(labels, list(df["deliveries"]), color=_BLUE)
    ax.set_yscale("log")
    ax.set_xlabel("attempts")
    ax.set_ylabel("deliveries (log)")
    for i, (n, wait) in enumerate(zip(df["deliveries"], df["wait_p95_s"], strict=True)):
        ax.annotate(f"p95 wait {_duration(wait)}", (i, n), ha="center", va="bottom", fontsize=8)
    return fig


def _duration(seconds: object) -> str:
    try:
        s = float(seconds)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"
    if s != s:  # NaN
        return "-"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def volume_chart(df: pd.DataFrame, *, title: str = "") -> Figure:
    """``ops.volume_by_use_case`` or ``ops.volume_by_template``: deliveries, biggest on top."""
    key = "use_case" if "use_case" in df.columns else "template"
    fig, ax = _figure(title or f"Deliveries by {key.replace('_', ' ')}",
                      height=max(2.4, 0.28 * min(len(df), 25) + 1))  # fmt: skip
    if df.empty:
        _no_data(ax)
        return fig
    top = df.head(25)
    names = [str(v) for v in top[key]][::-1]
    bottom = [0.0] * len(names)
    colors = {**charts.STATUS_COLORS, "not_sent": _GREY}
    for col in ("sent", "deferred", "failed", "not_sent"):
        color = colors[col]
        values = [float(v) for v in top[col]][::-1]
        ax.barh(names, values, left=bottom, color=color, label=col.replace("_", " "))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xlabel("deliveries")
    ax.legend(frameon=False, fontsize=8)
    return fig


def hours_chart(df: pd.DataFrame, *, title: str = "Busiest hours (UTC)") -> Figure:
    """``ops.busiest_hours``: deliveries per hour of the day, with the busiest single hour."""
    fig, ax = _figure(title)
    if df.empty or not df["deliveries"].sum():
        _no_data(ax)
        return fig
    hours = [int(h) for h in df["hour"]]
    ax.bar(hours, list(df["mean_per_day"]), color=_BLUE, label="mean per busy day")
    ax.plot(hours, list(df["peak"]), color=_ORANGE, marker=".", linewidth=1, label="peak hour")
    ax.set_xticks(range(0, 24, 2))
    ax.set_xlabel("hour of day (UTC)")
    ax.set_ylabel("deliveries")
    ax.legend(frameon=False, fontsize=8)
    return fig


def latency_chart(df: pd.DataFrame, *, title: str = "Queued to accepted") -> Figure:
    """``ops.latency``: p50 and p95 seconds per account (the overall row first)."""
    fig, ax = _figure(title)
    if df.empty:
        _no_data(ax)
        return fig
    names = [str(a) for a in df["account"]]
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], list(df["p50_s"]), width=0.4, color=_BLUE, label="p50")
    ax.bar([x + 0.2 for x in xs], list(df["p95_s"]), width=0.4, color=_ORANGE, label="p95")
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("seconds")
    ax.legend(frameon=False, fontsize=8)
    _thin_ticks(ax, len(names))
    return fig


def suppressions_chart(df: pd.DataFrame, *, title: str = "Bounces and suppressions") -> Figure:
    """``ops.suppressions_and_bounces``: bounces and suppressed addresses per day."""
    fig, ax = _figure(title)
    if df.empty:
        _no_data(ax)
        return fig
    if len(df) > _MANY:  # a year of days: two lines on a date axis
        days = list(df["day"])
        ax.plot(days, list(df["bounces"]), color=_RED, linewidth=1, label="bounces")
        ax.plot(days, list(df["suppressed"]), color=_GREY, linewidth=1, label="suppressed")
        ax.tick_params(axis="x", labelsize=8)
    else:
        labels = [str(d) for d in df["day"]]
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], list(df["bounces"]), width=0.4, color=_RED,
               label="bounces")  # fmt: skip
        ax.bar([x + 0.2 for x in xs], list(df["suppressed"]), width=0.4, color=_GREY,
               label="suppressed")  # fmt: skip
        ax.set_xticks(list(xs), labels)
        _thin_ticks(ax, len(labels))
    ax.set_ylabel("per day")
    ax.legend(frameon=False, fontsize=8)
    return fig


# question name (``ops.QUESTIONS``) -> its chart
CHARTS: dict[str, Callable[[pd.DataFrame], Figure]] = {
    "rate_by_account": lambda df: rate_chart(df, title="Delivery rate per account"),
    "rate_by_day": rate_chart,
    "failures_by_code": failures_chart,
    "failures_by_domain": domains_chart,
    "retries": retries_chart,
    "volume_by_use_case": volume_chart,
    "volume_by_template": volume_chart,
    "busiest_hours": hours_chart,
    "latency": latency_chart,
    "suppressions_and_bounces": suppressions_chart,
}


def show(fig: Figure) -> None:
    """Display ``fig`` in a notebook as a PNG (no pyplot, no inline backend needed)."""
    from IPython.display import Image, display

    display(Image(charts.png_bytes(fig)))


def delivery_chart(by_day: pd.DataFrame, *, title: str = "Deliveries per day") -> Figure:
    """``ops.rate_by_day`` as the delivery report draws it: sent / deferred / failed stacked
    per day (``analytics.charts.stacked_bars``, the report mail's chart style)."""
    labels = [f"{d:%d %b}" for d in by_day["day"]] if not by_day.empty else []
    series = {
        s: [int(v) for v in by_day[s]] if not by_day.empty else []
        for s in ("sent", "deferred", "failed")
    }
    return charts.stacked_bars(labels, series, title=title, colors=charts.STATUS_COLORS)
