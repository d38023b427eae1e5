"""The command starts light: building the parser and a simple read load no heavy package.

Every command module is imported to build the parser, and they import the whole
library, so a library module that imports pandas, papermill or matplotlib at
the top makes ``sysmail-ops --help`` take most of a second. These tests run the
command in a fresh interpreter and look at ``sys.modules`` afterwards; they say
what is loaded, never how long it took (``bench/bench_cli.py`` measures that).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sysmail_ops.config.workspace import Workspace

# Packages that cost from ten to thousands of milliseconds to import.
HEAVY = {
    "aiosmtpd",
    "asyncio",
    "croniter",
    "duckdb",
    "email_validator",
    "IPython",
    "jinja2",
    "jupyter_core",
    "matplotlib",
    "nbclient",
    "nbconvert",
    "nbformat",
    "numpy",
    "pandas",
    "papermill",
    "tqdm",
}

# Runs main(argv) and prints, as the last line of stdout, which heavy packages are loaded.
PROBE = """
import json, sys
from sysmail_ops.cli import main
heavy = set(json.loads(sys.argv[1]))
try:
    code = main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
loaded = sorted({m.split(".")[0] for m in sys.modules} & heavy)
print()
print(json.dumps({"code": code, "loaded": loaded}))
"""


def loaded_by(*argv: str) -> list[str]:
    """The heavy packages a fresh interpreter has imported after ``sysmail-ops *argv``."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(sorted(HEAVY)), *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["code"] in (0, None), out.stderr
    return list(result["loaded"])


def test_help_loads_no_heavy_package() -> None:
    assert loaded_by("--help") == []


@pytest.mark.parametrize("group", ["accounts", "logs", "campaigns", "subscriptions", "sink"])
def test_group_help_loads_no_heavy_package(group: str) -> None:
    assert loaded_by(group, "--help") == []


@pytest.mark.parametrize("argv", [["accounts", "list"], ["logs", "summary"]])
def test_simple_read_loads_only_duckdb(ws: Workspace, argv: list[str]) -> None:
    assert loaded_by("--home", str(ws.home), *argv) == ["duckdb"]


def test_probe_sees_a_heavy_import(tmp_path: Path) -> None:
    """The probe is no blind spot: a command that needs pandas is seen loading it."""
    ws, _ = Workspace.init(tmp_path / "ws")
    assert "pandas" in loaded_by("--home", str(ws.home), "logs", "list")
