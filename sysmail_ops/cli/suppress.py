"""`sysmail-ops suppress ...`: the do-not-contact list that marketing and survey mail skips."""

from __future__ import annotations

import argparse

from sysmail_ops.cli.common import open_workspace
from sysmail_ops.cli.output import frame_rows, print_json, print_table
from sysmail_ops.records import suppression


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "suppress", help="the suppression list: addresses marketing, follow-up and surveys skip"
    )
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = acts.add_parser("add", help="put an address on the list (kept if already there)")
    add.add_argument("address")
    add.add_argument(
        "--reason", choices=suppression.REASONS, default="manual", help="why (default manual)"
    )
    add.add_argument("--source", help="where the request came from (free text)")
    add.set_defaults(handler=cmd_add)
    rm = acts.add_parser("remove", help="take an address off the list: it may be mailed again")
    rm.add_argument("address")
    rm.set_defaults(handler=cmd_remove)
    ls = acts.add_parser("list", help="the suppressed addresses, newest first")
    ls.add_argument("--reason", choices=suppression.REASONS, help="only this reason")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=cmd_list)


def cmd_add(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    entry, new = suppression.add(ws, args.address, reason=args.reason, source=args.source)
    if new:
        print(f"suppressed {entry.address} ({entry.reason})")
    else:
        since = f"{entry.created_at:%Y-%m-%d}"
        print(f"{entry.address} was already suppressed ({entry.reason}, since {since})")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    entry = suppression.remove(ws, args.address)
    print(f"removed {entry.address} from the suppression list")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    df = suppression.list_suppressed(ws, reason=args.reason)
    if args.json:
        print_json(frame_rows(df))
        return 0
    rows = [
        [r["address"], r["reason"], r["source"], r["created_at"].strftime("%Y-%m-%d %H:%M")]
        for r in frame_rows(df)
    ]
    print_table(rows, ["ADDRESS", "REASON", "SOURCE", "SINCE (UTC)"])
    print(f"{len(rows)} suppressed address(es)")
    return 0
