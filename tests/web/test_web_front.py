"""``serve``'s front (``web.front``): HTTP read in one place, the workspace held in another.

The first tests run the front's server and the owner's side in this process, joined by
real socket pairs, against a real store, aiosmtpd and the owner's real inner server; the
last ones run ``sysmail-ops serve`` as the two processes it is (killed, restarted).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
from smtp_testserver import SMTPTestServer
from test_intake import Served, event, intake_rows, setup_rules

from sysmail_ops.campaigns import surveys
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.flows import intake
from sysmail_ops.records import suppression
from sysmail_ops.web import front
from sysmail_ops.web import server as web


class CountingQueue(intake.IntakeQueue):
    """A real queue that counts the owner's commit calls (the group commit's calls)."""

    calls = 0

    def commit_posts(self, posts: list[intake.Post]) -> list[BaseException | None]:
        self.calls += 1
        return super().commit_posts(posts)


class Pair:
    """A front server and the owner's side in this process (threads), like ``serve``."""

    def __init__(self, ws: Workspace, queue: type[CountingQueue] = CountingQueue, **queue_kw: Any):
        self.queue = queue(ws, **queue_kw)
        self.inner = web.make_server(ws, "127.0.0.1", 0, quiet=True)
        threading.Thread(target=self.inner.serve_forever, daemon=True).start()
        self.ours: list[Connection] = []
        self.owner_ends: list[socket.socket] = []  # to cut the links as a dying owner would
        theirs: list[Connection] = []
        for _ in range(2):
            a, b = socket.socketpair()
            self.owner_ends.append(a.dup())
            self.ours.append(Connection(a.detach()))
            theirs.append(Connection(b.detach()))
        for conn in self.ours:
            threading.Thread(
                target=front._answer_calls, args=(conn, self.queue), daemon=True
            ).start()
        commits, calls = (front._Link(c) for c in theirs)
        self.front = front.FrontServer(
            front.bind("127.0.0.1", 0),
            ("127.0.0.1", self.inner.server_address[1]),
            intake=front.RemoteIntake(commits, calls),
            base_url="https://mail.example.com/hooks",
        )
        threading.Thread(target=self.front.serve_forever, daemon=True).start()

    def close(self) -> None:
        for srv in (self.front, self.inner):
            srv.shutdown()
            srv.server_close()
        self.queue.stop()
        for end in self.owner_ends:
            end.close()


@pytest.fixture
def pair(ws: Workspace, smtp_server: SMTPTestServer) -> Iterator[Pair]:
    setup_rules(ws, smtp_server)
    p = Pair(ws)
    p.queue.start()
    yield p
    p.close()


def served(p: Pair, ws: Workspace) -> Served:
    return Served(p.front, p.queue, intake.add_source(ws, "erp"))


def raw(p: Pair, method: str, path: str, body: bytes | None = None, **headers: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", p.front.server_address[1], timeout=20)
    try:
        conn.request(method, path, body, {k.replace("_", "-"): v for k, v in headers.items()})
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


# --- the events, through the front --------------------------------------------------------


def test_events_posted_to_the_front_are_recorded_by_the_owner_and_mailed_once(
    ws: Workspace, pair: Pair, smtp_server: SMTPTestServer
) -> None:
    s = served(pair, ws)
    status, _, data = s.post(event("F-1", amount=1500))
    assert status == 202 and data["status"] == "queued"
    assert data["status_url"] == "https://mail.example.com/hooks/events/F-1"
    done = s.wait("F-1")
    assert done["status"] == "notified" and len(done["sends"]) == 2
    status, _, again = s.post(event("F-1", amount=1500))  # redelivered: answered from the record
    assert status == 200 and again["redelivered"] is True and again["status"] == "notified"
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        "fay@example.com",
        "p-F-1@example.com",
    ]
    status, _, data = s.post("{broken", event("F-2"))  # a bad line is its own error
    assert status == 202 and data["refused"] == 1 and data["accepted"] == 1
    assert intake_rows(ws) == 2


def test_the_front_checks_tokens_and_a_revoked_one_writes_nothing(
    ws: Workspace, pair: Pair
) -> None:
    s = served(pair, ws)
    assert s.post(event("T-1"), token="wrong")[0] == 401
    assert s.post(event("T-1"), token=None)[0] == 401
    assert s.call("GET", "/events/T-1", token="wrong")[0] == 401
    assert s.post(event("T-1"))[0] == 202  # the front now remembers the token
    intake.revoke_source(ws, "erp")
    status, headers, _ = s.post(event("T-2"))  # checked again where it is recorded
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert intake_rows(ws) == 1
    assert s.post(event("T-3"))[0] == 401  # and forgotten by the front


def test_concurrent_posts_are_recorded_in_fewer_calls_than_posts(ws: Workspace, pair: Pair) -> None:
    s = served(pair, ws)
    codes: list[int] = []
    lock = threading.Lock()

    def poster(k: int) -> None:
        for i in range(k, 120, 12):
            code = s.post(event(f"C-{i}"))[0]
            with lock:
                codes.append(code)

    threads = [threading.Thread(target=poster, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [202] * 120 and intake_rows(ws) == 120
    assert pair.queue.calls < 120  # posts waiting meanwhile went in one call


def test_past_the_queue_bound_the_front_says_429_and_nothing_is_written(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    setup_rules(ws, smtp_server)
    p = Pair(ws, limit=1)  # no worker: nothing drains
    try:
        s = served(p, ws)
        status, headers, data = s.post(event("Q-1"), event("Q-2"))
        assert status == 429 and headers["Retry-After"] == web.RETRY_FULL
        assert "queued" in data["error"] and intake_rows(ws) == 0
        assert s.post(event("Q-1"))[0] == 202
        assert s.post(event("Q-3"))[0] == 429 and intake_rows(ws) == 1
    finally:
        p.close()


# --- the other routes, handed on to the owner ---------------------------------------------


def test_survey_and_unsubscribe_pages_pass_through_the_front_with_their_headers_once(
    ws: Workspace, pair: Pair
) -> None:
    token = surveys.make_token(ws, purpose="unsubscribe", campaign="nov", contact="c",
                               email="e@example.com")  # fmt: skip
    status, headers, body = raw(pair, "GET", f"/unsubscribe/{token}")
    assert status == 200 and b"Stop marketing" in body
    names = [k.lower() for k, _ in headers]
    for must in ("content-security-policy", "x-frame-options", "content-type", "cache-control"):
        assert names.count(must) == 1, (must, headers)
    assert dict(headers)["Content-Length"] == str(len(body))
    status, _, body = raw(pair, "HEAD", f"/unsubscribe/{token}")
    assert status == 200 and body == b""
    assert suppression.get_entry(ws, "e@example.com") is None  # a GET records nothing
    status, _, body = raw(
        pair, "POST", f"/unsubscribe/{token}", b"List-Unsubscribe=One-Click",
        Content_Type="application/x-www-form-urlencoded",
    )  # fmt: skip
    assert status == 200 and b"will get no more" in body
    assert suppression.get_entry(ws, "e@example.com") is not None
    assert raw(pair, "GET", "/nothing/here")[0] == 404
    assert raw(pair, "GET", "/survey/not-a-token")[0] == 400


def test_the_front_caps_a_form_before_the_owner_sees_it(ws: Workspace, pair: Pair) -> None:
    token = surveys.make_token(ws, purpose="unsubscribe", campaign="nov", contact="c",
                               email="big@example.com")  # fmt: skip
    big = b"x=" + b"a" * (web.MAX_BODY + 10)
    assert raw(pair, "POST", f"/unsubscribe/{token}", big)[0] == 413
    chunked = raw(pair, "POST", f"/unsubscribe/{token}", b"", Transfer_Encoding="chunked")
    assert chunked[0] == 400  # no chunked bodies: a Content-Length is asked for
    assert suppression.get_entry(ws, "big@example.com") is None


def test_the_front_logs_each_request_once_without_tokens(
    ws: Workspace, pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    token = surveys.make_token(ws, purpose="survey", campaign="nov", contact="c",
                               email="e@example.com")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="sysmail_ops.web.server"):
        assert raw(pair, "GET", f"/survey/{token}?score=4")[0] == 200
        deadline = time.monotonic() + 10
        while pair.front.active and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = [r.getMessage() for r in caplog.records if "/survey/" in r.getMessage()]
    assert len(lines) == 1 and "GET /survey/<token>?score=4" in lines[0]
    assert token not in caplog.text


# --- the owner unreachable ----------------------------------------------------------------


def test_an_owner_gone_before_the_call_gives_503_and_records_nothing(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    setup_rules(ws, smtp_server)
    p = Pair(ws)
    try:
        s = served(p, ws)
        assert s.post(event("G-1"))[0] == 202  # the token is remembered
        for end in p.owner_ends:  # the owner's ends go away
            end.shutdown(socket.SHUT_RDWR)
        time.sleep(0.1)
        status, headers, data = s.post(event("G-2"))
        assert status == 503 and headers["Retry-After"] == web.RETRY_BUSY
        assert "busy" in data["error"] and intake_rows(ws) == 1
        status, _, body = raw(p, "GET", "/nothing")  # other routes: the inner server is up
        assert status == 404
        p.inner.shutdown()
        p.inner.server_close()
        status, headers, body = raw(p, "GET", "/survey/x")
        assert status == 503 and b"try again" in body and dict(headers)["Retry-After"]
    finally:
        p.front.shutdown()
        p.front.server_close()
        p.queue.stop()
        for end in p.owner_ends:
            end.close()


def test_an_owner_gone_during_the_call_leaves_the_post_unanswered(
    ws: Workspace, smtp_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Recorded or not, nobody can tell: a 5xx would say "not recorded", so no answer."""
    setup_rules(ws, smtp_server)
    a, b = socket.socketpair()
    owner, link = Connection(a.detach()), Connection(b.detach())
    token = intake.add_source(ws, "erp")

    def owner_dies_mid_call() -> None:
        owner.recv()  # the call arrives (it could have been recorded) ...
        owner.close()  # ... and no answer comes

    threading.Thread(target=owner_dies_mid_call, daemon=True).start()
    p = Pair(ws)
    was = p.front.intake
    assert isinstance(was, front.RemoteIntake)
    p.front.intake = front.RemoteIntake(front._Link(link), was._calls)
    try:
        with caplog.at_level(logging.WARNING, logger="sysmail_ops.web.server"):
            conn = http.client.HTTPConnection("127.0.0.1", p.front.server_address[1], timeout=20)
            conn.request(
                "POST", "/events", json.dumps(event("U-1")), {"Authorization": f"Bearer {token}"}
            )
            with pytest.raises(http.client.RemoteDisconnected):
                conn.getresponse()
            conn.close()
        assert "a post got no answer: the owner process went away" in caplog.text
    finally:
        p.close()


def test_an_unexpected_failure_in_the_owner_is_one_500_not_a_hang(
    ws: Workspace, smtp_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    class DiskOnFire(Exception):
        """Defined in a function: it cannot be pickled to the front as it is."""

    class Failing(CountingQueue):
        def _record(self, group: list[intake.Post], *, beside: bool) -> int:
            raise DiskOnFire("no space left")

    setup_rules(ws, smtp_server)
    p = Pair(ws, Failing)
    try:
        with caplog.at_level(logging.INFO):
            status, _, body = raw(
                p, "POST", "/events", json.dumps(event("X-1")).encode(),
                Authorization=f"Bearer {intake.add_source(ws, 'erp')}",
            )  # fmt: skip
        assert status == 500 and b"Something went wrong" in body
        assert "the front's call 'commit' failed" in caplog.text and "DiskOnFire" in caplog.text
        assert "the owner process failed to commit: DiskOnFire" in caplog.text
        assert intake_rows(ws) == 0
    finally:
        p.close()


# --- serve as two processes ---------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _wait(cond: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return got


def _serve(ws: Workspace, *flags: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sysmail_ops", "--home", str(ws.home), "serve", "--port", "0",
         *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("serving"), first
    return proc, int(first.split("http://127.0.0.1:")[1].split()[0])


def _post(port: int, token: str, ev: dict[str, Any]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", "/events", json.dumps(ev), {"Authorization": f"Bearer {token}"})
        return conn.getresponse().status
    finally:
        conn.close()


def _open_files(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            out.add(os.readlink(fd))
        except OSError:
            continue
    return out


@pytest.mark.slow
def test_serve_is_a_front_that_never_opens_the_workspace_and_an_owner_that_does(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    setup_rules(ws, smtp_server)
    token = intake.add_source(ws, "erp")
    proc, port = _serve(ws)
    try:
        [front_pid] = _children(proc.pid)
        assert "sysmail_ops.web.front" in Path(f"/proc/{front_pid}/cmdline").read_text()
        assert _post(port, token, event("P-1")) == 202  # the owner holds the store meanwhile
        db = str(ws.store.path)
        assert any(f.startswith(db) for f in _open_files(proc.pid))
        assert not any(f.startswith(str(ws.home)) for f in _open_files(front_pid))
    finally:
        proc.send_signal(signal.SIGTERM)  # systemctl stop: both end, requests finished
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in out
    assert not Path(f"/proc/{front_pid}").exists() or "zombie" in _state(front_pid)
    assert '"POST /events HTTP/1.1" 202' in err and token not in err
    assert "Fatal Python error" not in err  # the front's exit: no abort at shutdown


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


@pytest.mark.slow
def test_a_killed_front_is_started_again_on_the_same_port(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    setup_rules(ws, smtp_server)
    token = intake.add_source(ws, "erp")
    proc, port = _serve(ws)
    try:
        [first] = _children(proc.pid)
        os.kill(first, signal.SIGKILL)
        second = _wait(lambda: [c for c in _children(proc.pid) if c != first], "a new front")
        assert second and _wait(lambda: _post(port, token, event("K-1")) == 202, "a 202")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "the web front process ended (exit -9); starting it again" in err


@pytest.mark.slow
def test_a_killed_owner_takes_the_front_with_it(ws: Workspace, smtp_server: SMTPTestServer) -> None:
    setup_rules(ws, smtp_server)
    proc, port = _serve(ws)
    [front_pid] = _children(proc.pid)
    proc.kill()  # SIGKILL: the owner cannot stop the front itself
    proc.communicate(timeout=30)
    _wait(lambda: not Path(f"/proc/{front_pid}").exists() or "zombie" in _state(front_pid),
          "the front to end")  # fmt: skip
    with pytest.raises(ConnectionRefusedError):  # the port is free for a restart
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


@pytest.mark.slow
def test_serve_one_process_has_no_front(ws: Workspace, smtp_server: SMTPTestServer) -> None:
    setup_rules(ws, smtp_server)
    token = intake.add_source(ws, "erp")
    proc, port = _serve(ws, "--one-process")
    try:
        assert _children(proc.pid) == []
        assert _post(port, token, event("O-1")) == 202
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in out
