"""`sysmail-ops accounts ...`: bind, list, edit, test system emails."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from sysmail_ops.cli.common import on_off, open_workspace
from sysmail_ops.cli.output import print_fields, print_json, print_table, safe, warn
from sysmail_ops.config import accounts as api
from sysmail_ops.errors import ValidationError
from sysmail_ops.mail.credentials import Secret
from sysmail_ops.sending import connection_test as conntest


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("accounts", help="bind, list, edit and test system emails (at most 10)")
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = acts.add_parser("add", help="bind a new system email")
    add.add_argument("name", help="short unique name used on the command line")
    _fields(add, required=True)
    _password_options(add)
    add.set_defaults(handler=cmd_add)

    ls = acts.add_parser("list", help="list the bound system emails")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=cmd_list)

    show = acts.add_parser("show", help="show one system email and its recent tests")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=cmd_show)

    edit = acts.add_parser("edit", help="change fields of a system email")
    edit.add_argument("name")
    _fields(edit, required=False)
    _password_options(edit)
    edit.add_argument(
        "--clear-password", action="store_true", help="remove the password (relay without login)"
    )
    edit.set_defaults(handler=cmd_edit)

    rm = acts.add_parser("remove", help="unbind a system email")
    rm.add_argument("name")
    rm.set_defaults(handler=cmd_remove)

    arch = acts.add_parser(
        "archiving", help='switch "Sent Email Archiving" / "Received Email Archiving"'
    )
    arch.add_argument("name")
    arch.add_argument("--sent", type=on_off, metavar="on|off", help="Sent Email Archiving")
    arch.add_argument("--received", type=on_off, metavar="on|off", help="Received Email Archiving")
    arch.set_defaults(handler=cmd_archiving)

    test = acts.add_parser(
        "test", help="test the connection (exit 1 when the test fails) and record it"
    )
    test.add_argument("name")
    test.add_argument("--send-to", metavar="ADDR", help="also send a test message to ADDR")
    test.add_argument("--timeout", type=float, default=10.0, help="seconds per step (10)")
    test.add_argument("--json", action="store_true", help="print JSON")
    test.set_defaults(handler=cmd_test)


def _fields(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--address", required=required, help="email account (the From address)")
    p.add_argument("--host", required=required, help="SMTP server host")
    p.add_argument("--kind", choices=api.KINDS, help="kind of system email (default: other)")
    p.add_argument("--description", help="optional description")
    p.add_argument("--display-name", help="name shown in From")
    p.add_argument("--login", help="SMTP login (default: the address)")
    p.add_argument("--port", type=int, help="SMTP port (default by security: 587, 465, 25)")
    p.add_argument("--security", choices=api.SECURITIES, help="starttls (default), ssl or none")
    p.add_argument("--ca-bundle", metavar="PEM", help="CA bundle for a private relay")
    p.add_argument(
        "--allow-insecure-auth",
        type=on_off,
        metavar="on|off",
        help="allow AUTH over an unencrypted connection to a non-local host",
    )
    p.add_argument("--imap-host", help="IMAP host for received archiving (default derived)")
    p.add_argument("--imap-port", type=int, help="IMAP port (default 993)")
    p.add_argument("--imap-security", choices=api.SECURITIES, help="IMAP security (default ssl)")
    p.add_argument("--rate-limit", type=int, metavar="N", help="at most N messages per minute")
    p.add_argument("--unsubscribe-mailto", metavar="ADDR", help="List-Unsubscribe mailto")
    p.add_argument("--unsubscribe-url", metavar="URL", help="List-Unsubscribe https URL")
    p.add_argument("--sent-archiving", type=on_off, metavar="on|off", help="default by kind")
    p.add_argument("--received-archiving", type=on_off, metavar="on|off", help="default by kind")


def _password_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    g.add_argument(
        "--password-env", metavar="NAME", help="store a reference env:NAME, read when sending"
    )
    g.add_argument("--no-password", action="store_true", help="the relay needs no login")


def _field_values(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "from_address": args.address,
        "smtp_host": args.host,
        "kind": args.kind,
        "description": args.description,
        "display_name": args.display_name,
        "login": args.login,
        "smtp_port": args.port,
        "smtp_security": args.security,
        "ca_bundle": args.ca_bundle,
        "allow_insecure_auth": args.allow_insecure_auth,
        "imap_host": args.imap_host,
        "imap_port": args.imap_port,
        "imap_security": args.imap_security,
        "sent_archiving": args.sent_archiving,
        "received_archiving": args.received_archiving,
        "rate_limit_per_minute": args.rate_limit,
        "unsubscribe_mailto": args.unsubscribe_mailto,
        "unsubscribe_url": args.unsubscribe_url,
    }


def _read_password(args: argparse.Namespace, *, prompt: bool) -> tuple[Secret | None, str | None]:
    """(password, reference) from the flags; a hidden prompt where a person is typing."""
    if args.password_env:
        return None, f"env:{args.password_env}"
    if args.no_password:
        return Secret(""), None
    if args.password_stdin:
        # An unset $PW in a script gives an empty line: that must not quietly turn AUTH off.
        return _not_empty(sys.stdin.readline().rstrip("\r\n"), "--password-stdin read"), None
    if not prompt:
        return None, None
    if not sys.stdin.isatty():
        raise ValidationError(
            "no password given: use --password-stdin, --password-env NAME or --no-password"
        )
    return _not_empty(getpass.getpass(f"Password for {args.address}: "), "the prompt got"), None


def _not_empty(password: str, source: str) -> Secret:
    if not password:
        raise ValidationError(
            f"{source} an empty password: give the password, or --no-password for a relay "
            "without login"
        )
    return Secret(password)


def cmd_add(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    password, ref = _read_password(args, prompt=True)
    values = {k: v for k, v in _field_values(args).items() if v is not None}
    values.setdefault("kind", "other")
    values.setdefault("smtp_security", "starttls")
    account = api.add_account(ws, args.name, password=password, password_ref=ref, **values)
    for hint in account.hints():
        warn(hint)
    used, limit = api.usage(ws)
    print(
        f"bound {account.name} ({api.KIND_LABELS[account.kind]}, {account.from_address}); "
        f"{used} of {limit} used"
    )
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    password, ref = _read_password(args, prompt=False)
    account = api.edit_account(
        ws,
        args.name,
        password=password,
        password_ref=ref,
        clear_password=args.clear_password,
        **_field_values(args),
    )
    for hint in account.hints():
        warn(hint)
    print(f"updated {account.name}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    accounts = api.list_accounts(ws)
    if args.json:
        print_json([a.to_dict() for a in accounts])
        return 0
    last = {a.name: conntest.recent_tests(ws, a.name, 1) for a in accounts}
    rows = []
    for a in accounts:
        t = last[a.name][0] if last[a.name] else None
        verdict = ("ok" if t["ok"] else f"FAILED at {t['step']}") if t else "never tested"
        rows.append(
            [
                a.name,
                api.KIND_LABELS[a.kind],
                a.from_address,
                f"{a.smtp_host}:{a.smtp_port} ({a.smtp_security})",
                a.sent_archiving,
                a.received_archiving,
                verdict,
            ]
        )
    print_table(
        rows, ["NAME", "KIND", "ADDRESS", "SMTP SERVER", "SENT ARCH", "RECV ARCH", "LAST TEST"]
    )
    used, limit = api.usage(ws)
    print(f"{used} of {limit} system emails used")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    a = api.get_account(ws, args.name)
    tests = conntest.recent_tests(ws, a.name)
    if args.json:
        print_json({**a.to_dict(), "hints": a.hints(), "tests": tests})
        return 0
    print_fields(
        [
            ("name", a.name),
            ("kind", api.KIND_LABELS[a.kind]),
            ("description", a.description),
            ("email account", a.from_address),
            ("display name", a.display_name),
            ("login", a.login),
            ("password", a.password_display or "(none: no login)"),
            ("SMTP server", f"{a.smtp_host}:{a.smtp_port} ({a.smtp_security})"),
            ("CA bundle", a.ca_bundle),
            ("insecure auth", a.allow_insecure_auth),
            ("IMAP server", f"{a.imap_host}:{a.imap_port} ({a.imap_security})"),
            ("Sent Email Archiving", a.sent_archiving),
            ("Received Email Archiving", a.received_archiving),
            ("rate limit", f"{a.rate_limit_per_minute}/min" if a.rate_limit_per_minute else None),
            (
                "List-Unsubscribe",
                ", ".join(filter(None, [a.unsubscribe_mailto, a.unsubscribe_url])),
            ),
            ("created", a.created_at.isoformat(timespec="seconds") + "Z"),
            ("updated", a.updated_at.isoformat(timespec="seconds") + "Z"),
        ]
    )
    for hint in a.hints():
        print(f"hint: {safe(hint)}")
    print("connection tests:" if tests else "connection tests: none yet")
    for t in tests:
        verdict = "ok" if t["ok"] else f"FAILED at {t['step']}"
        print(f"  {t['tested_at']}  {safe(verdict)}: {safe(t['message'])}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    api.remove_account(ws, args.name)
    used, limit = api.usage(ws)
    print(f"removed {args.name}; {used} of {limit} used")
    return 0


def cmd_archiving(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    if args.sent is None and args.received is None:
        a = api.get_account(ws, args.name)
    else:
        a = api.set_archiving(ws, args.name, sent=args.sent, received=args.received)
    print(
        f"{a.name}: Sent Email Archiving {'on' if a.sent_archiving else 'off'}, "
        f"Received Email Archiving {'on' if a.received_archiving else 'off'}"
    )
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    result = conntest.test_account(ws, args.name, send_to=args.send_to, timeout=args.timeout)
    if args.json:
        print_json(result.to_dict())
    elif result.ok:
        print(f"{args.name}: OK ({result.duration_ms:.0f} ms) {safe(result.message)}")
        if result.greeting:
            print(f"  server: {safe(result.greeting)}")
    else:
        print(f"{args.name}: FAILED at {safe(result.message)}")
    return 0 if result.ok else 1
