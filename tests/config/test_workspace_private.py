"""A private workspace (0700, files 0600) and a key file in trouble said plainly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from private_modes import loose_umask, mode_of, not_private

from sysmail_ops.cli import main
from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace

__all__ = ["loose_umask"]

CLI = [sys.executable, "-m", "sysmail_ops"]


def test_init_and_open_make_a_private_workspace_under_umask_022(
    loose_umask: None, tmp_path: Path
) -> None:
    ws, created = Workspace.init(tmp_path / "new" / "ws")
    assert created
    assert mode_of(tmp_path / "new") == 0o755  # a folder above the workspace is not ours
    assert ws.db_path.exists() and ws.key_path.exists()
    assert not_private(ws.home) == []
    Workspace.open(ws.home).store.migrate()
    accounts.add_account(
        Workspace.open(ws.home),
        "service",
        kind="customer_service",
        from_address="service@example.com",
        smtp_host="smtp.example.com",
        password="S3cret-pass",
    )
    assert not_private(ws.home) == []


def test_init_tightens_a_loose_workspace_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "ws"
    ws, _ = Workspace.init(home)
    (home / "runs" / "old").mkdir()
    (home / "runs" / "old" / "report.html").write_text("<p>old</p>")
    for path, mode in [
        (home, 0o755),
        (home / "runs", 0o755),
        (home / "runs" / "old", 0o775),
        (ws.db_path, 0o644),
        (ws.key_path, 0o644),
        (home / "runs" / "old" / "report.html", 0o664),
    ]:
        path.chmod(mode)
    assert main(["--home", str(home), "init"]) == 0
    out = capsys.readouterr().out
    assert "tightened 3 files to 0600" in out
    assert "tightened 3 folders to 0700" in out
    assert not_private(home) == []
    assert main(["--home", str(home), "init"]) == 0
    assert "tightened" not in capsys.readouterr().out
    # the Python API says the same
    ws.db_path.chmod(0o640)
    again, _ = Workspace.init(home)
    assert (again.tightened.files, again.tightened.folders) == (1, 0)
