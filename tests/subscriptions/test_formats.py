"""Report formats: numbers, money, percentages and times for people, per locale (Babel)."""

from __future__ import annotations

import math
from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest

from sysmail_ops.errors import ValidationError
from sysmail_ops.subscriptions import formats
from sysmail_ops.subscriptions.formats import MISSING, format_frame, label, text_table

NBSP = "\xa0"


def cells(df: pd.DataFrame, **kw: object) -> dict[str, list[str]]:
    return {c.name: c.cells for c in format_frame(df, **kw)}  # type: ignore[arg-type]


def kinds(df: pd.DataFrame, **kw: object) -> dict[str, str]:
    return {c.name: c.kind for c in format_frame(df, **kw)}  # type: ignore[arg-type]


def test_the_issue_examples() -> None:
    df = pd.DataFrame(
        {
            "open_opportunities": [1111000],
            "amount_eur": [180700.0],
            "share": [0.8667],
            "delivery_rate": [1.0],
        }
    )
    got = cells(df)
    assert got == {
        "open_opportunities": ["1,111,000"],
        "amount_eur": [f"EUR{NBSP}180,700"],
        "share": ["86.7%"],
        "delivery_rate": ["100%"],
    }
    assert [c.label for c in format_frame(df)] == [
        "Open opportunities",
        "Amount",
        "Share",
        "Delivery rate",
    ]


@pytest.mark.parametrize(
    ("locale", "integer", "money", "percent", "number"),
    [
        ("en", "1,111,000", f"EUR{NBSP}1,111,000", "86.7%", "1,234.57"),
        ("de", "1.111.000", f"1.111.000{NBSP}EUR", f"86,7{NBSP}%", "1.234,57"),
        ("zh", "1,111,000", f"EUR{NBSP}1,111,000", "86.7%", "1,234.57"),
    ],
)
def test_locales_set_marks_and_order(
    locale: str, integer: str, money: str, percent: str, number: str
) -> None:
    df = pd.DataFrame({"n": [1111000], "total_eur": [1111000.0], "rate": [0.8667], "x": [1.5]})
    got = cells(df, locale=locale)
    assert got["n"] == [integer]
    assert got["total_eur"] == [money]
    assert got["rate"] == [percent.replace(" ", NBSP)]
    assert formats.format_number(1234.5678, locale, decimals=2) == number


def test_kinds_come_from_dtype_and_name() -> None:
    df = pd.DataFrame(
        {
            "label": ["a", "b"],
            "count": np.array([1, 2], dtype="int32"),
            "smtp_code": pd.array([550, None], dtype="Int64"),
            "opportunity_id": [101, 102],
            "avg": [1.25, 2.5],
            "share": [0.5, 0.25],
            "growth_rate": [3.5, 4.0],  # not a share: above 1.5, so a number
            "revenue_usd": [10.0, 20.5],
            "flag": [True, False],
            "queued_at": pd.to_datetime(["2026-11-23 14:30:17.493562", "2026-11-30 08:00:00.0"]),
            "day": pd.to_datetime(["2026-11-23", "2026-11-30"]),
            "seen": [date(2026, 11, 23), date(2026, 11, 30)],
            "stage": pd.Categorical(["Won", "Lost"]),
        }
    )
    assert kinds(df) == {
        "label": "text",
        "count": "integer",
        "smtp_code": "text",
        "opportunity_id": "text",
        "avg": "number",
        "share": "percent",
        "growth_rate": "number",
        "revenue_usd": "money",
        "flag": "text",
        "queued_at": "datetime",
        "day": "date",
        "seen": "date",
        "stage": "text",
    }
    got = cells(df)
    assert got["smtp_code"] == ["550", MISSING]
    assert got["opportunity_id"] == ["101", "102"]  # an id is not grouped
    assert got["revenue_usd"] == [f"USD{NBSP}10.00", f"USD{NBSP}20.50"]  # one count per column
    assert got["avg"] == ["1.25", "2.50"]
    assert got["flag"] == ["True", "False"]


def test_times_in_the_timezone_to_the_minute() -> None:
    df = pd.DataFrame({"last_seen": pd.to_datetime(["2026-11-23 14:30:17.493562"])})
    assert cells(df)["last_seen"] == ["Nov 23, 2026, 2:30\u202fPM"]
    assert cells(df, timezone="Europe/Berlin")["last_seen"] == ["Nov 23, 2026, 3:30\u202fPM"]
    assert cells(df, locale="de", timezone="Europe/Berlin")["last_seen"] == ["23.11.2026, 15:30"]
    assert cells(df, locale="zh", timezone="Asia/Shanghai")["last_seen"] == ["2026年11月23日 22:30"]
    aware = pd.DataFrame({"t": pd.to_datetime(["2026-11-23 14:30+01:00"])})
    assert cells(aware, timezone="UTC")["t"] == ["Nov 23, 2026, 1:30\u202fPM"]
    assert formats.format_datetime(datetime(2026, 11, 23, 14, 30), "de") == "23.11.2026, 14:30"


def test_missing_values_show_as_a_dash() -> None:
    df = pd.DataFrame(
        {
            "n": pd.array([1, None], dtype="Int64"),
            "x": [1.5, math.nan],
            "rate": [0.5, None],
            "amount_eur": [np.nan, 3.0],
            "t": pd.to_datetime(["2026-11-23 14:30", None]),
            "s": ["a", None],
        }
    )
    got = cells(df)
    assert [got[k][1] for k in ("n", "x", "rate", "t", "s")] == [MISSING] * 5
    assert got["amount_eur"] == [MISSING, f"EUR{NBSP}3"]
    assert formats.format_number(None) == MISSING
    assert formats.format_money(float("nan"), "EUR") == MISSING


def test_very_large_and_very_small_numbers() -> None:
    assert formats.format_number(10**20) == "100,000,000,000,000,000,000"
    assert formats.format_number(1e20) == "100,000,000,000,000,000,000"
    assert formats.format_number(1.2e-7) == "1.2E-7"
    assert formats.format_number(1.2e-7, "de") == "1,2E-7"
    assert formats.format_number(0.0) == "0"
    assert formats.format_number(-0.0001, decimals=2) == "0.00"  # never "-0.00"
    assert formats.format_number(float("inf")) == "∞"
    tiny = pd.DataFrame({"p": [1.2e-7, 3e-5]})
    assert cells(tiny)["p"] == ["1.2E-7", "3E-5"]
    mixed = pd.DataFrame({"x": [0.5, 12.25, 1234.5]})
    assert cells(mixed)["x"] == ["0", "12", "1,234"]  # a column of thousands: no decimals
    assert formats.format_money(12_345_678_901.5, "EUR") == f"EUR{NBSP}12,345,678,902"
    assert formats.format_percent(0.00004) == "0%"


def test_formats_and_labels_per_column() -> None:
    df = pd.DataFrame({"won": [0.256], "amount": [1500.0], "score": [3.14159], "n": [7]})
    got = format_frame(
        df,
        formats={
            "won": "percent:0",
            "amount": "money",
            "score": "number:3",
            "n": lambda v: f"#{v}",
        },
        currency="CHF",
        labels={"won": "Win rate"},
    )
    assert [c.cells[0] for c in got] == ["26%", f"CHF{NBSP}1,500", "3.142", "#7"]
    assert [c.label for c in got] == ["Win rate", "Amount", "Score", "N"]
    assert cells(df, formats={"amount": "JPY"})["amount"] == [f"JPY{NBSP}1,500"]
    assert cells(df, formats={"amount": "money:usd"})["amount"] == [f"USD{NBSP}1,500"]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"formats": {"nope": "integer"}}, "no column named nope"),
        ({"labels": {"nope": "X"}}, "no column named nope"),
        ({"formats": {"amount": "money"}}, "'money' needs a currency"),
        ({"formats": {"amount": "money:XXQ"}}, "needs a currency"),
        ({"formats": {"amount": "fancy"}}, "unknown column format 'fancy'"),
        ({"formats": {"amount": "number:x"}}, "decimals must be 0 to 12"),
        ({"locale": "xx_YY_ZZ"}, "unknown locale"),
    ],
)
def test_bad_formats_are_one_clear_error(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        format_frame(pd.DataFrame({"amount": [1.0]}), **kw)  # type: ignore[arg-type]


def test_check_locale() -> None:
    assert formats.check_locale("de") == "de"
    assert formats.check_locale("en-GB") == "en_GB"
    assert formats.check_locale(" zh ") == "zh"
    for bad in ("", "klingon", "12"):
        with pytest.raises(ValidationError, match="locale"):
            formats.check_locale(bad)


def test_labels_for_people() -> None:
    assert label("open_opportunities") == "Open opportunities"
    assert label("smtp_code") == "SMTP code"
    assert label("opportunity_id") == "Opportunity ID"
    assert label("weighted_eur") == "Weighted"
    assert label("Already Nice") == "Already nice"
    assert label(3) == "3"


def test_text_table_aligns_numbers_right() -> None:
    df = pd.DataFrame(
        {"owner": ["Ana Schmidt", "李明"], "amount_eur": [824000, 5.0], "share": [0.5, 1]}
    )
    table = text_table(format_frame(df))
    assert table.splitlines() == [
        "Owner             Amount  Share",
        "-----------  -----------  -----",
        "Ana Schmidt  EUR 824,000    50%",
        "李明               EUR 5   100%",  # a CJK character takes two columns
    ]
    long = pd.DataFrame({"reply": ["x" * 100]})
    assert text_table(format_frame(long), max_cell=10).splitlines()[2] == "x" * 9 + "…"
