"""The README's first command: the demo workspace on the embedded capture server."""

from __future__ import annotations

from pathlib import Path

import pytest

from sysmail_ops import accounts, archive, sendlog
from sysmail_ops.cli import main
from sysmail_ops.sink import list_mailbox
from sysmail_ops.workspace import Workspace


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
    # the capture server caught the test message, 3 case updates and the approval notice
    subjects = sorted(e["subject"] for e in list_mailbox(ws.mailbox_dir))
    assert len(subjects) == 5 and "Approved: Travel to Lyon" in subjects
    assert len(archive.list_archive(ws)) == 4  # service archives; workflow does not

    assert main(["--home", str(home), "demo", "--sink-port", "0"]) == 0
    out = capsys.readouterr().out
    assert "3 skipped_duplicate" in out and "re-pointed service" in out
    assert len(accounts.list_accounts(ws)) == 4
    assert len(sendlog.list_logs(ws, status="sent", limit=None)) == 5 + 1  # one more test message
