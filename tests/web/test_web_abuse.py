"""`sysmail-ops serve` under abuse: raw sockets play the clients a public endpoint meets."""

from __future__ import annotations

import http.client
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from sysmail_ops.campaigns import surveys
from sysmail_ops.cli import main
from sysmail_ops.config import settings
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.records import suppression
from sysmail_ops.web import server as web

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
LOGGER = "sysmail_ops.web.server"

Start = Callable[..., web.SurveyServer]


@pytest.fixture
def start(ws: Workspace) -> Iterator[Start]:
    """Start a real server with the given limits on a free port; stopped after the test."""
    running: list[tuple[web.SurveyServer, threading.Thread]] = []

    def _start(**limits: Any) -> web.SurveyServer:
        srv = web.make_server(ws, "127.0.0.1", 0, **limits)
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        settings.set_setting(ws, "public_base_url", srv.url)
        running.append((srv, thread))
        return srv

    yield _start
    for srv, thread in running:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=LOGGER)
    return caplog


def token(ws: Workspace, purpose: str = "survey") -> str:
    return surveys.make_token(
        ws, purpose=purpose, campaign="nov", contact="c-1", email="eve@example.com"
    )


def connect(srv: web.SurveyServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=10)


def request(
    srv: web.SurveyServer, method: str, path: str, body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], str]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    try:
        conn.request(method, path, body, headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def raw(srv: web.SurveyServer, data: bytes) -> bytes:
    """Send ``data`` as is (half-close), read the whole answer."""
    with connect(srv) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def reset(s: socket.socket) -> None:
    """Close with an RST, as a client that vanished does."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def wait_until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def idle(srv: web.SurveyServer) -> None:
    """Wait until the server handles no connection: every handler has finished (and logged)."""
    wait_until(lambda: srv.active == 0, "the server to finish its connections")


# --- forms ---------------------------------------------------------------------------------


def test_a_form_with_too_many_fields_is_a_400(
    ws: Workspace, start: Start, logs: pytest.LogCaptureFixture
) -> None:
    srv = start()
    path = f"/survey/{token(ws)}"
    many = "&".join(f"f{i}=1" for i in range(500)) + "&score=3"
    status, _, body = request(srv, "POST", path, many, FORM)
    assert status == 400 and "too many fields" in body
    parts = "".join(
        f'--b\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\n1\r\n' for i in range(200)
    )
    status, _, body = request(
        srv, "POST", path, parts + "--b--\r\n", {"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert status == 400 and "too many fields" in body
    status, _, _ = request(srv, "GET", f"{path}?{many}")  # the query string: no 500 either
    assert status in (200, 400)
    unsubscribe = f"/unsubscribe/{token(ws, 'unsubscribe')}"
    assert request(srv, "POST", unsubscribe, many, FORM)[0] == 400
    assert surveys.responses(ws, "nov").empty and suppression.list_suppressed(ws).empty
    assert not [r for r in logs.records if r.exc_info or r.levelno >= logging.ERROR]


def test_a_truncated_body_records_nothing(
    ws: Workspace, start: Start, logs: pytest.LogCaptureFixture
) -> None:
    srv = start()
    head = f"POST /survey/{token(ws)} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
    raw(srv, (head + FORM_HEADER + "\r\nscore=3").encode())
    idle(srv)
    assert surveys.responses(ws, "nov").empty


FORM_HEADER = "Content-Type: application/x-www-form-urlencoded\r\n"


# --- clients that vanish or stall ------------------------------------------------------------


def _problems(logs: pytest.LogCaptureFixture, err: str) -> list[str]:
    out = [r.getMessage() for r in logs.records if r.exc_info or r.levelno >= logging.ERROR]
    if "Traceback" in err:
        out.append(err)
    return out


def test_a_client_that_disconnects_mid_request_is_one_quiet_line(
    ws: Workspace,
    start: Start,
    logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    srv = start()
    t = token(ws)
    for half in (
        f"POST /survey/{t} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n{FORM_HEADER}\r\nscore=3",
        f"POST /survey/{t} HTTP/1.1\r\nHost: x\r\nContent-Le",
        "GET /survey/",
    ):
        logs.clear()
        s = connect(srv)
        s.sendall(half.encode())
        wait_until(lambda: srv.active == 1, "the server to take the connection")
        reset(s)
        idle(srv)
        err = capfd.readouterr().err
        assert _problems(logs, err) == [], half
        assert "Traceback" not in err
        assert len(logs.records) <= 1, [r.getMessage() for r in logs.records]
        assert t[10:40] not in "\n".join(r.getMessage() for r in logs.records)
    assert surveys.responses(ws, "nov").empty
    assert request(srv, "GET", f"/survey/{t}")[0] == 200  # and it serves on


def test_a_client_that_goes_silent_is_one_quiet_line(
    ws: Workspace,
    start: Start,
    logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    srv = start(timeout=0.3, request_timeout=5)
    t = token(ws)
    for half in (
        "",  # connects and says nothing
        f"GET /survey/{t} HTTP/1.1\r\nHost: x\r\n",  # stops in the headers
        f"POST /survey/{t} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n{FORM_HEADER}\r\nsco",
    ):
        logs.clear()
        with connect(srv) as s:
            s.sendall(half.encode())
            answer = s.recv(65536)  # the server gives up and closes (no answer, or a 408)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408")
        idle(srv)
        err = capfd.readouterr().err
        assert _problems(logs, err) == [], half
        assert len(logs.records) == 1, [r.getMessage() for r in logs.records]
        assert "timed out" in logs.records[0].getMessage()
        assert t[10:40] not in logs.records[0].getMessage()
    assert surveys.responses(ws, "nov").empty


def test_a_slowloris_is_cut_off_at_the_request_deadline(
    ws: Workspace, start: Start, logs: pytest.LogCaptureFixture
) -> None:
    """One header byte at a time, each well inside the socket timeout: the whole request
    still has a deadline."""
    srv = start(timeout=5, request_timeout=0.5)
    data = (f"GET /survey/{token(ws)} HTTP/1.1\r\nHost: x\r\n" + "X-Pad: a\r\n" * 60).encode()
    sent = 0
    with connect(srv) as s:
        s.settimeout(0.5)
        for i in range(len(data)):
            try:
                s.sendall(data[i : i + 1])
            except OSError:
                break  # the server closed the connection
            sent += 1
            try:
                if s.recv(1, socket.MSG_PEEK) in (b"", b"H"):
                    break  # closed, or a 408 came back
            except TimeoutError:
                pass  # still open: one more byte
    assert sent < len(data), "the server waited for the whole slow request"
    idle(srv)
    assert any("timed out" in r.getMessage() for r in logs.records)


# --- bounded connections -------------------------------------------------------------------


def test_connections_are_bounded_and_the_excess_gets_503(ws: Workspace, start: Start) -> None:
    srv = start(max_connections=2, timeout=30, request_timeout=60)
    held = [connect(srv) for _ in range(2)]
    try:
        wait_until(lambda: srv.active == 2, "both connections to be taken")
        with connect(srv) as s:  # the answer comes at once, before any request is read
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        answer = b"".join(chunks)
        head = answer.split(b"\r\n\r\n", 1)[0].decode()
        assert head.startswith("HTTP/1.1 503")
        assert "Retry-After:" in head and "X-Content-Type-Options: nosniff" in head
        assert "Content-Security-Policy: default-src 'none'" in head
        assert srv.active == 2
    finally:
        for s in held:
            s.close()
    idle(srv)
    assert request(srv, "GET", "/")[0] == 404  # a free slot again


def test_connections_are_handled_by_a_kept_pool_of_threads(ws: Workspace) -> None:
    def pool() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("http-")]

    wait_until(lambda: pool() == [], "earlier tests' pool threads to end")
    srv = web.make_server(ws, "127.0.0.1", 0, max_connections=8)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        for _ in range(20):  # one after the other: a thread may still be closing the last
            assert request(srv, "GET", "/")[0] == 404
        assert 1 <= len(pool()) <= 2
        held = [connect(srv) for _ in range(3)]
        try:
            wait_until(lambda: srv.active == 3, "three connections to be taken")
            assert request(srv, "GET", "/")[0] == 404  # a fourth, while three are held
            grown = len(pool())
            assert 4 <= grown <= 5
        finally:
            for s in held:
                s.close()
        idle(srv)
        for _ in range(20):
            assert request(srv, "GET", "/")[0] == 404
        assert len(pool()) == grown  # kept, and not one more per connection
    finally:
        srv.shutdown()
        srv.server_close()
    wait_until(lambda: pool() == [], "the pool's threads to end once the server is closed")


def test_limits_are_checked(ws: Workspace) -> None:
    for bad in ({"max_connections": 0}, {"request_timeout": 0}, {"timeout": -1}):
        with pytest.raises(web.ValidationError):
            web.make_server(ws, "127.0.0.1", 0, **bad)  # type: ignore[arg-type]


# --- security headers on every answer --------------------------------------------------------


def _security_headers(headers: dict[str, str], where: str) -> None:
    assert "default-src 'none'" in headers.get("Content-Security-Policy", ""), where
    assert headers.get("X-Content-Type-Options") == "nosniff", where
    assert headers.get("Cache-Control") == "no-store", where
    assert headers.get("Referrer-Policy") == "no-referrer", where
    assert headers.get("X-Frame-Options") == "DENY", where


def test_every_answer_carries_the_security_headers(ws: Workspace, start: Start) -> None:
    srv = start()
    t = token(ws)
    cases = [
        ("GET", f"/survey/{t}", 200),
        ("GET", "/nothing", 404),
        ("GET", f"/survey/{t[:-4]}", 400),
        ("PUT", f"/survey/{t}", 405),
        ("DELETE", f"/unsubscribe/{t}", 405),
        ("OPTIONS", "/", 405),
        ("BREW", f"/survey/{t}", 501),  # the standard library's own error page
    ]
    for method, path, code in cases:
        status, headers, _ = request(srv, method, path)
        assert status == code, (method, path)
        _security_headers(headers, f"{method} {path}")
    status, headers, _ = request(srv, "PUT", "/")
    assert headers["Allow"] == "GET, HEAD, POST"
    status, headers, _ = request(srv, "POST", f"/survey/{t}", "x" * (web.MAX_BODY + 1), FORM)
    assert status == 413
    _security_headers(headers, "413")
    # Error pages the standard library writes before any route: a bad request line, a
    # bad version, a header line too long.
    for data in (
        b"GET /survey/x HTTP/9.9\r\n\r\n",
        b"NONSENSE\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n",
    ):
        answer = raw(srv, data).decode("latin-1")
        head, _, _ = answer.partition("\r\n\r\n")
        status_line, *lines = head.split("\r\n")
        assert status_line.split()[1] in ("400", "431", "505"), status_line
        _security_headers(dict(line.split(": ", 1) for line in lines), status_line)


# --- tokens never reach the log --------------------------------------------------------------


def _variants(t: str) -> list[str]:
    every = "".join(f"%{b:02X}" for b in t.encode())
    return [
        f"/Unsubscribe/{t}",
        f"/SURVEY/{t}",
        f"/survey//{t}",
        f"/survey%2F{t}",
        f"/survey%2f{t}?score=3",
        f"/survey/{every}",
        f"/survey/{quote(every)}",  # encoded twice
        f"/x/{t}/y",
        f"/?t={t}",
        f"/survey/{t.replace('.', '%2E')}",
        f"/survey/{t.upper()}",
        f"/survey/{t[:-3]}",
        f"/survey/{t[:60]}%0A{t[60:]}",
    ]


@pytest.mark.parametrize("purpose", ["survey", "unsubscribe"])
def test_tokens_never_reach_the_access_log(
    ws: Workspace, start: Start, logs: pytest.LogCaptureFixture, purpose: str
) -> None:
    srv = start()
    t = token(ws, purpose)
    _, claims, sig = t.split(".")
    for path in _variants(t):
        for method in ("GET", "POST", "BREW"):
            request(srv, method, path, "score=3", FORM)
        raw(srv, f"GET {path} HTTP/9.9\r\n\r\n".encode())  # the stdlib's error line
    idle(srv)
    text = "\n".join(r.getMessage() for r in logs.records)
    assert "<token>" in text
    for secret in (sig, sig.upper(), claims[:24], claims[-24:], claims.upper()[:24]):
        assert secret not in text
    assert "eve@example.com" not in text
    assert "\n" not in "".join(r.getMessage() for r in logs.records)  # one line per entry


def test_redact_finds_token_shapes_anywhere() -> None:
    t = "v1.eyJwIjoic3VydmV5IiwiYyI6Im5vdiIsImUiOiJldmVAZXhhbXBsZS5jb20ifQ.c2lnbmF0dXJlX29mX2Zvcnk"
    for text in _variants(t):
        out = web.redact(f'"GET {text} HTTP/1.1" 200 -')
        assert "c2lnbmF0dXJl" not in out.replace("<token>", "") and "<token>" in out, out
        assert "eyJwIjoic3" not in out
    assert web.redact('"GET /survey/ HTTP/1.1" 404 -') == '"GET /survey/ HTTP/1.1" 404 -'
    assert web.redact("a\r\nforged line") == "a\\r\\nforged line"


def test_form_fields_in_a_query_are_fine(ws: Workspace, start: Start) -> None:
    srv = start()
    query = urlencode({"score": "4"})
    status, _, body = request(srv, "GET", f"/survey/{token(ws)}?{query}")
    assert status == 200 and 'value="4" required checked>' in body


def test_serve_takes_the_limits_and_refuses_bad_ones(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    for flag, value in (("--max-connections", "0"), ("--request-timeout", "0")):
        code = main(["--home", str(ws.home), "serve", "--port", "0", flag, value])
        out, err = capsys.readouterr()
        assert code == 2 and err.count("\n") == 1 and flag[2:].replace("-", "_") in err
        assert "serving" not in out
