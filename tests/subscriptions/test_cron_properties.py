"""Cron expressions from outside: a schedule that fires, or one ValidationError line."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sysmail_ops.errors import SysmailError, ValidationError
from sysmail_ops.subscriptions.schedule import check_cron, latest_slot, next_slots

PROPS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

number = st.integers(min_value=-2, max_value=70).map(str) | st.sampled_from(
    ["99999999999999999999999", "9" * 5000, "1e3", "0x1"]
)
atom = st.one_of(
    st.just("*"),
    st.just("?"),
    st.just("L"),
    number,
    st.sampled_from(["mon", "sun", "jan", "dec", "foo", "5L", "1#2", "5#9", "W"]),
    st.tuples(number, number).map(lambda t: f"{t[0]}-{t[1]}"),
)
cron_field = st.one_of(
    atom,
    st.tuples(atom, number).map(lambda t: f"{t[0]}/{t[1]}"),
    st.lists(atom, min_size=2, max_size=3).map(",".join),
)
cron_like = st.lists(cron_field, min_size=5, max_size=5).map(" ".join) | st.lists(
    cron_field, min_size=4, max_size=6
).map(" ".join)


def _field(low: int, high: int, names: list[str]) -> st.SearchStrategy[str]:
    one = st.integers(low, high).map(str) | st.sampled_from(["*", *names])
    span = st.tuples(st.integers(low, high), st.integers(low, high)).map(lambda t: f"{t[0]}-{t[1]}")
    step = st.tuples(one | span, st.integers(1, high + 2)).map(lambda t: f"{t[0]}/{t[1]}")
    return st.lists(one | span | step, min_size=1, max_size=3).map(",".join)


plausible = st.tuples(
    _field(0, 59, []),
    _field(0, 23, []),
    _field(1, 31, ["L"]),
    _field(1, 12, ["jan", "feb", "dec"]),
    _field(0, 7, ["mon", "sun", "5#5", "5L"]),
).map(" ".join)


def _fires_or_refused(expr: str) -> None:
    try:
        norm = check_cron(expr)
    except SysmailError as exc:
        assert isinstance(exc, ValidationError) and "\n" not in str(exc)
        return
    now = datetime(2026, 11, 30, 7, 5)
    for tz in (ZoneInfo("UTC"), ZoneInfo("Europe/Berlin"), ZoneInfo("America/St_Johns")):
        slots = next_slots(norm, tz, now, 3)
        assert len(slots) == 3 and slots == sorted(slots) and slots[0] > now
        assert latest_slot(norm, tz, now) <= now


@PROPS
@given(cron_like)
@example("0 0 30 2 *")
@example("0 8 * * 1#9")
@example("0-59/" + "9" * 5000 + " * * * *")
@example("0 0 29 2 mon")
@example("0 8 L * *")
def test_cron_like_text_fires_or_is_one_error(expr: str) -> None:
    _fires_or_refused(expr)


@PROPS
@given(plausible)
def test_plausible_cron_fires_or_is_one_error(expr: str) -> None:
    _fires_or_refused(expr)


@PROPS
@given(st.text(max_size=60))
@example("\x00 * * * *")
@example("@reboot")
@example("\ud800 * * * *")
def test_any_text_fires_or_is_one_error(expr: str) -> None:
    _fires_or_refused(expr)
