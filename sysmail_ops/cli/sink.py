"""`sysmail-ops sink`: the local capture SMTP server, and what it caught."""

from __future__ import annotations

import argparse

from sysmail_ops.cli.common import open_workspace
from sysmail_ops.cli.output import print_json, print_table, safe
from sysmail_ops.demo.main import SINK_PORT
from sysmail_ops.sink import server as api


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sink", help="run the local capture SMTP server (keeps every message as .eml)"
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (loopback only)")
    p.add_argument("--port", type=int, default=SINK_PORT, help=f"listen port ({SINK_PORT})")
    p.set_defaults(handler=cmd_run)
    acts = p.add_subparsers(dest="action", metavar="ACTION")
    ls = acts.add_parser("list", help="list the messages the capture server received")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=cmd_list)


def cmd_run(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    server = api.CaptureSink(ws.mailbox_dir, ws.sink_dir, args.host, args.port)
    api.run_forever(server, out=print)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    entries = api.list_mailbox(ws.mailbox_dir)
    if args.json:
        print_json(entries)
        return 0
    rows = [
        [e["received_at"], e["mail_from"], ", ".join(e["rcpt_tos"]), e["subject"], e["file"]]
        for e in entries
    ]
    print_table(rows, ["RECEIVED", "FROM", "TO", "SUBJECT", "FILE"])
    print(f"{len(entries)} message(s) in {safe(ws.mailbox_dir)}")
    return 0
