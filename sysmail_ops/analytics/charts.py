"""Small, mail-friendly matplotlib charts for reports.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never
through ``pyplot``: no global figure registry, no GUI backend, safe in a
kernel, a script or a worker thread. Show one in a report with
``reportkit.chart(fig)`` (drawn at 2x, shown at about 560 px, within a
mail's column); ``png_bytes`` gives the image for anything else.

Axes read like a report: counts as whole numbers, money as ``EUR 1.5M``,
shares as ``86%`` (the marks of ``locale``, by Babel's compact formats); a
single bar stays a bar with its value written on it, and the legend sits
above the plot, never on the bars. Each figure's label (``fig.get_label()``)
says what it shows in words, the image's alt text.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # matplotlib is imported when a chart is drawn (~0.4 s)
    from babel import Locale
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure

__all__ = ["STATUS_COLORS", "bar_chart", "format_value", "png_bytes", "stacked_bars"]

STATUS_COLORS = {"sent": "#2e7d32", "deferred": "#f9a825", "failed": "#c62828"}
_DEFAULT_COLORS = ["#1565c0", "#6a1b9a", "#00838f", "#ef6c00", "#558b2f", "#ad1457"]
_TEXT = "#333333"
_LABELLED_BARS = 12  # at most this many bars get their value written on them
_ALT_ITEMS = 8  # labels named in a chart's alt text


def _compact(value: float, loc: Locale) -> str:
    """``1.2M``; grouped digits where the locale has no short form (``de``: ``271.400``)."""
    from babel import numbers

    short = numbers.format_compact_decimal(value, locale=loc, fraction_digits=1)
    if any(ch.isalpha() for ch in short):
        return short
    return numbers.format_decimal(round(value, 1), locale=loc)


def format_value(value: float, kind: str | None = None, locale: str = "en") -> str:
    """A tick or bar label: ``kind`` None/``integer`` (``1,200``), ``compact``
    (``1.2K``), ``percent`` (``86%``), ``money:EUR`` (``EUR 1.2M``)."""
    from babel import Locale, numbers

    loc = Locale.parse(locale)
    kind = kind or "integer"
    if kind == "percent":
        return numbers.format_percent(value, locale=loc)
    if kind.startswith("money:"):
        code = kind.partition(":")[2].upper()
        short = _compact(value, loc)
        pattern = loc.currency_formats["standard"].pattern
        return f"{code}\xa0{short}" if pattern.strip().startswith("¤") else f"{short}\xa0{code}"
    if kind == "compact" or abs(value) >= 10_000:
        return _compact(value, loc)
    return numbers.format_decimal(round(value, 1), locale=loc)


def _value_axis(axis: Axis, kind: str | None, locale: str) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    if kind in (None, "integer"):
        axis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    else:
        axis.set_major_locator(MaxNLocator(nbins=5))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: format_value(v, kind, locale)))


def _figure(title: str, *, width: float = 5.6, height: float = 3.0) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_facecolor("white")
    if title:
        ax.set_title(title, fontsize=12, loc="left", color=_TEXT)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(colors=_TEXT, labelsize=10)
    return fig, ax


def _few_bars(ax: Axes, n: int, *, horizontal: bool = False) -> float:
    """A bar width that keeps one or two bars from filling the plot; pads the axis."""
    if n > 2:
        return 0.8
    pad = 1.5 if n == 1 else 1.0
    (ax.set_ylim if horizontal else ax.set_xlim)(-pad, n - 1 + pad)
    return 0.5


def _alt(title: str, parts: list[str]) -> str:
    shown = parts[:_ALT_ITEMS]
    more = f"; and {len(parts) - len(shown)} more" if len(parts) > len(shown) else ""
    return f"{title or 'Chart'}: " + ("; ".join(shown) + more if shown else "no data")


def stacked_bars(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    colors: Mapping[str, str] | None = None,
    ylabel: str = "",
    value_format: str | None = None,
    locale: str = "en",
) -> Figure:
    """Bars per label, one stacked segment per series (in the mapping's order).

    The legend is a row above the plot; with few bars each bar's total is written on it.
    """
    fig, ax = _figure(title)
    labels = [str(x) for x in labels]
    width = _few_bars(ax, len(labels))
    bottom = [0.0] * len(labels)
    for n, (name, values) in enumerate(series.items()):
        color = (colors or {}).get(name, _DEFAULT_COLORS[n % len(_DEFAULT_COLORS)])
        ax.bar(labels, [float(v) for v in values], width, bottom=bottom, label=name, color=color)
        bottom = [b + float(v) for b, v in zip(bottom, values, strict=True)]
    if not labels:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
    elif len(labels) <= _LABELLED_BARS:
        for x, total in zip(labels, bottom, strict=True):
            ax.annotate(
                format_value(total, value_format, locale),
                (x, total),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=10,
                color=_TEXT,
            )
        ax.set_ylim(0, max([*bottom, 1.0]) * 1.15)
    _value_axis(ax.yaxis, value_format, locale)
    ax.set_ylabel(ylabel, color=_TEXT)
    if series:
        fig.legend(loc="outside upper right", ncols=len(series), frameon=False, fontsize=10)
    parts = [
        f"{x} " + ", ".join(f"{format_value(float(v[i]), value_format, locale)} {name}"
                            for name, v in series.items())
        for i, x in enumerate(labels)
    ]  # fmt: skip
    fig.set_label(_alt(title, parts))
    return fig


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str = "",
    ylabel: str = "",
    color: str = _DEFAULT_COLORS[0],
    horizontal: bool = False,
    value_format: str | None = None,
    locale: str = "en",
) -> Figure:
    """One bar per label, its value written at its end when there are few;
    horizontal for long labels (stages, names). ``value_format``: ``integer``
    (default), ``compact``, ``percent`` or ``money:EUR``."""
    fig, ax = _figure(title)
    labels = [str(x) for x in labels]
    numbers = [float(v) for v in values]
    width = _few_bars(ax, len(labels), horizontal=horizontal)
    if horizontal:
        bars = ax.barh(labels[::-1], numbers[::-1], width, color=color)
        ax.set_xlabel(ylabel, color=_TEXT)
        _value_axis(ax.xaxis, value_format, locale)
        ax.spines["bottom"].set_visible(False)
    else:
        bars = ax.bar(labels, numbers, width, color=color)
        ax.set_ylabel(ylabel, color=_TEXT)
        _value_axis(ax.yaxis, value_format, locale)
    if not labels:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    elif len(labels) <= _LABELLED_BARS:
        shown = numbers[::-1] if horizontal else numbers
        ax.bar_label(
            bars,
            labels=[format_value(v, value_format, locale) for v in shown],
            padding=3,
            fontsize=10,
            color=_TEXT,
        )
        top = max([*numbers, 0.0]) or 1.0
        (ax.set_xlim if horizontal else ax.set_ylim)(0, top * (1.22 if horizontal else 1.15))
    parts = [
        f"{x} {format_value(v, value_format, locale)}" for x, v in zip(labels, numbers, strict=True)
    ]
    fig.set_label(_alt(title, parts))
    return fig


def png_bytes(fig: Figure, *, dpi: int = 200) -> bytes:
    """The figure as PNG bytes (at 2x by default: sharp at its 100-dpi size)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buf.getvalue()
