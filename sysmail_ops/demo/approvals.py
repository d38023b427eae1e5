"""The main job's approval flow: two rules' templates, three rules and six events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sysmail_ops.config import directory
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import NotFoundError
from sysmail_ops.flows import EventResult, add_rule, list_rules, notify_many
from sysmail_ops.templates import catalog as templates

DEMO_TEMPLATES: list[dict[str, Any]] = [
    {
        "name": "approval-granted",
        "object_type": "approval",
        "subject": "Approved: {{ request }}",
        "html": "<p>{{ approver }} approved your request <b>{{ request }}</b>.</p>",
        "fields": ["request", "approver"],
    },
    {
        "name": "approval-rejected",
        "object_type": "approval",
        "subject": "Not approved: {{ request }}",
        "html": "<p>{{ approver }} did not approve <b>{{ request }}</b>: {{ reason }}</p>",
        "fields": ["request", "approver", "reason"],
    },
    {
        "name": "approval-finance",
        "object_type": "approval",
        "subject": "Approved over 1,000 EUR: {{ request }}",
        "html": "<p>{{ approver }} approved <b>{{ request }}</b> ({{ amount }} EUR) for "
        "{{ applicant_name }}; approval {{ object_id }}.</p>",
        "fields": ["request", "approver", "amount", "applicant_name", "object_id"],
    },
]


def _demo_event(eid: str, event: str, **record: Any) -> dict[str, Any]:
    return {
        "id": f"demo-{eid}",
        "flow_type": "approval_flow",
        "flow_name": "travel",
        "event": event,
        "object_type": "approval",
        "object_id": eid,
        "record": {"request": "Travel", "approver": "Ana", **record},
    }


DEMO_EVENTS = [
    _demo_event("AP-101", "approved", request="Travel to Lyon", amount=1800,
                applicant_name="Eve", applicant_email="eve@example.com"),
    _demo_event("AP-102", "rejected", request="Travel to Oslo", reason="no budget left",
                applicant_name="Bob", applicant_email="bob@example.org"),
    _demo_event("AP-103", "approved", request="Train to Bonn", amount=240,
                applicant_name="Zoë", applicant_email="zoe@example.net"),
    _demo_event("AP-101", "approved", request="Travel to Lyon", amount=1800,
                applicant_name="Eve", applicant_email="eve@example.com"),  # redelivered
    _demo_event("AP-104", "approved", request="Taxi", amount=30,
                applicant_name="Max"),  # no applicant_email: an error, the rest go out
    _demo_event("AP-105", "node_entered", request="Hotel"),  # no rule wants it
]  # fmt: skip


def demo(ws: Workspace, account: str, out: Callable[[str], object] = print) -> list[EventResult]:
    """Approval-flow notices on the demo workspace: templates, rules, a role, six events.

    Safe to run again: what exists is kept, and the events' keys make a second
    run skip what the first delivered.
    """
    for spec in DEMO_TEMPLATES:
        try:
            templates.get_template(ws, spec["name"])
        except NotFoundError:
            templates.add_template(ws, **spec)
    if "fay@example.com" not in directory.roles(ws).get("finance", []):
        directory.add_entry(ws, "finance", "Fay Finance", "fay@example.com")
    rules = [
        ("approval-granted", "approved", None, "approval-granted", ["field:applicant_email"]),
        ("approval-rejected", "rejected", None, "approval-rejected", ["field:applicant_email"]),
        ("approval-finance", "approved", "amount > 1000", "approval-finance", ["role:finance"]),
    ]
    known = {r.name for r in list_rules(ws)}
    for name, event, condition, template, recipients in rules:
        if name not in known:
            add_rule(ws, name, flow_type="approval_flow", flow_name="*", event=event,
                     condition=condition, account=account, template=template,
                     recipients=recipients)  # fmt: skip
            out(f"rule {name}: approval_flow * {event}{f' if {condition}' if condition else ''}"
                f" -> {', '.join(recipients)}")  # fmt: skip
    out(f"notify: {len(DEMO_EVENTS)} approval-flow events (one redelivered, one without address)")
    results = notify_many(ws, DEMO_EVENTS, source="demo")
    for r in results:
        out(f"  {r.summary()}")
    return results
