"""Take the README's Admin Console screenshots: each form served by `sysmail-ops console`,
opened in headless Chromium (Debian's /usr/bin/chromium through Playwright).

    .venv/bin/sysmail-ops --home .demo demo        # a workspace with data to show
    .venv/bin/python docs/screenshots.py .demo     # writes docs/console_*.png
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

HERE = Path(__file__).parent
PAGES = {
    "console_email_management.png": ("01_email_management.ipynb", "text=of 10 used", None),
    "console_object_templates.png": ("02_object_templates.ipynb", "label:text-is('Sample record')",
                                     "case-update"),
    "console_report_subscriptions.png": ("03_report_subscriptions.ipynb", "text=Next runs",
                                         "weekly-pipeline"),
}  # fmt: skip
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def main(home: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sysmail_ops", "--home", home, "console", "--port", str(port)],
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/", timeout=2)  # noqa: S310 - loopback
                break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
            browser = p.chromium.launch_persistent_context(
                profile, executable_path="/usr/bin/chromium", headless=True, args=ARGS,
                viewport={"width": 1200, "height": 1900},
            )  # fmt: skip
            for png, (nb, ready, pick) in PAGES.items():
                page = browser.new_page()
                page.goto(f"{base}/voila/render/{nb}", timeout=120_000)
                page.wait_for_selector(ready, timeout=120_000)
                if pick:
                    options = page.locator("select").first.locator("option").all_text_contents()
                    if pick in options:
                        page.locator("select").first.select_option(pick)
                        page.wait_for_timeout(1500)
                page.screenshot(path=str(HERE / png), full_page=True)
                print("wrote", HERE / png)
                page.close()
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".demo")
