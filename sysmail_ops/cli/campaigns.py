"""`sysmail-ops campaigns ...`: follow-ups and surveys: mail merge, reminders, stats."""

from __future__ import annotations

import argparse
import re
from datetime import datetime, timedelta
from typing import Any

from sysmail_ops import campaigns as api
from sysmail_ops.campaigns import members as campaign_members
from sysmail_ops.cli.common import open_workspace
from sysmail_ops.cli.output import print_fields, print_json, print_table, safe, safe_lines
from sysmail_ops.errors import ValidationError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([dhm]?)")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "": "days"}


def duration(value: str) -> timedelta:
    """``3d``, ``12h``, ``90m`` (a bare number is days)."""
    m = _DURATION.fullmatch(value.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError(f"expected a duration such as 3d, 12h or 90m: {value!r}")
    return timedelta(**{_UNITS[m[2]]: float(m[1])})


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "campaigns", help="follow-ups and satisfaction surveys: mail merge, reminders, stats"
    )
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = acts.add_parser("add", help="create a follow-up or survey campaign")
    add.add_argument("name", help="short unique name; it makes the delivery keys")
    add.add_argument("--kind", required=True, choices=api.KINDS, help="follow_up or survey")
    _fields(add, required=True)
    add.set_defaults(handler=cmd_add)

    ls = acts.add_parser("list", help="list the campaigns with how many were sent")
    ls.add_argument("--kind", choices=api.KINDS, help="only this kind")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=cmd_list)

    show = acts.add_parser("show", help="show a campaign's settings and its members per status")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=cmd_show)

    edit = acts.add_parser("edit", help="change a campaign (the options given replace the old)")
    edit.add_argument("name")
    _fields(edit, required=False)
    edit.add_argument(
        "--unset", action="append", default=[], metavar="FIELD", help="drop a setting"
    )
    edit.set_defaults(handler=cmd_edit)

    rm = acts.add_parser("remove", help="delete a campaign and its member list (the log stays)")
    rm.add_argument("name")
    rm.set_defaults(handler=cmd_remove)

    send = acts.add_parser(
        "send", help="mail-merge the campaign to a contacts file (a rerun mails only the rest)"
    )
    send.add_argument("name")
    send.add_argument(
        "--contacts", required=True, metavar="FILE", help="one row per contact: .csv, .jsonl, .json"
    )
    send.add_argument("--email-column", default="email", help="column with the address (email)")
    send.add_argument("--contact-column", default="id", help="column with the contact id (id)")
    _send_options(send)
    send.set_defaults(handler=cmd_send)

    remind = acts.add_parser(
        "remind", help="remind, once, who was sent a survey at least --after ago and not answered"
    )
    remind.add_argument("name")
    remind.add_argument(
        "--after", required=True, type=duration, metavar="DURATION", help="e.g. 3d, 12h"
    )
    _send_options(remind)
    remind.set_defaults(handler=cmd_remind)

    stats = acts.add_parser(
        "stats", help="sent, responded, response rate, CSAT, average score, suppressed, reminded"
    )
    stats.add_argument("name")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(handler=cmd_stats)

    members = acts.add_parser("members", help="who the campaign went to and what became of it")
    members.add_argument("name")
    members.add_argument("--status", choices=campaign_members.STATUSES, help="only this status")
    members.add_argument("--json", action="store_true", help="print JSON")
    members.set_defaults(handler=cmd_members)


def _fields(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument(
        "--account",
        required=required,
        help="the customer-service or marketing system email that sends it",
    )
    p.add_argument("--template", required=required, help="the template of the campaign mail")
    p.add_argument(
        "--reminder-template",
        metavar="TEMPLATE",
        help=f"surveys: the reminder's template (default {api.DEFAULT_REMINDER})",
    )
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a template field shared by every recipient, e.g. question=... (repeatable)",
    )
    p.add_argument("--description", help="one line saying what the campaign is for")


def _send_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="render and compose, write .eml files to the preview folder, send nothing",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print JSON")


def _settings(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValidationError(f"--set takes FIELD=VALUE, got {item!r}")
        out[name.strip()] = value
    return out


def _row(c: api.Campaign, counts: dict[str, int]) -> dict[str, Any]:
    return {**c.to_dict(), "members": counts}


def cmd_add(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    c = api.add_campaign(
        ws,
        args.name,
        kind=args.kind,
        account=args.account,
        template=args.template,
        reminder_template=args.reminder_template,
        settings=_settings(args.settings),
        description=args.description,
    )
    extra = f", reminders with {c.reminder_template}" if c.reminder_template else ""
    print(f"added campaign {c.name} ({c.kind} through {c.account}, template {c.template}{extra})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    rows = [
        _row(c, campaign_members.status_counts(ws, c.name))
        for c in api.list_campaigns(ws, kind=args.kind)
    ]
    if args.json:
        print_json(rows)
        return 0
    print_table(
        [(r["name"], r["kind"], r["account"], r["template"], r["members"]["sent"]) for r in rows],
        ["name", "kind", "account", "template", "sent"],
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    c = api.get_campaign(ws, args.name)
    counts = {k: v for k, v in campaign_members.status_counts(ws, c.name).items() if v}
    if args.json:
        print_json(_row(c, counts))
        return 0
    print_fields(
        [
            ("name", c.name),
            ("kind", c.kind),
            ("system email", c.account),
            ("template", c.template),
            ("reminder template", c.reminder_template),
            ("description", c.description),
            ("created", _when(c.created_at)),
            ("members", ", ".join(f"{n} {s}" for s, n in counts.items()) or "none yet"),
        ]
    )
    for k, v in c.settings.items():
        print(f"  setting {k} = {v}")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    settings = None
    if args.settings or args.unset:
        settings = dict(api.get_campaign(ws, args.name).settings)
        settings.update(_settings(args.settings))
        for name in args.unset:
            if name not in settings:
                raise ValidationError(f"campaign {args.name!r} has no setting {name!r}")
            del settings[name]
    c = api.edit_campaign(
        ws,
        args.name,
        account=args.account,
        template=args.template,
        reminder_template=args.reminder_template,
        settings=settings,
        description=args.description,
    )
    print(f"changed campaign {c.name}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    api.remove_campaign(ws, args.name)
    print(f"removed campaign {args.name}")
    return 0


def _report(args: argparse.Namespace, result: api.CampaignResult) -> int:
    if args.json:
        print_json(result.to_dict())
    else:
        print(safe_lines(result.summary()))
        for why, contacts in result.skipped.items():
            if contacts:
                shown = ", ".join(contacts[:10]) + (" ..." if len(contacts) > 10 else "")
                print(f"  skipped ({why}): {safe(shown)}")
        for err in result.errors:
            print(f"  error: {safe(err)}")
        if result.preview_dir:
            print(f"  previews: {result.preview_dir}")
    return 1 if result.counts.get("failed") or result.counts.get("deferred") else 0


def cmd_send(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    result = api.send_campaign(
        ws,
        args.name,
        args.contacts,
        email_column=args.email_column,
        contact_column=args.contact_column,
        dry_run=args.dry_run,
        progress=not args.no_progress and not args.json,
    )
    return _report(args, result)


def cmd_remind(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    result = api.remind_campaign(
        ws,
        args.name,
        after=args.after,
        dry_run=args.dry_run,
        progress=not args.no_progress and not args.json,
    )
    return _report(args, result)


def _when(value: datetime | None) -> str:
    return "" if value is None else f"{value:%Y-%m-%d %H:%M} UTC"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def cmd_stats(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    s = api.campaign_stats(ws, args.name)
    if args.json:
        print_json(s.to_dict())
        return 0
    pairs: list[tuple[str, Any]] = [
        ("campaign", f"{s.campaign} ({s.kind})"),
        ("contacts", s.contacts),
        ("sent", s.sent),
        ("suppressed", s.suppressed),
        ("quiet (surveyed recently)", s.quiet),
        ("failed", s.failed),
        ("deferred", s.deferred),
        ("reminded", s.reminded),
    ]
    if s.kind == "survey":
        avg = "-" if s.average_score is None else f"{s.average_score:.2f}"
        pairs += [
            ("responded", s.responded),
            ("response rate", _percent(s.response_rate)),
            ("CSAT (4-5 of 5)", _percent(s.csat)),
            ("average score", avg),
        ]
    print_fields(pairs)
    return 0


def cmd_members(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    members = [
        m for m in api.recipients(ws, args.name) if args.status is None or m.status == args.status
    ]
    if args.json:
        print_json(
            [
                {
                    "contact": m.contact,
                    "email": m.email,
                    "status": m.status,
                    "sent_at": m.sent_at,
                    "reminded_at": m.reminded_at,
                    "token_expires_at": m.token_expires_at,
                }
                for m in members
            ]
        )
        return 0
    print_table(
        [(m.contact, m.email, m.status, _when(m.sent_at), _when(m.reminded_at)) for m in members],
        ["contact", "email", "status", "sent", "reminded"],
    )
    return 0
