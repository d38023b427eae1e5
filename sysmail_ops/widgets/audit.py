"""The Audit page: who changed which configuration, when, from where (``store.audit``).

A read-only view, also served by a ``--read-only`` console: filters (period,
kind, name) and a table of the newest changes. Values come from the audit
table, which never holds a secret's value; every cell is HTML-escaped.
"""

from __future__ import annotations

import html

import ipywidgets as w

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.store import access, audit
from sysmail_ops.widgets.common import guarded, status_line

__all__ = ["KINDS", "AuditTrail", "audit_trail"]

KINDS = ("account", "template", "subscription", "rule", "campaign", "role", "setting", "console")
ALL = "(all)"
LIMIT = 200
_STYLE = {"description_width": "6em"}


def audit_trail(home: str | None = None) -> AuditTrail:
    """The Audit page on the workspace ``home`` (None: $SYSMAIL_HOME)."""
    return AuditTrail(Workspace.open(home))


class AuditTrail(w.VBox):
    """Filters and the table of the newest audited changes."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.output = w.Output()
        self.status = status_line()
        self.since = w.Text(
            description="Since",
            placeholder="7d, 24h or 2026-11-30 (empty: all)",
            continuous_update=False,  # applied when Enter is pressed or the field is left
            style=_STYLE,
            layout=w.Layout(width="24em"),
        )
        self.kind = w.Dropdown(description="Kind", options=[ALL, *KINDS], style=_STYLE)
        self.name = w.Text(description="Name", placeholder="any", style=_STYLE)
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.count = w.HTML()
        self.table = w.HTML()
        mode = (
            '<p class="sysmail-read-only"><b>Read-only console</b>: changes and sending are '
            "switched off here.</p>"
            if access.read_only()
            else ""
        )
        super().__init__(
            [
                w.HTML(f"<h3>Audit trail</h3>{mode}"),
                w.HBox([self.since, self.kind, self.name, self.refresh_button]),
                self.status,
                self.count,
                self.table,
                self.output,
            ]
        )
        guard = guarded(self.output, self.status)
        self.refresh_button.on_click(guard(lambda _b: self.refresh()))
        self.kind.observe(guard(lambda _c: self.refresh()), names="value")
        self.since.observe(guard(lambda _c: self.refresh()), names="value")
        guard(self.refresh)()

    def refresh(self) -> None:
        """Reload the table with the current filters (a bad period is one line in the form)."""
        self.status.value = ""
        kind = None if self.kind.value == ALL else self.kind.value
        entries = audit.list_entries(
            self.ws.store,
            since=self.since.value.strip() or None,
            kind=kind,
            name=self.name.value.strip() or None,
            limit=LIMIT,
        )
        rows = []
        for e in entries:
            cells = [
                e.changed_at.strftime("%Y-%m-%d %H:%M:%S"),
                e.actor,
                e.source,
                f"{e.object_kind} {e.object_name}",
                e.action,
                e.summary,
            ]
            rows.append(
                "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"
            )
        head = "".join(
            f"<th>{h}</th>" for h in ("When (UTC)", "Who", "Where", "What", "Action", "Changes")
        )
        body = "".join(rows) or '<tr><td colspan="6">no change recorded</td></tr>'
        self.count.value = f"{len(entries)} change(s)" + (
            f", the newest {LIMIT}" if len(entries) == LIMIT else ""
        )
        self.table.value = (
            '<table class="sysmail-audit" style="border-collapse:collapse" border="1" '
            f'cellpadding="4"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        )
