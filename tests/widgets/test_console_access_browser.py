"""Who may open the Admin Console, with the real console (Voilà) and headless Chromium:
with a console password every page and API refuses a request without a login and nothing
changes; the login form needs its XSRF token; a logged-in browser saves a form, with an
HttpOnly, SameSite=Lax, expiring cookie; the audit trail records that change as the
console's, next to a CLI and a Python change, and never a secret; a token console lets in
only the token; a read-only console serves no changing page and its kernels know it."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import websocket  # websocket-client, a jupyter_server dependency
from browser_support import field, free_port, wait_until
from smtp_testserver import GOOD_LOGIN, GOOD_PASSWORD, SMTPTestServer
from system_servers import artifact_dir

from sysmail_ops.cli import main
from sysmail_ops.config import accounts
from sysmail_ops.config import console as console_auth
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.store import audit

pytestmark = pytest.mark.slow

CONSOLE_PASSWORD = "Browser-Console-Login-9"


class Console:
    """A running `sysmail-ops console`: its port, first printed URL and plain HTTP requests."""

    def __init__(self, port: int, log: Path):
        self.port, self.log = port, log
        self.base = f"http://127.0.0.1:{port}"

    @property
    def printed_url(self) -> str:
        m = re.search(r"Admin Console for .*?: (\S+) \(Ctrl-C", self.log.read_text())
        assert m, self.log.read_text()
        return m.group(1)

    def voila_cmdline(self) -> str:
        """The command line of the Voila process serving this port (what `ps` shows)."""
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = cmdline.read_bytes().split(b"\0")
            except OSError:
                continue
            text = b" ".join(argv).decode(errors="replace")
            if "voila" in text and f"--port={self.port}" in text:
                return text
        raise AssertionError(f"no Voila process on port {self.port}")

    def request(
        self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        """One request, redirects not followed: (status, headers, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
        finally:
            conn.close()


@contextmanager
def running_console(ws: Workspace, tmp_path: Path, *options: str) -> Iterator[Console]:
    port = free_port()
    log_path = tmp_path / f"console-{port}.log"
    log = log_path.open("wb")
    env = dict(os.environ, SYSMAIL_HOME=str(ws.home))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sysmail_ops", "--home", str(ws.home), "console",
         "--port", str(port), *options],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    console = Console(port, log_path)

    def up() -> bool:
        assert proc.poll() is None, log_path.read_text()
        try:
            console.request("GET", "/voila/static/voila.js")
        except OSError:
            return False
        return True

    try:
        wait_until(up, 60, "the console to answer")
        yield console
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def websocket_status(url: str, origin: str, cookie: str | None) -> int:
    """101 when the websocket opens with this Origin and cookie, else the refusal's status."""
    try:
        conn = websocket.create_connection(url, origin=origin, cookie=cookie, timeout=30)
    except websocket.WebSocketBadStatusException as exc:
        return int(exc.status_code)
    conn.close()
    return 101


def audit_text(ws: Workspace) -> str:
    with ws.store.connect() as con:
        return repr(con.execute("SELECT * FROM audit").fetchall())


def test_password_console_refuses_without_login_and_a_logged_in_browser_saves(
    ws: Workspace, smtp_server: SMTPTestServer, page: Any, tmp_path: Path
) -> None:
    console_auth.set_password(ws, CONSOLE_PASSWORD)
    with running_console(ws, tmp_path) as console:
        assert "login: password" in console.log.read_text()
        hashed = console_auth.password_hash(ws)
        assert hashed and hashed not in console.voila_cmdline()
        # without a login: every page is a redirect to the login form, every API a refusal
        render = "/voila/render/01_email_management.ipynb"
        status, headers, _ = console.request("GET", render)
        assert status == 302 and headers["location"].startswith("/login?next=")
        status, headers, _ = console.request("GET", "/")
        assert status in (302, 403), status
        kernel = "00000000-0000-0000-0000-000000000000"
        assert console.request("GET", f"/api/kernels/{kernel}")[0] == 403
        assert console.request("POST", f"/voila/api/shutdown/{kernel}", body="")[0] == 403

        # the login form: without its XSRF token a POST is refused; a wrong password is 401
        status, headers, form = console.request("GET", "/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form)
        assert status == 200 and xsrf
        cookie = headers["set-cookie"].split(";")[0]
        assert "SameSite=Lax" in headers["set-cookie"]
        login = {"Content-Type": "application/x-www-form-urlencoded"}
        body = urllib.parse.urlencode({"password": CONSOLE_PASSWORD})
        assert console.request("POST", "/login", body, {**login, "Cookie": cookie})[0] == 403
        wrong = urllib.parse.urlencode({"password": "not-it", "_xsrf": xsrf.group(1)})
        assert console.request("POST", "/login", wrong, {**login, "Cookie": cookie})[0] == 401
        assert accounts.list_accounts(ws) == []

        # a real browser: the login page, then the Email Management form saves an account
        page.goto(console.base + render, timeout=120_000)
        page.wait_for_url(re.compile(r".*/login.*"))
        page.fill("input[name=password]", CONSOLE_PASSWORD)
        page.locator("button[type=submit], input[type=submit]").first.click()
        page.wait_for_selector("text=0 of 10 used", timeout=120_000)
        cookie_name = f"username-127-0-0-1-{console.port}"
        (login_cookie,) = [c for c in page.context.cookies() if c["name"] == cookie_name]
        assert login_cookie["httpOnly"] and login_cookie["sameSite"] == "Lax"
        assert not login_cookie["secure"]  # plain http on loopback; --behind-https sets it
        assert 11 * 3600 < login_cookie["expires"] - time.time() <= 12 * 3600  # 12 h session

        field(page, "Name").locator("input").fill("browser")
        field(page, "Kind").locator("select").select_option(label="Workflow notification")
        field(page, "Email account").locator("input").fill(GOOD_LOGIN)
        field(page, "Password").locator("input").fill(GOOD_PASSWORD)
        field(page, "SMTP server").locator("input").fill(smtp_server.host)
        field(page, "Security").locator("select").select_option(smtp_server.security)
        port = field(page, "SMTP port").locator("input")
        port.fill(str(smtp_server.port))
        port.press("Enter")
        page.locator("button:has-text('Save')").click()
        page.wait_for_selector("text=bound browser", timeout=60_000)
        page.screenshot(path=str(artifact_dir() / "console_login_saved.png"), full_page=True)

        # the forms talk over the kernel's websocket: only with the login, only from the page
        kernel_id = re.search(r'"kernelId": *"([0-9a-f-]{36})"', page.content())
        assert kernel_id
        channel = f"ws://127.0.0.1:{console.port}/api/kernels/{kernel_id.group(1)}/channels"
        session = f"{cookie_name}={login_cookie['value']}"
        assert websocket_status(channel, console.base, None) == 403
        assert websocket_status(channel, "https://elsewhere.example.com", session) == 403
        assert websocket_status(channel, console.base, session) == 101

    assert accounts.get_account(ws, "browser").smtp_port == smtp_server.port
    # the same workspace changed from the command line and from Python
    assert main(["--home", str(ws.home), "settings", "set", "survey_quiet_days", "9"]) == 0
    accounts.set_archiving(ws, "browser", sent=True)

    entries = audit.list_entries(ws.store)
    by_source: dict[str, audit.Entry] = {}
    for e in entries:  # newest first: the newest change of each source
        by_source.setdefault(e.source, e)
    assert set(by_source) == {"console", "cli", "python"}
    console_change = by_source["console"]
    assert (console_change.object_name, console_change.action) == ("browser", "add")
    assert re.fullmatch(r"console session [0-9a-f]{8} from 127\.0\.0\.1", console_change.actor)
    assert console_change.summary == "password set"
    assert by_source["cli"].object_name == "survey_quiet_days"
    assert by_source["python"].summary == "sent_archiving: off -> on"
    text = audit_text(ws)
    assert GOOD_PASSWORD not in text and CONSOLE_PASSWORD not in text


def test_token_console_lets_in_only_the_token(ws: Workspace, tmp_path: Path) -> None:
    with running_console(ws, tmp_path, "--token") as console:
        url = console.printed_url
        token = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["token"][0]
        assert len(token) >= 40 and "login: token" in console.log.read_text()
        voila = console.voila_cmdline()
        assert "-m voila" in voila and token not in voila  # not visible to `ps`
        render = "/voila/render/06_audit.ipynb"
        status, headers, _ = console.request("GET", render)
        assert status == 302 and headers["location"].startswith("/login")
        assert console.request("GET", render + "?token=" + "x" * len(token))[0] == 302
        status, headers, _ = console.request("GET", f"{render}?token={token}")
        assert status == 200 and "HttpOnly" in headers.get("set-cookie", "")
    assert console.log.read_text().count(token) == 1  # printed once, by us


def test_read_only_console_serves_no_changing_page_and_its_kernels_know(
    ws: Workspace, page: Any, tmp_path: Path
) -> None:
    accounts.add_account(
        ws, "service", from_address="service@example.com", smtp_host="smtp.example.com"
    )
    with running_console(ws, tmp_path, "--read-only") as console:
        assert "read-only" in console.log.read_text()
        assert console.printed_url.endswith("/voila/render/04_sending_log_and_analytics.ipynb")
        for name in (
            "01_email_management.ipynb",
            "02_object_templates.ipynb",
            "03_report_subscriptions.ipynb",
        ):
            assert console.request("GET", f"/voila/render/{name}")[0] == 404, name
        status, _, listing = console.request("GET", "/voila/api/contents/")
        assert status == 200 and "06_audit.ipynb" in listing
        assert "01_email_management" not in listing
        # the viewing pages run whole in a read-only kernel: reading refuses nothing
        for name in ("04_sending_log_and_analytics.ipynb", "05_archive.ipynb"):
            assert name in listing
            status, _, rendered = console.request("GET", f"/voila/render/{name}")
            assert status == 200 and "ReadOnlyError" not in rendered, name
            assert "error when executing cell" not in rendered, name  # Voila's hidden traceback
            assert "this console is read-only" not in rendered, name  # no refusal line

        page.goto(f"{console.base}/voila/render/06_audit.ipynb", timeout=120_000)
        page.wait_for_selector("text=Read-only console", timeout=120_000)
        table = page.locator("table.sysmail-audit").inner_text()
        assert "account service" in table and "add" in table
        assert page.locator("button:has-text('Save')").count() == 0
        page.screenshot(path=str(artifact_dir() / "console_read_only_audit.png"), full_page=True)
    assert [a.name for a in accounts.list_accounts(ws)] == ["service"]


def test_behind_https_the_cookies_are_secure(ws: Workspace, tmp_path: Path) -> None:
    console_auth.set_password(ws, CONSOLE_PASSWORD)
    with running_console(ws, tmp_path, "--behind-https", "--session-hours", "2") as console:
        status, headers, form = console.request("GET", "/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form)
        assert status == 200 and xsrf
        xsrf_cookie = headers["set-cookie"]
        assert "Secure" in xsrf_cookie and "SameSite=Lax" in xsrf_cookie
        body = urllib.parse.urlencode({"password": CONSOLE_PASSWORD, "_xsrf": xsrf.group(1)})
        status, headers, _ = console.request(
            "POST",
            "/login",
            body,
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": xsrf_cookie.split(";")[0],
            },
        )
        assert status == 302
        login_cookie = headers["set-cookie"]
        for attribute in ("Secure", "HttpOnly", "SameSite=Lax"):
            assert attribute in login_cookie, login_cookie
        expires = re.search(r"expires=([^;]+)", login_cookie)
        assert expires
        left = parsedate_to_datetime(expires.group(1)).timestamp() - time.time()
        assert 1.5 * 3600 < left <= 2 * 3600  # --session-hours 2


def test_a_session_expires_on_the_server_too(ws: Workspace, tmp_path: Path) -> None:
    """The server refuses a login cookie older than --session-hours (0.01 h = 36 s here),
    even from a client that keeps sending it."""
    console_auth.set_password(ws, CONSOLE_PASSWORD)
    with running_console(ws, tmp_path, "--session-hours", "0.01") as console:
        _, headers, form = console.request("GET", "/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form)
        assert xsrf
        xsrf_cookie = headers["set-cookie"].split(";")[0]
        body = urllib.parse.urlencode({"password": CONSOLE_PASSWORD, "_xsrf": xsrf.group(1)})
        form_headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": xsrf_cookie}
        status, headers, _ = console.request("POST", "/login", body, form_headers)
        assert status == 302
        logged_in = time.monotonic()
        session = {"Cookie": headers["set-cookie"].split(";")[0]}
        assert console.request("GET", "/voila/api/contents/", headers=session)[0] == 200
        time.sleep(max(0.0, 40 - (time.monotonic() - logged_in)))
        assert console.request("GET", "/voila/api/contents/", headers=session)[0] == 403
        status, headers, _ = console.request("GET", "/voila/render/06_audit.ipynb", headers=session)
        assert status == 302 and headers["location"].startswith("/login")


def test_a_loopback_console_without_login_audits_its_changes_as_such(
    ws: Workspace, page: Any, tmp_path: Path
) -> None:
    accounts.add_account(
        ws,
        "notices",
        kind="workflow_notification",
        from_address="notices@example.com",
        smtp_host="smtp.example.com",
    )
    with running_console(ws, tmp_path) as console:
        assert "login: none" in console.log.read_text()
        page.goto(f"{console.base}/voila/render/01_email_management.ipynb", timeout=120_000)
        page.wait_for_selector("text=1 of 10 used", timeout=120_000)
        field(page, "System email").locator("select").select_option("notices")
        name = field(page, "Name").locator("input")
        wait_until(lambda: name.input_value() == "notices", 30, "the form to load notices")
        page.locator(
            "label:has-text('Received Email Archiving') input, "
            ".widget-checkbox:has-text('Received Email Archiving') input"
        ).first.check()
        wait_until(
            lambda: accounts.get_account(ws, "notices").received_archiving,
            30,
            "received archiving on in the store",
        )
    (change,) = audit.list_entries(ws.store, limit=1)
    assert (change.source, change.actor) == ("console", "console (no login) from 127.0.0.1")
    assert change.summary == "received_archiving: off -> on"
