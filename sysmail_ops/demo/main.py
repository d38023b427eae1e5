"""The main job on the embedded defaults: a demo workspace on the local capture server.

One system email of each kind, bound to ``sysmail-ops sink`` on loopback with
STARTTLS verified against the sink's own certificate, each connection-tested.
Safe to run again: existing demo accounts are re-pointed, not duplicated.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.demo import approvals, survey
from sysmail_ops.errors import NotFoundError, SysmailError
from sysmail_ops.mail.credentials import Secret
from sysmail_ops.records import sendlog
from sysmail_ops.sending import batch as sending
from sysmail_ops.sending import connection_test as conntest
from sysmail_ops.sink.server import CaptureSink, ensure_certificate
from sysmail_ops.subscriptions import model as subscriptions
from sysmail_ops.subscriptions import runs as subscription_runs
from sysmail_ops.templates import catalog as templates

SINK_HOST = "127.0.0.1"
SINK_PORT = 1025
ADMIN_ADDRESS = "admin@example.com"
DEMO_ACCOUNTS: list[dict[str, Any]] = [
    {
        "name": "service",
        "kind": "customer_service",
        "from_address": "service@example.com",
        "display_name": "Example Customer Service",
        "description": "Replies to customers and sends satisfaction surveys",
    },
    {
        "name": "marketing",
        "kind": "marketing",
        "from_address": "news@example.com",
        "display_name": "Example News",
        "description": "Newsletters and follow-ups",
    },
    {
        "name": "workflow",
        "kind": "workflow_notification",
        "from_address": "workflow@example.com",
        "display_name": "Example Workflow",
        "description": "Post-action notices of workflows, approval and business flows",
    },
    {
        "name": "reports",
        "kind": "other",
        "from_address": "reports@example.com",
        "display_name": "Example Reports",
        "description": "Report subscriptions",
    },
]


DEMO_TEMPLATES: list[dict[str, Any]] = [
    {
        "name": "case-update",
        "object_type": "case",
        "subject": "Your case {{ case_id }}: {{ status }}",
        "html": (
            "<style>p { font-family: Arial, sans-serif; } b { color: #1a5fb4; }</style>"
            "<p>Hello {{ name }},</p><p>your case <b>{{ case_id }}</b> is now "
            "<b>{{ status }}</b>.</p><p>Example Customer Service</p>"
        ),
        "fields": ["name", "case_id", "status"],
    },
    {
        "name": "approval-granted",
        "object_type": "approval",
        "subject": "Approved: {{ request }}",
        "html": "<p>{{ approver }} approved your request <b>{{ request }}</b>.</p>",
        "fields": ["request", "approver"],
    },
]
DEMO_CASES = [
    {"email": "eve@example.com", "name": "Eve", "case_id": "C-1001", "status": "resolved"},
    {"email": "bob@example.org", "name": "Bob", "case_id": "C-1002", "status": "in progress"},
    {"email": "zoe@example.net", "name": "Zoë", "case_id": "C-1003", "status": "waiting for you"},
]


def _bind(ws: Workspace, spec: dict[str, Any], port: int, ca: str) -> str:
    server: dict[str, Any] = {
        "smtp_host": SINK_HOST,
        "smtp_port": port,
        "smtp_security": "starttls",
        "ca_bundle": ca,
        "imap_host": SINK_HOST,
    }
    # The sink takes any login; a real password is stored anyway, encrypted as in production.
    password = Secret("demo-" + os.urandom(6).hex())
    try:
        accounts.get_account(ws, spec["name"])
    except NotFoundError:
        accounts.add_account(ws, password=password, **spec, **server)
        return "bound"
    accounts.edit_account(ws, spec["name"], **server)
    return "re-pointed"


def run(
    home: str | None = None, *, sink_port: int = SINK_PORT, out: Callable[[str], object] = print
) -> Workspace:
    """Create the demo workspace, bind and test the demo system emails. Returns the workspace."""
    ws, _ = Workspace.init(home)
    templates.ensure_builtin(ws)
    out(f"workspace {ws.home}")
    cert, _key = ensure_certificate(ws.sink_dir)
    with ExitStack() as stack:
        sink = CaptureSink(ws.mailbox_dir, ws.sink_dir, SINK_HOST, sink_port)
        try:
            sink.start()
            stack.callback(sink.stop)
            out(f"capture server listening on {SINK_HOST}:{sink.port} for this run")
        except SysmailError as exc:
            out(f"{exc}; using the server already there")
        for spec in DEMO_ACCOUNTS:
            state = _bind(ws, spec, sink.port, str(cert))
            out(f"{state} {spec['name']} ({spec['from_address']}, {spec['kind']})")
        for spec in DEMO_ACCOUNTS:
            send_to = ADMIN_ADDRESS if spec["kind"] == "customer_service" else None
            result = conntest.test_account(ws, spec["name"], send_to=send_to)
            verdict = "OK" if result.ok else "FAILED at"
            out(f"test {spec['name']}: {verdict} {result.message}")
        for tpl in DEMO_TEMPLATES:
            try:
                templates.get_template(ws, tpl["name"])
            except NotFoundError:
                templates.add_template(ws, **tpl)
        # Delivery keys make a second demo run skip what the first delivered.
        cases = sending.send_batch(
            ws, "service", "case-update", DEMO_CASES, key_column="case_id",
            key_prefix="demo-case-", related_type="case", related_column="case_id",
        )  # fmt: skip
        out(f"case updates via service: {cases.summary()}")
        notice = sending.send(
            ws, "workflow", "approval-granted", to="eve@example.com",
            record={"request": "Travel to Lyon", "approver": "Ana"}, use_case="approval_flow",
            related=("approval", "AP-7"), key="demo-approval-AP-7",
        )  # fmt: skip
        out(f"approval notice via workflow: {notice.summary()}")
        out("\nApproval-flow events (sysmail-ops notify):")
        approvals.demo(ws, "workflow", out)
        out("\nSatisfaction survey (sysmail-ops campaigns send):")
        survey.demo(ws, "service", out)
        out("\nReport subscriptions:")
        _report_subscriptions(ws, out)
    return ws


DEMO_SUBSCRIPTIONS: list[dict[str, Any]] = [
    {
        "name": "weekly-delivery",
        "notebook": "delivery_report",
        "parameters": {"days": 7},
        "recipients": [ADMIN_ADDRESS, "ops@example.com"],
        "formats": ["html_body"],
        "description": "Delivery of every system email over the last week",
    },
    {
        "name": "weekly-pipeline",
        "notebook": "sales_pipeline",
        "parameters": {"region": "EMEA"},
        "recipients": [
            "ana@example.com",
            "bo@example.com",
            {"address": "li@example.com", "parameters": {"region": "APAC"}},
        ],
        "formats": ["html_body", "xlsx"],
        "description": "Open sales pipeline of the recipient's region",
    },
]


def _report_subscriptions(ws: Workspace, out: Callable[[str], object]) -> None:
    """Subscribe both bundled reports, then run the next Monday-08:00 slot as cron would."""
    for spec in DEMO_SUBSCRIPTIONS:
        try:
            subscriptions.get_subscription(ws, spec["name"])
        except NotFoundError:
            subscriptions.add_subscription(
                ws, **spec, cron="0 8 * * mon", timezone="Europe/Berlin",
                account="reports", owner=ADMIN_ADDRESS,
            )  # fmt: skip
            out(f"subscribed {spec['name']}: {spec['notebook']} to {len(spec['recipients'])}")
    first = subscriptions.get_subscription(ws, DEMO_SUBSCRIPTIONS[0]["name"])
    slot = subscriptions.next_runs(first, 1)[0]
    now = slot + timedelta(minutes=5)
    out(f"subscriptions run-due --now {now:%Y-%m-%dT%H:%MZ} (as cron would, 5 min after the slot)")
    for result in subscription_runs.run_due(ws, now=now, workers=2):
        out(f"  {result.summary()}")
    runs = subscription_runs.list_runs(ws, limit=10)
    out("run history (sysmail-ops subscriptions runs):")
    for r in runs.itertuples():
        seconds = f"kernel {r.kernel_seconds:.1f} s + run {r.execute_seconds:.1f} s"
        out(f"  {r.subscription} {r.parameters} {r.status}: {r.delivered} delivered, {seconds}")
    mails = sendlog.list_logs(ws, account="reports", limit=None)
    mails = mails[mails["use_case"] == "report_subscription"]
    out(f"report mails in the sending log ({len(mails)}):")
    for m in mails.itertuples():
        out(f"  {m.status:<17} {m.recipient:<20} {m.subject}")
