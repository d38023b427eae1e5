"""The audit trail: every configuration change through the library is one row, in the
change's own transaction, naming who, where and what, and never a secret's value."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import write_echo_report

from sysmail_ops import flows as workflows
from sysmail_ops.campaigns import model as campaigns
from sysmail_ops.config import accounts, directory, settings
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import InUseError, LimitError, ValidationError
from sysmail_ops.records import received
from sysmail_ops.store import audit
from sysmail_ops.subscriptions import model as subscriptions
from sysmail_ops.templates import catalog as templates

PASSWORD = "Audit-Secret-Pa55word"
NEW_PASSWORD = "Second-Secret-W0rd"


def add_service(ws: Workspace, name: str = "service", **kw: Any) -> accounts.Account:
    spec: dict[str, Any] = {
        "kind": "customer_service",
        "from_address": "service@example.com",
        "smtp_host": "smtp.example.com",
        "password": PASSWORD,
    }
    spec.update(kw)
    return accounts.add_account(ws, name, **spec)


def entries(ws: Workspace, **kw: Any) -> list[audit.Entry]:
    return list(reversed(audit.list_entries(ws.store, **kw)))  # oldest first


def all_workspace_bytes(ws: Workspace) -> bytes:
    with ws.store.connect() as con:
        con.execute("CHECKPOINT")
    return b"".join(p.read_bytes() for p in ws.home.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password_enc", True),
        ("password_env", True),
        ("smtp_password", True),
        ("oauth_refresh_token_enc", True),
        ("client_secret", True),
        ("api_key", True),
        ("dkim_private_key", True),
        ("access_token", True),
        ("something_enc", True),
        ("survey_token_days", False),
        ("smtp_port", False),
        ("login", False),
        ("received_archiving", False),
        ("dkim_key_path", False),
        ("token_expires_at", False),
        ("public_base_url", False),
    ],
)
def test_secret_columns_are_told_by_their_name(name: str, secret: bool) -> None:
    assert audit.is_secret(name) is secret


def test_diff_names_a_secret_column_without_its_value_and_skips_bookkeeping() -> None:
    before = {"name": "a", "smtp_port": 587, "password_enc": "gAAAA-old", "updated_at": 1}
    after = {"name": "a", "smtp_port": 465, "password_enc": "gAAAA-new", "updated_at": 2}
    after["client_secret"] = "very-secret"  # a column added later by somebody else
    changes = audit.diff(before, after)
    assert [c.to_dict() for c in changes] == [
        {"field": "smtp_port", "old": 587, "new": 465},
        {"field": "password_enc", "secret": True},
        {"field": "client_secret", "secret": True},
    ]
    assert [c.describe() for c in changes] == [
        "smtp_port: 587 -> 465",
        "password changed",
        "client_secret changed",
    ]
    assert "gAAAA" not in json.dumps([c.to_dict() for c in changes])
    other = audit.diff(
        {"password_enc": None, "password_env": "env:X", "imap_password_enc": None},
        {"password_enc": "gAAAA-1", "password_env": None, "imap_password_enc": "gAAAA-2"},
    )
    assert [c.describe() for c in other] == ["password changed", "imap_password changed"]
    assert audit.secret_name("oauth_refresh_token_enc") == "oauth_refresh_token"


def test_account_add_edit_archiving_password_remove_from_python(ws: Workspace) -> None:
    add_service(ws)
    accounts.set_archiving(ws, "service", received=False)
    accounts.edit_account(ws, "service", smtp_port=2525, description="Front desk")
    accounts.edit_account(ws, "service", password=NEW_PASSWORD)
    accounts.edit_account(ws, "service", smtp_port=2525)  # no change: no row
    accounts.remove_account(ws, "service")

    rows = entries(ws)
    assert [(e.object_kind, e.object_name, e.action) for e in rows] == [
        ("account", "service", "add"),
        ("account", "service", "edit"),
        ("account", "service", "edit"),
        ("account", "service", "edit"),
        ("account", "service", "remove"),
    ]
    assert {(e.actor, e.source) for e in rows} == {(getpass.getuser(), "python")}
    add, archiving, edit, password, remove = rows
    assert add.summary == "password set"
    added = {c["field"]: c for c in add.changes}
    assert added["from_address"]["new"] == "service@example.com"
    assert added["password_enc"] == {"field": "password_enc", "secret": True}
    assert archiving.changes == [{"field": "received_archiving", "old": True, "new": False}]
    assert archiving.summary == "received_archiving: on -> off"
    assert {c["field"] for c in edit.changes} == {"smtp_port", "description"}
    assert password.summary == "password changed"
    assert password.changes == [{"field": "password_enc", "secret": True}]
    assert {c["field"]: c.get("old") for c in remove.changes}["smtp_port"] == 2525

    text = json.dumps([e.to_dict() for e in rows])
    assert PASSWORD not in text and NEW_PASSWORD not in text and "gAAAA" not in text
    data = all_workspace_bytes(ws)
    assert PASSWORD.encode() not in data and NEW_PASSWORD.encode() not in data


def test_a_password_reference_is_only_named(ws: Workspace) -> None:
    add_service(ws, password=None, password_ref="env:MAIL_PW")
    accounts.edit_account(ws, "service", password=PASSWORD)
    add, edit = entries(ws)
    assert "MAIL_PW" not in json.dumps(add.to_dict()) + json.dumps(edit.to_dict())
    assert edit.summary == "password changed"  # password_env and password_enc: told once


def test_a_refused_change_leaves_no_audit_row(ws: Workspace) -> None:
    for n in range(accounts.MAX_ACCOUNTS):
        add_service(ws, f"acc{n}")
    before = len(entries(ws))
    with pytest.raises(LimitError):
        add_service(ws, "eleventh")
    with pytest.raises(ValidationError):
        accounts.edit_account(ws, "acc0", smtp_port=70000)
    templates.add_template(ws, "t", object_type="case", subject="Hi", html="<p>{{ x }}</p>")
    workflows.add_rule(
        ws,
        "r",
        flow_type="workflow",
        flow_name="*",
        event="done",
        account="acc0",
        template="t",
        recipients=["ops@example.com"],
    )
    with pytest.raises(InUseError):  # refused inside the transaction: rolled back with it
        accounts.remove_account(ws, "acc0")
    with pytest.raises(InUseError):
        templates.remove_template(ws, "t")
    kinds = [(e.object_kind, e.action) for e in entries(ws)[before:]]
    assert kinds == [("template", "add"), ("rule", "add")]


def test_templates_rules_subscriptions_campaigns_roles_settings(
    ws: Workspace, tmp_path: Path
) -> None:
    add_service(ws)
    templates.add_template(ws, "case-closed", object_type="case", subject="Closed", html="<p>x</p>")
    templates.edit_template(ws, "case-closed", subject="Closed: {{ case_id }}")
    workflows.add_rule(
        ws,
        "closed",
        flow_type="workflow",
        flow_name="cases",
        event="closed",
        account="service",
        template="case-closed",
        recipients=["ops@example.com"],
    )
    workflows.edit_rule(ws, "closed", event="resolved")
    workflows.pause_rule(ws, "closed")
    workflows.remove_rule(ws, "closed")
    subscriptions.add_subscription(
        ws,
        "daily",
        notebook=str(write_echo_report(tmp_path)),
        recipients=["ana@example.com"],
        cron="0 8 * * *",
        timezone="Europe/Berlin",
        account="service",
        owner="owner@example.com",
    )
    subscriptions.edit_subscription(ws, "daily", cron="0 9 * * 1")
    subscriptions.set_enabled(ws, "daily", False)
    subscriptions.remove_subscription(ws, "daily")
    campaigns.add_campaign(ws, "fu", kind="follow_up", account="service", template="case-closed")
    campaigns.edit_campaign(ws, "fu", description="after closing")
    campaigns.remove_campaign(ws, "fu")
    templates.remove_template(ws, "case-closed")
    directory.add_entry(ws, "finance", "Fay", "fay@example.com")
    directory.remove_entry(ws, "finance", "fay@example.com")
    settings.set_setting(ws, "survey_token_days", 12)
    settings.set_setting(ws, "survey_token_days", "12")  # the same value: no row
    settings.reset_setting(ws, "survey_token_days")

    rows = entries(ws)[1:]  # after the account
    assert [(e.object_kind, e.object_name, e.action) for e in rows] == [
        ("template", "case-closed", "add"),
        ("template", "case-closed", "edit"),
        ("rule", "closed", "add"),
        ("rule", "closed", "edit"),
        ("rule", "closed", "pause"),
        ("rule", "closed", "remove"),
        ("subscription", "daily", "add"),
        ("subscription", "daily", "edit"),
        ("subscription", "daily", "pause"),
        ("subscription", "daily", "remove"),
        ("campaign", "fu", "add"),
        ("campaign", "fu", "edit"),
        ("campaign", "fu", "remove"),
        ("template", "case-closed", "remove"),
        ("role", "finance", "add member"),
        ("role", "finance", "remove member"),
        ("setting", "survey_token_days", "edit"),
        ("setting", "survey_token_days", "reset"),
    ]
    by = {(e.object_kind, e.action): e for e in rows}
    assert "subject: Closed -> Closed: {{ case_id }}" in by["template", "edit"].summary
    assert "version: 1 -> 2" in by["template", "edit"].summary
    assert by["rule", "edit"].summary == "event: closed -> resolved"
    assert by["subscription", "edit"].summary == "cron: 0 8 * * * -> 0 9 * * 1"
    assert by["subscription", "pause"].summary == "enabled: on -> off"
    assert by["setting", "edit"].summary == "was the default; survey_token_days: 30 -> 12"
    assert by["setting", "reset"].summary == "back to the default; survey_token_days: 12 -> 30"
    assert by["role", "add member"].changes[1] == {
        "field": "address",
        "old": None,
        "new": "fay@example.com",
    }


def test_a_long_template_body_is_kept_short(ws: Workspace) -> None:
    html = "<p>" + "x" * 10_000 + "</p>"
    templates.add_template(ws, "long", object_type="case", subject="Hi", html=html)
    (add,) = entries(ws, kind="template")
    body = {c["field"]: c["new"] for c in add.changes}["html"]
    assert body.endswith("(10,007 characters)") and len(body) < 400


def test_source_and_user_come_from_acting_then_the_environment(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with audit.acting("console", "alice@console"):
        add_service(ws, "a")
    monkeypatch.setenv(audit.ENV_SOURCE, "console")
    monkeypatch.setenv(audit.ENV_USER, "bob\x1b[31m")
    add_service(ws, "b")
    monkeypatch.setenv(audit.ENV_SOURCE, "nonsense")
    monkeypatch.delenv(audit.ENV_USER)
    add_service(ws, "c")
    assert [(e.object_name, e.actor, e.source) for e in entries(ws)] == [
        ("a", "alice@console", "console"),
        ("b", "bob [31m", "console"),  # no control character reaches a terminal later
        ("c", getpass.getuser(), "python"),
    ]
    with pytest.raises(ValidationError, match="unknown audit source"):
        audit.acting("web").__enter__()


def test_list_entries_filters_and_refuses_bad_input(ws: Workspace) -> None:
    add_service(ws, "a")
    settings.set_setting(ws, "survey_quiet_days", 3)
    assert [e.object_kind for e in audit.list_entries(ws.store)] == ["setting", "account"]
    assert [e.object_name for e in audit.list_entries(ws.store, kind="account")] == ["a"]
    assert len(audit.list_entries(ws.store, since="1h")) == 2
    assert audit.list_entries(ws.store, since="2999-01-01") == []
    assert len(audit.list_entries(ws.store, limit=1)) == 1
    for bad in ("yesterday", "7x", "", "2026-13-01"):
        with pytest.raises(ValidationError, match="--since takes"):
            audit.list_entries(ws.store, since=bad)
    with pytest.raises(ValidationError, match="--limit"):
        audit.list_entries(ws.store, limit=0)


def test_a_separate_imap_login_is_audited_with_its_password_only_named(ws: Workspace) -> None:
    add_service(ws)
    received.set_imap_credentials(ws, "service", login="inbox@example.com", password=NEW_PASSWORD)
    (entry,) = audit.list_entries(ws.store, limit=1)
    assert entry.action == "edit"
    assert entry.summary == "imap_login: (none) -> inbox@example.com; imap_password changed"
    assert NEW_PASSWORD not in json.dumps(entry.to_dict())
