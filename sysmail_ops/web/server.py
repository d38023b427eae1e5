"""``sysmail-ops serve``: the small web endpoint behind survey and unsubscribe links.

Routes (a reverse proxy may put them under a path prefix; the last two path
segments decide):

- ``GET /survey/<token>?score=N`` shows the question with score N chosen, an
  optional comment box and a Submit button. It records nothing: mail
  security scanners open every link of a message before the person does.
  ``POST`` records the answer (a second one updates it) and thanks.
- ``GET /unsubscribe/<token>`` shows a confirm button and records nothing;
  ``POST`` (the page's button, or a mail client's RFC 8058 one-click POST with
  ``List-Unsubscribe=One-Click``) puts the address on the suppression list.

Bad, forged or expired links get a plain page with a 4xx status, never a
traceback. Every value shown is HTML-escaped; request bodies and form fields
are capped; the access log never shows a token. Standard library only
(``http.server``): the endpoint is four routes, and a framework would be one
more thing to patch.

Under abuse: every answer, the standard library's own error pages included,
carries the security headers (``end_headers`` adds them); at most
``max_connections`` connections are handled at once (the excess gets a 503 at
once); each request has ``request_timeout`` seconds for its headers and body
together, and each read ``timeout`` seconds, so a slow client cannot hold a
thread; a client that vanishes or stalls is one log line.

With an intake (``flows.intake.IntakeQueue``), two JSON routes take events from other
systems, each authenticated by its source's bearer token (a wrong or missing one: 401,
nothing read or written):

- ``POST /events``: one event as a JSON object, or JSON lines. Each good event is
  committed to the intake queue before the answer: ``202`` with its id and status URL;
  an id the source sent before: ``200`` with its recorded status; a bad line: its own
  error in the answer, the good lines accepted. Past the queue bound: ``429`` with
  ``Retry-After``, nothing written; the store busy: ``503`` with ``Retry-After``.
- ``GET /events/<id>``: what became of it (queued, notified with each send's outcome,
  no_match, error, ...).
"""

from __future__ import annotations

import io
import json
import logging
import queue
import re
import socket
import sys
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, unquote, urlsplit

from sysmail_ops.campaigns import surveys
from sysmail_ops.config import settings
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import StoreBusyError, SysmailError, ValidationError
from sysmail_ops.flows.intake import Accepted, IntakeQueue, QueueFull, Unauthorized
from sysmail_ops.records import suppression
from sysmail_ops.sending.links import TokenError, TokenExpiredError

log = logging.getLogger("sysmail_ops.web.server")


class Intake(Protocol):
    """What the ``/events`` routes need: ``IntakeQueue`` in one process, or the front
    process's link to the process that owns the workspace (``web.front``)."""

    def source_for(self, token: str | None, *, cached: bool = False) -> str | None: ...

    def accept(self, source: str, body: bytes, *, token: str | None = None) -> list[Accepted]: ...

    def status(self, source: str, event_id: str) -> dict[str, Any] | None: ...


DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8025
MAX_BODY = 16 * 1024  # a comment of 2,000 characters, form-encoded, fits many times over
MAX_FIELDS = 20  # form fields (or query parameters) a request may carry; the forms use two
MAX_CONNECTIONS = 64  # connections handled at once; the excess gets a 503
REQUEST_TIMEOUT = 30.0  # seconds for a whole request: request line, headers and body together
READ_TIMEOUT = 20.0  # seconds a single read may wait: an idle client does not hold a thread
_ROUTE = re.compile(r"(?:^|/)(survey|unsubscribe)/([^/]+)/?$")
_EVENTS = re.compile(r"(?:^|/)events(?:/([^/]+))?/?$")
MAX_EVENTS_BODY = 4 * 1024 * 1024  # one post of events: thousands of JSON lines
JSON_TYPE = "application/json"
RETRY_FULL = "1"  # seconds a caller waits when the queue is full (it drains in ~1 s)
RETRY_BUSY = "5"  # ... when the store is busy (another process holds it)
# What a log line must not show, looked for after percent-decoding: a token (``v1.`` and its
# base64url parts, in any case), whatever follows a route name, and any long base64url-like
# run (a token's piece cut apart by an encoded line break or the like).
_TOKEN_SHAPE = re.compile(r"v1\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?", re.IGNORECASE)
_AFTER_ROUTE = re.compile(r"((?:survey|unsubscribe)/+)[^\s?\"'/]+", re.IGNORECASE)
_LONG_RUN = re.compile(r"(?<![\w%.-])(?=[\w%.-]*[\d_%-])[\w%.-]{24,}", re.ASCII)
_DECODE_ROUNDS = 5
LABELS = {
    1: "Very dissatisfied",
    2: "Dissatisfied",
    3: "Neither",
    4: "Satisfied",
    5: "Very satisfied",
}
# Every answer carries these (end_headers adds what a response did not set itself), the
# standard library's own error pages included; pages are personal, so nothing is cached.
CONTENT_TYPE = "text/html; charset=utf-8"
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never pass it on
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}
_STYLE = (
    "body{font-family:Arial,Helvetica,sans-serif;color:#222;max-width:36em;margin:3em auto;"
    "padding:0 1em;line-height:1.4}button{background:#1a5fb4;color:#fff;border:0;"
    "padding:.6em 1.2em;border-radius:4px;font-size:1em;cursor:pointer}"
    "label.score{display:block;margin:.3em 0}textarea{width:100%;min-height:6em}"
    ".note{color:#666;font-size:.9em}"
)


def redact(text: str) -> str:
    """``text`` as a log may show it: one line, every token-shaped part replaced by ``<token>``.

    Percent-encoding is undone first (a few rounds: ``%2F``, ``%76%31%2E...``, encoded twice),
    so no spelling of a path hides a token; control characters are escaped, so a request
    cannot forge a log line.
    """
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(text, errors="replace")
        if decoded == text:
            break
        text = decoded
    text = _TOKEN_SHAPE.sub("<token>", text)
    text = _AFTER_ROUTE.sub(r"\1<token>", text)
    text = _LONG_RUN.sub("<token>", text)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def page(title: str, body: str) -> bytes:
    """A whole HTML page; ``title`` is escaped here, ``body`` must be escaped by the caller."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    ).encode()


def _survey_form(claims: surveys.TokenClaims, chosen: int | None, previous: Any) -> str:
    rows = []
    for n in surveys.SCORES:
        checked = " checked" if n == chosen else ""
        rows.append(
            f'<label class="score"><input type="radio" name="score" value="{n}" required'
            f"{checked}> {n} &ndash; {escape(LABELS[n])}</label>"
        )
    about = f" ({escape(claims.campaign)})" if claims.campaign else ""
    note = ""
    if previous is not None:
        note = (
            f'<p class="note">You answered {previous.score} on '
            f"{previous.answered_at:%Y-%m-%d}; submitting again replaces that answer.</p>"
        )
    return (
        f"<p>How satisfied are you with our service{about}?</p>{note}"
        '<form method="post" action="">'
        f"<fieldset><legend>Your score</legend>{''.join(rows)}</fieldset>"
        '<p><label for="comment">Anything you would like to add? (optional)</label><br>'
        f'<textarea id="comment" name="comment" maxlength="{surveys.MAX_COMMENT}"></textarea></p>'
        '<p><button type="submit">Submit</button></p></form>'
    )


class _DeadlineReader(io.RawIOBase):
    """The socket as the handler reads it: each read waits at most the read timeout and never
    past the request's deadline, so a client sending a byte a second is still cut off."""

    def __init__(self, sock: socket.socket, handler: _Handler) -> None:
        self._sock = sock
        self._handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._handler.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the request took longer than {self._handler.request_timeout:g} s")
        self._sock.settimeout(min(self._handler.read_timeout, left))
        return self._sock.recv_into(buffer)


class _ClientGone(ConnectionError):
    """The client closed the connection before its request was complete."""


class _Handler(BaseHTTPRequestHandler):
    server: SurveyServer
    server_version = "sysmail-ops"
    sys_version = ""
    deadline = 0.0  # time.monotonic() by which the current request must have arrived

    # -- plumbing ------------------------------------------------------------------------

    def setup(self) -> None:
        self.read_timeout = self.server.read_timeout
        self.request_timeout = self.server.request_timeout
        self._sent: set[str] = set()
        self._access: tuple[Any, Any] | None = None
        super().setup()
        self.connection.settimeout(self.read_timeout)
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self))

    def handle_one_request(self) -> None:
        """One request, under its deadline; a client that vanished is one quiet log line."""
        self.deadline = time.monotonic() + self.request_timeout
        self._access = None
        self.requestline = ""
        gone = ""
        try:
            super().handle_one_request()  # a timeout is caught (and logged once) in there
        except ConnectionError as exc:
            self.close_connection = True
            gone = f"client went away ({_why(exc)})"
        if self._access is not None and not self.server.quiet:
            code, size = self._access
            tail = f" ({gone})" if gone else ""
            self.log_message('"%s" %s %s%s', self.requestline, code, size, tail)
        elif gone and self.requestline:
            self.log_message('"%s" - - (%s)', self.requestline, gone)
        elif gone:
            self.log_message("%s", gone)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        if isinstance(code, HTTPStatus):
            code = code.value
        self._access = (code, size)  # written once the answer is out (or the client gone)

    def version_string(self) -> str:
        return self.server_version  # not the Python version

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.client_address[0], redact(format % args))

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":  # a bare "GET /path": no headers to send back
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not supported")
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The standard library answers a request line it could not read as HTTP/0.9: a bare
        # page without a status line or headers. Always answer with both.
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        super().send_error(code, message, explain)

    def send_response_only(self, code: int, message: str | None = None) -> None:
        self._sent = set()
        self.connection.settimeout(self.read_timeout)  # writing: not the request's deadline
        super().send_response_only(code, message)

    def send_header(self, keyword: str, value: str) -> None:
        self._sent.add(keyword.lower())
        super().send_header(keyword, value)

    def end_headers(self) -> None:
        """Every answer, the standard library's error pages too, gets the security headers."""
        for k, v in SECURITY_HEADERS.items():
            if k.lower() not in self._sent:
                self.send_header(k, v)
        super().end_headers()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _not_allowed(self) -> None:
        self.close_connection = True  # a body we do not read must not be taken as a request
        self._send(
            HTTPStatus.METHOD_NOT_ALLOWED,
            "Not allowed",
            "<p>Open the link in a browser.</p>",
            {"Allow": "GET, HEAD, POST"},
        )

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def _send(
        self, status: int, title: str, body: str, extra: dict[str, str] | None = None
    ) -> None:
        data = page(title, body)
        self.send_response(status)
        for k, v in {"Content-Type": CONTENT_TYPE, **(extra or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        self._body_read = False
        try:
            self._route(method)
        except (ConnectionError, TimeoutError):
            raise  # the client is gone or stalled: nobody to answer (handle_one_request logs)
        except TokenExpiredError as exc:
            self._send(HTTPStatus.GONE, "This link has expired", f"<p>{escape(str(exc))}.</p>")
        except TokenError:
            self._send(
                HTTPStatus.BAD_REQUEST,
                "This link is not valid",
                "<p>The link is incomplete or was changed. Please open it again from the mail, "
                "or copy the whole address into your browser.</p>",
            )
        except StoreBusyError:
            self._send(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "Please try again",
                "<p>We are busy for a moment. Please try again in a minute.</p>",
                {"Retry-After": "30"},
            )
        except _TooLarge:
            self.close_connection = True  # the unread body must not be taken as a request
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Too much data", "<p>Too much.</p>")
        except ValidationError as exc:
            self._send(
                HTTPStatus.BAD_REQUEST, "Please check your answer", f"<p>{escape(str(exc))}.</p>"
            )
        except SysmailError as exc:
            log.warning("request failed: %s", redact(str(exc)))
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, "Something went wrong", "<p>Sorry.</p>")
        except Exception:
            log.exception("request %s %s failed", method, redact(self.path))
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, "Something went wrong", "<p>Sorry.</p>")
        if method == "POST" and not self._body_read:
            self.close_connection = True  # its unread body must not be taken as a request

    def _form(self) -> dict[str, str]:
        """The POSTed fields (urlencoded or multipart/form-data), the first value of each."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise ValidationError("send the form with a Content-Length")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ValidationError("the request has a bad Content-Length") from None
        if length > MAX_BODY:
            raise _TooLarge
        data = self.rfile.read(max(length, 0))
        if len(data) < length:
            raise _ClientGone("it closed the connection in the middle of the form")
        self._body_read = True
        ctype = self.headers.get("Content-Type", "")
        if ctype.lower().startswith("multipart/form-data"):
            return _multipart(ctype, data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError("the form is not UTF-8 text") from None
        return _fields(text)

    # -- routes --------------------------------------------------------------------------

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        ev = _EVENTS.search(url.path)
        if ev is not None and self.server.intake is not None:
            self._events(method, self.server.intake, ev.group(1))
            return
        m = _ROUTE.search(url.path)
        if m is None:
            self._send(HTTPStatus.NOT_FOUND, "Page not found", "<p>There is nothing here.</p>")
            return
        kind, token = m.group(1), unquote(m.group(2))
        if kind == "survey":
            if method == "POST":
                self._survey_post(token)
            else:
                self._survey_get(token, _fields(url.query).get("score", ""))
        elif method == "POST":
            self._unsubscribe_post(token)
        else:
            self._unsubscribe_get(token)

    # -- the event intake ----------------------------------------------------------------

    def _json(self, status: int, data: Any, extra: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        for k, v in {"Content-Type": JSON_TYPE, **(extra or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _bearer(self) -> str | None:
        scheme, _, value = self.headers.get("Authorization", "").strip().partition(" ")
        return value.strip() or None if scheme.lower() == "bearer" else None

    def _events(self, method: str, queue: Intake, event_id: str | None) -> None:
        try:
            post = event_id is None and method == "POST"
            # A post's token may come from the cache: the commit of its events checks it again.
            source = queue.source_for(self._bearer(), cached=post)
            if source is None:
                self.close_connection = True  # its body is not read
                self._unauthorized()
            elif post:
                self._post_events(queue, source)
            elif event_id is not None and method in ("GET", "HEAD"):
                found = queue.status(source, unquote(event_id))
                if found is None:
                    self._json(HTTPStatus.NOT_FOUND, {"error": "no such event from this source"})
                else:
                    self._json(
                        HTTPStatus.OK, {**found, "status_url": self._status_url(found["id"])}
                    )
            else:
                self.close_connection = True
                allow = "POST" if event_id is None else "GET, HEAD"
                self._json(
                    HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"use {allow}"}, {"Allow": allow}
                )
        except StoreBusyError:
            self._json(
                HTTPStatus.SERVICE_UNAVAILABLE,
                {"error": "the workspace is busy: try again shortly"},
                {"Retry-After": RETRY_BUSY},
            )

    def _unauthorized(self) -> None:
        self._json(
            HTTPStatus.UNAUTHORIZED,
            {"error": "a valid source token is needed (Authorization: Bearer ...)"},
            {"WWW-Authenticate": 'Bearer realm="sysmail-ops events"'},
        )

    def _status_url(self, event_id: str) -> str:
        return f"{self.server.base_url}/events/{quote(event_id, safe='')}"

    def _post_events(self, queue: Intake, source: str) -> None:
        try:
            body = self._body(MAX_EVENTS_BODY, "the events")
        except _TooLarge:
            self.close_connection = True
            self._json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"error": f"at most {MAX_EVENTS_BODY:,} bytes per post: send fewer lines"},
            )
            return
        except ValidationError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        try:
            answers = queue.accept(source, body, token=self._bearer())
        except OutcomeUnknown as exc:
            # Recorded or not, nobody can say: no answer at all, as if the server had
            # crashed (a 5xx would tell the caller "not recorded"). It posts again; the
            # same id is then answered from the record, or accepted.
            self.close_connection = True
            log.warning("%s a post got no answer: %s", self.client_address[0], exc)
            return
        except Unauthorized:
            self._unauthorized()
            return
        except QueueFull as exc:
            self._json(
                HTTPStatus.TOO_MANY_REQUESTS, {"error": str(exc)}, {"Retry-After": RETRY_FULL}
            )
            return
        events = []
        for a in answers:
            if a.error is not None:
                events.append({"line": a.line, "id": a.id, "error": a.error})
            else:
                assert a.id is not None
                events.append(
                    {
                        "line": a.line,
                        "id": a.id,
                        "status": a.status,
                        "redelivered": a.redelivered,
                        "status_url": self._status_url(a.id),
                    }
                )
        accepted = sum(1 for a in answers if a.error is None and not a.redelivered)
        again = sum(1 for a in answers if a.redelivered)
        refused = sum(1 for a in answers if a.error is not None)
        out: dict[str, Any] = {
            "accepted": accepted,
            "redelivered": again,
            "refused": refused,
            "events": events,
        }
        if len(events) == 1:
            out.update(events[0])
        if not answers:
            out["error"] = "no event in the body"
        status = (
            HTTPStatus.ACCEPTED if accepted else HTTPStatus.OK if again else HTTPStatus.BAD_REQUEST
        )
        self._json(status, out)

    def _body(self, limit: int, what: str) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise ValidationError(f"send {what} with a Content-Length")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ValidationError("the request has a bad Content-Length") from None
        if length > limit:
            raise _TooLarge
        data = self.rfile.read(max(length, 0))
        if len(data) < length:
            raise _ClientGone(f"it closed the connection in the middle of {what}")
        self._body_read = True
        return data

    def _survey_get(self, token: str, score: str) -> None:
        ws = self.server.workspace
        claims = surveys.verify_token(ws, token, "survey")
        try:
            chosen: int | None = surveys.check_score(score)
        except ValidationError:
            chosen = None  # no or a bad score in the link: let the person choose
        previous = surveys.get_response(ws, claims.campaign, claims.contact)
        self._send(HTTPStatus.OK, "Your opinion", _survey_form(claims, chosen, previous))

    def _survey_post(self, token: str) -> None:
        ws = self.server.workspace
        surveys.verify_token(ws, token, "survey")  # a bad link says so before the form's errors
        form = self._form()
        if not form.get("score"):
            raise ValidationError("please choose a score from 1 to 5")
        got = surveys.record_survey_response(ws, token, form["score"], form.get("comment"))
        what = "updated" if got.updated else "recorded"
        self._send(
            HTTPStatus.OK,
            "Thank you",
            f"<p>Your answer ({got.score} &ndash; {escape(LABELS[got.score])}) is {what}.</p>"
            '<p class="note">You can close this page.</p>',
        )

    def _unsubscribe_get(self, token: str) -> None:
        ws = self.server.workspace
        claims = surveys.verify_token(ws, token, "unsubscribe")
        addr = escape(claims.email)
        if suppression.get_entry(ws, claims.email) is not None:
            self._send(HTTPStatus.OK, "Unsubscribed", f"<p>{addr} is already unsubscribed.</p>")
            return
        self._send(
            HTTPStatus.OK,
            "Unsubscribe",
            f"<p>Stop marketing, follow-up and survey mail to <strong>{addr}</strong>?</p>"
            '<form method="post" action="">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>'
            '<p class="note">Notices about your own cases and requests still reach you.</p>',
        )

    def _unsubscribe_post(self, token: str) -> None:
        ws = self.server.workspace
        claims = surveys.verify_token(ws, token, "unsubscribe")
        self._form()  # read (and cap) the body: one-click or the page's button, same effect
        source = f"campaign:{claims.campaign}" if claims.campaign else "unsubscribe link"
        entry, new = suppression.add(ws, claims.email, reason="unsubscribe", source=source)
        log.info("unsubscribed an address (%s)", "new" if new else "already listed")
        self._send(
            HTTPStatus.OK,
            "Unsubscribed",
            f"<p>{escape(entry.address)} will get no more marketing, follow-up or survey mail "
            "from us.</p>",
        )


class _TooLarge(Exception):
    pass


class OutcomeUnknown(SysmailError):
    """A post's events may or may not have been recorded (the owner process went away
    while recording them): the caller gets no answer and posts again."""


def _why(exc: OSError) -> str:
    return str(exc) if isinstance(exc, _ClientGone) else (exc.strerror or type(exc).__name__)


def _too_many() -> ValidationError:
    return ValidationError(f"the form has too many fields (at most {MAX_FIELDS})")


def _fields(text: str) -> dict[str, str]:
    """Urlencoded fields (a form body or a query string), the first value of each."""
    try:
        fields = parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        raise _too_many() from None
    return {k: v[0] for k, v in fields.items()}


def _multipart(ctype: str, data: bytes) -> dict[str, str]:
    """Fields of a multipart/form-data body (RFC 7578), as RFC 8058 clients may send it."""
    head = f"Content-Type: {ctype}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    msg = BytesParser(policy=HTTP).parsebytes(head + data)
    out: dict[str, str] = {}
    if not msg.is_multipart():
        return out
    parts = list(msg.iter_parts())
    if len(parts) > MAX_FIELDS:
        raise _too_many()
    for part in parts:
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str) and name not in out:
            payload = part.get_payload(decode=True)
            out[name] = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return out


class SurveyServer(ThreadingHTTPServer):
    """The endpoint bound to one workspace; at most ``max_connections`` connections at
    once (the excess gets a 503 at once), each handled by a thread of a pool that grows
    to the most connections held at once and is kept. The accepting thread only hands
    a connection over: starting a thread per connection made it wait, for each one, for
    the new thread to get the GIL (~40% of its time while the intake worker sends)."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog (stdlib: 5): a burst of posters is not reset

    def __init__(
        self,
        ws: Workspace | None,
        address: tuple[str, int],
        *,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout: float = REQUEST_TIMEOUT,
        timeout: float = READ_TIMEOUT,
        intake: Intake | None = None,
        base_url: str | None = None,
        listen: socket.socket | None = None,
        quiet: bool = False,
    ):
        """``ws`` None: a front process, which never opens the workspace (``web.front``);
        ``base_url`` then says where status URLs point. ``listen``: a socket already
        bound and listening (handed over by the process that bound it), instead of
        ``address``. ``quiet``: no access log line (the front logs each request)."""
        self.ws = ws
        self.intake = intake
        if base_url is None:
            assert ws is not None, "a server without a workspace needs its base_url"
            base_url = str(settings.get_setting(ws, "public_base_url"))
        self.base_url = base_url.rstrip("/")
        self.quiet = quiet
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.read_timeout = timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._count_lock = threading.Lock()
        self._active = 0
        self._handed: queue.SimpleQueue[tuple[Any, Any] | None] = queue.SimpleQueue()
        self._pool: list[threading.Thread] = []  # grown by the accepting thread only
        if listen is not None:
            self.address_family = listen.family
            super().__init__(listen.getsockname()[:2], _Handler, bind_and_activate=False)
            self.socket.close()
            self.socket = listen
            self.server_address = listen.getsockname()[:2]
            return
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    @property
    def workspace(self) -> Workspace:
        """The workspace the survey and unsubscribe routes use (never in a front process)."""
        if self.ws is None:
            raise SysmailError("this process serves no workspace")
        return self.ws

    @property
    def active(self) -> int:
        """Connections being handled now."""
        with self._count_lock:
            return self._active

    def _count(self, step: int) -> None:
        with self._count_lock:
            self._active += step

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            _busy(request, self.max_connections)
            self.shutdown_request(request)
            return
        self._count(1)
        try:
            if len(self._pool) < self.active:  # a thread for every connection in hand
                name = f"http-{len(self._pool) + 1}"
                thread = threading.Thread(target=self._serve_handed, name=name, daemon=True)
                thread.start()
                self._pool.append(thread)
        except BaseException:
            self._count(-1)
            self._slots.release()
            raise
        self._handed.put((request, client_address))

    def _serve_handed(self) -> None:
        """A pool thread: handle the connections handed over until ``server_close``."""
        while (handed := self._handed.get()) is not None:
            self.process_request_thread(*handed)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._count(-1)
            self._slots.release()

    def server_close(self) -> None:
        super().server_close()
        for _ in self._pool:  # each idle thread takes one and ends; busy ones finish first
            self._handed.put(None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line, never a traceback on stderr; a traceback only for our own bugs."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.info("%s connection failed: %s", client_address[0], redact(str(exc)))
        else:
            log.error("%s request failed", client_address[0], exc_info=True)

    @property
    def url(self) -> str:
        """Where this server listens (the port chosen when it was given 0)."""
        return listen_url(self.server_address)


def listen_url(address: tuple[Any, ...]) -> str:
    """``http://HOST:PORT`` for a socket's address (an IPv6 host in brackets)."""
    raw = address[0]
    host = raw.decode() if isinstance(raw, bytes) else str(raw)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{address[1]}"


def _busy(sock: socket.socket, limit: int) -> None:
    """Answer a connection over the limit with a 503, without reading it."""
    body = page(
        "Please try again", "<p>We are busy for a moment. Please try again in a minute.</p>"
    )
    head = [
        "HTTP/1.1 503 Service Unavailable",
        f"Content-Type: {CONTENT_TYPE}",
        *(f"{k}: {v}" for k, v in SECURITY_HEADERS.items()),
        "Retry-After: 30",
        "Connection: close",
        f"Content-Length: {len(body)}",
    ]
    try:
        sock.settimeout(1)
        sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        sock.setblocking(False)
        sock.recv(65536)  # what already came: closing with it unread would reset the answer
    except OSError:
        pass
    log.info("busy: %d connections at once; one more got 503", limit)


def make_server(
    ws: Workspace,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    max_connections: int = MAX_CONNECTIONS,
    request_timeout: float = REQUEST_TIMEOUT,
    timeout: float = READ_TIMEOUT,
    intake: IntakeQueue | None = None,
    quiet: bool = False,
) -> SurveyServer:
    """A bound server, not yet serving: call ``serve_forever()`` (a thread in tests).

    ``max_connections``: handled at once (the excess gets a 503); ``request_timeout``: seconds
    for a whole request (request line, headers, body); ``timeout``: seconds one read may wait.
    ``intake``: the event intake to serve (``/events``); its worker is started by the caller.
    ``quiet``: no access log (a server only ``serve``'s front process talks to).
    """
    if isinstance(max_connections, bool) or not isinstance(max_connections, int):
        raise ValidationError(f"max_connections must be a whole number, got {max_connections!r}")
    if max_connections < 1:
        raise ValidationError(f"max_connections must be at least 1, got {max_connections}")
    for what, value in (("request_timeout", request_timeout), ("timeout", timeout)):
        if not (isinstance(value, int | float) and 0 < value < 86400):
            raise ValidationError(f"{what} must be seconds above 0, got {value!r}")
    try:
        return SurveyServer(
            ws,
            (host, port),
            max_connections=max_connections,
            request_timeout=request_timeout,
            timeout=timeout,
            intake=intake,
            quiet=quiet,
        )
    except OSError as exc:
        raise ValidationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
