"""The README's first command: the demo workspace on the embedded capture server."""

from __future__ import annotations

from pathlib import Path

import pytest

from sysmail_ops.cli import main
from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.records import archive, sendlog
from sysmail_ops.sink.server import list_mailbox


def test_demo_binds_tests_sends_and_is_safe_to_rerun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "demo"
    assert main(["--home", str(home), "demo", "--sink-port", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count(": OK connected, TLSv1.3") == 4
    assert "4 of 10 system emails used" in out
    assert "case updates via service: batch" in out and "3 sent" in out
    ws = Workspace.open(home)
    kinds = {a.kind: a for a in accounts.list_accounts(ws)}
    assert set(kinds) == {"customer_service", "marketing", "workflow_notification", "other"}
    assert (
        kinds["customer_service"].sent_archiving
        and not kinds["workflow_notification"].sent_archiving
    )
    # The capture server caught: the test message, 3 case updates, the approval notice,
    # 4 notices of approval-flow events, 4 survey mails and 5 report mails.
    subjects = [e["subject"] for e in list_mailbox(ws.mailbox_dir)]
    assert len(subjects) == 18 and "Approved: Travel to Lyon" in subjects
    assert sum(s.startswith("Sales Pipeline: ") for s in subjects) == 3
    assert sum(s.startswith("Delivery Report: ") for s in subjects) == 2
    assert "2 run(s) [2 succeeded], 3 sent" in out and "1 run(s) [1 succeeded], 2 sent" in out
    assert "demo-AP-104 (demo #5): error:" in out and "4 sent, 2 responded (50%)" in out
    assert len(archive.list_archive(ws)) == 8  # service archives; workflow and reports do not

    assert main(["--home", str(home), "demo", "--sink-port", "0"]) == 0
    out = capsys.readouterr().out
    assert "3 skipped_duplicate" in out and "re-pointed service" in out
    assert len(accounts.list_accounts(ws)) == 4
    assert "subscriptions run-due" in out and "run(s)" not in out  # the slot was run already
    assert len(sendlog.list_logs(ws, status="sent", limit=None)) == 18 + 1  # one more test message
