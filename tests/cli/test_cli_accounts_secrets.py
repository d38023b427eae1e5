"""`accounts`: an empty --password-stdin is an error; echoed AUTH data never reaches the output."""

from __future__ import annotations

import io
import json
import sys

import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer, assert_no_credentials

from sysmail_ops.cli import main
from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.mail.credentials import MASK

BASE = ("--address", "news@example.com", "--host", "smtp.example.com")


def run(
    ws: Workspace, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch, *argv: str,
    stdin: str = "",
) -> tuple[int, str, str]:  # fmt: skip
    mp.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["--home", str(ws.home), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def stored(ws: Workspace) -> list[tuple[object, ...]]:
    with ws.store.connect() as con:
        return con.execute("SELECT * FROM accounts ORDER BY name").fetchall()


@pytest.mark.parametrize("stdin", ["", "\n", "\r\n"])
def test_add_with_empty_password_stdin_is_an_error_and_writes_nothing(
    ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, stdin: str
) -> None:
    code, out, err = run(
        ws, capsys, monkeypatch, "accounts", "add", "news", *BASE, "--password-stdin", stdin=stdin
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--password-stdin" in err and "--no-password" in err
    assert stored(ws) == []


@pytest.mark.parametrize("stdin", ["", "\n"])
def test_edit_with_empty_password_stdin_is_an_error_and_keeps_the_password(
    ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, stdin: str
) -> None:
    accounts.add_account(
        ws, "news", from_address="news@example.com", smtp_host="smtp.example.com",
        password="old-Secret-1",
    )  # fmt: skip
    before = stored(ws)
    code, out, err = run(
        ws, capsys, monkeypatch, "accounts", "edit", "news", "--port", "2525", "--password-stdin",
        stdin=stdin,
    )  # fmt: skip
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--password-stdin" in err
    assert stored(ws) == before
    assert accounts.get_account(ws, "news").needs_login
    assert accounts.password_for(ws, accounts.get_account(ws, "news")).reveal() == "old-Secret-1"


def test_no_password_still_means_no_login(
    ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(ws, capsys, monkeypatch, "accounts", "add", "news", *BASE, "--no-password")
    assert code == 0, err
    assert not accounts.get_account(ws, "news").needs_login


def test_echoed_auth_data_is_masked_in_accounts_test_and_show(
    ws: Workspace,
    smtp_server: SMTPTestServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bind(ws, smtp_server)
    smtp_server.echo_auth = True
    outputs = []
    for argv in (["test", "service"], ["test", "service", "--json"]):
        code, out, err = run(ws, capsys, monkeypatch, "accounts", *argv)
        assert code == 1 and MASK in out
        outputs.append(out + err)
    for argv in (["show", "service"], ["show", "service", "--json"]):
        code, out, err = run(ws, capsys, monkeypatch, "accounts", *argv)
        assert code == 0 and MASK in out
        outputs.append(out + err)
    assert len(json.loads(outputs[-1])["tests"]) == 2
    for text in outputs:
        assert_no_credentials(text)


def test_add_with_an_empty_answer_at_the_prompt_is_an_error(
    ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A person pressing Enter at the hidden prompt (no terminal here: the prompt is faked)."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", lambda prompt: "")
    code = main(["--home", str(ws.home), "accounts", "add", "news", *BASE])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and "--no-password" in err
    assert stored(ws) == []
