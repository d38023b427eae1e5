"""CLI: archive fetch / status / thread / list --object / imap-login, accounts test --imap and
accounts show, against a real Dovecot."""

from __future__ import annotations

import io
import json
import time

import pytest
from dovecot_fixture import Dovecot
from received_helpers import bind_mailbox, case_template, message
from smtp_testserver import SMTPTestServer

from sysmail_ops.cli import main
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.sending.batch import send

pytestmark = pytest.mark.slow


@pytest.fixture
def run(ws: Workspace, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    def _run(*argv: str) -> tuple[int, str, str]:
        code = main(["--home", str(ws.home), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def test_fetch_status_thread_and_the_conversation(  # type: ignore[no-untyped-def]
    run, ws: Workspace, dovecot: Dovecot, mailbox: str, smtp_server: SMTPTestServer
) -> None:
    bind_mailbox(ws, dovecot, mailbox, smtp_server)
    case_template(ws)
    send(ws, "service", "case-update", to="eve@example.org",
         record={"name": "Eve", "case_id": "42"}, related=("case", "42"))  # fmt: skip
    code, out, _ = run("archive", "list", "--json")
    mid = json.loads(out)[0]["message_id"]
    reply = message("r1", subject="Re: Case 42", sender="eve@example.org",
                    date=time.time() + 60, headers={"In-Reply-To": mid})  # fmt: skip
    dovecot.append(mailbox, [reply, message(2)])

    code, out, err = run("archive", "fetch")
    assert code == 0, err
    assert out.strip() == "service: INBOX 2 new (first fetch)"
    code, out, _ = run("archive", "fetch", "service", "--json")
    assert code == 0 and json.loads(out)[0]["archived"] == 0

    code, out, _ = run("archive", "status")
    assert code == 0
    assert "service" in out and "INBOX (UID 2, UIDVALIDITY" in out
    code, out, _ = run("archive", "list", "--object", "case:42")
    lines = out.strip().splitlines()[1:]
    assert [x.split()[3] for x in lines] == ["sent", "received"]  # oldest first
    code, out, _ = run("archive", "thread", mid)
    assert code == 0 and "Re: Case 42" in out and len(out.strip().splitlines()) == 3
    code, out, _ = run("accounts", "show", "service")
    assert "last fetch (IMAP)" in out and "2 fetched in all" in out
    assert (
        json.loads(run("accounts", "show", "service", "--json")[1])["received"]["total_fetched"]
        == 2
    )


def test_accounts_test_imap_gives_the_step_by_step_verdict(  # type: ignore[no-untyped-def]
    run, ws: Workspace, dovecot: Dovecot, mailbox: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bind_mailbox(ws, dovecot, mailbox)
    code, out, _ = run("accounts", "test", "service", "--imap")
    assert code == 0 and out.startswith("service: OK") and "IMAP connected, TLS" in out
    monkeypatch.setattr("sys.stdin", io.StringIO("wrong-password\n"))
    assert run("archive", "imap-login", "service", "--login", mailbox)[0] == 0
    code, out, _ = run("accounts", "test", "service", "--imap", "--json")
    verdict = json.loads(out)
    assert code == 1 and verdict["step"] == "imap login" and not verdict["ok"]
    assert "AUTHENTICATIONFAILED" in verdict["message"] and "wrong-password" not in out
    code, out, _ = run("accounts", "show", "service")
    assert "FAILED at imap login" in out

    code, out, _ = run("archive", "fetch")
    assert code == 1 and "FAILED: login: login as" in out
    code, out, _ = run("archive", "status", "--json")
    assert "rejected" in json.loads(out)[0]["last_error"]
    assert "wrong-password" not in out
    assert run("archive", "imap-login", "service", "--clear")[0] == 0
    assert run("archive", "fetch")[0] == 0


def test_archiving_off_and_bad_input(  # type: ignore[no-untyped-def]
    run, ws: Workspace, dovecot: Dovecot, mailbox: str
) -> None:
    bind_mailbox(ws, dovecot, mailbox, kind="workflow_notification")
    dovecot.append(mailbox, [message(1)])
    code, out, _ = run("archive", "fetch")
    assert code == 0 and "nothing to fetch" in out
    code, out, _ = run("archive", "fetch", "service")
    assert code == 0 and "Received Email Archiving is off: nothing fetched" in out
    code, _, err = run("archive", "fetch", "service", "--since", "yesterday-ish")
    assert code == 2 and err.count("\n") == 1 and "--since" in err
    code, _, err = run("archive", "thread", "<nothing@example.org>")
    assert code == 2 and "no archived message" in err
    code, _, err = run("accounts", "test", "service", "--imap", "--send-to", "a@example.org")
    assert code == 2 and "does not go with --imap" in err
    code, out, _ = run("archive", "list", "--direction", "received")
    assert out.strip().splitlines()[1:] == []
