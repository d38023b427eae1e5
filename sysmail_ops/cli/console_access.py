"""Who may open the Admin Console (`sysmail-ops console`), and what a read-only one shows.

- Loopback by default. Any other ``--ip`` needs a login: a console password
  (``--set-password``, kept as Jupyter Server's argon2 hash in the workspace)
  or ``--token`` (a random token printed once, in the URL, and kept nowhere).
  Without either, a non-loopback address is refused with one line saying so.
- The login is Jupyter Server's own ``PasswordIdentityProvider`` inside Voilà,
  configured through a Voilà config file in a private folder (0700/0600) of
  the workspace, never on the command line (``ps`` shows no hash, no token).
  Its cookie is HttpOnly, SameSite=Lax, Secure behind https (``--behind-https``,
  or a request that arrived over https) and expires after ``--session-hours``;
  tornado also refuses a signed cookie older than that. Tornado's XSRF check
  is on: a form POST (the login) without the ``_xsrf`` token gets 403.
- ``--read-only`` serves only the viewing pages (``READ_ONLY_PAGES``: log,
  archive, analytics, audit) from a folder holding copies of just those, and
  gives every kernel ``SYSMAIL_READ_ONLY=1``: the library then refuses every
  change and every send (``store.access``), whatever a page asks for.
- Kernels get ``SYSMAIL_AUDIT_SOURCE=console``, and a first hidden cell (the
  Voilà prelaunch hook) names the session in ``SYSMAIL_AUDIT_USER``, so the
  audit trail says a change came from the console, from which login session
  and address.
"""

from __future__ import annotations

import argparse
import atexit
import fnmatch
import getpass
import ipaddress
import json
import os
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sysmail_ops.config import console as console_auth
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import ValidationError
from sysmail_ops.mail.credentials import Secret
from sysmail_ops.store import access, audit
from sysmail_ops.store.private import private_umask

if TYPE_CHECKING:
    from collections.abc import MutableMapping

__all__ = [
    "ADMIN_PAGES",
    "READ_ONLY_PAGES",
    "Access",
    "add_arguments",
    "audit_user_hook",
    "check_ip",
    "listen_address",
    "password_command",
    "prepare",
]

# Pages a --read-only console serves: they show, never change. Any other page,
# including one added later and not listed here, is left out of a read-only console.
READ_ONLY_PAGES = ("04_*.ipynb", "05_*.ipynb", "06_audit.ipynb")
# Pages with forms that change settings or send mail (never served read-only).
ADMIN_PAGES = ("01_*.ipynb", "02_*.ipynb", "03_*.ipynb")
DEFAULT_SESSION_HOURS = 12.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The console's access options (``console.register`` calls this)."""
    p.add_argument(
        "--ip",
        default="127.0.0.1",
        help="IPv4 address to listen on (127.0.0.1); any other needs --set-password or --token",
    )
    p.add_argument(
        "--token",
        action="store_true",
        help="require a random login token, printed once in the URL (kept nowhere)",
    )
    p.add_argument(
        "--read-only",
        action="store_true",
        help="serve only the log, archive, analytics and audit pages; refuse every change "
        "and every send",
    )
    p.add_argument(
        "--behind-https",
        action="store_true",
        help="the console is reached through an https reverse proxy: cookies are Secure",
    )
    p.add_argument(
        "--session-hours",
        type=float,
        default=DEFAULT_SESSION_HOURS,
        help=f"a login lasts this long ({DEFAULT_SESSION_HOURS:g} h)",
    )
    p.add_argument(
        "--set-password",
        action="store_true",
        help="set the console login password (prompted; stored hashed in the workspace), then exit",
    )
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="with --set-password: read the password from stdin instead of prompting",
    )
    p.add_argument(
        "--clear-password",
        action="store_true",
        help="remove the console login password, then exit",
    )


def _read_password(args: argparse.Namespace) -> Secret:
    if args.password_stdin:
        line = sys.stdin.readline(console_auth.MAX_LENGTH + 2).rstrip("\r\n")
        if not line:
            raise ValidationError("--password-stdin: stdin held no password")
        return Secret(line)
    if not sys.stdin.isatty():
        raise ValidationError("no terminal to prompt on: use --password-stdin")
    first = getpass.getpass("Console password: ")
    if getpass.getpass("Again: ") != first:
        raise ValidationError("the two passwords differ: nothing was changed")
    return Secret(first)


def password_command(args: argparse.Namespace, ws: Workspace) -> int | None:
    """``--set-password`` / ``--clear-password``: do it and return the exit code; else None."""
    if args.set_password and args.clear_password:
        raise ValidationError("--set-password and --clear-password cannot be combined")
    if args.password_stdin and not args.set_password:
        raise ValidationError("--password-stdin goes with --set-password")
    if args.set_password:
        console_auth.set_password(ws, _read_password(args))
        print(f"console password set (stored hashed in {ws.home})")
        return 0
    if args.clear_password:
        gone = console_auth.clear_password(ws)
        print("console password removed" if gone else "no console password was set")
        return 0
    return None


def _is_loopback(ip: str) -> bool:
    return ip == "localhost" or ipaddress.ip_address(ip).is_loopback


def check_ip(ip: str, *, has_password: bool, token: bool) -> str:
    """The address to listen on; a non-loopback one without a login is refused."""
    value = (ip or "").strip()
    if value != "localhost":
        try:
            value = str(ipaddress.IPv4Address(value))
        except ValueError:
            raise ValidationError(
                f"--ip takes an IPv4 address such as 127.0.0.1 or 0.0.0.0, got {ip[:60]!r}"
            ) from None
    if not _is_loopback(value) and not (has_password or token):
        raise ValidationError(
            f"refusing to serve the Admin Console on {value} without a login: set a password "
            "with `sysmail-ops console --set-password` (or start it with --token)"
        )
    return "127.0.0.1" if value == "localhost" else value


def listen_address(args: argparse.Namespace, ws: Workspace) -> str:
    """``--ip`` checked against the login configured (``check_ip``)."""
    has_password = console_auth.password_hash(ws) is not None
    return check_ip(args.ip, has_password=has_password, token=args.token)


@dataclass
class Access:
    """How one console run is protected: what ``console.cmd_console`` prints and passes on."""

    notebooks: Path  # the folder Voilà serves
    voila_options: list[str]  # more Voilà command-line options (paths only, no secret)
    first_page: str
    query: str = ""  # "?token=..." to print once
    login: str = "none"  # "password", "token" or "none"


def _private_dir(ws: Workspace) -> Path:
    root = ws.home / "console"
    with private_umask():
        root.mkdir(mode=0o700, exist_ok=True)
        run = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    atexit.register(shutil.rmtree, run, True)
    return run


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def _read_only_root(source: Path, into: Path) -> tuple[Path, list[str]]:
    pages = sorted(
        p.name
        for p in source.glob("*.ipynb")
        if any(fnmatch.fnmatch(p.name, pat) for pat in READ_ONLY_PAGES)
    )
    if not pages:
        raise ValidationError(f"no read-only page (log, archive, audit) in {source}")
    root = into / "pages"
    root.mkdir(mode=0o700)
    for name in pages:
        shutil.copyfile(source / name, root / name)
    return root, pages


def voila_config(
    *,
    hashed_password: str | None,
    token: str | None,
    behind_https: bool,
    session_hours: float,
) -> dict[str, Any]:
    """The Voilà config (``voila.json``): Jupyter Server's identity provider, cookies, XSRF."""
    days = session_hours / 24
    provider: dict[str, Any] = {
        "allow_password_change": False,  # a token login must not set a password from the page
        "cookie_options": {"httponly": True, "samesite": "Lax", "expires_days": days},
        "get_secure_cookie_kwargs": {"max_age_days": days},  # an older signed cookie is refused
    }
    if behind_https:
        provider["secure_cookie"] = True  # else Secure exactly when the request came over https
    if hashed_password:
        provider["hashed_password"] = hashed_password
        provider["password_required"] = True
    xsrf_cookie: dict[str, Any] = {"samesite": "Lax"}  # read by Voila's page script: not HttpOnly
    if behind_https:
        xsrf_cookie["secure"] = True
    voila: dict[str, Any] = {
        "tornado_settings": {"xsrf_cookies": True, "xsrf_cookie_kwargs": xsrf_cookie},
    }
    if token:
        voila["token"] = token
    return {"Voila": voila, "PasswordIdentityProvider": provider}


_HOOK_CONFIG = """\
# Written by `sysmail-ops console` for one run; removed when it stops.
from sysmail_ops.cli.console_access import audit_user_hook

c = get_config()  # noqa: F821 - given by traitlets
c.VoilaConfiguration.prelaunch_hook = audit_user_hook
"""


def prepare(
    args: argparse.Namespace,
    ws: Workspace,
    notebooks: Path,
    first_page: str,
    env: MutableMapping[str, str],
) -> Access:
    """Set up one console run: login, cookies, XSRF, read-only pages, audit identity.

    Writes the Voilà config into a private folder of the workspace (removed at
    exit) and fills ``env`` for the Voilà process and, through it, the kernels.
    """
    if not 0.01 <= args.session_hours <= 24 * 30:
        raise ValidationError(
            f"--session-hours must be from 0.01 to 720, got {args.session_hours:g}"
        )
    hashed = console_auth.password_hash(ws)
    token = secrets.token_urlsafe(32) if args.token else None
    run = _private_dir(ws)
    config = voila_config(
        hashed_password=hashed,
        token=token,
        behind_https=args.behind_https,
        session_hours=args.session_hours,
    )
    _write(run / "voila.json", json.dumps(config, indent=1))
    _write(run / "voila.py", _HOOK_CONFIG)
    out = Access(
        notebooks=notebooks,
        voila_options=[f"--Voila.config_file_paths={run}"],
        first_page=first_page,
        query=f"?token={token}" if token else "",
        login="password" if hashed else ("token" if token else "none"),
    )
    if args.read_only:
        out.notebooks, pages = _read_only_root(notebooks, run)
        out.first_page = pages[0]
        env[access.ENV_READ_ONLY] = "1"
    else:
        env.pop(access.ENV_READ_ONLY, None)
    env[audit.ENV_SOURCE] = "console"
    env[audit.ENV_USER] = f"console ({getpass.getuser()})"  # until a page's hook names the session
    return out


def audit_user_hook(req: Any, notebook: Any, cwd: str) -> Any:
    """Voilà's prelaunch hook: the page's kernel learns who opened it, for the audit trail.

    A first (hidden, output-less) cell sets ``SYSMAIL_AUDIT_USER`` in the kernel
    to the login session and the client address, e.g. ``console session 3f2a9c1e
    from 10.0.0.7``; with no login configured, ``console (no login) from 127.0.0.1``.
    """
    import nbformat

    user = getattr(req, "current_user", None)
    provider = req.settings.get("identity_provider")
    logged_in = bool(provider is not None and provider.auth_enabled and user is not None)
    who = f"session {str(getattr(user, 'username', ''))[:8]}" if logged_in else "(no login)"
    label = f"console {who} from {req.request.remote_ip}"
    source = (
        f"import os as _sysmail_os\n_sysmail_os.environ[{audit.ENV_USER!r}] = {label!r}\n"
        "del _sysmail_os"
    )
    notebook.cells.insert(0, nbformat.v4.new_code_cell(source))
    return notebook
