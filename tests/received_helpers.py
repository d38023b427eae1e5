"""Helpers for the received-archiving tests: accounts bound to the private Dovecot, messages."""

from __future__ import annotations

import time
from email.message import EmailMessage

from conftest import bind
from dovecot_fixture import Dovecot
from smtp_testserver import SMTPTestServer

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.records import received
from sysmail_ops.templates import catalog

DAY = 86400.0


def bind_mailbox(
    ws: Workspace,
    dovecot: Dovecot,
    mailbox: str,
    smtp_server: SMTPTestServer | None = None,
    *,
    name: str = "service",
    kind: str = "customer_service",
    password: str = "secret",  # noqa: S107 - the test mailbox's
) -> accounts.Account:
    """A system email whose mailbox is ``mailbox`` on the Dovecot (IMAPS, the test CA)."""
    imap = {
        "imap_host": dovecot.host,
        "imap_port": dovecot.port_tls,
        "imap_security": "ssl",
    }
    if smtp_server is not None:
        account = bind(ws, smtp_server, name, kind=kind, **imap)
        received.set_imap_credentials(ws, name, login=mailbox, password=password)
        return account
    return accounts.add_account(
        ws,
        name,
        kind=kind,
        from_address="service@example.com",
        login=mailbox,
        password=password,
        smtp_host="127.0.0.1",
        smtp_port=2525,
        smtp_security="ssl",
        ca_bundle=str(dovecot.ca_path),
        **imap,  # type: ignore[arg-type]
    )


def message(
    n: int | str,
    *,
    subject: str | None = None,
    body: str = "Hello, a question about my order.",
    sender: str = "customer@example.org",
    to: str = "service@example.com",
    headers: dict[str, str] | None = None,
    message_id: bool = True,
    date: float | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject if subject is not None else f"Message {n}"
    if message_id:
        msg["Message-ID"] = f"<m{n}@example.org>"
    msg["Date"] = time.strftime(
        "%a, %d %b %Y %H:%M:%S +0000", time.gmtime(date if date is not None else time.time())
    )
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def case_template(ws: Workspace, name: str = "case-update") -> catalog.Template:
    return catalog.add_template(
        ws,
        name,
        object_type="case",
        subject="Case {{ case_id }} for {{ name }}",
        html="<p>Hello {{ name }}, case <b>{{ case_id }}</b> was updated.</p>",
        fields=["name", "case_id"],
    )


def dsn(
    original_id: str,
    recipient: str,
    status: str = "5.1.1",
    n: str = "dsn",
    diagnostic: str = "smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown",
) -> bytes:
    """An RFC 3464 delivery status notification, as Postfix writes one."""
    action = "failed" if status.startswith("5") else "delayed"
    diag = diagnostic.format(rcpt=recipient)
    return (
        "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n"
        "To: service@example.com\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{n}@mx.example.net>\r\n"
        "Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BB"\r\n'
        "\r\n"
        "--BB\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        "This is the mail system at host mx.example.net.\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n\r\n"
        "--BB\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n"
        "Arrival-Date: Mon, 30 Nov 2026 09:59:58 +0000\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Original-Recipient: rfc822;{recipient}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        "Remote-MTA: dns; mx2.example.net\r\n"
        f"Diagnostic-Code: {diag}\r\n\r\n"
        "--BB\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        "From: service@example.com\r\n"
        f"To: {recipient}\r\n"
        f"Message-ID: {original_id}\r\n"
        "Subject: Our news\r\n\r\n"
        "--BB--\r\n"
    ).encode()
