"""Sending a campaign: the mail merge, the reminders, the figures.

Every mail goes through the sending pipeline with a delivery key per contact
(``campaign:NAME:CONTACT``, reminders ``campaign:NAME:reminder:CONTACT``), so
a rerun mails only who was not mailed. The pipeline also skips and logs
(``suppressed``) addresses on the suppression list. Each mail carries the
recipient's own unsubscribe URL; a survey's also carries personal links with
a signed, expiring token (``surveys``).

The quiet-days rule: a survey is not sent to an address that got survey mail
from elsewhere in the last ``survey_quiet_days`` days. Those contacts are
skipped before the pipeline, so the send log has no row for them (nothing was
attempted); they are stored as campaign members with status ``quiet`` and
listed in the result (``skipped["quiet"]``) and in the stats.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from sysmail_ops.campaigns import members as members_mod
from sysmail_ops.campaigns import surveys
from sysmail_ops.campaigns.members import Member
from sysmail_ops.campaigns.model import RESERVED_FIELDS, Campaign, check_campaign, get_campaign
from sysmail_ops.config import accounts, settings
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import ValidationError
from sysmail_ops.inputs import read_records
from sysmail_ops.sending.batch import Delivery, SendOptions, SendResult, send_deliveries
from sysmail_ops.store.database import utcnow
from sysmail_ops.templates import catalog as templates

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_PROBLEMS = 5


@dataclass
class CampaignResult:
    """What a campaign send or reminder run did: the pipeline's counts and who was skipped."""

    campaign: str
    action: str  # "send" or "remind"
    batch_id: str
    counts: Counter[str] = field(default_factory=Counter)
    messages: int = 0
    errors: list[str] = field(default_factory=list)
    preview_dir: str | None = None
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> contact ids

    def summary(self) -> str:
        parts = [f"{n} {s}" for s, n in sorted(self.counts.items())] or ["nobody to mail"]
        parts += [f"{len(v)} skipped ({why})" for why, v in self.skipped.items() if v]
        return f"campaign {self.campaign} {self.action}: " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["counts"] = dict(self.counts)
        return d


@dataclass(frozen=True)
class CampaignStats:
    """A campaign's figures; the survey ones are ``None`` for a follow-up (or before answers)."""

    campaign: str
    kind: str
    contacts: int  # members, whatever became of them
    sent: int
    suppressed: int
    quiet: int
    failed: int
    deferred: int
    pending: int
    reminded: int
    responded: int | None = None
    response_rate: float | None = None  # responded / sent
    csat: float | None = None  # share of answers scoring 4 or 5 (of 1-5)
    average_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- contacts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Contact:
    contact: str
    email: str
    record: dict[str, Any]


def _contact_id(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return "" if value is None else str(value).strip()


def _read_contacts(
    contacts: Any, email_column: str, contact_column: str, needed: Mapping[str, frozenset[str]]
) -> list[_Contact]:
    """Every contact checked (columns, ids, addresses, template fields) before anything is sent."""

    rows = list(read_records(contacts))
    if not rows:
        raise ValidationError("the contact list is empty: nothing to send")
    columns = list(dict.fromkeys(k for r in rows for k in r))
    for col, what in ((email_column, "email"), (contact_column, "contact id")):
        if col not in columns:
            raise ValidationError(
                f"no {what} column {col!r} in the contacts (columns: {', '.join(columns)})"
            )
    taken = [c for c in columns if c in RESERVED_FIELDS]
    if taken:
        raise ValidationError(
            f"column {taken[0]!r} is filled in for each recipient by the campaign: rename it"
        )
    for template, used in needed.items():
        absent = sorted(used - set(columns))
        if absent:
            raise ValidationError(
                f"template {template!r} uses field(s) {', '.join(absent)}: no contact column"
                " or campaign setting has them"
            )
    problems: list[str] = []
    out: list[_Contact] = []
    seen: set[str] = set()
    for n, row in enumerate(rows, 1):
        contact = _contact_id(row.get(contact_column))
        if not contact:
            problems.append(f"contact {n}: no id in column {contact_column!r}")
        elif len(contact) > 200 or _CONTROL.search(contact):
            problems.append(f"contact {n}: id must be one line of at most 200 characters")
        elif contact in seen:
            problems.append(f"contact {n}: id {contact!r} is listed twice")
        seen.add(contact)
        try:
            email = accounts.check_address(
                str(row.get(email_column) or "").strip(), f"contact {n} ({contact}): address"
            )
        except ValidationError as exc:
            problems.append(str(exc))
            email = ""
        for template, used in needed.items():
            absent = sorted(used - set(row))
            if absent:
                problems.append(f"contact {n}: no {', '.join(absent)} (template {template!r})")
        if len(problems) >= MAX_PROBLEMS:
            break
        out.append(_Contact(contact, email, row))
    if problems:
        more = " (and maybe more)" if len(problems) >= MAX_PROBLEMS else ""
        raise ValidationError("; ".join(problems[:MAX_PROBLEMS]) + more + "; nothing was sent")
    return out


def _needed(ws: Workspace, c: Campaign, *, reminder: bool) -> dict[str, frozenset[str]]:
    """Per template the campaign mails: the fields a contact must bring (beyond settings)."""

    names = [c.reminder_template] if reminder else [c.template]
    if c.kind == "survey" and not reminder and c.reminder_template:
        names.append(c.reminder_template)  # a survey that cannot be reminded: refuse now
    given = {"campaign", *c.settings, *RESERVED_FIELDS}
    out = {}
    for name in names:
        assert name is not None
        used = templates.compile_template(templates.get_template(ws, name)).fields_used
        out[name] = frozenset(used - given)
    return out


# --- one recipient ------------------------------------------------------------------------


def survey_token(
    ws: Workspace, campaign: str, contact: str, email: str, expires: datetime | None
) -> str:
    """A contact's survey token; the same one again from the same stored expiry."""
    return surveys.make_token(
        ws, purpose="survey", campaign=campaign, contact=contact, email=email, expires_at=expires
    )


class Links:
    """The personal links of one batch's mails, with ``public_base_url`` read once.

    ``surveys.survey_links`` / ``survey_url`` / ``unsubscribe_url`` read the
    setting per call: three store visits per recipient, each of which waits
    while another process holds the workspace. These make the same URLs (a
    test compares them) without visiting the store.
    """

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.base = str(settings.get_setting(ws, "public_base_url"))

    def unsubscribe(self, email: str, campaign: str) -> str:
        token = surveys.make_token(
            self.ws, purpose="unsubscribe", campaign=campaign, contact=email, email=email
        )
        return f"{self.base}/unsubscribe/{token}"

    def survey(self, token: str) -> tuple[str, dict[int, str]]:
        """The survey page (no score chosen) and score -> link."""
        page = f"{self.base}/survey/{quote(token, safe='')}"
        return page, {n: f"{page}?score={n}" for n in surveys.SCORES}


def _delivery(
    links: Links,
    c: Campaign,
    contact: str,
    email: str,
    record: Mapping[str, Any],
    key: str,
    expires: datetime | None,
) -> Delivery:
    """The personal message: campaign fields, the contact's, and the recipient's own links."""
    values = c.fields_for(record)
    unsubscribe = links.unsubscribe(email, c.name)
    values["unsubscribe_url"] = unsubscribe
    if c.kind == "survey":
        token = survey_token(links.ws, c.name, contact, email, expires)
        values["survey_url"], values["survey_links"] = links.survey(token)
    return Delivery(
        [email], values, key=key, related=("campaign", c.name), unsubscribe_url=unsubscribe
    )


def _options(options: SendOptions | None, dry_run: bool, progress: bool) -> SendOptions:
    opts = options or SendOptions()
    return replace(opts, dry_run=dry_run or opts.dry_run, progress=progress or opts.progress)


def _result(
    name: str, action: str, res: SendResult, skipped: dict[str, list[str]]
) -> CampaignResult:
    return CampaignResult(
        name, action, res.batch_id, res.counts, res.messages, res.errors, res.preview_dir, skipped
    )


# --- the mail merge -----------------------------------------------------------------------


def send_campaign(
    ws: Workspace,
    name: str,
    contacts: Any,
    *,
    email_column: str = "email",
    contact_column: str = "id",
    dry_run: bool = False,
    progress: bool = False,
    options: SendOptions | None = None,
) -> CampaignResult:
    """Mail the campaign to every contact (a DataFrame, or a .csv / .jsonl / .json file).

    One message per contact; its columns are the template's fields. Bad input
    (a missing column or field, an invalid address, a duplicate id) raises
    before anything is sent or written. A rerun mails only those not yet
    mailed; ``dry_run`` writes ``.eml`` previews and records no members.
    """

    c = check_campaign(ws, get_campaign(ws, name))  # its system email may have changed kind
    people = _read_contacts(contacts, email_column, contact_column, _needed(ws, c, reminder=False))
    now = utcnow()
    members_mod.reconcile(ws, c.name)
    known = members_mod.members(ws, c.name)
    plan: list[tuple[_Contact, datetime | None]] = []
    quiet: list[_Contact] = []
    days = int(settings.get_setting(ws, "survey_token_days")) if c.kind == "survey" else 0
    fresh = (now + timedelta(days=days)).replace(microsecond=0) if c.kind == "survey" else None
    if c.kind == "survey":
        quiet_days = int(settings.get_setting(ws, "survey_quiet_days"))
        recent = (
            members_mod.recently_surveyed(
                ws, c.name, [p.email for p in people], now - timedelta(days=quiet_days)
            )
            if quiet_days > 0
            else set()
        )
        mailed = {m.email.lower() for m in known.values() if m.status == "sent"}
    for p in people:
        m = known.get(p.contact)
        if m is not None and m.status == "sent":
            # already mailed: through the pipeline to its address then, which skips it
            plan.append((_Contact(p.contact, m.email, p.record), m.token_expires_at))
            continue
        if c.kind == "survey":
            addr = p.email.lower()
            if addr in recent or addr in mailed:
                quiet.append(p)
                continue
            mailed.add(addr)
        keep = m is not None and m.token_expires_at is not None and m.token_expires_at > now
        plan.append((p, m.token_expires_at if keep and m else fresh))
    links = Links(ws)
    deliveries = [
        _delivery(
            links, c, p.contact, p.email, p.record, members_mod.delivery_key(c.name, p.contact), exp
        )
        for p, exp in plan
    ]
    opts = _options(options, dry_run, progress)
    skipped = {"quiet": [p.contact for p in quiet]}
    if opts.dry_run:
        res = send_deliveries(ws, c.account, c.template, deliveries, use_case=c.kind, options=opts)
        return _result(c.name, "send", res, skipped)
    new = members_mod.stage(
        ws,
        c.name,
        [(p.contact, p.email, p.record, exp) for p, exp in plan],
        [(p.contact, p.email, p.record) for p in quiet],
    )
    try:
        res = send_deliveries(ws, c.account, c.template, deliveries, use_case=c.kind, options=opts)
    except BaseException:
        members_mod.reconcile(ws, c.name)
        members_mod.unstage(ws, c.name, new)
        raise
    members_mod.reconcile(ws, c.name)
    return _result(c.name, "send", res, skipped)


# --- reminders ----------------------------------------------------------------------------


def remind_campaign(
    ws: Workspace,
    name: str,
    *,
    after: timedelta,
    now: datetime | None = None,
    dry_run: bool = False,
    progress: bool = False,
    options: SendOptions | None = None,
) -> CampaignResult:
    """Remind, once, who was sent the survey at least ``after`` ago and has not answered.

    The reminder carries the same personal links (the token is made again from
    the stored expiry). Skipped, and listed in the result: who answered
    (``responded``), was mailed too recently (``not_due``) or holds an expired
    token (``expired``).
    """

    c = check_campaign(ws, get_campaign(ws, name))
    if c.kind != "survey" or not c.reminder_template:
        raise ValidationError(
            f"campaign {c.name!r} is a {c.kind}: reminders go to those who have not answered"
            " a survey"
        )
    if not isinstance(after, timedelta) or after < timedelta(0):
        raise ValidationError(f"after must be a duration of zero or more, got {after!r}")
    now = now or utcnow()
    members_mod.reconcile(ws, c.name)
    answered = surveys.responded_contacts(ws, c.name)
    skipped: dict[str, list[str]] = {"responded": [], "not_due": [], "expired": []}
    due: list[Member] = []
    for m in members_mod.members(ws, c.name).values():
        if (
            m.status != "sent"
            or m.sent_at is None
            or m.reminder_status
            in (
                "sent",
                "deferred",
                "suppressed",
            )
        ):
            continue
        if m.contact in answered:
            skipped["responded"].append(m.contact)
        elif m.sent_at > now - after:
            skipped["not_due"].append(m.contact)
        elif m.token_expires_at is not None and m.token_expires_at <= now:
            skipped["expired"].append(m.contact)
        else:
            due.append(m)
    template = c.reminder_template
    needed = _needed(ws, c, reminder=True)[template]
    problems = [
        f"contact {m.contact}: no {', '.join(sorted(needed - set(m.record)))}"
        for m in due
        if needed - set(m.record)
    ]
    if problems:
        raise ValidationError(
            f"template {template!r} needs fields the contacts lack: "
            + "; ".join(problems[:MAX_PROBLEMS])
        )
    links = Links(ws)
    deliveries = [
        _delivery(
            links,
            c,
            m.contact,
            m.email,
            m.record,
            members_mod.reminder_key(c.name, m.contact),
            m.token_expires_at,
        )
        for m in due
    ]
    opts = _options(options, dry_run, progress)
    if opts.dry_run:
        res = send_deliveries(ws, c.account, template, deliveries, use_case="survey", options=opts)
        return _result(c.name, "remind", res, skipped)
    contacts = [m.contact for m in due]
    members_mod.stage_reminders(ws, c.name, contacts)
    try:
        res = send_deliveries(ws, c.account, template, deliveries, use_case="survey", options=opts)
    except BaseException:
        members_mod.reconcile(ws, c.name)
        members_mod.unstage_reminders(ws, c.name, contacts)
        raise
    members_mod.reconcile(ws, c.name)
    return _result(c.name, "remind", res, skipped)


# --- figures ------------------------------------------------------------------------------


def campaign_stats(ws: Workspace, name: str) -> CampaignStats:
    """Sent, suppressed, quiet, reminded; for a survey also answers, response rate, CSAT.

    Only answers of contacts the survey was delivered to count (a link from a
    dry-run preview does not).
    """

    c = get_campaign(ws, name)
    members_mod.reconcile(ws, c.name)
    n = members_mod.status_counts(ws, c.name)
    stats = CampaignStats(
        campaign=c.name,
        kind=c.kind,
        contacts=sum(n[s] for s in members_mod.STATUSES),
        sent=n["sent"],
        suppressed=n["suppressed"],
        quiet=n["quiet"],
        failed=n["failed"],
        deferred=n["deferred"],
        pending=n["pending"],
        reminded=n["reminded"],
    )
    if c.kind != "survey":
        return stats
    delivered = {m.contact for m in members_mod.members(ws, c.name).values() if m.status == "sent"}
    answers = surveys.responses(ws, c.name)
    if "contact" in answers.columns:
        answers = answers[answers["contact"].isin(delivered)]
    scores = answers["score"].astype(float)
    responded = len(surveys.responded_contacts(ws, c.name) & delivered)
    return replace(
        stats,
        responded=responded,
        response_rate=responded / stats.sent if stats.sent else None,
        csat=float((scores >= 4).mean()) if len(scores) else None,
        average_score=float(scores.mean()) if len(scores) else None,
    )


def recipients(ws: Workspace, name: str) -> Sequence[Member]:
    """The campaign's members with what became of their mail (reconciled with the log)."""

    get_campaign(ws, name)
    members_mod.reconcile(ws, name)
    return list(members_mod.members(ws, name).values())
