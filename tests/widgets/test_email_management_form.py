"""The Email Management form driven from Python: widget values set, buttons clicked, the
store checked."""

from __future__ import annotations

import pytest
from conftest import bind
from smtp_testserver import GOOD_LOGIN, GOOD_PASSWORD, SMTPTestServer

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.widgets.accounts import NEW, EmailManagement


def _fill_new(form: EmailManagement, server: SMTPTestServer, name: str, password: str) -> None:
    form.pick.value = NEW
    form.name.value = name
    form.kind.value = "workflow_notification"
    form.from_address.value = GOOD_LOGIN
    form.smtp_host.value = server.host
    form.smtp_security.value = server.security
    form.smtp_port.value = server.port
    form.ca_bundle.value = str(server.ca_path)
    form.password.value = password


def _status(form: EmailManagement) -> str:
    return form.status.value


def test_add_edit_remove(ws: Workspace, smtp_server: SMTPTestServer) -> None:
    form = EmailManagement(ws)
    assert "0 of 10 used" in form.usage.value
    _fill_new(form, smtp_server, "notices", GOOD_PASSWORD)
    # a workflow account starts with both switches off (the kind's default), and says so
    assert not form.sent_archiving.value and not form.received_archiving.value
    assert form.sent_archiving.description.endswith("(default for Workflow notification: off)")
    assert "(default for Workflow notification: off)" in form.received_archiving.description
    form.save.click()
    assert "bound notices" in _status(form), _status(form)
    assert form.password.value == ""  # cleared after Save
    a = accounts.get_account(ws, "notices")
    assert a.kind == "workflow_notification" and a.auth_source == "stored"
    assert accounts.password_for(ws, a).reveal() == GOOD_PASSWORD
    assert not a.sent_archiving and not a.received_archiving
    assert "notices" in form.table.value and "1 of 10 used" in form.usage.value
    assert form.pick.value == "notices"

    # edit: the stored password is never shown back; empty keeps it
    assert form.password.value == "" and "stored" in form.password.placeholder
    form.display_name.value = "Notices"
    form.rate_limit.value = 30
    form.save.click()
    a = accounts.get_account(ws, "notices")
    assert a.display_name == "Notices" and a.rate_limit_per_minute == 30
    assert accounts.password_for(ws, a).reveal() == GOOD_PASSWORD

    # a switch of a bound account applies at once
    form.received_archiving.value = True
    assert accounts.get_account(ws, "notices").received_archiving
    assert "Received Email Archiving on" in _status(form)

    # remove asks first; cancel keeps it
    form.remove.click()
    assert form.confirm_box.layout.display == "flex"
    form.cancel_remove.click()
    assert accounts.list_accounts(ws)
    form.remove.click()
    form.confirm_remove.click()
    assert accounts.list_accounts(ws) == []
    assert "removed notices" in _status(form) and form.pick.value == NEW


def test_bad_input_is_one_line_and_writes_nothing(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    form = EmailManagement(ws)
    _fill_new(form, smtp_server, "bad", "s3cret-typed")
    form.from_address.value = "not an address"
    form.save.click()
    assert "sysmail-error" in _status(form)
    assert "email account" in _status(form)
    assert "s3cret-typed" not in _status(form)
    assert "Traceback" not in _status(form) and not form.output.outputs
    assert form.password.value == ""
    assert accounts.list_accounts(ws) == []


def test_no_password_and_missing_password(ws: Workspace, smtp_server: SMTPTestServer) -> None:
    form = EmailManagement(ws)
    _fill_new(form, smtp_server, "relay", "")
    form.save.click()
    assert "no password given" in _status(form)
    assert accounts.list_accounts(ws) == []
    form.no_password.value = True
    form.save.click()
    assert accounts.get_account(ws, "relay").auth_source == "none"


def test_eleventh_is_refused_in_the_form(ws: Workspace, smtp_server: SMTPTestServer) -> None:
    for i in range(10):
        bind(ws, smtp_server, f"a{i}")
    form = EmailManagement(ws)
    assert "10 of 10 used" in form.usage.value
    assert form.save.disabled
    assert "remove one before adding another" in _status(form)
    _fill_new(form, smtp_server, "eleventh", GOOD_PASSWORD)
    form.save.click()  # a click that gets through anyway is refused with the same line
    assert "remove one before adding another" in _status(form)
    assert len(accounts.list_accounts(ws)) == 10
    form.pick.value = "a3"  # editing a bound one is still possible
    assert not form.save.disabled


def test_wrong_password_is_a_failed_test(ws: Workspace, smtp_server: SMTPTestServer) -> None:
    bind(ws, smtp_server, "service", password="wrong-password-123")
    form = EmailManagement(ws)
    form.pick.value = "service"
    form.test.click()
    line = _status(form)
    assert "FAILED at step" in line and "auth" in line.lower(), line
    assert "535" in line
    assert "wrong-password-123" not in line
    assert "FAILED at auth" in form.table.value


def test_good_test_and_test_message(ws: Workspace, smtp_server: SMTPTestServer) -> None:
    bind(ws, smtp_server, "service")
    form = EmailManagement(ws)
    form.pick.value = "service"
    form.test_to.value = "ops@example.com"
    form.test.click()
    assert "OK" in _status(form) and "sysmail-ok" in _status(form), _status(form)
    assert any("ops@example.com" in m.rcpt_tos for m in smtp_server.messages)
    assert "ok, 20" in form.table.value and " UTC" in form.table.value


@pytest.mark.parametrize("typed", ["pa\nss", "x" * 3])
def test_password_never_shown_back(ws: Workspace, smtp_server: SMTPTestServer, typed: str) -> None:
    form = EmailManagement(ws)
    _fill_new(form, smtp_server, "svc", typed)
    form.no_password.value = True  # a contradiction: the typed password is in the error path
    form.save.click()
    assert typed not in _status(form)
    assert form.password.value == ""


def test_provider_preset_and_size_limit(ws: Workspace, smtp_server: SMTPTestServer) -> None:
    form = EmailManagement(ws)
    form.preset.value = "google"
    assert form.smtp_host.value == "smtp.gmail.com" and form.imap_host.value == "imap.gmail.com"
    assert "Google" in form.preset_hint.value and "recommended login" in form.preset_hint.value
    assert form.max_size.value > 0
    _fill_new(form, smtp_server, "sized", GOOD_PASSWORD)  # the form can still change them
    form.max_size.value = 2.5
    form.save.click()
    assert accounts.get_account(ws, "sized").max_message_bytes == int(2.5 * 1024 * 1024)
    assert form.max_size.value == 2.5  # shown back after Save

    # 0 sets a bound account's limits and IMAP port back to none or the default
    form.rate_limit.value, form.imap_port.value = 30, 1993
    form.save.click()
    a = accounts.get_account(ws, "sized")
    assert (a.rate_limit_per_minute, a.imap_port) == (30, 1993), _status(form)
    form.rate_limit.value = form.imap_port.value = 0
    form.max_size.value = 0
    form.save.click()
    a = accounts.get_account(ws, "sized")
    assert (a.rate_limit_per_minute, a.max_message_bytes, a.imap_port) == (None, None, 993)
    assert "saved sized" in _status(form), _status(form)


def test_signature_is_saved_with_save_and_cleared_by_emptying_it(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    form = EmailManagement(ws)
    _fill_new(form, smtp_server, "signed", GOOD_PASSWORD)
    form.signature_html.value = "<p>Kind regards,<br><b>Service</b></p>"
    form.signature_text.value = "Kind regards,\nService"
    form.signature_auto.value = False
    form.save.click()
    a = accounts.get_account(ws, "signed")
    assert a.signature_html == "<p>Kind regards,<br><b>Service</b></p>", _status(form)
    assert (a.signature_text, a.signature_auto) == ("Kind regards,\nService", False)
    form.pick.value = NEW
    assert form.signature_html.value == "" and form.signature_auto.value
    form.pick.value = "signed"  # shown back when picked
    assert form.signature_text.value == "Kind regards,\nService"
    assert not form.signature_auto.value
    form.signature_html.value = form.signature_text.value = ""
    form.save.click()
    a = accounts.get_account(ws, "signed")
    assert (a.signature_html, a.signature_text) == (None, None), _status(form)
    form.signature_text.value = "x\0y"  # refused in the form, nothing written
    form.save.click()
    assert "NUL" in _status(form) and accounts.get_account(ws, "signed").signature_text is None


def test_dkim_key_made_shown_and_turned_off_from_the_form(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    form = EmailManagement(ws)
    assert form.dkim_make.disabled  # a new system email has no key to make yet
    _fill_new(form, smtp_server, "dk", GOOD_PASSWORD)
    form.save.click()
    assert not form.dkim_make.disabled and "off" in form.dkim_state.value
    form.dkim_selector.value = "bad selector!"
    form.dkim_make.click()
    assert (
        "selector" in _status(form) and accounts.get_account(ws, "dk").dkim_ed25519_selector is None
    )
    form.dkim_selector.value, form.dkim_algorithm.value = "ed2026", "ed25519"
    form.dkim_make.click()
    a = accounts.get_account(ws, "dk")
    assert a.dkim_ed25519_selector == "ed2026", _status(form)
    domain = GOOD_LOGIN.rpartition("@")[2]
    assert f"ed2026._domainkey.{domain}" in form.dkim_state.value
    assert "k=ed25519" in form.dkim_state.value and "ed2026" in _status(form)
    form.dkim_off.click()  # the first click only asks
    assert accounts.get_account(ws, "dk").dkim_ed25519_selector == "ed2026"
    assert "click again" in _status(form)
    form.dkim_off.click()
    assert accounts.get_account(ws, "dk").dkim_ed25519_selector is None
    assert "off" in form.dkim_state.value and "keys deleted" in _status(form)
