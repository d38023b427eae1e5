"""store.files: what a workspace folder holds, and dropping files older than a date."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sysmail_ops.store.files import Freed, prune_files, size_text, usage


def write(path: Path, size: int, days_old: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    then = time.time() - days_old * 86400
    os.utime(path, (then, then))
    return path


def test_files_older_than_the_date_go_with_their_emptied_folders(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    write(root / "a" / "20250101T0800Z" / "01-x" / "report.ipynb", 1000, 400)
    write(root / "a" / "20250101T0800Z" / "01-x" / "report.html", 500, 400)
    keep = write(root / "a" / "20260101T0800Z" / "01-x" / "report.ipynb", 700, 1)
    outside = write(tmp_path / "elsewhere.txt", 10, 400)
    (root / "b").symlink_to(tmp_path)  # a link to a folder is not followed
    before = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=365)
    assert usage(root) == Freed(3, 2200)
    assert prune_files(root, before, dry_run=True) == Freed(2, 1500)
    assert usage(root) == Freed(3, 2200)  # a dry run deletes nothing
    assert prune_files(root, before) == Freed(2, 1500)
    assert sorted(p for p in root.rglob("*") if p.is_file()) == [keep]
    assert not (root / "a" / "20250101T0800Z").exists()
    assert outside.exists() and (root / "b").is_symlink()
    assert prune_files(tmp_path / "missing", before) == Freed()


def test_sizes_read_as_people_say_them() -> None:
    assert size_text(812) == "812 bytes"
    assert size_text(3_400_000) == "3.4 MB"
    assert str(Freed(2, 1500)) == "2 file(s), 1.5 kB"
