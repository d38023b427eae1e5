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
- addresses are checked with ``accounts.check_address`` (cached per string,
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
import codecs
import email.header
import email.policy
import mimetypes
import os
import re
import time
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import lru_cache
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from email_validator import validate_email

from sysmail_ops.accounts import check_address
from sysmail_ops.errors import HeaderInjectionError, ValidationError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Address", "Attachment", "Composed", "InlineImage", "compose"]

# "addr@example.com", "Name <addr@example.com>" or ("Name", "addr@example.com").
Address = str | tuple[str | None, str]

MAX_LINE = 998  # RFC 5322: octets per line, CRLF excluded
FOLD_AT = 78  # RFC 5322: the length a header line should keep to

# Characters that end a line somewhere: CR/LF for mail, the rest for
# str.splitlines(), which the stdlib's header folding uses when re-serialising.
_LINE_BREAK = re.compile("[\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_ENCODED_WORD = re.compile(r"=\?([^?]*)\?([bBqQ])\?(.*?)\?=", re.S)
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")  # printable ASCII but ':'
_MIME_WORD = r"[A-Za-z0-9!#$&^_.+-]+"
_CONTENT_TYPE = re.compile(
    rf"({_MIME_WORD}/{_MIME_WORD})((?:\s*;\s*{_MIME_WORD}=(?:{_MIME_WORD}|\"[^\"\\\r\n;]*\"))*)\s*;?\s*"
)
_SUBTYPE = re.compile(_MIME_WORD)
_CID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]{1,200}")
_MSG_ID = re.compile(r"<?([!-;=?-~]+@[!-;=?-~]+)>?")
_NAME_ADDR = re.compile(r"\s*(.*?)\s*<([^<>]*)>\s*", re.S)
_WSP_RUN = re.compile(r"[ \t]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')  # as email.utils.formataddr
_QP_UNSAFE_LINE = re.compile(rb"^(?:\.|From )[^\r\n]*|^[^\r\n]{77,}", re.M)
_NOT_7BIT = b"\x00\x0b\x0c\x1c\x1d\x1e"  # NUL, and what str.splitlines() breaks at
_HIGH_BYTES = bytes(range(128, 256))
_ATTR_SAFE = "!#$&+^`|"  # RFC 2231 attribute-char beyond quote()'s letters, digits, "_.-~"
_RESERVED = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "content-id",
    }
)

# Q encoding safe in every header context, phrases included (RFC 2047 5(3)).
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q = [chr(b) if b in _Q_SAFE else "_" if b == 32 else f"={b:02X}" for b in range(256)]
_EW_OVERHEAD = len("=?utf-8?q??=")
_EW_MAX = 75

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
        _check_header("attachment file name", self.filename)
        if not self.filename.strip():
            raise ValidationError("an attachment needs a file name")
        object.__setattr__(self, "filename", self.filename.strip())  # as readers strip it
        _encodable(self.filename, "attachment file name")
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
        _check_header("attachment content type", ctype)
        if not _CONTENT_TYPE.fullmatch(ctype):
            raise ValidationError(
                f"attachment content type {ctype!r} is not type/subtype[; params]"
            )
        object.__setattr__(self, "content_type", ctype)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], content_type: str | None = None) -> Attachment:
        """A file from disk, named after its last path component."""
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ValidationError(f"cannot read attachment {str(p)!r}: {exc.strerror}") from None
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
        _check_header("inline image Content-ID", self.cid)
        if not _CID.fullmatch(self.cid):
            raise ValidationError(
                f"inline image Content-ID {self.cid!r} must be printable ASCII without spaces or <>"
            )
        _check_header("inline image subtype", self.subtype)
        if not _SUBTYPE.fullmatch(self.subtype):
            raise ValidationError(f"inline image subtype {self.subtype!r} is not a MIME subtype")
        if self.filename is not None:
            _check_header("inline image file name", self.filename)
            _encodable(self.filename, "inline image file name")
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


# -- header safety -------------------------------------------------------------------


def _check_header(header: str, value: str) -> None:
    """Refuse a value that carries a line break, plainly or inside an encoded word."""
    if not isinstance(value, str):
        raise ValidationError(f"{header} must be text, got {type(value).__name__}")
    if _LINE_BREAK.search(value):
        raise HeaderInjectionError(f"{header} must not contain a line break: {_excerpt(value)}")
    if "=?" in value and any(_LINE_BREAK.search(s) for s in _decodings(value)):
        raise HeaderInjectionError(
            f"{header} must not contain an encoded line break: {_excerpt(value)}"
        )


def _excerpt(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


def _decodings(value: str) -> Iterator[str]:
    """Every reading a lenient decoder could give the encoded words in ``value``."""
    for m in _ENCODED_WORD.finditer(value):
        charset = m.group(1).partition("*")[0]
        raw = m.group(3).encode("utf-8", "surrogatepass")
        if m.group(2) in "qQ":
            candidates = [_Q_ESCAPE.sub(lambda h: bytes([int(h[1], 16)]), raw.replace(b"_", b" "))]
        else:
            clean = _NOT_BASE64.sub(b"", raw)
            clean = clean[: len(clean) - 1] if len(clean) % 4 == 1 else clean
            candidates = [binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))]
            for pad in (b"", b"=", b"=="):
                try:
                    candidates.append(base64.b64decode(raw + pad))
                except (binascii.Error, ValueError):
                    candidates.append(b"")
        for data in candidates:
            yield data.decode("latin-1").replace("\x85", "")  # raw CR/LF/NUL bytes
            try:
                codecs.lookup(charset)
            except LookupError:
                continue
            try:
                yield data.decode(charset, "replace")
            except (UnicodeError, TypeError, ValueError):
                continue
    # And what the stdlib itself makes of it: archives and viewers use these.
    try:
        yield str(email.policy.default.header_factory("X-Check", value))
    except Exception:  # a parser failure is not a line break
        yield ""
    try:
        yield "".join(
            b.decode(c or "latin-1", "replace") if isinstance(b, bytes) else b
            for b, c in email.header.decode_header(value)
        )
    except Exception:  # likewise
        yield ""


def _encodable(value: str, what: str) -> None:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(f"{what} contains characters that are not Unicode text") from None


# -- header rendering ------------------------------------------------------------------


def _fold(name: str, pieces: Sequence[str]) -> str:
    """``Name: p1 p2 ...`` CRLF, folding before a piece where the line would pass 78.

    An empty piece stands for a second space in a row: never fold around it.
    """
    out = [name, ":"]
    length = len(name) + 1
    prev = ""
    for i, p in enumerate(pieces):
        if i and p and prev and length + 1 + len(p) > FOLD_AT:
            out.append("\r\n ")
            length = 1 + len(p)
        else:
            out.append(" ")
            length += 1 + len(p)
        out.append(p)
        prev = p
    out.append("\r\n")
    return "".join(out)


def _encoded_words(text: str, first: int, rest: int = _EW_MAX) -> list[str]:
    """RFC 2047 encoded words for ``text``: the first at most ``first`` long, the rest ``rest``.

    Q when that is shorter than B. Words split between characters, never inside
    one; decoders join adjacent encoded words, dropping the space between them
    (RFC 2047 6.2; Python 3.11's address parser shows it as a space instead).
    """
    data = text.encode("utf-8")
    q = "".join(map(_Q.__getitem__, data))
    words: list[str] = []
    if len(q) <= 4 * -(-len(data) // 3):
        limit = max(first - _EW_OVERHEAD, 12)  # 12: room for one 4-byte character
        while len(q) > limit:
            cut = limit
            if q[cut - 1] == "=":  # never split an =XX escape...
                cut -= 1
            elif q[cut - 2] == "=":
                cut -= 2
            while q[cut] == "=" and q[cut + 1] in "89AB":  # ...nor a UTF-8 sequence
                cut -= 3
            words.append(f"=?utf-8?q?{q[:cut]}?=")
            q, limit = q[cut:], rest - _EW_OVERHEAD
        words.append(f"=?utf-8?q?{q}?=")
        return words
    size = 3 * (max(first - _EW_OVERHEAD, 8) // 4)  # bytes that fit as base64
    while len(data) > size:
        cut = size
        while data[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte
            cut -= 1
        words.append(f"=?utf-8?b?{base64.b64encode(data[:cut]).decode('ascii')}?=")
        data, size = data[cut:], 3 * ((rest - _EW_OVERHEAD) // 4)
    words.append(f"=?utf-8?b?{base64.b64encode(data).decode('ascii')}?=")
    return words


def _plain(value: str) -> bool:
    """True when ``value`` can go out as it is: printable ASCII, nothing a decoder would touch."""
    return (
        value.isascii()
        and value.isprintable()
        and "=?" not in value
        and value == value.strip(" ")
        and all(len(w) <= 900 for w in value.split(" "))
    )


@lru_cache(maxsize=1024)
def _unstructured(name: str, value: str) -> str:
    """A free-text header (Subject): checked, encoded when needed, folded."""
    _check_header(name, value)
    _encodable(value, name)
    if not value:
        return f"{name}:\r\n"
    if _plain(value):
        return _fold(name, value.split(" "))
    return _fold(name, _encoded_words(value, FOLD_AT - len(name) - 2))


@lru_cache(maxsize=1024)
def _extra(name: str, value: str) -> str:
    """A caller's header (List-Unsubscribe, X-...): kept as is when ASCII, else encoded."""
    _check_header("extra header name", name)
    if not _HEADER_NAME.fullmatch(name):
        raise ValidationError(f"extra header name {name!r} is not printable ASCII without ':'")
    if name.lower() in _RESERVED:
        raise ValidationError(f"the {name} header is set by compose, not by extra headers")
    _check_header(name, value)
    _encodable(value, name)
    value = value.strip()
    if not value:
        return f"{name}:\r\n"
    if value.isascii() and value.isprintable():
        words = value.split(" ")
        if any(len(w) > 900 for w in words):
            raise ValidationError(f"{name} has a word longer than 900 characters")
        return _fold(name, words)
    return _unstructured(name, value)


def _phrase(name: str) -> list[str]:
    """A display name as header pieces, with ``formataddr``'s quoting for ASCII."""
    if name.isascii() and name.isprintable() and "=?" not in name and len(name) <= 900:
        if not _SPECIALS.search(name) and "  " not in name and name == name.strip():
            return name.split(" ")
        return ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    return _encoded_words(name, FOLD_AT - len("Reply-To: "))


@dataclass(frozen=True, slots=True)
class _Mailbox:
    pieces: tuple[str, ...]  # the header form, "Name <addr>" split where it may fold
    address: str  # envelope form: IDNA domain
    utf8: bool  # non-ASCII local part: needs SMTPUTF8
    domain: str


@lru_cache(maxsize=8192)
def _mailbox(header: str, item: Address) -> _Mailbox:
    """Parse, check and render one address: cached, so a batch checks each once."""
    if isinstance(item, tuple):
        if len(item) != 2:
            raise ValidationError(f"{header}: give an address as (name, address), got {item!r}")
        name, addr = item
        _check_header(f"{header} display name", name or "")
        _check_header(f"{header} address", addr)
    else:
        _check_header(header, item)
        m = _NAME_ADDR.fullmatch(item)
        name, addr = (m.group(1), m.group(2)) if m else (None, item.strip())
        if name and len(name) > 1 and name[0] == '"' == name[-1]:
            name = re.sub(r"\\(.)", r"\1", name[1:-1])
    if not isinstance(addr, str):
        raise ValidationError(f"{header} address must be text, got {type(addr).__name__}")
    normal = check_address(addr.strip(), f"{header} address")
    local, _, domain = normal.rpartition("@")
    if not domain.isascii():
        ascii_domain = validate_email(normal, check_deliverability=False).ascii_domain
        domain = ascii_domain or domain
    address = f"{local}@{domain}"
    name = _WSP_RUN.sub(" ", name or "").strip(" ")  # as readers see a phrase
    if name:
        _encodable(name, f"{header} display name")
        if _CONTROL.search(name):  # readers drop or mangle them
            raise ValidationError(
                f"{header} display name contains a control character: {_excerpt(name)}"
            )
        pieces = (*_phrase(name), f"<{address}>")
    else:
        pieces = (address,)
    return _Mailbox(pieces, address, not local.isascii(), domain)


def _as_list(value: str | Sequence[Address] | None) -> list[Address]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [(v[0], v[1]) if isinstance(v, list) else v for v in value]


def _address_header(name: str, boxes: Sequence[_Mailbox]) -> str:
    pieces: list[str] = []
    for i, box in enumerate(boxes):
        if i:
            pieces[-1] += ","
        pieces.extend(box.pieces)
    return _fold(name, pieces)


@lru_cache(maxsize=64)
def _from_line(sender: _Mailbox) -> str:
    return _address_header("From", [sender])


_DATE: tuple[int, str] = (0, "")


def _date_header(date: datetime | None) -> str:
    global _DATE
    if date is None:
        now = int(time.time())
        if _DATE[0] != now:
            _DATE = (now, format_datetime(datetime.fromtimestamp(now, UTC)))
        return _DATE[1]
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)  # naive means UTC, as the store keeps time
    return format_datetime(date)


def _message_id(given: str | None, domain: str) -> str:
    if given is None:
        return f"<{time.time_ns() // 1_000_000:x}.{os.urandom(16).hex()}@{domain}>"
    _check_header("Message-ID", given)
    m = _MSG_ID.fullmatch(given.strip())
    if not m:
        raise ValidationError(f"Message-ID {given!r} is not of the form <id@domain>")
    return f"<{m.group(1)}>"


# -- bodies --------------------------------------------------------------------------


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
    qp = binascii.b2a_qp(data, istext=True)  # sees the CRLFs, soft-breaks with CRLF
    if (
        qp.startswith((b".", b"From "))
        or b"\n." in qp
        or b"\nFrom " in qp
        or b"=20\r\n" in qp  # b2a_qp can make these 77 columns long
        or b"=09\r\n" in qp
    ):
        qp = _QP_UNSAFE_LINE.sub(_qp_requote, qp)
    return _QP, qp


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
    return _fold(name, pieces)


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
    date: datetime | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> Composed:
    """Build one message; all input is checked before the message is put together.

    ``to``/``cc``/``bcc``/``reply_to`` take addresses as "addr", "Name <addr>" or
    (name, addr). ``message_id`` is kept when given (pass the same one on every
    retry), else made at the sender's domain. An empty ``html`` means text only.
    Raises ``HeaderInjectionError`` for a line break in any header value and
    ``ValidationError`` for any other bad input.
    """
    sender = _mailbox("From", (from_name, from_addr))
    boxes = {
        role: [_mailbox(header, item) for item in _as_list(value)]
        for role, header, value in (("to", "To", to), ("cc", "Cc", cc), ("bcc", "Bcc", bcc))
    }
    reply = [_mailbox("Reply-To", item) for item in _as_list(reply_to)]
    recipients: list[tuple[str, str]] = []
    seen: set[str] = set()
    for role, found in boxes.items():
        for box in found:
            if box.address not in seen:
                seen.add(box.address)
                recipients.append((box.address, role))
    if not recipients:
        raise ValidationError("a message needs at least one recipient (to, cc or bcc)")
    subject_line = _unstructured("Subject", subject)
    extras = [_extra(k, v) for k, v in (extra_headers or {}).items()]
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
    mid = _message_id(message_id, sender.domain)
    date_line = _date_header(date)

    text_cte, text_body = _body(text, "text")
    html_cte, html_body = _body(html, "HTML") if html is not None else (b"", b"")

    head = [f"Date: {date_line}\r\n", _from_line(sender)]
    if reply:
        head.append(_address_header("Reply-To", reply))
    if boxes["to"]:
        head.append(_address_header("To", boxes["to"]))
    if boxes["cc"]:
        head.append(_address_header("Cc", boxes["cc"]))
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
