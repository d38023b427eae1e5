"""CLI: settings, suppress, surveys and serve: output, --json, exit codes."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest

from sysmail_ops.campaigns import surveys
from sysmail_ops.cli import main
from sysmail_ops.config.workspace import Workspace

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> Run:
    def _run(*argv: str) -> tuple[int, str, str]:
        code = main(["--home", str(ws.home), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def test_settings_list_set_reset(run: Run) -> None:
    code, out, _ = run("settings", "list")
    assert code == 0 and "public_base_url" in out and "http://127.0.0.1:8025" in out
    assert "(default)" in out
    code, out, err = run("settings", "set", "public_base_url", "https://mail.example.com/s/")
    assert code == 0 and out == "public_base_url = https://mail.example.com/s\n" and err == ""
    code, out, err = run("settings", "set", "public_base_url", "http://127.0.0.1:9000")
    assert code == 0 and err.startswith("hint: links point at this machine only")
    code, _, _ = run("settings", "set", "survey_token_days", "7")
    listed = {s["name"]: s for s in json.loads(run("settings", "list", "--json")[1])}
    assert listed["survey_token_days"]["value"] == 7
    assert listed["survey_token_days"]["is_default"] is False
    assert listed["survey_quiet_days"] == listed["survey_quiet_days"] | {"value": 30}
    code, out, _ = run("settings", "reset", "survey_token_days")
    assert code == 0 and out == "survey_token_days = 30 (default)\n"


def test_settings_bad_input_exit_2_one_line(run: Run) -> None:
    code, out, err = run("settings", "set", "survey_token_days", "0")
    assert code == 2 and out == "" and err.count("\n") == 1 and "from 1 to 365" in err
    code, _, err = run("settings", "set", "public_base_url", "ftp://x.example")
    assert code == 2 and "http:// or https://" in err
    with pytest.raises(SystemExit) as info:
        run("settings", "set", "colour", "blue")
    assert info.value.code == 2
    assert json.loads(run("settings", "list", "--json")[1])[1]["value"] == 30


def test_suppress_add_list_remove(run: Run) -> None:
    code, out, _ = run("suppress", "add", "Eve@Example.com", "--reason", "complaint",
                       "--source", "ticket 42")  # fmt: skip
    assert code == 0 and out == "suppressed eve@example.com (complaint)\n"
    code, out, _ = run("suppress", "add", "eve@example.com")
    assert code == 0 and "was already suppressed (complaint, since" in out
    code, out, _ = run("suppress", "list")
    assert code == 0 and "eve@example.com" in out and "ticket 42" in out
    assert out.endswith("1 suppressed address(es)\n")
    rows = json.loads(run("suppress", "list", "--json")[1])
    assert rows[0]["address"] == "eve@example.com" and rows[0]["reason"] == "complaint"
    assert json.loads(run("suppress", "list", "--reason", "bounce", "--json")[1]) == []
    code, out, _ = run("suppress", "remove", "EVE@example.com")
    assert code == 0 and "removed eve@example.com" in out
    code, _, err = run("suppress", "remove", "eve@example.com")
    assert code == 2 and "not on the suppression list" in err and err.count("\n") == 1
    code, _, err = run("suppress", "add", "not-an-address")
    assert code == 2 and "is not valid" in err
    assert json.loads(run("suppress", "list", "--json")[1]) == []


def test_surveys_respond_responses_and_link(ws: Workspace, run: Run) -> None:
    code, out, _ = run("surveys", "link", "--campaign", "nov", "--contact", "c-1",
                       "--email", "eve@example.com", "--json")  # fmt: skip
    made = json.loads(out)
    assert code == 0 and sorted(made["survey_links"]) == ["1", "2", "3", "4", "5"]
    assert made["unsubscribe_url"].startswith("http://127.0.0.1:8025/unsubscribe/v1.")
    token = made["token"]
    assert made["survey_links"]["2"].endswith(f"/survey/{token}?score=2")
    code, out, _ = run("surveys", "respond", token, "--score", "4", "--comment", "fine")
    assert code == 0 and out == "recorded c-1's answer to nov: 4\n"
    got = json.loads(run("surveys", "respond", token, "--score", "5", "--json")[1])
    assert got["updated"] is True and got["answers"] == 2 and got["score"] == 5
    code, out, _ = run("surveys", "responses", "nov")
    assert code == 0 and "eve@example.com" in out and "c-1" in out
    rows = json.loads(run("surveys", "responses", "nov", "--json")[1])
    assert [(r["contact"], r["score"], r["answers"]) for r in rows] == [("c-1", 5, 2)]
    code, out, _ = run("surveys", "link", "--email", "ann@example.com")
    assert code == 0 and "score 5:" in out and "unsubscribe:" in out


def test_surveys_respond_bad_input_exit_2(ws: Workspace, run: Run) -> None:
    token = surveys.make_token(
        ws, purpose="survey", campaign="nov", contact="c", email="e@example.com"
    )
    for args, message in (
        ([token[:-2], "--score", "3"], "this link is not valid"),
        ([token, "--score", "6"], "from 1 to 5"),
        ([token, "--score", "good"], "whole number"),
    ):
        code, out, err = run("surveys", "respond", *args)
        assert (code, out) == (2, "") and message in err and err.count("\n") == 1
        assert token not in err
    assert surveys.responses(ws, "nov").empty


def test_serve_answers_real_requests_and_stops_on_sigint(ws: Workspace) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sysmail_ops", "--home", str(ws.home), "serve", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # A runner started in the background (nohup, `cmd &` in a script) ignores SIGINT,
        # and so would its children: Python keeps an ignored SIGINT, Ctrl-C would do nothing.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("serving survey and unsubscribe links on http://127.0.0.1:")
        port = int(first.split("http://127.0.0.1:")[1].split()[0])
        token = surveys.make_token(
            ws, purpose="survey", campaign="nov", contact="c", email="e@example.com"
        )
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", f"/survey/{token}?score=3")
        resp = conn.getresponse()
        assert resp.status == 200 and b'value="3" required checked>' in resp.read()
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "stopped" in out
    assert "GET /survey/<token>?score=3" in err and token not in err
    assert "hint: links point at this machine only" in err


def test_serve_on_a_busy_port_exit_2(ws: Workspace, run: Run) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        code, _, err = run("serve", "--port", str(s.getsockname()[1]))
    assert code == 2 and "cannot listen on 127.0.0.1:" in err
