"""Mail headers from data: RFC 2047 encoding and folding, addresses, injection checks.

Every header value that comes from data passes ``check_header``: a line break,
plain or hidden in an encoded word (``=?utf-8?q?=0A?=``, which the Python on
this machine would decode into a real one), raises ``HeaderInjectionError``.
Non-ASCII text goes out as folded encoded words; display names are quoted the
way ``email.utils.formataddr`` quotes them; addresses are checked once each
with ``mail.addresses.check_address`` (cached). Used by ``compose``.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.header
import email.policy
import hashlib
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import lru_cache

from sysmail_ops.errors import HeaderInjectionError, ValidationError
from sysmail_ops.mail.addresses import check_address

# "addr@example.com", "Name <addr@example.com>" or ("Name", "addr@example.com").
Address = str | tuple[str | None, str]

FOLD_AT = 78  # RFC 5322: the length a header line should keep to

_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")

# Characters that end a line somewhere: CR/LF for mail, the rest for
# str.splitlines(), which the stdlib's header folding uses when re-serialising.
_LINE_BREAK = re.compile("[\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")

_ENCODED_WORD = re.compile(r"=\?([^?]*)\?([bBqQ])\?(.*?)\?=", re.S)

_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")

_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")  # printable ASCII but ':'

_MSG_ID = re.compile(r"<?([!-;=?-~]+@[!-;=?-~]+)>?")

_NAME_ADDR = re.compile(r"\s*(.*?)\s*<([^<>]*)>\s*", re.S)

_WSP_RUN = re.compile(r"[ \t]+")

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

_SPECIALS = re.compile(r'[][\\()<>@,:;".]')  # as email.utils.formataddr

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


def check_header(header: str, value: str) -> None:
    """Refuse a value that carries a line break, plainly or inside an encoded word."""
    if not isinstance(value, str):
        raise ValidationError(f"{header} must be text, got {type(value).__name__}")
    if _LINE_BREAK.search(value):
        raise HeaderInjectionError(f"{header} must not contain a line break: {excerpt(value)}")
    if "=?" in value and any(_LINE_BREAK.search(s) for s in _decodings(value)):
        raise HeaderInjectionError(
            f"{header} must not contain an encoded line break: {excerpt(value)}"
        )


def excerpt(value: str) -> str:
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


def encodable(value: str, what: str) -> None:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(f"{what} contains characters that are not Unicode text") from None


# -- header rendering ------------------------------------------------------------------


def fold_header(name: str, pieces: Sequence[str]) -> str:
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
def unstructured_header(name: str, value: str) -> str:
    """A free-text header (Subject): checked, encoded when needed, folded."""
    check_header(name, value)
    encodable(value, name)
    if not value:
        return f"{name}:\r\n"
    if _plain(value):
        return fold_header(name, value.split(" "))
    return fold_header(name, _encoded_words(value, FOLD_AT - len(name) - 2))


@lru_cache(maxsize=1024)
def extra_header(name: str, value: str) -> str:
    """A caller's header (List-Unsubscribe, X-...): kept as is when ASCII, else encoded."""
    check_header("extra header name", name)
    if not _HEADER_NAME.fullmatch(name):
        raise ValidationError(f"extra header name {name!r} is not printable ASCII without ':'")
    if name.lower() in _RESERVED:
        raise ValidationError(f"the {name} header is set by compose, not by extra headers")
    check_header(name, value)
    encodable(value, name)
    value = value.strip()
    if not value:
        return f"{name}:\r\n"
    if value.isascii() and value.isprintable():
        words = value.split(" ")
        if any(len(w) > 900 for w in words):
            raise ValidationError(f"{name} has a word longer than 900 characters")
        return fold_header(name, words)
    return unstructured_header(name, value)


def _phrase(name: str) -> list[str]:
    """A display name as header pieces, with ``formataddr``'s quoting for ASCII."""
    if name.isascii() and name.isprintable() and "=?" not in name and len(name) <= 900:
        if not _SPECIALS.search(name) and "  " not in name and name == name.strip():
            return name.split(" ")
        return ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    return _encoded_words(name, FOLD_AT - len("Reply-To: "))


@dataclass(frozen=True, slots=True)
class Mailbox:
    pieces: tuple[str, ...]  # the header form, "Name <addr>" split where it may fold
    address: str  # envelope form: IDNA domain
    utf8: bool  # non-ASCII local part: needs SMTPUTF8
    domain: str


@lru_cache(maxsize=8192)
def mailbox(header: str, item: Address) -> Mailbox:
    """Parse, check and render one address: cached, so a batch checks each once."""
    if isinstance(item, tuple):
        if len(item) != 2:
            raise ValidationError(f"{header}: give an address as (name, address), got {item!r}")
        name, addr = item
        check_header(f"{header} display name", name or "")
        check_header(f"{header} address", addr)
    else:
        check_header(header, item)
        m = _NAME_ADDR.fullmatch(item)
        name, addr = (m.group(1), m.group(2)) if m else (None, item.strip())
        if name and len(name) > 1 and name[0] == '"' == name[-1]:
            name = re.sub(r"\\(.)", r"\1", name[1:-1])
    if not isinstance(addr, str):
        raise ValidationError(f"{header} address must be text, got {type(addr).__name__}")
    normal = check_address(addr.strip(), f"{header} address")
    local, _, domain = normal.rpartition("@")
    if not domain.isascii():
        from email_validator import validate_email

        ascii_domain = validate_email(normal, check_deliverability=False).ascii_domain
        domain = ascii_domain or domain
    address = f"{local}@{domain}"
    name = _WSP_RUN.sub(" ", name or "").strip(" ")  # as readers see a phrase
    if name:
        encodable(name, f"{header} display name")
        if _CONTROL.search(name):  # readers drop or mangle them
            raise ValidationError(
                f"{header} display name contains a control character: {excerpt(name)}"
            )
        pieces = (*_phrase(name), f"<{address}>")
    else:
        pieces = (address,)
    return Mailbox(pieces, address, not local.isascii(), domain)


def as_addresses(value: str | Sequence[Address] | None) -> list[Address]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [(v[0], v[1]) if isinstance(v, list) else v for v in value]


def address_header(name: str, boxes: Sequence[Mailbox]) -> str:
    pieces: list[str] = []
    for i, box in enumerate(boxes):
        if i:
            pieces[-1] += ","
        pieces.extend(box.pieces)
    return fold_header(name, pieces)


@lru_cache(maxsize=64)
def from_header(sender: Mailbox) -> str:
    return address_header("From", [sender])


_DATE: tuple[int, str] = (0, "")


def date_header(date: datetime | None) -> str:
    global _DATE
    if date is None:
        now = int(time.time())
        if _DATE[0] != now:
            _DATE = (now, format_datetime(datetime.fromtimestamp(now, UTC)))
        return _DATE[1]
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)  # naive means UTC, as the store keeps time
    return format_datetime(date)


def make_message_id(given: str | None, domain: str) -> str:
    if given is None:
        return f"<{time.time_ns() // 1_000_000:x}.{os.urandom(16).hex()}@{domain}>"
    check_header("Message-ID", given)
    m = _MSG_ID.fullmatch(given.strip())
    if not m:
        raise ValidationError(f"Message-ID {given!r} is not of the form <id@domain>")
    return f"<{m.group(1)}>"


def keyed_message_id(key: bytes, recipients: Iterable[str], domain: str) -> str:
    """The Message-ID of the message ``key`` names to these recipients, at ``domain``.

    The same key and recipients (in any order or case) give the same Message-ID in
    any process, so a message built again after a crash carries the Message-ID of the
    copy the server may already hold, and receivers, the archive and the log can see
    it is one message. ``key`` should already be a keyed hash (``Composer`` passes an
    HMAC of the account and the delivery key): only a hash shows, never the key or an
    address. 128 bits of SHA-256 as 32 hex digits: a dot-atom, well within RFC 5322.
    """
    addresses = "\0".join(sorted({r.lower() for r in recipients}))
    digest = hashlib.sha256(key + b"\0" + addresses.encode("utf-8", "surrogatepass"))
    return f"<{digest.hexdigest()[:32]}@{domain}>"


# -- bodies --------------------------------------------------------------------------


def check_link(url: str, what: str) -> None:
    """A link that goes between ``<>`` in List-Unsubscribe: one printable word, no ``,<>``."""
    if any(c.isspace() or c in "<>," or not c.isprintable() for c in url):
        raise ValidationError(f"{what} must not contain spaces, line breaks, commas or <>")


def check_sender(
    from_addr: str,
    from_name: str | None = None,
    *,
    unsubscribe_url: str | None = None,
    unsubscribe_mailto: str | None = None,
) -> None:
    """The header values a sending account puts on every message, checked as ``compose``
    checks them at send (From, List-Unsubscribe): an account that passes here never
    fails a send for them. Raises ``HeaderInjectionError`` or ``ValidationError``."""
    mailbox("From", (from_name, from_addr))
    if unsubscribe_url is not None:
        check_link(unsubscribe_url, "unsubscribe URL")
    for name, value in list_unsubscribe(unsubscribe_url, unsubscribe_mailto).items():
        extra_header(name, value)


def list_unsubscribe(url: str | None, mailto: str | None) -> dict[str, str]:
    """List-Unsubscribe (RFC 2369: the link first, then the mailto) and, for an https
    link, RFC 8058's one-click ``List-Unsubscribe-Post``; no header without either."""
    links = [f"<{url}>"] if url else []
    if mailto:
        links.append(f"<mailto:{mailto}?subject=unsubscribe>")
    if not links:
        return {}
    headers = {"List-Unsubscribe": ", ".join(links)}
    if url and url.startswith("https://"):
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers
