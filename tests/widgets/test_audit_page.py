"""The Audit page driven from Python: the table lists the changes newest first, filters
work, a bad period is one line in the form, outside text is escaped, and a read-only
console says so."""

from __future__ import annotations

import pytest

from sysmail_ops.config import accounts, settings
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.store import access, audit
from sysmail_ops.widgets.audit import AuditTrail

PASSWORD = "Widget-Audit-Secret-1"


def test_the_table_lists_changes_and_filters(ws: Workspace) -> None:
    accounts.add_account(
        ws,
        "service",
        kind="customer_service",
        from_address="s@example.com",
        smtp_host="smtp.example.com",
        password=PASSWORD,
    )
    with audit.acting("console", "console session ab12cd34 from 127.0.0.1"):
        accounts.set_archiving(ws, "service", received=False)
    settings.set_setting(ws, "survey_quiet_days", 5)

    page = AuditTrail(ws)
    assert "3 change(s)" in page.count.value
    table = page.table.value
    assert table.index("setting survey_quiet_days") < table.index(
        "received_archiving: on -&gt; off"
    )
    assert "console session ab12cd34 from 127.0.0.1" in table and "<td>console</td>" in table
    assert PASSWORD not in table and "password set" in table
    assert "Read-only console" not in page.children[0].value

    page.kind.value = "account"  # applies at once
    assert "2 change(s)" in page.count.value and "survey_quiet_days" not in page.table.value
    page.name.value = "nobody"
    page.refresh_button.click()
    assert "no change recorded" in page.table.value

    page.since.value = "last tuesday"
    page.refresh_button.click()
    assert "--since takes 30m, 24h, 7d or an ISO date" in page.status.value
    page.since.value = "1h"
    page.name.value = ""
    page.refresh_button.click()
    assert page.status.value == "" and "2 change(s)" in page.count.value


def test_outside_text_is_escaped(ws: Workspace) -> None:
    with audit.acting("python", "<script>alert(1)</script>"):
        settings.set_setting(ws, "public_base_url", "https://mail.example.com/x")
    table = AuditTrail(ws).table.value
    assert "<script>" not in table and "&lt;script&gt;" in table


def test_a_read_only_console_says_so(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(access.ENV_READ_ONLY, "1")
    page = AuditTrail(ws)
    assert "Read-only console" in page.children[0].value
