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
traceback. Every value shown is HTML-escaped; request bodies are capped; the
access log never shows a token. Standard library only (``http.server``): the
endpoint is four routes, and a framework would be one more thing to patch.
"""

from __future__ import annotations

import logging
import re
import socket
from email.parser import BytesParser
from email.policy import HTTP
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sysmail_ops.campaigns import surveys
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import StoreBusyError, SysmailError, ValidationError
from sysmail_ops.records import suppression
from sysmail_ops.sending.links import TokenError, TokenExpiredError

log = logging.getLogger("sysmail_ops.web.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8025
MAX_BODY = 16 * 1024  # a comment of 2,000 characters, form-encoded, fits many times over
_ROUTE = re.compile(r"(?:^|/)(survey|unsubscribe)/([^/]+)/?$")
_TOKEN_IN_TEXT = re.compile(r"(/(?:survey|unsubscribe)/)[^\s?\"'/]+")
LABELS = {
    1: "Very dissatisfied",
    2: "Dissatisfied",
    3: "Neither",
    4: "Satisfied",
    5: "Very satisfied",
}
_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
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
    """``text`` with every link token replaced: what access logs may show."""
    return _TOKEN_IN_TEXT.sub(r"\1<token>", text)


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


class _Handler(BaseHTTPRequestHandler):
    server: SurveyServer
    server_version = "sysmail-ops"
    sys_version = ""
    timeout = 20  # seconds a slow client may take: a thread is not held forever

    # -- plumbing ------------------------------------------------------------------------

    def version_string(self) -> str:
        return self.server_version  # not the Python version

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.client_address[0], redact(format % args))

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _send(
        self, status: int, title: str, body: str, extra: dict[str, str] | None = None
    ) -> None:
        data = page(title, body)
        self.send_response(status)
        for k, v in {**_HEADERS, **(extra or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        try:
            self._route(method)
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
        ctype = self.headers.get("Content-Type", "")
        if ctype.lower().startswith("multipart/form-data"):
            return _multipart(ctype, data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError("the form is not UTF-8 text") from None
        fields = parse_qs(text, keep_blank_values=True, max_num_fields=20)
        return {k: v[0] for k, v in fields.items()}

    # -- routes --------------------------------------------------------------------------

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        m = _ROUTE.search(url.path)
        if m is None:
            self._send(HTTPStatus.NOT_FOUND, "Page not found", "<p>There is nothing here.</p>")
            return
        kind, token = m.group(1), unquote(m.group(2))
        if kind == "survey":
            if method == "POST":
                self._survey_post(token)
            else:
                self._survey_get(token, parse_qs(url.query).get("score", [""])[0])
        elif method == "POST":
            self._unsubscribe_post(token)
        else:
            self._unsubscribe_get(token)

    def _survey_get(self, token: str, score: str) -> None:
        ws = self.server.ws
        claims = surveys.verify_token(ws, token, "survey")
        try:
            chosen: int | None = surveys.check_score(score)
        except ValidationError:
            chosen = None  # no or a bad score in the link: let the person choose
        previous = surveys.get_response(ws, claims.campaign, claims.contact)
        self._send(HTTPStatus.OK, "Your opinion", _survey_form(claims, chosen, previous))

    def _survey_post(self, token: str) -> None:
        ws = self.server.ws
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
        ws = self.server.ws
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
        ws = self.server.ws
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


def _multipart(ctype: str, data: bytes) -> dict[str, str]:
    """Fields of a multipart/form-data body (RFC 7578), as RFC 8058 clients may send it."""
    head = f"Content-Type: {ctype}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    msg = BytesParser(policy=HTTP).parsebytes(head + data)
    out: dict[str, str] = {}
    if not msg.is_multipart():
        return out
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str) and name not in out:
            payload = part.get_payload(decode=True)
            out[name] = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return out


class SurveyServer(ThreadingHTTPServer):
    """The endpoint bound to one workspace; one thread per request."""

    daemon_threads = True

    def __init__(self, ws: Workspace, address: tuple[str, int]):
        self.ws = ws
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        """Where this server listens (the port chosen when it was given 0)."""
        raw = self.server_address[0]
        host = raw.decode() if isinstance(raw, bytes) else str(raw)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.server_address[1]}"


def make_server(ws: Workspace, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> SurveyServer:
    """A bound server, not yet serving: call ``serve_forever()`` (a thread in tests)."""
    try:
        return SurveyServer(ws, (host, port))
    except OSError as exc:
        raise ValidationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
