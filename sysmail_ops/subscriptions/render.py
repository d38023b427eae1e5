"""An executed report notebook -> the parts of a mail: compact HTML, inline images, tables.

The HTML is what a mail client can show in a message body:

- no code, no prompts: nbconvert with a template of our own (one element
  per output, no wrappers; inputs, errors and stderr left out), cells
  without visible output dropped, then a tiny stylesheet
  inlined into ``style`` attributes with ``css-inline`` (mail clients drop
  ``<style>`` blocks); it is a fragment (a ``<div>``) to put in a template;
- images (outputs, and ``data:`` images in markdown) become
  ``<img src="cid:chart-N@report">`` with the PNG in ``ReportOutput.images``
  (``compose.InlineImage``), never ``data:`` URIs, which Gmail and Outlook
  do not show; scripts are dropped (no mail client runs them);
- ``reportkit`` outputs are read back (summary, row count, tables) and
  dropped from the HTML when they are not meant to be seen.

The run folder keeps ``report.html`` (a standalone page whose images are the
``chart-N.png`` files next to it) and the images.
"""

from __future__ import annotations

import base64
import copy
import html
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sysmail_ops.errors import ReportError
from sysmail_ops.mail.mime import InlineImage
from sysmail_ops.store import private
from sysmail_ops.subscriptions.kit import MIME

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ReportOutput", "render_report"]

CSS = """
.report { font-family: Arial, Helvetica, sans-serif; font-size: 14px; color: #222222; }
h1 { font-size: 20px; margin: 16px 0 8px; }
h2 { font-size: 16px; margin: 16px 0 6px; }
h3 { font-size: 14px; margin: 12px 0 4px; }
p { margin: 6px 0; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th { background: #f2f2f2; text-align: left; padding: 4px 8px; border-bottom: 1px solid #cccccc; }
td { padding: 3px 8px; border-bottom: 1px solid #eeeeee; }
pre { font-family: Consolas, monospace; font-size: 12px; white-space: pre-wrap; margin: 4px 0; }
img { max-width: 100%; height: auto; }
p.more { font-size: 12px; color: #666666; }
"""
_IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif"}
_DROP_TYPES = ("image/svg+xml", "application/javascript", "text/latex")


@dataclass
class ReportOutput:
    """What a report run gives the mail: HTML body part, its images, tables, row count, summary."""

    html: str = field(repr=False)  # a fragment, CSS inlined, images as cid: references
    images: list[InlineImage] = field(default_factory=list, repr=False)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    row_count: int | None = None
    summary: str | None = None
    html_path: Path | None = None  # the standalone report.html kept in the run folder

    def __repr__(self) -> str:
        return (
            f"ReportOutput(html={len(self.html)} chars, images={len(self.images)},"
            f" tables={list(self.tables)}, row_count={self.row_count}, summary={self.summary!r})"
        )


def _read_table(name: str, data: Any) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_json(io.StringIO(json.dumps(data)), orient="table")
    except (ValueError, KeyError, TypeError) as exc:
        raise ReportError(
            f"table {name!r} in the executed notebook cannot be read: {exc}"
        ) from None


def _collect(nb: Any, out: ReportOutput) -> None:
    """Read reportkit payloads into ``out``; strip them (and what is not shown) from ``nb``."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            payload = data.pop(MIME, None)
            if payload is None:
                kept.append(o)
                continue
            kind = payload.get("kind")
            if kind == "summary":
                out.summary = str(payload.get("text", "")) or None
            elif kind == "row_count":
                out.row_count = int(payload["value"])
            elif kind == "table":
                out.tables[str(payload["name"])] = _read_table(payload["name"], payload["data"])
            if payload.get("visible", True):
                kept.append(o)
        cell.outputs = kept


def _add_image(out: ReportOutput, files: list[tuple[str, bytes]], blob: bytes, subtype: str) -> str:
    """Register one image; returns its Content-ID."""
    n = len(out.images) + 1
    cid, name = f"chart-{n}@report", f"chart-{n}.{subtype}"
    out.images.append(InlineImage(cid, blob, subtype, name))
    files.append((name, blob))
    return cid


def _data_uris_to_cid(body: str, out: ReportOutput, files: list[tuple[str, bytes]]) -> str:
    """Images a markdown cell embeds (attachments, pasted data: URIs) become cid: parts too."""

    def swap(m: re.Match[str]) -> str:
        blob = base64.b64decode("".join(m.group(3).split()))
        return f'src="cid:{_add_image(out, files, blob, m.group(2).lower())}"'

    return _DATA_URI.sub(swap, body)


def _to_cid(nb: Any, out: ReportOutput) -> list[tuple[str, bytes]]:
    """Swap each image output for an ``<img src="cid:...">``; returns (file name, bytes)."""
    files: list[tuple[str, bytes]] = []
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = o.get("data", {})
            for mime in _DROP_TYPES:
                data.pop(mime, None)
            found = next((m for m in _IMAGE_TYPES if m in data), None)
            if found is None:
                continue
            cid = _add_image(out, files, base64.b64decode(data[found]), _IMAGE_TYPES[found])
            alt = html.escape(str(data.get("text/plain", "chart")).strip("<>"), quote=True)
            o["data"] = {"text/html": f'<p><img src="cid:{cid}" alt="{alt}"></p>'}
            o["metadata"] = {}
    return files


def _visible_cells(nb: Any) -> None:
    """Keep markdown cells and code cells with something to show (no errors, no raw cells)."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cells.append(cell)
        elif cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if o.get("output_type") != "error"]
            cell.outputs = [o for o in cell.outputs if o.get("name") != "stderr"]
            if cell.outputs:
                cells.append(cell)
    nb.cells = cells


# nbconvert template: one element per output, no wrappers, no inputs, no errors, no stderr.
_TEMPLATE = """\
{%- extends 'base/display_priority.j2' -%}
{%- block markdowncell scoped %}
{{ cell.source | markdown2html }}
{%- endblock markdowncell -%}
{%- block input_group -%}{%- endblock input_group -%}
{%- block execute_result scoped -%}
{%- block data_priority scoped -%}{{ super() }}{%- endblock data_priority -%}
{%- endblock execute_result -%}
{%- block stream_stdout %}
<pre>{{ output.text | ansi2html }}</pre>
{%- endblock stream_stdout -%}
{%- block stream_stderr -%}{%- endblock stream_stderr -%}
{%- block error -%}{%- endblock error -%}
{%- block data_html %}
{{ output.data['text/html'] }}
{%- endblock data_html -%}
{%- block data_markdown %}
{{ output.data['text/markdown'] | markdown2html }}
{%- endblock data_markdown -%}
{%- block data_text %}
<pre>{{ output.data['text/plain'] | ansi2html }}</pre>
{%- endblock data_text -%}
"""
_ANCHOR = re.compile(r'<a class="anchor-link" href="#[^"]*">[^<]*</a>')
_SCRIPT = re.compile(r"<script\b.*?</script\s*>", re.S | re.I)
_DATA_URI = re.compile(
    r"""src=(["'])data:image/(png|jpeg|gif);base64,([A-Za-z0-9+/=\s]+)\1""", re.I
)


def _export(nb: Any) -> str:
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="basic",
        template_file="report_mail.html.j2",
        extra_loaders=[DictLoader({"report_mail.html.j2": _TEMPLATE})],
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    body, _ = exporter.from_notebook_node(nb)
    return _ANCHOR.sub("", str(body)).strip()


def render_report(
    executed_notebook: str | Path, run_dir: str | Path, *, title: str | None = None
) -> ReportOutput:
    """Render an executed report for mail; keep ``report.html`` and its images in ``run_dir``."""
    import css_inline
    import nbformat

    path = Path(executed_notebook)
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read the executed notebook {path}: {exc}") from None
    nb = copy.deepcopy(nb)
    out = ReportOutput(html="")
    _collect(nb, out)
    files = _to_cid(nb, out)
    _visible_cells(nb)
    body = _data_uris_to_cid(_SCRIPT.sub("", _export(nb)), out, files)
    fragment = f'<div class="report">\n{body}\n</div>'
    out.html = css_inline.inline_fragment(fragment, CSS)
    folder = Path(run_dir)
    private.make_dirs(folder)
    for name, blob in files:
        private.write_file(folder / name, blob)
    page = out.html
    for image in out.images:
        page = page.replace(f'src="cid:{image.cid}"', f'src="{image.filename}"')
    title = html.escape(title or path.stem)
    out.html_path = folder / "report.html"
    private.write_file(
        out.html_path,
        (
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>'
            f"<body>\n{page}\n</body></html>\n"
        ).encode(),
    )
    return out
