"""Workspace settings: defaults, checked values, bad input writes nothing."""

from __future__ import annotations

import pytest

from sysmail_ops.config import settings
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import NotFoundError, ValidationError


def stored_rows(ws: Workspace) -> list[tuple[str, str]]:
    with ws.store.connect() as con:
        return con.execute("SELECT key, value FROM settings ORDER BY key").fetchall()


def test_defaults_without_any_row(ws: Workspace) -> None:
    assert settings.get_setting(ws, "public_base_url") == "http://127.0.0.1:8025"
    assert settings.get_setting(ws, "survey_token_days") == 30
    assert settings.get_setting(ws, "survey_quiet_days") == 30
    listed = {s.name: s for s in settings.list_settings(ws)}
    assert list(listed) == [
        "public_base_url",
        "survey_token_days",
        "survey_quiet_days",
        "render_time_limit",
        "render_output_limit",
        "render_loop_limit",
        "soft_bounce_limit",
        "report_cluster",
        "intake_queue_limit",
    ]
    assert settings.get_setting(ws, "report_cluster") == ""  # the local pool
    assert all(s.is_default and s.updated_at is None for s in listed.values())
    assert stored_rows(ws) == []


def test_set_reads_back_typed_and_reset_restores_the_default(ws: Workspace) -> None:
    assert settings.get_setting(ws, "survey_token_days") == 30  # fills the read cache
    assert settings.set_setting(ws, "survey_token_days", "14") == 14
    assert settings.get_setting(ws, "survey_token_days") == 14  # the cache saw the change
    url = settings.set_setting(ws, "public_base_url", " https://mail.example.com/sysmail/ ")
    assert url == "https://mail.example.com/sysmail"
    assert settings.set_setting(ws, "survey_quiet_days", 0) == 0
    listed = {s.name: s for s in settings.list_settings(ws)}
    assert listed["public_base_url"].value == "https://mail.example.com/sysmail"
    assert not listed["public_base_url"].is_default and listed["public_base_url"].updated_at
    assert settings.reset_setting(ws, "survey_token_days") == 30
    assert settings.get_setting(ws, "survey_token_days") == 30
    assert [k for k, _ in stored_rows(ws)] == ["public_base_url", "survey_quiet_days"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("public_base_url", "ftp://example.com", "http:// or https://"),
        ("public_base_url", "example.com", "http:// or https://"),
        ("public_base_url", "https://", "http:// or https://"),
        ("public_base_url", "https://example.com/a b", "spaces"),
        ("public_base_url", "https://example.com/\r\nX-Evil: 1", "line breaks"),
        ("public_base_url", 'https://example.com/"><script>', "quotes"),
        ("public_base_url", "https://example.com/?a=1", "no query"),
        ("public_base_url", "https://example.com/#top", "no query"),
        ("public_base_url", "https://user@example.com", "user name"),
        ("public_base_url", "https://example.com:99999", "bad port"),
        ("survey_token_days", "0", "from 1 to 365"),
        ("survey_token_days", "366", "from 1 to 365"),
        ("survey_token_days", "ten", "whole number"),
        ("survey_token_days", "1.5", "whole number"),
        ("survey_token_days", True, "whole number"),
        ("survey_quiet_days", "-1", "from 0 to 3650"),
        ("report_cluster", "http://sched:8786", "tcp://HOST:PORT or tls://HOST:PORT"),
        ("report_cluster", "sched:8786", "tcp://HOST:PORT or tls://HOST:PORT"),
        ("report_cluster", "tcp://sched:8786/x", "tcp://HOST:PORT or tls://HOST:PORT"),
        ("report_cluster", "tcp://sched:99999", "bad port"),
    ],
)
def test_bad_values_are_refused_and_write_nothing(
    ws: Workspace, name: str, value: object, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        settings.set_setting(ws, name, value)
    assert stored_rows(ws) == []
    assert settings.get_setting(ws, name) == settings.DEFINITIONS[name].default


def test_report_cluster_takes_a_scheduler_address(ws: Workspace) -> None:
    assert settings.set_setting(ws, "report_cluster", " tcp://10.0.0.5:8786 ") == (
        "tcp://10.0.0.5:8786"
    )
    assert settings.set_setting(ws, "report_cluster", "") == ""


def test_unknown_setting(ws: Workspace) -> None:
    with pytest.raises(NotFoundError, match=r"no setting named 'colour'.*public_base_url"):
        settings.set_setting(ws, "colour", "blue")
    with pytest.raises(NotFoundError):
        settings.get_setting(ws, "colour")
    assert stored_rows(ws) == []


def test_url_hints() -> None:
    assert "this machine only" in (settings.url_hint("http://127.0.0.1:8025") or "")
    assert "this machine only" in (settings.url_hint("https://localhost") or "")
    assert "https" in (settings.url_hint("http://mail.example.com") or "")
    assert settings.url_hint("https://mail.example.com/s") is None
