"""A server that echoes the AUTH data: nothing the connection test stores or returns leaks it."""

from __future__ import annotations

import json

from conftest import bind
from smtp_testserver import SMTPTestServer, assert_no_credentials

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.mail.credentials import MASK
from sysmail_ops.records import sendlog
from sysmail_ops.sending import connection_test as conntest


def stored_rows(ws: Workspace) -> str:
    with ws.store.connect() as con:
        return repr(con.execute("SELECT * FROM account_tests").fetchall())


def test_echoed_auth_is_masked_in_result_and_store(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    bind(ws, smtp_server)
    smtp_server.echo_auth = True
    result = conntest.test_account(ws, "service")
    assert not result.ok and (result.step, result.code) == ("auth", 535)
    assert MASK in result.message
    for text in (result.message, json.dumps(result.to_dict()), stored_rows(ws)):
        assert_no_credentials(text)
    assert_no_credentials(json.dumps(conntest.recent_tests(ws, "service"), default=str))


def test_echo_in_the_test_message_reply_is_masked_in_result_store_and_log(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    bind(ws, smtp_server)
    smtp_server.echo_auth_on_data = True
    result = conntest.test_account(ws, "service", send_to="ops@example.com")
    assert not result.ok and result.step == "send" and result.code == 554
    assert MASK in result.message
    log = sendlog.list_logs(ws)
    assert list(log["status"]) == ["failed"]
    assert MASK in log["smtp_reply"].iloc[0]
    for text in (result.message, stored_rows(ws), log.to_csv()):
        assert_no_credentials(text)
