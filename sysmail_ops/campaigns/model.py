"""Campaigns: follow-ups and satisfaction surveys mailed to a list of contacts.

A campaign is named and stored: its kind (``follow_up`` or ``survey``), the
customer-service or marketing system email that sends it, its template, for
surveys a reminder template (the built-in ``survey-reminder`` by default),
and settings: template fields shared by every recipient (a question, a
title). ``send_campaign`` mail-merges a DataFrame or a CSV / JSONL file of
contacts through the pipeline (one message per contact, the columns are the
template's fields); ``remind_campaign`` mails, once, those who have not
answered; ``campaign_stats`` counts. Sending lives in ``sends``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from sysmail_ops.campaigns import members as members_mod
from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import NotFoundError, ValidationError
from sysmail_ops.store import audit
from sysmail_ops.store.database import utcnow
from sysmail_ops.store.named import check_name, insert_named, update_named
from sysmail_ops.templates import catalog as templates

KINDS = ("follow_up", "survey")
ACCOUNT_KINDS = ("customer_service", "marketing")
DEFAULT_REMINDER = "survey-reminder"
# Fields the campaign fills in per recipient; a contact column or setting may not take them.
RESERVED_FIELDS = ("survey_links", "survey_url", "unsubscribe_url")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class Campaign:
    """A follow-up or survey campaign, as stored."""

    name: str
    kind: str
    account: str
    template: str
    reminder_template: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    description: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def fields_for(self, contact: Mapping[str, Any]) -> dict[str, Any]:
        """A recipient's template fields: ``campaign``, the settings, then the contact's own."""
        return {"campaign": self.name, **self.settings, **contact}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["settings"] = dict(self.settings)
        return d


# --- validation ---------------------------------------------------------------------------


def _check_settings(values: Mapping[str, Any] | None) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ValidationError("settings must be a mapping of template field -> value")
    out = {}
    for k, v in values.items():
        if not isinstance(k, str) or not _FIELD.fullmatch(k):
            raise ValidationError(f"setting {k!r} is not a template field name")
        if k in RESERVED_FIELDS:
            raise ValidationError(f"setting {k!r} is filled in per recipient by the campaign")
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            raise ValidationError(
                f"setting {k} must be a string, number, true/false, null or a list of them"
            ) from None
        out[k] = v
    return out


def check_campaign(ws: Workspace, c: Campaign) -> Campaign:
    """Check what a campaign names (saving, and again before sending); the cleaned campaign."""
    name = check_name(c.name, "campaign name")
    if c.kind not in KINDS:
        raise ValidationError(f"unknown campaign kind {c.kind!r}: choose {' or '.join(KINDS)}")
    account = accounts.get_account(ws, c.account)
    if account.kind not in ACCOUNT_KINDS:
        label = accounts.KIND_LABELS.get(account.kind, account.kind).lower()
        raise ValidationError(
            f"system email {account.name!r} is a {label} account: campaigns send through a"
            " customer-service or marketing system email"
        )
    templates.get_template(ws, c.template)
    reminder = c.reminder_template
    if c.kind == "survey":
        reminder = reminder or DEFAULT_REMINDER
        templates.get_template(ws, reminder)
    elif reminder:
        raise ValidationError(
            "a follow_up campaign has no reminders (they go to those who have not answered a"
            " survey): leave the reminder template out"
        )
    description = (c.description or "").strip() or None
    if description and (len(description) > 500 or any(ch in description for ch in "\r\n")):
        raise ValidationError("description must be one line of at most 500 characters")
    return replace(
        c,
        name=name,
        reminder_template=reminder,
        settings=_check_settings(c.settings),
        description=description,
    )


# --- storage ------------------------------------------------------------------------------

_COLUMNS = tuple(f.name for f in fields(Campaign))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM campaigns"  # noqa: S608 - our column names


def _to_row(c: Campaign) -> list[Any]:
    return [json.dumps(dict(c.settings)) if k == "settings" else getattr(c, k) for k in _COLUMNS]


def _from_row(row: tuple[Any, ...]) -> Campaign:
    d = dict(zip(_COLUMNS, row, strict=True))
    d["settings"] = json.loads(d["settings"])
    return Campaign(**d)


def list_campaigns(ws: Workspace, *, kind: str | None = None) -> list[Campaign]:
    """Every campaign (of one kind, if given), by name."""
    where, params = (" WHERE kind = ?", [kind]) if kind else ("", [])
    with ws.store.connect() as con:
        rows = con.execute(_SELECT + where + " ORDER BY name", params).fetchall()
    return [_from_row(r) for r in rows]


def get_campaign(ws: Workspace, name: str) -> Campaign:
    with ws.store.connect() as con:
        row = con.execute(_SELECT + " WHERE name = ?", [name]).fetchone()
    if row is None:
        raise NotFoundError(f"no campaign named {name!r}")
    return _from_row(row)


def add_campaign(
    ws: Workspace,
    name: str,
    *,
    kind: str,
    account: str,
    template: str,
    reminder_template: str | None = None,
    settings: Mapping[str, Any] | None = None,
    description: str | None = None,
) -> Campaign:
    """Save a new campaign after checking the system email and templates it names.

    Its name makes the delivery keys (``campaign:NAME:CONTACT``): the send log
    outlives a removed campaign, so a new one by the same name treats those
    contacts as already mailed.
    """
    now = utcnow()
    c = check_campaign(
        ws,
        Campaign(
            name=name,
            kind=kind,
            account=account,
            template=template,
            reminder_template=reminder_template,
            settings=settings or {},
            description=description,
            created_at=now,
            updated_at=now,
        ),
    )
    with ws.store.transaction() as con:
        insert_named(con, "campaigns", _COLUMNS, _to_row(c), "campaign")
        audit.record(con, "campaign", c.name, "add", None, audit.row(con, "campaigns", name=c.name))
    return c


_EDITABLE = ("account", "template", "reminder_template", "settings", "description")


def edit_campaign(ws: Workspace, name: str, /, **changes: Any) -> Campaign:
    """Change some fields (``None`` leaves one as it is), checked like a new campaign.

    The kind stays: a survey's answers and reminders would mean nothing to a follow-up.
    """
    unknown = set(changes) - set(_EDITABLE)
    if unknown:
        raise ValidationError(
            f"cannot edit {', '.join(sorted(unknown))} of a campaign: choose from"
            f" {', '.join(_EDITABLE)}"
        )
    current = get_campaign(ws, name)
    given = {k: v for k, v in changes.items() if v is not None}
    if not given:
        raise ValidationError(f"nothing to change in campaign {name!r}")
    c = check_campaign(ws, replace(current, **given, updated_at=utcnow()))
    with ws.store.transaction() as con:
        before = audit.row(con, "campaigns", name=name)
        update_named(con, "campaigns", _COLUMNS, _to_row(c))
        audit.record(con, "campaign", name, "edit", before, audit.row(con, "campaigns", name=name))
    return c


def remove_campaign(ws: Workspace, name: str) -> None:
    """Delete a campaign and its member list; the send log and survey answers stay."""
    get_campaign(ws, name)
    members_mod.remove_members(ws, name)
    with ws.store.transaction() as con:
        before = audit.row(con, "campaigns", name=name)
        con.execute("DELETE FROM campaigns WHERE name = ?", [name])
        audit.record(con, "campaign", name, "remove", before, None)


__all__ = [
    "ACCOUNT_KINDS",
    "DEFAULT_REMINDER",
    "KINDS",
    "RESERVED_FIELDS",
    "Campaign",
    "add_campaign",
    "check_campaign",
    "edit_campaign",
    "get_campaign",
    "list_campaigns",
    "remove_campaign",
]
