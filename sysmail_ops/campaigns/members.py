"""Who a campaign was sent to: the ``campaign_members`` table and its ties to the send log.

A member row is written (``pending``) before its mail goes out, holding the
contact's fields and the expiry of its survey token, so a rerun after a crash
renders the same personal links. What became of a mail is the send log's
business: ``reconcile`` copies it into the member rows (``sent`` with its
time, ``suppressed``, ``failed``, ``deferred``), so reminders and stats read
one small table and a mail delivered later by ``retry-deferred`` shows up.
Contacts skipped by the quiet-days rule are members with status ``quiet``:
no mail was attempted, so the send log has no row for them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.records import sendlog
from sysmail_ops.store.database import utcnow

if TYPE_CHECKING:
    import pandas as pd

# member statuses: pending (staged, outcome not yet known), quiet (skipped: surveyed
# recently elsewhere), and the send log's own: sent, suppressed, failed, deferred.
STATUSES = ("pending", "quiet", "sent", "suppressed", "failed", "deferred")


def delivery_key(campaign: str, contact: str) -> str:
    return f"campaign:{campaign}:{contact}"


def reminder_key(campaign: str, contact: str) -> str:
    return f"campaign:{campaign}:reminder:{contact}"


@dataclass(frozen=True)
class Member:
    """One contact of a campaign, as stored."""

    contact: str
    email: str
    record: dict[str, Any]
    status: str
    token_expires_at: datetime | None
    sent_at: datetime | None
    reminded_at: datetime | None
    reminder_status: str | None


def jsonable(value: Any) -> Any:
    """A contact field as JSON can keep it (numpy scalars, timestamps, NaN)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, datetime | date):  # pandas' Timestamp is a datetime
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return jsonable(item())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


_COLUMNS = "contact, email, record, status, token_expires_at, sent_at, reminded_at, reminder_status"


def members(
    ws: Workspace, campaign: str, *, contacts: Iterable[str] | None = None
) -> dict[str, Member]:
    """The members of a campaign (or only of ``contacts``), by contact id."""
    sql = f"SELECT {_COLUMNS} FROM campaign_members WHERE campaign = ?"  # noqa: S608
    params: list[Any] = [campaign]
    if contacts is not None:
        sql += " AND contact IN (SELECT unnest(?::VARCHAR[]))"
        params.append(sorted(set(contacts)))
    with ws.store.connect() as con:
        rows = con.execute(sql + " ORDER BY added_at, contact", params).fetchall()
    out = {}
    for c, e, rec, st, exp, sent, rem, rst in rows:
        out[c] = Member(c, e, json.loads(rec), st, exp, sent, rem, rst)
    return out


def members_frame(ws: Workspace, campaign: str) -> pd.DataFrame:
    """The members as a DataFrame (the contact's fields left out)."""
    with ws.store.connect() as con:
        return con.execute(
            "SELECT contact, email, status, token_expires_at, added_at, sent_at, reminded_at,"
            " reminder_status FROM campaign_members WHERE campaign = ? ORDER BY added_at, contact",
            [campaign],
        ).df()


def status_counts(ws: Workspace, campaign: str) -> dict[str, int]:
    """Members per status, and ``reminded`` (reminders delivered)."""
    with ws.store.connect() as con:
        rows = con.execute(
            "SELECT status, count(*) FROM campaign_members WHERE campaign = ? GROUP BY status",
            [campaign],
        ).fetchall()
        reminded = con.execute(
            "SELECT count(*) FROM campaign_members WHERE campaign = ? AND reminded_at IS NOT NULL",
            [campaign],
        ).fetchone()
    counts = {s: 0 for s in STATUSES} | {str(s): int(n) for s, n in rows}
    counts["reminded"] = int(reminded[0]) if reminded else 0
    return counts


def recently_surveyed(
    ws: Workspace, campaign: str, emails: Iterable[str], since: datetime
) -> set[str]:
    """Which of ``emails`` (lower case) got survey mail since ``since`` from elsewhere.

    "Surveyed" means a ``survey`` mail delivered to the address (any campaign's
    survey or reminder, or a manual send with that use case), as the send log
    records it; this campaign's own mails do not count (a rerun is the
    pipeline's idempotency, not the quiet rule). The log outlives a removed
    campaign, so its contacts stay quiet too.
    """
    wanted = sorted({e.lower() for e in emails})
    if not wanted:
        return set()
    sendlog.fold_orphans(ws)
    with ws.store.connect() as con:
        rows = con.execute(
            "SELECT DISTINCT lower(recipient) FROM send_log"
            " WHERE use_case = 'survey' AND status = 'sent' AND sent_at >= ?"
            " AND NOT starts_with(coalesce(delivery_key, ''), ?)"
            " AND lower(recipient) IN (SELECT unnest(?::VARCHAR[]))",
            [since, f"campaign:{campaign}:", wanted],
        ).fetchall()
    return {r[0] for r in rows}


def stage(
    ws: Workspace,
    campaign: str,
    plan: Sequence[tuple[str, str, Mapping[str, Any], datetime | None]],
    quiet: Sequence[tuple[str, str, Mapping[str, Any]]],
) -> list[str]:
    """Write the members about to be mailed (``pending``) and the quiet ones, in one go.

    ``plan`` holds (contact, email, record, token expiry). Members already
    ``sent`` are left as they are. Returns the contacts that had no row before,
    so a send that fails before mailing can take them back (``unstage``).
    Written from a DataFrame: a row-by-row INSERT costs milliseconds a row.
    """
    import pandas as pd

    rows = [(c, e, r, "pending", x) for c, e, r, x in plan] + [
        (c, e, r, "quiet", None) for c, e, r in quiet
    ]
    if not rows:
        return []
    staged = pd.DataFrame(
        {
            "contact": [r[0] for r in rows],
            "email": [r[1] for r in rows],
            "record": [json.dumps(jsonable(dict(r[2])), ensure_ascii=False) for r in rows],
            "status": [r[3] for r in rows],
            "token_expires_at": pd.to_datetime(pd.Series([r[4] for r in rows], dtype=object)),
        }
    )
    absent = (
        "FROM staged WHERE contact NOT IN (SELECT contact FROM campaign_members WHERE campaign = ?)"
    )
    with ws.store.transaction() as con:
        con.register("staged", staged)
        new = [r[0] for r in con.execute(f"SELECT contact {absent}", [campaign]).fetchall()]
        con.execute(
            "UPDATE campaign_members AS m SET email = s.email, record = s.record,"
            " status = s.status, token_expires_at = s.token_expires_at FROM staged AS s"
            " WHERE m.campaign = ? AND m.contact = s.contact AND m.status <> 'sent'",
            [campaign],
        )
        con.execute(
            "INSERT INTO campaign_members (campaign, contact, email, record, status,"
            " token_expires_at, added_at) SELECT ?, contact, email, record, status,"
            f" token_expires_at, ? {absent}",
            [campaign, utcnow(), campaign],
        )
        con.unregister("staged")
    return new


def unstage(ws: Workspace, campaign: str, contacts: Sequence[str]) -> None:
    """Take back rows ``stage`` added whose mail never went out (bad input found late)."""
    if not contacts:
        return
    with ws.store.transaction() as con:
        con.execute(
            "DELETE FROM campaign_members WHERE campaign = ? AND status IN ('pending', 'quiet')"
            " AND contact IN (SELECT unnest(?::VARCHAR[]))",
            [campaign, list(contacts)],
        )


def stage_reminders(ws: Workspace, campaign: str, contacts: Sequence[str]) -> None:
    with ws.store.transaction() as con:
        con.execute(
            "UPDATE campaign_members SET reminder_status = 'pending' WHERE campaign = ?"
            " AND contact IN (SELECT unnest(?::VARCHAR[]))",
            [campaign, list(contacts)],
        )


def unstage_reminders(ws: Workspace, campaign: str, contacts: Sequence[str]) -> None:
    with ws.store.transaction() as con:
        con.execute(
            "UPDATE campaign_members SET reminder_status = NULL WHERE campaign = ?"
            " AND reminder_status = 'pending' AND contact IN (SELECT unnest(?::VARCHAR[]))",
            [campaign, list(contacts)],
        )


def reconcile(ws: Workspace, campaign: str) -> None:
    """Copy what the send log says about unsettled members' mails (and reminders) into them.

    A member is ``sent`` (at its first delivery) once any row of its key says
    so; otherwise it takes the latest outcome (``suppressed``, ``failed``,
    ``deferred``); with no outcome yet it stays as it is.
    """
    sendlog.fold_orphans(ws)
    outcome = (
        "SELECT m.contact, min(l.sent_at) FILTER (WHERE l.status = 'sent') AS sent_at,"
        " arg_max(l.status, l.id) FILTER (WHERE l.status NOT IN ('skipped_duplicate',"
        " 'dry_run')) AS last"
        " FROM campaign_members m JOIN send_log l ON l.delivery_key = {key}"
        " WHERE m.campaign = ? AND m.{status} IN ('pending', 'deferred') GROUP BY m.contact"
    )
    with ws.store.transaction() as con:
        for status, at, key in (
            ("status", "sent_at", "'campaign:' || m.campaign || ':' || m.contact"),
            (
                "reminder_status",
                "reminded_at",
                "'campaign:' || m.campaign || ':reminder:' || m.contact",
            ),
        ):
            con.execute(
                f"UPDATE campaign_members SET {status} = CASE WHEN s.sent_at IS NOT NULL"  # noqa: S608
                f" THEN 'sent' ELSE coalesce(s.last, campaign_members.{status}) END,"
                f" {at} = s.sent_at FROM ({outcome.format(key=key, status=status)}) AS s"
                " WHERE campaign_members.campaign = ? AND campaign_members.contact = s.contact",
                [campaign, campaign],
            )


def remove_members(ws: Workspace, campaign: str) -> None:
    with ws.store.transaction() as con:
        con.execute("DELETE FROM campaign_members WHERE campaign = ?", [campaign])
