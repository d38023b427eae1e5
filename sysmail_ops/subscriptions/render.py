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
  dropped from the HTML when they are not meant to be seen;
- the layout is for a single mail column (at most 640 px) on a phone as on a
  desktop: tables scroll sideways in their own box (``div.table-wrap``) so
  they never widen the page, images shrink to the column and carry a
  ``width`` (their size at 1x: charts are drawn at 2x) and alt text, and no
  colour pair depends on the client's background (dark mode).

``ReportOutput.text`` is the report for the mail's plain-text part, built
from the notebook rather than from the HTML: markdown as written, tables
as aligned text (numbers right-aligned, from ``reportkit``), charts as
their alt text.

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
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sysmail_ops.errors import ReportError
from sysmail_ops.mail.mime import InlineImage
from sysmail_ops.store import private
from sysmail_ops.subscriptions.kit import MIME

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ReportOutput", "page_head", "render_report"]

CSS = """
.report { font-family: Arial, Helvetica, sans-serif; font-size: 15px; line-height: 1.45;
  color: #1f2933; overflow-wrap: break-word; }
h1 { font-size: 21px; line-height: 1.25; margin: 8px 0 8px; color: #111827; }
h2 { font-size: 17px; line-height: 1.3; margin: 22px 0 6px; color: #111827; }
h3 { font-size: 15px; margin: 14px 0 4px; color: #111827; }
p { margin: 6px 0 10px; }
code { font-family: Consolas, Menlo, monospace; font-size: 13px; }
div.table-wrap { overflow-x: auto; max-width: 100%; margin: 4px 0 14px; }
table { border-collapse: collapse; font-size: 13px; line-height: 1.35; }
th { text-align: left; vertical-align: bottom; padding: 6px 6px; font-weight: bold;
  color: #374151; border-bottom: 2px solid #9aa3af; }
td { text-align: left; vertical-align: top; padding: 5px 6px; border-bottom: 1px solid #d9dde3; }
th.num, td.num { text-align: right; white-space: nowrap; padding-left: 12px; }
th.nw, td.nw { white-space: nowrap; }
td.wrap { min-width: 180px; }
pre { font-family: Consolas, Menlo, monospace; font-size: 12px; white-space: pre-wrap;
  margin: 4px 0; }
img { display: block; max-width: 100%; height: auto; border: 0; margin: 6px 0 8px; }
p.more, p.empty { font-size: 13px; color: #4b5563; }
"""
_IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif"}
_TEXT_KEY = "sysmail-ops/text"  # an output's plain-text rendering, from its reportkit payload
_DROP_TYPES = ("image/svg+xml", "application/javascript", "text/latex")


@dataclass
class ReportOutput:
    """What a report run gives the mail: HTML body part, its images, tables, row count, summary."""

    html: str = field(repr=False)  # a fragment, CSS inlined, images as cid: references
    text: str = field(default="", repr=False)  # the report as plain text (tables aligned)
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
                if payload.get("text"):
                    o.setdefault("metadata", {})[_TEXT_KEY] = str(payload["text"])
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
            alt = html.escape(_alt(data), quote=True)
            shown = o.get("metadata", {}).get(found, {}).get("width")
            size = f' width="{int(shown)}"' if isinstance(shown, int | float) and shown > 0 else ""
            o["data"] = {"text/html": f'<img src="cid:{cid}" alt="{alt}"{size}>'}
            o["metadata"] = {}
    return files


def _alt(data: Mapping[str, Any]) -> str:
    """An image output's alt text: its ``text/plain`` (``<alt>`` from reportkit), else "chart"."""
    text = " ".join(str(data.get("text/plain", "")).split()).strip("<>")
    if not text or text.startswith(("Figure size", "<Figure", "<IPython")):
        return "chart"
    return text


_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)[^)]*\)")
_MD_EMPHASIS = re.compile(r"(\*\*|__|`)")
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


def _markdown_text(source: str) -> str:
    """Markdown for a plain-text part: headings underlined, no emphasis marks, links spelt out."""
    lines = []
    for line in source.splitlines():
        line = _MD_IMAGE.sub(lambda m: f"[{m.group(1) or 'image'}]", line)
        line = _MD_LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})", line)
        line = _MD_EMPHASIS.sub("", line).rstrip()
        line = line[:-1].rstrip() if line.endswith("\\") else line  # markdown's hard break
        heading = _MD_HEADING.match(line)
        if heading:
            title = heading.group(2).strip()
            lines += [title, ("=" if len(heading.group(1)) == 1 else "-") * len(title)]
        else:
            lines.append(line)
    return "\n".join(lines).strip()


def _text(nb: Any) -> str:
    """The visible report as plain text, block by block, in the notebook's order."""
    from sysmail_ops.templates.render import html_to_text

    blocks: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            blocks.append(_markdown_text(cell.source))
            continue
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if _TEXT_KEY in o.get("metadata", {}):
                blocks.append(o["metadata"][_TEXT_KEY])
            elif o.get("output_type") == "stream":
                blocks.append(str(o.get("text", "")).rstrip())
            elif any(m in data for m in _IMAGE_TYPES):
                blocks.append(f"[{_alt(data)}]")
            elif "text/markdown" in data:
                blocks.append(_markdown_text(str(data["text/markdown"])))
            elif "text/html" in data:
                blocks.append(html_to_text(_SCRIPT.sub("", str(data["text/html"]))).strip())
            elif "text/plain" in data:
                blocks.append(str(data["text/plain"]).rstrip())
    return "\n\n".join(b for b in blocks if b.strip())


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


_EXPORTERS = threading.local()  # one exporter per thread: its templates compile once (~0.2 s)


def _exporter() -> Any:
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = getattr(_EXPORTERS, "exporter", None)
    if exporter is None:
        exporter = _EXPORTERS.exporter = HTMLExporter(
            template_name="basic",
            template_file="report_mail.html.j2",
            extra_loaders=[DictLoader({"report_mail.html.j2": _TEMPLATE})],
            exclude_input=True,
            exclude_input_prompt=True,
            exclude_output_prompt=True,
        )
    return exporter


def _export(nb: Any) -> str:
    body, _ = _exporter().from_notebook_node(nb)
    return _ANCHOR.sub("", str(body)).strip()


def page_head(title: str) -> str:
    """The start of a standalone report page (``report.html``): one column, phone-friendly."""
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title></head>"
        '<body style="margin:0;background-color:#ffffff;">'
        '<div style="max-width:640px;margin:0 auto;padding:12px 16px;">'
    )


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
    _visible_cells(nb)
    out.text = _text(nb)
    files = _to_cid(nb, out)
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
        (f"{page_head(title)}\n{page}\n</div></body></html>\n").encode(),
    )
    return out
