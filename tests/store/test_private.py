"""Private files: what the toolkit writes in a workspace is for its owner only, any umask."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from private_modes import loose_umask, mode_of, not_private

from sysmail_ops.store import private
from sysmail_ops.store.database import Store

__all__ = ["loose_umask"]


def test_folders_and_files_are_private_under_umask_022(loose_umask: None, tmp_path: Path) -> None:
    root = tmp_path / "ws"
    private.make_dirs(root / "archive" / "sent" / "2026" / "11")
    private.make_dirs(root / "archive" / "sent" / "2026" / "11")  # exists: fine
    private.write_file(root / "archive" / "a.eml", b"one")
    private.write_file(root / "archive" / "a.eml", b"two")  # replaced whole
    fd = private.open_append(root / "index.jsonl")
    os.write(fd, b"{}\n")
    os.close(fd)
    assert (root / "archive" / "a.eml").read_bytes() == b"two"
    assert not_private(root) == []
    assert sorted(p.name for p in (root / "archive").iterdir()) == ["a.eml", "sent"]


def test_duckdb_files_are_private_while_a_connection_is_open(
    loose_umask: None, tmp_path: Path
) -> None:
    store = Store(tmp_path / "ws" / "sysmail.duckdb")
    private.make_dirs(store.path.parent)
    with store.connect() as con:  # each statement commits: the WAL is there until the close
        con.execute("CREATE TABLE t AS SELECT range AS x FROM range(1000)")
        con.execute("INSERT INTO t VALUES (1)")
        wal = store.path.with_name(store.path.name + ".wal")
        assert wal.exists()
        assert not_private(store.path.parent) == []
    assert not_private(store.path.parent) == []
    # the process keeps its own umask for everything else
    made = tmp_path / "elsewhere.txt"
    made.write_text("x")
    assert mode_of(made) == 0o644


def test_the_private_umask_is_held_while_any_thread_needs_it(loose_umask: None) -> None:
    inside = threading.Event()
    leave = threading.Event()

    def hold() -> None:
        with private.private_umask():
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    inside.wait(10)
    with private.private_umask():
        pass  # leaving this one must not restore 022 while the thread still holds it
    current = os.umask(0o077)
    os.umask(current)
    leave.set()
    t.join()
    assert current & 0o077 == 0o077
    current = os.umask(0o022)
    assert current == 0o022


def test_tighten_counts_what_it_changed_and_follows_no_link(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    (root / "runs" / "r1").mkdir(parents=True, mode=0o755)
    root.chmod(0o755)
    (root / "runs").chmod(0o775)
    (root / "runs" / "r1").chmod(0o700)
    for name, mode in [("a", 0o644), ("b", 0o600), ("c", 0o640)]:
        (root / "runs" / name).write_text(name)
        (root / "runs" / name).chmod(mode)
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    outside.chmod(0o644)
    (root / "link").symlink_to(outside)
    done = private.tighten(root)
    assert (done.files, done.folders, done.failed) == (2, 2, [])
    assert not_private(root) == []
    assert mode_of(outside) == 0o644
    again = private.tighten(root)
    assert (again.files, again.folders) == (0, 0)
