"""sending.spool: a checked batch's deliveries kept from the check to the send."""

from __future__ import annotations

import os
from pathlib import Path

from sysmail_ops.sending.delivery import Delivery
from sysmail_ops.sending.spool import Spool
from sysmail_ops.templates.catalog import Rendered


def delivery(i: int) -> Delivery:
    d = Delivery([f"p{i}@example.com"], {"n": i, "items": [i, i + 1]}, key=f"k-{i}")
    d.rendered = Rendered(f"Subject {i}", f"<p>{i}</p>" * 50, f"{i}\n" * 50)
    return d


def test_what_goes_past_the_memory_limit_is_kept_in_a_file_and_comes_back_in_order(
    tmp_path: Path,
) -> None:
    with Spool(tmp_path, keep_bytes=10_000) as spool:
        for i in range(1234):
            spool.add(delivery(i))
        assert spool.in_file and spool.count == 1234
        assert os.listdir(tmp_path) == []  # an unnamed file: nothing to leave behind
        back = list(spool)
    assert [d.key for d in back] == [f"k-{i}" for i in range(1234)]
    assert back[1000].record == {"n": 1000, "items": [1000, 1001]}
    assert back[1000].rendered == delivery(1000).rendered


def test_a_small_batch_stays_in_memory(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        for i in range(10):
            spool.add(delivery(i))
        assert not spool.in_file
        assert [d.key for d in spool] == [f"k-{i}" for i in range(10)]
    assert list(spool) == []  # closed: nothing kept
