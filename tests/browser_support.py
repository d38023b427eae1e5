"""Helpers for the tests that drive the Admin Console's forms in headless Chromium (Voila's
console and JupyterLab): a free loopback port, a poll with a deadline, a widget's field."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it is truthy (its value is returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def field(page: Any, label: str) -> Any:
    """The ipywidgets row (label + input) whose label is exactly ``label``."""
    return page.locator(".widget-inline-hbox", has=page.locator(f"label:text-is('{label}')"))
