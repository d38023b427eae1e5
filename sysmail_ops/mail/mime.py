"""MIME building: text and HTML, inline images, attachments, safe headers.

``compose`` turns one message's parts into wire bytes (CRLF throughout, every
line at most 998 octets) plus the envelope; it never touches a socket. The
bytes are written by hand rather than through ``email.message``: the stdlib
builds about 950 messages a second here, too slow for a pipeline that must
keep up with an SMTP server. Speed never buys a shortcut in correctness:

- header values from data may not carry a line break, plain or hidden in an
  RFC 2047 encoded word (``=?utf-8?q?=0A?=``): ``HeaderInjectionError``;
- non-ASCII header text goes out as RFC 2047 encoded words, folded; names
  with specials are quoted the way ``email.utils.formataddr`` quotes them;
  white space in a display name becomes one space, as readers show it;
- addresses are checked with ``mail.addresses.check_address`` (cached per string,
  and once per domain for plain local parts); a non-ASCII domain goes out as
  IDNA, a non-ASCII local part sets ``needs_smtputf8`` and the transport
  decides whether the server can take it;
- Bcc addresses are in the envelope only, never in a header;
- bodies are UTF-8: 7bit when ASCII with short lines, quoted-printable
  otherwise (base64 when a third or more of the bytes are non-ASCII, where
  QP would be far larger); attachments and images are base64;
  a line starting with "." or "From " is encoded, so no relay can mangle it;
  a body always ends with a line break (like ``EmailMessage.set_content``).
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import os
import re
import stat
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sysmail_ops.errors import ValidationError
from sysmail_ops.mail.headers import (
    Address,
    address_header,
    as_addresses,
    check_header,
    date_header,
    encodable,
    extra_header,
    fold_header,
    from_header,
    keyed_message_id,
    mailbox,
    make_message_id,
    unstructured_header,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Address", "Attachment", "Composed", "InlineImage", "compose"]


MAX_LINE = 998  # RFC 5322: octets per line, CRLF excluded
MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024  # a file read from disk (providers take ~25 MB a mail)

_MIME_WORD = r"[A-Za-z0-9!#$&^_.+-]+"
_CONTENT_TYPE = re.compile(
    rf"({_MIME_WORD}/{_MIME_WORD})((?:\s*;\s*{_MIME_WORD}=(?:{_MIME_WORD}|\"[^\"\\\r\n;]*\"))*)\s*;?\s*"
)
_SUBTYPE = re.compile(_MIME_WORD)
_CID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]{1,200}")
_QP_UNSAFE_LINE = re.compile(rb"^(?:\.|From )[^\r\n]*|^[^\r\n]{77,}", re.M)
_NOT_7BIT = b"\x00\x0b\x0c\x1c\x1d\x1e"  # NUL, and what str.splitlines() breaks at
_HIGH_BYTES = bytes(range(128, 256))
_ATTR_SAFE = "!#$&+^`|"  # RFC 2231 attribute-char beyond quote()'s letters, digits, "_.-~"


_7BIT = b"Content-Transfer-Encoding: 7bit\r\n\r\n"
_QP = b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
_B64 = b"Content-Transfer-Encoding: base64\r\n\r\n"
_TEXT_PLAIN = b'Content-Type: text/plain; charset="utf-8"\r\n'
_TEXT_HTML = b'Content-Type: text/html; charset="utf-8"\r\n'
_MIME_VERSION = "MIME-Version: 1.0\r\n"


# -- the parts a caller hands in -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent with the message; ``content_type`` is guessed from the name when None."""

    filename: str
    data: bytes
    content_type: str | None = None

    def __post_init__(self) -> None:
        check_header("attachment file name", self.filename)
        if not self.filename.strip():
            raise ValidationError("an attachment needs a file name")
        object.__setattr__(self, "filename", self.filename.strip())  # as readers strip it
        encodable(self.filename, "attachment file name")
        if len(self.filename) > 255:
            raise ValidationError(
                f"attachment file name is longer than 255 characters: {self.filename[:40]!r}..."
            )
        if not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))
        ctype = (
            self.content_type
            or mimetypes.guess_type(self.filename)[0]
            or "application/octet-stream"
        )
        check_header("attachment content type", ctype)
        if not _CONTENT_TYPE.fullmatch(ctype):
            raise ValidationError(
                f"attachment content type {ctype!r} is not type/subtype[; params]"
            )
        object.__setattr__(self, "content_type", ctype)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], content_type: str | None = None) -> Attachment:
        """A file from disk, named after its last path component.

        At most ``MAX_ATTACHMENT_BYTES``: a larger regular file is refused by its
        size, and a stream (``/dev/zero``, a pipe) is read no further than the cap.
        """
        p = Path(path)
        too_big = f"attachment {str(p)!r} is larger than {MAX_ATTACHMENT_BYTES // 2**20} MiB"
        try:
            with p.open("rb") as fh:
                info = os.fstat(fh.fileno())
                if stat.S_ISREG(info.st_mode) and info.st_size > MAX_ATTACHMENT_BYTES:
                    raise ValidationError(too_big)
                data = fh.read(MAX_ATTACHMENT_BYTES + 1)
        except OSError as exc:
            raise ValidationError(
                f"cannot read attachment {str(p)!r}: {exc.strerror or exc}"
            ) from None
        except ValueError:  # a NUL byte in the name
            raise ValidationError(f"cannot read attachment {str(p)!r}: not a file name") from None
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise ValidationError(too_big)
        return cls(p.name, data, content_type)

    @classmethod
    def from_dataframe(
        cls, df: pd.DataFrame, filename: str, *, index: bool = False, sheet_name: str = "Sheet1"
    ) -> Attachment:
        """A table as ``.csv`` (UTF-8 with a BOM, so Excel reads it right) or ``.xlsx``."""
        suffix = Path(filename).suffix.lower()
        if suffix == ".csv":
            text = df.to_csv(index=index, lineterminator="\r\n")
            return cls(filename, text.encode("utf-8-sig"), "text/csv; charset=utf-8")
        if suffix == ".xlsx":
            buf = BytesIO()
            df.to_excel(buf, index=index, sheet_name=sheet_name, engine="openpyxl")
            return cls(filename, buf.getvalue(), _XLSX)
        raise ValidationError(f"a table attachment must be named .csv or .xlsx, got {filename!r}")


_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass(frozen=True, slots=True)
class InlineImage:
    """An image the HTML shows with ``<img src="cid:{cid}">`` (multipart/related)."""

    cid: str
    data: bytes
    subtype: str = "png"
    filename: str | None = None

    def __post_init__(self) -> None:
        check_header("inline image Content-ID", self.cid)
        if not _CID.fullmatch(self.cid):
            raise ValidationError(
                f"inline image Content-ID {self.cid!r} must be printable ASCII without spaces or <>"
            )
        check_header("inline image subtype", self.subtype)
        if not _SUBTYPE.fullmatch(self.subtype):
            raise ValidationError(f"inline image subtype {self.subtype!r} is not a MIME subtype")
        if self.filename is not None:
            check_header("inline image file name", self.filename)
            encodable(self.filename, "inline image file name")
        if not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))


@dataclass(frozen=True, slots=True)
class Composed:
    """A message ready for the transport: wire bytes plus the envelope."""

    data: bytes = field(repr=False)
    message_id: str  # with its angle brackets, as in the header
    envelope_from: str
    recipients: list[tuple[str, str]]  # (address, "to" | "cc" | "bcc"), each address once
    attachment_names: list[str]
    needs_smtputf8: bool

    @property
    def size(self) -> int:
        return len(self.data)

    def __reduce__(self) -> tuple[Any, ...]:
        # By position: a third of the default (field by field) from the compose worker.
        fields = (self.data, self.message_id, self.envelope_from, self.recipients)
        return Composed, (*fields, self.attachment_names, self.needs_smtputf8)


# -- header safety -------------------------------------------------------------------


def _lines(text: str) -> str:
    """``text`` with CRLF line breaks, ending with one."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\n", "\r\n")
    return text if text.endswith("\n") else text + "\r\n"


def _body(text: str, what: str) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding header line, encoded body) for UTF-8 text."""
    s = _lines(text)
    if s.isascii():
        data = s.encode("ascii")
        if (
            len(data.translate(None, _NOT_7BIT)) == len(data)
            and not data.startswith((b".", b"From "))
            and b"\n." not in data
            and b"\nFrom " not in data
            and (len(data) <= MAX_LINE or max(map(len, data.split(b"\r\n"))) <= MAX_LINE)
        ):
            return _7BIT, data
    else:
        try:
            data = s.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(
                f"the {what} body contains characters that are not Unicode text"
            ) from None
        high = len(data) - len(data.translate(None, _HIGH_BYTES))
        if 3 * high > len(data):  # a third non-ASCII: QP would be 1.7 times the size
            return _B64, _b64(data)
    qp = _qp(data)
    if (
        qp.startswith((b".", b"From "))
        or b"\n." in qp
        or b"\nFrom " in qp
        or b"=20\r\n" in qp  # b2a_qp can make these 77 columns long
        or b"=09\r\n" in qp
    ):
        qp = _QP_UNSAFE_LINE.sub(_qp_requote, qp)
    return _QP, qp


def _qp(data: bytes) -> bytes:
    """``binascii.b2a_qp(data, istext=True)`` for CRLF-ended text, a line at a time.

    Quoted-printable encodes each line on its own, and the messages of a batch
    share most of their lines (the template's), so each distinct line is
    encoded once: b2a_qp was a third of building a message.
    """
    return b"".join(map(_qp_line, data.split(b"\r\n")[:-1]))


@lru_cache(maxsize=4096)
def _qp_line(line: bytes) -> bytes:
    return binascii.b2a_qp(line + b"\r\n", istext=True)  # sees the CRLF, soft-breaks with CRLF


def _qp_requote(m: re.Match[bytes]) -> bytes:
    """Encode a QP line's leading "." or "F" of "From " and wrap it to 76 columns."""
    line = m[0]
    soft = line.endswith(b"=")  # "=" ends a line only as a soft break
    rest = line[:-1] if soft else line
    out = []
    while True:
        if rest[:1] == b".":
            rest = b"=2E" + rest[1:]
        elif rest[:5] == b"From ":
            rest = b"=46" + rest[1:]
        if len(rest) + soft <= 76:
            out.append(rest + b"=" if soft else rest)
            return b"=\r\n".join(out)
        cut = 75
        if rest[cut - 1] == 61:  # never split an =XX escape
            cut -= 1
        elif rest[cut - 2] == 61:
            cut -= 2
        out.append(rest[:cut])
        rest = rest[cut:]


def _b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ascii_fallback(filename: str) -> str:
    """An ASCII stand-in for readers that know no RFC 2231: "Müller.pdf" -> "Muller.pdf"."""
    plain = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    plain = re.sub(r"[^A-Za-z0-9._ ()+-]+", "_", plain).strip(" ._") or "attachment"
    ext = Path(filename).suffix
    if ext and ext.isascii() and not plain.endswith(ext):
        plain += ext
    return plain


@lru_cache(maxsize=1024)
def _file_params(filename: str) -> tuple[list[str], list[str]]:
    """(Content-Type parameter pieces, Content-Disposition parameter pieces) for a file name."""
    if filename.isascii() and filename.isprintable() and "=?" not in filename:
        q = _quoted(filename)
        return [f"name={q}"], [f"filename={q}"]
    fallback = _quoted(_ascii_fallback(filename))
    enc = quote(filename, safe=_ATTR_SAFE)
    if len(enc) <= 60:
        return [f"name={fallback}"], [f"filename*=utf-8''{enc}"]
    # RFC 2231 continuations, cut between characters so that each section
    # decodes on its own too.
    sections: list[str] = []
    chunk = ""
    for ch in filename:
        piece = quote(ch, safe=_ATTR_SAFE)
        if chunk and len(chunk) + len(piece) > 60:
            sections.append(chunk)
            chunk = ""
        chunk += piece
    sections.append(chunk)
    sections[0] = "utf-8''" + sections[0]
    disp = [f"filename*{i}*={sec}" for i, sec in enumerate(sections)]
    return [f"name={fallback}"], disp


def _params_header(name: str, value: str, params: list[str]) -> str:
    pieces = [value + (";" if params else "")]
    pieces += [p + ";" for p in params[:-1]] + params[-1:]
    return fold_header(name, pieces)


@lru_cache(maxsize=8)  # a batch often sends the same report or logo to everyone
def _attachment_part(a: Attachment) -> bytes:
    ctype = (a.content_type or "application/octet-stream").strip().rstrip(";")
    type_params, disp_params = _file_params(a.filename)
    if ctype.startswith("text/") and "charset" not in ctype.lower():
        try:
            a.data.decode("utf-8")
            ctype += '; charset="utf-8"'
        except UnicodeDecodeError:
            pass
    main, _, rest = ctype.partition(";")
    given = [p.strip() for p in rest.split(";") if p.strip()]
    params = [p for p in given if not p.lower().startswith("name=")] + type_params
    head = _params_header("Content-Type", main.strip(), params)
    head += _params_header("Content-Disposition", "attachment", disp_params)
    return head.encode("ascii") + _B64 + _b64(a.data)


@lru_cache(maxsize=8)
def _image_part(img: InlineImage) -> bytes:
    type_params, disp_params = _file_params(img.filename) if img.filename else ([], [])
    head = _params_header("Content-Type", f"image/{img.subtype}", type_params)
    head += f"Content-ID: <{img.cid}>\r\n"
    head += _params_header("Content-Disposition", "inline", disp_params)
    return head.encode("ascii") + _B64 + _b64(img.data)


def _multipart(subtype: str, parts: Sequence[bytes], *params: str) -> bytes:
    """A multipart body with a random boundary that occurs in none of its parts."""
    boundary = _boundary()
    while any(boundary in p for p in parts):
        boundary = _boundary()
    delim = b"--" + boundary
    if params:
        head = _params_header(
            "Content-Type", f"multipart/{subtype}", [f'boundary="{boundary.decode()}"', *params]
        ).encode("ascii")
    else:
        head = b'Content-Type: multipart/%s; boundary="%s"\r\n' % (subtype.encode(), boundary)
    out = [head, b"\r\n"]
    for p in parts:
        out += [delim, b"\r\n", p, b"\r\n"]
    out += [delim, b"--\r\n"]
    return b"".join(out)


def _boundary() -> bytes:
    return b"=_" + os.urandom(12).hex().encode()  # "=_" never occurs in QP or base64


# -- the builder ---------------------------------------------------------------------


def compose(
    *,
    from_addr: str,
    from_name: str | None = None,
    to: str | Sequence[Address] = (),
    cc: str | Sequence[Address] = (),
    bcc: str | Sequence[Address] = (),
    reply_to: str | Sequence[Address] | None = None,
    subject: str,
    text: str,
    html: str | None = None,
    attachments: Sequence[Attachment] = (),
    inline_images: Sequence[InlineImage] = (),
    message_id: str | None = None,
    message_key: bytes | None = None,
    date: datetime | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> Composed:
    """Build one message; all input is checked before the message is put together.

    ``to``/``cc``/``bcc``/``reply_to`` take addresses as "addr", "Name <addr>" or
    (name, addr). ``message_id`` is kept when given (pass the same one on every
    retry); else, with ``message_key``, it is derived from that key and the recipients
    (``keyed_message_id``: the same in every process), else random; both at the
    sender's domain. An empty ``html`` means text only.
    Raises ``HeaderInjectionError`` for a line break in any header value and
    ``ValidationError`` for any other bad input.
    """
    sender = mailbox("From", (from_name, from_addr))
    boxes = {
        role: [mailbox(header, item) for item in as_addresses(value)]
        for role, header, value in (("to", "To", to), ("cc", "Cc", cc), ("bcc", "Bcc", bcc))
    }
    reply = [mailbox("Reply-To", item) for item in as_addresses(reply_to)]
    recipients: list[tuple[str, str]] = []
    seen: set[str] = set()
    for role, found in boxes.items():
        for box in found:
            if box.address not in seen:
                seen.add(box.address)
                recipients.append((box.address, role))
    if not recipients:
        raise ValidationError("a message needs at least one recipient (to, cc or bcc)")
    subject_line = unstructured_header("Subject", subject)
    extras = [extra_header(k, v) for k, v in (extra_headers or {}).items()]
    if not isinstance(text, str) or not isinstance(html, str | None):
        raise ValidationError("the text and HTML bodies must be text")
    if not all(isinstance(a, Attachment) for a in attachments):
        raise ValidationError("attachments must be Attachment objects")
    if not all(isinstance(i, InlineImage) for i in inline_images):
        raise ValidationError("inline images must be InlineImage objects")
    html = html or None
    if inline_images and html is None:
        raise ValidationError("inline images need an HTML body that shows them")
    cids = [img.cid for img in inline_images]
    if len(set(cids)) != len(cids):
        raise ValidationError("two inline images have the same Content-ID")
    if message_id is None and message_key is not None:
        mid = keyed_message_id(message_key, seen, sender.domain)
    else:
        mid = make_message_id(message_id, sender.domain)
    date_line = date_header(date)

    text_cte, text_body = _body(text, "text")
    html_cte, html_body = _body(html, "HTML") if html is not None else (b"", b"")

    head = [f"Date: {date_line}\r\n", from_header(sender)]
    if reply:
        head.append(address_header("Reply-To", reply))
    if boxes["to"]:
        head.append(address_header("To", boxes["to"]))
    if boxes["cc"]:
        head.append(address_header("Cc", boxes["cc"]))
    head += [subject_line, f"Message-ID: {mid}\r\n", *extras, _MIME_VERSION]

    text_part = _TEXT_PLAIN + text_cte + text_body
    if html is None:
        body = text_part
    else:
        body = _multipart("alternative", [text_part, _TEXT_HTML + html_cte + html_body])
        if inline_images:
            related = [body, *map(_image_part, inline_images)]
            body = _multipart("related", related, 'type="multipart/alternative"')
    if attachments:
        body = _multipart("mixed", [body, *map(_attachment_part, attachments)])

    utf8 = sender.utf8 or any(b.utf8 for found in (*boxes.values(), reply) for b in found)
    data = "".join(head).encode("utf-8" if utf8 else "ascii") + body
    return Composed(
        data=data,
        message_id=mid,
        envelope_from=sender.address,
        recipients=recipients,
        attachment_names=[a.filename for a in attachments],
        needs_smtputf8=utf8,
    )
