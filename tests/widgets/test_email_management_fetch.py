"""The Email Management form shows received archiving's last fetch (real Dovecot)."""

from __future__ import annotations

import pytest
from dovecot_fixture import Dovecot
from received_helpers import bind_mailbox, message

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.records import received
from sysmail_ops.widgets.accounts import EmailManagement

pytestmark = pytest.mark.slow


def test_the_table_shows_the_last_fetch_and_its_error(
    ws: Workspace, dovecot: Dovecot, mailbox: str
) -> None:
    bind_mailbox(ws, dovecot, mailbox)
    form = EmailManagement(ws)
    assert "Last fetch (IMAP)" in form.table.value and "never fetched" in form.table.value
    dovecot.append(mailbox, [message(1), message(2)])
    received.fetch(ws)
    form.refresh()
    assert "2 new, 2 in all" in form.table.value
    received.set_imap_credentials(ws, "service", login=mailbox, password="wrong")
    received.fetch(ws)
    form.refresh()
    assert "FAILED" in form.table.value and "rejected" in form.table.value
    assert "wrong" not in form.table.value  # the password is never shown
    accounts.set_archiving(ws, "service", received=False)
    form.refresh()
    assert "never fetched" not in form.table.value and "FAILED" not in form.table.value
