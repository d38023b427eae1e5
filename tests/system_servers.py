"""Debian servers the tests start themselves (Chromium, Dovecot): find them, or skip.

On a developer's machine a missing server skips its tests with a reason naming the
Debian package. Under ``CI=true`` (`.ci/run` installs `.ci/debian-packages`) a missing
server is a failure: a green CI run must have run those tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"

# What the closed network here needs (see ../shared/recipes/jupyterlab-in-chromium.md).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_program(program: str, package: str) -> str:
    """The program's path; skip (or fail under CI=true) with the package to install."""
    path = program if os.path.isabs(program) and os.access(program, os.X_OK) else None
    path = path or shutil.which(program)
    if path:
        return path
    reason = (
        f"{program} not found: install Debian's {package} "
        f"(`sudo apt-get install {package}`, or `make system-deps` as root)"
    )
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    return require_program(CHROMIUM, "chromium")


@pytest.fixture(scope="session")
def browser(chromium_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium (Debian's) driven by Playwright, with a fresh profile.

    Playwright's own browser download is never used: the machines have no network.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a dev dependency
        if in_ci():
            pytest.fail("CI=true and the playwright package is missing", pytrace=False)
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A new tab in the session's browser, closed after the test."""
    tab = browser.new_page()
    try:
        yield tab
    finally:
        tab.close()


def artifact_dir() -> Path:
    """Where browser screenshots go: $TEST_ARTIFACTS or tests/artifacts (git-ignored)."""
    root = Path(os.environ.get("TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")
    root.mkdir(parents=True, exist_ok=True)
    return root
