"""Cron slots in a timezone: DST gaps and overlaps, catch-up, validation."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from sysmail_ops.errors import ValidationError
from sysmail_ops.subscriptions import schedule

BERLIN = schedule.check_timezone("Europe/Berlin")
# 2026: clocks go 02:00 -> 03:00 on 29 March, 03:00 -> 02:00 on 25 October (Europe/Berlin).
SPRING, FALL = datetime(2026, 3, 29), datetime(2026, 10, 25)


def slots_on(expr: str, day: datetime) -> list[str]:
    """The local labels of every slot falling on ``day`` (local date)."""
    out = []
    for slot in schedule.slots_after(expr, BERLIN, day - timedelta(days=1)):
        label = schedule.local_label(slot, BERLIN)
        if label[:10] > day.strftime("%Y-%m-%d"):
            return out
        if label.startswith(day.strftime("%Y-%m-%d")):
            out.append(label)
    raise AssertionError("unreachable")


def test_daily_0230_runs_once_at_0300_on_spring_forward_day() -> None:
    assert slots_on("30 2 * * *", SPRING) == ["2026-03-29 03:00 CEST"]
    assert slots_on("30 2 * * *", SPRING - timedelta(days=1)) == ["2026-03-28 02:30 CET"]
    assert slots_on("30 2 * * *", SPRING + timedelta(days=1)) == ["2026-03-30 02:30 CEST"]


def test_daily_0230_runs_once_at_the_first_0230_on_fall_back_day() -> None:
    assert slots_on("30 2 * * *", FALL) == ["2026-10-25 02:30 CEST"]  # not again at 02:30 CET
    (slot,) = [s for s in schedule.next_slots("30 2 * * *", BERLIN, FALL, 1)]
    assert slot == datetime(2026, 10, 25, 0, 30)  # stored in UTC: CEST is UTC+2


def test_slots_in_the_gap_collapse_to_one() -> None:
    labels = slots_on("*/30 1-3 * * *", SPRING)
    assert labels == [
        "2026-03-29 01:00 CET",
        "2026-03-29 01:30 CET",
        "2026-03-29 03:00 CEST",  # 02:00, 02:30 and 03:00 are one instant
        "2026-03-29 03:30 CEST",
    ]


def test_hourly_slots_on_fall_back_day_do_not_repeat_the_overlap() -> None:
    labels = slots_on("0 * * * *", FALL)
    assert len(labels) == 24  # 25 hours long, but 02:00 local is one slot
    assert labels.count("2026-10-25 02:00 CEST") == 1
    assert "2026-10-25 02:00 CET" not in labels


def test_latest_slot_is_the_most_recent_at_or_before_now() -> None:
    expr = "0 8 * * mon"
    monday_0805 = datetime(2026, 11, 30, 7, 5)  # 08:05 CET
    assert schedule.latest_slot(expr, BERLIN, monday_0805) == datetime(2026, 11, 30, 7, 0)
    assert schedule.latest_slot(expr, BERLIN, datetime(2026, 11, 30, 7, 0)) == datetime(
        2026, 11, 30, 7, 0
    )
    # A week of downtime: the latest missed slot only, not every missed one.
    assert schedule.latest_slot(expr, BERLIN, datetime(2026, 12, 9, 12)) == datetime(
        2026, 12, 7, 7, 0
    )


def test_latest_slot_across_the_gap_and_the_overlap() -> None:
    expr = "30 2 * * *"
    # 02:59 UTC+1 does not exist; at 01:05 UTC (03:05 CEST) the 03:00 slot is the latest.
    assert schedule.latest_slot(expr, BERLIN, datetime(2026, 3, 29, 1, 5)) == datetime(
        2026, 3, 29, 1, 0
    )
    assert schedule.latest_slot(expr, BERLIN, datetime(2026, 3, 29, 0, 59)) == datetime(
        2026, 3, 28, 1, 30
    )
    # During the second 02:30 (01:40 UTC) the latest slot is still the first 02:30.
    assert schedule.latest_slot(expr, BERLIN, datetime(2026, 10, 25, 1, 40)) == datetime(
        2026, 10, 25, 0, 30
    )


def test_next_slots_in_utc() -> None:
    utc = schedule.check_timezone("UTC")
    got = schedule.next_slots("0 8 * * mon-fri", utc, datetime(2026, 11, 27, 9), 3)
    assert got == [datetime(2026, 11, 30, 8), datetime(2026, 12, 1, 8), datetime(2026, 12, 2, 8)]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "schedule is empty"),
        ("61 * * * *", "invalid schedule"),
        ("0 8 * *", "five cron fields"),
        ("0 8 * * * *", "five cron fields"),
        ("0 8 * * mon\n", None),  # whitespace is normalised, not an error
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_check_cron(expr: str, message: str | None) -> None:
    if message is None:
        assert schedule.check_cron(expr) == "0 8 * * mon"
        return
    with pytest.raises(ValidationError, match=message):
        schedule.check_cron(expr)


@pytest.mark.parametrize("name", ["", "Mars/Olympus", "../etc/passwd", "Europe/Berlin\n"])
def test_check_timezone_rejects_unknown_names(name: str) -> None:
    if name.strip() == "Europe/Berlin":
        assert schedule.check_timezone(name).key == "Europe/Berlin"
        return
    with pytest.raises(ValidationError, match="timezone"):
        schedule.check_timezone(name)
