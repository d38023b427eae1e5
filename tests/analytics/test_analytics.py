"""Delivery analytics over a real send log (real SMTP server, real DuckDB file)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from conftest import bind
from matplotlib.figure import Figure
from smtp_testserver import SMTPTestServer

from sysmail_ops.analytics import charts
from sysmail_ops.analytics import queries as analytics
from sysmail_ops.config.secrets import ENV_KEY
from sysmail_ops.config.workspace import ENV_HOME, Workspace
from sysmail_ops.errors import ValidationError
from sysmail_ops.records import sendlog
from sysmail_ops.sending import batch as sending
from sysmail_ops.store.database import utcnow
from sysmail_ops.templates import catalog as templates

FAST = sending.SendOptions(backoff=0.01)


@pytest.fixture(scope="module")
def sent(
    tmp_path_factory: pytest.TempPathFactory, _smtp_server_session: SMTPTestServer
) -> Iterator[Workspace]:
    """One workspace for the module (the tests only read it), with a real log:

    service: ann sent after one 451, bob sent, nobody and gone refused with 550; news: dee sent.
    """
    server = _smtp_server_session
    server.reset()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_HOME, str(tmp_path_factory.mktemp("default-home")))
        mp.delenv(ENV_KEY, raising=False)
        ws, _ = Workspace.init(tmp_path_factory.mktemp("analytics") / "ws")
        bind(ws, server)
        bind(ws, server, "news", kind="marketing")
        templates.add_template(
            ws, "note", object_type="case", subject="N {{ n }}", html="<p>{{ n }}</p>", fields=["n"]
        )
        server.fail_data_times = 1
        sending.send(ws, "service", "note", to="ann@example.com", record={"n": 1}, options=FAST)
        server.reject_rcpt = {
            "nobody@example.com": "550 5.1.1 no such user",
            "gone@example.net": "550 5.1.1 mailbox gone",
        }
        to = ["bob@example.com", "nobody@example.com", "gone@example.net"]
        sending.send(ws, "service", "note", to=to, record={"n": 2}, options=FAST)
        sending.send(ws, "news", "note", to="dee@example.org", record={"n": 3}, options=FAST)
        server.reset()
        yield ws


@pytest.fixture
def log(sent: Workspace) -> pd.DataFrame:
    return analytics.load_log(sent)


def test_load_log_reads_every_attempt(log: pd.DataFrame) -> None:
    assert len(log) == 6  # ann's deferred attempt is a row of its own
    assert list(log["id"]) == sorted(log["id"])
    assert set(analytics.COLUMNS) == set(log.columns)
    ann = log[log["recipient"] == "ann@example.com"]
    assert list(ann["status"]) == ["deferred", "sent"] and list(ann["smtp_code"]) == [451, 250]


def test_load_log_filters_by_account_and_period(sent: Workspace) -> None:
    assert set(analytics.load_log(sent, accounts="news")["recipient"]) == {"dee@example.org"}
    assert len(analytics.load_log(sent, accounts=["news", "service"])) == 6
    assert analytics.load_log(sent, accounts=["nope"]).empty
    assert analytics.load_log(sent, since=utcnow() + timedelta(minutes=1)).empty
    assert len(analytics.load_log(sent, since="1h", until=utcnow() + timedelta(minutes=1))) == 6
    assert analytics.load_log(sent, until="2000-01-01").empty
    aware = datetime.now(UTC) - timedelta(hours=1)
    assert len(analytics.load_log(sent, since=aware)) == 6  # aware times are read as UTC


def test_outcomes_keep_the_latest_attempt(log: pd.DataFrame) -> None:
    out = analytics.outcomes(log)
    assert len(out) == 5
    assert out.set_index("recipient").loc["ann@example.com", "status"] == "sent"


def test_totals_by_status(log: pd.DataFrame) -> None:
    totals = analytics.totals_by_status(log).set_index("status")
    expected = {"sent": 3, "failed": 2}
    assert totals["deliveries"].to_dict() == {s: expected.get(s, 0) for s in sendlog.STATUSES}
    assert totals.loc["sent", "share"] == 0.6


def test_rates_by_account_and_day(log: pd.DataFrame) -> None:
    by_account = analytics.rate_by_account(log).set_index("account")
    assert by_account.loc["service"].to_dict() == {
        "attempted": 4,
        "sent": 2,
        "deferred": 0,
        "failed": 2,
        "delivery_rate": 0.5,
    }
    assert by_account.loc["news", "delivery_rate"] == 1.0
    by_day = analytics.rate_by_day(log)
    assert list(by_day["day"]) == [utcnow().date()] or len(by_day) == 2  # a run across midnight
    assert by_day["attempted"].sum() == 5 and by_day["sent"].sum() == 3


def test_top_failures_have_an_example_each(log: pd.DataFrame) -> None:
    top = analytics.top_failures(log)
    assert len(top) == 1  # ann's 451 was followed by a success: not a failure
    row = top.iloc[0]
    assert (row["smtp_code"], row["status"], row["deliveries"], row["accounts"]) == (
        550,
        "failed",
        2,
        "service",
    )
    assert row["example_recipient"] in {"nobody@example.com", "gone@example.net"}
    assert row["example_reply"].startswith("5.1.1") or "550" in row["example_reply"]


def test_headline_and_chart(log: pd.DataFrame) -> None:
    assert analytics.headline(log) == "3 of 5 deliveries sent (60.0%), 2 failed, 0 deferred"
    fig = analytics.delivery_chart(log)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    heights = sorted(p.get_height() for p in ax.patches)
    assert sum(heights) == 5  # sent 3 + failed 2 stacked on one day (or split across two)
    assert charts.png_bytes(fig).startswith(b"\x89PNG")


def test_an_empty_period_gives_empty_figures(ws: Workspace) -> None:
    empty = analytics.load_log(ws)
    assert empty.empty
    assert analytics.totals_by_status(empty)["deliveries"].sum() == 0
    assert analytics.rate_by_account(empty).empty and analytics.rate_by_day(empty).empty
    assert analytics.top_failures(empty).empty
    assert analytics.headline(empty) == "no deliveries in this period"
    assert charts.png_bytes(analytics.delivery_chart(empty)).startswith(b"\x89PNG")


def test_period_reads_report_parameters() -> None:
    start, end = analytics.period(days=7)
    assert start is not None and end is None
    assert abs((utcnow() - start) - timedelta(days=7)) < timedelta(seconds=5)
    assert analytics.period(days=7, since="2026-03-01") == (datetime(2026, 3, 1), None)
    assert analytics.period(since="2026-03-01T10:00+02:00", until="2026-03-02") == (
        datetime(2026, 3, 1, 8, 0),
        datetime(2026, 3, 2),
    )
    assert analytics.period() == (None, None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"since": "yesterday"}, "since takes a date, an ISO time or an age like 7d"),
        ({"until": "7 days"}, "until takes a date"),
        ({"days": 0}, "days must be 1 or more, got 0"),
        ({"since": "2026-03-02", "until": "2026-03-01"}, "is not after since"),
    ],
)
def test_period_refuses(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        analytics.period(**kwargs)  # type: ignore[arg-type]


def test_load_log_refuses_a_bad_period(ws: Workspace) -> None:
    with pytest.raises(ValidationError, match="since takes"):
        analytics.load_log(ws, since="last week")
