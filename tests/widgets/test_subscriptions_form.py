"""The report subscriptions form driven from Python: parameters from the report's cell,
recipients with their own parameters, the next five runs, save, preview (a real kernel)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import bind
from report_fixtures import write_echo_report
from smtp_testserver import SMTPTestServer

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import ValidationError
from sysmail_ops.subscriptions import model
from sysmail_ops.widgets.subscriptions import PATH, SubscriptionManagement, parse_recipients


def test_parse_recipients() -> None:
    assert parse_recipients("ana@example.com region=APAC rows=2\n\n# x\nbo@example.com") == [
        {"address": "ana@example.com", "parameters": {"region": "APAC", "rows": 2}},
        {"address": "bo@example.com", "parameters": {}},
    ]
    with pytest.raises(ValidationError, match="line 1"):
        parse_recipients("ana@example.com region")


def test_parameters_and_next_runs_as_you_type(ws: Workspace) -> None:
    form = SubscriptionManagement(ws)
    form.report.value = "sales_pipeline"
    assert {"region", "owner", "data"} <= set(form.param_inputs)
    assert "home" not in form.param_inputs  # the runner passes the workspace
    assert "EMEA" in form.param_inputs["region"].placeholder
    form.timezone.value = "Europe/Berlin"
    form.cron.value = "0 8 * * mon"
    assert form.next_runs.value.count("<li>") == 5
    assert "08:00 CE" in form.next_runs.value  # CET or CEST
    form.cron.value = "0 8 * *"
    assert "sysmail-error" in form.next_runs.value
    form.timezone.value = "Mars/Olympus"
    assert "sysmail-error" in form.next_runs.value


def test_create_and_preview(ws: Workspace, smtp_server: SMTPTestServer, tmp_path: Path) -> None:
    bind(ws, smtp_server)
    report = write_echo_report(tmp_path)
    form = SubscriptionManagement(ws)
    form.pick.value = "(new subscription)"
    form.name.value = "rows"
    form.report.value = PATH
    form.path.value = str(report)
    assert set(form.param_inputs) == {"region", "rows", "fail"}
    form.param_inputs["rows"].value = "2"
    form.recipients.value = "ana@example.com region=APAC\nbo@example.com"
    form.cron.value = "0 8 * * mon"
    form.timezone.value = "Europe/Berlin"
    form.account.value = "service"
    form.owner.value = "owner@example.com"
    form.formats.value = ("html_body", "csv")

    form.run_now.click()  # a slot run needs a saved subscription: one clear line
    assert "save the subscription first" in form.status.value

    form.preview.click()  # what is typed, before saving: nothing stored, nothing sent
    assert "preview of rows (not sent)" in form.status.value, form.status.value
    assert "2 rows for APAC" in form.mail.value and 'sandbox=""' in form.mail.value
    assert "rows.csv" in form.mail.value
    assert model.list_subscriptions(ws) == [] and smtp_server.messages == []

    form.save.click()
    assert "saved rows: 2 recipient(s)" in form.status.value, form.status.value
    s = model.get_subscription(ws, "rows")
    assert s.parameters == {"rows": 2} and s.formats == ("html_body", "csv")
    assert s.recipients[0].parameters == {"region": "APAC"}
    assert s.timezone == "Europe/Berlin" and s.account == "service"

    form.mail.value = ""
    form.param_inputs["rows"].value = "4"  # a preview shows the form, not the store
    form.preview.click()
    assert "4 rows for APAC" in form.mail.value, form.status.value
    assert model.get_subscription(ws, "rows").parameters == {"rows": 2}
    assert smtp_server.messages == []  # a preview sends nothing


def test_bad_input_writes_nothing(ws: Workspace, smtp_server: SMTPTestServer) -> None:
    bind(ws, smtp_server)
    form = SubscriptionManagement(ws)
    form.name.value = "weekly"
    form.report.value = "delivery_report"
    form.recipients.value = "not-an-address"
    form.account.value = "service"
    form.owner.value = "owner@example.com"
    form.save.click()
    assert "sysmail-error" in form.status.value
    form.recipients.value = ""
    form.save.click()
    assert "at least one recipient" in form.status.value
    assert model.list_subscriptions(ws) == []


def test_test_send_and_run_now(ws: Workspace, smtp_server: SMTPTestServer, tmp_path: Path) -> None:
    bind(ws, smtp_server)
    report = write_echo_report(tmp_path)
    model.add_subscription(
        ws, "rows", notebook=str(report), recipients=["ana@example.com"], cron="0 8 * * *",
        timezone="UTC", account="service", owner="owner@example.com",
    )  # fmt: skip
    form = SubscriptionManagement(ws)
    form.pick.value = "rows"
    assert form.report.value == PATH and form.path.value == str(report)
    assert form.recipients.value == "ana@example.com"
    form.test_send.click()
    assert "type the address" in form.status.value
    form.test_to.value = "me@example.com"
    form.test_send.click()
    assert "test send to me@example.com" in form.status.value and "1 sent" in form.status.value
    assert [m.rcpt_tos for m in smtp_server.messages] == [("me@example.com",)]
    form.run_now.click()
    assert "1 sent" in form.status.value and "sysmail-ok" in form.status.value, form.status.value
    assert "ana@example.com" in {r for m in smtp_server.messages for r in m.rcpt_tos}
    assert "succeeded" in form.history.value and "manual" in form.history.value


def test_the_locale_is_a_field_saved_checked_and_used_by_the_draft(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    bind(ws, smtp_server)
    form = SubscriptionManagement(ws)
    form.name.value = "weekly-de"
    form.report.value = "delivery_report"
    form.recipients.value = "ops@example.com"
    form.account.value = "service"
    form.owner.value = "owner@example.com"
    form.locale.value = "klingon"
    form.save.click()
    assert "sysmail-error" in form.status.value and "klingon" in form.status.value
    assert model.list_subscriptions(ws) == []

    form.locale.value = "de"
    assert form._draft().locale == "de"  # what Preview and Test send render with
    form.save.click()
    assert model.get_subscription(ws, "weekly-de").locale == "de"

    form.pick.value = "(new subscription)"
    assert form.locale.value == "en"
    form.pick.value = "weekly-de"
    assert form.locale.value == "de"
