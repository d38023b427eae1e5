"""The sending log and archive explorer: filter, page, open a row, "did X get it?".

The forms call ``analytics.explore``: every click asks DuckDB for one page and
closes the store again, so the log is never loaded whole and no connection
stays open between clicks. An archived message is shown as text, as its raw
source, or as HTML in a sandboxed iframe: ``sandbox`` without
``allow-scripts`` (no script runs, no form posts, no navigation of the page,
no automatic refresh), and a Content-Security-Policy that lets no remote
image, style sheet or font load (``default-src 'none'``); ``cid:`` images of
the message itself are inlined as ``data:`` URIs first.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from sysmail_ops.analytics import explore
from sysmail_ops.config import accounts as accounts_api
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.records import sendlog
from sysmail_ops.records.suppression import get_entry as suppression_entry
from sysmail_ops.widgets.common import guarded, message, status_line

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CSP",
    "ArchiveExplorer",
    "LogExplorer",
    "archive_explorer",
    "log_explorer",
    "sandboxed_iframe",
]

ANY = "(any)"
CSP = "default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'"
_STYLE = {"description_width": "7em"}
_NARROW = w.Layout(width="16em")
_WIDE = w.Layout(width="26em")
_CSS = """<style>
.sysmail-rows select { font-family: monospace; font-size: 12px; }
.sysmail-table { border-collapse: collapse; font-size: 12px; }
.sysmail-table th, .sysmail-table td { border-bottom: 1px solid #ddd; padding: 2px 6px;
  text-align: left; vertical-align: top; }
.sysmail-pre { white-space: pre-wrap; font-size: 12px; max-height: 40em; overflow: auto; }
</style>"""
_MAX_SOURCE = 200_000  # characters of raw source shown


def log_explorer(home: str | None = None, page_size: int = 25) -> LogExplorer:
    """The sending log explorer on the workspace ``home`` (None: $SYSMAIL_HOME)."""
    return LogExplorer(Workspace.open(home), page_size=page_size)


def archive_explorer(home: str | None = None, page_size: int = 25) -> ArchiveExplorer:
    """The archive explorer (sent and received mail, by object) on ``home``."""
    return ArchiveExplorer(Workspace.open(home), page_size=page_size)


def sandboxed_iframe(document: str, *, height: str = "420px") -> str:
    """An ``<iframe>`` showing ``document`` (a mail's HTML) with no scripts and no remote loads.

    The document is put after a CSP ``<meta>`` in a head of its own and the
    whole is escaped into ``srcdoc`` (``&``, ``<``, ``>``, both quotes), so the
    mail cannot close the attribute or the frame.
    """
    page = (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="referrer" content="no-referrer"><base target="_self"></head>'
        f"<body>{document}</body></html>"
    )
    return (
        f'<iframe sandbox="" referrerpolicy="no-referrer" srcdoc="{html.escape(page, quote=True)}"'
        f' style="width:100%;height:{height};border:1px solid #ccc;background:#fff"></iframe>'
    )


def _cell(value: Any) -> str:
    import pandas as pd

    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or getattr(value, "ndim", 0) == 1:  # a list column
        return ", ".join(str(v) for v in value)
    if pd.isna(value):
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def html_table(df: pd.DataFrame, columns: list[str] | None = None) -> str:
    """A small escaped HTML table of ``df``."""
    cols = columns or [str(c) for c in df.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r[c]))}</td>" for c in cols) + "</tr>"
        for r in df.to_dict("records")
    )
    return f'<table class="sysmail-table"><tr>{head}</tr>{body}</table>'


def _fields(pairs: list[tuple[str, Any]]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_cell(v))}</td></tr>" for k, v in pairs
    )
    return f'<table class="sysmail-table">{rows}</table>'


def _short(text: Any, n: int) -> str:
    s = _cell(text).replace("\n", " ")
    return s if len(s) <= n else s[: n - 1] + "\u2026"


class MessageView(w.VBox):
    """One archived message: headers, then text, HTML (sandboxed) or raw source."""

    def __init__(self) -> None:
        self.mode = w.ToggleButtons(options=["Text", "HTML", "Source"], value="Text")
        self.headers = w.HTML()
        self.body = w.HTML()
        self.raw: bytes | None = None
        self.rendered: explore.RenderedMail | None = None
        self.mode.observe(lambda _: self._show(), names="value")
        super().__init__([self.headers, self.mode, self.body])
        self.show(None)

    def show(self, raw: bytes | None, note: str = "") -> None:
        self.raw = raw
        self.rendered = explore.render_message(raw) if raw is not None else None
        self._show(note)

    def _show(self, note: str = "") -> None:
        mail = self.rendered
        if mail is None or self.raw is None:
            self.headers.value = f"<i>{html.escape(note or 'no archived message')}</i>"
            self.body.value = ""
            self.mode.layout.display = "none"
            return
        self.mode.layout.display = None
        problems = "".join(f"<div><i>{html.escape(p)}</i></div>" for p in mail.problems)
        files = "".join(
            f"<div>attachment: {html.escape(n)} ({html.escape(t)}, {s:,} bytes)</div>"
            for n, t, s in mail.attachments
        )
        self.headers.value = _fields(list(mail.headers)) + files + problems
        if self.mode.value == "HTML":
            if mail.html is None:
                self.body.value = "<i>this message has no HTML part</i>"
            else:
                self.body.value = sandboxed_iframe(mail.html)
        elif self.mode.value == "Source":
            source = self.raw.decode("utf-8", "replace")
            cut = len(source) > _MAX_SOURCE
            shown = html.escape(source[:_MAX_SOURCE]) + ("\n[\u2026 cut]" if cut else "")
            self.body.value = f'<pre class="sysmail-pre">{shown}</pre>'
        else:
            text = mail.text
            if text is None and mail.html is not None:
                from sysmail_ops.templates.render import html_to_text

                text = html_to_text(mail.html)
            self.body.value = f'<pre class="sysmail-pre">{html.escape(text or "")}</pre>'


class LogExplorer(w.VBox):
    """Filters, a paged list of log rows, the details of the row picked, and "did X get it?"."""

    def __init__(self, ws: Workspace, page_size: int = 25, count_cap: int = explore.COUNT_CAP):
        self.ws = ws
        self.page_size = page_size
        self.count_cap = count_cap  # rows counted at most; beyond: "more than ..."
        self.page_no = 1
        self.filter = explore.LogFilter()
        self.page: explore.Page | None = None
        self.output = w.Output()
        self.status = status_line()

        self.since = w.Text(description="Since", placeholder="7d, 24h or 2026-03-01",
                            layout=_NARROW, style=_STYLE)  # fmt: skip
        self.until = w.Text(description="Until", placeholder="(now)", layout=_NARROW,
                            style=_STYLE)  # fmt: skip
        self.account = w.Dropdown(description="Account", options=[ANY], layout=_NARROW,
                                  style=_STYLE)  # fmt: skip
        self.status_pick = w.Dropdown(description="Status", options=[ANY, *sendlog.STATUSES],
                                      layout=_NARROW, style=_STYLE)  # fmt: skip
        self.use_case = w.Dropdown(description="Use case", options=[ANY, *sendlog.USE_CASES],
                                   layout=_NARROW, style=_STYLE)  # fmt: skip
        self.template = w.Text(description="Template", layout=_NARROW, style=_STYLE)
        self.to = w.Text(description="To", placeholder="ann@example.com or example.com",
                         layout=_WIDE, style=_STYLE)  # fmt: skip
        self.key = w.Text(description="Key", placeholder="delivery key", layout=_WIDE,
                          style=_STYLE)  # fmt: skip
        self.search = w.Button(description="Search", button_style="primary", icon="search")
        self.prev = w.Button(description="Previous", icon="arrow-left", disabled=True)
        self.next = w.Button(description="Next", icon="arrow-right", disabled=True)
        self.counts = w.HTML()
        self.rows = w.Select(options=[], rows=min(page_size, 15), layout=w.Layout(width="100%"))
        self.rows.add_class("sysmail-rows")
        self.details = w.HTML()
        self.message = MessageView()

        self.who = w.Text(description="Address", placeholder="ann@example.com", layout=_WIDE,
                          style=_STYLE)  # fmt: skip
        self.who_since = w.Text(description="Since", placeholder="30d", layout=_NARROW,
                                style=_STYLE)  # fmt: skip
        self.check = w.Button(description="Did they get it?", icon="question")
        self.answer = w.HTML()

        guard = guarded(self.output, self.status)
        self.search.on_click(guard(self._on_search))
        self.prev.on_click(guard(self._on_prev))
        self.next.on_click(guard(self._on_next))
        self.rows.observe(guard(self._on_row), names="value")
        self.check.on_click(guard(self._on_check))

        filters = w.VBox([
            w.HBox([self.since, self.until, self.account]),
            w.HBox([self.status_pick, self.use_case, self.template]),
            w.HBox([self.to, self.key]),
            w.HBox([self.search, self.prev, self.next, self.counts]),
        ])  # fmt: skip
        super().__init__([
            w.HTML(_CSS), w.HTML("<h3>Sending log</h3>"), filters, self.status, self.rows,
            w.HTML("<h4>Details</h4>"), self.details, self.message,
            w.HTML("<h4>Did they get it?</h4>"), w.HBox([self.who, self.who_since, self.check]),
            self.answer, self.output,
        ])  # fmt: skip
        guard(self.refresh)()

    def refresh(self) -> None:
        """Reload the account list and show the first page."""
        names = [a.name for a in accounts_api.list_accounts(self.ws)]
        keep = self.account.value
        self.account.options = [ANY, *names]
        self.account.value = keep if keep in self.account.options else ANY
        self._on_search()

    def _value(self, widget: w.ValueWidget) -> Any:
        value = widget.value
        return None if value in (ANY, "") else value

    def _on_search(self, _: Any = None) -> None:
        self.filter = explore.log_filter(
            since=self._value(self.since),
            until=self._value(self.until),
            account=self._value(self.account),
            status=self._value(self.status_pick),
            use_case=self._value(self.use_case),
            template=self._value(self.template),
            to=self._value(self.to),
            key=self._value(self.key),
        )
        self.page_no = 1
        self._load()

    def _on_prev(self, _: Any = None) -> None:
        self.page_no = max(1, self.page_no - 1)
        self._load(recount=False)

    def _on_next(self, _: Any = None) -> None:
        self.page_no += 1
        self._load(recount=False)

    def _load(self, recount: bool = True) -> None:
        # a capped count ("more than 1,000") is counted again further on; an exact one is kept
        exact = self.page is not None and not self.page.capped
        known = self.page.total if exact and not recount and self.page else None
        page = explore.log_page(
            self.ws,
            self.filter,
            self.page_no,
            self.page_size,
            total=known,
            count_cap=self.count_cap,
        )
        if page.total and not len(page.rows) and self.page_no > page.pages:
            self.page_no = page.pages
            page = explore.log_page(
                self.ws, self.filter, self.page_no, self.page_size, count_cap=self.count_cap
            )
        self.page = page
        self.counts.value = html.escape(page.describe())
        self.prev.disabled = page.page <= 1
        self.next.disabled = not page.has_next
        options = [(self._line(r), int(r["id"])) for r in page.rows.to_dict("records")]
        self.rows.value = None  # first: new options would otherwise select (and open) row 1
        self.rows.options = options
        message(self.status, page.describe(), "info")

    @staticmethod
    def _line(r: dict[Any, Any]) -> str:
        code = _cell(r["smtp_code"])
        return (
            f"#{int(r['id']):<8} {_cell(r['queued_at'])}  {_short(r['account'], 12):<12} "
            f"{_short(r['recipient'], 30):<30} {_short(r['status'], 10):<10} {code:>3} "
            f"try {int(r['attempt'])}  {_short(r['template'], 14):<14} {_short(r['subject'], 40)}"
        )

    def _on_row(self, change: Any = None) -> None:
        log_id = self.rows.value
        if log_id is None:
            return
        self.open_row(int(log_id))

    def open_row(self, log_id: int) -> explore.LogDetails:
        """Show the details of log row ``log_id``."""
        d = explore.log_details(self.ws, log_id)
        r = d.row
        pairs = [(k, r.get(k)) for k in (
            "id", "status", "recipient", "account", "template", "template_version", "use_case",
            "subject", "delivery_key", "message_id", "related_type", "related_id", "queued_at",
            "sent_at", "smtp_phase", "smtp_code", "smtp_reply", "attempt", "batch_id",
        )]  # fmt: skip
        self.details.value = (
            _fields(pairs)
            + "<div><b>Every attempt</b></div>"
            + html_table(d.attempts)
            + (f"<div><i>{html.escape(d.archive_error)}</i></div>" if d.archive_error else "")
        )
        note = "" if d.archive else "the message is not archived (sent archiving off, or not sent)"
        self.message.show(d.raw, note=d.archive_error or note)
        return d

    def _on_check(self, _: Any = None) -> None:
        address = (self.who.value or "").strip()
        mails = explore.did_they_get_it(self.ws, address, since=self._value(self.who_since))
        line = explore.verdict(address, mails)
        entry = suppression_entry(self.ws, address)
        listed = ""
        if entry:
            since = f"{entry.created_at:%Y-%m-%d}"
            listed = (
                f"<div>on the suppression list since {since} ({html.escape(entry.reason)})</div>"
            )
        cols = ["first_queued_at", "account", "template", "subject", "outcome", "attempts",
                "smtp_code", "smtp_reply", "sent_at", "log_id", "archived"]  # fmt: skip
        self.answer.value = f"<div><b>{html.escape(line)}</b></div>{listed}" + (
            html_table(mails, cols) if not mails.empty else ""
        )
        message(self.status, line, "ok" if not mails.empty else "info")


class ArchiveExplorer(w.VBox):
    """Archived mail, sent and received: filter by object, address, account; open one."""

    def __init__(self, ws: Workspace, page_size: int = 25):
        self.ws = ws
        self.page_size = page_size
        self.page_no = 1
        self.filter = explore.ArchiveFilter()
        self.page: explore.Page | None = None
        self.output = w.Output()
        self.status = status_line()
        self.obj = w.Text(description="Object", placeholder="case:42", layout=_NARROW,
                          style=_STYLE)  # fmt: skip
        self.direction = w.Dropdown(description="Direction", options=[ANY, *explore.DIRECTIONS],
                                    layout=_NARROW, style=_STYLE)  # fmt: skip
        self.account = w.Dropdown(description="Account", options=[ANY], layout=_NARROW,
                                  style=_STYLE)  # fmt: skip
        self.address = w.Text(description="Address", placeholder="from, to or cc",
                              layout=_WIDE, style=_STYLE)  # fmt: skip
        self.subject = w.Text(description="Subject", placeholder="contains", layout=_WIDE,
                              style=_STYLE)  # fmt: skip
        self.since = w.Text(description="Since", placeholder="30d", layout=_NARROW,
                            style=_STYLE)  # fmt: skip
        self.search = w.Button(description="Search", button_style="primary", icon="search")
        self.prev = w.Button(description="Previous", icon="arrow-left", disabled=True)
        self.next = w.Button(description="Next", icon="arrow-right", disabled=True)
        self.counts = w.HTML()
        self.rows = w.Select(options=[], rows=min(page_size, 15), layout=w.Layout(width="100%"))
        self.rows.add_class("sysmail-rows")
        self.details = w.HTML()
        self.message = MessageView()
        guard = guarded(self.output, self.status)
        self.search.on_click(guard(self._on_search))
        self.prev.on_click(guard(self._on_prev))
        self.next.on_click(guard(self._on_next))
        self.rows.observe(guard(self._on_row), names="value")
        super().__init__([
            w.HTML(_CSS), w.HTML("<h3>Email archive</h3>"),
            w.HBox([self.obj, self.direction, self.account]),
            w.HBox([self.address, self.since]), w.HBox([self.subject]),
            w.HBox([self.search, self.prev, self.next, self.counts]), self.status, self.rows,
            self.details, self.message, self.output,
        ])  # fmt: skip
        guard(self.refresh)()

    def refresh(self) -> None:
        names = [a.name for a in accounts_api.list_accounts(self.ws)]
        keep = self.account.value
        self.account.options = [ANY, *names]
        self.account.value = keep if keep in self.account.options else ANY
        self._on_search()

    def _on_search(self, _: Any = None) -> None:
        def val(widget: w.ValueWidget) -> Any:
            return None if widget.value in (ANY, "") else widget.value

        self.filter = explore.archive_filter(
            related=val(self.obj),
            direction=val(self.direction),
            account=val(self.account),
            address=val(self.address),
            subject=val(self.subject),
            since=val(self.since),
        )
        self.page_no = 1
        self._load()

    def _on_prev(self, _: Any = None) -> None:
        self.page_no = max(1, self.page_no - 1)
        self._load()

    def _on_next(self, _: Any = None) -> None:
        self.page_no += 1
        self._load()

    def _load(self) -> None:
        # one object's conversation reads best oldest first; everything else newest first
        oldest = self.filter.related is not None
        page = explore.archive_page(
            self.ws, self.filter, self.page_no, self.page_size, oldest_first=oldest
        )
        self.page = page
        self.counts.value = html.escape(page.describe())
        self.prev.disabled = page.page <= 1
        self.next.disabled = page.page >= page.pages
        self.rows.value = None  # first: new options would otherwise select (and open) row 1
        self.rows.options = [
            (
                f"{_cell(r['date'])}  {_short(r['direction'], 8):<8} "
                f"{_short(r['account'], 12):<12} {_short(r['from_addr'], 26):<26} "
                f"{_short(_cell(r['to_addrs']), 30):<30} {_short(r['subject'], 50)}",
                str(r["id"]),
            )
            for r in page.rows.to_dict("records")
        ]
        message(self.status, page.describe(), "info")

    def _on_row(self, change: Any = None) -> None:
        if self.rows.value is not None:
            self.open_message(str(self.rows.value))

    def open_message(self, archive_id: str) -> None:
        """Show archived message ``archive_id``."""
        from sysmail_ops.errors import SysmailError
        from sysmail_ops.records import archive

        entry = archive.get_entry(self.ws, archive_id)
        self.details.value = _fields([(k, entry.get(k)) for k in (
            "id", "direction", "account", "date", "from_addr", "to_addrs", "cc_addrs",
            "subject", "related_type", "related_id", "delivery_key", "size_bytes",
        )])  # fmt: skip
        try:
            self.message.show(archive.raw_message(self.ws, archive_id))
        except SysmailError as exc:
            self.message.show(None, note=str(exc))
