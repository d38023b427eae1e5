"""`sysmail-ops console` in a real browser: Voilà serves the Email Management notebook, headless
Chromium fills the add form and clicks Save, the store and the table show the account; the
received-archiving switch reaches the store too. A screenshot is kept as a test artifact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import field, free_port, wait_until
from smtp_testserver import GOOD_LOGIN, GOOD_PASSWORD, SMTPTestServer
from system_servers import artifact_dir

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace

pytestmark = pytest.mark.slow


@pytest.fixture
def console(ws: Workspace, tmp_path: Path) -> Iterator[str]:
    """The console on a free loopback port over ``ws``; its base URL."""
    port = free_port()
    log = (tmp_path / "console.log").open("wb")
    env = dict(os.environ, SYSMAIL_HOME=str(ws.home))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sysmail_ops", "--home", str(ws.home), "console", "--port",
         str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "console.log").read_text()
        try:
            with urllib.request.urlopen(base + "/", timeout=2) as r:  # noqa: S310 - loopback
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_until(up, 60, "the console to answer")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # the console stops Voilà and its kernels
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_email_management_in_the_browser(
    console: str, ws: Workspace, smtp_server: SMTPTestServer, page: Any
) -> None:
    page.goto(f"{console}/voila/render/01_email_management.ipynb", timeout=120_000)
    page.wait_for_selector("text=0 of 10 used", timeout=120_000)
    assert "home = None" not in page.content()  # code cells are stripped

    field(page, "Name").locator("input").fill("browser")
    field(page, "Kind").locator("select").select_option(label="Workflow notification")
    field(page, "Email account").locator("input").fill(GOOD_LOGIN)
    field(page, "Password").locator("input").fill(GOOD_PASSWORD)
    field(page, "SMTP server").locator("input").fill(smtp_server.host)
    field(page, "Security").locator("select").select_option(smtp_server.security)
    port = field(page, "SMTP port").locator("input")
    port.fill(str(smtp_server.port))
    port.press("Enter")
    page.locator(".jupyter-widget-Accordion, .lm-AccordionPanel, .widget-accordion").first.locator(
        "text=More settings"
    ).click()
    ca = field(page, "CA bundle (PEM)").locator("input")
    ca.fill(str(smtp_server.ca_path))
    ca.press("Tab")
    page.locator("button:has-text('Save')").click()
    page.wait_for_selector("text=bound browser", timeout=60_000)

    a = accounts.get_account(ws, "browser")
    assert a.kind == "workflow_notification" and a.smtp_port == smtp_server.port
    assert accounts.password_for(ws, a).reveal() == GOOD_PASSWORD
    assert not a.received_archiving
    table = page.locator("table.sysmail-accounts")
    assert "browser" in table.inner_text() and GOOD_LOGIN in table.inner_text()
    assert page.locator("b:text-is('1 of 10 used')").count() == 1
    assert field(page, "Password").locator("input").input_value() == ""

    page.locator(
        "label:has-text('Received Email Archiving') input, "
        ".widget-checkbox:has-text('Received Email Archiving') input"
    ).first.check()
    wait_until(lambda: accounts.get_account(ws, "browser").received_archiving, 30,
               "received archiving on in the store")  # fmt: skip
    page.wait_for_selector("text=Received Email Archiving on", timeout=30_000)
    page.screenshot(path=str(artifact_dir() / "console_email_management.png"), full_page=True)
    assert GOOD_PASSWORD not in page.content()
