"""`sysmail-ops console`: the Admin Console, the admin notebooks served as web pages.

Voilà runs each notebook in its own kernel and shows only its widgets (code
cells are stripped). It runs as a child process on the loopback interface; the
workspace reaches the kernels through ``SYSMAIL_HOME`` in their environment.

The Voilà command line is built by ``voila_command`` from a ``ConsoleOptions``,
so a new option (a token, read-only mode, ...) is one field and one argument.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sysmail_ops.cli import console_access
from sysmail_ops.cli.common import open_workspace
from sysmail_ops.config.workspace import ENV_HOME
from sysmail_ops.errors import SysmailError, ValidationError
from sysmail_ops.store.database import ENV_LOCK_WAIT

NOTEBOOKS_PACKAGE = "sysmail_ops.widgets.notebooks"  # the top-level notebooks/, as package data
DEFAULT_PORT = 8866  # Voilà's own default
LOOPBACK = "127.0.0.1"
FIRST_PAGE = "01_email_management.ipynb"


@dataclass
class ConsoleOptions:
    """What the console is started with; each field becomes Voilà options."""

    notebooks: Path
    port: int = DEFAULT_PORT
    ip: str = LOOPBACK
    extra: list[str] = field(default_factory=list)  # more Voilà options, as given


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "console",
        help="serve the Admin Console (the admin notebooks' forms as web pages, via Voila) "
        "on 127.0.0.1",
    )
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to listen on ({DEFAULT_PORT})"
    )
    console_access.add_arguments(p)  # --ip, --token, --read-only, --set-password, ...
    p.set_defaults(handler=cmd_console)


def notebooks_dir() -> Path:
    """The folder of the Admin Console notebooks: notebooks/ in a checkout, a copy in a wheel."""
    try:
        folder = Path(str(resources.files(NOTEBOOKS_PACKAGE)))
    except ModuleNotFoundError:  # an editable install made before notebooks/ became a package
        raise SysmailError(
            f"{NOTEBOOKS_PACKAGE} is not installed: reinstall sysmail-ops (make setup)"
        ) from None
    if not (folder / FIRST_PAGE).is_file():
        raise SysmailError(f"the Admin Console notebooks are missing from {folder}")
    return folder


def voila_command(options: ConsoleOptions) -> list[str]:
    """The Voilà command line: widgets only, no code, no tracebacks sent to the page."""
    return [
        sys.executable,
        "-m",
        "voila",
        "--no-browser",
        f"--Voila.ip={options.ip}",
        f"--port={options.port}",
        "--Voila.port_retries=0",  # the port asked for, or a clear failure
        "--VoilaConfiguration.strip_sources=True",
        "--VoilaConfiguration.show_tracebacks=False",
        *options.extra,
        str(options.notebooks),
    ]


def _check_port(ip: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ValidationError(f"--port must be from 1 to 65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((ip, port))
        except OSError:
            raise ValidationError(
                f"port {port} on {ip} is in use: choose another with --port"
            ) from None


def cmd_console(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    done = console_access.password_command(args, ws)  # --set-password / --clear-password
    if done is not None:
        return done
    ip = console_access.listen_address(args, ws)  # non-loopback without a login: refused
    options = ConsoleOptions(notebooks=notebooks_dir(), port=args.port, ip=ip)
    _check_port(options.ip, options.port)
    env = dict(os.environ)
    env[ENV_HOME] = str(ws.home)  # the kernels open this workspace (the notebooks' home=None)
    if args.lock_wait is not None:
        env[ENV_LOCK_WAIT] = str(args.lock_wait)
    guard = console_access.prepare(args, ws, options.notebooks, FIRST_PAGE, env)
    options.notebooks = guard.notebooks
    options.extra.extend(guard.voila_options)
    url = f"http://{options.ip}:{options.port}/voila/render/{guard.first_page}{guard.query}"
    print(f"Admin Console for {ws.home}: {url} (Ctrl-C stops it)", flush=True)
    print(f"login: {guard.login}{', read-only' if args.read_only else ''}", flush=True)
    # Voila gets its own session: a Ctrl-C in the terminal reaches the console alone, which
    # stops Voila (and so its kernels) with one SIGINT; SIGTERM to the console does the same.
    child = subprocess.Popen(voila_command(options), env=env, start_new_session=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt
