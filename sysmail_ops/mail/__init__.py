"""Pure mail: addresses, headers (RFC 2047, injection guard), MIME building,
the SMTP connection (TLS, AUTH, reply classes) and RFC 2920 pipelining; the
read-only IMAP client (``mail.imap``) and the reading of received messages
(``mail.incoming``), imported where used (they bring imaplib).

It takes plain values (hosts, logins, secrets, bytes) and never the store,
a workspace or an ``Account``. May import: ``errors`` only.
"""

from sysmail_ops.mail import addresses, headers, mime, pipelining, smtp
from sysmail_ops.mail.addresses import check_address, is_loopback
from sysmail_ops.mail.mime import Attachment, Composed, InlineImage, compose

__all__ = [
    "Attachment",
    "Composed",
    "InlineImage",
    "addresses",
    "check_address",
    "compose",
    "headers",
    "is_loopback",
    "mime",
    "pipelining",
    "smtp",
]
