"""JupyterLab in headless Chromium: the Email Management notebook run in a real JupyterLab
on the .venv's kernel; a password typed into the form (then saved through the form) never
reaches the notebook file saved after it. A screenshot is kept as a test artifact."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import field, free_port, wait_until
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from smtp_testserver import GOOD_LOGIN, SMTPTestServer
from system_servers import artifact_dir

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace

ROOT = Path(__file__).parents[2]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def jupyterlab(ws: Workspace, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """JupyterLab on a copy of the notebooks, the .venv's kernel, the test workspace."""
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "01_email_management.ipynb", root)
    port, token = free_port(), uuid.uuid4().hex
    env = dict(
        os.environ,
        SYSMAIL_HOME=str(ws.home),
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),  # no user settings
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
    )
    log = (tmp_path / "lab.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--allow-root"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "lab.log").read_text()
        try:
            with urllib.request.urlopen(f"{base}/api?token={token}", timeout=2) as r:  # noqa: S310
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_until(up, 90, "JupyterLab to answer")
        yield f"{base}/lab/tree/01_email_management.ipynb?token={token}", root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def save_notebook(page: Any) -> None:
    """Save through the notebook toolbar's save button (a key press in a widget's input box
    stays in the box)."""
    page.locator("[data-command='docmanager:save']").first.click()


@pytest.mark.slow
def test_saved_notebook_holds_no_password(
    jupyterlab: tuple[str, Path], ws: Workspace, smtp_server: SMTPTestServer, page: Any
) -> None:
    url, root = jupyterlab
    saved = root / "01_email_management.ipynb"
    typed = "Typed-Pa55word-" + uuid.uuid4().hex[:8]
    page.goto(url, timeout=120_000)
    page.wait_for_selector(".jp-Notebook", timeout=120_000)
    # a fresh JupyterLab may ask which kernel to start: the .venv's python3, as proposed
    select = page.locator(".jp-Dialog button:has-text('Select')")
    with contextlib.suppress(PlaywrightTimeout):  # no dialog: the kernel started by itself
        select.click(timeout=10_000)
    page.locator(".lm-MenuBar-itemLabel:text-is('Run')").click()
    page.locator(".lm-Menu-itemLabel:text-is('Run All Cells')").click()
    page.wait_for_selector("text=0 of 10 used", timeout=120_000)

    # typed, not yet saved in the form: the notebook saved now must not hold it
    field(page, "Password").locator("input").fill(typed)
    before = saved.stat().st_mtime_ns
    save_notebook(page)
    wait_until(lambda: saved.stat().st_mtime_ns != before, 30, "the notebook to be saved")
    text = saved.read_text()
    assert WIDGET_VIEW in text  # the form's output is in the file: the search means something
    assert typed not in text

    # filled and saved in the form: the store has it, the page and the file do not
    field(page, "Name").locator("input").fill("lab")
    field(page, "Email account").locator("input").fill(GOOD_LOGIN)
    field(page, "SMTP server").locator("input").fill(smtp_server.host)
    port = field(page, "SMTP port").locator("input")
    port.fill(str(smtp_server.port))
    port.press("Tab")
    page.locator("button:has-text('Save')").first.click()
    page.wait_for_selector("text=bound lab", timeout=60_000)
    assert accounts.password_for(ws, accounts.get_account(ws, "lab")).reveal() == typed
    assert field(page, "Password").locator("input").input_value() == ""
    before = saved.stat().st_mtime_ns
    save_notebook(page)
    wait_until(lambda: saved.stat().st_mtime_ns != before, 30, "the notebook to be saved again")
    text = saved.read_text()
    assert typed not in text and typed not in page.content()
    page.screenshot(path=str(artifact_dir() / "jupyterlab_email_management.png"))
