"""The store: migrations, and several processes sharing one workspace."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import StoreBusyError, WorkspaceError
from sysmail_ops.store.migrations import MIGRATIONS
from sysmail_ops.templates import catalog as templates

HOLDER = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    con.execute("SELECT count(*) FROM accounts").fetchall()
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
    """
)


def hold_database(ws: Workspace, seconds: float) -> subprocess.Popen[str]:
    """Another process opens the workspace database and keeps it for ``seconds``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(ws.db_path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_migrations_are_numbered_recorded_and_applied_once(tmp_path: Path) -> None:
    ws, _ = Workspace.init(tmp_path / "ws")
    versions = [v for v, _, _ in MIGRATIONS]
    assert versions == sorted(versions) == list(range(1, len(versions) + 1))
    assert ws.store.schema_version() == versions[-1]
    again = Workspace(ws.home)
    assert again.store.migrate() == []
    with again.store.connect() as con:
        rows = con.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == versions


def test_init_is_idempotent_and_keeps_the_key(tmp_path: Path) -> None:
    ws, created = Workspace.init(tmp_path / "ws")
    key = ws.key_path.read_bytes()
    assert created
    ws2, created2 = Workspace.init(tmp_path / "ws")
    assert not created2
    assert ws2.key_path.read_bytes() == key
    assert (ws.key_path.stat().st_mode & 0o777) == 0o600


def test_open_missing_workspace_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="sysmail-ops init"):
        Workspace.open(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_no_connection_is_held_between_operations(ws: Workspace) -> None:
    accounts.list_accounts(ws)
    # Another process can open the file at once: we hold nothing while idle.
    proc = hold_database(ws, 0)
    proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_second_process_waits_for_the_lock_then_succeeds(ws: Workspace) -> None:
    proc = hold_database(ws, 3)
    started = time.monotonic()
    try:
        acct = accounts.add_account(
            ws,
            "service",
            kind="customer_service",
            from_address="service@example.com",
            smtp_host="smtp.example.com",
        )
        listed = accounts.list_accounts(ws)
    finally:
        proc.communicate(timeout=30)
    waited = time.monotonic() - started
    assert acct.name == "service"
    assert [a.name for a in listed] == ["service"]
    assert waited > 1.5, "the holder kept the file for 3 s: the write must have waited"


def test_busy_past_the_wait_names_workspace_and_process(ws: Workspace) -> None:
    proc = hold_database(ws, 4)
    impatient = Workspace(ws.home, lock_wait=0.5)
    try:
        with pytest.raises(StoreBusyError) as info:
            accounts.list_accounts(impatient)
    finally:
        proc.communicate(timeout=30)
    message = str(info.value)
    assert str(ws.home) in message
    assert f"process {proc.pid}" in message
    assert "Could not set lock" not in message


def test_cli_in_another_process_waits_for_the_lock(ws: Workspace) -> None:
    proc = hold_database(ws, 2)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "sysmail_ops", "--home", str(ws.home), "accounts", "list"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        proc.communicate(timeout=30)
    assert out.returncode == 0, out.stderr
    assert "0 of 10 system emails used" in out.stdout
    assert "lock" not in out.stderr.lower()


def test_an_older_workspace_is_upgraded_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A workspace of the release before subscriptions (migrations 1-4) gets the rest."""
    from sysmail_ops.store import database as store

    first = 4
    monkeypatch.setattr(store, "MIGRATIONS", [m for m in MIGRATIONS if m[0] <= first])
    ws, _ = Workspace.init(tmp_path / "ws")
    assert ws.store.schema_version() == first
    with ws.store.transaction() as con:  # as if the built-in templates were not there yet
        con.execute("DELETE FROM templates")
    monkeypatch.undo()
    upgraded = Workspace.open(ws.home)
    assert upgraded.store.schema_version() == max(m[0] for m in MIGRATIONS)
    names = {t.name for t in templates.list_templates(upgraded)}
    assert {b.name for b in templates.builtin_sources()} <= names
    assert {"connection-test", "subscription-failure", "survey-reminder", "report-mail"} <= names
