"""What a report notebook calls to declare its outputs for the mail.

A report notebook (``reports/*.ipynb``) is ordinary pandas and matplotlib. To
tell a subscription what to mail, it calls:

- ``summary(text)``: one line the mail shows first (and mail clients as the
  preheader, the preview line in the inbox); not shown in the report itself;
- ``table(name, df)``: shows ``df`` as a table for people (numbers grouped,
  shares as percentages, money with its currency, times in the report's
  timezone, headers in words; see ``subscriptions.formats``) and declares the
  data as the named table a subscription may attach as ``NAME.csv`` /
  ``NAME.xlsx`` (unformatted: the numbers as they are);
- ``row_count(n)``: how many rows the report is about; a subscription with
  *skip if empty* mails nothing when it is 0;
- ``chart(fig, alt=...)``: shows a matplotlib figure as a PNG drawn at twice
  its shown size (sharp on high-density screens); in the mail it becomes an
  inline image referenced by ``cid:``, with ``alt`` as its text.

``configure(locale=..., timezone=...)`` sets how tables and the helpers
``number``, ``money``, ``percent``, ``when`` write for this report's readers;
a report that declares ``locale`` and ``timezone`` parameters gets its
subscription's (the runner passes them), and passes them on here.

How it travels: each call publishes one Jupyter display output whose bundle
carries the MIME type ``application/vnd.sysmail-ops.output+json`` with a
small JSON payload (``kind``, ``name``, the table's data, its plain-text
rendering, ...), next to the ordinary ``text/html`` / ``image/png`` /
``text/plain`` a person sees in JupyterLab. The payload is saved in the
executed notebook like any output, so the run's ``.ipynb`` is the whole
record: ``render.render_report`` reads the payloads back and drops them (and
the invisible outputs) from the mailed HTML. Calling a function twice with
the same name keeps the last value.
"""

from __future__ import annotations

import base64
import html
import io
import json
import struct
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sysmail_ops.errors import ValidationError
from sysmail_ops.subscriptions import formats as fmt

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = [
    "MIME",
    "chart",
    "configure",
    "money",
    "number",
    "percent",
    "row_count",
    "settings",
    "summary",
    "table",
    "when",
]

MIME = "application/vnd.sysmail-ops.output+json"
TABLE_PREVIEW_ROWS = 50  # rows shown in the report; the attached table has them all
EMPTY_TABLE = "No rows in this period."
CHART_SCALE = 2  # pixels drawn per pixel shown
_SETTINGS = {"locale": "en", "timezone": "UTC"}


def configure(*, locale: str | None = None, timezone: str | None = None) -> None:
    """How this report writes numbers and times: ``locale`` (``en``, ``de``, ``zh``...) and
    an IANA ``timezone`` (naive times in tables are UTC, shown in this zone)."""
    if locale is not None:
        _SETTINGS["locale"] = fmt.check_locale(locale)
    if timezone is not None:
        try:
            _SETTINGS["timezone"] = ZoneInfo(str(timezone)).key
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationError(f"unknown timezone {timezone!r}") from None


def settings() -> dict[str, str]:
    """The locale and timezone the kit writes with now."""
    return dict(_SETTINGS)


def number(value: Any, decimals: int | None = None) -> str:
    """A number for prose: ``1,111,000`` (``de``: ``1.111.000``)."""
    return fmt.format_number(value, _SETTINGS["locale"], decimals=decimals)


def money(value: Any, currency: str, decimals: int | None = None) -> str:
    """An amount for prose: ``EUR 1,111,000``."""
    return fmt.format_money(value, currency, _SETTINGS["locale"], decimals=decimals)


def percent(value: Any, decimals: int = 1) -> str:
    """A share for prose: ``0.8667`` -> ``86.7%``."""
    return fmt.format_percent(value, _SETTINGS["locale"], decimals=decimals)


def when(value: Any) -> str:
    """A time for prose, in the report's timezone, to the minute (naive means UTC)."""
    return fmt.format_datetime(value, _SETTINGS["locale"], _SETTINGS["timezone"])


def _publish(
    payload: dict[str, Any], shown: dict[str, Any], metadata: dict[str, Any] | None = None
) -> None:
    """One display output: the payload for the renderer, ``shown`` for people."""
    from IPython.display import publish_display_data

    publish_display_data({MIME: payload, **shown}, metadata=metadata)


def summary(text: str) -> None:
    """The report's one-line summary: the mail's first line and its inbox preview."""
    line = " ".join(str(text).split())
    _publish(
        {"kind": "summary", "visible": False, "text": line}, {"text/plain": f"summary: {line}"}
    )


def row_count(n: int) -> None:
    """How many rows the report covers; 0 lets a *skip if empty* subscription skip the mail."""
    count = int(n)
    if count < 0:
        raise ValidationError(f"row_count must be 0 or more, got {n!r}")
    _publish(
        {"kind": "row_count", "visible": False, "value": count},
        {"text/plain": f"row count: {count}"},
    )


_SHORT_TEXT = 24  # a text column no longer than this stays on one line


def _css_class(column: fmt.Column) -> str:
    """``num``: right-aligned, one line; ``nw``: one line; ``wrap``: long text, wraps."""
    if column.numeric:
        return "num"
    if column.kind in ("date", "datetime") or max(map(len, column.cells), default=0) <= _SHORT_TEXT:
        return "nw"
    return "wrap"


def _html_table(columns: list[fmt.Column], rows: int) -> str:
    classes = [_css_class(c) for c in columns]

    def cell(tag: str, text: str, cls: str) -> str:
        return f'<{tag} class="{cls}">{html.escape(text)}</{tag}>'

    head = "".join(cell("th", c.label, k) for c, k in zip(columns, classes, strict=True))
    body = "".join(
        "<tr>"
        + "".join(cell("td", c.cells[i], k) for c, k in zip(columns, classes, strict=True))
        + "</tr>"
        for i in range(rows)
    )
    return (
        '<div class="table-wrap"><table class="report-table">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def table(
    name: str,
    df: pd.DataFrame,
    *,
    show: bool = True,
    index: bool = False,
    title: str | None = None,
    labels: Mapping[str, str] | None = None,
    formats: Mapping[str, str | Callable[[Any], str]] | None = None,
    currency: str | None = None,
    empty: str | bool = True,
    max_rows: int = TABLE_PREVIEW_ROWS,
) -> None:
    """Show ``df`` formatted for people (first ``max_rows`` rows) and declare it as ``name``.

    ``name`` becomes the attachment's file name, so it is letters, digits, ``_`` and ``-``.
    ``title`` is a heading shown (and left out) with the table. ``labels`` and
    ``formats`` set headers and formats per column (``"percent"``, ``"money:EUR"``,
    ``"number:2"``, ``"integer"``, ``"datetime"``, ``"date"``, ``"text"``, or a
    function of one value); ``currency`` is the one of columns formatted as
    ``money`` without their own. An empty ``df`` shows ``empty``: a sentence of
    the call's (``True``: "No rows in this period."), or nothing (``False``).
    """
    if not name or not all(c.isalnum() or c in "_-" for c in name) or not name.isascii():
        raise ValidationError(f"table name {name!r} must be letters, digits, '_' or '-'")
    if max_rows < 1:
        raise ValidationError(f"max_rows must be 1 or more, got {max_rows!r}")
    preview = df.head(max_rows)
    columns = fmt.format_frame(
        preview,
        locale=_SETTINGS["locale"],
        timezone=_SETTINGS["timezone"],
        formats=formats,
        labels=labels,
        currency=currency,
        index=index,
    )
    data = df.to_json(orient="table", index=index, date_format="iso")
    heading = f"<h2>{html.escape(title)}</h2>" if title else ""
    text_head = f"{title}\n{'-' * len(title)}\n\n" if title else ""
    if df.empty:
        sentence = EMPTY_TABLE if empty is True else (empty or "")
        body_html = f'<p class="empty">{html.escape(sentence)}</p>' if sentence else ""
        body_text = sentence
        visible = show and bool(sentence)
    else:
        body_html = _html_table(columns, len(preview))
        body_text = fmt.text_table(columns)
        if len(df) > len(preview):
            more = f"{fmt.format_number(len(preview), _SETTINGS['locale'])} of"
            more += f" {fmt.format_number(len(df), _SETTINGS['locale'])} rows shown."
            body_html += f'<p class="more">{html.escape(more)}</p>'
            body_text += f"\n{more}"
        visible = show
    shown: dict[str, Any] = {"text/plain": f"table {name}: {len(df)} rows"}
    if visible:
        shown["text/html"] = heading + body_html
    payload = {
        "kind": "table",
        "visible": visible,
        "name": name,
        "data": json.loads(data),
        "text": text_head + body_text if visible else "",
    }
    _publish(payload, shown)


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def chart(fig: Figure, *, alt: str | None = None, scale: int = CHART_SCALE) -> None:
    """Show a matplotlib figure as a PNG drawn at ``scale`` times its shown size.

    ``alt`` is the image's text for readers who do not see it (and mail
    clients that block images); by default the figure's label (the chart
    helpers set one) or its title. A figure made with ``pyplot`` is closed
    here, so the inline backend does not show it a second time.
    """
    text = " ".join(str(alt or _default_alt(fig)).split()) or "chart"
    blob = _chart_png(fig, 100 * scale)
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)
    width, height = _png_size(blob)
    png = base64.b64encode(blob).decode("ascii")
    _publish(
        {"kind": "chart", "visible": True, "alt": text},
        {"image/png": png, "text/plain": f"<{text}>"},
        {"image/png": {"width": width // scale, "height": height // scale}},
    )


def _chart_png(fig: Figure, dpi: int, colors: int = 64) -> bytes:
    """The figure as a PNG with a palette of ``colors``: a chart's few flat colours and their
    anti-aliased edges look the same, at about a quarter of the bytes of full colour.

    A figure with a layout engine (the chart helpers' ``constrained``) already fits its
    canvas: it is drawn once, straight into the palette image. Others are saved with a tight
    bounding box (drawn twice), as matplotlib does for the inline backend.
    """
    from PIL import Image

    canvas = fig.canvas
    if fig.get_layout_engine() is not None and hasattr(canvas, "buffer_rgba"):
        before = fig.get_dpi()
        fig.set_dpi(dpi)
        try:
            canvas.draw()
            size = canvas.get_width_height(physical=True)
            image = Image.frombuffer("RGBA", size, canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
            rgb = Image.alpha_composite(Image.new("RGBA", size, "white"), image).convert("RGB")
        finally:
            fig.set_dpi(before)
    else:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
        with Image.open(io.BytesIO(buf.getvalue())) as saved:
            rgb = saved.convert("RGB")
    small = rgb.quantize(colors=colors, method=Image.Quantize.FASTOCTREE)
    palette = small.getpalette() or []
    for i in range(0, len(palette) - 2, 3):  # the octree averages white to 254: make it white
        if min(palette[i : i + 3]) >= 250:
            palette[i : i + 3] = [255, 255, 255]
    small.putpalette(palette)
    out = io.BytesIO()
    small.save(out, format="PNG")
    return out.getvalue()


def _default_alt(fig: Figure) -> str:
    if fig.get_label():
        return str(fig.get_label())
    titles = [ax.get_title(loc="left") or ax.get_title() for ax in fig.get_axes()]
    return next((t for t in titles if t), "chart")
