"""Provider presets (the shipped data file) and the account signing settings (DKIM keys)."""

from __future__ import annotations

import pytest

from sysmail_ops.config import accounts, providers, signing
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import NotFoundError, ValidationError


def test_every_preset_is_complete_and_says_what_is_unconfirmed() -> None:
    found = providers.providers()
    assert {
        "microsoft365",
        "outlook",
        "google",
        "exmail",
        "qq",
        "aliyun",
        "netease",
        "zoho",
    } <= set(found)
    assert {"163", "126"} <= set(found)
    for p in found.values():
        for server in (p.smtp, p.imap):
            assert server.security in accounts.SECURITIES and 1 <= server.port <= 65535
            assert server.host and " " not in server.host
        assert p.auth in ("password", "oauth2", "none")
        assert (p.auth == "oauth2") == (p.oauth_provider is not None)
        assert p.hint and p.sources, p.name
        if p.settings_page is None:
            assert any("settings page" in u for u in p.unconfirmed), p.name
        else:
            assert p.settings_page.startswith("https://")
        if p.max_message_mb is None:
            assert any("size" in u for u in p.unconfirmed), p.name
    assert found["microsoft365"].max_message_mb == 35
    assert found["google"].max_message_mb == 25
    for name in ("qq", "163", "126", "netease"):
        assert "authorisation code" in found[name].hint


def test_a_preset_fills_account_values_and_suggestions_follow_known_domains() -> None:
    values = providers.get_provider("microsoft365").account_values()
    assert values == {
        "smtp_host": "smtp.office365.com", "smtp_port": 587, "smtp_security": "starttls",
        "imap_host": "outlook.office365.com", "imap_port": 993, "imap_security": "ssl",
        "max_message_bytes": 35 * 2**20,
    }  # fmt: skip
    assert "max_message_bytes" not in providers.get_provider("qq").account_values()
    assert providers.suggest("Ops@GMAIL.com").name == "google"  # type: ignore[union-attr]
    assert providers.suggest("a@hotmail.com").name == "outlook"  # type: ignore[union-attr]
    assert providers.suggest("a@163.com").name == "163"  # type: ignore[union-attr]
    assert providers.suggest("a@corp.example") is None
    assert providers.suggest("not an address") is None


def test_mx_hosts_match_presets() -> None:
    assert providers.match_mx(["corp.mail.protection.outlook.com."]).name == "microsoft365"  # type: ignore[union-attr]
    assert providers.match_mx(["aspmx.l.google.com"]).name == "google"  # type: ignore[union-attr]
    assert providers.match_mx(["mxbiz1.qq.com", "mx1.qiye.163.com"]).name == "netease"  # type: ignore[union-attr]
    assert providers.match_mx(["mx.corp.example"]) is None


def test_set_dkim_checks_before_writing(ws: Workspace) -> None:
    accounts.add_account(
        ws, "svc", from_address="svc@example.com", smtp_host="127.0.0.1", smtp_security="none"
    )
    with pytest.raises(NotFoundError):
        signing.set_dkim(ws, "nobody", selector="s1")
    with pytest.raises(ValidationError, match="unknown DKIM algorithm"):
        signing.set_dkim(ws, "svc", selector="s1", algorithm="dsa")
    with pytest.raises(ValidationError, match="DKIM domain"):
        signing.set_dkim(ws, "svc", selector="s1", domain="not a domain")
    account, key = signing.set_dkim(ws, "svc", selector="s1")
    with pytest.raises(ValidationError, match="its own selector"):
        signing.set_dkim(ws, "svc", selector="s1", algorithm="ed25519")
    assert signing.dkim_keys(ws, accounts.get_account(ws, "svc")) == (key,)
    # a new RSA key replaces the old one under its selector
    _, key2 = signing.set_dkim(ws, "svc", selector="s2")
    assert signing.dkim_keys(ws, accounts.get_account(ws, "svc")) == (key2,)
    assert account.dkim_domain == "example.com"
