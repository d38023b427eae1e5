"""Post-action notifications of workflows, approval flows and business flows:
events from other systems (``events``), the rules that match them (``rules``)
with their conditions (``conditions``), and ``notify`` (``notifications``), which mails through
the sending pipeline once per event, rule and recipient.

May import: ``sending`` and everything below it; not ``subscriptions`` or ``campaigns``.
"""

from sysmail_ops.flows import conditions, events, notifications, rules
from sysmail_ops.flows.events import (
    EVENT_STATUSES,
    Event,
    EventResult,
    SendStatus,
    key_for,
    list_events,
    prune_events,
)
from sysmail_ops.flows.notifications import notify, notify_jsonl, notify_many
from sysmail_ops.flows.rules import (
    FLOW_TYPES,
    Rule,
    add_rule,
    edit_rule,
    get_rule,
    list_rules,
    pause_rule,
    remove_rule,
    resume_rule,
)

__all__ = [
    "EVENT_STATUSES",
    "FLOW_TYPES",
    "Event",
    "EventResult",
    "Rule",
    "SendStatus",
    "add_rule",
    "conditions",
    "edit_rule",
    "events",
    "get_rule",
    "key_for",
    "list_events",
    "list_rules",
    "notifications",
    "notify",
    "notify_jsonl",
    "notify_many",
    "pause_rule",
    "prune_events",
    "remove_rule",
    "resume_rule",
    "rules",
]
