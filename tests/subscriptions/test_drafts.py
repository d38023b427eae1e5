"""An unsaved subscription is checked as a save would check it, and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import bind
from report_fixtures import write_echo_report
from smtp_testserver import SMTPTestServer

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import NotFoundError, ValidationError
from sysmail_ops.subscriptions import drafts, model


def _values(report: Path) -> dict[str, object]:
    return {
        "notebook": str(report),
        "recipients": [{"address": "ana@example.com", "parameters": {"region": "APAC"}}],
        "cron": "0 8 * * mon",
        "timezone": "Europe/Berlin",
        "account": "service",
        "owner": "owner@example.com",
    }


def test_a_good_draft_is_normalised(
    ws: Workspace, smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    bind(ws, smtp_server)
    s = drafts.check_draft(ws, None, **_values(write_echo_report(tmp_path)))  # type: ignore[arg-type]
    assert s.name == drafts.DRAFT_NAME and s.recipients[0].parameters == {"region": "APAC"}
    assert s.template == model.DEFAULT_TEMPLATE and s.timezone == "Europe/Berlin"
    assert model.list_subscriptions(ws) == []


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"timezone": "Mars/Olympus"}, ValidationError, "timezone"),
        ({"cron": "0 8 * *"}, ValidationError, "cron"),
        ({"account": "nobody"}, NotFoundError, "nobody"),
        ({"recipients": ["not-an-address"]}, ValidationError, "not-an-address"),
        ({"parameters": {"nope": 1}}, ValidationError, "nope"),
    ],
)
def test_a_bad_draft_is_refused_like_a_save(
    ws: Workspace,
    smtp_server: SMTPTestServer,
    tmp_path: Path,
    change: dict[str, object],
    error: type[Exception],
    match: str,
) -> None:
    bind(ws, smtp_server)
    values = {**_values(write_echo_report(tmp_path)), **change}
    with pytest.raises(error, match=match):
        drafts.check_draft(ws, "weekly", **values)  # type: ignore[arg-type]
    with pytest.raises(error, match=match):
        model.add_subscription(ws, "weekly", **values)  # type: ignore[arg-type]
    assert model.list_subscriptions(ws) == []
