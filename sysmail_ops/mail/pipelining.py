"""RFC 2920 pipelining across transactions: the server works while we build the next message.

One thread, one connection, and never more than one message in flight::

    submit(A)   write A's MAIL, RCPT..., DATA                     (envelope: A)
    submit(B)   read A's envelope replies; on 354 write A's data
                and B's MAIL, RCPT..., DATA in one go             (in flight: A, envelope: B)
      ... the caller renders and composes C while the server takes in A ...
    submit(C)   read A's final reply and report it (the caller journals it)
                read B's envelope replies; on 354 write B's data
                and C's envelope                                  (in flight: B, envelope: C)
    drain()     finish whatever is left, reporting each

A message's data is written only after the previous message's final reply has
been reported, so a process killed at any point leaves at most one message
delivered but not journalled, per connection. An envelope without its data
delivers nothing.

Each submitted message is reported exactly once through its ``done`` callback:
with its outcome per recipient, or with ``None`` when it never reached the
server (the connection was lost before its turn): the caller sends it again.
Callbacks must not submit (they only record); the caller acts after
``submit`` or ``drain`` returns. A server without PIPELINING gets one
message at a time through ``SMTPConnection.deliver``.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from dataclasses import dataclass, field

from sysmail_ops.errors import SMTPError
from sysmail_ops.mail.smtp import (
    ACCEPTED,
    Outcome,
    SMTPConnection,
    data_bytes,
    envelope_bytes,
)

_MAXLINE = 8192  # smtplib's limit on a reply line

Done = Callable[[dict[str, Outcome] | None], None]


class _Broken(Exception):
    """The connection failed under a read or write (smtplib's errors are OSErrors too).

    Kept apart from whatever a ``done`` callback raises (a full disk is an
    OSError as well, and is no lost connection).
    """

    def __init__(self, cause: OSError):
        super().__init__(str(cause))
        self.cause = cause


@dataclass(eq=False)
class _Message:
    mail_from: str
    rcpts: list[str]
    data: bytes
    smtputf8: bool
    done: Done
    refused: dict[str, Outcome] = field(default_factory=dict)  # settled before DATA
    accepted: list[str] = field(default_factory=list)


class Pipeline:
    """Pipelined sending over one open ``SMTPConnection`` (see the module's state machine)."""

    def __init__(self, conn: SMTPConnection):
        self.conn = conn
        self._envelope: _Message | None = None  # MAIL/RCPT/DATA written, replies unread
        self._in_flight: _Message | None = None  # data written, final reply unread

    @property
    def busy(self) -> bool:
        return self._envelope is not None or self._in_flight is not None

    def submit(
        self, mail_from: str, rcpts: list[str], data: bytes, *, smtputf8: bool, done: Done
    ) -> None:
        """Send one message as far as the protocol allows without waiting for it."""
        if not self.conn.use_pipelining:
            done(self.conn.deliver(mail_from, rcpts, data, smtputf8=smtputf8))
            return
        if not self.conn.is_open:
            raise SMTPError("send: connection is not open", step="send")
        msg = _Message(mail_from, rcpts, data, smtputf8, done)
        try:
            self._finish_in_flight()
            if self._envelope is None:
                if self.conn.is_open:  # else a 421 closed it: msg waits for a new one
                    self._write(envelope_bytes(mail_from, rcpts, smtputf8))
                    self._envelope = msg
                    return
                msg.done(None)
            else:
                self._start_data(then=msg)
        except _Broken as broken:
            self._lost(broken.cause, msg)

    def drain(self) -> None:
        """Wait for every reply; afterwards nothing is in flight."""
        try:
            self._finish_in_flight()
            if self._envelope is not None:
                self._start_data(then=None)
                self._finish_in_flight()
        except _Broken as broken:
            self._lost(broken.cause)

    # -- the steps ---------------------------------------------------------------------

    def _write(self, payload: bytes) -> None:
        assert self.conn.smtp is not None
        try:
            self.conn.smtp.send(payload)
        except OSError as exc:
            raise _Broken(exc) from exc

    def _reply(self) -> tuple[int, bytes]:
        """One reply, as ``smtplib.SMTP.getreply`` reads it, minus its per-line overhead."""
        smtp = self.conn.smtp
        assert smtp is not None
        file = smtp.file
        if file is None:  # smtplib makes its reader on the first reply
            try:
                return smtp.getreply()
            except OSError as exc:
                raise _Broken(exc) from exc
        lines = []
        while True:
            try:
                line = file.readline(_MAXLINE + 1)
            except OSError as exc:
                smtp.close()
                raise _Broken(exc) from exc
            if not line or len(line) > _MAXLINE:
                smtp.close()
                why = "Connection unexpectedly closed" if not line else "Line too long."
                raise _Broken(smtplib.SMTPServerDisconnected(why))
            lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                break
        try:
            code = int(line[:3])
        except ValueError:
            code = -1
        return code, self.conn.mask_reply(b"\n".join(lines))

    def _rset(self) -> None:
        assert self.conn.smtp is not None
        try:
            self.conn.smtp.rset()
        except OSError as exc:
            raise _Broken(exc) from exc

    def _start_data(self, then: _Message | None) -> None:
        """Read the envelope's replies; on 354 send its data and ``then``'s envelope at once."""
        msg = self._envelope
        assert msg is not None and self._in_flight is None
        mail_code, mail_msg = self._reply()
        rcpt_replies = [self._reply() for _ in msg.rcpts]
        data_code, data_msg = self._reply()
        if not 200 <= mail_code < 300:
            msg.refused = dict.fromkeys(msg.rcpts, Outcome.from_reply("mail", mail_code, mail_msg))
        else:
            for r, (code, text) in zip(msg.rcpts, rcpt_replies, strict=True):
                if not 200 <= code < 300:
                    msg.refused[r] = Outcome.from_reply("rcpt", code, text)
        msg.accepted = [r for r in msg.rcpts if r not in msg.refused]
        nxt = envelope_bytes(then.mail_from, then.rcpts, then.smtputf8) if then else b""
        if data_code == 354 and msg.accepted:
            self._write(data_bytes(msg.data) + nxt)
            self._envelope, self._in_flight = then, msg
            return
        # No data goes out: the message is settled here, in step with the server.
        if data_code == 354:  # a server that says 354 with no recipient gets an empty message
            self._write(b".\r\n")
            self._reply()
        else:
            failed = Outcome.from_reply("data", data_code, data_msg)
            msg.refused.update(dict.fromkeys(msg.accepted, failed))
        self._envelope = None
        msg.done(msg.refused)
        if 421 in (mail_code, data_code, *(c for c, _ in rcpt_replies)):
            self._abandon(then)
            return
        if data_code != 354:
            self._rset()
        if then is not None:
            self._write(nxt)
            self._envelope = then

    def _finish_in_flight(self) -> None:
        """Read the final reply of the message whose data is out, and report it."""
        msg = self._in_flight
        if msg is None:
            return
        code, text = self._reply()
        self._in_flight = None
        result = ACCEPTED if code == 250 else Outcome.from_reply("data", code, text)
        msg.done({**msg.refused, **dict.fromkeys(msg.accepted, result)})
        if code == 421:
            self._abandon()

    def _abandon(self, new: _Message | None = None) -> None:
        """The server is closing: messages whose turn had not come are handed back."""
        waiting = [m for m in (self._envelope, new) if m is not None]
        self._envelope = None
        self.conn.close()
        for msg in waiting:
            msg.done(None)

    def _lost(self, exc: OSError, new: _Message | None = None) -> None:
        """The connection broke: the message being answered is deferred, the rest handed back."""
        queue = [m for m in (self._in_flight, self._envelope, new) if m is not None]
        self._in_flight = self._envelope = None
        self.conn.close()
        if not queue:
            return
        head = queue.pop(0)
        lost = Outcome("deferred", "data", None, f"connection lost: {exc or type(exc).__name__}")
        head.done({**dict.fromkeys(head.rcpts, lost), **head.refused})
        for msg in queue:
            msg.done(None)
