"""OAuth2 authorization of a system email is an audited change: who authorized it and as
whom, with the tokens only named; forgetting the tokens is one too."""

from __future__ import annotations

from oauth_fixtures import MAILBOX, Authorizing, XOAuth2SMTPServer, bind_oauth, device_code
from oauth_server import OAuthTestServer

from sysmail_ops.config import oauth
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.store import audit


def test_authorize_and_forget_are_audited_without_tokens(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer
) -> None:
    account = bind_oauth(ws, xoauth2_smtp)
    flow = Authorizing(ws, account)
    oauth_server.approve(device_code(flow.shown()), MAILBOX)
    flow.finish()
    oauth.forget(ws, "o365")

    forget, authorize = audit.list_entries(ws.store)[:2]
    assert (authorize.object_name, authorize.action) == ("o365", "authorize")
    changed = {c["field"]: c for c in authorize.changes}
    assert changed["oauth_authorized_as"]["new"] == MAILBOX
    assert changed["oauth_token_enc"] == {"field": "oauth_token_enc", "secret": True}
    assert "oauth_token changed" in authorize.summary
    assert forget.action == "forget authorization" and "oauth_token changed" in forget.summary
    with ws.store.connect() as con:
        text = repr(con.execute("SELECT * FROM audit").fetchall())
    for token in oauth_server.issued_access_tokens:
        assert token not in text
