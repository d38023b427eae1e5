"""`sysmail-ops logs ...`: the sending log (`archive ...` is in cli.archive)."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING

from sysmail_ops.analytics import explore
from sysmail_ops.cli.common import open_workspace
from sysmail_ops.cli.output import frame_rows, print_fields, print_json, print_table
from sysmail_ops.errors import ValidationError
from sysmail_ops.records import export, sendlog

if TYPE_CHECKING:
    pass


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("logs", help="the sending log: one row per recipient per attempt")
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = acts.add_parser("list", help="list log rows, newest first")
    ls.add_argument("--status", choices=sendlog.STATUSES)
    ls.add_argument("--account")
    ls.add_argument("--since", help="24h, 7d, 30m or an ISO date")
    ls.add_argument("--batch", help="one batch id")
    ls.add_argument("--to", metavar="ADDR", help="only rows to this address (any case)")
    ls.add_argument("--domain", help="only rows to addresses at this domain (example.com)")
    ls.add_argument("--template", help="only rows of this object template")
    ls.add_argument("--use-case", choices=sendlog.USE_CASES, help="only rows of this use case")
    ls.add_argument("--key", help="only rows of this delivery key")
    ls.add_argument("--limit", type=int, default=50, help="at most this many rows (50; 0: all)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=cmd_list)
    show = acts.add_parser("show", help="one log row in full, with the server's reply")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=cmd_show)
    summ = acts.add_parser("summary", help="rows per account and status, last 24 h and 7 d")
    summ.add_argument("--json", action="store_true", help="print JSON")
    summ.set_defaults(handler=cmd_summary)
    pr = acts.add_parser("prune", help="delete log rows older than a date (retention)")
    pr.add_argument("--before", required=True, help="ISO date")
    pr.set_defaults(handler=cmd_prune)
    ex = acts.add_parser(
        "export", help="the send log and archive metadata as Parquet, one folder a day"
    )
    ex.add_argument("--since", required=True, help="first day, YYYY-MM-DD (UTC)")
    ex.add_argument("--until", help="last day, YYYY-MM-DD (UTC; default: today)")
    ex.add_argument("--to", required=True, metavar="DIR", help="the export folder")
    ex.set_defaults(handler=cmd_export)


def _date(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value).replace(tzinfo=None)
    except ValueError:
        raise ValidationError(f"--before takes an ISO date, got {value!r}") from None


_LIST_FLAGS = {
    "since": "--since",
    "account": "--account",
    "status": "--status",
    "use_case": "--use-case",
    "template": "--template",
    "to": "--to",
    "domain": "--domain",
    "key": "--key",
    "batch": "--batch",
}


def cmd_list(args: argparse.Namespace) -> int:
    flt = explore.log_filter(
        since=args.since,
        account=args.account,
        status=args.status,
        use_case=args.use_case,
        template=args.template,
        to=args.to,
        domain=args.domain,
        key=args.key,
        batch=args.batch,
        names=_LIST_FLAGS,
    )
    if args.limit < 0:
        raise ValidationError(f"--limit must be 0 (all) or more, got {args.limit}")
    ws = open_workspace(args)
    df = explore.log_rows(ws, flt, limit=args.limit or None)
    if args.json:
        print_json(frame_rows(df))
        return 0
    rows = [
        [
            r["id"],
            r["queued_at"].strftime("%Y-%m-%d %H:%M:%S"),
            r["account"],
            r["recipient"],
            r["status"],
            "" if r["smtp_code"] is None else int(r["smtp_code"]),
            r["attempt"],
            (r["subject"] or "")[:40],
        ]
        for r in frame_rows(df)
    ]
    print_table(
        rows, ["ID", "QUEUED (UTC)", "ACCOUNT", "RECIPIENT", "STATUS", "CODE", "TRY", "SUBJECT"]
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    row = sendlog.get_log(ws, args.id)
    if args.json:
        print_json(row)
    else:
        print_fields(row.items())
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    rows = sendlog.summary_rows(ws)
    if args.json:
        print_json([dict(zip(sendlog.SUMMARY_COLUMNS, r, strict=True)) for r in rows])
        return 0
    print_table(rows, ["ACCOUNT", "STATUS", "LAST 24H", "LAST 7D"])
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    n = sendlog.prune(ws, _date(args.before))
    print(f"deleted {n} log row(s) queued before {args.before}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    first = export.parse_day(args.since, "--since")
    last = export.parse_day(args.until, "--until") if args.until else None
    ws = open_workspace(args)
    print(export.export_days(ws, args.to, first, last).summary())
    return 0
