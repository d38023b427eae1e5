"""`sysmail-ops audit`: changes made through the command line and the Python API, each
with its source and user, shown newest first; bad input is one line and exit 2."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import CLI, PASSWORD, add_service

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.store import audit


@pytest.fixture
def cli(ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> CLI:
    return CLI(ws.home, capsys, monkeypatch)


def test_cli_and_python_changes_are_audited_with_their_source_and_user(
    cli: CLI, ws: Workspace
) -> None:
    assert add_service(cli)[0] == 0
    assert cli("accounts", "archiving", "service", "--received", "off")[0] == 0
    accounts.edit_account(ws, "service", smtp_port=2525, password="Py-Secret-Pa55")
    assert cli("settings", "set", "survey_quiet_days", "7")[0] == 0

    rows = cli.json("audit")
    me = getpass.getuser()
    assert [(r["source"], r["actor"], r["object_name"], r["action"]) for r in rows] == [
        ("cli", me, "survey_quiet_days", "edit"),
        ("python", me, "service", "edit"),
        ("cli", me, "service", "edit"),
        ("cli", me, "service", "add"),
    ]
    assert rows[1]["summary"] == "password changed; smtp_port: 587 -> 2525"
    assert rows[2]["changes"] == [{"field": "received_archiving", "old": True, "new": False}]

    code, out, err = cli("audit")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["WHEN", "(UTC)", "WHO", "WHERE", "WHAT", "ACTION", "CHANGES"]
    assert "setting survey_quiet_days" in lines[1] and "cli" in lines[1]
    assert "python" in lines[2] and "password changed" in lines[2]

    dump = json.dumps(rows) + out
    assert PASSWORD not in dump and "Py-Secret-Pa55" not in dump
    with ws.store.connect() as con:
        table = con.execute("SELECT * FROM audit").fetchall()
    assert PASSWORD not in repr(table) and "Py-Secret-Pa55" not in repr(table)


def test_since_kind_name_and_an_empty_period(cli: CLI) -> None:
    add_service(cli)
    cli("settings", "set", "survey_quiet_days", "7")
    assert [r["object_kind"] for r in cli.json("audit", "--since", "1h")] == ["setting", "account"]
    assert [r["object_kind"] for r in cli.json("audit", "--kind", "account")] == ["account"]
    assert cli.json("audit", "--name", "nothing") == []
    code, out, _ = cli("audit", "--since", "2999-01-01")
    assert code == 0 and "(no changes recorded in that period)" in out


@pytest.mark.parametrize("bad", ["yesterday", "3 days", "2026-02-30", "-1d"])
def test_bad_since_is_one_line_and_exit_2(cli: CLI, bad: str) -> None:
    code, out, err = cli("audit", f"--since={bad}")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--since takes 30m, 24h, 7d or an ISO date" in err


def test_bad_limit_and_kind_are_refused(cli: CLI) -> None:
    assert cli("audit", "--limit", "0")[0] == 2
    with pytest.raises(SystemExit) as exc:
        cli("audit", "--kind", "password")
    assert exc.value.code == 2


def test_the_installed_command_records_cli_as_the_source(ws: Workspace, tmp_path: Path) -> None:
    """The real entry point (a separate process), not only main() in-process."""
    env = {**os.environ, "SYSMAIL_HOME": str(ws.home)}
    env.pop(audit.ENV_SOURCE, None)
    subprocess.run(
        [sys.executable, "-m", "sysmail_ops", "settings", "set", "survey_token_days", "9"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (entry,) = audit.list_entries(ws.store)
    assert (entry.source, entry.actor, entry.object_name) == (
        "cli",
        getpass.getuser(),
        "survey_token_days",
    )
