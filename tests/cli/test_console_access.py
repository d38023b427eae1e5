"""Who may open the Admin Console, without a browser: the refusal of a non-loopback address
without a login, the console password (hashed, audited, never in clear), the Voilà config a
run writes (cookies, XSRF, expiry, private files, nothing secret on the command line), the
pages a read-only console serves, and the library refusing changes and sends when read-only."""

from __future__ import annotations

import argparse
import fnmatch
import io
import json
import stat
import sys
from pathlib import Path

import pytest
from conftest import bind
from smtp_testserver import GOOD_PASSWORD, SMTPTestServer

from sysmail_ops import flows as workflows
from sysmail_ops.cli import build_parser, console_access, main
from sysmail_ops.config import accounts, settings
from sysmail_ops.config import console as console_auth
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import ReadOnlyError
from sysmail_ops.records import sendlog
from sysmail_ops.sending import connection_test as conntest
from sysmail_ops.sending.batch import send
from sysmail_ops.store import access, audit
from sysmail_ops.templates import catalog as templates

ROOT = Path(__file__).parents[2]
CONSOLE_PASSWORD = "Console-Login-Secret-42"


def run(ws: Workspace, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--home", str(ws.home), *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("ip", ["0.0.0.0", "10.1.2.3", "192.168.0.10"])  # noqa: S104
def test_a_non_loopback_address_without_a_login_is_refused(
    ws: Workspace, capsys: pytest.CaptureFixture[str], ip: str
) -> None:
    code, out, err = run(ws, capsys, "console", "--ip", ip, "--port", "1")
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert f"refusing to serve the Admin Console on {ip} without a login" in err
    assert "sysmail-ops console --set-password" in err
    assert not (ws.home / "console").exists()  # nothing was prepared or started


@pytest.mark.parametrize("ip", ["10.1.2", "example.com", "::1", "0.0.0.0; rm -rf /"])
def test_a_bad_address_is_one_line(
    ws: Workspace, capsys: pytest.CaptureFixture[str], ip: str
) -> None:
    code, _, err = run(ws, capsys, "console", "--ip", ip)
    assert code == 2 and "--ip takes an IPv4 address" in err and err.count("\n") == 1


def test_with_a_login_a_non_loopback_address_is_allowed(ws: Workspace) -> None:
    any_address = "0.0.0.0"  # noqa: S104 - only checked, never bound
    assert console_access.check_ip(any_address, has_password=False, token=True) == any_address
    assert console_access.check_ip("10.0.0.5", has_password=True, token=False) == "10.0.0.5"
    assert console_access.check_ip("127.0.0.2", has_password=False, token=False) == "127.0.0.2"
    assert console_access.check_ip("localhost", has_password=False, token=False) == "127.0.0.1"


def test_set_password_is_hashed_audited_and_never_in_clear(
    ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(CONSOLE_PASSWORD + "\n"))
    code, out, err = run(ws, capsys, "console", "--set-password", "--password-stdin")
    assert code == 0 and "console password set" in out and CONSOLE_PASSWORD not in out + err
    hashed = console_auth.password_hash(ws)
    assert hashed and hashed.startswith("argon2:") and CONSOLE_PASSWORD not in hashed
    assert console_auth.verify(ws, CONSOLE_PASSWORD)
    assert not console_auth.verify(ws, CONSOLE_PASSWORD + "x")
    assert [s.name for s in settings.list_settings(ws)] == list(settings.DEFINITIONS)  # hidden

    (entry,) = audit.list_entries(ws.store)
    assert (entry.object_kind, entry.object_name, entry.action, entry.source) == (
        "console",
        "password",
        "add",
        "cli",
    )
    assert entry.summary == "password set" and hashed not in json.dumps(entry.to_dict())

    code, out, _ = run(ws, capsys, "console", "--clear-password")
    assert code == 0 and "console password removed" in out
    assert console_auth.password_hash(ws) is None
    assert [e.action for e in audit.list_entries(ws.store)] == ["remove", "add"]

    with ws.store.connect() as con:
        con.execute("CHECKPOINT")
    for path in ws.home.rglob("*"):
        if path.is_file():
            assert CONSOLE_PASSWORD.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("short\n", "at least 10 characters"),
        ("\n", "stdin held no password"),
    ],
)
def test_a_bad_console_password_changes_nothing(
    ws: Workspace,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stdin: str,
    message: str,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code, _, err = run(ws, capsys, "console", "--set-password", "--password-stdin")
    assert code == 2 and message in err and err.count("\n") == 1
    assert console_auth.password_hash(ws) is None and audit.list_entries(ws.store) == []


def test_conflicting_password_options(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(ws, capsys, "console", "--set-password", "--clear-password")
    assert code == 2 and "cannot be combined" in err
    code, _, err = run(ws, capsys, "console", "--password-stdin")
    assert code == 2 and "goes with --set-password" in err


def test_the_voila_config_sets_cookies_xsrf_and_expiry() -> None:
    cfg = console_access.voila_config(
        hashed_password="argon2:x", token=None, behind_https=False, session_hours=12
    )
    provider = cfg["PasswordIdentityProvider"]
    assert provider["cookie_options"] == {"httponly": True, "samesite": "Lax", "expires_days": 0.5}
    assert provider["get_secure_cookie_kwargs"] == {"max_age_days": 0.5}
    assert provider["hashed_password"] == "argon2:x" and provider["password_required"] is True
    assert provider["allow_password_change"] is False
    assert "secure_cookie" not in provider  # Secure exactly when the request came over https
    tornado = cfg["Voila"]["tornado_settings"]
    assert tornado["xsrf_cookies"] is True
    assert "token" not in cfg["Voila"]

    https = console_access.voila_config(
        hashed_password=None, token="t0k", behind_https=True, session_hours=1
    )
    assert https["PasswordIdentityProvider"]["secure_cookie"] is True
    assert https["Voila"]["tornado_settings"]["xsrf_cookie_kwargs"]["secure"] is True
    assert https["Voila"]["token"] == "t0k"


def _console_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["console", *argv])


def test_prepare_keeps_secrets_off_the_command_line_in_private_files(ws: Workspace) -> None:
    console_auth.set_password(ws, CONSOLE_PASSWORD)
    env: dict[str, str] = {access.ENV_READ_ONLY: "1"}
    notebooks = ROOT / "notebooks"
    guard = console_access.prepare(
        _console_args("--token"), ws, notebooks, "01_email_management.ipynb", env
    )
    assert guard.login == "password" and guard.query.startswith("?token=")
    token = guard.query.removeprefix("?token=")
    assert len(token) >= 40
    assert guard.notebooks == notebooks and guard.first_page == "01_email_management.ipynb"
    argv = " ".join(guard.voila_options)
    hashed = console_auth.password_hash(ws)
    assert hashed and hashed not in argv and token not in argv
    (folder,) = (ws.home / "console").iterdir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("voila.json", "voila.py"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    cfg = json.loads((folder / "voila.json").read_text())
    assert cfg["Voila"]["token"] == token
    assert cfg["PasswordIdentityProvider"]["hashed_password"] == hashed
    assert access.ENV_READ_ONLY not in env  # a full console never inherits read-only
    assert env[audit.ENV_SOURCE] == "console"


def test_every_page_is_classified_and_read_only_serves_only_viewing_pages(ws: Workspace) -> None:
    pages = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    for name in pages:
        ro = any(fnmatch.fnmatch(name, p) for p in console_access.READ_ONLY_PAGES)
        admin = any(fnmatch.fnmatch(name, p) for p in console_access.ADMIN_PAGES)
        assert ro != admin, f"{name}: list it in READ_ONLY_PAGES or ADMIN_PAGES (one of them)"

    env: dict[str, str] = {}
    guard = console_access.prepare(
        _console_args("--read-only"), ws, ROOT / "notebooks", "01_email_management.ipynb", env
    )
    served = sorted(p.name for p in guard.notebooks.iterdir())
    assert "06_audit.ipynb" in served and guard.first_page in served
    assert not [n for n in served if n.startswith(("01_", "02_", "03_"))]
    assert env[access.ENV_READ_ONLY] == "1" and guard.login == "none"


def test_bad_session_hours(ws: Workspace) -> None:
    with pytest.raises(Exception, match="--session-hours must be from"):
        console_access.prepare(
            _console_args("--session-hours", "0"), ws, ROOT / "notebooks", "x.ipynb", {}
        )


# --- the library in a read-only process (what the console's --read-only kernels run) ------


def test_read_only_refuses_every_change_and_writes_nothing(
    ws: Workspace, smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    bind(ws, smtp_server)
    templates.add_template(ws, "t", object_type="case", subject="Hi", html="<p>{{ x }}</p>")
    before = audit.list_entries(ws.store)
    with ws.store.connect() as con:
        snapshot = con.execute("SELECT * FROM accounts").fetchall()
    monkeypatch.setenv(access.ENV_READ_ONLY, "1")

    attempts = [
        lambda: accounts.add_account(
            ws, "other", from_address="o@example.com", smtp_host="smtp.example.com"
        ),
        lambda: accounts.set_archiving(ws, "service", received=False),
        lambda: accounts.edit_account(ws, "service", password="New-Secret-Pw"),
        lambda: accounts.remove_account(ws, "service"),
        lambda: templates.edit_template(ws, "t", subject="Changed"),
        lambda: settings.set_setting(ws, "survey_token_days", 3),
        lambda: console_auth.set_password(ws, CONSOLE_PASSWORD),
        lambda: workflows.add_rule(
            ws,
            "r",
            flow_type="workflow",
            flow_name="*",
            event="done",
            account="service",
            template="t",
            recipients=["ops@example.com"],
        ),
    ]
    for attempt in attempts:
        with pytest.raises(ReadOnlyError, match="this console is read-only"):
            attempt()
    with ws.store.connect() as con:
        assert con.execute("SELECT * FROM accounts").fetchall() == snapshot
        assert con.execute("SELECT count(*) FROM workflow_rules").fetchone() == (0,)
    assert templates.get_template(ws, "t").subject == "Hi"
    assert audit.list_entries(ws.store) == before
    assert console_auth.password_hash(ws) is None


def test_read_only_sends_nothing_and_still_reads(
    ws: Workspace, smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    bind(ws, smtp_server)
    templates.add_template(ws, "t", object_type="case", subject="Hi", html="<p>{{ x }}</p>")
    monkeypatch.setenv(access.ENV_READ_ONLY, "1")
    a = accounts.get_account(ws, "service")
    with pytest.raises(ReadOnlyError):
        send(ws, "service", "t", to="someone@example.com", record={"x": 1})
    with pytest.raises(ReadOnlyError):
        accounts.password_for(ws, a)
    with pytest.raises(ReadOnlyError):
        conntest.test_account(ws, "service", send_to="me@example.com")
    assert smtp_server.auth_logins == [] and smtp_server.messages == []
    assert conntest.recent_tests(ws, "service", 5) == []
    # reading is what a read-only console is for
    assert [x.name for x in accounts.list_accounts(ws)] == ["service"]
    assert len(sendlog.list_logs(ws)) == 0
    assert [e.object_name for e in audit.list_entries(ws.store)] == ["t", "service"]

    monkeypatch.setenv(access.ENV_READ_ONLY, "0")
    assert accounts.password_for(ws, a).reveal() == GOOD_PASSWORD
