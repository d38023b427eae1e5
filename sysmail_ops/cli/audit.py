"""`sysmail-ops audit`: who changed which configuration, when and from where."""

from __future__ import annotations

import argparse

from sysmail_ops.cli.common import open_workspace
from sysmail_ops.cli.output import print_json, print_table
from sysmail_ops.store import audit


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "audit",
        help="the audit trail: every change to system emails, templates, subscriptions, "
        "rules, campaigns, roles, settings and the console password (newest first; never a "
        "secret's value)",
    )
    p.add_argument("--since", help="30m, 24h, 7d or an ISO date (UTC), e.g. 2026-11-30")
    p.add_argument(
        "--kind",
        choices=(
            "account",
            "template",
            "subscription",
            "rule",
            "campaign",
            "role",
            "setting",
            "console",
        ),
        help="only changes to this kind of object",
    )
    p.add_argument("--name", help="only changes to the object of this name")
    p.add_argument("--limit", type=int, default=100, help="at most this many rows (100)")
    p.add_argument("--json", action="store_true", help="print JSON (with old and new values)")
    p.set_defaults(handler=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    entries = audit.list_entries(
        ws.store, since=args.since, kind=args.kind, name=args.name, limit=args.limit
    )
    if args.json:
        print_json([e.to_dict() for e in entries])
        return 0
    rows = [
        [
            e.changed_at.strftime("%Y-%m-%d %H:%M:%S"),
            e.actor,
            e.source,
            f"{e.object_kind} {e.object_name}",
            e.action,
            e.summary if len(e.summary) <= 100 else e.summary[:97] + "...",
        ]
        for e in entries
    ]
    print_table(rows, ["WHEN (UTC)", "WHO", "WHERE", "WHAT", "ACTION", "CHANGES"])
    if not entries:
        print("(no changes recorded" + (" in that period)" if args.since else ")"))
    return 0
