"""`sysmail-ops archive ...`: the email object, sent and received mail, threads and fetching."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from sysmail_ops.cli.common import open_workspace
from sysmail_ops.cli.output import (
    frame_rows,
    print_fields,
    print_json,
    print_table,
    safe,
    write_out,
)
from sysmail_ops.errors import ValidationError
from sysmail_ops.records import archive


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser(
        "archive", help="the email object: archived sent and received mail, threads, IMAP fetch"
    )
    aacts = a.add_subparsers(dest="action", metavar="ACTION", required=True)
    als = aacts.add_parser(
        "list", help="list archived messages, newest first (--object: the conversation, in order)"
    )
    als.add_argument("--account")
    als.add_argument(
        "--object", metavar="TYPE:ID", help="the whole conversation about this object, oldest first"
    )
    als.add_argument("--direction", choices=("sent", "received"))
    als.add_argument("--limit", type=int, default=50)
    als.add_argument("--json", action="store_true", help="print JSON")
    als.set_defaults(handler=cmd_list)
    ash = aacts.add_parser("show", help="one archived message (metadata, or --raw .eml)")
    ash.add_argument("id")
    ash.add_argument("--raw", action="store_true", help="write the raw .eml to stdout")
    ash.add_argument("--json", action="store_true", help="print JSON")
    ash.set_defaults(handler=cmd_show)
    apr = aacts.add_parser(
        "prune", help="delete archived messages (sent and received) older than a date"
    )
    apr.add_argument("--before", required=True, help="ISO date")
    apr.set_defaults(handler=cmd_prune)

    fe = aacts.add_parser(
        "fetch",
        help="fetch new received mail over IMAP (accounts with Received Email Archiving on)",
    )
    fe.add_argument("accounts", nargs="*", metavar="ACCOUNT", help="default: every account on")
    fe.add_argument(
        "--since", metavar="DATE", help="first fetch window: ISO date or Nd (default 30d)"
    )
    fe.add_argument(
        "--folder", action="append", metavar="NAME", help="folder to read (repeatable; INBOX)"
    )
    fe.add_argument("--timeout", type=float, default=30.0, help="seconds per IMAP step (30)")
    fe.add_argument("--json", action="store_true", help="print JSON")
    fe.set_defaults(handler=cmd_fetch)
    st = aacts.add_parser("status", help="per account: last fetch, messages fetched, last error")
    st.add_argument("account", nargs="?")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(handler=cmd_status)
    th = aacts.add_parser("thread", help="one thread, sent and received, oldest first")
    th.add_argument("message_id", metavar="MESSAGE-ID")
    th.add_argument("--json", action="store_true", help="print JSON")
    th.set_defaults(handler=cmd_thread)
    cr = aacts.add_parser(
        "imap-login", help="give an account an IMAP login apart from its SMTP one (or --clear)"
    )
    cr.add_argument("name")
    g = cr.add_mutually_exclusive_group(required=True)
    g.add_argument("--login", help="the mailbox login (its password is read from stdin)")
    g.add_argument("--clear", action="store_true", help="use the account's own login again")
    cr.set_defaults(handler=cmd_imap_login)


def _date(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value).replace(tzinfo=None)
    except ValueError:
        raise ValidationError(f"--before takes an ISO date, got {value!r}") from None


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def cmd_list(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    df = archive.list_archive(
        ws,
        account=args.account,
        related=args.object,
        direction=args.direction,
        limit=args.limit,
        oldest_first=bool(args.object),
    )
    if args.json:
        print_json(frame_rows(df))
        return 0
    rows = [
        [
            r["id"],
            _when(r["date"]),
            r["direction"],
            r["account"],
            safe(r["from_addr"] or ""),
            safe(", ".join(r["to_addrs"] or [])),
            safe((r["subject"] or "")[:40]),
            safe(f"{r['related_type']}:{r['related_id']}") if r["related_type"] else "",
        ]
        for r in frame_rows(df)
    ]
    print_table(rows, ["ID", "DATE (UTC)", "DIR", "ACCOUNT", "FROM", "TO", "SUBJECT", "OBJECT"])
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    if args.raw:
        write_out(archive.raw_message(ws, args.id))  # a reader gone: BrokenPipeError
        return 0
    entry = archive.get_entry(ws, args.id)
    if args.json:
        print_json(entry)
    else:
        print_fields(entry.items())
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    n = archive.prune(ws, _date(args.before))
    print(f"deleted {n} archived message(s) (sent and received) dated before {args.before}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from sysmail_ops.records import received

    ws = open_workspace(args)
    results = received.fetch(
        ws, args.accounts or None, since=args.since, folders=args.folder, timeout=args.timeout
    )
    if args.json:
        print_json(
            [
                {
                    "account": r.account,
                    "archived": r.archived,
                    "skipped": r.skipped,
                    "error": r.error,
                    "folders": [vars(f) for f in r.folders],
                }
                for r in results
            ]
        )
    else:
        if not results:
            print("no system email has Received Email Archiving on: nothing to fetch")
        for r in results:
            print(safe(r.summary()))
    return 0 if all(r.ok for r in results) else 1


def cmd_status(args: argparse.Namespace) -> int:
    from sysmail_ops.records import received

    ws = open_workspace(args)
    rows = received.status(ws, args.account)
    if args.json:
        print_json(rows)
        return 0
    print_table(
        [
            [
                r["account"],
                "on" if r["received_archiving"] else "off",
                _when(r["last_fetch_at"]),
                "" if r["last_fetched"] is None else r["last_fetched"],
                r["total_fetched"],
                safe((r["last_error"] or "")[:60]),
            ]
            for r in rows
        ],
        ["ACCOUNT", "RECV ARCH", "LAST FETCH (UTC)", "LAST", "TOTAL", "LAST ERROR"],
    )
    for r in rows:
        for folder in r["folders"]:
            print(f"  {r['account']}: {safe(folder)}")
    return 0


def cmd_thread(args: argparse.Namespace) -> int:
    from sysmail_ops.records import received

    ws = open_workspace(args)
    rows = received.thread(ws, args.message_id)
    if args.json:
        print_json(rows)
        return 0
    print_table(
        [
            [
                _when(r["date"]),
                r["direction"],
                safe(r["from_addr"] or ""),
                safe((r["subject"] or "")[:50]),
                safe(r["message_id"]),
                safe(f"{r['related_type']}:{r['related_id']}") if r["related_type"] else "",
            ]
            for r in rows
        ],
        ["DATE (UTC)", "DIR", "FROM", "SUBJECT", "MESSAGE-ID", "OBJECT"],
    )
    return 0


def cmd_imap_login(args: argparse.Namespace) -> int:
    from sysmail_ops.mail.credentials import Secret
    from sysmail_ops.records import received

    ws = open_workspace(args)
    if args.clear:
        received.set_imap_credentials(ws, args.name, login=None, password=None)
        print(f"{args.name}: IMAP uses the account's own login again")
        return 0
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise ValidationError("no IMAP password on standard input")
    received.set_imap_credentials(ws, args.name, login=args.login, password=Secret(password))
    print(f"{args.name}: IMAP logs in as {safe(args.login)} (password stored encrypted)")
    return 0
