"""What a report notebook calls to declare its outputs for the mail.

A report notebook (``reports/*.ipynb``) is ordinary pandas and matplotlib. To
tell a subscription what to mail, it calls:

- ``summary(text)``: one line the mail template shows above the report
  (``{{ summary }}``); not shown in the report itself;
- ``table(name, df)``: shows ``df`` as an HTML table and declares it as the
  named table a subscription may attach as ``NAME.csv`` / ``NAME.xlsx``;
- ``row_count(n)``: how many rows the report is about; a subscription with
  *skip if empty* mails nothing when it is 0;
- ``chart(fig)``: shows a matplotlib figure as a PNG; in the mail it becomes
  an inline image referenced by ``cid:``.

How it travels: each call publishes one Jupyter display output whose bundle
carries the MIME type ``application/vnd.sysmail-ops.output+json`` with a
small JSON payload (``kind``, ``name``, the table's data, ...), next to the
ordinary ``text/html`` / ``image/png`` / ``text/plain`` a person sees in
JupyterLab. The payload is saved in the executed notebook like any output, so
the run's ``.ipynb`` is the whole record: ``reports.render_report`` reads the
payloads back and drops them (and the invisible outputs) from the mailed HTML.
Calling a function twice with the same name keeps the last value.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from typing import TYPE_CHECKING, Any

from sysmail_ops.errors import ValidationError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["MIME", "chart", "row_count", "summary", "table"]

MIME = "application/vnd.sysmail-ops.output+json"
TABLE_PREVIEW_ROWS = 50  # rows shown in the report; the attached table has them all


def _publish(payload: dict[str, Any], shown: dict[str, Any]) -> None:
    """One display output: the payload for the renderer, ``shown`` for people."""
    from IPython.display import publish_display_data

    publish_display_data({MIME: payload, **shown})


def summary(text: str) -> None:
    """The report's one-line summary (the mail template's ``{{ summary }}``)."""
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


def table(name: str, df: pd.DataFrame, *, show: bool = True, index: bool = False) -> None:
    """Show ``df`` (first ``TABLE_PREVIEW_ROWS`` rows) and declare it as the table ``name``.

    ``name`` becomes the attachment's file name, so it is letters, digits, ``_`` and ``-``.
    """
    if not name or not all(c.isalnum() or c in "_-" for c in name) or not name.isascii():
        raise ValidationError(f"table name {name!r} must be letters, digits, '_' or '-'")
    data = df.to_json(orient="table", index=index, date_format="iso")
    shown: dict[str, Any] = {"text/plain": f"table {name}: {len(df)} rows"}
    if show:
        preview = df.head(TABLE_PREVIEW_ROWS)
        html = preview.to_html(index=index, border=0, classes="report-table", na_rep="")
        if len(df) > TABLE_PREVIEW_ROWS:
            html += f'<p class="more">{TABLE_PREVIEW_ROWS} of {len(df)} rows shown.</p>'
        shown["text/html"] = html
    _publish({"kind": "table", "visible": show, "name": name, "data": json.loads(data)}, shown)


def chart(fig: Figure, *, alt: str = "chart", dpi: int = 100) -> None:
    """Show a matplotlib figure as a PNG (an inline ``cid:`` image in the mail).

    A figure made with ``pyplot`` is closed here, so the inline backend does
    not show it a second time at the end of the cell.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)
    png = base64.b64encode(buf.getvalue()).decode("ascii")
    _publish(
        {"kind": "chart", "visible": True, "alt": str(alt)},
        {"image/png": png, "text/plain": f"<{alt}>"},
    )
