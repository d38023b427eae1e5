"""Small, mail-friendly matplotlib charts for reports.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never
through ``pyplot``: no global figure registry, no GUI backend, safe in a
kernel, a script or a worker thread. Show one in a report with
``reportkit.chart(fig)``; ``png_bytes`` gives the image for anything else.
Sizes suit an email body (about 640 px wide at 100 dpi).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # matplotlib is imported when a chart is drawn (~0.4 s)
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["STATUS_COLORS", "bar_chart", "png_bytes", "stacked_bars"]

STATUS_COLORS = {"sent": "#2e7d32", "deferred": "#f9a825", "failed": "#c62828"}
_DEFAULT_COLORS = ["#1565c0", "#6a1b9a", "#00838f", "#ef6c00", "#558b2f", "#ad1457"]


def _figure(title: str, *, width: float = 6.4, height: float = 3.2) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def stacked_bars(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    colors: Mapping[str, str] | None = None,
    ylabel: str = "",
) -> Figure:
    """Bars per label, one stacked segment per series (in the mapping's order)."""
    fig, ax = _figure(title)
    bottom = [0.0] * len(labels)
    for n, (name, values) in enumerate(series.items()):
        color = (colors or {}).get(name, _DEFAULT_COLORS[n % len(_DEFAULT_COLORS)])
        ax.bar(list(labels), list(values), bottom=bottom, label=name, color=color)
        bottom = [b + float(v) for b, v in zip(bottom, values, strict=True)]
    if not labels:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=9)
    return fig


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str = "",
    ylabel: str = "",
    color: str = _DEFAULT_COLORS[0],
    horizontal: bool = False,
) -> Figure:
    """One bar per label; horizontal for long labels (stages, names)."""
    fig, ax = _figure(title)
    if horizontal:
        ax.barh(list(labels)[::-1], list(values)[::-1], color=color)
        ax.set_xlabel(ylabel)
    else:
        ax.bar(list(labels), list(values), color=color)
        ax.set_ylabel(ylabel)
    return fig


def png_bytes(fig: Figure, *, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()
