"""Object Template Management: pick or create a template, edit it with a live preview,
see a problem with its line before saving, browse the versions and diff two of them.

The checks and the rendering are the catalogue's (``templates.drafts`` renders the
unsaved sources exactly as a save and a send would); the form only shows them.
"""

from __future__ import annotations

import difflib
import html
import json
from typing import Any

import ipywidgets as w

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import ValidationError
from sysmail_ops.inputs import parse_json
from sysmail_ops.templates import catalog, drafts
from sysmail_ops.widgets.common import guarded, message, status_line

__all__ = ["NEW", "TemplateManagement", "diff_versions", "template_management"]

NEW = "(new template)"
RECENT_SENDS = 10
_WIDE = w.Layout(width="48em")
_STYLE = {"description_width": "9em"}
_SAMPLE = '{\n  "first_name": "Ana",\n  "case_id": "C-1001"\n}'


def template_management(home: str | None = None) -> TemplateManagement:
    """The Object Template Management form on the workspace ``home`` (None: $SYSMAIL_HOME)."""
    return TemplateManagement(Workspace.open(home))


def diff_versions(a: catalog.Template, b: catalog.Template) -> str:
    """A unified diff of every part (and the object type, fields, description) from a to b."""

    def lines(t: catalog.Template, part: str) -> list[str]:
        value = getattr(t, part)
        if part == "fields":
            value = ", ".join(value) if value else ""
        return [] if value is None else str(value).splitlines(keepends=True)

    out: list[str] = []
    for part in ("object_type", "description", "fields", "subject", "html", "text"):
        out += difflib.unified_diff(
            lines(a, part),
            lines(b, part),
            fromfile=f"{a.name} v{a.version} {part}",
            tofile=f"{b.name} v{b.version} {part}",
        )
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


def _iframe(body: str) -> str:
    """Rendered HTML shown in a sandbox: no scripts, no forms, no remote loads."""
    csp = "default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'"
    doc = f'<meta http-equiv="Content-Security-Policy" content="{csp}">{body}'
    return (
        f'<iframe sandbox="" srcdoc="{html.escape(doc, quote=True)}" '
        'style="width:100%;height:22em;border:1px solid #ccc;background:#fff"></iframe>'
    )


class TemplateManagement(w.VBox):
    """The templates, a form for one, its live preview and its versions."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.output = w.Output()
        self.status = status_line()
        self.pick = w.Dropdown(description="Template", options=[NEW], style=_STYLE)
        self.object_type = w.Combobox(
            description="Object type", placeholder="case, approval, report, ...", style=_STYLE
        )
        self.name = w.Text(description="Name", placeholder="e.g. case-update", style=_STYLE)
        self.description = w.Text(description="Description", layout=_WIDE, style=_STYLE)
        self.fields = w.Text(
            description="Fields",
            placeholder="declared record fields, comma separated (optional)",
            layout=_WIDE,
            style=_STYLE,
        )
        self.subject = w.Text(description="Subject", layout=_WIDE, style=_STYLE)
        self.html = w.Textarea(
            description="HTML", layout=w.Layout(width="48em", height="12em"), style=_STYLE
        )
        self.text = w.Textarea(
            description="Text",
            placeholder="empty: derived from the HTML",
            layout=w.Layout(width="48em", height="7em"),
            style=_STYLE,
        )
        self.record = w.Textarea(
            description="Sample record",
            value=_SAMPLE,
            layout=w.Layout(width="48em", height="7em"),
            style=_STYLE,
        )
        self.skeleton = w.Button(
            description="Sample record with the fields this template uses",
            icon="list",
            layout=w.Layout(width="auto"),
        )
        self.recent = w.HTML()
        self.problems = w.HTML()
        self.preview_subject = w.HTML()
        self.preview_html = w.HTML()
        self.preview_text = w.HTML()
        self.save = w.Button(description="Save", button_style="primary", icon="save")
        self.versions = w.HTML()
        self.diff_from = w.Dropdown(description="Diff from", options=[], style=_STYLE)
        self.diff_to = w.Dropdown(description="to", options=[])
        self.diff = w.HTML()
        self._loading = False

        guard = guarded(self.output, self.status)
        self.pick.observe(guard(self._on_pick), names="value")
        for source in (self.subject, self.html, self.text, self.record, self.fields):
            source.observe(guard(self._on_change), names="value")
        self.skeleton.on_click(guard(self._on_skeleton))
        self.save.on_click(guard(self._on_save))
        self.diff_from.observe(guard(self._on_diff), names="value")
        self.diff_to.observe(guard(self._on_diff), names="value")

        preview = w.VBox(
            [
                w.HTML("<b>Preview</b>"),
                self.problems,
                self.preview_subject,
                self.preview_html,
                self.preview_text,
            ]
        )
        history = w.VBox(
            [
                w.HTML("<b>Versions</b>"),
                self.versions,
                w.HBox([self.diff_from, self.diff_to]),
                self.diff,
            ]
        )
        super().__init__(
            [
                w.HTML("<h3>Object email templates</h3>"),
                self.pick,
                self.name,
                self.object_type,
                self.description,
                self.fields,
                self.subject,
                self.html,
                self.text,
                self.record,
                w.HBox([self.skeleton]),
                self.recent,
                w.HBox([self.save]),
                self.status,
                preview,
                history,
                self.output,
            ]
        )
        guard(self.refresh)()
        guard(self._load)()

    # --- reading the store ----------------------------------------------------------------

    def refresh(self) -> None:
        """Reload the picker (and the object types offered) from the store."""
        found = catalog.list_templates(self.ws)
        current = self.pick.value
        self._loading = True
        try:
            self.pick.options = [NEW] + [t.name for t in found]
            self.pick.value = current if current in self.pick.options else NEW
        finally:
            self._loading = False
        self.object_type.options = sorted({t.object_type for t in found})

    def _load(self) -> None:
        """Fill the form from the picked template's current version, or empty it."""
        self._loading = True
        try:
            editing = self.pick.value != NEW
            self.name.disabled = editing
            if editing:
                t = catalog.get_template(self.ws, self.pick.value)
                self.name.value = t.name
                self.object_type.value = t.object_type
                self.description.value = t.description or ""
                self.fields.value = ", ".join(t.fields or ())
                self.subject.value = t.subject
                self.html.value = t.html
                self.text.value = "" if t.text_derived else t.text
                self.record.value = self._skeleton(sorted(catalog.check(self.ws, t.name)["used"]))
            else:
                for box in (self.name, self.object_type, self.description, self.fields,
                            self.subject, self.html, self.text):  # fmt: skip
                    box.value = ""
        finally:
            self._loading = False
        self._history()
        self._recent()
        self.update_preview()

    def _history(self) -> None:
        if self.pick.value == NEW:
            self.versions.value = "<i>a new template starts at version 1</i>"
            self.diff_from.options = self.diff_to.options = []
            self.diff.value = ""
            return
        name = self.pick.value
        numbers = catalog.list_versions(self.ws, name)
        rows = []
        for n in reversed(numbers):
            t = catalog.get_template(self.ws, name, n)
            rows.append(
                f"<tr><td>v{n}</td><td>{t.created_at:%Y-%m-%d %H:%M}</td>"
                f"<td>{html.escape(t.subject)}</td></tr>"
            )
        self.versions.value = (
            '<table class="sysmail-versions" border="1" cellpadding="3" '
            'style="border-collapse:collapse"><tr><th>version</th><th>saved (UTC)</th>'
            f"<th>subject</th></tr>{''.join(rows)}</table>"
        )
        options = [(f"v{n}", n) for n in numbers]
        self._loading = True
        try:
            self.diff_from.options = self.diff_to.options = options
            if numbers:
                self.diff_from.value = numbers[-2] if len(numbers) > 1 else numbers[-1]
                self.diff_to.value = numbers[-1]
        finally:
            self._loading = False
        self._on_diff(None)

    def _recent(self) -> None:
        """The latest sends of this template, to compare with the preview."""
        if self.pick.value == NEW:
            self.recent.value = ""
            return
        with self.ws.store.connect() as con:
            rows = con.execute(
                "SELECT queued_at, recipient, subject, status FROM send_log"
                " WHERE template = ? ORDER BY id DESC LIMIT ?",
                [self.pick.value, RECENT_SENDS],
            ).fetchall()
        if not rows:
            self.recent.value = "<small>not sent yet</small>"
            return
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
            for row in rows
        )
        self.recent.value = (
            "<details><summary>Recent sends of this template</summary>"
            '<table border="1" cellpadding="3" style="border-collapse:collapse">'
            "<tr><th>queued (UTC)</th><th>recipient</th><th>subject</th><th>status</th></tr>"
            f"{body}</table></details>"
        )

    # --- preview ---------------------------------------------------------------------------

    def _draft(self) -> catalog.Template:
        return drafts.check_draft(
            self.ws,
            name=self.name.value if self.pick.value == NEW else self.pick.value,
            object_type=self.object_type.value,
            subject=self.subject.value,
            html=self.html.value,
            text=self.text.value,
            fields=self.fields.value,
            description=self.description.value,
        )

    def _record(self) -> dict[str, Any]:
        raw = self.record.value.strip()
        record = parse_json(raw) if raw else {}
        if not isinstance(record, dict):
            raise ValidationError('the sample record must be a JSON object: {"field": value}')
        return record

    def update_preview(self) -> None:
        """Check the sources and render them for the sample record; a problem is one line."""
        self.preview_subject.value = self.preview_html.value = self.preview_text.value = ""
        if not self.subject.value.strip() and not self.html.value.strip():
            self.problems.value = "<i>type a subject and an HTML body to see the preview</i>"
            return
        try:
            draft = self._draft()
            rendered = drafts.render_draft(self.ws, draft, self._record())
        except ValidationError as exc:  # TemplateError too: the part and line are in it
            message(self.problems, str(exc), "error")
            return
        message(self.problems, "renders without problems", "ok")
        self.preview_subject.value = f"<b>Subject:</b> {html.escape(rendered.subject)}"
        self.preview_html.value = _iframe(rendered.html)
        self.preview_text.value = (
            f'<pre style="white-space:pre-wrap;border:1px solid #ccc;padding:4px">'
            f"{html.escape(rendered.text)}</pre>"
        )

    # --- callbacks --------------------------------------------------------------------------

    def _on_pick(self, _change: Any) -> None:
        if self._loading:
            return
        self.status.value = ""
        self._load()

    def _on_change(self, _change: Any) -> None:
        if not self._loading:
            self.update_preview()

    def _skeleton(self, names: list[str]) -> str:
        """A sample record with these fields: the values typed so far, else a marker."""
        try:
            current = self._record()
        except ValidationError:
            current = {}
        skeleton = {n: current.get(n, f"[{n}]") for n in names}
        return json.dumps(skeleton, indent=2, ensure_ascii=False)

    def _on_skeleton(self, _button: Any) -> None:
        names = drafts.fields_of(self._draft())
        self.record.value = self._skeleton(names)
        message(self.status, f"the template reads {len(names)} field(s)", "info")

    def _on_save(self, _button: Any) -> None:
        values = {
            "object_type": self.object_type.value.strip(),
            "subject": self.subject.value,
            "html": self.html.value,
            "description": self.description.value,
        }
        fields = [f.strip() for f in self.fields.value.split(",") if f.strip()]
        if self.pick.value == NEW:
            t = catalog.add_template(
                self.ws,
                self.name.value.strip(),
                text=self.text.value or None,
                fields=fields or None,
                **values,
            )
        else:
            before = catalog.get_template(self.ws, self.pick.value)
            t = catalog.edit_template(
                self.ws, self.pick.value, text=self.text.value, fields=fields, **values
            )
            if t.version == before.version:
                message(self.status, f"{t.name}: nothing changed, still v{t.version}", "info")
                return
        self.refresh()
        self._loading = True
        try:
            self.pick.value = t.name
        finally:
            self._loading = False
        self._load()
        message(self.status, f"saved {t.name} v{t.version}", "ok")

    def _on_diff(self, _change: Any) -> None:
        if self._loading or self.pick.value == NEW:
            return
        a, b = self.diff_from.value, self.diff_to.value
        if a is None or b is None:
            self.diff.value = ""
            return
        name = self.pick.value
        text = diff_versions(
            catalog.get_template(self.ws, name, a), catalog.get_template(self.ws, name, b)
        )
        self.diff.value = (
            '<pre class="sysmail-diff" style="white-space:pre-wrap">'
            f"{html.escape(text) if text else f'v{a} and v{b} are the same'}</pre>"
        )
