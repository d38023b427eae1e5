"""The main job's satisfaction survey: a template, a campaign to four contacts, two answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sysmail_ops.campaigns import (
    add_campaign,
    campaign_stats,
    get_campaign,
    record_survey_response,
    send_campaign,
    survey_token,
)
from sysmail_ops.campaigns.members import members as campaign_members
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import NotFoundError
from sysmail_ops.templates import catalog as templates

DEMO_CAMPAIGN = "demo-csat"
DEMO_TEMPLATE: dict[str, Any] = {
    "name": "csat-survey",
    "object_type": "survey",
    "subject": "{{ name }}, how did we do?",
    "html": (
        "<style>p { font-family: Arial, sans-serif; } a.score { padding: 6px 12px;"
        " background: #1a5fb4; color: #ffffff; text-decoration: none; }</style>"
        "<p>Hello {{ name }},</p><p>{{ question }}</p>"
        "<p>{% for score, url in survey_links.items() %}"
        '<a class="score" href="{{ url }}">{{ score }}</a> {% endfor %}</p>'
        "<p>1 = not at all, 5 = very much. Thank you!</p>"
        '<p><small><a href="{{ unsubscribe_url }}">Unsubscribe</a></small></p>'
    ),
    "text": (
        "Hello {{ name }},\n\n{{ question }}\n\n"
        "{% for score, url in survey_links.items() %}{{ score }}: {{ url }}\n{% endfor %}\n"
        "Unsubscribe: {{ unsubscribe_url }}\n"
    ),
    "fields": ["name", "question", "survey_links", "unsubscribe_url"],
    "description": "Customer satisfaction survey: one link per score",
}
DEMO_CONTACTS = [
    {"id": "C-1001", "email": "eve@example.com", "name": "Eve"},
    {"id": "C-1002", "email": "bob@example.org", "name": "Bob"},
    {"id": "C-1003", "email": "zoe@example.net", "name": "Zoë"},
    {"id": "C-1004", "email": "ann@example.com", "name": "Ann"},
]
DEMO_ANSWERS = {"C-1001": (5, "Quick and friendly."), "C-1002": (3, None)}


def demo(ws: Workspace, account: str, out: Callable[[str], object]) -> None:
    """The main job's survey: a template, a campaign to four contacts, two answers, the stats.

    Safe to run again: the template and campaign are added once, the second
    send mails nobody, and the answers are given again (updating them).
    """
    try:
        templates.get_template(ws, DEMO_TEMPLATE["name"])
    except NotFoundError:
        templates.add_template(ws, **DEMO_TEMPLATE)
    try:
        get_campaign(ws, DEMO_CAMPAIGN)
    except NotFoundError:
        add_campaign(
            ws,
            DEMO_CAMPAIGN,
            kind="survey",
            account=account,
            template=DEMO_TEMPLATE["name"],
            settings={"question": "How happy are you with how we handled your case?"},
            description="Demo: satisfaction survey after a closed case",
        )
    result = send_campaign(ws, DEMO_CAMPAIGN, DEMO_CONTACTS)
    out(f"survey: {result.summary()}")
    sent = campaign_members(ws, DEMO_CAMPAIGN, contacts=DEMO_ANSWERS)
    for contact, (score, comment) in DEMO_ANSWERS.items():
        m = sent.get(contact)
        if m is None or m.status != "sent":
            continue
        token = survey_token(ws, DEMO_CAMPAIGN, m.contact, m.email, m.token_expires_at)
        record_survey_response(ws, token, score, comment)
        out(f"  {m.email} answered {score} of 5 through their personal link")
    s = campaign_stats(ws, DEMO_CAMPAIGN)
    rate = f"{s.response_rate:.0%}" if s.response_rate is not None else "-"
    csat = f"{s.csat:.0%}" if s.csat is not None else "-"
    avg = f"{s.average_score:.1f}" if s.average_score is not None else "-"
    out(
        f"  stats: {s.sent} sent, {s.responded} responded ({rate}), CSAT {csat},"
        f" average {avg}; see `sysmail-ops campaigns stats {DEMO_CAMPAIGN}`"
    )
