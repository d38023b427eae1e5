"""``serve`` as two processes: a front that speaks HTTP, and the owner of the workspace.

One process reading HTTP and notifying events shared one GIL: at 300 events/s the web
threads took about as much CPU as the intake's worker, and a micro-batch the worker
sends in ~55 ms alone took ~150 ms beside them. So ``serve`` (the owner: the process
that opens the workspace, records events, runs the worker and the survey pages) starts
a front process that owns nothing:

- it accepts the connections on the socket the owner bound, and reads each request
  under the same limits as ever (``web.server``: connections, deadlines, body caps);
- ``/events``: it checks the bearer token (a token seen valid is remembered as its
  hash, and checked again where the events are recorded, as in one process) and reads
  and checks the body (``intake.parse_post``); the owner records the good events and
  says what became of each (``IntakeQueue.commit_posts``): one call for every post
  that arrived meanwhile. The 202 goes out after the owner committed;
- every other route (survey, unsubscribe, a wrong path) it hands on to the owner's own
  server on the loopback (``quiet``: the front logs the request) and passes back the
  answer as it came.

The two talk over socket pairs made by the owner (``multiprocessing.connection``: a
call, then its answer); only a token's SHA-256 crosses, never a token. The front never
opens the workspace, so the rule of one process at a time on the store is unchanged.

Failures: the owner gone before a post's call was sent (or unable to answer) gives 503;
gone after, the post gets no answer at all, as a crash would leave it (it may have been
recorded: a 5xx would say it was not). The owner's death ends the front (the end of its
stdin); the front's death is logged by the owner, which starts a new one on the same
socket (connections wait in the backlog meanwhile).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

from sysmail_ops.errors import StoreBusyError, SysmailError, ValidationError
from sysmail_ops.flows.intake import (
    Accepted,
    IntakeQueue,
    Post,
    Unauthorized,
    parse_post,
    token_hash,
)
from sysmail_ops.web.server import (
    _EVENTS,
    MAX_BODY,
    OutcomeUnknown,
    SurveyServer,
    _Handler,
)

log = logging.getLogger("sysmail_ops.web.server")

__all__ = ["Front", "FrontServer", "RemoteIntake", "bind"]

START_WAIT = 60.0  # seconds the front has to say it is ready (a fresh interpreter: ~0.5 s)
STOP_WAIT = 10.0  # seconds the front has to finish the requests in hand when stopped
RESTART_MAX = 30.0  # seconds between restarts of a front that keeps dying, at most
# Seconds between two calls that record posts, at least: each is a DuckDB transaction of a
# few ms, in the process the worker sends from. At 300 posts/s, back-to-back calls (~100 a
# second of ~3 posts) took ~40% of a CPU there; 15 ms apart they carry ~5 posts each and the
# end-to-end p50 fell (bench_intake.py, alternated runs), with the 202 no later.
COMMIT_GAP = 0.015
# Not passed on to the owner's server, nor back: they are about one connection (RFC 9110
# 7.6.1), or set again by whoever sends the message on.
_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
        "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host",
        "content-length", "server", "date",
    }
)  # fmt: skip


def bind(host: str, port: int) -> socket.socket:
    """A socket bound and listening on ``host:port`` (0: a free port), for the front."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(SurveyServer.request_queue_size)
    except OSError as exc:
        sock.close()
        raise ValidationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


# --- the owner's side ---------------------------------------------------------------------


class Front:
    """The front process of one ``serve``, seen from the owner: starts it, answers its
    calls on ``queue``, starts it again if it dies, stops it.

    ``inner``: the owner's own server (``quiet``) the front hands other routes to.
    """

    def __init__(
        self,
        intake: IntakeQueue,
        listen: socket.socket,
        inner: SurveyServer,
        *,
        max_connections: int,
        request_timeout: float,
    ):
        self.intake = intake
        self.listen = listen
        self.inner = inner
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def start(self) -> None:
        """Start the front; returns once it serves. Raises ``SysmailError`` if it cannot."""
        ours, theirs = zip(*(socket.socketpair() for _ in range(2)), strict=True)
        fds = [self.listen.fileno(), *(s.fileno() for s in theirs)]
        config = {
            "listen": fds[0],
            "links": fds[1:],
            "inner": list(self.inner.server_address[:2]),
            "base_url": self.inner.base_url,
            "max_connections": self.max_connections,
            "request_timeout": self.request_timeout,
            "log_level": logging.getLogger().getEffectiveLevel(),
        }
        self.proc = subprocess.Popen(  # this interpreter, our own module
            [sys.executable, "-m", "sysmail_ops.web.front"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=fds,
        )
        for s in theirs:
            s.close()
        for s in ours:
            conn = Connection(s.detach())
            threading.Thread(
                target=_answer_calls, args=(conn, self.intake), name="front-link", daemon=True
            ).start()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(config).encode() + b"\n")
        self.proc.stdin.flush()  # stdin stays open: its end tells the front we are gone
        ready = _readline(self.proc.stdout, START_WAIT)
        if ready != b"ready\n":
            self.proc.kill()
            self.proc.wait()
            raise SysmailError("the web front process did not start (see the lines above)")

    def run(self) -> None:
        """Wait on the front; start it again whenever it dies (until ``stop``)."""
        delay = 1.0
        while True:
            assert self.proc is not None
            started = time.monotonic()
            code = self.proc.wait()
            if self._stopping:
                return
            log.warning("the web front process ended (exit %s); starting it again", code)
            if time.monotonic() - started > 60:
                delay = 1.0
            time.sleep(delay)
            delay = min(delay * 2, RESTART_MAX)
            try:
                self.start()
            except SysmailError as exc:
                log.warning("%s; trying again", exc)

    def stop(self) -> None:
        """Stop the front: it takes no new connection and finishes the requests in hand."""
        self._stopping = True
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _readline(stream: Any, timeout: float) -> bytes:
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return got[0] if got else b""


def _answer_calls(conn: Connection, intake: IntakeQueue) -> None:
    """Answer the front's calls on one link until it closes."""
    with conn:
        while True:
            try:
                op, *args = conn.recv()
            except (EOFError, OSError):
                return
            try:
                reply: tuple[str, Any] = ("ok", _call(intake, op, args))
            except SysmailError as exc:
                reply = ("error", exc)
            except Exception as exc:
                reply = ("error", _unexpected(op, exc))
            try:
                conn.send(reply)
            except OSError:
                return


def _call(intake: IntakeQueue, op: str, args: list[Any]) -> Any:
    if op == "auth":
        return intake.source_for_hash(args[0])
    if op == "status":
        return intake.status(args[0], args[1])
    if op == "commit":
        posts = [
            Post(source, [(Accepted(line, eid), data) for line, eid, data in events], hashed)
            for source, hashed, events in args[0]
        ]
        errors = [
            e if e is None or isinstance(e, SysmailError) else _unexpected(op, e)
            for e in intake.commit_posts(posts)
        ]
        return [
            (error, [(got.redelivered, got.status) for got, _ in p.fresh])
            for p, error in zip(posts, errors, strict=True)
        ]
    raise SysmailError(f"no such call: {op!r}")


def _unexpected(op: str, exc: BaseException) -> SysmailError:
    """What the front is told of an error of ours (logged here with its traceback): ours
    pickle (they cross processes); a library's (DuckDB's, say) may not."""
    log.error("serve: the front's call %r failed", op, exc_info=exc)
    return SysmailError(f"the owner process failed to {op}: {type(exc).__name__}")


# --- the front's side ---------------------------------------------------------------------


class OwnerGone(StoreBusyError):
    """The owner process cannot be reached: nothing was recorded (the caller gets 503)."""


class _Link:
    """One connection to the owner: a call, then its answer; one call at a time."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.lock = threading.Lock()

    def call(self, *message: Any) -> Any:
        with self.lock:
            try:
                self.conn.send(message)
            except OSError as exc:
                raise OwnerGone(f"the owner process is gone ({exc.strerror})") from None
            try:
                kind, value = self.conn.recv()
            except (EOFError, OSError):
                raise OutcomeUnknown("the owner process went away during the call") from None
        if kind == "error":
            raise value
        return value

    def look_up(self, *message: Any) -> Any:
        """``call`` for a question that changes nothing: an answer lost is the owner gone."""
        try:
            return self.call(*message)
        except OutcomeUnknown as exc:
            raise OwnerGone(str(exc)) from None


@dataclass(eq=False)
class _Waiting:
    """A post waiting for the call that records it (its answers, or ``post.error``)."""

    post: Post
    done: threading.Event = field(default_factory=threading.Event)


class RemoteIntake:
    """The ``/events`` routes' intake in the front: reads posts here, records them there.

    Posts are recorded by one thread, one call for all the posts waiting by then (the
    group commit of ``IntakeQueue``, across the process boundary), at most one call per
    ``COMMIT_GAP``.
    """

    def __init__(self, commits: _Link, calls: _Link):
        self._commits = commits
        self._calls = calls
        self._tokens: dict[str, str] = {}  # SHA-256 of a token seen valid -> its source
        self._lock = threading.Lock()
        self._waiting: queue.SimpleQueue[_Waiting] = queue.SimpleQueue()
        threading.Thread(target=self._record, name="front-commits", daemon=True).start()

    def source_for(self, token: str | None, *, cached: bool = False) -> str | None:
        if not token:
            return None
        wanted = token_hash(token)
        if cached:
            with self._lock:
                known = self._tokens.get(wanted)
            if known is not None:
                return known
        found: str | None = self._calls.look_up("auth", wanted)
        with self._lock:
            if found is None:
                self._tokens.pop(wanted, None)
            else:
                self._tokens[wanted] = found
        return found

    def accept(self, source: str, body: bytes, *, token: str | None = None) -> list[Accepted]:
        answers, fresh = parse_post(body)
        hashed = token_hash(token) if token else None
        if not fresh and hashed is None:
            return answers
        waiting = _Waiting(Post(source, fresh, hashed))
        self._waiting.put(waiting)
        waiting.done.wait()
        error = waiting.post.error
        if error is not None:
            if isinstance(error, Unauthorized) and hashed is not None:
                with self._lock:  # revoked: the next post asks the owner again
                    self._tokens.pop(hashed, None)
            raise error
        return answers

    def status(self, source: str, event_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self._calls.look_up("status", source, event_id)
        return found

    def _record(self) -> None:
        last = 0.0
        while True:
            group = [self._waiting.get()]
            time.sleep(max(0.0, last + COMMIT_GAP - time.monotonic()))
            last = time.monotonic()
            with contextlib.suppress(queue.Empty):
                while True:
                    group.append(self._waiting.get_nowait())
            payload = [
                (w.post.source, w.post.token_hash, [(g.line, g.id, d) for g, d in w.post.fresh])
                for w in group
            ]
            try:
                results = self._commits.call("commit", payload)
            except BaseException as exc:  # each post answers with it
                for w in group:
                    w.post.error = exc
                    w.done.set()
                continue
            for w, (error, outcomes) in zip(group, results, strict=True):
                w.post.error = error
                for (got, _), (redelivered, status) in zip(w.post.fresh, outcomes, strict=True):
                    got.redelivered, got.status = redelivered, status
                w.done.set()


class _FrontHandler(_Handler):
    """``/events`` here; every other route handed on to the owner's server as it came."""

    server: FrontServer

    def _route(self, method: str) -> None:
        if _EVENTS.search(urlsplit(self.path).path) is not None:
            super()._route(method)
        else:
            self._pass_on(method)

    def _pass_on(self, method: str) -> None:
        body = self._body(MAX_BODY, "the form") if method == "POST" else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        headers["X-Forwarded-For"] = self.client_address[0]
        host, port = self.server.inner
        conn = http.client.HTTPConnection(host, port, timeout=self.server.request_timeout + 5)
        try:
            conn.request(method, self.path, body, headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise OwnerGone(f"the owner process did not answer ({exc})") from None
        finally:
            conn.close()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP:
                self.send_header(k, v)
        length = resp.getheader("Content-Length") if method == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)


class FrontServer(SurveyServer):
    """The front's server: no workspace; ``inner`` is the owner's server's address."""

    def __init__(self, listen: socket.socket, inner: tuple[str, int], **kwargs: Any):
        self.inner = inner
        super().__init__(None, ("", 0), listen=listen, **kwargs)
        self.RequestHandlerClass = _FrontHandler


def main() -> None:
    """The front process: configured by one JSON line on stdin; ends when stdin ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the owner stops us
    config = json.loads(sys.stdin.readline())
    logging.basicConfig(
        level=config["log_level"], format="%(asctime)s %(message)s", stream=sys.stderr
    )
    commits, calls = (_Link(Connection(fd)) for fd in config["links"])
    server = FrontServer(
        socket.socket(fileno=config["listen"]),
        (config["inner"][0], config["inner"][1]),
        max_connections=config["max_connections"],
        request_timeout=config["request_timeout"],
        intake=RemoteIntake(commits, calls),
        base_url=config["base_url"],
    )

    def owner_gone() -> None:
        # The raw descriptor, not sys.stdin's buffered reader: a daemon thread blocked in
        # that holds its lock, and Python aborts at exit ("could not acquire lock").
        while os.read(sys.stdin.fileno(), 4096):
            pass  # the end of stdin: the owner closed it, or died
        os._exit(0)

    threading.Thread(target=owner_gone, name="owner-watch", daemon=True).start()
    signal.signal(
        signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start()
    )
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()
        deadline = time.monotonic() + STOP_WAIT - 2  # requests in flight finish (and log)
        while server.active and time.monotonic() < deadline:
            time.sleep(0.01)


if __name__ == "__main__":
    main()
