"""`sysmail-ops settings ...`: workspace settings (survey link base URL, token and quiet days)."""

from __future__ import annotations

import argparse
from typing import Any

from sysmail_ops.cli.common import open_workspace
from sysmail_ops.cli.output import print_json, print_table, warn
from sysmail_ops.config import settings as api


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("settings", help="workspace settings: survey link base URL, token days")
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = acts.add_parser("list", help="every setting with its value, default and meaning")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=cmd_list)
    st = acts.add_parser("set", help="change a setting (checked; bad values change nothing)")
    st.add_argument("key", choices=list(api.DEFINITIONS), metavar="KEY", help="setting name")
    st.add_argument("value", help="the new value")
    st.set_defaults(handler=cmd_set)
    rs = acts.add_parser("reset", help="forget a setting's value so its default applies")
    rs.add_argument("key", choices=list(api.DEFINITIONS), metavar="KEY", help="setting name")
    rs.set_defaults(handler=cmd_reset)


def _dict(s: api.Setting) -> dict[str, Any]:
    return {
        "name": s.name,
        "value": s.value,
        "default": s.default,
        "is_default": s.is_default,
        "updated_at": s.updated_at,
        "help": s.help,
    }


def cmd_list(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    items = api.list_settings(ws)
    if args.json:
        print_json([_dict(s) for s in items])
        return 0
    rows = [[s.name, s.value, "(default)" if s.is_default else "", s.help] for s in items]
    print_table(rows, ["NAME", "VALUE", "", "MEANING"])
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    value = api.set_setting(ws, args.key, args.value)
    print(f"{args.key} = {value}")
    if args.key == "public_base_url":
        hint = api.url_hint(str(value))
        if hint:
            warn(hint)
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    value = api.reset_setting(ws, args.key)
    print(f"{args.key} = {value} (default)")
    return 0
