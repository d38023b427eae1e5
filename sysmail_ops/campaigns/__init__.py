"""Follow-ups and satisfaction surveys: campaigns (``model``), their members
(``members``), sending and reminders (``sends``), survey answers (``surveys``)
and the signed links they carry (``tokens``).

May import: ``sending`` and everything below it; not ``subscriptions`` or ``flows``.
"""

from sysmail_ops.campaigns import members, model, sends, surveys
from sysmail_ops.campaigns.model import (
    DEFAULT_REMINDER,
    KINDS,
    RESERVED_FIELDS,
    Campaign,
    add_campaign,
    check_campaign,
    edit_campaign,
    get_campaign,
    list_campaigns,
    remove_campaign,
)
from sysmail_ops.campaigns.sends import (
    CampaignResult,
    CampaignStats,
    campaign_stats,
    recipients,
    remind_campaign,
    send_campaign,
    survey_token,
)
from sysmail_ops.campaigns.surveys import record_survey_response, responses

__all__ = [
    "DEFAULT_REMINDER",
    "KINDS",
    "RESERVED_FIELDS",
    "Campaign",
    "CampaignResult",
    "CampaignStats",
    "add_campaign",
    "campaign_stats",
    "check_campaign",
    "edit_campaign",
    "get_campaign",
    "list_campaigns",
    "members",
    "model",
    "recipients",
    "record_survey_response",
    "remind_campaign",
    "remove_campaign",
    "responses",
    "send_campaign",
    "sends",
    "survey_token",
    "surveys",
]
