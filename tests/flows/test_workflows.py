"""Post-action notifications end to end: rules, events, real aiosmtpd server, real store."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer

from sysmail_ops import flows as workflows
from sysmail_ops.config import accounts, directory
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.demo import approvals
from sysmail_ops.errors import InUseError, NotFoundError, SysmailError, ValidationError
from sysmail_ops.flows import events, notifications
from sysmail_ops.flows.microbatch import MicroBatcher
from sysmail_ops.records import archive, sendlog
from sysmail_ops.sending.batch import SendOptions
from sysmail_ops.templates import catalog as templates

FAST = SendOptions(backoff=0.01, max_attempts=1)


@pytest.fixture
def setup(ws: Workspace, smtp_server: SMTPTestServer) -> Workspace:
    """A workflow-notification account, two approval templates and a finance role."""
    bind(ws, smtp_server, "workflow", kind="workflow_notification")
    templates.add_template(
        ws,
        "approval-granted",
        object_type="approval",
        subject="Approved: {{ request }}",
        html="<p>{{ approver }} approved <b>{{ request }}</b> ({{ object_id }}).</p>",
    )
    templates.add_template(
        ws,
        "approval-rejected",
        object_type="approval",
        subject="Rejected: {{ request }}",
        html="<p>{{ approver }} rejected <b>{{ request }}</b>.</p>",
    )
    directory.add_entry(ws, "finance", "Fay Finance", "fay@example.com")
    directory.add_entry(ws, "finance", "Finn Finance", "finn@example.com")
    return ws


def rule(ws: Workspace, name: str, **kw: Any) -> workflows.Rule:
    spec: dict[str, Any] = {
        "flow_type": "approval_flow",
        "flow_name": "travel",
        "event": "approved",
        "account": "workflow",
        "template": "approval-granted",
        "recipients": ["field:applicant_email"],
    }
    spec.update(kw)
    return workflows.add_rule(ws, name, **spec)


def event(eid: str = "ev-1", **kw: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "id": eid,
        "flow_type": "approval_flow",
        "flow_name": "travel",
        "event": "approved",
        "object_type": "approval",
        "object_id": f"AP-{eid}",
        "occurred_at": "2026-11-28T10:00:00+01:00",
        "record": {
            "applicant_email": "eve@example.com",
            "request": "Travel to Lyon",
            "approver": "Ana",
            "amount": 1200,
        },
    }
    record = kw.pop("record", None)
    ev.update(kw)
    if record is not None:
        ev["record"] = {**ev["record"], **record}
    return ev


def received(server: SMTPTestServer) -> list[tuple[str, str]]:
    return sorted((m.rcpt_tos[0], str(m.message["Subject"])) for m in server.messages)


# --- matching -----------------------------------------------------------------------------


def test_rules_match_on_flow_type_flow_name_and_event(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    ws = setup
    rule(ws, "travel-approved", recipients=["field:applicant_email"])
    rule(ws, "any-approved", flow_name="*", recipients=["audit@example.com"])
    rule(ws, "travel-rejected", event="rejected", template="approval-rejected")
    rule(ws, "business-approved", flow_type="business_flow", recipients=["biz@example.com"])

    results = workflows.notify_many(
        ws,
        [
            event("1"),
            event("2", flow_name="purchase"),
            event("3", event="rejected"),
            event("4", event="node_entered"),
            event("5", flow_type="business_flow"),
        ],
        options=FAST,
    )
    assert [r.matched for r in results] == [
        ["any-approved", "travel-approved"],
        ["any-approved"],
        ["travel-rejected"],
        [],
        ["business-approved"],
    ]
    assert [r.status for r in results] == ["notified"] * 3 + ["no_match", "notified"]
    assert received(smtp_server) == [
        ("audit@example.com", "Approved: Travel to Lyon"),
        ("audit@example.com", "Approved: Travel to Lyon"),
        ("biz@example.com", "Approved: Travel to Lyon"),
        ("eve@example.com", "Approved: Travel to Lyon"),
        ("eve@example.com", "Rejected: Travel to Lyon"),
    ]
    assert results[0].sends[1] == workflows.SendStatus(
        "travel-approved", "eve@example.com", "event:1:rule:travel-approved:eve@example.com", "sent"
    )
    log = sendlog.list_logs(ws, limit=None)
    assert set(log["use_case"]) == {"approval_flow", "business_flow"}
    row = log[log["delivery_key"] == "event:1:rule:travel-approved:eve@example.com"].iloc[0]
    assert (row["related_type"], row["related_id"], row["status"]) == ("approval", "AP-1", "sent")


def test_paused_rule_matches_nothing_until_resumed(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    rule(setup, "travel-approved")
    workflows.pause_rule(setup, "travel-approved")
    assert workflows.notify(setup, event("1"), options=FAST).status == "no_match"
    workflows.resume_rule(setup, "travel-approved")
    assert workflows.notify(setup, event("1"), options=FAST).status == "notified"
    assert len(smtp_server.messages) == 1


def test_conditions_select_events_and_a_missing_field_is_that_events_error(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    rule(setup, "big", condition="amount > 1000 and currency in ['EUR', 'USD']")
    results = workflows.notify_many(
        setup,
        [
            event("small", record={"amount": 500, "currency": "EUR"}),
            event("big", record={"amount": 5000, "currency": "EUR"}),
            event("yen", record={"amount": 5000, "currency": "JPY"}),
            event("nocur", record={"amount": 5000}),
            event("text", record={"amount": "lots", "currency": "EUR"}),
        ],
        options=FAST,
    )
    assert [r.status for r in results] == ["no_match", "notified", "no_match", "error", "error"]
    assert results[3].error == "rule big: condition: field `currency` is missing from the record"
    assert "'>' not supported" in (results[4].error or "")
    assert len(smtp_server.messages) == 1


def test_recipients_fixed_field_and_role_deduplicated(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    rule(
        setup,
        "everyone",
        recipients=["boss@example.com", "field:applicant_email", "field:watchers", "role:finance"],
    )
    res = workflows.notify(
        setup,
        event("1", record={"watchers": ["Eve@example.com", "wat@example.org"]}),
        options=FAST,
    )
    assert res.status == "notified", res.error
    assert sorted(s.recipient for s in res.sends) == [
        "boss@example.com",
        "eve@example.com",
        "fay@example.com",
        "finn@example.com",
        "wat@example.org",
    ]
    assert sorted(r for r, _ in received(smtp_server)) == sorted(s.recipient for s in res.sends)
    # each recipient gets a message of their own: nobody sees the others' addresses
    assert all(str(m.message["To"]).count("@") == 1 for m in smtp_server.messages)


def test_redelivered_event_mails_nobody_twice(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    rule(setup, "travel-approved", recipients=["field:applicant_email", "role:finance"])
    first = workflows.notify(setup, event("AP-7"), options=FAST)
    again = workflows.notify(setup, event("AP-7"), options=FAST)
    again_batch = workflows.notify_many(setup, [event("AP-7"), event("AP-7")], options=FAST)
    assert len(smtp_server.messages) == 3
    assert {s.status for s in first.sends} == {"sent"}
    assert {s.status for s in again.sends} == {"skipped_duplicate"}
    assert again.status == "notified"
    assert {s.status for r in again_batch for s in r.sends} == {"skipped_duplicate"}
    log = sendlog.list_logs(setup, limit=None)
    assert (log["status"] == "sent").sum() == 3
    assert (log["status"] == "skipped_duplicate").sum() == 9
    rows = workflows.list_events(setup, event_id="AP-7")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"notified"}
    twice = workflows.notify_many(setup, [event("AP-8"), event("AP-8")], options=FAST)
    assert len(smtp_server.messages) == 6
    assert [{s.status for s in r.sends} for r in twice] == [{"sent"}, {"skipped_duplicate"}]


def test_bad_events_in_a_batch_do_not_stop_the_others(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    rule(setup, "travel-approved")
    bad_address = event("bad-addr", record={"applicant_email": "not-an-address"})
    no_address = event("no-addr", record={"applicant_email": ""})
    no_field = event("no-field")
    del no_field["record"]["applicant_email"]
    no_template_field = event("no-tpl-field")
    del no_template_field["record"]["approver"]
    missing = event("missing")
    del missing["object_id"]
    results = workflows.notify_many(
        setup,
        [
            event("good-1"),
            bad_address,
            no_address,
            no_field,
            no_template_field,
            missing,
            event("weird-flow", flow_type="approval"),
            event("extra", recrod={}),
            event("when", occurred_at="yesterday"),
            event("listy", object_id=["AP", 1]),
            ["not", "a", "mapping"],  # type: ignore[list-item]
            event("good-2", record={"applicant_email": "zoe@example.net"}),
        ],
        options=FAST,
    )
    errors = {r.event_id: r.error or "" for r in results if r.status == "error"}
    assert set(errors) == {
        "bad-addr", "no-addr", "no-field", "no-tpl-field", "missing", "weird-flow", "extra",
        "when", "listy", None,
    }  # fmt: skip
    assert errors["listy"] == "object_id must be text, got list"
    assert errors["bad-addr"].startswith("rule travel-approved: field `applicant_email`")
    assert "not valid" in errors["bad-addr"]
    assert errors["no-addr"] == "rule travel-approved: field `applicant_email` holds no address: ''"
    assert errors["no-field"] == (
        "rule travel-approved: field `applicant_email` is missing from the record"
    )
    assert errors["no-tpl-field"] == (
        "rule travel-approved: template approval-granted needs `approver`, missing from the record"
    )
    assert errors["missing"] == "event is missing object_id"
    assert errors["weird-flow"] == (
        "unknown flow type 'approval': choose one of workflow, approval_flow, business_flow"
    )
    assert errors["extra"].startswith("unknown event field(s) recrod")
    assert "not an ISO 8601 time" in errors["when"]
    assert errors[None] == "an event must be a JSON object, got list"
    assert received(smtp_server) == [
        ("eve@example.com", "Approved: Travel to Lyon"),
        ("zoe@example.net", "Approved: Travel to Lyon"),
    ]
    rows = workflows.list_events(setup, limit=None)
    assert len(rows) == 12
    by_id = {r["event_id"]: r for r in rows}
    assert by_id["missing"]["status"] == "error" and by_id["missing"]["flow_name"] == "travel"
    assert by_id["good-2"]["sends"][0]["status"] == "sent"
    assert by_id["good-2"]["occurred_at"].isoformat() == "2026-11-28T09:00:00"
    assert [r["event_id"] for r in workflows.list_events(setup, status="error")].count(None) == 1


def test_smtp_refusal_is_a_failed_event_and_the_rest_go_out(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    rule(setup, "travel-approved")
    smtp_server.reject_rcpt = {"gone@example.com": "550 5.1.1 no such user"}
    results = workflows.notify_many(
        setup,
        [event("1", record={"applicant_email": "gone@example.com"}), event("2")],
        options=FAST,
    )
    assert [r.status for r in results] == ["failed", "notified"]
    assert results[0].sends[0].status == "failed"
    assert workflows.list_events(setup, status="failed")[0]["event_id"] == "1"


def test_a_deferred_send_is_a_deferred_event_and_is_not_sent_again(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    rule(setup, "travel-approved")
    smtp_server.fail_data_times = 1
    first = workflows.notify(setup, event("1"), options=FAST)
    assert (first.status, first.sends[0].status) == ("deferred", "deferred")
    assert smtp_server.messages == []
    again = workflows.notify(setup, event("1"), options=FAST)  # waiting in the retry queue
    assert again.sends[0].status == "skipped_duplicate" and smtp_server.messages == []


def test_an_account_that_cannot_log_in_fails_its_rules_events_only(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    bind(setup, smtp_server, "broken", kind="workflow_notification", password="wrong-password")
    rule(setup, "via-broken", account="broken", recipients=["audit@example.com"])
    rule(setup, "via-workflow")
    results = workflows.notify_many(setup, [event("1"), event("2")], options=FAST)
    assert [r.status for r in results] == ["error", "error"]
    assert all((r.error or "").startswith("rule via-broken: ") for r in results)
    assert "535" in (results[0].error or "") and "wrong-password" not in str(results)
    assert [s.status for s in results[0].sends] == ["not sent", "sent"]
    assert received(smtp_server) == [("eve@example.com", "Approved: Travel to Lyon")] * 2


def test_a_record_the_template_cannot_render_fails_alone(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    templates.add_template(
        setup,
        "share",
        object_type="approval",
        subject="Your share of {{ request }}",
        html="<p>{{ amount // parts }} EUR each</p>",
    )
    rule(setup, "shares", template="share")
    results = workflows.notify_many(
        setup,
        [
            event("a", record={"parts": 4, "applicant_email": "a@example.com"}),
            event("b", record={"parts": 0, "applicant_email": "b@example.com"}),
            event("c", record={"parts": 3, "applicant_email": "c@example.com"}),
        ],
        options=FAST,
    )
    assert [r.status for r in results] == ["notified", "error", "notified"]
    assert "ZeroDivisionError" in (results[1].error or "")
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        "a@example.com",
        "c@example.com",
    ]
    assert sendlog.list_logs(setup, limit=None)["batch_id"].nunique() == 1  # sent together


def test_event_and_record_fields_reach_the_template(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    templates.add_template(
        setup,
        "flow-notice",
        object_type="approval",
        subject="{{ flow_name }} {{ event }} for {{ object_type }} {{ object_id }}",
        html="<p>{{ event_id }} at {{ occurred_at }}</p>",
    )
    rule(setup, "notice", template="flow-notice")
    workflows.notify(setup, workflows.Event.from_dict(event("E9")), options=FAST)
    (msg,) = smtp_server.messages
    assert msg.message["Subject"] == "travel approved for approval AP-E9"
    assert "E9 at 2026-11-28T09:00:00" in msg.message.get_body(("html",)).get_content()


# --- archiving ----------------------------------------------------------------------------


def test_workflow_notices_are_logged_but_not_archived_unless_switched_on(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    assert accounts.get_account(setup, "workflow").sent_archiving is False
    rule(setup, "travel-approved")
    workflows.notify(setup, event("1"), options=FAST)
    assert len(sendlog.list_logs(setup, status="sent")) == 1
    assert archive.list_archive(setup).empty
    accounts.set_archiving(setup, "workflow", sent=True)
    workflows.notify(setup, event("2"), options=FAST)
    entries = archive.list_archive(setup, related="approval:AP-2")
    assert len(entries) == 1 and entries.iloc[0]["account"] == "workflow"
    assert len(sendlog.list_logs(setup, status="sent")) == 2


# --- rules: saving, editing, usage --------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"flow_type": "approval"}, "unknown flow type 'approval'"),
        ({"flow_name": " "}, "flow name must not be empty"),
        ({"event": "a\nb"}, "event must be one line"),
        ({"account": "nope"}, "no system email named 'nope'"),
        ({"template": "nope"}, "no template named 'nope'"),
        ({"recipients": ["eve@"]}, "is not valid"),
        ({"recipients": ["field:first-name"]}, "is not a field name"),
        ({"recipients": ["role:legal"]}, "no one holds role 'legal'"),
        ({"recipients": []}, "at least one recipient"),
        ({"recipients": ["a@example.com", "A@example.com"]}, "listed twice"),
        ({"condition": "amount >"}, "does not parse"),
        ({"condition": "__import__('os').system('id')"}, "function calls are not allowed"),
        ({"condition": "record.__class__"}, "attribute access are not allowed"),
    ],
)
def test_bad_rules_are_refused_and_write_nothing(
    setup: Workspace, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(SysmailError, match=re.escape(message)):
        rule(setup, "r1", **change)
    assert workflows.list_rules(setup) == []


def test_rule_names_are_unique_and_edit_is_checked(setup: Workspace) -> None:
    rule(setup, "r1", condition="amount > 1")
    with pytest.raises(ValidationError, match="already exists"):
        rule(setup, "r1")
    with pytest.raises(ValidationError, match="unknown flow type"):
        workflows.edit_rule(setup, "r1", flow_type="nope")
    with pytest.raises(ValidationError, match="cannot edit colour"):
        workflows.edit_rule(setup, "r1", colour="red")
    edited = workflows.edit_rule(
        setup, "r1", flow_name="*", condition="", recipients=["role:finance"]
    )
    assert (edited.flow_name, edited.condition, edited.recipients) == ("*", None, ("role:finance",))
    assert workflows.get_rule(setup, "r1") == edited
    workflows.remove_rule(setup, "r1")
    with pytest.raises(NotFoundError, match="no rule named 'r1'"):
        workflows.get_rule(setup, "r1")


def test_removing_an_account_or_template_a_rule_uses_is_refused(setup: Workspace) -> None:
    rule(setup, "approval-granted-notice")
    with pytest.raises(InUseError, match="still used by rule approval-granted-notice"):
        templates.remove_template(setup, "approval-granted")
    with pytest.raises(InUseError, match="still used by rule approval-granted-notice"):
        accounts.remove_account(setup, "workflow")
    templates.remove_template(setup, "approval-rejected")  # unused: fine
    workflows.remove_rule(setup, "approval-granted-notice")
    templates.remove_template(setup, "approval-granted")
    accounts.remove_account(setup, "workflow")


# --- the role directory -------------------------------------------------------------------


def test_directory_add_list_remove(setup: Workspace) -> None:
    assert [(e.role, e.name) for e in directory.list_entries(setup)] == [
        ("finance", "Fay Finance"),
        ("finance", "Finn Finance"),
    ]
    with pytest.raises(ValidationError, match=r"already lists fay@example\.com"):
        directory.add_entry(setup, "finance", "Fay again", "FAY@example.com")
    with pytest.raises(ValidationError, match="is not valid"):
        directory.add_entry(setup, "legal", "Lee", "lee@")
    with pytest.raises(ValidationError, match="role 'le gal'"):
        directory.add_entry(setup, "le gal", "Lee", "lee@example.com")
    rule(setup, "to-finance", recipients=["role:finance"])
    assert directory.remove_entry(setup, "finance", "FAY@example.com") == 1
    with pytest.raises(InUseError, match="role finance would be empty but is still used by rule"):
        directory.remove_entry(setup, "finance")
    with pytest.raises(NotFoundError, match="does not list"):
        directory.remove_entry(setup, "finance", "nobody@example.com")
    workflows.remove_rule(setup, "to-finance")
    assert directory.remove_entry(setup, "finance") == 1
    assert directory.list_entries(setup) == []


def test_directory_import_from_a_dataframe_and_a_csv(setup: Workspace, tmp_path: Any) -> None:
    frame = pd.DataFrame(
        {
            "role": ["finance", "finance", "legal", "legal"],
            "name": ["Fay F.", "Finn Finance", "Lee", "Lee"],
            "email": ["fay@example.com", "finn@example.com", "lee@example.com", "lee@example.com"],
        }
    )
    result = directory.import_entries(setup, frame)
    assert (result.added, result.updated, result.unchanged) == (1, 1, 1)
    assert directory.roles(setup) == {
        "finance": ["fay@example.com", "finn@example.com"],
        "legal": ["lee@example.com"],
    }
    bad = tmp_path / "people.csv"
    bad.write_text(
        "role,name,address\nhr,Hal,hal@example.com\nhr,,hil@example.com\nhr,Hu,hu@\n"
        "legal,Leo,lee@example.com\n"
    )
    with pytest.raises(ValidationError) as info:
        directory.import_entries(setup, str(bad))
    message = str(info.value)
    assert "row 2: name must not be empty" in message and "row 3: address" in message
    assert message.endswith("nothing was imported")
    assert "hr" not in directory.roles(setup)
    good = tmp_path / "good.csv"
    good.write_text("role,name,address\nhr,Hal,hal@example.com\n")
    assert directory.import_entries(setup, str(good)).added == 1
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("role,who\nhr,x\n")
    with pytest.raises(ValidationError, match="needs the column"):
        directory.import_entries(setup, str(nocol))


# --- the demo the integrator wires into `sysmail-ops demo` ---------------------------------


def test_demo_notifies_approval_events_once_even_when_run_twice(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    bind(ws, smtp_server, "workflow", kind="workflow_notification")
    lines: list[str] = []
    results = approvals.demo(ws, "workflow", lines.append)
    assert [r.status for r in results] == [
        "notified", "notified", "notified", "notified", "error", "no_match",
    ]  # fmt: skip
    assert {s.status for s in results[3].sends} == {"skipped_duplicate"}
    assert "applicant_email` is missing" in (results[4].error or "")
    assert received(smtp_server) == [
        ("bob@example.org", "Not approved: Travel to Oslo"),
        ("eve@example.com", "Approved: Travel to Lyon"),
        ("fay@example.com", "Approved over 1,000 EUR: Travel to Lyon"),
        ("zoe@example.net", "Approved: Train to Bonn"),
    ]
    assert any("demo-AP-104" in line and "error" in line for line in lines)
    assert any(line.startswith("rule approval-finance:") for line in lines)
    again: list[str] = []
    approvals.demo(ws, "workflow", again.append)
    assert len(smtp_server.messages) == 4
    assert not any(line.startswith("rule ") for line in again)
    assert len(workflows.list_events(ws, limit=None)) == 12


# --- one process sends an event at a time -------------------------------------------------


def test_an_event_another_live_process_is_sending_waits_then_errors(
    setup: Workspace, smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule(setup, "travel-approved")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim_by = f"{socket.gethostname()}:{holder.pid}:1"
        with setup.store.transaction() as con:
            con.execute(
                "INSERT INTO workflow_events (event_id, received_at, status, matched_rules,"
                " error, sends) VALUES ('held', now()::TIMESTAMP, 'sending', [], ?, '[]')",
                [events.CLAIM + claim_by],
            )
        monkeypatch.setattr(notifications, "CLAIM_WAIT", 0.3)
        results = workflows.notify_many(setup, [event("held"), event("free")], options=FAST)
        assert [r.status for r in results] == ["error", "notified"]
        assert f"being sent by {claim_by} since" in (results[0].error or "")
        assert [m.rcpt_tos[0] for m in smtp_server.messages] == ["eve@example.com"]
    finally:
        holder.kill()
        holder.wait()
    # its process is gone: the claim has lapsed and the event goes out
    assert workflows.notify(setup, event("held"), options=FAST).status == "notified"
    assert len(smtp_server.messages) == 2
    statuses = [r["status"] for r in workflows.list_events(setup, limit=None)]
    assert statuses == ["notified", "notified", "error"]  # the lapsed claim row is gone


def _claim_rows(ws: Workspace) -> list[str]:
    with ws.store.connect() as con:
        rows = con.execute(
            "SELECT event_id FROM workflow_events WHERE status = 'sending' ORDER BY event_id"
        )
        return [r[0] for r in rows.fetchall()]


def _while_sending(monkeypatch: pytest.MonkeyPatch, look: Any) -> list[Any]:
    """Calls ``look()`` in another thread while a session sends; what it returned."""
    from sysmail_ops.sending.session import Session

    seen: list[Any] = []
    send = Session.send

    def sending(self: Session, *args: Any, **kw: Any) -> None:
        t = threading.Thread(target=lambda: seen.append(look()))
        t.start()
        t.join()
        send(self, *args, **kw)

    monkeypatch.setattr(Session, "send", sending)
    return seen


def test_a_batcher_holding_the_store_claims_in_memory_and_other_threads_see_it(
    setup: Workspace, smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No other process can open a held store: the worker's claims need no row, but a
    ``notify`` in another thread of the process must still leave the event alone."""
    rule(setup, "travel-approved")
    monkeypatch.setattr(notifications, "CLAIM_WAIT", 0.2)
    seen = _while_sending(
        monkeypatch,
        lambda: (_claim_rows(setup), workflows.notify(setup, event("A"), options=FAST)),
    )
    batcher = MicroBatcher(setup, FAST)
    try:
        with setup.store.connect():  # the hold
            [res] = batcher.notify([events.intake(event("A"), "test")], held=1)
    finally:
        batcher.close()
    assert res is not None and res.status == "notified"
    [(rows, other)] = seen
    assert rows == []  # claimed in memory
    assert other.status == "error" and "being sent by" in (other.error or "")
    assert len(smtp_server.messages) == 1


def test_a_hold_that_begins_with_a_claim_in_the_store_claims_with_rows(
    setup: Workspace, smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule(setup, "travel-approved")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    seen = _while_sending(monkeypatch, lambda: _claim_rows(setup))
    batcher = MicroBatcher(setup, FAST)
    try:
        with setup.store.transaction() as con:
            con.execute(
                "INSERT INTO workflow_events (event_id, received_at, status, matched_rules,"
                " error, sends) VALUES ('held', now()::TIMESTAMP, 'sending', [], ?, '[]')",
                [events.CLAIM + f"{socket.gethostname()}:{holder.pid}:1"],
            )
        with setup.store.connect():
            got = batcher.notify([events.intake(event(e), "test") for e in ("held", "B")], held=1)
    finally:
        batcher.close()
        holder.kill()
        holder.wait()
    assert got[0] is None  # another live process is sending it: offered again later
    assert got[1] is not None and got[1].status == "notified"
    assert seen == [["B", "held"]]  # B was claimed with a row
    assert _claim_rows(setup) == ["held"]


def test_claim_rows_from_another_thread_send_the_batcher_back_to_rows(
    setup: Workspace, smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule(setup, "travel-approved")
    seen = _while_sending(monkeypatch, lambda: _claim_rows(setup))
    batcher = MicroBatcher(setup, FAST)
    try:
        with setup.store.connect():
            batcher.notify([events.intake(event("C-1"), "test")], held=1)
            other = threading.Thread(  # a claim row written by another thread
                target=workflows.notify, args=(setup, event("other")), kwargs={"options": FAST}
            )
            other.start()
            other.join()
            batcher.notify([events.intake(event("C-2"), "test")], held=1)
            batcher.notify([events.intake(event("C-3"), "test")], held=2)  # a new hold
    finally:
        batcher.close()
    # in memory, then rows until that hold ended, then in memory again
    assert seen == [[], ["C-2"], []]
    assert _claim_rows(setup) == []


def test_a_hold_releases_the_claims_of_dead_processes_as_it_claims_their_events(
    setup: Workspace, smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim left by a killed process does not keep the batcher on claim rows; the
    event is sent and recorded once, its old claim row gone."""
    rule(setup, "travel-approved")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with setup.store.transaction() as con:
        con.execute(
            "INSERT INTO workflow_events (event_id, received_at, status, matched_rules,"
            " error, sends) VALUES ('L-1', now()::TIMESTAMP, 'sending', [], ?, '[]')",
            [events.CLAIM + f"{socket.gethostname()}:{dead.pid}:1"],
        )
    seen = _while_sending(monkeypatch, lambda: _claim_rows(setup))
    batcher = MicroBatcher(setup, FAST)
    try:
        with setup.store.connect():
            [res] = batcher.notify([events.intake(event("L-1"), "test")], held=1)
    finally:
        batcher.close()
    assert res is not None and res.status == "notified"
    assert seen == [[]]  # claimed in memory, the dead process's row released with it
    rows = workflows.list_events(setup, event_id="L-1", limit=None)
    assert [r["status"] for r in rows] == ["notified"]


def test_a_failed_store_visit_lets_go_of_the_claims_in_memory(
    setup: Workspace, smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule(setup, "travel-approved")
    monkeypatch.setattr(notifications, "CLAIM_WAIT", 0.3)
    batcher = MicroBatcher(setup, FAST)

    def broken(*args: Any, **kw: Any) -> set[tuple[str, str]]:
        raise RuntimeError("the disk is full")

    try:
        with setup.store.connect():
            with monkeypatch.context() as m:
                m.setattr(sendlog, "delivered", broken)
                with pytest.raises(RuntimeError):
                    batcher.notify([events.intake(event("F-1"), "test")], held=1)
            got: list[workflows.EventResult] = []
            other = threading.Thread(  # as a claim row would have, the claim rolled back
                target=lambda: got.append(workflows.notify(setup, event("F-1"), options=FAST))
            )
            other.start()
            other.join()
    finally:
        batcher.close()
    assert [r.status for r in got] == ["notified"]
    assert len(smtp_server.messages) == 1


def test_the_same_events_from_two_processes_at_once_mail_each_person_once(
    setup: Workspace, smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    """Two real processes notify the same 40 events at the same moment."""
    rule(setup, "travel-approved", recipients=["field:applicant_email", "role:finance"])
    path = tmp_path / "events.jsonl"
    lines = [
        json.dumps(event(f"E{i}", record={"applicant_email": f"p{i}@example.com"}))
        for i in range(40)
    ]
    path.write_text("\n".join(lines) + "\n")
    exe = shutil.which("sysmail-ops", path=str(Path(sys.executable).parent))
    assert exe
    cmd = [exe, "--home", str(setup.home), "notify", "--events", str(path)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in "ab"]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(smtp_server.messages) == 40 * 3  # applicant + two in finance, once each
    log = sendlog.list_logs(setup, limit=None)
    assert (log["status"] == "sent").sum() == 120
    assert (log["status"] == "skipped_duplicate").sum() == 120
    assert "sending" not in {r["status"] for r in workflows.list_events(setup, limit=None)}
