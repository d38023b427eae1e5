"""`sysmail-ops init` and `sysmail-ops demo`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sysmail_ops.cli import accounts as accounts_cli
from sysmail_ops.cli import logs as logs_cli
from sysmail_ops.config.secrets import ENV_KEY
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.demo import main as demo
from sysmail_ops.templates import catalog as templates


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = sub.add_parser("init", help="create the workspace (safe to run again)")
    init.set_defaults(handler=cmd_init)

    d = sub.add_parser(
        "demo",
        help="the main job on the embedded defaults: a demo workspace on the capture server",
    )
    d.add_argument(
        "--sink-port",
        type=int,
        default=demo.SINK_PORT,
        help=f"capture server port ({demo.SINK_PORT}; 0 picks a free one)",
    )
    d.set_defaults(handler=cmd_demo)


def cmd_init(args: argparse.Namespace) -> int:
    ws, new_key = Workspace.init(args.home, lock_wait=args.lock_wait)
    templates.ensure_builtin(ws)
    print(f"workspace: {ws.home} (private: folders 0700, files 0600)")
    for line in ws.tightened.lines():
        print(line)
    print(f"database:  {ws.db_path} (schema version {ws.store.schema_version()})")
    if ws.secrets.origin.startswith("$"):
        print(f"secret key: from ${ENV_KEY}")
    else:
        state = "created" if new_key else "kept"
        print(f"secret key: {ws.key_path} ({state})")
    print(
        "The secret key is the one file that cannot be recreated: keep it in your backups. "
        "Without it the stored passwords must be entered again."
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    ws = demo.run(args.home, sink_port=args.sink_port, out=print)
    print()
    args.json = False
    args.home = str(ws.home)
    accounts_cli.cmd_list(args)
    print()
    print("Sending log (sysmail-ops logs summary):")
    logs_cli.cmd_summary(args)
    print()
    prog = _prog()
    print(f"Captured mail: {ws.mailbox_dir} (list it: {prog} --home {ws.home} sink list)")
    print(f"Keep the capture server running: {prog} --home {ws.home} sink")
    print("Notebooks: make lab (JupyterLab on notebooks/ with this workspace)")
    return 0


def _prog() -> str:
    """How the user called us, so the printed commands can be pasted (.venv/bin/...)."""
    called = Path(sys.argv[0])
    if called.name == "sysmail-ops" and called.exists():
        rel = os.path.relpath(called)
        return rel if not rel.startswith("..") else str(called)
    return "sysmail-ops"
