"""Report subscriptions: the model (``model``), cron schedules (``schedule``),
slot runs (``runs``), papermill execution of report notebooks (``notebooks``),
rendering a run into a mail (``render``) and the report notebooks' kit (``kit``).

May import: ``sending``, ``analytics``, and everything below them; not ``flows``
or ``campaigns``.
"""

from sysmail_ops.subscriptions import kit, model, notebooks, render, runs, schedule
from sysmail_ops.subscriptions.model import (
    DEFAULT_TEMPLATE,
    FORMATS,
    RESERVED_PARAMETERS,
    Recipient,
    Subscription,
    add_subscription,
    canonical,
    edit_subscription,
    get_subscription,
    list_subscriptions,
    next_runs,
    remove_subscription,
    set_enabled,
)
from sysmail_ops.subscriptions.notebooks import ReportOutput, ReportRun, list_reports
from sysmail_ops.subscriptions.runs import list_runs, run_due, run_now, run_slot, test_send

__all__ = [
    "DEFAULT_TEMPLATE",
    "FORMATS",
    "RESERVED_PARAMETERS",
    "Recipient",
    "ReportOutput",
    "ReportRun",
    "Subscription",
    "add_subscription",
    "canonical",
    "edit_subscription",
    "get_subscription",
    "kit",
    "list_reports",
    "list_runs",
    "list_subscriptions",
    "model",
    "next_runs",
    "notebooks",
    "remove_subscription",
    "render",
    "run_due",
    "run_now",
    "run_slot",
    "runs",
    "schedule",
    "set_enabled",
    "test_send",
]
