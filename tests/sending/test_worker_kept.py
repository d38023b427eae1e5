"""worker.Kept: a compose worker keeps what it rendered in the check until it composes it."""

from __future__ import annotations

from sysmail_ops.sending.worker import Kept
from sysmail_ops.templates.catalog import Rendered


def rendering(i: int) -> Rendered:
    return Rendered(f"Subject {i}", f"<p>{i}</p>" * 40, f"{i}\n" * 40)


def test_renderings_past_the_memory_limit_go_to_a_file_and_come_back_once_in_order() -> None:
    kept = Kept(keep_bytes=5_000, piece=7)
    for i in range(500):
        kept.add(i, rendering(i))
    assert kept._file is not None  # past 5,000 characters: the rest went to the file
    assert [kept.take(i) for i in range(500)] == [rendering(i) for i in range(500)]
    assert kept.take(3) is None  # given once
    assert kept.take(10_000) is None  # never kept
    kept.close()


def test_a_number_not_asked_for_does_not_stop_the_next_ones() -> None:
    kept = Kept(keep_bytes=0, piece=3)
    for i in range(20):
        kept.add(i, rendering(i))
    # 5 is never asked for (its piece was built in the sender instead): the rest still come.
    assert [kept.take(i) for i in range(20) if i != 5] == [
        rendering(i) for i in range(20) if i != 5
    ]
    kept.close()
