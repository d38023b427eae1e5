"""The Email Management form with OAuth2: its fields saved, Authorize showing the device code
in the form while the flow waits, the verdict after; secrets never shown back."""

from __future__ import annotations

import re
import time

from oauth_fixtures import APP_CLIENT, APP_SECRET, MAILBOX, PUBLIC_CLIENT, TENANT, XOAuth2SMTPServer
from oauth_server import OAuthTestServer

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.widgets.accounts import NEW, EmailManagement


def fill(form: EmailManagement, smtp: XOAuth2SMTPServer, name: str = "o365") -> None:
    form.pick.value = NEW
    form.name.value = name
    form.from_address.value = MAILBOX
    form.smtp_host.value = smtp.host
    form.smtp_port.value = smtp.port
    form.ca_bundle.value = str(smtp.ca_path)
    form.use_oauth.value = True
    form.oauth_provider.value = "microsoft"
    form.oauth_tenant.value = TENANT
    form.oauth_endpoint.value = smtp.oauth.base


def wait_for(what: object, check: object, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def test_device_flow_from_the_form(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer
) -> None:
    form = EmailManagement(ws)
    fill(form, xoauth2_smtp)
    assert form.oauth_flow.options == ("device", "client_credentials")
    form.oauth_client_id.value = PUBLIC_CLIENT
    form.save.click()  # no password asked for: OAuth2 is the login
    assert "bound o365" in form.status.value, form.status.value
    a = accounts.get_account(ws, "o365")
    assert (a.auth, a.oauth_provider, a.oauth_flow) == ("oauth2", "microsoft", "device")
    assert "not authorized yet" in form.oauth_prompt.value and not form.authorize.disabled

    form.authorize.click()
    wait_for("the code in the form", lambda: "enter the code" in form.oauth_prompt.value)
    code = re.search(r"enter the code (\S+)", form.oauth_prompt.value)
    assert code and f'<a href="{oauth_server.base}/device"' in form.oauth_prompt.value
    oauth_server.approve(code.group(1), MAILBOX)
    wait_for("the verdict", lambda: "authorized (microsoft, device)" in form.status.value)
    assert f"authorized as {MAILBOX}" in form.oauth_prompt.value

    form.test.click()
    assert "OK" in form.status.value and "(OAuth2, XOAUTH2)" in form.status.value


def test_client_secret_is_stored_and_never_shown_back(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer
) -> None:
    form = EmailManagement(ws)
    fill(form, xoauth2_smtp, "app")
    form.oauth_flow.value = "client_credentials"
    form.oauth_client_id.value = APP_CLIENT
    form.oauth_secret.value = APP_SECRET
    form.save.click()
    assert "bound app" in form.status.value, form.status.value
    assert form.oauth_secret.value == ""  # cleared after Save
    form.authorize.click()
    wait_for("the verdict", lambda: "authorized (microsoft, client credentials)"
             in form.status.value)  # fmt: skip
    form.pick.value = NEW
    form.pick.value = "app"
    assert form.oauth_secret.value == "" and form.oauth_flow.value == "client_credentials"
    assert APP_SECRET not in repr(form.children) + form.status.value + form.oauth_prompt.value

    form.use_oauth.value = False  # back to a relay without login (no password stored)
    form.save.click()
    assert accounts.get_account(ws, "app").auth == "none", form.status.value


def test_authorize_before_save_and_a_refused_flow_are_one_line_in_the_form(
    ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer
) -> None:
    form = EmailManagement(ws)
    fill(form, xoauth2_smtp)
    form.authorize.click()
    assert "save the system email before authorizing it" in form.status.value
    form.oauth_client_id.value = PUBLIC_CLIENT
    form.save.click()
    form.authorize.click()
    wait_for("the code", lambda: "enter the code" in form.oauth_prompt.value)
    code = re.search(r"enter the code (\S+)", form.oauth_prompt.value)
    assert code
    oauth_server.deny(code.group(1))
    wait_for("the refusal", lambda: "access_denied" in form.status.value)
    assert form.oauth_prompt.value == ""
