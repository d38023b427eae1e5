"""Report subscriptions: a report notebook, its parameters, recipients with their own
parameters, a schedule (the next five run times shown as you type), the sending account
and template; Preview, Test send, Run now; the run history below.

Everything is ``sysmail_ops.subscriptions``' (checks, schedule, runs); the form reads the
report's ``parameters`` cell through it and turns each parameter into an input.
"""

from __future__ import annotations

import html
import json
import shlex
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import ipywidgets as w

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import ValidationError
from sysmail_ops.inputs import parse_json
from sysmail_ops.store.database import utcnow
from sysmail_ops.subscriptions import drafts, model, notebooks, runs, schedule
from sysmail_ops.templates import catalog
from sysmail_ops.widgets.common import guarded, message, status_line

__all__ = ["NEW", "PATH", "SubscriptionManagement", "parse_recipients", "report_subscriptions"]

NEW = "(new subscription)"
PATH = "(a notebook path)"
# Offered in the form; any locale Babel knows may be typed (checked on Save like the CLI).
LOCALES = ("en", "de", "zh", "fr", "es", "ja", "en_GB", "de_CH")
HISTORY_ROWS = 20
_WIDE = w.Layout(width="44em")
_STYLE = {"description_width": "10em"}
_HISTORY_COLUMNS = [
    "slot", "parameters", "status", "trigger", "recipients", "delivered", "deferred", "failed",
    "row_count", "error",
]  # fmt: skip


def report_subscriptions(home: str | None = None) -> SubscriptionManagement:
    """The report subscriptions form on the workspace ``home`` (None: $SYSMAIL_HOME)."""
    return SubscriptionManagement(Workspace.open(home))


def _value(raw: str) -> Any:
    """A parameter value as the CLI reads ``-p``: JSON, else the text as it is."""
    try:
        return parse_json(raw)
    except ValidationError:
        return raw


def _text_of(value: Any) -> str:
    """A parameter value as typed in the form (the inverse of ``_value``)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def parse_recipients(text: str) -> list[dict[str, Any]]:
    """One recipient per line: ``ADDR [NAME=VALUE ...]`` (values read as JSON, else text)."""
    out: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise ValidationError(f"recipients line {n}: {exc}") from None
        params: dict[str, Any] = {}
        for item in words[1:]:
            name, sep, raw = item.partition("=")
            if not sep or not name.strip():
                raise ValidationError(f"recipients line {n}: {item!r} must look like NAME=VALUE")
            params[name.strip()] = _value(raw)
        out.append({"address": words[0], "parameters": params})
    return out


def _recipients_text(s: model.Subscription) -> str:
    lines = []
    for r in s.recipients:
        pairs = [
            f"{k}={shlex.quote(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))}"
            for k, v in r.parameters.items()
        ]
        lines.append(" ".join([r.address, *pairs]))
    return "\n".join(lines)


class SubscriptionManagement(w.VBox):
    """The subscriptions, a form for one, its actions and its run history."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.output = w.Output()
        self.status = status_line()
        self.pick = w.Dropdown(description="Subscription", options=[NEW], style=_STYLE)
        self.name = w.Text(description="Name", placeholder="e.g. weekly-delivery", style=_STYLE)
        self.description = w.Text(description="Description", layout=_WIDE, style=_STYLE)
        reports = [p.stem for p in notebooks.list_reports()]
        self.report = w.Dropdown(
            description="Report", options=[*reports, PATH], value=reports[0] if reports else PATH,
            style=_STYLE,
        )  # fmt: skip
        self.path = w.Text(
            description="Notebook path", placeholder="/srv/reports/mine.ipynb", layout=_WIDE,
            style=_STYLE, continuous_update=False,
        )  # fmt: skip
        self.parameters = w.VBox()
        self.param_inputs: dict[str, w.Text] = {}
        self.recipients = w.Textarea(
            description="Recipients",
            placeholder="one per line: ana@example.com region=APAC",
            layout=w.Layout(width="44em", height="6em"),
            style=_STYLE,
        )
        self.cron = w.Text(
            description="Schedule (cron)", value="0 8 * * mon", placeholder="0 8 * * mon",
            style=_STYLE,
        )  # fmt: skip
        self.timezone = w.Combobox(
            description="Timezone", value="UTC", options=self._timezones(), ensure_option=False,
            style=_STYLE,
        )  # fmt: skip
        self.next_runs = w.HTML()
        self.locale = w.Combobox(
            description="Locale", value=model.DEFAULT_LOCALE, options=list(LOCALES),
            placeholder="en, de, zh...", ensure_option=False, style=_STYLE,
        )  # fmt: skip
        self.account = w.Dropdown(description="System email", options=[], style=_STYLE)
        self.template = w.Dropdown(description="Template", options=[], style=_STYLE)
        self.owner = w.Text(
            description="Owner", placeholder="gets failure notices", layout=_WIDE, style=_STYLE
        )
        self.formats = w.SelectMultiple(
            description="Formats", options=list(model.FORMATS), value=("html_body",),
            rows=len(model.FORMATS), style=_STYLE,
        )  # fmt: skip
        self.skip_if_empty = w.Checkbox(
            description="skip when the report has no rows", layout=w.Layout(width="auto")
        )
        self.save = w.Button(description="Save", button_style="primary", icon="save")
        self.preview = w.Button(description="Preview", icon="eye")
        self.test_to = w.Text(placeholder="test-send to (your address)")
        self.test_send = w.Button(description="Test send", icon="paper-plane")
        self.run_now = w.Button(description="Run now", icon="play")
        self.mail = w.HTML()
        self.history = w.HTML()
        self._loading = False

        guard = guarded(self.output, self.status)
        self.pick.observe(guard(self._on_pick), names="value")
        self.report.observe(guard(self._on_report), names="value")
        self.path.observe(guard(self._on_report), names="value")
        self.cron.observe(guard(self._on_schedule), names="value")
        self.timezone.observe(guard(self._on_schedule), names="value")
        self.save.on_click(guard(self._on_save))
        self.preview.on_click(guard(self._on_preview))
        self.test_send.on_click(guard(self._on_test_send))
        self.run_now.on_click(guard(self._on_run_now))

        super().__init__(
            [
                w.HTML("<h3>Report subscriptions</h3>"),
                self.pick,
                self.name,
                self.description,
                self.report,
                self.path,
                w.HTML("<b>Parameters</b> <small>(empty: the report's default)</small>"),
                self.parameters,
                self.recipients,
                self.cron,
                self.timezone,
                self.next_runs,
                self.locale,
                self.account,
                self.template,
                self.owner,
                self.formats,
                self.skip_if_empty,
                w.HBox([self.save, self.preview, self.test_to, self.test_send, self.run_now]),
                self.status,
                self.mail,
                w.HTML("<b>Run history</b>"),
                self.history,
                self.output,
            ]
        )
        guard(self.refresh)()
        guard(self._load)()

    @staticmethod
    def _timezones() -> list[str]:
        import zoneinfo

        return sorted(zoneinfo.available_timezones())

    # --- reading the store ----------------------------------------------------------------

    def refresh(self) -> None:
        """Reload the pickers (subscriptions, accounts, report templates) from the store."""
        subs = [s.name for s in model.list_subscriptions(self.ws)]
        current = self.pick.value
        self._loading = True
        try:
            self.pick.options = [NEW, *subs]
            self.pick.value = current if current in subs else NEW
            self.account.options = [a.name for a in accounts.list_accounts(self.ws)]
            templates = [t.name for t in catalog.list_templates(self.ws, "report")]
            self.template.options = templates
            if model.DEFAULT_TEMPLATE in templates:
                self.template.value = model.DEFAULT_TEMPLATE
        finally:
            self._loading = False

    def _notebook(self) -> str:
        return self.path.value.strip() if self.report.value == PATH else str(self.report.value)

    def _show_parameters(self, values: dict[str, Any] | None = None) -> None:
        """One input per parameter of the report's ``parameters`` cell (``home`` aside)."""
        self.path.layout.display = "flex" if self.report.value == PATH else "none"
        self.param_inputs = {}
        self.parameters.children = ()
        if self.report.value == PATH and not self.path.value.strip():
            return
        declared = notebooks.report_parameters(self._notebook())
        rows = []
        for name, info in declared.items():
            if name in model.RESERVED_PARAMETERS:
                continue
            given = (values or {}).get(name)
            box = w.Text(
                description=name,
                value=_text_of(given),
                placeholder=f"default {info.get('default')}",
                style=_STYLE,
            )  # fmt: skip
            self.param_inputs[name] = box
            hint = w.HTML(f"<small>{html.escape(info.get('help') or '')}</small>")
            rows.append(w.HBox([box, hint]))
        self.parameters.children = rows

    def _parameter_values(self) -> dict[str, Any]:
        return {k: _value(b.value) for k, b in self.param_inputs.items() if b.value.strip()}

    def _load(self) -> None:
        self._loading = True
        try:
            editing = self.pick.value != NEW
            self.name.disabled = editing
            values: dict[str, Any] = {}
            if editing:
                s = model.get_subscription(self.ws, self.pick.value)
                self.name.value = s.name
                self.description.value = s.description or ""
                bundled = notebooks.bundled_reports_dir()
                nb = Path(s.notebook)
                if nb.parent == bundled and nb.stem in self.report.options:
                    self.report.value, self.path.value = nb.stem, ""
                else:
                    self.report.value, self.path.value = PATH, s.notebook
                values = dict(s.parameters)
                self.recipients.value = _recipients_text(s)
                self.cron.value, self.timezone.value = s.cron, s.timezone
                self.locale.value = s.locale
                self.account.value = s.account if s.account in self.account.options else None
                self.template.value = s.template if s.template in self.template.options else None
                self.owner.value = s.owner
                self.formats.value = tuple(s.formats)
                self.skip_if_empty.value = s.skip_if_empty
            else:
                for box in (self.name, self.description, self.recipients, self.owner, self.path):
                    box.value = ""
                self.formats.value = ("html_body",)
                self.skip_if_empty.value = False
                self.locale.value = model.DEFAULT_LOCALE
        finally:
            self._loading = False
        self.mail.value = ""
        self._show_parameters(values)
        self._on_schedule(None)
        self._history()

    def _history(self) -> None:
        if self.pick.value == NEW:
            self.history.value = "<i>no runs yet</i>"
            return
        df = runs.list_runs(self.ws, self.pick.value, limit=HISTORY_ROWS)
        if df.empty:
            self.history.value = "<i>no runs yet</i>"
            return
        shown = df[_HISTORY_COLUMNS].astype(object)
        shown = shown.where(shown.notna(), "").rename(columns={"slot": "slot (UTC)"})
        self.history.value = shown.to_html(
            index=False, escape=True, classes="sysmail-runs", border=1
        )

    # --- callbacks --------------------------------------------------------------------------

    def _on_pick(self, _change: Any) -> None:
        if not self._loading:
            self.status.value = ""
            self._load()

    def _on_report(self, _change: Any) -> None:
        if not self._loading:
            keep = self._parameter_values()
            self.parameters.children = ()
            self._show_parameters(keep)

    def _on_schedule(self, _change: Any) -> None:
        """The next five run times, as the admin reads them, while typing."""
        if self._loading:
            return
        try:
            expr = schedule.check_cron(self.cron.value)
            tz = schedule.check_timezone(self.timezone.value)
        except ValidationError as exc:
            message(self.next_runs, str(exc), "error")
            return
        slots = schedule.next_slots(expr, tz, utcnow(), 5)
        items = "".join(f"<li>{html.escape(schedule.local_label(s, tz))}</li>" for s in slots)
        self.next_runs.value = f"<small>Next runs:</small><ol class='sysmail-next'>{items}</ol>"

    def _values(self) -> dict[str, Any]:
        return {
            "notebook": str(notebooks.resolve_notebook(self._notebook())),
            "recipients": parse_recipients(self.recipients.value),
            "cron": self.cron.value,
            "timezone": self.timezone.value.strip(),
            "locale": self.locale.value.strip() or model.DEFAULT_LOCALE,
            "account": self.account.value or "",
            "template": self.template.value or model.DEFAULT_TEMPLATE,
            "owner": self.owner.value.strip(),
            "parameters": self._parameter_values(),
            "formats": list(self.formats.value),
            "skip_if_empty": self.skip_if_empty.value,
            "description": self.description.value.strip() or None,
        }

    def _draft(self) -> model.Subscription:
        """The subscription as typed, checked as a save would (nothing written)."""
        values = self._values()
        if not values["recipients"]:
            raise ValidationError("add at least one recipient (one address per line)")
        name = self.name.value if self.pick.value == NEW else self.pick.value
        return drafts.check_draft(self.ws, name, **values)

    def _on_save(self, _button: Any) -> None:
        self._draft()  # every check before anything is written
        values = self._values()
        if self.pick.value == NEW:
            s = model.add_subscription(self.ws, self.name.value.strip(), **values)
            verb = "saved"
        else:
            s = model.edit_subscription(self.ws, self.pick.value, **values)
            verb = "updated"
        self.refresh()
        self._loading = True
        try:
            self.pick.value = s.name
        finally:
            self._loading = False
        self._load()
        first = model.next_runs(s, 1)
        when = schedule.local_label(first[0], schedule.check_timezone(s.timezone)) if first else "-"
        text = f"{verb} {s.name}: {len(s.recipients)} recipient(s), next run {when}"
        message(self.status, text, "ok")

    def _saved(self) -> str:
        if self.pick.value == NEW:
            raise ValidationError("save the subscription first")
        return str(self.pick.value)

    def _on_preview(self, _button: Any) -> None:
        """The mail of the first recipient, from what is typed (saved or not); nothing sent."""
        draft = self._draft()
        name = draft.name
        message(self.status, f"running {name}'s report for a preview...", "info")
        result = runs.preview(self.ws, draft)
        emls = sorted(Path(result.preview_dir or "").glob("*.eml"))
        if not emls:
            message(self.status, f"nothing was composed: {result.summary()}", "error")
            return
        self.mail.value = _show_mail(emls[0].read_bytes())
        message(self.status, f"preview of {name} (not sent): {emls[0]}", "ok")

    def _on_test_send(self, _button: Any) -> None:
        """The report run now and mailed to one address only, from what is typed."""
        to = self.test_to.value.strip()
        if not to:
            raise ValidationError("type the address to test-send to")
        result = runs.test_send(self.ws, self._draft(), to)
        bad = result.counts.get("failed") or result.counts.get("deferred")
        message(self.status, f"test send to {to}: {result.summary()}", "error" if bad else "ok")
        self._history()

    def _on_run_now(self, _button: Any) -> None:
        name = self._saved()
        r = runs.run_now(self.ws, name)
        self._history()
        message(self.status, r.summary(), "error" if runs.not_delivered([r]) else "ok")


def _show_mail(raw: bytes) -> str:
    """A composed message: headers, the HTML in a sandboxed iframe, the attachments."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    head = "".join(
        f"<div><b>{h}:</b> {html.escape(str(msg.get(h, '')))}</div>"
        for h in ("From", "To", "Subject")
    )
    body = msg.get_body(preferencelist=("html", "plain"))
    content = body.get_content() if body is not None else ""
    if body is not None and body.get_content_type() == "text/plain":
        content = f"<pre>{html.escape(content)}</pre>"
    csp = "default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'"
    doc = f'<meta http-equiv="Content-Security-Policy" content="{csp}">{content}'
    files = [
        html.escape(part.get_filename() or "")
        for part in msg.iter_attachments()
        if part.get_filename()
    ]
    listed = f"<div><b>Attachments:</b> {', '.join(files)}</div>" if files else ""
    return (
        f'<div class="sysmail-mail">{head}{listed}<iframe sandbox="" '
        f'srcdoc="{html.escape(doc, quote=True)}" '
        'style="width:100%;height:26em;border:1px solid #ccc;background:#fff"></iframe></div>'
    )
