"""`sysmail-ops console` before Voila starts: the notebooks are found, Voila is told to strip
code and send no tracebacks, and a busy port or a missing workspace is one line, exit 2."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sysmail_ops.cli import console, main
from sysmail_ops.config.workspace import Workspace


def test_notebooks_found_through_the_data_package() -> None:
    folder = console.notebooks_dir()
    names = {p.name for p in folder.glob("*.ipynb")}
    assert {
        "01_email_management.ipynb",
        "02_object_templates.ipynb",
        "03_report_subscriptions.ipynb",
    } <= names
    assert folder.resolve() == (Path(__file__).parents[2] / "notebooks").resolve()


def test_voila_command_strips_code_and_tracebacks(tmp_path: Path) -> None:
    cmd = console.voila_command(console.ConsoleOptions(notebooks=tmp_path, port=9999))
    assert cmd[1:3] == ["-m", "voila"] and cmd[-1] == str(tmp_path)
    assert "--no-browser" in cmd and "--Voila.ip=127.0.0.1" in cmd and "--port=9999" in cmd
    assert "--VoilaConfiguration.strip_sources=True" in cmd
    assert "--VoilaConfiguration.show_tracebacks=False" in cmd
    assert "--Voila.port_retries=0" in cmd


def test_busy_port_is_one_line(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--home", str(ws.home), "console", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"port {port}" in err and "in use" in err


def test_missing_workspace_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path / "nowhere"), "console", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sysmail-ops: error:") and err.count("\n") == 1
