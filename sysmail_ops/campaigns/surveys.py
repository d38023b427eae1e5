"""Satisfaction-survey links and answers, and personal unsubscribe links.

A survey mail carries one link per score (``survey_links``); each link holds a
signed, expiring token (``tokens``) naming the campaign, the contact and the
address. ``sysmail-ops serve`` shows the chosen score with a Submit button (a
GET records nothing: mail scanners open every link) and the POST calls
``record_survey_response``.

One answer per person and campaign: a token names exactly one (campaign,
contact), and a second answer, through the same link or a reminder's,
**updates** the first (the latest score and comment count, ``answers``
says how many times it was given, ``first_answered_at`` when first). People
change their mind or click the wrong score; refusing would only leave the
wrong answer standing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import ValidationError
from sysmail_ops.sending.links import (
    TokenClaims,
    TokenError,
    TokenExpiredError,
    make_token,
    public_base,
    unsubscribe_url,
    verify_token,
)
from sysmail_ops.store.database import utcnow

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SCORES",
    "SurveyResponse",
    "TokenClaims",
    "TokenError",
    "TokenExpiredError",
    "get_response",
    "make_token",
    "record_survey_response",
    "responded_contacts",
    "responses",
    "survey_links",
    "survey_url",
    "unsubscribe_url",
    "verify_token",
]

SCORES = (1, 2, 3, 4, 5)
MAX_COMMENT = 2000
COLUMNS = [
    "campaign",
    "contact",
    "email",
    "score",
    "comment",
    "answers",
    "first_answered_at",
    "answered_at",
]


@dataclass(frozen=True)
class SurveyResponse:
    """One person's answer to one survey, as stored after the latest submit."""

    campaign: str | None
    contact: str
    email: str
    score: int
    comment: str | None
    answers: int  # how many times it was submitted (1: never changed)
    first_answered_at: datetime
    answered_at: datetime

    @property
    def updated(self) -> bool:
        """True when this submit replaced an earlier answer."""
        return self.answers > 1


def _campaign_key(campaign: str | None) -> str:
    return campaign or ""  # the store's key has no NULL; "" stands for "no campaign"


def _row(row: tuple[Any, ...]) -> SurveyResponse:
    d = dict(zip(COLUMNS, row, strict=True))
    d["campaign"] = d["campaign"] or None
    return SurveyResponse(**d)


def survey_links(ws: Workspace, token: str) -> dict[int, str]:
    """Score -> link for a survey mail: ``{public_base_url}/survey/{token}?score=N``."""
    verify_token(ws, token, "survey")  # a bad token would only fail in the reader's hands
    base = f"{public_base(ws)}/survey/{quote(token, safe='')}?score="
    return {n: f"{base}{n}" for n in SCORES}


def survey_url(ws: Workspace, token: str) -> str:
    """The survey page without a chosen score (for a reminder's single button)."""
    verify_token(ws, token, "survey")
    return f"{public_base(ws)}/survey/{quote(token, safe='')}"


def check_score(score: Any) -> int:
    """A score from 1 to 5, from an int or its text ("4")."""
    if isinstance(score, bool):
        raise ValidationError(f"score must be a whole number from 1 to 5, got {score!r}")
    try:
        n = int(str(score).strip())
    except ValueError:
        raise ValidationError(
            f"score must be a whole number from 1 to 5, got {str(score)[:20]!r}"
        ) from None
    if n not in SCORES:
        raise ValidationError(f"score must be from 1 to 5, got {n}")
    return n


def check_comment(comment: Any) -> str | None:
    if comment is None:
        return None
    if not isinstance(comment, str):
        raise ValidationError(f"comment must be text, got {type(comment).__name__}")
    text = comment.replace("\r\n", "\n").replace("\r", "\n").strip()
    if "\0" in text:
        raise ValidationError("comment must not contain NUL characters")
    if len(text) > MAX_COMMENT:
        raise ValidationError(f"comment is longer than {MAX_COMMENT} characters")
    return text or None


def record_survey_response(
    ws: Workspace, token: str, score: Any, comment: str | None = None
) -> SurveyResponse:
    """Verify the token and store (or update) its person's answer.

    Raises ``TokenError`` / ``TokenExpiredError`` for a bad link and
    ``ValidationError`` for a score outside 1-5 or an over-long comment;
    nothing is written then.
    """
    claims = verify_token(ws, token, "survey")
    n = check_score(score)
    text = check_comment(comment)
    now = utcnow()
    key = [_campaign_key(claims.campaign), claims.contact]
    cols = ", ".join(COLUMNS)
    with ws.store.transaction() as con:
        old = con.execute(
            f"SELECT {cols} FROM survey_responses WHERE campaign = ? AND contact = ?",  # noqa: S608
            key,
        ).fetchone()
        if old is None:
            con.execute(
                f"INSERT INTO survey_responses ({cols}) VALUES (?, ?, ?, ?, ?, 1, ?, ?)",  # noqa: S608
                [*key, claims.email, n, text, now, now],
            )
        else:
            con.execute(
                "UPDATE survey_responses SET email = ?, score = ?, comment = ?, "
                "answers = answers + 1, answered_at = ? WHERE campaign = ? AND contact = ?",
                [claims.email, n, text, now, *key],
            )
        row = con.execute(
            f"SELECT {cols} FROM survey_responses WHERE campaign = ? AND contact = ?",  # noqa: S608
            key,
        ).fetchone()
    assert row is not None
    return _row(row)


def get_response(ws: Workspace, campaign: str | None, contact: str) -> SurveyResponse | None:
    """The stored answer of one contact to one campaign, or None."""
    with ws.store.connect() as con:
        row = con.execute(
            f"SELECT {', '.join(COLUMNS)} FROM survey_responses "  # noqa: S608
            "WHERE campaign = ? AND contact = ?",
            [_campaign_key(campaign), contact],
        ).fetchone()
    return _row(row) if row else None


def responses(ws: Workspace, campaign: str | None) -> pd.DataFrame:
    """The answers to one campaign (None: answers to links made without one), newest first."""
    with ws.store.connect() as con:
        df = con.execute(
            f"SELECT {', '.join(COLUMNS)} FROM survey_responses "  # noqa: S608
            "WHERE campaign = ? ORDER BY answered_at DESC, contact",
            [_campaign_key(campaign)],
        ).df()
    df["campaign"] = campaign
    return df


def responded_contacts(ws: Workspace, campaign: str | None) -> set[str]:
    """The contacts who answered ``campaign``: those a reminder must skip."""
    with ws.store.connect() as con:
        rows = con.execute(
            "SELECT contact FROM survey_responses WHERE campaign = ?",
            [_campaign_key(campaign)],
        ).fetchall()
    return {r[0] for r in rows}
