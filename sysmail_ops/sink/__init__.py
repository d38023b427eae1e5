"""A face: the local capture SMTP server (``sysmail-ops sink``), aiosmtpd with
STARTTLS and AUTH on loopback, keeping what it receives in the workspace mailbox.

May import: ``mail``, ``errors``; no other face.
"""

from sysmail_ops.sink.server import CaptureSink, ensure_certificate, list_mailbox, run_forever

__all__ = ["CaptureSink", "ensure_certificate", "list_mailbox", "run_forever"]
