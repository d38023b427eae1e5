"""`sysmail-ops rules ...`, `notify`, `events list` and `directory ...`: post-action notices."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from sysmail_ops import flows as workflows
from sysmail_ops.cli.common import open_workspace
from sysmail_ops.cli.output import print_fields, print_json, print_table, safe
from sysmail_ops.config import directory
from sysmail_ops.errors import ValidationError
from sysmail_ops.flows.events import MAX_EVENTS_BYTES
from sysmail_ops.inputs import open_input

RECIPIENT_HELP = (
    "an address, field:NAME (an address in the event's record) or role:ROLE (the people of "
    "a role in the directory); repeatable"
)

NOTIFY_DESCRIPTION = """\
Handle flow events: each line of the input is one JSON object
  {"id": "ev-1", "flow_type": "approval_flow", "flow_name": "travel",
   "event": "approved", "object_type": "approval", "object_id": "AP-7",
   "occurred_at": "2026-11-28T10:00:00Z", "record": {"applicant_email": "..."}}
Every enabled rule that matches mails its recipients once per event id, even
when the same event arrives again. A bad line is reported and recorded; the
other lines still go out. A line is at most 1 MiB (JSON nested at most 64
deep); the input at most 64 MiB: a longer stream stops there with one error.

exit status:
  0  every event was mailed (or already was), or matched no rule
  1  some event had an error, or one of its sends failed or was deferred
     (deferred mail is retried by retry-deferred; sending the events again is safe)
  2  the input could not be read (no such file, a file over 64 MiB) or bad usage
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "rules", help="notification rules: which flow event mails whom, with which template"
    )
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = acts.add_parser("add", help="add a rule (checked: account, template, recipients)")
    add.add_argument("name", help="short unique name used on the command line")
    _rule_fields(add, required=True)
    add.add_argument("--paused", action="store_true", help="save it paused")
    add.set_defaults(handler=cmd_rules_add)

    ls = acts.add_parser("list", help="list the rules")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=cmd_rules_list)

    show = acts.add_parser("show", help="show a rule and the last events it matched")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=cmd_rules_show)

    edit = acts.add_parser("edit", help="change a rule (options given replace the old values)")
    edit.add_argument("name")
    _rule_fields(edit, required=False)
    edit.set_defaults(handler=cmd_rules_edit)

    for verb, helptext, fn in (
        ("pause", "stop a rule from matching events until resumed", workflows.pause_rule),
        ("resume", "let a paused rule match events again", workflows.resume_rule),
    ):
        a = acts.add_parser(verb, help=helptext)
        a.add_argument("name")
        a.set_defaults(handler=_toggle(fn, verb + "d"))
    rm = acts.add_parser("remove", help="delete a rule (the events it matched keep its name)")
    rm.add_argument("name")
    rm.set_defaults(handler=cmd_rules_remove)

    n = sub.add_parser(
        "notify",
        help="handle flow events, one JSON object per line (exit 1: an event failed)",
        description=NOTIFY_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    n.add_argument(
        "--events", required=True, metavar="FILE|-", help="a .jsonl file, or - for stdin"
    )
    n.add_argument("--json", action="store_true", help="print one JSON result per event")
    n.set_defaults(handler=cmd_notify)

    ev = sub.add_parser("events", help="the flow events received and what became of each")
    ev_acts = ev.add_subparsers(dest="action", metavar="ACTION", required=True)
    el = ev_acts.add_parser("list", help="list events received, newest first")
    el.add_argument(
        "--status",
        action="append",
        choices=workflows.EVENT_STATUSES,
        help="only events with this outcome (repeatable)",
    )
    el.add_argument("--event-id", metavar="ID", help="only this event (each delivery is a row)")
    el.add_argument("--rule", help="only events this rule matched")
    el.add_argument("--limit", type=int, default=50, help="at most this many rows (50)")
    el.add_argument("--json", action="store_true", help="print JSON")
    el.set_defaults(handler=cmd_events_list)
    ep = ev_acts.add_parser("prune", help="delete events received before a date (retention)")
    ep.add_argument("--before", required=True, help="ISO date, e.g. 2026-01-01")
    ep.set_defaults(handler=cmd_events_prune)

    d = sub.add_parser("directory", help="the role directory behind role:ROLE recipients")
    d_acts = d.add_subparsers(dest="action", metavar="ACTION", required=True)
    da = d_acts.add_parser("add", help="add a person to a role")
    da.add_argument("role", help="e.g. finance")
    da.add_argument("person", metavar="NAME", help="the person's name")
    da.add_argument("address", help="the person's email address")
    da.set_defaults(handler=cmd_dir_add)
    dl = d_acts.add_parser("list", help="list the directory by role")
    dl.add_argument("--role", help="only this role")
    dl.add_argument("--json", action="store_true", help="print JSON")
    dl.set_defaults(handler=cmd_dir_list)
    dr = d_acts.add_parser(
        "remove", help="remove a person from a role, or the whole role without ADDRESS"
    )
    dr.add_argument("role")
    dr.add_argument("address", nargs="?", help="the address to remove (default: all of the role)")
    dr.set_defaults(handler=cmd_dir_remove)
    di = d_acts.add_parser(
        "import", help="add or update people from a CSV/JSONL file (role, name, address)"
    )
    di.add_argument("file", help="columns role, name and address (or email)")
    di.set_defaults(handler=cmd_dir_import)


def _rule_fields(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument(
        "--flow-type",
        required=required,
        choices=workflows.FLOW_TYPES,
        help="the kind of flow whose events it matches",
    )
    p.add_argument(
        "--flow-name",
        default="*" if required else None,
        metavar="NAME",
        help="the flow's name, or * for any flow" + (" (default *)" if required else ""),
    )
    p.add_argument(
        "--event", required=required, help="the event it matches: approved, rejected, ... (text)"
    )
    p.add_argument("--account", required=required, help="the system email that sends")
    p.add_argument("--template", required=required, help="the object email template")
    p.add_argument(
        "--to",
        action="append",
        required=required,
        metavar="RECIPIENT",
        help=RECIPIENT_HELP + ("" if required else " (the list given replaces the old one)"),
    )
    p.add_argument(
        "--condition",
        metavar="EXPR",
        help="only events whose record satisfies it, e.g. \"amount > 1000 and currency == 'EUR'\""
        + ("" if required else " ('' drops it)"),
    )
    p.add_argument("--description", help="optional description")


def _values(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "flow_type": args.flow_type,
        "flow_name": args.flow_name,
        "event": args.event,
        "account": args.account,
        "template": args.template,
        "recipients": args.to,
        "condition": args.condition,
        "description": args.description,
    }


def _describe(r: workflows.Rule) -> str:
    cond = f" if {r.condition}" if r.condition else ""
    return (
        f"{r.name}: {r.flow_type} {r.flow_name} {r.event}{cond} -> {', '.join(r.recipients)}"
        f" via {r.account} with {r.template}"
    )


def cmd_rules_add(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    values = {k: v for k, v in _values(args).items() if v is not None}
    r = workflows.add_rule(ws, args.name, **values, enabled=not args.paused)
    print(f"added {safe(_describe(r))}" + ("" if r.enabled else " (paused)"))
    return 0


def cmd_rules_edit(args: argparse.Namespace) -> int:
    r = workflows.edit_rule(open_workspace(args), args.name, **_values(args))
    print(f"saved {safe(_describe(r))}")
    return 0


def cmd_rules_list(args: argparse.Namespace) -> int:
    found = workflows.list_rules(open_workspace(args))
    if args.json:
        print_json([r.to_dict() for r in found])
        return 0
    print_table(
        (
            [
                r.name,
                r.flow_type,
                r.flow_name,
                r.event,
                r.condition,
                ", ".join(r.recipients),
                r.account,
                r.template,
                r.enabled,
            ]
            for r in found
        ),
        ["NAME", "FLOW TYPE", "FLOW", "EVENT", "CONDITION", "TO", "ACCOUNT", "TEMPLATE", "ON"],
    )
    print(f"{len(found)} rule{'' if len(found) == 1 else 's'}")
    return 0


def cmd_rules_show(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    r = workflows.get_rule(ws, args.name)
    recent = workflows.list_events(ws, rule=r.name, limit=5)
    if args.json:
        print_json({**r.to_dict(), "recent_events": recent})
        return 0
    print_fields(
        [
            ("name", r.name),
            ("description", r.description),
            ("flow type", r.flow_type),
            ("flow name", r.flow_name),
            ("event", r.event),
            ("condition", r.condition or "(none)"),
            ("system email", r.account),
            ("template", r.template),
            ("recipients", ", ".join(r.recipients)),
            ("enabled", r.enabled),
        ]
    )
    print(f"last events matched ({len(recent)}):")
    for e in recent:
        print(f"  {e['received_at']:%Y-%m-%d %H:%M:%S}  {safe(e['event_id'])}  {e['status']}")
    return 0


def _toggle(fn: Any, done: str) -> Any:
    def handler(args: argparse.Namespace) -> int:
        r = fn(open_workspace(args), args.name)
        print(f"{done} {r.name}")
        return 0

    return handler


def cmd_rules_remove(args: argparse.Namespace) -> int:
    workflows.remove_rule(open_workspace(args), args.name)
    print(f"removed {args.name}")
    return 0


def cmd_notify(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    if args.events == "-":
        stdin = getattr(sys.stdin, "buffer", sys.stdin)  # bytes: a bad line is that line's error
        results = workflows.notify_jsonl(ws, stdin, source="stdin")
    else:
        path = Path(args.events)
        # A regular file over the cap is refused before anything is read or sent; a stream
        # (a pipe, /dev/zero) is read line by line up to the same cap (events.parse_lines).
        with open_input(path, "events file", MAX_EVENTS_BYTES) as fh:
            results = workflows.notify_jsonl(ws, fh, source=path.name)
    if args.json:
        print_json([r.to_dict() for r in results])
    else:
        for r in results:
            print(safe(r.summary()))
        bad = sum(not r.ok for r in results)
        print(f"{len(results)} event(s): {len(results) - bad} ok, {bad} with a problem")
    return 1 if any(not r.ok for r in results) else 0


def cmd_events_list(args: argparse.Namespace) -> int:
    rows = workflows.list_events(
        open_workspace(args),
        status=args.status,
        event_id=args.event_id,
        rule=args.rule,
        limit=args.limit,
    )
    if args.json:
        print_json(rows)
        return 0
    print_table(
        (
            [
                r["id"],
                f"{r['received_at']:%Y-%m-%d %H:%M:%S}",
                r["event_id"],
                " ".join(str(r[k] or "") for k in ("flow_type", "flow_name", "event")).strip(),
                f"{r['object_type']}:{r['object_id']}" if r["object_id"] else "",
                r["status"],
                r["error"] or ", ".join(r["matched_rules"]),
            ]
            for r in rows
        ),
        ["#", "RECEIVED (UTC)", "EVENT", "FLOW", "OBJECT", "STATUS", "RULES / ERROR"],
    )
    return 0


def cmd_events_prune(args: argparse.Namespace) -> int:
    try:
        before = datetime.fromisoformat(args.before).replace(tzinfo=None)
    except ValueError:
        raise ValidationError(f"--before takes an ISO date, got {args.before!r}") from None
    n = workflows.prune_events(open_workspace(args), before)
    print(f"deleted {n} event row(s) received before {args.before}")
    return 0


def cmd_dir_add(args: argparse.Namespace) -> int:
    e = directory.add_entry(open_workspace(args), args.role, args.person, args.address)
    print(safe(f"added {e.name} <{e.address}> to {e.role}"))
    return 0


def cmd_dir_list(args: argparse.Namespace) -> int:
    entries = directory.list_entries(open_workspace(args), args.role)
    if args.json:
        print_json([e.to_dict() for e in entries])
        return 0
    print_table(([e.role, e.name, e.address] for e in entries), ["ROLE", "NAME", "ADDRESS"])
    print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
    return 0


def cmd_dir_remove(args: argparse.Namespace) -> int:
    n = directory.remove_entry(open_workspace(args), args.role, args.address)
    print(f"removed {n} entr{'y' if n == 1 else 'ies'} from {args.role}")
    return 0


def cmd_dir_import(args: argparse.Namespace) -> int:
    result = directory.import_entries(open_workspace(args), args.file)
    print(safe(f"imported {args.file}: {result.summary()}"))
    return 0
