"""Workspace fixtures: a real DuckDB file in tmp_path, never the user's own workspace."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from sysmail_ops.config.secrets import ENV_KEY
from sysmail_ops.config.workspace import ENV_HOME, Workspace


@pytest.fixture(autouse=True)
def _isolated_environment(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """No test may touch the real per-user workspace or inherit a key from the shell."""
    monkeypatch.setenv(ENV_HOME, str(tmp_path_factory.mktemp("default-home")))
    monkeypatch.delenv(ENV_KEY, raising=False)
    monkeypatch.setenv("SYSMAIL_LOCK_WAIT", "30")
    yield


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """`serve` run in-process configures the root logger on the test's captured stderr; a
    later test would log into that closed stream ('--- Logging error ---')."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for h in root.handlers[:]:
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A freshly initialised workspace."""
    workspace, _ = Workspace.init(tmp_path / "ws")
    return workspace
