"""The whole demo under umask 022: every folder in the workspace is 0700, every file 0600."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from private_modes import not_private


@pytest.mark.slow  # the full demo: ~20 s, report kernels included
def test_demo_under_umask_022_leaves_a_private_workspace(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "sysmail_ops", "--home", str(home), "demo", "--sink-port", "0"],
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.umask(0o022),
        check=False,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    kinds = {p.relative_to(home).parts[0] for p in home.rglob("*")}
    # what the demo writes: database, key, journal folder, capture mailbox and certificate,
    # the sent archive, report runs (notebook, HTML, charts) and the preview folder
    assert {"sysmail.duckdb", "secret.key", "mailbox", "sink", "archive", "runs"} <= kinds
    assert list(home.glob("runs/*/*/*/report.ipynb")) and list(home.glob("runs/*/*/*/*.png"))
    assert not_private(home) == []
