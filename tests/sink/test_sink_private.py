"""The capture sink's mailbox, index and certificate are its owner's alone (0600 / 0700)."""

from __future__ import annotations

import smtplib
import ssl
from pathlib import Path

from private_modes import loose_umask, not_private

from sysmail_ops.sink.server import CaptureSink, list_mailbox

__all__ = ["loose_umask"]


def test_mailbox_index_and_certificate_are_private_under_umask_022(
    loose_umask: None, tmp_path: Path
) -> None:
    home = tmp_path / "ws"
    with CaptureSink(home / "mailbox", home / "sink", port=0) as sink:
        client = smtplib.SMTP("127.0.0.1", sink.port, timeout=5)
        client.starttls(context=ssl.create_default_context(cafile=sink.ca_path))
        client.sendmail("ops@example.com", ["a@example.com"], b"Subject: hi\r\n\r\nhi\r\n")
        client.quit()
    assert len(list_mailbox(home / "mailbox")) == 1
    assert sorted(p.name for p in (home / "sink").iterdir()) == ["sink-cert.pem", "sink-key.pem"]
    assert not_private(home) == []
