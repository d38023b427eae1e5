"""IMAP: read a mailbox without changing it (received archiving), and its connection test.

Built on the standard library's ``imaplib``; nothing here writes to the
server: folders are opened with EXAMINE (read-only) and messages read with
``BODY.PEEK[]``, so no flag, move or delete ever happens.

Security is the SMTP side's: TLS (``ssl``: implicit, port 993; ``starttls``:
required, never skipped) with certificates verified against the system store
plus the account's CA bundle; a login never travels unencrypted to a
non-local host unless the account opts in.

The login step is pluggable. ``IMAPConnection(server, login)`` takes ``login``,
a ``Login``: any callable that receives the connected (and secured)
``imaplib.IMAP4`` and authenticates on it, raising ``imaplib.IMAP4.error``
when the server refuses. ``password_login(user, secret)`` is the password one
(AUTHENTICATE PLAIN in UTF-8 where offered, else LOGIN). An OAuth2 login
passes its own, e.g.::

    def xoauth2(imap: imaplib.IMAP4) -> None:
        token = provider()  # fresh access token, never logged
        imap.authenticate("XOAUTH2", lambda _: f"user={user}\\1auth=Bearer {token}\\1\\1".encode())

    IMAPConnection(server, xoauth2)

Large messages are streamed: a literal bigger than ``spool_over`` bytes is
copied from the socket in 1 MiB chunks into a file the caller opens
(``spool``, e.g. a 0600 file in the workspace), never held in memory whole.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from types import TracebackType
from typing import IO, Any

from sysmail_ops.errors import IMAPError, InsecureAuthError, SysmailError
from sysmail_ops.mail.addresses import is_loopback
from sysmail_ops.mail.credentials import Secret, Token
from sysmail_ops.mail.smtp import (
    ConnectionTestResult,
    _describe_os_error,
    secret_masker,
    tls_context,
    xoauth2_response,
)

__all__ = [
    "Fetched",
    "FolderInfo",
    "IMAPConnection",
    "IMAPServer",
    "Login",
    "Spooled",
    "password_login",
    "test_connection",
    "xoauth2_login",
]

DEFAULT_TIMEOUT = 30.0
SPOOL_OVER = 256 * 1024  # literals above this go to the caller's spool file
CHUNK = 1 << 20

Login = Callable[[imaplib.IMAP4], None]
Spool = Callable[[int], IO[bytes]]


@dataclass(frozen=True)
class IMAPServer:
    """Where and how to reach one system email's mailbox: plain values, never a password."""

    name: str  # the system email's name, for messages
    host: str
    port: int
    security: str  # ssl | starttls | none
    login: str
    ca_bundle: str | None = None
    allow_insecure_auth: bool = False


@dataclass(frozen=True)
class FolderInfo:
    """A folder as EXAMINE showed it."""

    name: str
    uidvalidity: int
    uidnext: int | None
    exists: int


@dataclass
class Spooled:
    """A literal the client wrote to the caller's spool file instead of memory."""

    file: IO[bytes]
    size: int


@dataclass
class Fetched:
    """One message read with ``BODY.PEEK[]``: its bytes, or the spool file holding them."""

    uid: int
    size: int
    internaldate: str | None
    data: bytes | None = None
    spooled: Spooled | None = None


def password_login(user: str, password: Secret) -> Login:
    """The password login: AUTHENTICATE PLAIN (UTF-8, RFC 4616) where offered, else LOGIN."""

    def login(imap: imaplib.IMAP4) -> None:
        secret = password.reveal()
        if "AUTH=PLAIN" in imap.capabilities:
            blob = b"\0" + user.encode("utf-8") + b"\0" + secret.encode("utf-8")
            imap.authenticate("PLAIN", lambda _challenge: blob)
            return
        if not (user + secret).isascii():
            raise imaplib.IMAP4.error(
                "the server offers only LOGIN, which cannot carry a non-ASCII login or password"
            )
        imap.login(_quote(user), secret)

    return login


def xoauth2_login(user: str, token: Secret, seen: list[Secret] | None = None) -> Login:
    """The OAuth2 login: AUTHENTICATE XOAUTH2 with an access token (Google's and Microsoft's
    SASL format). A token the server refuses is renewed once (``Token.renewed``) and tried
    again; each token used is appended to ``seen`` (for the caller's reply masker). A
    renewal that fails (revoked: ``OAuthError``) is refused with its own line."""

    def login(imap: imaplib.IMAP4) -> None:
        if "AUTH=XOAUTH2" not in imap.capabilities:
            raise imaplib.IMAP4.error("the server does not offer AUTHENTICATE XOAUTH2")
        current = token
        for attempt in (1, 2):
            raw = xoauth2_response(user, current.reveal()).encode("utf-8")
            sent: list[bool] = []

            def answer(challenge: bytes, raw: bytes = raw, sent: list[bool] = sent) -> bytes:
                # The first (empty) challenge gets the token; an error (JSON) an empty line.
                if sent:
                    return b""
                sent.append(True)
                return raw

            try:
                imap.authenticate("XOAUTH2", answer)
                return
            except imaplib.IMAP4.error:
                if attempt == 2 or not isinstance(current, Token):
                    raise
                try:
                    fresh = current.renewed()
                except SysmailError as exc:  # cannot renew: its one line is the refusal
                    raise imaplib.IMAP4.error(str(exc)) from None
                if fresh is None:
                    raise
                current = fresh
                if seen is not None:
                    seen.append(fresh)

    return login


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_folder(name: str) -> str:
    """A folder name as IMAP wants it: modified UTF-7 (RFC 3501 5.1.3), quoted."""
    if any(c in name for c in "\r\n\0"):
        raise IMAPError(f"select: folder name {name!r} has a line break or NUL", step="select")
    if not name.isascii() or "&" in name:
        from imap_tools.imap_utf7 import utf7_encode

        name = utf7_encode(name).decode("ascii")
    return _quote(name)


class _Streaming:
    """imaplib's ``read`` with large literals copied to a spool file in chunks."""

    spool: Spool | None = None
    spool_over = SPOOL_OVER
    file: Any

    def read(self, size: int) -> Any:
        if self.spool is None or size <= self.spool_over:
            return super().read(size)  # type: ignore[misc]
        fh = self.spool(size)
        left = size
        while left:
            chunk = self.file.read(min(left, CHUNK))
            if not chunk:
                raise imaplib.IMAP4.abort("connection closed in the middle of a message")
            fh.write(chunk)
            left -= len(chunk)
        return Spooled(fh, size)


class _IMAP4(_Streaming, imaplib.IMAP4):
    pass


class _IMAP4_SSL(_Streaming, imaplib.IMAP4_SSL):
    pass


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return " ".join(_text(v) for v in value if v is not None)
    return str(value)


_ITEM = re.compile(rb"(UID|RFC822\.SIZE) (\d+)|INTERNALDATE \"([^\"]*)\"")


def _items(prefix: bytes) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for m in _ITEM.finditer(prefix):
        if m[1]:
            found[m[1].decode()] = int(m[2])
        else:
            found["INTERNALDATE"] = m[3].decode("ascii", "replace")
    return found


class IMAPConnection:
    """One read-only IMAP session; ``open()`` runs connect, TLS and the login step.

    Each failure is an ``IMAPError`` naming the step (connect, tls, login,
    select, fetch) with the server's words; a password never appears in one.
    """

    def __init__(
        self,
        server: IMAPServer,
        login: Login | None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        spool: Spool | None = None,
        spool_over: int = SPOOL_OVER,
        mask: Callable[[bytes], bytes] | None = None,
    ):
        self.server = server
        self._login = login
        self.timeout = timeout
        self.spool = spool
        self.spool_over = spool_over
        self._mask = mask or (lambda b: b)
        self.imap: imaplib.IMAP4 | None = None
        self.greeting = ""
        self.tls_version: str | None = None

    def __repr__(self) -> str:
        s = self.server
        return f"IMAPConnection({s.name!r}, {s.host}:{s.port}, {s.security})"

    def __enter__(self) -> IMAPConnection:
        self.open()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _fail(self, step: str, message: str, reply: str = "") -> IMAPError:
        self.close()
        return IMAPError(f"{step}: {message}", step=step, reply=reply)

    def _reply(self, exc: BaseException) -> str:
        raw = exc.args[0] if exc.args else exc
        data = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "replace")
        text = self._mask(data).decode("utf-8", "replace")
        if text.startswith(("b'", 'b"')) and text.endswith(("'", '"')):
            text = text[2:-1]  # imaplib puts a repr of the server's bytes in its errors
        return text

    def open(self) -> str:
        """Connect, secure and log in. Returns the server's greeting."""
        s = self.server
        if (
            self._login is not None
            and s.security == "none"
            and not is_loopback(s.host)
            and not s.allow_insecure_auth
        ):
            raise InsecureAuthError(
                f"login: refusing to send the IMAP login of {s.name!r} unencrypted to "
                f"{s.host}; use ssl/starttls or set allow_insecure_auth"
            )
        ctx = tls_context(s.ca_bundle) if s.security != "none" else None
        step = "tls" if s.security == "ssl" else "connect"
        try:
            imap: _IMAP4 | _IMAP4_SSL
            if s.security == "ssl":
                imap = _IMAP4_SSL(s.host, s.port, ssl_context=ctx, timeout=self.timeout)
            else:
                imap = _IMAP4(s.host, s.port, timeout=self.timeout)
        except ssl.SSLError as exc:
            raise self._fail("tls", _tls_error(exc, s)) from None
        except OSError as exc:
            raise self._fail(step, _describe_os_error(exc, s.host, s.port, self.timeout)) from None
        except imaplib.IMAP4.error as exc:
            raise self._fail("connect", f"not an IMAP server: {self._reply(exc)}") from None
        self.imap = imap
        imap.spool, imap.spool_over = self.spool, self.spool_over
        self.greeting = _text(imap.welcome)
        if s.security == "starttls":
            if "STARTTLS" not in imap.capabilities:
                raise self._fail(
                    "tls",
                    f"{s.host} does not offer STARTTLS; refusing to continue unencrypted "
                    "(choose security 'none' only for a trusted local server)",
                )
            try:
                imap.starttls(ctx)
            except ssl.SSLError as exc:
                raise self._fail("tls", _tls_error(exc, s)) from None
            except (imaplib.IMAP4.error, OSError) as exc:
                raise self._fail("tls", f"STARTTLS refused: {self._reply(exc)}") from None
        sock = imap.sock
        self.tls_version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
        if self._login is not None:
            try:
                self._login(imap)
            except imaplib.IMAP4.error as exc:
                raise self._fail(
                    "login", f"login as {s.login} rejected: {self._reply(exc)}", self._reply(exc)
                ) from None
            except OSError as exc:
                raise self._fail("login", _describe_os_error(exc, s.host, s.port, 0)) from None
        return self.greeting

    def _need(self) -> imaplib.IMAP4:
        if self.imap is None:
            raise IMAPError("fetch: connection is not open", step="fetch")
        return self.imap

    def examine(self, folder: str) -> FolderInfo:
        """Open ``folder`` read-only (EXAMINE): nothing read there changes a flag."""
        imap = self._need()
        try:
            typ, data = imap.select(encode_folder(folder), readonly=True)
        except (imaplib.IMAP4.error, OSError) as exc:
            raise self._fail(
                "select", f"cannot open folder {folder!r}: {self._reply(exc)}"
            ) from None
        if typ != "OK":
            # The server said NO (no such folder): the connection is still good for others.
            raise IMAPError(
                f"select: cannot open folder {folder!r}: {_text(data)}", "select", _text(data)
            )
        uidvalidity = _first_int(imap.response("UIDVALIDITY")[1])
        if uidvalidity is None:
            raise self._fail("select", f"{self.server.host} gave no UIDVALIDITY for {folder!r}")
        return FolderInfo(
            folder, uidvalidity, _first_int(imap.response("UIDNEXT")[1]), _first_int(data) or 0
        )

    def _uid(self, command: str, *args: str) -> list[Any]:
        imap = self._need()
        try:
            typ, data = imap.uid(command, *args)
        except (imaplib.IMAP4.error, OSError) as exc:
            if isinstance(exc, OSError | imaplib.IMAP4.abort):
                self.close()
            raise IMAPError(
                f"fetch: UID {command} failed: {self._reply(exc)}", step="fetch"
            ) from None
        if typ != "OK":
            raise IMAPError(f"fetch: UID {command} refused: {_text(data)}", step="fetch")
        return data

    def sizes(self, after_uid: int = 0, since: date | None = None) -> list[tuple[int, int]]:
        """(uid, size) of the messages above ``after_uid`` (and arrived since ``since``)."""
        if since is not None:
            found = self._uid("SEARCH", f"UID {after_uid + 1}:*", "SINCE", _imap_date(since))
            uids = sorted({int(u) for chunk in found if chunk for u in chunk.split()})
            uids = [u for u in uids if u > after_uid]
            out: list[tuple[int, int]] = []
            for i in range(0, len(uids), 1000):
                out += self._sizes(",".join(str(u) for u in uids[i : i + 1000]), after_uid)
            return out
        return self._sizes(f"{after_uid + 1}:*", after_uid)

    def _sizes(self, uid_set: str, after_uid: int) -> list[tuple[int, int]]:
        rows: list[tuple[int, int]] = []
        for item in self._uid("FETCH", uid_set, "(UID RFC822.SIZE)"):
            head = item[0] if isinstance(item, tuple) else item
            if not isinstance(head, bytes):
                continue
            got = _items(head)
            uid = got.get("UID")
            if (
                uid is not None and uid > after_uid
            ):  # "N:*" names the last message when N is past it
                rows.append((uid, got.get("RFC822.SIZE", 0)))
        return sorted(rows)

    def fetch(self, uids: list[int]) -> Iterator[Fetched]:
        """The messages of ``uids`` in one UID FETCH, read with BODY.PEEK[] (no flag changes)."""
        if not uids:
            return
        data = self._uid(
            "FETCH", ",".join(str(u) for u in uids), "(UID RFC822.SIZE INTERNALDATE BODY.PEEK[])"
        )
        for item in data:
            if not isinstance(item, tuple) or len(item) < 2:
                continue  # the ")" closing an item, or an unsolicited FLAGS update
            got = _items(item[0])
            if "UID" not in got or b"BODY[]" not in item[0]:
                continue
            body = item[1]
            fetched = Fetched(got["UID"], got.get("RFC822.SIZE", 0), got.get("INTERNALDATE"))
            if isinstance(body, Spooled):
                fetched.spooled = body
                fetched.size = body.size
            else:
                fetched.data = body or b""
                fetched.size = len(fetched.data)
            yield fetched

    def close(self) -> None:
        imap, self.imap = self.imap, None
        if imap is None:
            return
        try:
            imap.logout()
        except (imaplib.IMAP4.error, OSError):
            with contextlib.suppress(OSError):
                imap.shutdown()


def _first_int(values: Any) -> int | None:
    for v in values or ():
        try:
            return int(v)
        except (TypeError, ValueError):
            continue
    return None


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _imap_date(d: date) -> str:
    return f"{d.day:02d}-{_MONTHS[d.month - 1]}-{d.year}"


def _tls_error(exc: ssl.SSLError, server: IMAPServer) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason or "certificate not trusted"
        hint = "" if server.ca_bundle else "; for a private server set the account's CA bundle"
        return f"TLS certificate of {server.host} not accepted: {why}{hint}"
    return f"TLS handshake with {server.host} failed: {exc.reason or exc}"


def test_connection(
    server: IMAPServer,
    login: Login | None,
    *,
    timeout: float = 10.0,
    folder: str = "INBOX",
    mask: Callable[[bytes], bytes] | None = None,
) -> ConnectionTestResult:
    """Connect, TLS, login and EXAMINE ``folder``; say which step failed and the server's words."""
    started = time.perf_counter()
    conn = IMAPConnection(server, login, timeout=timeout, mask=mask)

    def result(ok: bool, step: str, msg: str) -> ConnectionTestResult:
        return ConnectionTestResult(
            account=server.name,
            ok=ok,
            step=step,
            message=msg,
            greeting=conn.greeting,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    try:
        conn.open()
        info = conn.examine(folder)
    except IMAPError as exc:
        return result(False, f"imap {exc.step}", f"IMAP {exc}")
    except InsecureAuthError as exc:
        return result(False, "imap login", f"IMAP {exc}")
    finally:
        conn.close()
    tls = f", {conn.tls_version}" if conn.tls_version else ", unencrypted"
    who = f", logged in as {server.login}" if login is not None else ", no login"
    return result(
        True, "done", f"IMAP connected{tls}{who}, {folder} holds {info.exists} message(s)"
    )


def password_masker(user: str, password: Secret) -> Callable[[bytes], bytes]:
    """Hides the password (clear or base64) in what the server says back."""
    return secret_masker(user, password.reveal())
