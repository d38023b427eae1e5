"""`accounts add --auth oauth2`, `accounts authorize`, `accounts test`/`show` for OAuth2
accounts; bad input is one line and writes nothing; no token or secret in clear anywhere."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from oauth_fixtures import (
    APP_CLIENT,
    APP_SECRET,
    MAILBOX,
    PUBLIC_CLIENT,
    TENANT,
    XOAuth2SMTPServer,
    authorize_device,
)
from oauth_server import OAuthTestServer

from sysmail_ops.cli import main
from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.mail.smtp import xoauth2_response
from sysmail_ops.sending.batch import SendOptions, send
from sysmail_ops.templates import catalog as templates


class Cli:
    """Runs `sysmail-ops` in this process and keeps every output, for the leak check."""

    def __init__(self, ws: Workspace, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch):
        self.ws, self.capsys, self.mp = ws, capsys, mp
        self.outputs: list[str] = []

    def __call__(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        self.mp.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["--home", str(self.ws.home), *argv])
        out, err = self.capsys.readouterr()
        self.outputs += [out, err]
        return code, out, err

    def subprocess(self, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "sysmail_ops", "--home", str(self.ws.home), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )


@pytest.fixture
def cli(ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(ws, capsys, monkeypatch)


def server_args(smtp: XOAuth2SMTPServer) -> list[str]:
    return ["--address", MAILBOX, "--host", smtp.host, "--port", str(smtp.port),
            "--ca-bundle", str(smtp.ca_path), "--kind", "customer_service"]  # fmt: skip


def microsoft(smtp: XOAuth2SMTPServer, *extra: str) -> list[str]:
    return [*server_args(smtp), "--auth", "oauth2", "--oauth-provider", "microsoft",
            "--oauth-tenant", TENANT, "--oauth-endpoint", smtp.oauth.base, *extra]  # fmt: skip


def stored_accounts(ws: Workspace) -> list[tuple[object, ...]]:
    with ws.store.connect() as con:
        return con.execute("SELECT name FROM accounts").fetchall()


def workspace_bytes(home: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())


def test_device_flow_from_the_command_line_and_no_token_in_clear_anywhere(
    cli: Cli, ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer
) -> None:
    code, out, err = cli("accounts", "add", "o365", *microsoft(xoauth2_smtp, "--oauth-client-id",
                                                               PUBLIC_CLIENT))  # fmt: skip
    assert code == 0, err
    assert "next: `sysmail-ops accounts authorize o365`" in out
    code, out, _ = cli("accounts", "test", "o365")
    assert code == 1 and "not authorized for OAuth2 yet: run `sysmail-ops accounts authorize" in out

    proc = cli.subprocess("accounts", "authorize", "o365")
    assert proc.stdout is not None
    shown = proc.stdout.readline()
    assert f"open {oauth_server.base}/device and enter the code" in shown
    user_code = shown.split("enter the code ", 1)[1].split()[0]
    oauth_server.approve(user_code, MAILBOX)  # the admin, in a browser elsewhere
    rest, err = proc.communicate(timeout=60)
    cli.outputs += [shown, rest, err]
    assert proc.returncode == 0, err
    assert rest.strip() == "o365: authorized (microsoft, device)"

    code, out, _ = cli("accounts", "test", "o365")
    assert code == 0 and f"logged in as {MAILBOX} (OAuth2, XOAUTH2)" in out
    code, out, _ = cli("accounts", "show", "o365")
    assert "(OAuth2: microsoft, device)" in out and f"authorized as {MAILBOX} on" in out
    cli("accounts", "show", "o365", "--json")
    cli("accounts", "list", "--json")

    templates.add_template(ws, "note", object_type="case", subject="Case {{ case_id }}",
                           html="<p>{{ case_id }}</p>", fields=["case_id"])  # fmt: skip
    for i in range(3):
        oauth_server.expire_access_tokens()  # each send logs in with a refreshed token
        result = send(ws, "o365", "note", to="eve@example.com", record={"case_id": str(i)},
                      options=SendOptions(backoff=0.01))  # fmt: skip
        assert result.counts == {"sent": 1}
    cli("logs", "list", "--json")

    oauth_server.revoke_refresh_tokens()
    oauth_server.expire_access_tokens()
    code, out, err = cli("accounts", "test", "o365")
    assert code == 1 and out.count("\n") == 1
    assert "re-authorize with `sysmail-ops accounts authorize o365`" in out

    secrets = [*oauth_server.issued_access_tokens, *oauth_server.issued_refresh_tokens]
    assert len(secrets) >= 8
    wire = [base64.b64encode(xoauth2_response(MAILBOX, t).encode()).decode() for t in secrets]
    stored = workspace_bytes(ws.home)
    printed = "\n".join(cli.outputs)
    for secret in [*secrets, *wire]:
        assert secret.encode() not in stored, "a token in clear in the workspace"
        assert secret not in printed, "a token in an output"


def test_client_credentials_secret_is_stored_encrypted_and_shown_masked(
    cli: Cli, ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer
) -> None:
    code, out, err = cli(
        "accounts", "add", "app", *microsoft(xoauth2_smtp, "--oauth-flow", "client_credentials",
                                             "--oauth-client-id", APP_CLIENT,
                                             "--oauth-secret-stdin"),
        stdin=APP_SECRET + "\n",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = cli("accounts", "authorize", "app")
    assert code == 0 and out == "app: authorized (microsoft, client credentials)\n"
    cli("accounts", "show", "app", "--json")
    shown = json.loads(cli("accounts", "show", "app", "--json")[1])
    assert shown["password"] == "(OAuth2: microsoft, client_credentials)"
    assert shown["oauth_client_id"] == APP_CLIENT
    assert APP_SECRET.encode() not in workspace_bytes(ws.home)
    assert APP_SECRET not in "\n".join(cli.outputs)
    for token in oauth_server.issued_access_tokens:
        assert token.encode() not in workspace_bytes(ws.home)


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--auth", "oauth2"], "auth oauth2 needs --oauth-provider"),
        (["--auth", "oauth2", "--oauth-provider", "microsoft"], "needs --oauth-client-id"),
        (["--auth", "oauth2", "--oauth-provider", "microsoft", "--oauth-client-id", "x",
          "--oauth-flow", "service_account"], "provider microsoft has no flow 'service_account'"),
        (["--auth", "oauth2", "--oauth-provider", "microsoft", "--oauth-client-id", "x",
          "--oauth-flow", "client_credentials"], "needs --oauth-tenant"),
        (["--auth", "oauth2", "--oauth-provider", "generic", "--oauth-client-id", "x"],
         "needs --oauth-endpoint"),
        (["--auth", "oauth2", "--oauth-provider", "generic", "--oauth-client-id", "x",
          "--oauth-endpoint", "http://idp.example.com"], "must be an https URL"),
        (["--auth", "oauth2", "--oauth-provider", "google", "--oauth-key-file", "/nonexistent"],
         "--oauth-key-file /nonexistent: No such file"),
        (["--auth", "password", "--no-password"], "auth password needs a password"),
        (["--auth", "password"], "no password given"),
    ],
)  # fmt: skip
def test_bad_oauth_settings_are_one_line_and_write_nothing(
    cli: Cli, ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, extra: list[str], said: str
) -> None:
    code, out, err = cli("accounts", "add", "bad", *server_args(xoauth2_smtp), *extra)
    assert code == 2 and out == "" and err.count("\n") == 1 and said in err
    assert stored_accounts(ws) == []


def test_authorize_refuses_a_password_account(
    cli: Cli, ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer
) -> None:
    code, _, err = cli("accounts", "add", "pw", *server_args(xoauth2_smtp), "--password-stdin",
                       stdin="s3cret-Pa55\n")  # fmt: skip
    assert code == 0, err
    code, out, err = cli("accounts", "authorize", "pw")
    assert code == 2 and out == "" and "logs in with password, not OAuth2" in err


def test_switching_settings_drops_the_stored_tokens(
    cli: Cli, ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer
) -> None:
    flow = ["--oauth-flow", "client_credentials", "--oauth-client-id", APP_CLIENT]
    cli("accounts", "add", "app", *microsoft(xoauth2_smtp, *flow, "--oauth-secret-stdin"),
        stdin=APP_SECRET + "\n")  # fmt: skip
    assert cli("accounts", "authorize", "app")[0] == 0
    code, _, err = cli("accounts", "edit", "app", "--oauth-tenant", "other-tenant")
    assert code == 0, err
    code, out, _ = cli("accounts", "show", "app")
    assert "not authorized yet: run `sysmail-ops accounts authorize app`" in out
    code, _, err = cli("accounts", "edit", "app", "--auth", "none")
    assert code == 0, err
    code, out, _ = cli("accounts", "show", "app")
    assert "(none: no login)" in out


def test_a_microsoft365_preset_with_a_client_id_means_oauth2(
    cli: Cli, ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer
) -> None:
    preset = ["--address", "ops@corp.example", "--provider", "microsoft365"]
    code, out, err = cli("accounts", "add", "m365", *preset, "--oauth-client-id", PUBLIC_CLIENT)
    assert code == 0, err
    a = accounts.get_account(ws, "m365")
    assert (a.auth, a.oauth_provider, a.oauth_flow) == ("oauth2", "microsoft", "device")
    assert a.smtp_host == "smtp.office365.com" and a.oauth_scopes is None
    assert "next: `sysmail-ops accounts authorize m365`" in out
    code, out, err = cli("accounts", "add", "gw", "--address", "ops@corp.example",
                         "--provider", "google", "--auth", "oauth2", "--oauth-key-file",
                         "/nonexistent")  # fmt: skip
    assert code == 2 and "--oauth-key-file /nonexistent" in err


def test_authorize_revoke_deletes_the_tokens_in_one_line(
    cli: Cli, ws: Workspace, xoauth2_smtp: XOAuth2SMTPServer, oauth_server: OAuthTestServer
) -> None:
    code, _, err = cli("accounts", "add", "o365", *microsoft(xoauth2_smtp, "--oauth-client-id",
                                                             PUBLIC_CLIENT))  # fmt: skip
    assert code == 0, err
    authorize_device(ws, accounts.get_account(ws, "o365"), oauth_server)
    code, out, err = cli("accounts", "authorize", "o365", "--revoke", "--browser")
    assert (code, out) == (2, "") and err.count("\n") == 1 and "--browser" in err
    code, out, err = cli("accounts", "authorize", "o365", "--revoke")
    assert code == 0, err
    assert out.startswith("o365: stored tokens deleted. Microsoft offers apps no token revocation")
    assert out.count("\n") == 1
    code, out, _ = cli("accounts", "show", "o365")
    assert "not authorized yet" in out
    code, out, _ = cli("accounts", "authorize", "o365", "--revoke")
    assert (code, out) == (0, "o365: not authorized: nothing to revoke\n")
