"""Checks for a private workspace: folders 0700, files 0600, whatever the umask."""

from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The common default umask (022): without care, files come out 0644 and folders 0755."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def not_private(root: Path) -> list[str]:
    """Every folder under ``root`` (itself included) not 0700, every file not 0600."""
    wrong = []
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode) and mode != 0o700:
            wrong.append(f"{oct(mode)} {path}/")
        elif stat.S_ISREG(st.st_mode) and mode != 0o600:
            wrong.append(f"{oct(mode)} {path}")
    return wrong


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def drop_dac_override() -> None:
    """``preexec_fn``: as root, a child that honours file modes (else root reads a 0000 file).

    Drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so the
    program the child executes does not get them; a no-op for another user.
    """
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
