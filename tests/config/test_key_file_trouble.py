"""A key file in trouble (a folder, a dangling or looping link, unreadable) said plainly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from private_modes import drop_dac_override

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import SecretKeyError
from sysmail_ops.mail.credentials import Secret

CLI = [sys.executable, "-m", "sysmail_ops"]


def _make_trouble(ws: Workspace, kind: str) -> None:
    ws.key_path.unlink()
    if kind == "directory":
        ws.key_path.mkdir()
    elif kind == "dangling symlink":
        ws.key_path.symlink_to(ws.home / "gone.key")
    elif kind == "unreadable":
        ws.key_path.write_bytes(b"x" * 44)
        ws.key_path.chmod(0)
    elif kind == "symlink loop":
        ws.key_path.symlink_to(ws.key_path)


TROUBLE = ["directory", "dangling symlink", "unreadable", "symlink loop"]
# What a missing key says, then why (the test below checks the missing key says it too).
MISSING = "is missing"
REMEDY = "restore it from your backup"


def _api(home: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Python API calls in a child that honours file modes (root reads a 0000 file otherwise)."""
    script = (
        "import sys\n"
        "from sysmail_ops.config.workspace import Workspace\n"
        "from sysmail_ops.errors import SecretKeyError\n"
        "from sysmail_ops.mail.credentials import Secret\n"
        f"home = {str(home)!r}\n"
        "try:\n"
        f"    {code}\n"
        "except SecretKeyError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(2)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        preexec_fn=drop_dac_override,
        check=False,
        timeout=60,
    )


def test_missing_key_message_is_the_pattern(ws: Workspace) -> None:
    ws.key_path.unlink()
    with pytest.raises(SecretKeyError) as info:
        Workspace.open(ws.home).secrets.encrypt(Secret("x"))
    assert MISSING in str(info.value) and REMEDY in str(info.value)


@pytest.mark.parametrize("kind", TROUBLE)
def test_key_file_trouble_is_a_plain_error_in_the_api(ws: Workspace, kind: str) -> None:
    _make_trouble(ws, kind)
    for code in [
        "Workspace.open(home).secrets.encrypt(Secret('x'))",
        "Workspace.open(home).secrets.derive_key(b'survey')",
        "Workspace.init(home)",
    ]:
        done = _api(ws.home, code)
        assert done.returncode == 2, (code, done.stderr)
        assert done.stderr == ""
        (line,) = done.stdout.splitlines()
        assert str(ws.key_path) in line and MISSING in line and REMEDY in line
    # a command that needs no secret still works
    done = _api(ws.home, "print(Workspace.open(home).store.schema_version())")
    assert done.returncode == 0 and done.stdout.strip().isdigit(), done.stderr


@pytest.mark.parametrize("kind", TROUBLE)
def test_key_file_trouble_is_one_line_from_the_cli(ws: Workspace, kind: str) -> None:
    _make_trouble(ws, kind)
    add = [
        "accounts", "add", "service", "--kind", "customer_service",
        "--address", "service@example.com", "--host", "smtp.example.com", "--password-stdin",
    ]  # fmt: skip
    for args, stdin in [(["init"], ""), (add, "S3cret-pass\n")]:
        done = subprocess.run(
            [*CLI, "--home", str(ws.home), *args],
            input=stdin,
            capture_output=True,
            text=True,
            preexec_fn=drop_dac_override,
            check=False,
            timeout=60,
        )
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        (line,) = done.stderr.splitlines()
        assert line.startswith("sysmail-ops: error: the secret key ")
        assert MISSING in line and REMEDY in line and "Traceback" not in line
    assert accounts.list_accounts(Workspace.open(ws.home)) == []
    assert os.path.lexists(ws.key_path)  # init never replaces what is in the way
