"""Private files: everything the toolkit writes in a workspace is its owner's alone.

The workspace holds addresses, survey comments, event records and the secret
key, so its folders are 0700 and its files 0600, whatever the process umask.
Two ways get there, one per kind of writer:

- Our own code creates with an explicit mode (``make_dirs``, ``write_file``,
  ``open_append``): exact, thread-safe, and it leaves the process alone.
- Code that takes no mode (DuckDB making the database, its WAL and spill
  folder; papermill writing a run's notebook; a report kernel writing into its
  run folder) runs inside ``private_umask()``, which narrows the process umask
  only while such code is at work, and a kernel started inside keeps it.

The umask is not narrowed for good when a workspace is opened: a notebook
kernel that opens one would then make every file of its user 0600 too (a CSV
saved next to the notebook, a ``%pip install`` into a shared environment).

``tighten`` brings a workspace made by an older version (or copied under
another umask) to the same modes; ``sysmail-ops init`` runs it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
PRIVATE_UMASK = 0o077

_umask_lock = threading.Lock()
_umask_depth = 0
_umask_saved = 0
_umask_ours = 0


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Within the block, what any code of this process creates is the owner's alone.

    For writers that take no mode. The umask belongs to the process, so nested
    and concurrent blocks (threads) share one narrowing, undone when the last
    one leaves; a umask another part of the program set meanwhile is kept.
    """
    global _umask_depth, _umask_saved, _umask_ours
    with _umask_lock:
        if _umask_depth == 0:
            _umask_saved = os.umask(PRIVATE_UMASK)
            _umask_ours = _umask_saved | PRIVATE_UMASK
            os.umask(_umask_ours)
        _umask_depth += 1
    try:
        yield
    finally:
        with _umask_lock:
            _umask_depth -= 1
            if _umask_depth == 0:
                now = os.umask(_umask_saved)
                if now != _umask_ours:  # someone set their own since: theirs stands
                    os.umask(now)


def make_dirs(path: Path) -> None:
    """``path`` and its missing parents, each made 0700 (an existing folder is left as it is)."""
    missing: list[Path] = []
    p = Path(path)
    while not p.is_dir():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise


def write_file(path: Path, data: bytes) -> None:
    """Write ``path`` whole (0600): a temporary file renamed over it, never a torn one."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def open_append(path: Path) -> int:
    """A descriptor appending to ``path``, made 0600 if it is new."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)


@dataclass
class Tightened:
    """What ``tighten`` changed: counts, and the paths it could not change (with why)."""

    files: int = 0
    folders: int = 0
    failed: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """One line per kind of change, for the user (none when nothing changed)."""
        out = []
        if self.files:
            out.append(f"tightened {_count(self.files, 'file')} to 0600")
        if self.folders:
            out.append(f"tightened {_count(self.folders, 'folder')} to 0700")
        if self.failed:
            out.append(
                f"could not tighten {_count(len(self.failed), 'path')}: {self.failed[0]}"
                + (" (and more)" if len(self.failed) > 1 else "")
            )
        return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def tighten(root: Path) -> Tightened:
    """Take group and other permissions off ``root``, its folders and files.

    Folders become 0700 and files 0600 (the owner's own rights are never widened);
    symbolic links are not followed, so nothing outside ``root`` changes.
    """
    done = Tightened()
    if not root.is_dir():
        return done

    def fix(path: str, st: os.stat_result) -> None:
        mode = stat.S_IMODE(st.st_mode)
        if not mode & PRIVATE_UMASK:
            return  # the owner's alone already
        if stat.S_ISDIR(st.st_mode):
            new, kind = mode & DIR_MODE, "folders"
        elif stat.S_ISREG(st.st_mode):
            new, kind = mode & FILE_MODE, "files"
        else:
            return
        try:
            os.chmod(path, new, follow_symlinks=False)
        except OSError as exc:
            done.failed.append(f"{path}: {exc.strerror}")
            return
        setattr(done, kind, getattr(done, kind) + 1)

    fix(str(root), os.lstat(root))
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            try:
                fix(path, os.lstat(path))
            except FileNotFoundError:
                continue  # removed while we walked
    return done
