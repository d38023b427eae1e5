"""Files a workspace keeps in its folders (report runs, previews): how many, how big, and
dropping those older than a date (retention, ``sysmail-ops prune``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass
class Freed:
    """Files dropped (or, for a dry run, that would be) and their bytes."""

    files: int = 0
    bytes: int = 0

    def __add__(self, other: Freed) -> Freed:
        return Freed(self.files + other.files, self.bytes + other.bytes)

    def __str__(self) -> str:
        return f"{self.files:,} file(s), {size_text(self.bytes)}"


def size_text(n: int) -> str:
    """Bytes as people read them: ``812 bytes``, ``3.4 MB``."""
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n:,} bytes"


def usage(folder: Path) -> Freed:
    """The regular files under ``folder`` and their bytes (none if it does not exist)."""
    total = Freed()
    for path in _files(folder):
        try:
            total += Freed(1, path.lstat().st_size)
        except FileNotFoundError:
            continue
    return total


def prune_files(folder: Path, before: datetime, *, dry_run: bool = False) -> Freed:
    """Delete the files under ``folder`` last written before ``before`` (naive: UTC), then
    the folders left empty; ``dry_run`` only counts them. Symbolic links are not followed:
    a link is a file here, and what it points to stays."""
    cutoff = (before if before.tzinfo else before.replace(tzinfo=UTC)).timestamp()
    freed = Freed()
    for path in _files(folder):
        try:
            info = path.lstat()
            if info.st_mtime >= cutoff:
                continue
            if not dry_run:
                path.unlink()
        except FileNotFoundError:  # gone meanwhile (another prune)
            continue
        freed += Freed(1, info.st_size)
    if not dry_run:
        _remove_empty_folders(folder)
    return freed


def _files(folder: Path) -> list[Path]:
    found: list[Path] = []
    for root, _dirs, names in os.walk(folder):  # does not follow links to folders
        found.extend(Path(root, n) for n in names)
    return found


def _remove_empty_folders(folder: Path) -> None:
    for root, _dirs, _names in os.walk(folder, topdown=False):
        path = Path(root)
        if path == folder:
            continue
        try:
            path.rmdir()  # only if empty
        except OSError:
            continue
