"""Reading a received message: the fields the archive keeps, in bounded memory.

The standard library's parser holds a message several times over (a 35 MB
message with a 25 MB attachment peaks near 200 MB). So the parser is given a
*skeleton*: every header line and MIME boundary line, and at most
``KEEP_BODY`` bytes of each body between them; what is left out is counted
(bytes, and for base64 the characters, so an attachment's decoded size is
still exact). The skeleton is what ``email`` parses; the whole raw message
stays on disk, untouched, for ``archive show --raw``.

Real mail is messy: malformed MIME, unknown charsets, 8-bit headers and
missing Message-IDs give defects and fallbacks, never an exception; what
cannot be read at all is reported in ``Parsed.error``.
"""

from __future__ import annotations

import email
import email.header
import email.utils
import hashlib
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from typing import IO

__all__ = ["KEEP_BODY", "Parsed", "message_ids", "normalise_id", "read_message"]

KEEP_BODY = 256 * 1024  # bytes of each body part handed to the parser
KEEP_HEAD = 256 * 1024  # bytes of each header block
MAX_TEXT = 100_000  # characters of text kept for search
_MARK = "\x00skim "
_IDS = re.compile(r"<[^<>\s]+>")


@dataclass
class _Run:
    """One body between header block and boundary: what was kept and what was left out."""

    total: int = 0
    kept: int = 0
    chars: int = 0  # non-line-break characters (base64: 4 of them are 3 bytes)
    padding: int = 0  # "=" closing the last non-empty line


@dataclass
class Parsed:
    """What the archive keeps of one received message."""

    message_id: str | None
    content_hash: str
    from_addr: str | None = None
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    subject: str | None = None
    date: datetime | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    text: str = ""
    attachments: list[tuple[str, int]] = field(default_factory=list)
    error: str | None = None
    message: Message | None = None  # the skeleton, for bounce detection


def normalise_id(value: str | None) -> str | None:
    """A Message-ID as ``<left@right>``, or None when there is none."""
    if not value:
        return None
    found = _IDS.search(value)
    if found:
        return found.group(0)
    value = value.strip()
    return f"<{value}>" if value and not any(c.isspace() for c in value) else None


def message_ids(value: str | None) -> list[str]:
    """The ``<...>`` ids of an In-Reply-To or References header, in order."""
    return _IDS.findall(value or "")


def _skeleton(fh: IO[bytes], digest: hashlib._Hash) -> tuple[bytes, list[_Run]]:
    out = bytearray()
    runs: list[_Run] = []
    run: _Run | None = None
    head = 0
    at_start = True

    def close() -> None:
        nonlocal run
        if run is not None and run.kept < run.total:
            out.extend(f"{_MARK}{len(runs) - 1}\r\n".encode())
        run = None

    while True:
        line = fh.readline(65536)
        if not line:
            break
        digest.update(line)
        starts, at_start = at_start, line.endswith(b"\n")
        if starts and line.startswith(b"--"):
            close()
            out += line
            head = 0
            continue
        if run is None:  # a header block
            head += len(line)
            if head <= KEEP_HEAD:
                out += line
            if starts and line in (b"\r\n", b"\n"):
                run = _Run()
                runs.append(run)
            continue
        run.total += len(line)
        if run.kept + len(line) <= KEEP_BODY and run.kept == run.total - len(line):
            out += line
            run.kept += len(line)
        body = line.rstrip(b"\r\n")
        run.chars += len(body)
        if body.strip():
            run.padding = len(body) - len(body.rstrip(b"="))
    close()
    return bytes(out), runs


def _decoded_header(msg: Message, name: str) -> str | None:
    raw = msg.get(name)
    if raw is None:
        return None
    text = _decoded_header_value(raw)
    try:
        # An 8-bit header comes as a Header of "unknown-8bit" chunks: decoded as UTF-8 below.
        parts = email.header.decode_header(raw if isinstance(raw, email.header.Header) else text)
        out = []
        for chunk, charset in parts:
            if isinstance(chunk, str):
                out.append(chunk)
                continue
            try:
                out.append(chunk.decode(charset or "ascii", "replace"))
            except LookupError:  # an unknown charset: keep what is readable
                out.append(chunk.decode("utf-8", "replace"))
        decoded = "".join(out)
    except (ValueError, AssertionError, email.errors.HeaderParseError):
        decoded = text
    return " ".join(decoded.split())  # unfolded, one line


def _addresses(msg: Message, name: str) -> list[str]:
    values = msg.get_all(name) or []
    texts = [_decoded_header_value(v) for v in values]
    return [a.lower() for _, a in email.utils.getaddresses(texts) if a and "@" in a]


def _decoded_header_value(value: object) -> str:
    if isinstance(value, email.header.Header):  # 8-bit bytes the parser could not name
        return "".join(
            c.decode("utf-8", "replace") if isinstance(c, bytes) else c
            for c, _ in email.header.decode_header(value)
        )
    text = str(value)
    if any("\udc80" <= c <= "\udcff" for c in text):
        text = text.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    return text


def _date(msg: Message) -> datetime | None:
    raw = msg.get("Date")
    if not raw:
        return None
    try:
        when = email.utils.parsedate_to_datetime(str(raw))
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return when
    return when.astimezone(UTC).replace(tzinfo=None)


def _payload_bytes(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except (ValueError, AssertionError, LookupError):
        data = None
    return data if isinstance(data, bytes) else b""


def _charset_text(part: Message, data: bytes) -> str:
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _strip_mark(part: Message) -> int | None:
    """Take the skim marker off a leaf part's body; returns the run it names."""
    payload = part.get_payload()
    if not isinstance(payload, str) or _MARK not in payload:
        return None
    body, _, rest = payload.rpartition(_MARK)
    part.set_payload(body)
    try:
        return int(rest.split()[0])
    except (ValueError, IndexError):
        return None


def _html_text(html: str) -> str:
    import html2text

    conv = html2text.HTML2Text()
    conv.ignore_images = True
    conv.body_width = 0
    return str(conv.handle(html))


def read_message(source: IO[bytes] | bytes) -> Parsed:
    """Read one raw message (a file of any size, or bytes) into the fields the archive keeps."""
    if isinstance(source, bytes) and len(source) <= min(KEEP_BODY, KEEP_HEAD):
        # Small: the skeleton would be the message itself.
        skeleton, runs = source, list[_Run]()
        content_hash = "sha256:" + hashlib.sha256(source).hexdigest()
    else:
        digest = hashlib.sha256()
        stream = io.BytesIO(source) if isinstance(source, bytes) else source
        skeleton, runs = _skeleton(stream, digest)
        content_hash = "sha256:" + digest.hexdigest()
    parsed = Parsed(message_id=None, content_hash=content_hash)
    try:
        msg = email.message_from_bytes(skeleton)
    except Exception as exc:  # the parser's own bug on hostile input: keep it raw
        parsed.error = f"cannot parse: {type(exc).__name__}: {exc}"[:500]
        return parsed
    parsed.message = msg
    problems: list[str] = []
    try:
        parsed.message_id = normalise_id(_decoded_header(msg, "Message-ID"))
        parsed.subject = _decoded_header(msg, "Subject")
        froms = _addresses(msg, "From")
        parsed.from_addr = froms[0] if froms else None
        parsed.to = _addresses(msg, "To")
        parsed.cc = _addresses(msg, "Cc")
        parsed.date = _date(msg)
        parsed.in_reply_to = normalise_id(_decoded_header(msg, "In-Reply-To"))
        parsed.references = message_ids(_decoded_header(msg, "References"))
    except Exception as exc:  # one header we cannot read must not lose the others
        problems.append(f"headers: {type(exc).__name__}: {exc}")
    texts: list[str] = []
    html: list[str] = []
    try:
        for part in msg.walk():
            if part.is_multipart():
                continue
            index = _strip_mark(part)
            filename = part.get_filename()
            ctype = part.get_content_type()
            disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
            if filename or disposition == "attachment":
                name = _decoded_header_value(filename or "(unnamed)")
                parsed.attachments.append((name, _size(part, runs, index)))
                continue
            if ctype == "text/plain" and sum(map(len, texts)) < MAX_TEXT:
                texts.append(_charset_text(part, _payload_bytes(part)))
            elif ctype == "text/html" and not texts:
                html.append(_charset_text(part, _payload_bytes(part)))
        if not texts and html:
            texts = [_html_text("\n".join(html))]
    except Exception as exc:  # a broken part: the rest of the message still counts
        problems.append(f"body: {type(exc).__name__}: {exc}")
    parsed.text = "\n".join(texts)[:MAX_TEXT]
    defects = [type(d).__name__ for d in msg.defects]
    if defects:
        problems.append("MIME defects: " + ", ".join(sorted(set(defects))))
    if problems:
        parsed.error = "; ".join(problems)[:500]
    return parsed


def _size(part: Message, runs: list[_Run], index: int | None) -> int:
    """The decoded size of an attachment, exact even when its body was left out."""
    if index is None or not 0 <= index < len(runs):
        return len(_payload_bytes(part))
    run = runs[index]
    if (part.get("Content-Transfer-Encoding") or "").strip().lower() == "base64":
        return max(0, run.chars * 3 // 4 - run.padding)
    return run.total
