"""`sysmail-ops sources ...`: the systems that post events to `serve` (POST /events)."""

from __future__ import annotations

import argparse

from sysmail_ops.cli.common import open_workspace
from sysmail_ops.cli.output import print_json, print_table
from sysmail_ops.flows import intake


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sources", help="event sources: the systems that post events to `serve`, each with a token"
    )
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = acts.add_parser("add", help="add a source and print its bearer token (shown once)")
    add.add_argument("name", help="lowercase letters, digits, '-' or '_' (e.g. erp)")
    add.set_defaults(handler=cmd_add)
    ls = acts.add_parser("list", help="the sources and whether each is active")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=cmd_list)
    rv = acts.add_parser("revoke", help="stop a source's token working (at once)")
    rv.add_argument("name")
    rv.set_defaults(handler=cmd_revoke)


def cmd_add(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    token = intake.add_source(ws, args.name)
    print(f"added source {args.name}; its token (shown only now, keep it in a secret store):")
    print(token)
    print("post events with: Authorization: Bearer <token>  to  <serve URL>/events")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    found = intake.list_sources(ws)
    if args.json:
        print_json(
            [
                {"name": s.name, "created_at": s.created_at, "revoked_at": s.revoked_at}
                for s in found
            ]
        )
        return 0
    rows = [
        [
            s.name,
            "active" if s.active else "revoked",
            f"{s.created_at:%Y-%m-%d %H:%M}",
            f"{s.revoked_at:%Y-%m-%d %H:%M}" if s.revoked_at else "",
        ]
        for s in found
    ]
    print_table(rows, ["NAME", "STATE", "ADDED (UTC)", "REVOKED (UTC)"])
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    intake.revoke_source(ws, args.name)
    print(f"revoked source {args.name}: its token no longer works")
    return 0
