"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse

from sysmail_ops.config.workspace import Workspace


def open_workspace(args: argparse.Namespace) -> Workspace:
    return Workspace.open(args.home, lock_wait=args.lock_wait)


def on_off(value: str) -> bool:
    v = value.lower()
    if v in ("on", "yes", "true", "1"):
        return True
    if v in ("off", "no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {value!r}")
