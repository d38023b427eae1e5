"""Connection tests of system emails: each step's verdict, recorded for `accounts show`.

The optional test message is the built-in ``connection-test`` template sent
through the sending pipeline (use case ``system``), so it is logged (and
archived, where the account archives) like every other send.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sysmail_ops.config.accounts import get_account, password_for
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import OAuthError, SysmailError
from sysmail_ops.mail.addresses import check_address
from sysmail_ops.mail.smtp import ConnectionTestResult, test_connection
from sysmail_ops.records import sendlog
from sysmail_ops.sending import batch as sending
from sysmail_ops.store.database import utcnow

TEST_TEMPLATE = "connection-test"


def test_account(
    ws: Workspace, name: str, *, send_to: str | None = None, timeout: float = 10.0
) -> ConnectionTestResult:
    """Connect, EHLO, TLS, AUTH and optionally send the test message. Recorded."""
    account = get_account(ws, name)
    if send_to:
        send_to = check_address(send_to, "test recipient")
    try:
        credential = password_for(ws, account)
    except OAuthError as exc:  # not authorized, revoked: the verdict says how to fix it
        result = ConnectionTestResult(account=name, ok=False, step="auth", message=f"auth: {exc}")
    else:
        result = test_connection(account.server, credential, timeout=timeout)
    if result.ok and send_to:
        result = _send_test_message(ws, result, send_to, timeout)
    with ws.store.transaction() as con:
        con.execute(
            "INSERT INTO account_tests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                name,
                utcnow(),
                result.ok,
                result.step,
                result.code,
                result.message,
                result.greeting,
                result.sent_to,
                result.duration_ms,
            ],
        )
    return result


def test_imap_account(ws: Workspace, name: str, *, timeout: float = 10.0) -> ConnectionTestResult:
    """The IMAP side (received archiving): connect, TLS, login, EXAMINE INBOX. Recorded.

    The verdict has the SMTP test's shape; its steps are ``imap connect``, ``imap tls``,
    ``imap login`` and ``imap select``, its message starts with "IMAP".
    """
    from sysmail_ops.mail.imap import test_connection as imap_test
    from sysmail_ops.records.received import imap_login, imap_server

    account = get_account(ws, name)
    try:
        login, mask = imap_login(ws, account)
    except SysmailError as exc:  # a key that does not decrypt, an OAuth2 grant revoked
        result = ConnectionTestResult(
            account=name, ok=False, step="imap login", message=f"IMAP login: {exc}"
        )
    else:
        result = imap_test(imap_server(ws, account), login, timeout=timeout, mask=mask)
    _record(ws, name, result)
    return result


def _record(ws: Workspace, name: str, result: ConnectionTestResult) -> None:
    with ws.store.transaction() as con:
        con.execute(
            "INSERT INTO account_tests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                name,
                utcnow(),
                result.ok,
                result.step,
                result.code,
                result.message,
                result.greeting,
                result.sent_to,
                result.duration_ms,
            ],
        )


def _send_test_message(
    ws: Workspace, result: ConnectionTestResult, send_to: str, timeout: float
) -> ConnectionTestResult:
    account = get_account(ws, result.account)
    record = {
        "account_name": account.name,
        "from_address": account.from_address,
        "smtp_host": account.smtp_host,
        "smtp_port": account.smtp_port,
    }
    options = sending.SendOptions(max_attempts=1, timeout=timeout)
    try:
        sent = sending.send(
            ws, account.name, TEST_TEMPLATE, to=send_to, record=record, use_case="system",
            options=options,
        )  # fmt: skip
    except SysmailError as exc:
        return replace(result, ok=False, step="send", message=f"send: {exc}", sent_to=None)
    if sent.counts.get("sent"):
        return replace(result, message=f"{result.message}, test message sent to {send_to}",
                       sent_to=send_to)  # fmt: skip
    row = sendlog.list_logs(ws, batch_id=sent.batch_id, limit=1).iloc[0]
    code = None if row.smtp_code is None or row.smtp_code != row.smtp_code else int(row.smtp_code)
    return replace(
        result,
        ok=False,
        step="send",
        code=code,
        message=f"send: {send_to} {row.status}: {code or ''} {row.smtp_reply or ''}".strip(),
        sent_to=None,
    )


def recent_tests(ws: Workspace, name: str, limit: int = 5) -> list[dict[str, Any]]:
    """The latest connection tests of one system email, newest first."""
    with ws.store.connect() as con:
        rel = con.execute(
            "SELECT tested_at, ok, step, code, message, greeting, sent_to, duration_ms"
            " FROM account_tests WHERE account = ? ORDER BY tested_at DESC LIMIT ?",
            [name, limit],
        )
        cols = [d[0] for d in rel.description]
        rows = [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
    for r in rows:
        r["tested_at"] = r["tested_at"].isoformat() + "Z"
    return rows
