"""`sysmail-ops sources ...` and `serve`'s event intake as a process: SIGKILL mid-burst."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer

from sysmail_ops import flows as workflows
from sysmail_ops.cli import main
from sysmail_ops.config import settings
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.flows import intake
from sysmail_ops.templates import catalog as templates

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> Run:
    def _run(*argv: str) -> tuple[int, str, str]:
        code = main(["--home", str(ws.home), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def test_sources_add_list_revoke(ws: Workspace, run: Run) -> None:
    code, out, err = run("sources", "add", "erp")
    assert code == 0 and err == ""
    token = out.splitlines()[1]
    assert len(token) >= 43 and intake.IntakeQueue(ws).source_for(token) == "erp"
    code, out, _ = run("sources", "list")
    assert code == 0 and "erp" in out and "active" in out and token not in out
    code, out, _ = run("sources", "list", "--json")
    assert [s["name"] for s in json.loads(out)] == ["erp"] and token not in out
    code, out, _ = run("sources", "revoke", "erp")
    assert code == 0 and "revoked" in out
    assert intake.IntakeQueue(ws).source_for(token) is None
    code, out, _ = run("sources", "list")
    assert "revoked" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sources", "add", "Bad Name"], "source name"),
        (["sources", "revoke", "nope"], "no source named"),
    ],
)
def test_sources_bad_input_exit_2_one_line(
    ws: Workspace, run: Run, argv: list[str], message: str
) -> None:
    code, out, err = run(*argv)
    assert (code, out) == (2, "") and message in err and err.count("\n") == 1
    assert intake.list_sources(ws) == []


def test_sources_add_twice_exit_2(run: Run) -> None:
    assert run("sources", "add", "erp")[0] == 0
    code, out, err = run("sources", "add", "erp")
    assert (code, out) == (2, "") and "revoke it first" in err


# --- crash safety: serve SIGKILLed during a burst ----------------------------------------


def _serve(ws: Workspace) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sysmail_ops", "--home", str(ws.home), "serve", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("serving"), first
    return proc, int(first.split("http://127.0.0.1:")[1].split()[0])


def _call(port: int, token: str, method: str, path: str, body: str | None = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body, {"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def _event(n: int) -> dict[str, Any]:
    return {
        "id": f"C-{n}",
        "flow_type": "approval_flow",
        "flow_name": "travel",
        "event": "approved",
        "object_type": "approval",
        "object_id": f"AP-{n}",
        "record": {"applicant_email": f"p{n}@example.com", "request": f"R{n}"},
    }


@pytest.mark.slow
def test_serve_killed_mid_burst_mails_every_202_and_logs_each_send_once(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    bind(ws, smtp_server, "workflow", kind="workflow_notification")
    templates.add_template(
        ws, "granted", object_type="approval", subject="Approved: {{ request }}",
        html="<p>{{ request }}</p>",
    )  # fmt: skip
    workflows.add_rule(
        ws, "applicant", flow_type="approval_flow", flow_name="*", event="approved",
        account="workflow", template="granted", recipients=["field:applicant_email"],
    )  # fmt: skip
    token = intake.add_source(ws, "erp")
    total, posters = 600, 8
    answers: dict[int, int | None] = {}  # event -> HTTP status; None: no answer (killed)
    lock = threading.Lock()
    proc, port = _serve(ws)
    ports = [port]

    def poster(first: int) -> None:
        for n in range(first, total, posters):
            try:
                status, _ = _call(ports[0], token, "POST", "/events", json.dumps(_event(n)))
            except (OSError, http.client.HTTPException):
                status = None
            with lock:
                answers[n] = status

    threads = [threading.Thread(target=poster, args=(i,)) for i in range(posters)]
    for t in threads:
        t.start()
    try:
        while sum(1 for s in list(answers.values()) if s == 202) < 150:
            time.sleep(0.01)
        proc.kill()  # SIGKILL: no cleanup of any kind
        proc.wait()
        for t in threads:
            t.join(60)
    finally:
        proc.kill()
        proc.communicate()
    accepted = {n for n, s in answers.items() if s == 202}
    refused = {n for n, s in answers.items() if s is not None and s >= 400}
    unanswered = {n for n, s in answers.items() if s is None}
    assert len(accepted) >= 150 and unanswered  # the kill landed mid-burst

    proc, port = _serve(ws)  # the restart notifies what was accepted and not yet mailed
    try:
        for n in sorted(accepted):
            deadline = time.monotonic() + 60
            while True:
                status, data = _call(port, token, "GET", f"/events/C-{n}")
                assert status == 200, (n, data)
                if data["status"] != "queued" or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert data["status"] == "notified", (n, data)
        # idle, serve lets the file go: another process may use the workspace meanwhile
        listed = subprocess.run(
            [sys.executable, "-m", "sysmail_ops", "--home", str(ws.home), "sources", "list"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert listed.returncode == 0 and "erp" in listed.stdout, listed.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)

    # The server may hold one message twice: the one whose 250 it had sent when the kill
    # came, before the worker wrote it down (SMTP cannot say "accepted" and have it
    # recorded in one step; one rule sends on one connection). The copy sent after the
    # restart carries the same Message-ID (a keyed delivery's id is derived from its key),
    # so each recipient got one message: copies of one Message-ID count once.
    mailed = Counter(m.rcpt_tos[0] for m in smtp_server.messages)
    ids: dict[str, set[str]] = {}
    for m in smtp_server.messages:
        ids.setdefault(m.rcpt_tos[0], set()).add(str(m.message["Message-ID"]))
    copies = {addr: k - 1 for addr, k in mailed.items() if k > 1}
    said = f"{sum(copies.values())} copies sent again after the restart: {copies}"
    several = {addr: sorted(found) for addr, found in ids.items() if len(found) > 1}
    assert not several, f"distinct messages to one recipient: {several}; {said}"
    assert max(mailed.values()) <= 2 and len(copies) <= 1, said
    got = {int(addr[1:].split("@")[0]) for addr in mailed}
    assert accepted <= got, f"202 but not mailed: {sorted(accepted - got)}; {said}"
    assert not (got & refused), f"refused but mailed: {sorted(got & refused)}"
    assert got <= accepted | unanswered  # an unanswered post may have been recorded
    with ws.store.connect() as con:
        rows = con.execute(
            "SELECT recipient, count(*), any_value(message_id) FROM send_log "
            "WHERE status = 'sent' GROUP BY 1"
        ).fetchall()
    assert all(c == 1 for _, c, _ in rows) and len(rows) == len(got), said
    # the log's row names the very message each recipient holds
    assert {r: {mid} for r, _, mid in rows} == ids


def test_serve_with_a_bad_queue_limit_exit_2(run: Run) -> None:
    code, out, err = run("serve", "--port", "0", "--queue-limit", "0")
    assert (code, out) == (2, "") and "queue limit" in err and err.count("\n") == 1


def test_the_queue_limit_is_a_setting(ws: Workspace, run: Run) -> None:
    assert run("settings", "set", "intake_queue_limit", "500")[0] == 0
    assert settings.get_setting(ws, "intake_queue_limit") == 500
    code, out, err = run("settings", "set", "intake_queue_limit", "0")
    assert (code, out) == (2, "") and "intake_queue_limit" in err
