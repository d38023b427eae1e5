"""CLI: `sysmail-ops campaigns ...`: output, --json, exit codes, bad input writes nothing."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer

from sysmail_ops import campaigns
from sysmail_ops.campaigns import surveys
from sysmail_ops.cli import main
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.templates import catalog as templates

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> Run:
    def _run(*argv: str) -> tuple[int, str, str]:
        code = main(["--home", str(ws.home), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


@pytest.fixture
def contacts(ws: Workspace, smtp_server: SMTPTestServer, tmp_path: Path) -> Path:
    bind(ws, smtp_server, "service")
    bind(ws, smtp_server, "workflow", kind="workflow_notification")
    templates.add_template(
        ws,
        "csat",
        object_type="survey",
        subject="{{ name }}: {{ question }}",
        html='{% for s, u in survey_links.items() %}<a href="{{ u }}">{{ s }}</a>{% endfor %}',
    )
    path = tmp_path / "people.csv"
    path.write_text(
        "id,email,name\n1,eve@example.com,Eve\n2,bob@example.org,Bob\n3,zoe@example.net,Zoë\n",
        encoding="utf-8",
    )
    return path


def test_add_list_show_edit_remove(run: Run, contacts: Path) -> None:
    code, out, err = run(
        "campaigns", "add", "nps", "--kind", "survey", "--account", "service",
        "--template", "csat", "--set", "question=How did we do?", "--description", "after cases",
    )  # fmt: skip
    assert code == 0, err
    assert out.strip() == (
        "added campaign nps (survey through service, template csat, reminders with survey-reminder)"
    )
    code, out, _ = run("campaigns", "list")
    assert code == 0 and re.search(r"nps\s+survey\s+service\s+csat\s+0", out)
    (listed,) = json.loads(run("campaigns", "list", "--json")[1])
    assert listed["settings"] == {"question": "How did we do?"}
    assert listed["members"]["sent"] == 0
    code, out, _ = run("campaigns", "show", "nps")
    assert code == 0 and "reminder template: survey-reminder" in out
    assert "setting question = How did we do?" in out and "none yet" in out
    code, _, err = run("campaigns", "edit", "nps", "--set", "title=CSAT", "--unset", "question")
    assert code == 0, err
    assert json.loads(run("campaigns", "show", "nps", "--json")[1])["settings"] == {"title": "CSAT"}
    code, _, err = run("campaigns", "edit", "nps", "--unset", "nope")
    assert code == 2 and "has no setting 'nope'" in err
    code, out, _ = run("campaigns", "remove", "nps")
    assert code == 0 and out.strip() == "removed campaign nps"
    code, _, err = run("campaigns", "show", "nps")
    assert code == 2 and err.strip() == "sysmail-ops: error: no campaign named 'nps'"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--account", "workflow", "--template", "csat"], "is a workflow notification account"),
        (["--account", "service", "--template", "nope"], "no template named 'nope'"),
        (["--account", "service", "--template", "csat", "--set", "novalue"], "FIELD=VALUE"),
    ],
)
def test_add_bad_input_exit_2_one_line_nothing_written(
    run: Run, contacts: Path, ws: Workspace, args: list[str], message: str
) -> None:
    code, out, err = run("campaigns", "add", "nps", "--kind", "survey", *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err
    assert campaigns.list_campaigns(ws) == []


def test_bad_kind_or_duration_is_a_usage_error(run: Run, contacts: Path) -> None:
    with pytest.raises(SystemExit) as info:
        run("campaigns", "add", "x", "--kind", "promo", "--account", "service", "--template", "t")
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        run("campaigns", "remind", "x", "--after", "soon")
    assert info.value.code == 2


def test_send_remind_stats_members(
    run: Run, contacts: Path, ws: Workspace, smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    campaigns.add_campaign(
        ws, "nps", kind="survey", account="service", template="csat",
        settings={"question": "How did we do?"},
    )  # fmt: skip
    code, out, err = run("campaigns", "send", "nps", "--contacts", str(contacts), "--dry-run")
    assert code == 0, err
    assert "campaign nps send: 3 dry_run" in out and "previews: " in out
    assert smtp_server.messages == []

    code, out, err = run("campaigns", "send", "nps", "--contacts", str(contacts), "--no-progress")
    assert code == 0, err
    assert out.splitlines()[0] == "campaign nps send: 3 sent"
    assert len(smtp_server.messages) == 3
    result = json.loads(run("campaigns", "send", "nps", "--contacts", str(contacts), "--json")[1])
    assert result["counts"] == {"skipped_duplicate": 3} and result["skipped"] == {"quiet": []}

    eve = next(m for m in smtp_server.messages if m.rcpt_tos == ("eve@example.com",))
    link = re.findall(r'href="([^"]+)"', str(eve.message.get_body(("html",)).get_content()))[3]
    surveys.record_survey_response(ws, unquote(urlsplit(link).path.rsplit("/", 1)[1]), 4)

    code, out, err = run("campaigns", "remind", "nps", "--after", "0d", "--no-progress")
    assert code == 0, err
    assert out.splitlines()[0] == "campaign nps remind: 2 sent, 1 skipped (responded)"
    assert "skipped (responded): 1" in out
    code, out, _ = run("campaigns", "remind", "nps", "--after", "0d")
    assert (
        code == 0
        and out.splitlines()[0] == "campaign nps remind: nobody to mail, 1 skipped (responded)"
    )
    assert len(smtp_server.messages) == 5

    code, out, _ = run("campaigns", "stats", "nps")
    assert code == 0
    assert re.search(r"sent:\s+3", out) and re.search(r"reminded:\s+2", out)
    assert re.search(r"response rate:\s+33.3%", out) and re.search(
        r"CSAT \(4-5 of 5\):\s+100.0%", out
    )
    stats = json.loads(run("campaigns", "stats", "nps", "--json")[1])
    assert stats["responded"] == 1 and stats["average_score"] == 4.0
    assert stats["response_rate"] == pytest.approx(1 / 3)

    members = json.loads(run("campaigns", "members", "nps", "--json")[1])
    assert [(m["contact"], m["status"]) for m in members] == [
        ("1", "sent"),
        ("2", "sent"),
        ("3", "sent"),
    ]
    code, out, _ = run("campaigns", "members", "nps", "--status", "quiet")
    assert code == 0 and out.strip().splitlines() == ["contact  email  status  sent  reminded"]


def test_send_bad_input_exit_2_and_nothing_sent(
    run: Run, contacts: Path, ws: Workspace, smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    campaigns.add_campaign(ws, "nps", kind="survey", account="service", template="csat",
                           settings={"question": "?"})  # fmt: skip
    code, out, err = run("campaigns", "send", "nps", "--contacts", str(contacts),
                         "--email-column", "mail")  # fmt: skip
    assert code == 2 and out == "" and "no email column 'mail'" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("id,email,name\n1,eve@example.com,Eve\n2,nope,Bob\n", encoding="utf-8")
    code, _, err = run("campaigns", "send", "nps", "--contacts", str(bad))
    assert code == 2 and "contact 2 (2): address" in err and "nothing was sent" in err
    code, _, err = run("campaigns", "send", "nope", "--contacts", str(contacts))
    assert code == 2 and "no campaign named 'nope'" in err
    assert smtp_server.messages == []
    assert campaigns.recipients(ws, "nps") == []


def test_a_failed_delivery_exits_1(
    run: Run, contacts: Path, ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    campaigns.add_campaign(ws, "nps", kind="survey", account="service", template="csat",
                           settings={"question": "?"})  # fmt: skip
    smtp_server.reject_rcpt = {"bob@example.org": "550 5.1.1 no such user"}
    code, out, _ = run("campaigns", "send", "nps", "--contacts", str(contacts), "--no-progress")
    assert code == 1 and "1 failed, 2 sent" in out
    assert json.loads(run("campaigns", "stats", "nps", "--json")[1])["failed"] == 1
