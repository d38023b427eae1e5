"""System emails: defaults by kind, the limit of ten, validation, edits."""

from __future__ import annotations

from typing import Any

import pytest

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import LimitError, NotFoundError, ValidationError


def add(ws: Workspace, name: str = "service", **kw: Any) -> accounts.Account:
    base: dict[str, Any] = {
        "kind": "customer_service",
        "from_address": "service@example.com",
        "smtp_host": "smtp.example.com",
    }
    return accounts.add_account(ws, name, **{**base, **kw})


def count(ws: Workspace) -> int:
    return accounts.usage(ws)[0]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("customer_service", True),
        ("marketing", True),
        ("workflow_notification", False),
        ("other", False),
    ],
)
def test_archiving_defaults_follow_the_kind(ws: Workspace, kind: str, expected: bool) -> None:
    acct = add(ws, kind=kind)
    assert acct.sent_archiving is expected
    assert acct.received_archiving is expected


def test_explicit_archiving_flags_win(ws: Workspace) -> None:
    acct = add(ws, kind="workflow_notification", sent_archiving=True)
    assert acct.sent_archiving is True and acct.received_archiving is False
    acct = add(ws, "m", kind="marketing", received_archiving=False)
    assert acct.sent_archiving is True and acct.received_archiving is False


def test_fields_and_derived_defaults(ws: Workspace) -> None:
    acct = add(ws, display_name="Example Service", description="replies to customers")
    assert acct.login == "service@example.com"
    assert (acct.smtp_port, acct.smtp_security) == (587, "starttls")
    assert (acct.imap_host, acct.imap_port, acct.imap_security) == ("imap.example.com", 993, "ssl")
    assert acct.auth_source == "none"
    assert acct.created_at == acct.updated_at
    ssl_acct = add(ws, "s", smtp_security="ssl", smtp_host="mail.example.org")
    assert ssl_acct.smtp_port == 465
    assert ssl_acct.imap_host == "mail.example.org"


def test_the_eleventh_system_email_is_refused_and_nothing_written(ws: Workspace) -> None:
    for i in range(10):
        add(ws, f"acct{i}", from_address=f"a{i}@example.com")
    with pytest.raises(LimitError, match=r"at most 10 system emails.*10 of 10"):
        add(ws, "eleventh", from_address="eleven@example.com")
    assert count(ws) == 10
    with pytest.raises(NotFoundError):
        accounts.get_account(ws, "eleventh")
    accounts.remove_account(ws, "acct0")
    add(ws, "eleventh", from_address="eleven@example.com")
    assert count(ws) == 10


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"name": ""}, "needs a name"),
        ({"name": "has space"}, "must be 1-40 letters"),
        ({"name": "x" * 41}, "must be 1-40 letters"),
        ({"from_address": "not-an-address"}, "is not valid"),
        ({"from_address": "a@b@example.com"}, "is not valid"),
        ({"from_address": "service@example.com\r\nBcc: x@example.com"}, "line breaks"),
        ({"from_address": ""}, "is not valid"),
        ({"display_name": "Eve\nBcc: x@example.com"}, "line breaks"),
        ({"smtp_port": 0}, "from 1 to 65535"),
        ({"smtp_port": 70000}, "from 1 to 65535"),
        ({"smtp_port": "abc"}, "must be a number"),
        ({"kind": "sales"}, "unknown kind 'sales'"),
        ({"smtp_security": "tls"}, "unknown security 'tls'"),
        ({"smtp_host": ""}, "is not a host"),
        ({"smtp_host": "smtp example.com"}, "is not a host"),
        ({"ca_bundle": "/nonexistent/ca.pem"}, "cannot be loaded"),
        ({"imap_port": -1}, "from 1 to 65535"),
        ({"password_ref": "env:"}, "env:NAME"),
        ({"password": "x", "password_ref": "env:X"}, "not both"),
        ({"password": "pa\nss"}, "line breaks"),
        ({"colour": "red"}, "unknown account field"),
    ],
)
def test_bad_input_is_refused_with_one_line_and_nothing_written(
    ws: Workspace, override: dict[str, Any], message: str
) -> None:
    name = override.pop("name", "service")
    with pytest.raises(ValidationError, match=message) as info:
        add(ws, name, **override)
    assert "\n" not in str(info.value)
    assert count(ws) == 0


def test_duplicate_name_is_refused(ws: Workspace) -> None:
    add(ws)
    with pytest.raises(ValidationError, match="already exists"):
        add(ws, from_address="other@example.com")
    assert count(ws) == 1


def test_idn_address_is_normalised(ws: Workspace) -> None:
    acct = add(ws, from_address="Service@Bücher.example")
    assert acct.from_address == "Service@bücher.example"


@pytest.mark.parametrize(
    ("security", "port", "hint"),
    [
        ("ssl", 587, "587 normally speaks STARTTLS"),
        ("starttls", 465, "465 normally speaks implicit TLS"),
    ],
)
def test_port_and_security_mismatch_is_a_hint_not_silent(
    ws: Workspace, security: str, port: int, hint: str
) -> None:
    acct = add(ws, smtp_security=security, smtp_port=port)
    assert any(hint in h for h in acct.hints())
    assert add(ws, "fine").hints() == []


def test_plain_auth_to_remote_host_gets_a_hint(ws: Workspace) -> None:
    acct = add(ws, smtp_security="none", password="pw")
    assert any("AUTH will be refused" in h for h in acct.hints())
    local = add(ws, "local", smtp_security="none", smtp_host="127.0.0.1", password="pw")
    assert local.hints() == []


def test_edit_changes_fields_validates_and_keeps_the_rest(ws: Workspace) -> None:
    before = add(ws, password="first")
    after = accounts.edit_account(ws, "service", description="new", smtp_port=2525)
    assert after.description == "new" and after.smtp_port == 2525
    assert after.auth_source == "stored"
    assert accounts.password_for(ws, after).reveal() == "first"
    assert after.updated_at >= before.updated_at
    with pytest.raises(ValidationError, match="is not valid"):
        accounts.edit_account(ws, "service", from_address="broken")
    assert accounts.get_account(ws, "service").from_address == "service@example.com"
    accounts.edit_account(ws, "service", password="second")
    assert accounts.password_for(ws, accounts.get_account(ws, "service")).reveal() == "second"
    cleared = accounts.edit_account(ws, "service", clear_password=True)
    assert cleared.auth_source == "none"
    with pytest.raises(ValidationError, match="cannot edit"):
        accounts.edit_account(ws, "service", name="renamed")


def test_archiving_switches(ws: Workspace) -> None:
    add(ws, "wf", kind="workflow_notification")
    acct = accounts.set_archiving(ws, "wf", received=True)
    assert (acct.sent_archiving, acct.received_archiving) == (False, True)
    acct = accounts.set_archiving(ws, "wf", sent=True, received=False)
    assert (acct.sent_archiving, acct.received_archiving) == (True, False)


def test_unknown_names_are_not_found(ws: Workspace) -> None:
    for call in (
        lambda: accounts.get_account(ws, "ghost"),
        lambda: accounts.edit_account(ws, "ghost", description="x"),
        lambda: accounts.remove_account(ws, "ghost"),
        lambda: accounts.set_archiving(ws, "ghost", sent=True),
    ):
        with pytest.raises(NotFoundError, match="no system email named 'ghost'"):
            call()


def test_zero_sets_a_limit_or_a_port_back_to_none_or_the_default(ws: Workspace) -> None:
    add(ws, rate_limit_per_minute=20, max_message_bytes=5 * 2**20, imap_port=1993)
    a = accounts.edit_account(ws, "service", rate_limit_per_minute=0, max_message_bytes=0,
                              imap_port=0)  # fmt: skip
    assert (a.rate_limit_per_minute, a.max_message_bytes, a.imap_port) == (None, None, 993)
    assert (
        add(ws, "other", rate_limit_per_minute=0, max_message_bytes=0).rate_limit_per_minute is None
    )
    for bad in ({"rate_limit_per_minute": -1}, {"rate_limit_per_minute": True},
                {"max_message_bytes": 512}, {"max_message_bytes": False}):  # fmt: skip
        with pytest.raises(ValidationError):
            accounts.edit_account(ws, "service", **bad)
    assert accounts.get_account(ws, "service").rate_limit_per_minute is None
