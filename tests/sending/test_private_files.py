"""What sending writes in the workspace (journal, archive, queue, previews) is 0600 / 0700."""

from __future__ import annotations

from pathlib import Path

import pytest
from private_modes import loose_umask, not_private
from smtp_testserver import SMTPTestServer

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.sending import retry as deferred
from sysmail_ops.sending.batch import SendOptions, send
from sysmail_ops.templates import catalog as templates

__all__ = ["loose_umask"]

RECORD = {"name": "Eve", "case_id": "C-1"}


@pytest.fixture
def ws(loose_umask: None, tmp_path: Path) -> Workspace:
    """A workspace made and used under umask 022."""
    workspace, _ = Workspace.init(tmp_path / "ws")
    templates.add_template(
        workspace,
        "case-update",
        object_type="case",
        subject="Case {{ case_id }} for {{ name }}",
        html="<p>Hello {{ name }}, case <b>{{ case_id }}</b> was updated.</p>",
        fields=["name", "case_id"],
    )
    return workspace


def test_sent_archived_queued_and_previewed_files_are_private(
    ws: Workspace, smtp_server: SMTPTestServer, service: accounts.Account
) -> None:
    fast = SendOptions(backoff=0.01)
    sent = send(ws, "service", "case-update", to="eve@example.com", record=RECORD, options=fast)
    assert sent.counts == {"sent": 1}
    smtp_server.fail_data_times = 100
    queued = send(ws, "service", "case-update", to="bob@example.com", record=RECORD, options=fast)
    assert queued.counts == {"deferred": 1} and len(deferred.list_deferred(ws)) == 1
    preview = send(
        ws, "service", "case-update", to="eve@example.com", record=RECORD,
        options=SendOptions(dry_run=True),
    )  # fmt: skip
    assert preview.preview_dir and list(Path(preview.preview_dir).glob("*.eml"))
    assert list((ws.archive_dir / "sent").rglob("*.emls"))
    assert list(ws.home.glob("*/*.eml"))  # the queue keeps the message bytes
    assert not_private(ws.home) == []
