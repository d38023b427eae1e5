"""Campaigns: the model, mail merge, quiet days, suppression, survey links, reminders, stats.

Against the real aiosmtpd server (``smtp_server``) and a real DuckDB workspace.
"""

from __future__ import annotations

import http.client as http_client
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlencode, urlsplit

import pandas as pd
import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer

from sysmail_ops import campaigns
from sysmail_ops.campaigns import surveys
from sysmail_ops.campaigns.members import members
from sysmail_ops.campaigns.sends import Links, survey_token
from sysmail_ops.config import accounts, settings
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.demo import survey as demo_survey
from sysmail_ops.errors import InUseError, NotFoundError, SysmailError, ValidationError
from sysmail_ops.records import sendlog, suppression
from sysmail_ops.sending import retry as deferred
from sysmail_ops.sending.batch import SendOptions
from sysmail_ops.store.database import utcnow
from sysmail_ops.templates import catalog as templates
from sysmail_ops.web import server as web

FAST = SendOptions(backoff=0.01)
CONTACTS = pd.DataFrame(
    [
        {"id": 1, "email": "eve@example.com", "name": "Eve", "product": "Router X"},
        {"id": 2, "email": "bob@example.org", "name": "Bob", "product": "Switch Y"},
        {"id": 3, "email": "zoe@example.net", "name": "Zoë", "product": "Modem Z"},
    ]
)
ANN = pd.DataFrame([{"id": 4, "email": "ann@example.com", "name": "Ann", "product": "Hub"}])
SURVEY_HTML = (
    "<p>Hello {{ name }}, {{ question }}</p>"
    '{% for score, url in survey_links.items() %}<a href="{{ url }}">{{ score }}</a> '
    '{% endfor %}<p><a href="{{ unsubscribe_url }}">unsubscribe</a></p>'
)


@pytest.fixture
def setup(ws: Workspace, smtp_server: SMTPTestServer) -> Workspace:
    """A customer-service and a workflow system email, a follow-up and a survey template."""
    bind(ws, smtp_server, "service")
    bind(ws, smtp_server, "workflow", kind="workflow_notification")
    templates.add_template(
        ws,
        "follow",
        object_type="case",
        subject="About your {{ product }}",
        html="<p>Hi {{ name }}, how is your {{ product }}? ({{ campaign }})</p>",
    )
    templates.add_template(
        ws, "csat", object_type="survey", subject="{{ name }}, how did we do?", html=SURVEY_HTML
    )
    return ws


def survey(ws: Workspace, name: str = "nps") -> campaigns.Campaign:
    return campaigns.add_campaign(
        ws,
        name,
        kind="survey",
        account="service",
        template="csat",
        settings={"question": "How happy are you?"},
    )


def follow_up(ws: Workspace, name: str = "fu") -> campaigns.Campaign:
    return campaigns.add_campaign(ws, name, kind="follow_up", account="service", template="follow")


def log_rows(ws: Workspace) -> pd.DataFrame:
    return sendlog.list_logs(ws, limit=None)


def html_of(msg: object) -> str:
    body = msg.message.get_body(("html",))  # type: ignore[attr-defined]
    assert body is not None
    return str(body.get_content())


def links_in(html: str) -> list[str]:
    return re.findall(r'href="([^"]+)"', html)


def token_of(url: str) -> str:
    return unquote(urlsplit(url).path.rsplit("/", 1)[1])


# --- the model ----------------------------------------------------------------------------


def test_add_survey_defaults_the_reminder_template_and_keeps_settings(setup: Workspace) -> None:
    c = survey(setup)
    assert c.reminder_template == "survey-reminder"
    got = campaigns.get_campaign(setup, "nps")
    assert got.settings == {"question": "How happy are you?"}
    assert got.account == "service" and got.kind == "survey"
    assert got.created_at is not None
    follow_up(setup)
    assert [x.name for x in campaigns.list_campaigns(setup)] == ["fu", "nps"]
    assert [x.name for x in campaigns.list_campaigns(setup, kind="follow_up")] == ["fu"]
    assert campaigns.get_campaign(setup, "fu").reminder_template is None


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"kind": "newsletter"}, ValidationError, "unknown campaign kind 'newsletter'"),
        ({"account": "workflow"}, ValidationError, "is a workflow notification account"),
        ({"account": "nobody"}, NotFoundError, "no system email named 'nobody'"),
        ({"template": "nope"}, NotFoundError, "no template named 'nope'"),
        ({"reminder_template": "nope"}, NotFoundError, "no template named 'nope'"),
        ({"kind": "follow_up", "reminder_template": "csat"}, ValidationError, "no reminders"),
        ({"name": "bad name"}, ValidationError, "campaign name 'bad name'"),
        ({"settings": {"survey_url": "x"}}, ValidationError, "filled in per recipient"),
        ({"settings": {"9x": "x"}}, ValidationError, "not a template field name"),
        ({"settings": {"when": object()}}, ValidationError, "must be a string, number"),
        ({"description": "two\nlines"}, ValidationError, "one line"),
    ],
)
def test_add_refuses_bad_input_and_writes_nothing(
    setup: Workspace, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    fields: dict[str, object] = {
        "name": "c1",
        "kind": "survey",
        "account": "service",
        "template": "csat",
    }
    fields.update(kwargs)
    name = fields.pop("name")
    with pytest.raises(error, match=re.escape(message)):
        campaigns.add_campaign(setup, name, **fields)  # type: ignore[arg-type]
    assert campaigns.list_campaigns(setup) == []


def test_marketing_account_is_accepted_and_names_are_unique(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    bind(setup, smtp_server, "news", kind="marketing")
    campaigns.add_campaign(setup, "m", kind="follow_up", account="news", template="follow")
    with pytest.raises(ValidationError, match="a campaign named 'm' already exists"):
        campaigns.add_campaign(setup, "m", kind="follow_up", account="service", template="follow")
    assert campaigns.get_campaign(setup, "m").account == "news"


def test_edit_and_remove(setup: Workspace) -> None:
    survey(setup)
    c = campaigns.edit_campaign(setup, "nps", settings={"question": "Better now?"})
    assert c.settings == {"question": "Better now?"}
    assert campaigns.get_campaign(setup, "nps").settings == {"question": "Better now?"}
    with pytest.raises(ValidationError, match="workflow notification"):
        campaigns.edit_campaign(setup, "nps", account="workflow")
    with pytest.raises(ValidationError, match="cannot edit kind"):
        campaigns.edit_campaign(setup, "nps", kind="follow_up")
    with pytest.raises(ValidationError, match="nothing to change"):
        campaigns.edit_campaign(setup, "nps")
    assert campaigns.get_campaign(setup, "nps").account == "service"
    campaigns.remove_campaign(setup, "nps")
    with pytest.raises(NotFoundError, match="no campaign named 'nps'"):
        campaigns.get_campaign(setup, "nps")
    with pytest.raises(NotFoundError):
        campaigns.remove_campaign(setup, "nps")


def test_removing_a_template_or_account_in_use_is_refused_naming_the_campaign(
    setup: Workspace,
) -> None:
    survey(setup)
    templates.add_template(setup, "nudge", object_type="survey", subject="s", html="<p>x</p>")
    campaigns.edit_campaign(setup, "nps", reminder_template="nudge")
    for name in ("csat", "nudge"):
        with pytest.raises(InUseError, match=f"template '{name}' is still used by campaign nps"):
            templates.remove_template(setup, name)
    with pytest.raises(InUseError, match="is still used by campaign nps"):
        accounts.remove_account(setup, "service")
    campaigns.remove_campaign(setup, "nps")
    templates.remove_template(setup, "nudge")
    accounts.get_account(setup, "service")


def test_an_account_that_became_a_workflow_account_sends_no_campaign(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    follow_up(setup)
    accounts.edit_account(setup, "service", kind="workflow_notification")
    with pytest.raises(ValidationError, match="is a workflow notification account"):
        campaigns.send_campaign(setup, "fu", CONTACTS, options=FAST)
    assert smtp_server.messages == [] and members(setup, "fu") == {}


# --- the mail merge -----------------------------------------------------------------------


def test_mail_merge_one_message_per_contact_with_their_fields_then_rerun_sends_nothing(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    follow_up(setup)
    result = campaigns.send_campaign(setup, "fu", CONTACTS, options=FAST)
    assert result.counts == {"sent": 3}
    got = {m.rcpt_tos[0]: m for m in smtp_server.messages}
    assert set(got) == {"eve@example.com", "bob@example.org", "zoe@example.net"}
    assert got["zoe@example.net"].message["Subject"] == "About your Modem Z"
    assert "Hi Zoë, how is your Modem Z? (fu)" in html_of(got["zoe@example.net"])
    for addr, msg in got.items():  # each carries its own unsubscribe link
        link = msg.message["List-Unsubscribe"].strip("<>")
        claims = surveys.verify_token(setup, token_of(link), "unsubscribe")
        assert claims.email == addr and claims.campaign == "fu"
    rows = log_rows(setup)
    assert set(rows["delivery_key"]) == {"campaign:fu:1", "campaign:fu:2", "campaign:fu:3"}
    assert set(rows["use_case"]) == {"follow_up"}
    assert {m.contact: m.status for m in members(setup, "fu").values()} == dict.fromkeys(
        ["1", "2", "3"], "sent"
    )

    again = campaigns.send_campaign(setup, "fu", CONTACTS, options=FAST)
    assert again.counts == {"skipped_duplicate": 3}
    assert len(smtp_server.messages) == 3
    more = pd.concat([CONTACTS, ANN])
    third = campaigns.send_campaign(setup, "fu", more, options=FAST)
    assert third.counts == {"skipped_duplicate": 3, "sent": 1}
    assert smtp_server.messages[-1].rcpt_tos == ("ann@example.com",)


def test_csv_and_jsonl_contacts_with_other_column_names(
    setup: Workspace, smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    follow_up(setup)
    csv = tmp_path / "people.csv"
    csv.write_text("ref,mail,name,product\nA-1,eve@example.com,Eve,Hub\n", encoding="utf-8")
    r = campaigns.send_campaign(
        setup, "fu", csv, email_column="mail", contact_column="ref", options=FAST
    )
    assert r.counts == {"sent": 1}
    jsonl = tmp_path / "people.jsonl"
    jsonl.write_text('{"ref": "A-2", "mail": "bob@example.org", "name": "Bob", "product": "X"}\n')
    r = campaigns.send_campaign(
        setup, "fu", jsonl, email_column="mail", contact_column="ref", options=FAST
    )
    assert r.counts == {"sent": 1}
    assert sorted(members(setup, "fu")) == ["A-1", "A-2"]
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == ["eve@example.com", "bob@example.org"]


def test_dry_run_writes_previews_and_sends_and_records_nothing(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    survey(setup)
    result = campaigns.send_campaign(setup, "nps", CONTACTS, dry_run=True, options=FAST)
    assert result.counts == {"dry_run": 3}
    assert result.preview_dir is not None
    previews = sorted(Path(result.preview_dir).glob("*.eml"))
    assert len(previews) == 3
    assert b"/survey/" in previews[0].read_bytes()
    assert smtp_server.messages == []
    assert members(setup, "nps") == {}
    assert set(log_rows(setup)["status"]) == {"dry_run"}
    real = campaigns.send_campaign(setup, "nps", CONTACTS, options=FAST)
    assert real.counts == {"sent": 3}  # a dry run does not count as sent


BAD_CASES = [
    ({"email_column": "mail"}, None, "no email column 'mail' in the contacts"),
    ({"contact_column": "ref"}, None, "no contact id column 'ref'"),
    ({}, {"email": "not-an-address"}, "contact 2 (2): address"),
    ({}, {"id": 1}, "id '1' is listed twice"),
    ({}, {"id": None}, "contact 2: no id in column 'id'"),
    ({}, "drop-name", "template 'csat' uses field(s) name"),
    ({}, "survey_url", "column 'survey_url' is filled in"),
    ({}, "empty", "the contact list is empty"),
]


@pytest.mark.parametrize(("kwargs", "change", "message"), BAD_CASES)
def test_bad_contacts_raise_and_write_nothing(
    setup: Workspace,
    smtp_server: SMTPTestServer,
    kwargs: dict[str, str],
    change: object,
    message: str,
) -> None:
    survey(setup)
    df = CONTACTS.copy()
    if isinstance(change, dict):
        for col, value in change.items():
            df[col] = df[col].astype(object)
            df.at[1, col] = value
    elif change == "drop-name":
        df = df.drop(columns=["name"])
    elif change == "survey_url":
        df["survey_url"] = "x"
    elif change == "empty":
        df = df.iloc[0:0]
    with pytest.raises(ValidationError, match=re.escape(message)):
        campaigns.send_campaign(setup, "nps", df, options=FAST, **kwargs)  # type: ignore[arg-type]
    assert smtp_server.messages == []
    assert members(setup, "nps") == {}
    assert log_rows(setup).empty


def test_unknown_campaign_or_missing_file_raise(setup: Workspace, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no campaign named 'x'"):
        campaigns.send_campaign(setup, "x", CONTACTS)
    follow_up(setup)
    with pytest.raises(ValidationError, match="does not exist"):
        campaigns.send_campaign(setup, "fu", tmp_path / "none.csv")


def test_a_template_error_found_while_sending_takes_back_the_staged_members(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    """A subject with a line break fails in the pipeline's render: nothing stays behind."""
    templates.add_template(setup, "inj", object_type="case", subject="{{ name }}", html="<p/>")
    campaigns.add_campaign(setup, "inj", kind="follow_up", account="service", template="inj")
    df = CONTACTS.copy()
    df.at[2, "name"] = "Zoë\nBcc: everyone@example.com"
    with pytest.raises(SysmailError, match="line break"):
        campaigns.send_campaign(setup, "inj", df, options=FAST)
    assert members(setup, "inj") == {}
    assert smtp_server.messages == [] and log_rows(setup).empty


def test_suppressed_contacts_are_skipped_and_logged(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    follow_up(setup)
    suppression.add(setup, "Bob@Example.org", reason="unsubscribe")
    result = campaigns.send_campaign(setup, "fu", CONTACTS, options=FAST)
    assert result.counts == {"sent": 2, "suppressed": 1}
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        "eve@example.com",
        "zoe@example.net",
    ]
    rows = log_rows(setup)
    assert rows.loc[rows["status"] == "suppressed", "delivery_key"].tolist() == ["campaign:fu:2"]
    assert members(setup, "fu")["2"].status == "suppressed"
    stats = campaigns.campaign_stats(setup, "fu")
    assert (stats.sent, stats.suppressed, stats.contacts) == (2, 1, 3)
    assert stats.responded is None and stats.csat is None  # a follow-up has no answers


# --- quiet days ---------------------------------------------------------------------------


def test_a_contact_surveyed_recently_is_not_surveyed_again(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    survey(setup, "first")
    campaigns.send_campaign(setup, "first", CONTACTS.iloc[[0]], options=FAST)  # Eve
    survey(setup, "second")
    other = CONTACTS.assign(id=["x1", "x2", "x3"])  # other ids, same people
    result = campaigns.send_campaign(setup, "second", other, options=FAST)
    assert result.skipped == {"quiet": ["x1"]}
    assert result.counts == {"sent": 2}
    assert "1 skipped (quiet)" in result.summary()
    assert [m.rcpt_tos[0] for m in smtp_server.messages[1:]] == [
        "bob@example.org",
        "zoe@example.net",
    ]
    quiet = members(setup, "second")["x1"]
    assert quiet.status == "quiet" and quiet.sent_at is None
    assert not (log_rows(setup)["delivery_key"] == "campaign:second:x1").any()  # never attempted
    assert campaigns.campaign_stats(setup, "second").quiet == 1

    # a follow-up is no survey: the rule does not apply
    follow_up(setup)
    assert campaigns.send_campaign(setup, "fu", CONTACTS, options=FAST).counts == {"sent": 3}

    # the rule counts days: once they passed (or with 0 days) the contact is surveyed
    settings.set_setting(setup, "survey_quiet_days", 0)
    again = campaigns.send_campaign(setup, "second", other, options=FAST)
    assert again.skipped == {"quiet": []}
    assert again.counts == {"sent": 1, "skipped_duplicate": 2}
    assert members(setup, "second")["x1"].status == "sent"


def test_the_same_address_twice_in_one_survey_is_surveyed_once(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    survey(setup)
    df = pd.concat([CONTACTS, CONTACTS.iloc[[0]].assign(id=9)])
    result = campaigns.send_campaign(setup, "nps", df, options=FAST)
    assert result.counts == {"sent": 3} and result.skipped == {"quiet": ["9"]}


# --- survey links, answers, reminders, stats ----------------------------------------------


def test_survey_links_verify_answers_and_reminders_only_to_non_respondents_once(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    survey(setup)
    campaigns.send_campaign(setup, "nps", CONTACTS, options=FAST)
    mails = {m.rcpt_tos[0]: m for m in smtp_server.messages}
    html = html_of(mails["eve@example.com"])
    assert "Hello Eve, How happy are you?" in html
    links = links_in(html)
    assert [urlsplit(u).query for u in links[:5]] == [f"score={n}" for n in range(1, 6)]
    assert links[5] == mails["eve@example.com"].message["List-Unsubscribe"].strip("<>")
    token = token_of(links[4])
    claims = surveys.verify_token(setup, token, "survey")
    assert (claims.campaign, claims.contact, claims.email) == ("nps", "1", "eve@example.com")
    assert claims.expires_at is not None
    days = (claims.expires_at - utcnow()).days
    assert days == settings.get_setting(setup, "survey_token_days") - 1
    surveys.record_survey_response(setup, token, 5, "great")

    # too early: nobody is due yet
    early = campaigns.remind_campaign(setup, "nps", after=timedelta(days=3), options=FAST)
    assert early.counts == {} and sorted(early.skipped["not_due"]) == ["2", "3"]
    assert early.skipped["responded"] == ["1"]
    assert len(smtp_server.messages) == 3

    later = utcnow() + timedelta(days=4)
    result = campaigns.remind_campaign(
        setup, "nps", after=timedelta(days=3), now=later, options=FAST
    )
    assert result.counts == {"sent": 2}
    reminders = {m.rcpt_tos[0]: m for m in smtp_server.messages[3:]}
    assert set(reminders) == {"bob@example.org", "zoe@example.net"}
    zoe = reminders["zoe@example.net"]
    assert zoe.message["Subject"] == "Reminder: nps"
    assert "Hello Zoë" in html_of(zoe)
    # the reminder's link is the survey mail's: the same token, made again from its expiry
    first = token_of(links_in(html_of(mails["zoe@example.net"]))[0])
    assert f"/survey/{first}" in html_of(zoe)
    assert set(log_rows(setup)["delivery_key"]) >= {
        "campaign:nps:reminder:2",
        "campaign:nps:reminder:3",
    }

    again = campaigns.remind_campaign(
        setup, "nps", after=timedelta(days=3), now=later, options=FAST
    )
    assert again.counts == {} and len(smtp_server.messages) == 5  # once only
    assert {m.contact: m.reminded_at is not None for m in members(setup, "nps").values()} == {
        "1": False,
        "2": True,
        "3": True,
    }


def test_batch_links_are_the_surveys_modules_links(setup: Workspace) -> None:
    """``Links`` reads the base URL once a batch; its URLs must be exactly surveys' own."""
    settings.set_setting(setup, "public_base_url", "https://feedback.example.com/sm/")
    links = Links(setup)
    token = survey_token(setup, "nps", "C/1 ü", "eve@example.com", utcnow() + timedelta(days=2))
    page, scores = links.survey(token)
    assert page == surveys.survey_url(setup, token)
    assert scores == surveys.survey_links(setup, token)
    assert page.startswith("https://feedback.example.com/sm/survey/")
    assert links.unsubscribe("eve@example.com", "nps") == surveys.unsubscribe_url(
        setup, "eve@example.com", campaign="nps"
    )


def test_expired_tokens_get_no_reminder(setup: Workspace, smtp_server: SMTPTestServer) -> None:
    survey(setup)
    campaigns.send_campaign(setup, "nps", CONTACTS.iloc[[0]], options=FAST)
    after_expiry = utcnow() + timedelta(days=31)
    r = campaigns.remind_campaign(
        setup, "nps", after=timedelta(days=3), now=after_expiry, options=FAST
    )
    assert r.skipped["expired"] == ["1"] and r.counts == {}
    assert len(smtp_server.messages) == 1


def test_a_dry_run_reminder_previews_and_leaves_the_reminder_owed(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    survey(setup)
    campaigns.send_campaign(setup, "nps", CONTACTS.iloc[[0]], options=FAST)
    dry = campaigns.remind_campaign(setup, "nps", after=timedelta(0), dry_run=True, options=FAST)
    assert dry.counts == {"dry_run": 1} and dry.preview_dir is not None
    assert b"Reminder: nps" in next(Path(dry.preview_dir).glob("*.eml")).read_bytes()
    assert members(setup, "nps")["1"].reminded_at is None
    real = campaigns.remind_campaign(setup, "nps", after=timedelta(0), options=FAST)
    assert real.counts == {"sent": 1} and len(smtp_server.messages) == 2


def test_remind_refuses_follow_ups_and_negative_durations(setup: Workspace) -> None:
    follow_up(setup)
    with pytest.raises(ValidationError, match="is a follow_up"):
        campaigns.remind_campaign(setup, "fu", after=timedelta(days=3))
    survey(setup)
    with pytest.raises(ValidationError, match="zero or more"):
        campaigns.remind_campaign(setup, "nps", after=timedelta(days=-1))


def test_contacts_without_reminder_fields_are_refused_before_the_survey_goes_out(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    """The built-in reminder greets by ``name``: a survey never to be reminded is refused."""
    templates.add_template(
        setup, "short", object_type="survey", subject="Rate us", html="<p>{{ survey_url }}</p>"
    )
    campaigns.add_campaign(setup, "s2", kind="survey", account="service", template="short")
    with pytest.raises(ValidationError, match="template 'survey-reminder' uses field"):
        campaigns.send_campaign(setup, "s2", CONTACTS.drop(columns=["name"]), options=FAST)
    assert smtp_server.messages == []


def test_stats_figures_are_exact(setup: Workspace, smtp_server: SMTPTestServer) -> None:
    survey(setup)
    four = pd.concat([CONTACTS, ANN])
    suppression.add(setup, "ann@example.com")
    campaigns.send_campaign(setup, "nps", four, options=FAST)
    tokens = {m.rcpt_tos[0]: token_of(links_in(html_of(m))[0]) for m in smtp_server.messages}
    surveys.record_survey_response(setup, tokens["eve@example.com"], 5)
    surveys.record_survey_response(setup, tokens["bob@example.org"], 2)
    surveys.record_survey_response(setup, tokens["bob@example.org"], 3, "changed my mind")
    later = utcnow() + timedelta(days=4)
    campaigns.remind_campaign(setup, "nps", after=timedelta(days=3), now=later, options=FAST)
    s = campaigns.campaign_stats(setup, "nps")
    assert (s.contacts, s.sent, s.suppressed, s.quiet, s.failed) == (4, 3, 1, 0, 0)
    assert (s.responded, s.reminded) == (2, 1)
    assert s.response_rate == pytest.approx(2 / 3)
    assert s.csat == 0.5  # 5 counts, 3 does not
    assert s.average_score == 4.0


def test_stats_before_any_answer(setup: Workspace) -> None:
    survey(setup)
    s = campaigns.campaign_stats(setup, "nps")
    assert (s.sent, s.responded, s.response_rate, s.csat, s.average_score) == (
        0,
        0,
        None,
        None,
        None,
    )
    with pytest.raises(NotFoundError):
        campaigns.campaign_stats(setup, "nope")


def test_demo_is_repeatable(setup: Workspace, smtp_server: SMTPTestServer) -> None:
    lines: list[str] = []
    demo_survey.demo(setup, "service", lines.append)
    assert lines[0].startswith("survey: campaign demo-csat send: 4 sent")
    assert "2 responded (50%), CSAT 50%, average 4.0" in lines[-1]
    assert len(smtp_server.messages) == 4
    lines.clear()
    demo_survey.demo(setup, "service", lines.append)
    assert "4 skipped_duplicate" in lines[0] and len(smtp_server.messages) == 4
    assert "2 responded (50%)" in lines[-1]


# --- with the other parts: the retry queue, the real `serve` endpoint ---------------------


def test_a_deferred_mail_counts_as_sent_once_retry_deferred_delivers_it(
    setup: Workspace, smtp_server: SMTPTestServer
) -> None:
    follow_up(setup)
    smtp_server.fail_data_times = 3  # the first contact's three tries meet a 451
    result = campaigns.send_campaign(setup, "fu", CONTACTS, options=FAST)
    assert result.counts == {"deferred": 1, "sent": 2}
    assert members(setup, "fu")["1"].status == "deferred"
    assert campaigns.campaign_stats(setup, "fu").deferred == 1
    again = campaigns.send_campaign(setup, "fu", CONTACTS, options=FAST)
    assert again.counts == {"skipped_duplicate": 3}  # queued for retry counts as delivered
    retried = deferred.retry_deferred(setup, now=utcnow() + timedelta(hours=1))
    assert retried.counts == {"sent": 1}
    s = campaigns.campaign_stats(setup, "fu")
    assert (s.sent, s.deferred) == (3, 0)
    assert members(setup, "fu")["1"].sent_at is not None


@pytest.fixture
def endpoint(setup: Workspace) -> Iterator[web.SurveyServer]:
    srv = web.make_server(setup, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    settings.set_setting(setup, "public_base_url", srv.url)
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def http(url: str, method: str = "GET", fields: dict[str, str] | None = None) -> int:
    parts = urlsplit(url)
    conn = http_client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    body = urlencode(fields) if fields is not None else None
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    try:
        conn.request(method, f"{parts.path}?{parts.query}" if parts.query else parts.path, body,
                     headers)  # fmt: skip
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_answers_and_unsubscribes_through_the_endpoint_steer_the_reminders(
    setup: Workspace, smtp_server: SMTPTestServer, endpoint: web.SurveyServer
) -> None:
    survey(setup)
    campaigns.send_campaign(setup, "nps", CONTACTS, options=FAST)
    mails = {m.rcpt_tos[0]: m for m in smtp_server.messages}
    eve = links_in(html_of(mails["eve@example.com"]))
    assert eve[3].startswith(endpoint.url + "/survey/")
    zoe = links_in(html_of(mails["zoe@example.net"]))
    assert http(zoe[0]) == 200  # a scanner opening the link answers nothing
    assert http(eve[3], "POST", {"score": "4", "comment": "fine"}) == 200
    bob = mails["bob@example.org"].message["List-Unsubscribe"].strip("<>")
    assert http(bob, "POST", {"List-Unsubscribe": "One-Click"}) == 200
    assert suppression.get_entry(setup, "bob@example.org") is not None

    later = utcnow() + timedelta(days=4)
    r = campaigns.remind_campaign(setup, "nps", after=timedelta(days=3), now=later, options=FAST)
    assert r.counts == {"sent": 1, "suppressed": 1} and r.skipped["responded"] == ["1"]
    assert [m.rcpt_tos[0] for m in smtp_server.messages[3:]] == ["zoe@example.net"]
    s = campaigns.campaign_stats(setup, "nps")
    assert (s.sent, s.responded, s.csat, s.average_score, s.reminded) == (3, 1, 1.0, 4.0, 1)
