"""Signed link tokens and survey answers: forgery, tampering, expiry, one answer per person."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sysmail_ops.campaigns import surveys
from sysmail_ops.config import settings
from sysmail_ops.config.secrets import ENV_KEY
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import SecretKeyError, ValidationError
from sysmail_ops.sending.links import TokenClaims, TokenError, TokenExpiredError


def survey_token(ws: Workspace, **kw: object) -> str:
    args: dict[str, object] = {"campaign": "nov", "contact": "c-1", "email": "eve@example.com"}
    args.update(kw)
    return surveys.make_token(ws, purpose="survey", **args)  # type: ignore[arg-type]


def stored(ws: Workspace) -> list[tuple[object, ...]]:
    with ws.store.connect() as con:
        return con.execute("SELECT * FROM survey_responses").fetchall()


def reencode(token: str, change: dict[str, object]) -> str:
    """The token with its claims changed but the old signature: what a forger would try."""
    version, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(change)
    raw = json.dumps(claims, separators=(",", ":")).encode()
    return f"{version}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}.{sig}"


# -- tokens --------------------------------------------------------------------------------


def test_round_trip_with_the_default_expiry(ws: Workspace) -> None:
    settings.set_setting(ws, "survey_token_days", 2)
    token = survey_token(ws, email="Eve@Example.com")
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    claims = surveys.verify_token(ws, token, "survey")
    assert (claims.purpose, claims.campaign, claims.contact, claims.email) == (
        "survey", "nov", "c-1", "eve@example.com",
    )  # fmt: skip
    assert claims.expires_at is not None
    left = claims.expires_at - datetime.now(UTC).replace(tzinfo=None)
    assert timedelta(days=2) - timedelta(minutes=1) < left <= timedelta(days=2)


def test_unsubscribe_tokens_do_not_expire_unless_told(ws: Workspace) -> None:
    token = surveys.make_token(
        ws, purpose="unsubscribe", campaign=None, contact="eve@example.com", email="eve@example.com"
    )
    claims = surveys.verify_token(ws, token, "unsubscribe")
    assert claims == TokenClaims("unsubscribe", None, "eve@example.com", "eve@example.com", None)


def test_forged_tampered_truncated_and_wrong_purpose_tokens(ws: Workspace) -> None:
    token = survey_token(ws)
    version, body, sig = token.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    bad = [
        f"{version}.{body}.{flipped}",  # signature changed
        reencode(token, {"e": "mallory@example.com"}),  # claims changed, old signature
        reencode(token, {"x": 4102444800}),  # expiry pushed to 2100
        token[:-5],  # cut short
        f"{version}.{body}",  # no signature
        f"v2.{body}.{sig}",  # another version
        "v1..",
        "",
        "not a token at all",
        token + "?",
        "x" * 5000,
    ]
    for candidate in bad:
        with pytest.raises(TokenError, match=r"^this link is not valid$"):
            surveys.verify_token(ws, candidate, "survey")
    with pytest.raises(TokenError, match=r"^this link is not valid$"):
        surveys.verify_token(ws, token, "unsubscribe")  # a survey link cannot unsubscribe


def test_a_token_signed_by_another_workspace_is_not_valid(ws: Workspace, tmp_path: Path) -> None:
    other, _ = Workspace.init(tmp_path / "other")
    token = survey_token(other)
    assert surveys.verify_token(other, token, "survey").contact == "c-1"
    with pytest.raises(TokenError):
        surveys.verify_token(ws, token, "survey")


def test_expired_token_says_so(ws: Workspace) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    token = survey_token(ws, expires_at=past)
    with pytest.raises(TokenExpiredError, match=r"^this link has expired \(it was valid until"):
        surveys.verify_token(ws, token, "survey")
    naive_future = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)
    assert surveys.verify_token(ws, survey_token(ws, expires_at=naive_future), "survey")


def test_the_key_follows_the_workspace_key_and_never_shows(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = survey_token(ws)
    key = ws.key_path.read_bytes().strip()
    assert key.decode() not in repr(ws) + repr(ws.secrets) + token
    assert ws.secrets.derive_key(b"sysmail-ops link tokens v1").hex() not in token
    # The same key given through the environment verifies the same tokens.
    monkeypatch.setenv(ENV_KEY, key.decode())
    assert surveys.verify_token(Workspace.open(ws.home), token, "survey").contact == "c-1"
    # A workspace without its key cannot sign or verify.
    monkeypatch.delenv(ENV_KEY)
    ws.key_path.unlink()
    with pytest.raises(SecretKeyError):
        surveys.verify_token(Workspace.open(ws.home), token, "survey")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"purpose": "vote"}, "unknown token purpose"),
        ({"contact": " "}, "needs a contact"),
        ({"campaign": "a\nb"}, "one line"),
        ({"email": "not-an-address"}, "is not valid"),
    ],
)
def test_bad_token_input(ws: Workspace, kw: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "purpose": "survey", "campaign": "nov", "contact": "c-1", "email": "eve@example.com",
    }  # fmt: skip
    args.update(kw)
    with pytest.raises(ValidationError, match=message):
        surveys.make_token(ws, **args)  # type: ignore[arg-type]


def test_links_follow_the_public_base_url(ws: Workspace) -> None:
    token = survey_token(ws)
    assert surveys.survey_links(ws, token)[3] == f"http://127.0.0.1:8025/survey/{token}?score=3"
    settings.set_setting(ws, "public_base_url", "https://mail.example.com/sysmail/")
    links = surveys.survey_links(ws, token)
    assert sorted(links) == [1, 2, 3, 4, 5]
    assert links[5] == f"https://mail.example.com/sysmail/survey/{token}?score=5"
    assert surveys.survey_url(ws, token) == f"https://mail.example.com/sysmail/survey/{token}"
    url = surveys.unsubscribe_url(ws, "Eve@Example.com", "nov")
    assert url.startswith("https://mail.example.com/sysmail/unsubscribe/v1.")
    claims = surveys.verify_token(ws, url.rsplit("/", 1)[1], "unsubscribe")
    assert (claims.campaign, claims.email, claims.expires_at) == ("nov", "eve@example.com", None)
    with pytest.raises(TokenError):
        surveys.survey_links(ws, token[:-3])


# -- answers -------------------------------------------------------------------------------


def test_first_answer_recorded_second_updates(ws: Workspace) -> None:
    token = survey_token(ws)
    first = surveys.record_survey_response(ws, token, 2, "slow reply")
    assert (first.campaign, first.contact, first.email, first.score) == (
        "nov", "c-1", "eve@example.com", 2,
    )  # fmt: skip
    assert first.comment == "slow reply" and first.answers == 1 and not first.updated
    # A reminder's link is another token for the same person: still one answer.
    reminder = survey_token(ws, expires_at=datetime.now(UTC) + timedelta(days=3))
    assert reminder != token
    second = surveys.record_survey_response(ws, reminder, "5")
    assert second.score == 5 and second.comment is None and second.answers == 2 and second.updated
    assert second.first_answered_at == first.first_answered_at
    assert second.answered_at >= first.answered_at
    assert len(stored(ws)) == 1
    df = surveys.responses(ws, "nov")
    assert df[["contact", "score", "answers"]].to_dict("records") == [
        {"contact": "c-1", "score": 5, "answers": 2}
    ]
    assert surveys.responded_contacts(ws, "nov") == {"c-1"}
    assert surveys.responded_contacts(ws, "dec") == set()


def test_answers_per_campaign_and_without_one(ws: Workspace) -> None:
    surveys.record_survey_response(ws, survey_token(ws, contact="c-2"), 4)
    surveys.record_survey_response(ws, survey_token(ws, campaign=None, contact="c-2"), 1)
    surveys.record_survey_response(ws, survey_token(ws, campaign="dec", contact="c-3"), 3)
    assert surveys.responded_contacts(ws, "nov") == {"c-2"}
    assert surveys.responded_contacts(ws, None) == {"c-2"}
    loose = surveys.responses(ws, None)
    assert list(loose["score"]) == [1] and loose["campaign"].tolist() == [None]
    got = surveys.get_response(ws, None, "c-2")
    assert got is not None and got.campaign is None and got.score == 1
    assert surveys.get_response(ws, "nov", "nobody") is None


@pytest.mark.parametrize(
    ("score", "comment", "message"),
    [
        (0, None, "from 1 to 5"),
        (6, None, "from 1 to 5"),
        ("4.5", None, "whole number"),
        ("", None, "whole number"),
        (True, None, "whole number"),
        (None, None, "whole number"),
        (3, "x" * 2001, "longer than 2000"),
        (3, "a\0b", "NUL"),
    ],
)
def test_bad_answers_write_nothing(
    ws: Workspace, score: object, comment: str | None, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        surveys.record_survey_response(ws, survey_token(ws), score, comment)
    assert stored(ws) == []


def test_bad_links_write_nothing(ws: Workspace) -> None:
    expired = survey_token(ws, expires_at=datetime.now(UTC) - timedelta(days=1))
    with pytest.raises(TokenExpiredError):
        surveys.record_survey_response(ws, expired, 5)
    with pytest.raises(TokenError):
        surveys.record_survey_response(ws, reencode(survey_token(ws), {"k": "c-9"}), 5)
    unsubscribe = surveys.unsubscribe_url(ws, "eve@example.com").rsplit("/", 1)[1]
    with pytest.raises(TokenError):
        surveys.record_survey_response(ws, unsubscribe, 5)
    assert stored(ws) == []
