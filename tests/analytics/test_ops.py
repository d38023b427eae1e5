"""The ops questions (analytics.ops) against a hand-made log whose answers are known."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from log_fixtures import D2, D3, at, handmade_log
from matplotlib.figure import Figure

from sysmail_ops.analytics import charts, ops, opscharts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import ValidationError
from sysmail_ops.records import sendlog


@pytest.fixture
def log(ws: Workspace) -> Workspace:
    return handmade_log(ws)


def by(df: pd.DataFrame, key: str) -> dict[object, dict[str, object]]:
    return {k: v for k, v in df.set_index(key).to_dict("index").items()}


def test_delivery_rate_per_account(log: Workspace) -> None:
    got = by(ops.rate_by_account(log), "account")
    assert got == {
        "news": {"attempted": 4, "sent": 1, "deferred": 1, "failed": 2, "delivery_rate": 0.25},
        "service": {"attempted": 3, "sent": 2, "deferred": 0, "failed": 1,
                    "delivery_rate": 0.6667},
    }  # fmt: skip


def test_delivery_rate_per_day(log: Workspace) -> None:
    got = by(ops.rate_by_day(log), "day")
    assert got == {
        date(2026, 3, 2): {"attempted": 4, "sent": 2, "deferred": 0, "failed": 2,
                           "delivery_rate": 0.5},
        date(2026, 3, 3): {"attempted": 3, "sent": 1, "deferred": 1, "failed": 1,
                           "delivery_rate": 0.3333},
    }  # fmt: skip


def test_totals_and_headline(log: Workspace) -> None:
    totals = ops.totals_by_status(log).set_index("status")["deliveries"].to_dict()
    expected = {"sent": 3, "deferred": 1, "failed": 3, "suppressed": 1}
    assert totals == {s: expected.get(s, 0) for s in sendlog.STATUSES}
    assert ops.headline(log) == "3 of 7 deliveries sent (42.9%), 3 failed, 1 deferred"
    assert ops.headline_of(ops.rate_by_account(log)) == ops.headline(log)
    assert ops.headline_of(ops.rate_by_day(log, since="2030-01-01")) == (
        "no deliveries in this period"
    )


def test_failures_by_reply_class_and_code(log: Workspace) -> None:
    df = ops.failures_by_code(log)
    assert list(zip(df["reply_class"], df["smtp_code"], df["failed"], df["deferred"],
                    strict=True)) == [
        ("4xx", 421, 0, 1), ("4xx", 451, 1, 0), ("5xx", 550, 1, 0), ("5xx", 554, 1, 0),
    ]  # fmt: skip
    assert list(df["share"]) == [0.25] * 4
    assert df.set_index("smtp_code").loc[451, "example_reply"].startswith("gave up")


def test_failures_by_domain(log: Workspace) -> None:
    df = ops.failures_by_domain(log)
    assert list(df["domain"]) == ["example.net", "example.com", "example.org"]
    got = by(df, "domain")
    assert got["example.net"] == {"attempted": 2, "sent": 0, "failed": 2, "deferred": 0,
                                  "failure_rate": 1.0, "top_code": got["example.net"]["top_code"],
                                  "example_reply": "5.7.1 rejected"}  # fmt: skip
    assert got["example.net"]["top_code"] in {550, 554}
    assert (got["example.com"]["attempted"], got["example.com"]["failed"]) == (3, 1)
    assert got["example.com"]["failure_rate"] == 0.3333 and got["example.com"]["top_code"] == 451
    assert got["example.org"]["deferred"] == 1 and got["example.org"]["top_code"] == 421
    assert list(ops.failures_by_domain(log, n=1)["domain"]) == ["example.net"]


def test_retries_and_queue_wait(log: Workspace) -> None:
    got = by(ops.retries(log), "attempts")
    assert got[1] == {"deliveries": 5, "sent": 2, "failed": 2, "deferred": 1,
                      "wait_p50_s": 0.0, "wait_p95_s": 2.6, "wait_max_s": 3.0}  # fmt: skip
    assert got[2] == {"deliveries": 1, "sent": 1, "failed": 0, "deferred": 0,
                      "wait_p50_s": 302.0, "wait_p95_s": 302.0, "wait_max_s": 302.0}  # fmt: skip
    assert got[3]["failed"] == 1 and got[3]["wait_max_s"] == 1200.0  # 12:00 to 12:20


def test_volume_by_use_case_and_template(log: Workspace) -> None:
    use = by(ops.volume_by_use_case(log), "use_case")
    assert list(use) == ["marketing", "workflow"]
    assert use["marketing"] == {"deliveries": 5, "sent": 1, "failed": 2, "deferred": 1,
                                "not_sent": 1, "share": 0.625}  # fmt: skip
    assert use["workflow"] == {"deliveries": 3, "sent": 2, "failed": 1, "deferred": 0,
                               "not_sent": 0, "share": 0.375}  # fmt: skip
    tpl = ops.volume_by_template(log)
    assert dict(zip(tpl["template"], tpl["deliveries"], strict=True)) == {"promo": 5, "note": 3}


def test_busiest_hours(log: Workspace) -> None:
    df = ops.busiest_hours(log)
    assert list(df["hour"]) == list(range(24))
    counts = {h: n for h, n in zip(df["hour"], df["deliveries"], strict=True) if n}
    assert counts == {9: 3, 10: 2, 11: 2, 12: 1}
    nine = df.set_index("hour").loc[9]
    assert (nine["busy_days"], nine["peak"], nine["peak_at"]) == (1, 3, at(D3, 9))
    assert df.set_index("hour").loc[10, "mean_per_day"] == 2.0


def test_latency_queued_to_accepted(log: Workspace) -> None:
    got = by(ops.latency(log), "account")
    assert list(got) == ["(all)", "news", "service"]
    assert got["(all)"] == {"sent": 3, "p50_s": 3.0, "p95_s": 272.1, "max_s": 302.0}
    assert got["service"]["p50_s"] == 151.5  # 1 s and 302 s (first queued 10:00, accepted 10:05:02)
    assert got["news"] == {"sent": 1, "p50_s": 3.0, "p95_s": 3.0, "max_s": 3.0}


def test_suppressions_and_bounces_over_time(log: Workspace) -> None:
    got = by(ops.suppressions_and_bounces(log), "day")
    assert got[date(2026, 3, 2)] == {"bounces": 2, "suppressed_unsubscribe": 0,
                                     "suppressed_manual": 0, "suppressed_bounce": 1,
                                     "suppressed_complaint": 0, "suppressed": 1}  # fmt: skip
    assert got[date(2026, 3, 3)]["bounces"] == 0  # m8 gave up on a 451: not a bounce
    assert got[date(2026, 3, 3)]["suppressed_unsubscribe"] == 1


def test_period_and_accounts_narrow_every_question(log: Workspace) -> None:
    day3 = ops.rate_by_day(log, since="2026-03-03")
    assert list(day3["day"]) == [date(2026, 3, 3)]
    assert ops.headline(log, since=D3) == "1 of 3 deliveries sent (33.3%), 1 failed, 1 deferred"
    assert ops.headline(log, until=D3, accounts="service") == (
        "2 of 3 deliveries sent (66.7%), 1 failed, 0 deferred"
    )
    assert set(ops.volume_by_template(log, accounts=["service"])["template"]) == {"note"}
    assert ops.suppressions_and_bounces(log, since=D3)["bounces"].sum() == 0
    # m1's deferred first try is before `since`: its sent retry is a one-attempt delivery here
    later = by(ops.retries(log, since=at(D2, 10, 1), until=D3), "attempts")
    assert set(later) == {2, 1} and later[2]["wait_max_s"] == 2.0


def test_every_question_at_once_in_one_visit(log: Workspace) -> None:
    answers = ops.all_questions(log)
    assert set(answers) == set(ops.QUESTIONS)
    for name, fn in ops.QUESTIONS.items():
        pd.testing.assert_frame_equal(answers[name], fn(log), obj=name)


def test_an_empty_log_answers_with_empty_frames(ws: Workspace) -> None:
    for name, df in ops.all_questions(ws).items():
        assert isinstance(df, pd.DataFrame), name
        if name == "busiest_hours":
            assert len(df) == 24 and df["deliveries"].sum() == 0
        else:
            assert df.empty or name == "latency", name
    assert ops.headline(ws) == "no deliveries in this period"
    figures = [opscharts.CHARTS[name](df) for name, df in ops.all_questions(ws).items()]
    assert all(charts.png_bytes(f).startswith(b"\x89PNG") for f in figures)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"since": "last week"}, "since takes a date"),
        ({"until": "soon"}, "until takes a date"),
        ({"since": "2026-03-03", "until": "2026-03-02"}, "is not after since"),
        ({"accounts": ["service", ""]}, "accounts are system email names"),
    ],
)
def test_bad_scope_is_one_clear_error(log: Workspace, kwargs: dict[str, object],
                                      message: str) -> None:  # fmt: skip
    with pytest.raises(ValidationError, match=message):
        ops.rate_by_account(log, **kwargs)  # type: ignore[arg-type]


def test_a_chart_for_each_question(log: Workspace) -> None:
    answers = ops.all_questions(log)
    assert set(opscharts.CHARTS) == set(ops.QUESTIONS)
    for name, df in answers.items():
        fig = opscharts.CHARTS[name](df)
        assert isinstance(fig, Figure), name
        assert fig.axes and fig.axes[0].get_title(loc="left"), name
        assert charts.png_bytes(fig).startswith(b"\x89PNG")
    fig = opscharts.rate_chart(answers["rate_by_day"])
    heights = sorted(p.get_height() for p in fig.axes[0].patches)
    assert sum(heights) == 7  # 4 on the 2nd + 3 on the 3rd, stacked by status


# -- ad-hoc SQL over the read-only view -----------------------------------------------------


def test_sql_over_the_deliveries_view(log: Workspace) -> None:
    df = ops.sql(log, "SELECT status, count(*) AS n FROM deliveries GROUP BY ALL ORDER BY status")
    assert dict(zip(df["status"], df["n"], strict=True)) == {
        "deferred": 1, "failed": 3, "sent": 3, "suppressed": 1,
    }  # fmt: skip
    assert list(ops.sql(log, "SELECT * FROM deliveries LIMIT 1").columns) == list(
        ops.DELIVERIES_COLUMNS
    )
    m1 = ops.sql(log, "SELECT * FROM deliveries WHERE message_id = ?", ["m1"]).iloc[0]
    assert (m1["attempts"], m1["wait_seconds"], m1["domain"]) == (2, 302.0, "example.com")
    assert m1["first_queued_at"] == at(D2, 10)
    assert len(ops.sql(log, "FROM attempts")) == 11
    assert ops.sql(log, "SELECT count(*) AS n FROM suppression")["n"][0] == 2


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("DELETE FROM send_log", "only SELECT queries run here .read-only., got DELETE"),
        ("DROP VIEW deliveries", "only SELECT"),
        ("UPDATE send_log SET status = 'sent'", "only SELECT"),
        ("SELECT 1; DELETE FROM send_log", "one statement at a time, got 2"),
        ("COPY send_log TO '/tmp/x.csv'", "only SELECT"),
        ("SELEC 1", "not valid SQL"),
        ("", "the query is empty"),
        ("SELECT nextval('send_log_seq')", "read-only"),  # a SELECT that would write
        ("SELECT * FROM no_such_table", "the query failed"),
    ],
)
def test_sql_refuses_anything_but_a_read(log: Workspace, query: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ops.sql(log, query)
    assert len(ops.sql(log, "FROM attempts")) == 11  # nothing changed


def test_sql_refuses_a_huge_answer(log: Workspace) -> None:
    with pytest.raises(ValidationError, match="more than 5 rows: aggregate in SQL"):
        ops.sql(log, "FROM attempts", max_rows=5)


def test_the_report_figures_match_the_pandas_ones(log: Workspace) -> None:
    """The DuckDB answers the delivery report uses equal the pandas ones of analytics.queries."""
    from sysmail_ops.analytics import queries

    frame = queries.load_log(log)
    pairs = [
        (ops.rate_by_account(log), queries.rate_by_account(frame)),
        (ops.rate_by_day(log), queries.rate_by_day(frame)),
    ]
    for mine, theirs in pairs:
        pd.testing.assert_frame_equal(mine, theirs, check_dtype=False)
    top = ops.top_failures(log, n=5)
    old = queries.top_failures(frame, n=5)
    assert list(top["smtp_code"]) == list(old["smtp_code"])
    assert list(top["example_recipient"]) == list(old["example_recipient"])
    assert ops.headline(log) == queries.headline(frame)


def test_a_year_of_days_is_drawn_as_areas_not_bars() -> None:
    from datetime import timedelta

    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(365)]
    by_day = pd.DataFrame({"day": days, "attempted": 10, "sent": 8, "deferred": 1, "failed": 1,
                           "delivery_rate": 0.8})  # fmt: skip
    fig = opscharts.rate_chart(by_day)
    ax = fig.axes[0]
    assert not ax.patches and len(ax.collections) == 3  # sent, deferred, failed areas
    bounces = pd.DataFrame({"day": days, "bounces": 1, "suppressed": 2})
    assert len(opscharts.suppressions_chart(bounces).axes[0].lines) == 2
    assert charts.png_bytes(fig).startswith(b"\x89PNG")
