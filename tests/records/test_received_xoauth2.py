"""Received archiving logs in with XOAUTH2 for OAuth2 accounts: a private Dovecot whose
``oauth2`` passdb asks the local authorization server's introspection endpoint (RFC 7662)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dovecot_fixture
import pytest
import trustme
from dovecot_fixture import Dovecot, start_dovecot, stop_dovecot
from oauth_fixtures import XOAuth2SMTPServer, authorize_device, bind_oauth
from oauth_server import OAuthTestServer
from received_helpers import message

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.records import received
from sysmail_ops.sending import connection_test

OAUTH2_PASSDB = """\
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {d}/dovecot-oauth2.conf.ext
}}
"""
OAUTH2_CONF = """\
introspection_mode = post
introspection_url = {url}
username_attribute = username
active_attribute = active
active_value = true
tls_ca_cert_file = {ca}
"""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dovecot_oauth(tls_ca: trustme.CA, _oauth_session: OAuthTestServer) -> Iterator[Dovecot]:
    """A private Dovecot offering XOAUTH2, checked against the local OAuth2 server."""
    root = Path(tempfile.mkdtemp(prefix="sysmail-dovecot-oauth-"))
    config = dovecot_fixture.CONFIG.replace(
        "auth_mechanisms = plain login", "auth_mechanisms = plain login xoauth2 oauthbearer"
    ).replace(
        "passdb {{\n  driver = passwd-file", OAUTH2_PASSDB + "passdb {{\n  driver = passwd-file"
    )
    assert "driver = oauth2" in config and "xoauth2 oauthbearer" in config
    ca = root / "oauth-ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca))
    (root / "dovecot-oauth2.conf.ext").write_text(
        OAUTH2_CONF.format(url=_oauth_session.base + "/oauth2/introspect", ca=ca)
    )
    saved, dovecot_fixture.CONFIG = dovecot_fixture.CONFIG, config
    try:
        server = start_dovecot(root, tls_ca)
    finally:
        dovecot_fixture.CONFIG = saved
    try:
        yield server
    finally:
        stop_dovecot(server)
        shutil.rmtree(root, ignore_errors=True)


def test_received_archiving_logs_in_with_xoauth2_refreshes_and_diagnoses_revocation(
    ws: Workspace,
    dovecot_oauth: Dovecot,
    xoauth2_smtp: XOAuth2SMTPServer,
    oauth_server: OAuthTestServer,
) -> None:
    mailbox = dovecot_oauth.add_user()
    account = bind_oauth(
        ws, xoauth2_smtp, login=mailbox, received_archiving=True, imap_host=dovecot_oauth.host,
        imap_port=dovecot_oauth.port_tls, imap_security="ssl",
    )  # fmt: skip
    dovecot_oauth.append(mailbox, [message(1)])
    [res] = received.fetch(ws)  # not authorized yet: this account's one line, no traceback
    assert not res.ok and "not authorized for OAuth2 yet: run `sysmail-ops" in (res.error or "")
    authorize_device(ws, account, oauth_server)

    [res] = received.fetch(ws)
    assert res.ok and res.archived == 1, (res.error, dovecot_oauth.log()[-2000:])
    verdict = connection_test.test_imap_account(ws, "o365")  # `accounts test --imap`
    assert verdict.ok and f"logged in as {mailbox}" in verdict.message, verdict.message

    oauth_server.expire_access_tokens()  # Dovecot's introspection now says inactive
    dovecot_oauth.append(mailbox, [message(2)])
    [res] = received.fetch(ws)
    assert res.ok and res.archived == 1, res.error
    assert oauth_server.records.grants_used[-1] == "refresh_token"

    oauth_server.revoke_refresh_tokens()
    oauth_server.expire_access_tokens()
    [res] = received.fetch(ws)
    assert not res.ok and res.error is not None
    assert "re-authorize with `sysmail-ops accounts authorize o365`" in res.error
    verdict = connection_test.test_imap_account(ws, "o365")
    assert not verdict.ok and "re-authorize with `sysmail-ops accounts" in verdict.message
    for token in oauth_server.issued_access_tokens:
        assert token not in res.error
