"""The send-log journal: segments folded behind, orphans folded once, torn lines cut.

Every row lands in ``send_log`` exactly once, whatever mix of ``fold_behind``,
``fold``, ``close``, ``fold_orphans`` and SIGKILL brought it there; the store
is a real DuckDB file, the killed writer a real process.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.mail.smtp import Outcome
from sysmail_ops.records import sendlog
from sysmail_ops.records.sendlog import Journal, fold_orphans, journal_dir, new_batch_id
from sysmail_ops.store.database import utcnow

RCPT = "eve@example.com"


def log(journal: Journal, key: str, status: str = "sent", rcpt: str = RCPT) -> None:
    """One row as the sender journals it (every NOT NULL column of send_log filled)."""
    out = Outcome(status, "data", 250 if status == "sent" else 451, f"{status} reply")
    journal.log(
        out,
        status=status,
        delivery_key=key,
        message_id=f"<{key}@example.com>",
        account="service",
        template="hello",
        template_version=1,
        use_case="manual",
        recipient=rcpt,
        role="to",
        subject=f"Hello {key}",
        attempt=1,
        queued_at=utcnow(),
        duration_ms=1.5,
        size_bytes=100,
    )


def rows(ws: Workspace) -> list[tuple[Any, ...]]:
    """(batch_id, seq, delivery_key, status), in the order they were inserted."""
    with ws.store.connect() as con:
        return con.execute(
            "SELECT batch_id, seq, delivery_key, status FROM send_log ORDER BY id"
        ).fetchall()


def segments(ws: Workspace) -> list[str]:
    return sorted(p.name for p in journal_dir(ws).glob("*.jsonl"))


def assert_once(
    ws: Workspace, batch_id: str, count: int, got: list[tuple[Any, ...]] | None = None
) -> None:
    """Rows 1..count of the batch, each once (in ``got``, one reading of ``rows``, if given)."""
    got = rows(ws) if got is None else got
    per_seq = Counter((b, s) for b, s, _, _ in got)
    assert set(per_seq.values()) == {1}, f"rows folded twice: {per_seq.most_common(3)}"
    assert sorted(s for b, s in per_seq if b == batch_id) == list(range(1, count + 1))
    keys = {s: k for b, s, k, _ in got if b == batch_id}
    assert all(keys[s] == f"k{s}" for s in keys), "each seq carries its own row"


@pytest.fixture
def journal(ws: Workspace) -> Any:
    j = Journal(ws, new_batch_id())
    yield j
    j.close(fold=False)  # no-op once the test closed it


# --- in one process ---------------------------------------------------------------------------


def test_rows_before_and_after_fold_behind_land_once(ws: Workspace, journal: Journal) -> None:
    bid = journal.batch_id
    first = journal.path
    assert first.name == f"{bid}.jsonl"
    for s in range(1, 6):
        log(journal, f"k{s}")
    journal.fold_behind()
    assert journal.path.name == f"{bid}-1.jsonl" and journal.pending == 0
    for s in range(6, 11):
        log(journal, f"k{s}")
    journal.fold_behind()
    assert journal.path.name == f"{bid}-2.jsonl"
    for s in range(11, 14):
        log(journal, f"k{s}")
    assert journal.pending == 3
    journal.close()
    assert_once(ws, bid, 13)
    assert segments(ws) == [], "close folds and removes every segment"
    assert fold_orphans(ws) == 0
    assert_once(ws, bid, 13)


def test_fold_then_fold_behind_then_fold_again(ws: Workspace, journal: Journal) -> None:
    bid = journal.batch_id
    log(journal, "k1")
    assert journal.fold(["k1"]) == {("k1", RCPT)}
    log(journal, "k2")
    fut = journal.fold_behind(["k1", "k2"])
    log(journal, "k3")
    assert journal.fold(["k3"]) == {("k3", RCPT)}, "fold waits for the fold behind"
    assert fut.done() and fut.result() == {("k1", RCPT), ("k2", RCPT)}
    log(journal, "k4")
    journal.close()
    assert_once(ws, bid, 4)


def test_a_fold_behind_answers_keys_folded_earlier(ws: Workspace, journal: Journal) -> None:
    log(journal, "k1")
    log(journal, "k2", status="failed")  # not delivered: not an answer
    assert journal.fold_behind(["k1", "k2"]).result(timeout=30) == {("k1", RCPT)}
    log(journal, "k3")
    log(journal, "k4", rcpt="bob@example.com")
    fut = journal.fold_behind(["k1", "k2", "k3", "k4", "k5", "k9"])
    log(journal, "k5")  # written after the fold was asked: not in its answer
    assert fut.result(timeout=30) == {("k1", RCPT), ("k3", RCPT), ("k4", "bob@example.com")}
    journal.close()
    assert sendlog.delivered(ws, ["k5"]) == {("k5", RCPT)}


def test_fold_orphans_leaves_a_live_journal_alone(ws: Workspace, journal: Journal) -> None:
    bid = journal.batch_id
    for s in range(1, 4):
        log(journal, f"k{s}")
    journal.fold_behind().result(timeout=30)
    for s in range(4, 7):
        log(journal, f"k{s}")
    behind = journal.fold_behind()  # maybe still folding while fold_orphans looks
    for s in range(7, 9):
        log(journal, f"k{s}")
    live = journal.path
    before = live.read_bytes()
    assert fold_orphans(ws) == 0, "every segment is its live batch's"
    behind.result(timeout=30)
    assert fold_orphans(ws) == 0
    assert live.read_bytes() == before, "the live segment is untouched"
    assert {s for b, s, _, _ in rows(ws) if b == bid} == set(range(1, 7))
    journal.close()
    assert_once(ws, bid, 8)


def test_a_torn_last_line_is_cut(ws: Workspace) -> None:
    j = Journal(ws, new_batch_id())
    for s in range(1, 4):
        log(j, f"k{s}")
    path = j.path
    j.close(fold=False)  # as if killed: the segment stays, unlocked
    with path.open("ab") as fh:  # a writer killed in the middle of its last row
        fh.write(b'{"k": "log", "batch_id": "' + j.batch_id.encode() + b'", "seq": 4, "stat')
    assert fold_orphans(ws) == 3
    assert_once(ws, j.batch_id, 3)
    assert segments(ws) == []


def test_fold_orphans_counts_the_rows_it_inserted_not_those_already_folded(
    ws: Workspace,
) -> None:
    j = Journal(ws, new_batch_id())
    for s in range(1, 4):
        log(j, f"k{s}")
    first = j.path
    copy = first.read_bytes()
    j.fold_behind().result(timeout=30)  # rows 1-3 folded ...
    first.write_bytes(copy)  # ... and their segment left on disk, as if killed before its unlink
    for s in range(4, 6):
        log(j, f"k{s}")
    j.close(fold=False)  # as if killed: rows 4-5 only in the journal
    assert fold_orphans(ws) == 2, "rows 1-3 were in the store already"
    assert_once(ws, j.batch_id, 5)
    assert segments(ws) == []
    assert fold_orphans(ws) == 0


def test_fold_orphans_beside_a_live_journal_breaks_neither(ws: Workspace) -> None:
    """``list_logs`` in another process (here: threads, flock is per open file) meanwhile."""
    j = Journal(ws, new_batch_id())
    raised: list[BaseException] = []
    stop = threading.Event()

    def hunter() -> None:
        while not stop.is_set():
            try:
                fold_orphans(ws)
            except Exception as exc:
                raised.append(exc)
                return

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: the windows are a few syscalls wide
    hunters = [threading.Thread(target=hunter) for _ in range(3)]
    seq = 0
    try:
        for t in hunters:
            t.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not raised:
            seq += 1
            log(j, f"k{seq}")
            j.fold_behind().result(timeout=30)
    except Exception as exc:
        raised.append(exc)
    finally:
        stop.set()
        for t in hunters:
            t.join()
        sys.setswitchinterval(interval)
    assert raised == [], [f"{type(e).__name__}: {e}" for e in raised]
    j.close()
    assert_once(ws, j.batch_id, seq)


def test_fold_orphans_leaves_a_new_segment_its_writer_holds(ws: Workspace) -> None:
    """A ``.new`` segment locked by its writer (about to rename it) is not touched."""
    journal_dir(ws).mkdir(exist_ok=True)
    making = journal_dir(ws) / f"{new_batch_id()}-1.new"
    fd = os.open(making, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert fold_orphans(ws) == 0
        assert making.exists()
    finally:
        os.close(fd)


def test_a_segment_taken_as_an_orphan_before_its_writer_locks_it_is_made_again(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fold_orphans`` coming between a segment's creation and its lock breaks nothing."""
    real = fcntl.flock
    came: list[int] = []

    def flock(fd: int, op: int) -> None:
        if not came and os.readlink(f"/proc/self/fd/{fd}").endswith(".new"):
            came.append(fd)
            assert fold_orphans(ws) == 0  # it takes the writer's new segment for a dead one's
        real(fd, op)

    monkeypatch.setattr(
        sendlog,
        "fcntl",
        SimpleNamespace(flock=flock, LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB),
    )
    j = Journal(ws, new_batch_id())
    assert came, "fold_orphans came in between"
    log(j, "k1")
    came.clear()  # again for the next segment
    j.fold_behind()
    assert came, "fold_orphans came in between"
    log(j, "k2")
    j.close()
    assert_once(ws, j.batch_id, 2)
    assert list(journal_dir(ws).iterdir()) == []


# --- a writer killed with SIGKILL ------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[3])
    from test_journal import log
    from sysmail_ops.records.sendlog import Journal
    from sysmail_ops.config.workspace import Workspace

    ws = Workspace.open(sys.argv[1])
    j = Journal(ws, sys.argv[2])
    seq = 0

    def rows(n):
        global seq
        for _ in range(n):
            seq += 1
            log(j, f"k{seq}")

    rows(5)
    j.fold_behind().result()  # segment 0: folded and removed
    rows(5)
    seg1 = j.path
    copy = seg1.read_bytes()
    j.fold_behind().result()  # segment 1: folded ...
    seg1.write_bytes(copy)  # ... but left on disk, as if killed before its unlink
    rows(5)
    j.fold_behind()  # segment 2: folding behind when the kill comes, or already folded
    rows(5)  # segment 3: never folded
    print("written", flush=True)
    time.sleep(120)
    """
)

STALLED = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[3])
    from test_journal import log
    from sysmail_ops.records.sendlog import Journal
    from sysmail_ops.config.workspace import Workspace

    ws = Workspace.open(sys.argv[1])
    print("open", flush=True)
    sys.stdin.readline()  # the test now holds the database: every fold behind waits
    j = Journal(ws, sys.argv[2])
    for seq in range(1, 37):
        log(j, f"k{seq}")
        if seq % 3 == 0:
            j.fold_behind()
    print("written", flush=True)
    time.sleep(120)
    """
)


def writer(ws: Workspace, script: str, batch_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, str(ws.home), batch_id, str(Path(__file__).parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


def expect(proc: subprocess.Popen[str], word: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != word:
        proc.kill()
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"writer said {line!r}, not {word!r}: {err}")


def test_a_writer_killed_after_fold_behind_leaves_orphans_folded_once(ws: Workspace) -> None:
    bid = new_batch_id()
    proc = writer(ws, WRITER, bid)
    expect(proc, "written")
    left = segments(ws)
    assert f"{bid}.jsonl" not in left, "segment 0 was folded and removed"
    assert {f"{bid}-1.jsonl", f"{bid}-3.jsonl"} <= set(left)
    fold_orphans(ws)  # folds the left-over segment 1 again, and nothing the writer holds
    assert f"{bid}-3.jsonl" in segments(ws) and f"{bid}-1.jsonl" not in segments(ws)
    got = rows(ws)  # once: the writer's fold of segment 2 may commit meanwhile
    assert {s for b, s, _, _ in got if b == bid} <= set(range(1, 16))
    assert_once(ws, bid, len(got), got)
    kill(proc)

    with (journal_dir(ws) / f"{bid}-3.jsonl").open("ab") as fh:  # torn by the kill
        fh.write(b'{"k": "log", "batch_id": "' + bid.encode() + b'", "seq": 21, "sta')
    fold_orphans(ws)
    assert_once(ws, bid, 20)
    assert segments(ws) == []
    assert fold_orphans(ws) == 0
    assert_once(ws, bid, 20)


def test_orphan_segments_fold_in_the_order_they_were_written(ws: Workspace) -> None:
    bid = new_batch_id()
    proc = writer(ws, STALLED, bid)
    try:
        expect(proc, "open")
        with ws.store.connect():  # DuckDB: one process at a time; the folds behind wait
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            expect(proc, "written")
            kill(proc)
    finally:
        if proc.poll() is None:
            kill(proc)
    assert len(segments(ws)) == 13, segments(ws)
    assert fold_orphans(ws) == 36
    assert_once(ws, bid, 36)
    assert [s for _, s, _, _ in rows(ws)] == list(range(1, 37)), (
        "send_log ids follow the order rows were written (list_logs shows newest first)"
    )


DIES_MAKING = textwrap.dedent(
    """
    import os, signal, sys
    from sysmail_ops.records import sendlog
    from sysmail_ops.config.workspace import Workspace

    def killed(src, dst):  # after the segment file is made and locked, before it is named
        os.kill(os.getpid(), signal.SIGKILL)

    sendlog.os.rename = killed
    sendlog.Journal(Workspace.open(sys.argv[1]), sys.argv[2])
    """
)


def test_an_empty_segment_left_by_a_writer_killed_while_making_it_is_removed(
    ws: Workspace,
) -> None:
    bid = new_batch_id()
    proc = writer(ws, DIES_MAKING, bid)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    left = journal_dir(ws) / f"{bid}.new"
    assert [p.name for p in journal_dir(ws).iterdir()] == [left.name]
    assert left.stat().st_size == 0
    assert fold_orphans(ws) == 0
    assert list(journal_dir(ws).iterdir()) == [], "the empty segment is removed"
