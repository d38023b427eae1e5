"""The ``sysmail-ops`` command: thin over the Python API.

Each command calls one library function; a ``SysmailError`` becomes one line
on stderr and exit code 2 (as do argparse's usage errors).
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
from collections.abc import Callable, Sequence

from sysmail_ops import __version__
from sysmail_ops.cli import (
    accounts,
    archive,
    audit,
    campaigns,
    console,
    logs,
    prune,
    sending,
    settings,
    sink,
    sources,
    subscriptions,
    suppress,
    surveys,
    templates,
    workflows,
    workspace,
)
from sysmail_ops.cli.output import safe
from sysmail_ops.errors import SysmailError
from sysmail_ops.store import audit as audit_trail

Handler = Callable[[argparse.Namespace], int]
GROUPS = (
    workspace,
    accounts,
    templates,
    sending,
    logs,
    archive,
    sink,
    subscriptions,
    campaigns,
    suppress,
    surveys,
    settings,
    workflows,
    sources,
    prune,
    console,
    audit,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sysmail-ops",
        description="Bind, test and use a company's system emails.",
    )
    parser.add_argument("--version", action="version", version=f"sysmail-ops {__version__}")
    parser.add_argument(
        "--home",
        help="workspace folder (default: $SYSMAIL_HOME, else the per-user data folder)",
    )
    parser.add_argument(
        "--lock-wait",
        type=float,
        metavar="SECONDS",
        help="how long to wait for another process using the workspace (default 30)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _run(argv)
        finally:  # a reader gone is found here (after --help too), not in the last flush at exit
            sys.stdout.flush()
    except BrokenPipeError:
        if not _stdout_broken():  # from something else than stdout (a socket): not hidden
            raise
        return _reader_gone()


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        with audit_trail.acting("cli"):  # changes made by this command are audited as the CLI's
            return handler(args)
    except SysmailError as exc:
        print(f"sysmail-ops: error: {safe(exc)}", file=sys.stderr)  # one line, no controls
        return 2
    except KeyboardInterrupt:
        print("sysmail-ops: interrupted", file=sys.stderr)
        return 130


def _reader_gone() -> int:
    """The reader of stdout went away (``sysmail-ops logs list | head -1``): end quietly.

    As git, ls and jq do: no message, the status a shell shows for a command ended
    by SIGPIPE (141). Python ignores SIGPIPE, so the write raised BrokenPipeError
    instead; stdout is pointed at /dev/null so the interpreter's final flush of what
    is still buffered does not raise again (the recipe in the ``signal`` docs).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def _stdout_broken() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll says POLLERR)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll(), or no real stdout
        return True
