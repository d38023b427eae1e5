"""SMTP: TLS/STARTTLS with verified certificates, AUTH, and the connection test.

Nothing else in the toolkit talks SMTP. Certificates are always verified
(the account's CA bundle is added for private relays); STARTTLS, when
configured, is required, never silently skipped; AUTH is never sent over an
unencrypted connection to a non-local host unless the account opts in.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import select
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from types import TracebackType
from typing import Any

from sysmail_ops.errors import InsecureAuthError, SMTPError, SysmailError
from sysmail_ops.mail.addresses import is_loopback
from sysmail_ops.mail.credentials import MASK, Secret, Token

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class SMTPServer:
    """Where and how to reach one system email's server: plain values, never a password."""

    name: str  # the system email's name, for messages
    host: str
    port: int
    security: str  # starttls | ssl | none
    login: str
    needs_login: bool = True
    ca_bundle: str | None = None
    allow_insecure_auth: bool = False
    auth: str = "password"  # password (AUTH PLAIN/LOGIN/CRAM-MD5) | xoauth2 (an access token)


@cache
def local_hostname() -> str:
    """The name we EHLO with, computed once: smtplib would call getfqdn() per connection."""
    return socket.getfqdn()


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """System trust store plus the account's CA bundle; hostname checking stays on."""
    ctx = ssl.create_default_context()
    if ca_bundle:
        ctx.load_verify_locations(cafile=ca_bundle)
    return ctx


_MASK = MASK.encode("ascii")


def secret_masker(login: str, password: str) -> Callable[[bytes], bytes]:
    """A function that hides ``password`` in a server reply: in clear and in base64.

    A server may echo what AUTH sent: PLAIN's ``base64(\\0login\\0password)``,
    LOGIN's ``base64(password)`` and ``base64(login)``, or the password itself.
    Those forms are replaced by the mask, and so is any other base64 run that
    decodes to something holding the password (another authzid, no padding,
    glued to other letters).
    """
    pw = password.encode("utf-8", "surrogateescape")
    if not pw:
        return lambda reply: reply
    lg = login.encode("utf-8", "surrogateescape")
    encoded = [
        base64.b64encode(form)
        for form in (b"\0" + lg + b"\0" + pw, lg + b"\0" + lg + b"\0" + pw, pw, lg)
        if form
    ]
    # Padded first, so that no bare "==" is left behind; the longest first.
    forms = sorted({*encoded, *(e.rstrip(b"=") for e in encoded)}, key=len, reverse=True)
    shortest = len(base64.b64encode(pw).rstrip(b"="))  # no shorter base64 run can hold it
    runs = re.compile(rb"[A-Za-z0-9+/]{%d,}" % shortest)

    def hide_run(m: re.Match[bytes]) -> bytes:
        run = m.group(0)
        for start in range(4):  # the run may be glued to letters that are not part of it
            chunk = run[start:]
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            try:
                if pw in base64.b64decode(chunk, validate=True):
                    return _MASK
            except (binascii.Error, ValueError):
                continue
        return run

    def mask(reply: bytes) -> bytes:
        for form in forms:
            reply = reply.replace(form, _MASK)
        return runs.sub(hide_run, reply.replace(pw, _MASK))

    return mask


def mask_secret(reply: bytes, login: str, password: str) -> bytes:
    """``reply`` with every clear or base64 form of ``password`` masked (see ``secret_masker``)."""
    return secret_masker(login, password)(reply)


def xoauth2_response(login: str, token: str) -> str:
    """SASL XOAUTH2's initial client response, before base64 (Google's and Microsoft's format)."""
    return f"user={login}\x01auth=Bearer {token}\x01\x01"


# Replies by which a provider says it no longer takes a password for this login.
_BASIC_AUTH_REFUSALS = (
    (
        re.compile(r"5\.7\.30|basic authentication is not supported", re.I),
        "Microsoft 365 no longer accepts passwords for SMTP AUTH",
    ),
    (
        re.compile(r"application-specific password|app password|5\.7\.9\b", re.I),
        "Google wants an app password or OAuth2 here, not the account password",
    ),
    (
        re.compile(r"5\.7\.8.*badcredentials|badcredentials.*5\.7\.8", re.I | re.S),
        "Google refused the password (if it is the account password: Google takes only "
        "an app password or OAuth2)",
    ),
)


def basic_auth_hint(reply: str, name: str = "NAME") -> str | None:
    """A hint to switch to OAuth2 when ``reply`` is a provider's refusal of password logins."""
    for pattern, why in _BASIC_AUTH_REFUSALS:
        if pattern.search(reply):
            return (
                f"{why}: switch the system email to OAuth2 (`sysmail-ops accounts edit {name} "
                "--auth oauth2 --oauth-provider microsoft|google ...`, then `sysmail-ops "
                f"accounts authorize {name}`; README: Microsoft 365 / Google Workspace)"
            )
    return None


class _UTF8(str):
    """AUTH data that smtplib's ``.encode("ascii")`` turns into UTF-8 (RFC 4616, RFC 6531)."""

    __slots__ = ()

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return str.encode(self, "utf-8", errors)


class _MaskingSMTP(smtplib.SMTP):
    """smtplib's client, whose every reply passes ``mask`` once AUTH has begun.

    Replies are where a server's words enter: the greeting, EHLO, AUTH, MAIL,
    RCPT, DATA, and so every ``SMTPError``, ``Outcome`` and log row made of
    them. Before AUTH the server has not seen the password (and EHLO's
    keywords must stay as they are).

    AUTH data goes out as UTF-8: smtplib encodes it as ASCII, so a password
    such as "pässwort" raised UnicodeEncodeError.
    """

    mask: Callable[[bytes], bytes] | None = None

    def getreply(self) -> tuple[int, bytes]:
        code, msg = super().getreply()
        return code, (self.mask(msg) if self.mask else msg)

    def auth(
        self,
        mechanism: str,
        authobject: Callable[..., str | None],
        *,
        initial_response_ok: bool = True,
    ) -> tuple[int, bytes]:
        def utf8(challenge: bytes | None = None) -> str | None:
            data = authobject(challenge)
            return None if data is None else _UTF8(data)

        return super().auth(mechanism, utf8, initial_response_ok=initial_response_ok)  # type: ignore[arg-type]

    def auth_cram_md5(self, challenge: bytes | None = None) -> str | None:  # type: ignore[override]
        if challenge is None:
            return None
        key = str(self.password).encode("utf-8")  # smtplib: .encode("ascii")
        return f"{self.user} {hmac.HMAC(key, challenge, 'md5').hexdigest()}"


class _MaskingSMTP_SSL(_MaskingSMTP, smtplib.SMTP_SSL):
    pass


def _reply(exc: smtplib.SMTPResponseException) -> str:
    msg = exc.smtp_error
    return msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)


def _describe_os_error(exc: OSError, host: str, port: int, timeout: float) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {host!r} ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {host}:{port} (nothing listens there?)"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer from {host}:{port} within {timeout:g} s"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"{host}:{port} closed the connection ({exc})"
    return f"cannot connect to {host}:{port}: {exc.strerror or exc}"


def _describe_tls_error(exc: ssl.SSLError, server: SMTPServer) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason or "certificate not trusted"
        hint = "" if server.ca_bundle else "; for a private relay set the account's CA bundle"
        return f"TLS certificate of {server.host} not accepted: {why}{hint}"
    return f"TLS handshake with {server.host} failed: {exc.reason or exc}"


@dataclass(frozen=True)
class Outcome:
    """What became of one recipient of one attempt: sent, deferred (4xx, dropped) or failed."""

    status: str
    phase: str | None = None
    code: int | None = None
    reply: str = ""

    @classmethod
    def from_reply(cls, phase: str, code: int, reply: bytes | str) -> Outcome:
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        if 200 <= code < 300:
            return cls("sent", phase, code, text)
        return cls("deferred" if 400 <= code < 500 else "failed", phase, code, text)


ACCEPTED = Outcome("sent", "data", 250, "")


def envelope_bytes(mail_from: str, rcpts: list[str], smtputf8: bool) -> bytes:
    """MAIL, RCPT... and DATA as one pipelined group (RFC 2920: DATA ends a group)."""
    enc = "utf-8" if smtputf8 else "ascii"
    head = [b"MAIL FROM:<" + mail_from.encode(enc) + (b"> SMTPUTF8\r\n" if smtputf8 else b">\r\n")]
    head += [b"RCPT TO:<" + r.encode(enc) + b">\r\n" for r in rcpts]
    return b"".join(head) + b"DATA\r\n"


def data_bytes(data: bytes) -> bytes:
    """A message's content on the wire after 354: dot-stuffed, ended by "." on a line."""
    body = (b"." + data if data.startswith(b".") else data).replace(b"\r\n.", b"\r\n..")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


class SMTPConnection:
    """One SMTP session for one account; ``open()`` runs connect, TLS and AUTH.

    Each failure is raised as ``SMTPError`` naming the step (connect, tls,
    ehlo, auth) and carrying the server's code and reply.
    """

    def __init__(
        self,
        server: SMTPServer,
        password: Secret,
        timeout: float = DEFAULT_TIMEOUT,
        pipelining: bool | None = None,
    ):
        self.server = server
        self.pipelining = pipelining  # None: use it when the server offers PIPELINING
        self._password = password
        self.timeout = timeout
        self.smtp: _MaskingSMTP | None = None
        self.greeting = ""
        self.tls_version: str | None = None

    def __repr__(self) -> str:
        a = self.server
        return f"SMTPConnection({a.name!r}, {a.host}:{a.port}, {a.security})"

    def __enter__(self) -> SMTPConnection:
        self.open()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _fail(self, step: str, message: str, code: int | None = None, reply: str = "") -> SMTPError:
        self.close()
        return SMTPError(f"{step}: {message}", step=step, code=code, reply=reply)

    def open(self) -> str:
        """Connect, secure and log in. Returns the server's greeting."""
        a = self.server
        if (
            a.needs_login
            and a.security == "none"
            and not is_loopback(a.host)
            and not a.allow_insecure_auth
        ):
            raise InsecureAuthError(
                f"auth: refusing to send the password of {a.name!r} unencrypted to "
                f"{a.host}; use starttls/ssl or set allow_insecure_auth"
            )
        ctx = tls_context(a.ca_bundle) if a.security != "none" else None
        smtp: _MaskingSMTP
        if a.security == "ssl":
            smtp = _MaskingSMTP_SSL(
                local_hostname=local_hostname(), timeout=self.timeout, context=ctx
            )
        else:
            smtp = _MaskingSMTP(local_hostname=local_hostname(), timeout=self.timeout)
        # connect() does not record the host that starttls()/SMTP_SSL need for
        # certificate checks (only the constructor does, and it drops the greeting).
        smtp._host = a.host  # type: ignore[attr-defined]
        self.smtp = smtp
        step = "tls" if a.security == "ssl" else "connect"
        try:
            code, msg = smtp.connect(a.host, a.port)
        except ssl.SSLError as exc:
            raise self._fail("tls", _describe_tls_error(exc, a)) from None
        except OSError as exc:
            why = _describe_os_error(exc, a.host, a.port, self.timeout)
            raise self._fail(step, why) from None
        self.greeting = text = msg.decode("utf-8", "replace")
        if code != 220:
            raise self._fail("connect", f"server refused: {code} {text}", code, text)
        try:
            self._ehlo()
            if a.security == "starttls":
                self._starttls(ctx)
            if a.needs_login and self._password:
                self._login()
        except smtplib.SMTPResponseException as exc:
            text = _reply(exc)
            raise self._fail("ehlo", f"{exc.smtp_code} {text}", exc.smtp_code, text) from None
        except OSError as exc:
            why = _describe_os_error(exc, a.host, a.port, self.timeout)
            raise self._fail("ehlo", why) from None
        sock = smtp.sock
        self.tls_version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
        return self.greeting

    def _ehlo(self) -> None:
        assert self.smtp is not None
        code, msg = self.smtp.ehlo()
        if code != 250:
            code, msg = self.smtp.helo()
            if code != 250:
                text = msg.decode("utf-8", "replace")
                raise self._fail("ehlo", f"server answered {code} {text}", code, text)

    def _starttls(self, ctx: ssl.SSLContext | None) -> None:
        assert self.smtp is not None
        if not self.smtp.has_extn("starttls"):
            raise self._fail(
                "tls",
                f"{self.server.host} does not offer STARTTLS; refusing to continue "
                "unencrypted (choose security 'none' only for a trusted local relay)",
            )
        try:
            self.smtp.starttls(context=ctx)
        except ssl.SSLError as exc:
            raise self._fail("tls", _describe_tls_error(exc, self.server)) from None
        except smtplib.SMTPResponseException as exc:
            raise self._fail(
                "tls", f"STARTTLS refused: {exc.smtp_code} {_reply(exc)}", exc.smtp_code
            ) from None
        self._ehlo()

    def _login(self) -> None:
        assert self.smtp is not None
        if not self.smtp.has_extn("auth"):
            raise self._fail(
                "auth",
                f"{self.server.host} offers no AUTH on this connection; "
                "clear the password if the relay needs no login",
            )
        if self.server.auth == "xoauth2":
            self._login_xoauth2()
            return
        # From here on the server has the password and may echo it in any reply.
        self.smtp.mask = secret_masker(self.server.login, self._password.reveal())
        try:
            self.smtp.login(self.server.login, self._password.reveal())
        except smtplib.SMTPAuthenticationError as exc:
            text = _reply(exc)
            hint = basic_auth_hint(text, self.server.name)
            raise self._fail(
                "auth",
                f"login as {self.server.login} rejected: {exc.smtp_code} {text}"
                + (f"; {hint}" if hint else ""),
                exc.smtp_code,
                text,
            ) from None
        except smtplib.SMTPException as exc:
            raise self._fail("auth", f"login as {self.server.login} failed: {exc}") from None

    def _login_xoauth2(self) -> None:
        """AUTH XOAUTH2 with the access token; a refused token is renewed once and tried again."""
        assert self.smtp is not None
        login = self.server.login
        offered = self.smtp.esmtp_features.get("auth", "").upper().split()
        if "XOAUTH2" not in offered:
            raise self._fail(
                "auth",
                f"{self.server.host} does not offer AUTH XOAUTH2 (it offers: "
                f"{' '.join(offered) or 'nothing'})",
            )
        token = self._password
        for attempt in (1, 2):
            # The token is a secret like a password: masked in every reply from here on.
            self.smtp.mask = secret_masker(login, token.reveal())
            response = xoauth2_response(login, token.reveal())
            try:
                # A refusal may come as a 334 challenge (the error, in JSON): answer it empty.
                self.smtp.auth(
                    "XOAUTH2", lambda challenge=None, r=response: r if challenge is None else ""
                )
                return
            except smtplib.SMTPAuthenticationError as exc:
                text = _reply(exc)
                try:
                    fresh = token.renewed() if attempt == 1 and isinstance(token, Token) else None
                except SysmailError:  # cannot renew (revoked...): its own line goes up
                    self.close()
                    raise
                if fresh is not None:
                    self._password = token = fresh
                    continue
                raise self._fail(
                    "auth",
                    f"XOAUTH2 login as {login} rejected: {exc.smtp_code} {text}",
                    exc.smtp_code,
                    text,
                ) from None
            except smtplib.SMTPException as exc:
                raise self._fail("auth", f"XOAUTH2 login as {login} failed: {exc}") from None

    def close(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def mask_reply(self, reply: bytes) -> bytes:
        """A reply read past smtplib (``mail.pipelining``), masked as ``getreply`` masks."""
        mask = self.smtp.mask if self.smtp is not None else None
        return mask(reply) if mask else reply

    @property
    def size_limit(self) -> int | None:
        """The largest message the server takes (RFC 1870 SIZE from EHLO); None: not stated
        (or 0, which says there is no fixed maximum)."""
        value = self.smtp.esmtp_features.get("size", "") if self.smtp is not None else ""
        try:
            size = int(value.split()[0]) if value.strip() else 0
        except ValueError:
            return None
        return size if size > 0 else None

    @property
    def supports_smtputf8(self) -> bool:
        return bool(self.smtp and self.smtp.has_extn("smtputf8"))

    @property
    def is_open(self) -> bool:
        return self.smtp is not None and self.smtp.sock is not None

    def closed_by_server(self) -> bool:
        """Whether the server hung up (or spoke unasked, as a 421 before closing) since its
        last reply; asked without waiting, before a connection left idle is used again."""
        sock = self.smtp.sock if self.smtp is not None else None
        if sock is None:
            return True
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def send_bytes(self, mail_from: str, rcpts: list[str], data: bytes) -> dict[str, Any]:
        """Send one serialised message; returns the recipients the server refused."""
        if self.smtp is None:
            raise SMTPError("send: connection is not open", step="send")
        return self.smtp.sendmail(mail_from, rcpts, data)

    def deliver(
        self, mail_from: str, rcpts: list[str], data: bytes, *, smtputf8: bool = False
    ) -> dict[str, Outcome]:
        """Send one message and classify the server's answer for each recipient.

        A dropped connection is a temporary outcome for every recipient; the
        caller reconnects (``is_open`` is then false) and retries.
        """
        if not self.is_open:
            raise SMTPError("send: connection is not open", step="send")
        assert self.smtp is not None
        options = ["SMTPUTF8"] if smtputf8 else []
        try:
            if self.use_pipelining:
                return self._pipelined(mail_from, rcpts, data, smtputf8)
            refused = self.smtp.sendmail(mail_from, rcpts, data, mail_options=options)
        except smtplib.SMTPRecipientsRefused as exc:
            return {r: Outcome.from_reply("rcpt", c, m) for r, (c, m) in exc.recipients.items()}
        except smtplib.SMTPSenderRefused as exc:
            return dict.fromkeys(rcpts, Outcome.from_reply("mail", exc.smtp_code, exc.smtp_error))
        except smtplib.SMTPDataError as exc:
            return dict.fromkeys(rcpts, Outcome.from_reply("data", exc.smtp_code, exc.smtp_error))
        except smtplib.SMTPResponseException as exc:
            self._drop_if_closing(exc.smtp_code)
            return dict.fromkeys(rcpts, Outcome.from_reply("data", exc.smtp_code, exc.smtp_error))
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self.close()
            lost = Outcome(
                "deferred", "data", None, f"connection lost: {exc or type(exc).__name__}"
            )
            return dict.fromkeys(rcpts, lost)
        out = dict.fromkeys(rcpts, ACCEPTED)
        for r, (c, m) in refused.items():
            out[r] = Outcome.from_reply("rcpt", c, m)
        return out

    @property
    def use_pipelining(self) -> bool:
        if self.pipelining is not None:
            return self.pipelining
        return bool(self.smtp and self.smtp.has_extn("pipelining"))

    def _pipelined(
        self, mail_from: str, rcpts: list[str], data: bytes, smtputf8: bool
    ) -> dict[str, Outcome]:
        """RFC 2920: MAIL, RCPT... and DATA in one write, then the body: two round trips.

        Raises what smtplib raises for a lost connection; ``deliver`` turns that
        into a temporary outcome.
        """
        smtp = self.smtp
        assert smtp is not None
        smtp.send(envelope_bytes(mail_from, rcpts, smtputf8))
        mail_code, mail_msg = smtp.getreply()
        rcpt_replies = [smtp.getreply() for _ in rcpts]
        data_code, data_msg = smtp.getreply()
        out: dict[str, Outcome] = {}
        if not 200 <= mail_code < 300:
            out = dict.fromkeys(rcpts, Outcome.from_reply("mail", mail_code, mail_msg))
        else:
            for r, (code, msg) in zip(rcpts, rcpt_replies, strict=True):
                if not 200 <= code < 300:
                    out[r] = Outcome.from_reply("rcpt", code, msg)
        accepted = [r for r in rcpts if r not in out]
        if data_code == 354:
            if not accepted:  # a server that says 354 with no recipient gets an empty message
                smtp.send(b".\r\n")
                smtp.getreply()
            else:
                smtp.send(data_bytes(data))
                code, msg = smtp.getreply()
                result = ACCEPTED if code == 250 else Outcome.from_reply("data", code, msg)
                out.update(dict.fromkeys(accepted, result))
                self._drop_if_closing(code)
                return out
        else:
            out.update(dict.fromkeys(accepted, Outcome.from_reply("data", data_code, data_msg)))
        if 421 in (mail_code, data_code, *(c for c, _ in rcpt_replies)):
            self.close()
        else:
            smtp.rset()
        return out

    def _drop_if_closing(self, code: int) -> None:
        if code == 421:
            self.close()


@dataclass(frozen=True)
class ConnectionTestResult:
    """What a connection test found: the step reached, the server's words, the time taken."""

    account: str
    ok: bool
    step: str
    message: str
    code: int | None = None
    greeting: str = ""
    sent_to: str | None = None
    duration_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def test_connection(
    server: SMTPServer, password: Secret, *, timeout: float = 10.0
) -> ConnectionTestResult:
    """Connect, EHLO, TLS and AUTH; say which step failed and what the server said."""
    started = time.perf_counter()
    conn = SMTPConnection(server, password, timeout=timeout)

    def result(ok: bool, step: str, msg: str, code: int | None = None) -> ConnectionTestResult:
        return ConnectionTestResult(
            account=server.name,
            ok=ok,
            step=step,
            message=msg,
            code=code,
            greeting=conn.greeting,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    try:
        conn.open()
    except SMTPError as exc:
        return result(False, exc.step, str(exc), exc.code)
    except InsecureAuthError as exc:
        return result(False, "auth", str(exc))
    except SysmailError as exc:  # a refused token that could not be renewed (OAuthError)
        return result(False, "auth", f"auth: {exc}")
    finally:
        conn.close()
    tls = f", {conn.tls_version}" if conn.tls_version else ", unencrypted"
    login = f", logged in as {server.login}" if server.needs_login else ", no login"
    if server.needs_login and server.auth == "xoauth2":
        login += " (OAuth2, XOAUTH2)"
    return result(True, "done", f"connected{tls}{login}")
