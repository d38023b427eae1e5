"""The `sysmail-ops` command: every command, --json, exit codes, no secret in output."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sysmail_ops.cli import build_parser, main
from sysmail_ops.config.workspace import Workspace

PASSWORD = "Cli-Secret-Pa55word"


class CLI:
    """Runs the command in-process against one workspace, stdin given as text."""

    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch):
        self.home, self.capsys, self.mp = home, capsys, mp

    def __call__(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        self.mp.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["--home", str(self.home), *argv])
        out, err = self.capsys.readouterr()
        assert PASSWORD not in out + err
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> CLI:
    return CLI(ws.home, capsys, monkeypatch)


def add_service(cli: CLI, *extra: str) -> tuple[int, str, str]:
    return cli(
        "accounts",
        "add",
        "service",
        "--kind",
        "customer_service",
        "--address",
        "service@example.com",
        "--host",
        "smtp.example.com",
        "--password-stdin",
        *extra,
        stdin=PASSWORD + "\n",
    )


def test_init_creates_and_is_safe_to_repeat(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "new"
    assert main(["--home", str(home), "init"]) == 0
    out = capsys.readouterr().out
    assert f"secret key: {home / 'secret.key'} (created)" in out
    assert "backups" in out
    assert main(["--home", str(home), "init"]) == 0
    assert "(kept)" in capsys.readouterr().out


def test_home_resolution_flag_env_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYSMAIL_HOME", str(tmp_path / "from-env"))
    assert main(["init"]) == 0
    assert str(tmp_path / "from-env") in capsys.readouterr().out
    assert main(["--home", str(tmp_path / "from-flag"), "init"]) == 0
    assert str(tmp_path / "from-flag") in capsys.readouterr().out
    monkeypatch.delenv("SYSMAIL_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert main(["init"]) == 0
    assert str(tmp_path / "xdg" / "sysmail-ops") in capsys.readouterr().out


def test_add_list_show_json(cli: CLI) -> None:
    code, out, err = add_service(cli, "--description", "customer replies")
    assert code == 0, err
    assert "bound service (Customer service, service@example.com); 1 of 10 used" in out
    code, out, _ = cli("accounts", "list")
    assert code == 0
    assert "service@example.com" in out and "never tested" in out
    assert "1 of 10 system emails used" in out
    listed = cli.json("accounts", "list")
    assert listed[0]["name"] == "service"
    assert listed[0]["password"] == "********"
    assert listed[0]["sent_archiving"] is True
    shown = cli.json("accounts", "show", "service")
    assert shown["description"] == "customer replies"
    assert shown["tests"] == []
    code, out, _ = cli("accounts", "show", "service")
    assert "password:" in out and "********" in out
    assert "Sent Email Archiving:" in out and "Received Email Archiving:" in out


def test_password_never_taken_from_an_argument(cli: CLI) -> None:
    with pytest.raises(SystemExit) as info:
        cli("accounts", "add", "x", "--address", "x@example.com", "--host", "h", "--password", "p")
    assert info.value.code == 2


def test_add_without_password_source_on_a_pipe_is_an_error(cli: CLI) -> None:
    code, _, err = cli(
        "accounts", "add", "x", "--address", "x@example.com", "--host", "smtp.example.com"
    )
    assert code == 2
    assert err.startswith("sysmail-ops: error: no password given")
    assert err.count("\n") == 1
    assert cli.json("accounts", "list") == []


def test_password_env_reference_and_no_password(cli: CLI) -> None:
    base = ["--host", "smtp.example.com"]
    code, _, err = cli(
        "accounts", "add", "a", "--address", "a@example.com", *base, "--password-env", "A_PW"
    )
    assert code == 0, err
    code, _, err = cli("accounts", "add", "b", "--address", "b@example.com", *base, "--no-password")
    assert code == 0, err
    by_name = {a["name"]: a for a in cli.json("accounts", "list")}
    assert by_name["a"]["password"] == "env:A_PW"
    assert by_name["b"]["password"] == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--address", "nope"], "is not valid"),
        (["--address", "x@example.com", "--port", "0"], "from 1 to 65535"),
        (["--address", "x@example.com", "--display-name", "A\nB"], "line breaks"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    cli: CLI, args: list[str], message: str
) -> None:
    code, out, err = cli(
        "accounts", "add", "x", "--host", "smtp.example.com", "--no-password", *args
    )
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and message in err
    assert cli.json("accounts", "list") == []


def test_unknown_kind_is_a_usage_error(cli: CLI) -> None:
    with pytest.raises(SystemExit) as info:
        cli("accounts", "add", "x", "--address", "x@example.com", "--host", "h", "--kind", "sales")
    assert info.value.code == 2


def test_eleventh_add_exits_2_naming_the_limit(cli: CLI) -> None:
    for i in range(10):
        host = ["--host", "smtp.example.com", "--no-password"]
        code, _, err = cli("accounts", "add", f"a{i}", "--address", f"a{i}@example.com", *host)
        assert code == 0, err
    code, _, err = cli("accounts", "add", "a10", "--address", "a10@example.com", *host)
    assert code == 2
    assert "at most 10 system emails" in err
    assert len(cli.json("accounts", "list")) == 10


def test_hint_for_port_mismatch(cli: CLI) -> None:
    code, _, err = add_service(cli, "--security", "ssl", "--port", "587")
    assert code == 0
    assert err.startswith("hint: port 587 normally speaks STARTTLS")


def test_edit_archiving_remove(cli: CLI) -> None:
    add_service(cli)
    code, out, err = cli("accounts", "edit", "service", "--description", "changed")
    assert code == 0, err
    assert cli.json("accounts", "show", "service")["description"] == "changed"
    code, out, _ = cli("accounts", "archiving", "service", "--received", "off")
    assert out.strip() == ("service: Sent Email Archiving on, Received Email Archiving off")
    code, out, _ = cli("accounts", "archiving", "service")
    assert "Received Email Archiving off" in out
    code, _, err = cli("accounts", "edit", "service", "--password-stdin", stdin="new-one\n")
    assert code == 0, err
    code, out, _ = cli("accounts", "remove", "service")
    assert code == 0 and "removed service; 0 of 10 used" in out
    code, _, err = cli("accounts", "show", "service")
    assert code == 2 and "no system email named 'service'" in err


def test_missing_workspace_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path / "none"), "accounts", "list"]) == 2
    err = capsys.readouterr().err
    assert "no workspace at" in err and "sysmail-ops init" in err


def iter_commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> Iterator[tuple[str, str | None]]:
    """(command path, help text) for every subcommand, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                path = f"{prefix}{name}"
                yield path, helps.get(name)
                yield from iter_commands(sub, path + " ")


def test_every_command_has_help_and_a_readme_mention() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    commands = dict(iter_commands(build_parser()))
    assert "accounts add" in commands and "sink list" in commands
    assert not [c for c, h in commands.items() if not h], "commands without help text"
    missing = [c for c in commands if f"sysmail-ops {c}" not in readme and f"`{c}" not in readme]
    assert not missing, f"commands missing from README: {missing}"


def test_console_script_and_module_run() -> None:
    exe = shutil.which("sysmail-ops", path=str(Path(sys.executable).parent))
    assert exe, "pip install -e . must install the sysmail-ops command"
    for cmd in ([exe, "--version"], [sys.executable, "-m", "sysmail_ops", "--version"]):
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60)
        assert out.stdout.startswith("sysmail-ops ")


def test_readme_python_examples_name_real_functions() -> None:
    """Every `module.function` a README example calls on a sysmail_ops module exists."""
    import ast
    import importlib
    import re

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks
    for block in blocks:
        tree = ast.parse(block)
        modules: dict[str, object] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "sysmail_ops":
                for alias in node.names:
                    modules[alias.asname or alias.name] = (
                        getattr(importlib.import_module("sysmail_ops"), alias.name)
                        if alias.name[0].islower()
                        else None
                    )
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and modules.get(node.value.id) is not None
            ):
                assert hasattr(modules[node.value.id], node.attr), f"{node.value.id}.{node.attr}"
