"""The log explorer's capped count: exact below the cap, "more than N" above it, pages still
distinct. A small ``count_cap`` on the hand-made 11-row log stands in for 1,000 on millions."""

from __future__ import annotations

import pytest
from log_fixtures import handmade_log

from sysmail_ops.analytics import explore
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import ValidationError


@pytest.fixture
def log(ws: Workspace) -> Workspace:
    return handmade_log(ws)


EVERY = explore.log_filter(since="2000-01-01")  # all 11 rows, through a filter


def test_with_no_filter_the_count_is_exact_whatever_the_cap(log: Workspace) -> None:
    page = explore.log_page(log, None, 1, 4, count_cap=1)  # the table's count is cheap
    assert (page.total, page.capped, page.describe()) == (11, False, "rows 1-4 of 11 (page 1 of 3)")


def test_the_count_is_exact_up_to_the_cap_and_capped_beyond(log: Workspace) -> None:
    exact = explore.log_page(log, EVERY, 1, 4, count_cap=11)
    assert (exact.total, exact.capped, exact.pages) == (11, False, 3)
    assert exact.describe() == "rows 1-4 of 11 (page 1 of 3)"
    capped = explore.log_page(log, EVERY, 1, 4, count_cap=10)  # 11 rows: one over the cap
    assert (capped.total, capped.capped, capped.has_next) == (10, True, True)
    assert capped.describe() == "rows 1-4 of more than 10 (page 1 of 3+)"
    assert list(capped.rows["id"]) == list(exact.rows["id"]) == [11, 10, 9, 8]
    assert explore.log_page(log, EVERY, 1, 4).total == 11  # the default cap (1,000): exact


def test_capped_pages_differ_and_the_count_reaches_past_the_page(log: Workspace) -> None:
    one = explore.log_page(log, EVERY, 1, 2, count_cap=3)
    two = explore.log_page(log, EVERY, 2, 2, count_cap=3)
    assert list(one.rows["id"]) == [11, 10] and list(two.rows["id"]) == [9, 8]
    assert (one.total, one.capped) == (3, True)
    assert (two.total, two.capped, two.has_next) == (4, True, True)  # counted past page 2
    five = explore.log_page(log, EVERY, 5, 2, count_cap=3)
    assert list(five.rows["id"]) == [3, 2] and (five.total, five.capped) == (10, True)
    last = explore.log_page(log, EVERY, 6, 2, count_cap=3)  # a short page: the exact end
    assert list(last.rows["id"]) == [1] and (last.total, last.capped, last.has_next) == (
        11,
        False,
        False,
    )
    assert last.describe() == "rows 11-11 of 11 (page 6 of 6)"


def test_a_filter_is_counted_with_the_same_cap(log: Workspace) -> None:
    ann = explore.log_filter(to="ANN@example.com")  # 5 rows
    over = explore.log_page(log, ann, 1, 2, count_cap=4)
    assert (over.total, over.capped) == (4, True)
    full = explore.log_page(log, ann, 1, 2, count_cap=5)
    assert (full.total, full.capped) == (5, False)
    short = explore.log_page(log, explore.log_filter(status="failed"), 1, 50, count_cap=1)
    assert (short.total, short.capped) == (3, False)  # one short page: no count needed
    none = explore.log_page(log, explore.log_filter(to="nobody@example.com"), 1, 5, count_cap=1)
    assert (none.total, none.capped, none.describe()) == (0, False, "no rows match")


def test_a_page_past_the_end_gets_the_exact_count(log: Workspace) -> None:
    for cap in (1, 1000):  # counted on its own past the cap; with the page's ids below it
        past = explore.log_page(log, EVERY, 10, 4, count_cap=cap)
        assert past.rows.empty and (past.total, past.capped, past.pages) == (11, False, 3)


@pytest.mark.parametrize("cap", [0, -5, 2.5, True, "1000"])
def test_a_bad_count_cap_is_refused(log: Workspace, cap: object) -> None:
    with pytest.raises(ValidationError, match="count cap must be a whole number"):
        explore.log_page(log, None, 1, 4, count_cap=cap)  # type: ignore[arg-type]
