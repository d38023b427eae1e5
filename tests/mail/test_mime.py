"""MIME building: every message built here is parsed back with the stdlib and checked.

``build`` is the only way these tests call ``compose``: it checks the wire
format of every message (CRLF only, no line over 998 octets) and parses it
back with ``email.policy.default``, so no test can skip those checks.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email
import email.header
import email.policy
import pickle
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import formataddr
from io import BytesIO
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from email_validator import EmailNotValidError, validate_email

from sysmail_ops.errors import HeaderInjectionError, ValidationError
from sysmail_ops.mail import headers as headers_mod
from sysmail_ops.mail.addresses import check_address
from sysmail_ops.mail.mime import Attachment, Composed, InlineImage, _qp, compose

SENDER = "service@example.com"


def assert_wire_format(data: bytes) -> None:
    """CRLF line endings only, every line at most 998 octets, ends with CRLF."""
    assert data.endswith(b"\r\n")
    lines = data.split(b"\r\n")
    assert lines[-1] == b""
    for n, line in enumerate(lines[:-1], 1):
        assert b"\r" not in line, f"bare CR in line {n}: {line[:80]!r}"
        assert b"\n" not in line, f"bare LF in line {n}: {line[:80]!r}"
        assert len(line) <= 998, f"line {n} is {len(line)} octets"


def parse(c: Composed) -> EmailMessage:
    if c.needs_smtputf8:  # RFC 6532 headers: the bytes parser only reads ASCII headers
        msg = email.message_from_string(c.data.decode("utf-8"), policy=email.policy.default)
    else:
        msg = email.message_from_bytes(c.data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def build(**kw: Any) -> tuple[Composed, EmailMessage]:
    args: dict[str, Any] = {
        "from_addr": SENDER,
        "from_name": "Acme Service",
        "to": ["alice@example.org"],
        "subject": "Hello",
        "text": "Hello Alice.\n",
    }
    args.update(kw)
    c = compose(**args)
    assert_wire_format(c.data)
    assert c.size == len(c.data)
    if not c.needs_smtputf8:
        assert c.data.isascii()
    msg = parse(c)
    assert msg["Message-ID"] == c.message_id
    assert msg["Bcc"] is None
    assert msg["MIME-Version"] == "1.0"
    assert isinstance(msg["Date"].datetime, datetime)
    for part in msg.walk():
        assert not part.defects, (part.get_content_type(), part.defects)
    if not c.needs_smtputf8:  # the stdlib calls a UTF-8 local part a defect
        for name, value in msg.items():
            assert not getattr(value, "defects", ()), (name, value.defects)
    return c, msg


def crlf(text: str) -> str:
    """What a body decodes back to: CRLF line breaks, ending with one."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    return text if text.endswith("\n") else text + "\r\n"


def mailboxes(msg: EmailMessage, header: str) -> list[tuple[str, str]]:
    return [(a.display_name, a.addr_spec) for a in msg[header].addresses]


def rfc2047_name(c: Composed, header: str) -> str:
    """The display name of a one-mailbox header as RFC 2047 reads it.

    RFC 2047 6.2: white space between adjacent encoded words is not displayed.
    The stdlib's address parser (Python 3.11) shows it as a space, even for
    long names it folded itself; ``email.header.decode_header`` reads it right.
    """
    raw = email.message_from_bytes(c.data, policy=email.policy.compat32)[header]
    name = re.sub(r"\r\n", "", raw).rpartition("<")[0].strip()
    if name.startswith('"'):
        return re.sub(r"\\(.)", r"\1", name[1:-1])
    return str(email.header.make_header(email.header.decode_header(name)))


def adjacent_encoded_words(c: Composed, header: str) -> bool:
    raw = email.message_from_bytes(c.data, policy=email.policy.compat32)[header]
    return bool(re.search(r"\?=\s+=\?", raw))


def body_text(msg: EmailMessage, subtype: str) -> str:
    part = msg.get_body(preferencelist=(subtype,))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


# -- structure -----------------------------------------------------------------------


def test_text_only_is_a_single_text_plain_part() -> None:
    c, msg = build(text="Hello Alice,\nyour order shipped.")
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert msg["Content-Transfer-Encoding"] == "7bit"
    assert msg.get_content() == "Hello Alice,\r\nyour order shipped.\r\n"
    assert msg["Subject"] == "Hello"
    assert mailboxes(msg, "From") == [("Acme Service", SENDER)]
    assert mailboxes(msg, "To") == [("", "alice@example.org")]
    assert c.envelope_from == SENDER
    assert c.recipients == [("alice@example.org", "to")]
    assert c.attachment_names == []
    assert c.needs_smtputf8 is False


def test_text_and_html_make_multipart_alternative() -> None:
    html = "<p>Hello <b>Alice</b></p>"
    _, msg = build(text="Hello Alice", html=html)
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert body_text(msg, "plain") == "Hello Alice\r\n"
    assert body_text(msg, "html") == html + "\r\n"


def test_empty_html_means_text_only() -> None:
    _, msg = build(html="")
    assert msg.get_content_type() == "text/plain"


def test_inline_images_make_multipart_related_around_the_alternative() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    html = '<p><img src="cid:logo@acme" alt="Acme"></p>'
    _, msg = build(html=html, inline_images=[InlineImage("logo@acme", png, "png")])
    assert msg.get_content_type() == "multipart/related"
    assert msg.get_param("type") == "multipart/alternative"
    alternative, image = msg.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    assert image.get_content_type() == "image/png"
    assert image["Content-ID"] == "<logo@acme>"
    assert image.get_content_disposition() == "inline"
    assert image["Content-Transfer-Encoding"] == "base64"
    assert image.get_content() == png
    shown = body_text(msg, "html")
    assert "cid:" + image["Content-ID"].strip("<>") in shown


def test_attachments_make_multipart_mixed_outermost() -> None:
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 20
    c, msg = build(
        html='<img src="cid:logo">',
        inline_images=[InlineImage("logo", b"GIF89a...", "gif", filename="logo.gif")],
        attachments=[Attachment("invoice.pdf", pdf), Attachment("notes.txt", b"line 1\nline 2\n")],
    )
    assert msg.get_content_type() == "multipart/mixed"
    related, *files = msg.iter_parts()
    assert related.get_content_type() == "multipart/related"
    alternative, image = related.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    assert image.get_filename() == "logo.gif"
    assert [(f.get_filename(), f.get_content_type()) for f in files] == [
        ("invoice.pdf", "application/pdf"),
        ("notes.txt", "text/plain"),
    ]
    assert files[0].get_payload(decode=True) == pdf
    assert files[0].get_content_disposition() == "attachment"
    assert files[1].get_payload(decode=True) == b"line 1\nline 2\n"  # bytes kept as they are
    assert files[1].get_content_charset() == "utf-8"
    assert [a.get_filename() for a in msg.iter_attachments()] == ["invoice.pdf", "notes.txt"]
    assert c.attachment_names == ["invoice.pdf", "notes.txt"]


def test_text_with_attachment_only() -> None:
    _, msg = build(attachments=[Attachment("data.bin", b"\x00\x01\x02")])
    body, att = msg.iter_parts()
    assert body.get_content_type() == "text/plain"
    assert att.get_content_type() == "application/octet-stream"
    assert att.get_payload(decode=True) == b"\x00\x01\x02"


def test_boundaries_are_random_and_not_in_the_content() -> None:
    text = "--=_0123456789abcdef01234567\n-- a fake boundary line\n"
    c1, msg = build(text=text, html="<p>x</p>", attachments=[Attachment("a.txt", b"--=_")])
    c2, _ = build(text=text, html="<p>x</p>", attachments=[Attachment("a.txt", b"--=_")])
    for m in msg.walk():
        if m.is_multipart():
            boundary = m.get_boundary()
            assert boundary is not None
            marker = b"--" + boundary.encode()
            lines = c1.data.split(b"\r\n")
            assert lines.count(marker) == len(m.get_payload())
            assert lines.count(marker + b"--") == 1
            assert c1.data.count(boundary.encode()) == lines.count(marker) + 2  # + param
            assert boundary.encode() not in c2.data
    assert body_text(msg, "plain") == crlf(text)


# -- bodies --------------------------------------------------------------------------


def cte(msg: EmailMessage, subtype: str = "plain") -> str:
    part = msg.get_body(preferencelist=(subtype,))
    assert part is not None
    return str(part["Content-Transfer-Encoding"])


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Plain ASCII\nwith short lines\n", "7bit"),
        ("Grüße aus München\n", "quoted-printable"),
        ("x" * 999, "quoted-printable"),  # one line over 998 octets
        ("x" * 998, "7bit"),
        (".\nA line that is only a dot\n", "quoted-printable"),
        ("Hi\nFrom here on\n", "quoted-printable"),
        ("NUL \x00 inside\n", "quoted-printable"),
        ("form\x0cfeed\n", "quoted-printable"),
        ("订单已发货，感谢您的惠顾。" * 20, "base64"),  # mostly non-ASCII: QP would triple it
    ],
)
def test_body_transfer_encoding(text: str, encoding: str) -> None:
    _, msg = build(text=text, html=text)
    assert cte(msg, "plain") == encoding
    assert cte(msg, "html") == encoding
    assert body_text(msg, "plain") == crlf(text)
    assert body_text(msg, "html") == crlf(text)


def test_line_breaks_of_any_kind_become_crlf() -> None:
    _, msg = build(text="unix\nwindows\r\nold mac\rend")
    assert msg.get_content() == "unix\r\nwindows\r\nold mac\r\nend\r\n"


def test_long_single_line_html_is_folded_by_quoted_printable() -> None:
    html = "<div>" + "".join(f'<span class="c{i}">é{i}</span>' for i in range(400)) + "</div>"
    ascii_html = "<p>" + "word " * 1000 + "</p>"
    for h in (html, ascii_html, "x" * 5000):
        assert "\n" not in h and len(h) >= 5000
        c, msg = build(html=h, text=h)
        assert body_text(msg, "html") == h + "\r\n"
        assert body_text(msg, "plain") == h + "\r\n"
        assert max(len(line) for line in c.data.split(b"\r\n")) <= 78


def test_leading_dot_and_from_are_encoded_and_trailing_space_kept() -> None:
    text = "é\n.\n.hidden\nFrom the desk of\nspaces at the end   \ntab at the end\t\n"
    c, msg = build(text=text)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    body = c.data.split(b"\r\n\r\n", 1)[1]
    for line in body.split(b"\r\n"):
        assert not line.startswith((b".", b"From "))
        assert not line.endswith((b" ", b"\t"))
        assert len(line) <= 76
    assert msg.get_content() == crlf(text)


def test_quoted_printable_lines_stay_within_76_columns() -> None:
    # binascii.b2a_qp writes 77 columns when trailing whitespace lands at column 75
    text = "é\n" + "x" * 74 + "\t\n" + "y" * 74 + " \n" + "." + "z" * 80 + "\n"
    c, msg = build(text=text)
    body = c.data.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    assert msg.get_content() == crlf(text)


def test_text_that_is_not_unicode_is_refused() -> None:
    with pytest.raises(ValidationError, match="text body"):
        compose(from_addr=SENDER, to=["a@example.org"], subject="x", text="bad \udc80")


# -- headers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        "Your order has shipped",
        "Grüße aus München",
        "订单已发货 🎉",
        "  leading and trailing spaces  ",
        "tab\tinside",
        "double  space",
        "=?utf-8?q?looks_encoded?=",
        "price =? and ?= signs",
        'quotes "and" (parens), commas; <angles>',
        "",
        "word " * 400,
        "x" * 2000,
        "ü" * 700,
        "mixed ascii " * 30 + "and ünïcödé " * 30,
    ],
)
def test_subject_round_trips(subject: str) -> None:
    c, msg = build(subject=subject)
    assert msg["Subject"] == subject
    head = c.data.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78


@pytest.mark.parametrize(
    "name",
    [
        "Acme Service",
        "Smith, John",
        'The "Best" Shop',
        "back\\slash",
        "dots. and: colons; @",
        "José Díaz",
        "客服中心",
        "=?utf-8?q?not_encoded?=",
        "A" * 300,
        " ".join(["Ünïcödé"] * 40),  # several encoded words
        "山田\u3000太郎",
    ],
)
def test_display_names_round_trip(name: str) -> None:
    c, msg = build(
        from_name=name,
        to=[
            formataddr((name, "alice@example.org"))
            if name.isascii()
            else (name, "alice@example.org")
        ],
        cc=[(name, "carol@example.org")],
        reply_to=[(name, "help@example.com")],
    )
    for header in ("From", "To", "Cc", "Reply-To"):
        assert rfc2047_name(c, header) == name
    if adjacent_encoded_words(c, "From"):  # the stdlib adds spaces between them
        assert len(name.encode()) > 45
        return
    assert mailboxes(msg, "From") == [(name, SENDER)]
    assert mailboxes(msg, "To") == [(name, "alice@example.org")]
    assert mailboxes(msg, "Cc") == [(name, "carol@example.org")]
    assert mailboxes(msg, "Reply-To") == [(name, "help@example.com")]


def test_whitespace_in_display_names_is_one_space() -> None:
    _, msg = build(from_name="  Acme\t\tService  ", to=[("Jürgen  Groß", "j@example.org")])
    assert mailboxes(msg, "From") == [("Acme Service", SENDER)]
    assert mailboxes(msg, "To") == [("Jürgen Groß", "j@example.org")]


def test_control_characters_in_display_names_are_refused() -> None:
    with pytest.raises(ValidationError, match="To display name contains a control"):
        build(to=[("Bell\x07", "alice@example.org")])


@pytest.mark.parametrize(
    "name", ["Acme", "Acme Service", "Smith, John", 'The "Best" Shop', "back\\slash", "a.b@c"]
)
def test_ascii_names_are_written_as_formataddr_writes_them(name: str) -> None:
    c, _ = build(from_name=name, to=[formataddr((name, "jane@example.org"))])
    assert f"From: {formataddr((name, SENDER))}\r\n".encode() in c.data
    assert f"To: {formataddr((name, 'jane@example.org'))}\r\n".encode() in c.data


def test_address_forms_and_recipient_roles() -> None:
    c, msg = build(
        to=["Alice <alice@example.org>", ("Bob", "bob@example.org"), "carol@example.org"],
        cc="Dave <dave@example.org>",
        bcc=["eve@example.org", "alice@example.org"],
        reply_to=["help@example.com", "Desk <desk@example.com>"],
    )
    assert mailboxes(msg, "To") == [
        ("Alice", "alice@example.org"),
        ("Bob", "bob@example.org"),
        ("", "carol@example.org"),
    ]
    assert mailboxes(msg, "Cc") == [("Dave", "dave@example.org")]
    assert mailboxes(msg, "Reply-To") == [("", "help@example.com"), ("Desk", "desk@example.com")]
    # each address once in the envelope, in its first role
    assert c.recipients == [
        ("alice@example.org", "to"),
        ("bob@example.org", "to"),
        ("carol@example.org", "to"),
        ("dave@example.org", "cc"),
        ("eve@example.org", "bcc"),
    ]


def test_bcc_is_only_in_the_envelope() -> None:
    c, msg = build(to=[], bcc=["Hidden Person <hidden@example.org>", "secret@example.net"])
    assert b"hidden" not in c.data.lower() and b"secret" not in c.data
    head = c.data.split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")
    assert not [line for line in head if line.startswith(b"bcc")]  # (a random id may hold "bcc")
    assert msg["To"] is None and msg["Cc"] is None
    assert c.recipients == [("hidden@example.org", "bcc"), ("secret@example.net", "bcc")]


def test_many_recipients_fold_between_addresses() -> None:
    to = [(f"Recipient Nümber {i}", f"user{i}@example.org") for i in range(60)]
    c, msg = build(to=to)
    assert mailboxes(msg, "To") == [(n, a) for n, a in to]
    head = c.data.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78


def test_idn_domain_goes_out_as_idna() -> None:
    c, msg = build(from_addr="info@bücher.example.com", to=["kunde@münchen.example.org"])
    assert c.envelope_from == "info@xn--bcher-kva.example.com"
    assert c.recipients == [("kunde@xn--mnchen-3ya.example.org", "to")]
    assert mailboxes(msg, "To") == [("", "kunde@xn--mnchen-3ya.example.org")]
    assert c.message_id.endswith("@xn--bcher-kva.example.com>")
    assert c.needs_smtputf8 is False


def test_non_ascii_local_part_needs_smtputf8() -> None:
    c, msg = build(to=[("José", "josé@example.org")], cc=["Ann <ann@example.org>"])
    assert c.needs_smtputf8 is True
    assert c.recipients[0] == ("josé@example.org", "to")
    assert "josé@example.org".encode() in c.data
    assert mailboxes(msg, "To") == [("José", "josé@example.org")]
    c, _ = build(bcc=["ünsichtbar@example.org"])
    assert c.needs_smtputf8 is True  # the envelope needs it even with no header showing it
    c, _ = build(from_addr="dienst@bücher.example.com")
    assert c.needs_smtputf8 is False


def test_message_id_is_made_unique_or_kept() -> None:
    c1, _ = build()
    c2, _ = build()
    assert c1.message_id != c2.message_id
    assert re.fullmatch(r"<[0-9a-f]+\.[0-9a-f]{32}@example\.com>", c1.message_id)
    c3, msg = build(message_id="<retry-42@example.com>")
    assert c3.message_id == "<retry-42@example.com>" == msg["Message-ID"]
    c4, _ = build(message_id="retry-42@example.com")
    assert c4.message_id == "<retry-42@example.com>"
    for bad in ("no-at-sign", "<a b@example.com>", "<é@example.com>"):
        with pytest.raises(ValidationError, match="Message-ID"):
            build(message_id=bad)


def test_date_header() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    _, msg = build()
    assert before - timedelta(seconds=1) <= msg["Date"].datetime <= datetime.now(UTC)
    cet = timezone(timedelta(hours=1))
    when = datetime(2024, 3, 4, 8, 0, 5, tzinfo=cet)
    _, msg = build(date=when)
    assert msg["Date"].datetime == when
    assert str(msg["Date"]) == "Mon, 04 Mar 2024 08:00:05 +0100"
    _, msg = build(date=datetime(2024, 3, 4, 7, 0, 5))  # naive: UTC, as the store keeps it
    assert msg["Date"].datetime == when


def test_extra_headers() -> None:
    long_value = " ".join(f"<https://example.com/unsubscribe/{i}>," for i in range(60))
    c, msg = build(
        extra_headers={
            "List-Unsubscribe": "<mailto:u@example.com?subject=unsubscribe>, <https://example.com/u/1>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "X-Campaign": "Frühling 2024",
            "X-Long": long_value,
        }
    )
    assert msg["List-Unsubscribe"] == (
        "<mailto:u@example.com?subject=unsubscribe>, <https://example.com/u/1>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["X-Campaign"] == "Frühling 2024"
    assert msg["X-Long"] == long_value
    head = c.data.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78


@pytest.mark.parametrize("name", ["Bcc", "subject", "Content-Type", "MIME-Version", "From"])
def test_extra_headers_cannot_replace_ours(name: str) -> None:
    with pytest.raises(ValidationError, match="set by compose"):
        build(extra_headers={name: "x"})


@pytest.mark.parametrize("name", ["Bad Name", "Colon:", "Ümlaut", ""])
def test_extra_header_names_are_checked(name: str) -> None:
    with pytest.raises(ValidationError, match="header name"):
        build(extra_headers={name: "x"})


# -- header injection ------------------------------------------------------------------

B64_CRLF = base64.b64encode(b"hi\r\nBcc: victim@example.net").decode()
INJECTIONS = [
    "Hello\nBcc: victim@example.net",
    "Hello\r\nBcc: victim@example.net",
    "Hello\rX: y",
    "line\u2028separator",
    "next\x85line",
    "nul\x00byte",
    "=?UTF-8?Q?=0A?=",
    "=?utf-8?q?Hi=0D=0ABcc:_victim@example.net?=",
    "=?utf-8?Q?Hi=0aBcc:_x?=",
    f"=?utf-8?b?{B64_CRLF}?=",
    f"=?UTF-8?B?{B64_CRLF}?=",
    "=?utf-8?b?Cg?=",  # unpadded base64 of "\n"
    "=?iso-8859-1?q?a=0Ab?=",
    "=?utf-7?q?+AAo-?=",  # UTF-7 hides the line break from a byte check
    "=?utf-8*en?b?Cg==?=",  # RFC 2231 language tag
    "=?utf-8?q?a=0A b?=",  # space inside the encoded word: the stdlib decodes it anyway
    "Dear =?utf-8?b?w6k=?= =?utf-8?q?=0d?= customer",
]


@pytest.mark.parametrize("payload", INJECTIONS)
@pytest.mark.parametrize(
    ("field", "header"),
    [
        ("subject", "Subject"),
        ("from_name", "From"),
        ("to_name", "To"),
        ("to_addr", "To"),
        ("cc", "Cc"),
        ("bcc", "Bcc"),
        ("reply_to", "Reply-To"),
        ("extra_value", "X-Tag"),
        ("extra_name", "extra header name"),
        ("message_id", "Message-ID"),
    ],
)
def test_header_injection_is_refused(field: str, header: str, payload: str) -> None:
    cases: dict[str, dict[str, Any]] = {
        "subject": {"subject": payload},
        "from_name": {"from_name": payload},
        "to_name": {"to": [(payload, "alice@example.org")]},
        "to_addr": {"to": [f"{payload}@example.org"]},
        "cc": {"cc": [f"{payload} <carol@example.org>"]},
        "bcc": {"bcc": [f"eve{payload}@example.org"]},
        "reply_to": {"reply_to": f"{payload} <help@example.com>"},
        "extra_value": {"extra_headers": {"X-Tag": payload}},
        "extra_name": {"extra_headers": {f"X-{payload}": "x"}},
        "message_id": {"message_id": f"<{payload}@example.com>"},
    }
    with pytest.raises(HeaderInjectionError, match=re.escape(header)):
        build(**cases[field])


@pytest.mark.parametrize("payload", INJECTIONS[:3] + INJECTIONS[6:9])
def test_header_injection_in_attachment_metadata_is_refused(payload: str) -> None:
    with pytest.raises(HeaderInjectionError, match="attachment file name"):
        Attachment(f"report{payload}.pdf", b"x")
    with pytest.raises(HeaderInjectionError, match="attachment content type"):
        Attachment("report.pdf", b"x", f"application/pdf{payload}")
    with pytest.raises(HeaderInjectionError, match="inline image"):
        InlineImage(f"logo{payload}", b"x", "png")


def test_header_injection_error_is_a_validation_error_and_pickles() -> None:
    with pytest.raises(HeaderInjectionError) as info:
        build(subject="a\nb")
    assert isinstance(info.value, ValidationError)
    again = pickle.loads(pickle.dumps(info.value))  # noqa: S301 - our own bytes
    assert str(again) == str(info.value)
    assert "Subject" in str(again)


def test_encoded_words_without_line_breaks_are_harmless_text() -> None:
    subject = "=?utf-8?q?caf=C3=A9?= and =?utf-8?b?w6k=?="
    _, msg = build(subject=subject, from_name="=?utf-8?q?Eve?=")
    assert msg["Subject"] == subject  # sent as the literal text, not decoded by the reader
    assert mailboxes(msg, "From") == [("=?utf-8?q?Eve?=", SENDER)]


# -- other refusals --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"to": ["not-an-address"]}, "To address"),
        ({"to": ["alice@example.org, bob@example.org"]}, "To address"),
        ({"cc": ["carol@"]}, "Cc address"),
        ({"from_addr": "service@localhost"}, "From address"),
        ({"to": [], "cc": [], "bcc": []}, "at least one recipient"),
        ({"inline_images": [InlineImage("logo", b"x")]}, "HTML body"),
        (
            {
                "html": "<img src='cid:a'>",
                "inline_images": [InlineImage("a", b"x"), InlineImage("a", b"y")],
            },
            "same Content-ID",
        ),
    ],
)
def test_bad_input_is_refused(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        build(**kw)


def test_wrong_part_types_are_refused() -> None:
    with pytest.raises(ValidationError, match="Attachment objects"):
        build(attachments=[b"raw bytes"])
    with pytest.raises(ValidationError, match="InlineImage objects"):
        build(html="<p>", inline_images=[b"raw bytes"])
    with pytest.raises(ValidationError, match="bodies must be text"):
        build(html=b"<p>bytes</p>")


def test_given_content_type_parameters_are_kept() -> None:
    att = Attachment("legacy.txt", "Grüße".encode("latin-1"), "text/plain; charset=latin-1")
    _, msg = build(attachments=[att, Attachment("a.csv", b"x", 'text/csv; name="other"')])
    legacy, csv = msg.iter_attachments()
    assert legacy.get_content_charset() == "latin-1"
    assert legacy.get_content() == "Grüße"
    assert csv.get_filename() == "a.csv" and csv.get_param("name") == "a.csv"


def test_bad_parts_are_refused() -> None:
    with pytest.raises(ValidationError, match="file name"):
        Attachment("", b"x")
    with pytest.raises(ValidationError, match="content type"):
        Attachment("a.bin", b"x", "not a type")
    with pytest.raises(ValidationError, match="Content-ID"):
        InlineImage("<logo>", b"x")
    with pytest.raises(ValidationError, match="subtype"):
        InlineImage("logo", b"x", "png; evil=1")
    with pytest.raises(ValidationError, match=r"\.csv or \.xlsx"):
        Attachment.from_dataframe(pd.DataFrame({"a": [1]}), "table.txt")
    with pytest.raises(ValidationError, match="cannot read"):
        Attachment.from_path("/nonexistent/file.pdf")


# -- attachments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filename",
    [
        "Rechnung Müller.pdf",
        "报告-2024年第一季度.xlsx",
        "Ünïcödé " * 30 + ".pdf",  # long: RFC 2231 continuations
        'quote "and" back\\slash.txt',
        "=?utf-8?q?not_encoded?=.txt",
        "tab\there.txt",
        "x" * 255,
    ],
)
def test_attachment_file_names_round_trip(filename: str) -> None:
    c, msg = build(attachments=[Attachment(filename, b"data")])
    (att,) = msg.iter_attachments()
    assert att.get_filename() == filename
    assert att.get_payload(decode=True) == b"data"
    assert c.attachment_names == [filename]
    fallback = att.get_param("name")  # for readers that know no RFC 2231
    assert isinstance(fallback, str) and fallback.isascii()


def test_non_ascii_file_name_uses_rfc2231_and_an_ascii_fallback() -> None:
    c, _ = build(attachments=[Attachment("Rechnung Müller.pdf", b"%PDF")])
    assert b"filename*=utf-8''Rechnung%20M%C3%BCller.pdf" in c.data
    assert b'name="Rechnung Muller.pdf"' in c.data


def test_attachment_from_path(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(1000))
    att = Attachment.from_path(path)
    assert (att.filename, att.content_type) == ("photo.png", "image/png")
    _, msg = build(attachments=[att])
    (part,) = msg.iter_attachments()
    assert part.get_content_type() == "image/png"
    assert part.get_payload(decode=True) == path.read_bytes()


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "region": ["Nord", "Süd", "東京", 'Quote "x", comma'],
            "orders": [12, 7, 30, 1],
            "revenue": [1250.5, 830.25, 4100.0, 9.99],
        }
    )


def test_dataframe_as_csv_attachment(frame: pd.DataFrame) -> None:
    att = Attachment.from_dataframe(frame, "weekly report.csv")
    assert att.content_type == "text/csv; charset=utf-8"
    _, msg = build(attachments=[att])
    (part,) = msg.iter_attachments()
    assert part.get_filename() == "weekly report.csv"
    assert part.get_content_type() == "text/csv"
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert payload.startswith(b"\xef\xbb\xbf")  # the BOM that makes Excel read UTF-8
    pd.testing.assert_frame_equal(pd.read_csv(BytesIO(payload), encoding="utf-8-sig"), frame)


def test_dataframe_as_xlsx_attachment(frame: pd.DataFrame) -> None:
    att = Attachment.from_dataframe(frame, "Bericht Q1.xlsx", sheet_name="Q1")
    _, msg = build(attachments=[att])
    (part,) = msg.iter_attachments()
    assert part.get_filename() == "Bericht Q1.xlsx"
    assert part.get_content_type() == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    back = pd.read_excel(BytesIO(payload), sheet_name="Q1", engine="openpyxl")
    pd.testing.assert_frame_equal(back, frame)


# -- round trips over random input -----------------------------------------------------

HEADER_POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    "     \t",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "=??=",
    "äöüßéèêçñøåÆŒ",
    "中文字符订单发货测试",
    "日本語のテキスト",
    "한국어",
    "עברית العربية",
    "😀🎉👍🏽👩\u200d💻",
    "\u0301\u0308",  # combining marks
    "\x01\x1f\x7f",
]
BODY_POOLS = [
    *HEADER_POOLS,
    "\n\n\r\n\r",
    ".",
    "From ",
    "x" * 120,
    "\x00\x0b\x0c\x85\u2028",
    '<a href="https://example.com/?a=1&b=2">',
]


ASCII_BODY_POOLS = [p for p in BODY_POOLS if p.isascii()]


def random_text(rng: random.Random, pools: list[str], max_len: int) -> str:
    out = []
    for _ in range(rng.randint(0, max_len)):
        pool = rng.choice(pools)
        out.append(pool if pool in ("From ", "x" * 120) else rng.choice(pool))
    return "".join(out)


def test_random_unicode_round_trips() -> None:
    rng = random.Random(20240304)
    for i in range(300):
        subject = random_text(rng, HEADER_POOLS, rng.choice([10, 80, 400]))
        name = random_text(rng, HEADER_POOLS[:-1], 40)  # no control characters
        pools = rng.choice([BODY_POOLS, ASCII_BODY_POOLS])
        text = random_text(rng, pools, rng.choice([50, 500, 3000]))
        html = rng.choice([None, random_text(rng, pools, rng.choice([50, 3000]))])
        filename = (random_text(rng, HEADER_POOLS[:1] + HEADER_POOLS[4:10], 60) or "f") + ".bin"
        data = rng.randbytes(rng.randint(0, 500))
        c, msg = build(
            subject=subject,
            from_name=name,
            to=[(name, f"user{i}@example.org")],
            text=text,
            html=html,
            attachments=[Attachment(filename, data)],
        )
        context = f"iteration {i}"
        assert msg["Subject"] == subject, context
        shown = re.sub(r"[ \t]+", " ", name).strip(" ")  # whitespace in a phrase is one space
        assert rfc2047_name(c, "From") == shown, context
        assert rfc2047_name(c, "To") == shown, context
        assert mailboxes(msg, "To")[0][1] == f"user{i}@example.org", context
        if not adjacent_encoded_words(c, "From"):
            assert mailboxes(msg, "From") == [(shown, SENDER)], context
        assert body_text(msg, "plain") == crlf(text), context
        if html:
            assert body_text(msg, "html") == crlf(html), context
        (att,) = msg.iter_attachments()
        assert att.get_filename() == filename.strip() == c.attachment_names[0], context
        assert att.get_payload(decode=True) == data, context


def test_address_shortcut_agrees_with_email_validator() -> None:
    rng = random.Random(5321)
    domains = [
        "example.com",
        "Example.ORG",
        "mail.example.net",
        "xn--bcher-kva.example.com",
        "bücher.example.com",
        "localhost",
        "example.test",
        "example",
        "-bad.example.com",
        "example..com",
    ]
    alphabet = "abcxyzABC019._+-!#=?/'é"
    for domain in domains:  # teach the shortcut every domain check_address accepts
        with contextlib.suppress(ValidationError):
            check_address(f"first@{domain}", "To address")
    for _ in range(3000):
        local = "".join(rng.choice(alphabet) for _ in range(rng.choice([1, 3, 10, 64, 65])))
        local = rng.choice([local, local.lower(), "postmaster", "Info", "a" * 64])
        addr = f"{local}@{rng.choice(domains)}"
        try:  # email-validator itself, no shortcut
            expected: str | None = validate_email(addr, check_deliverability=False).normalized
        except EmailNotValidError:
            expected = None
        try:
            got: str | None = check_address(addr, "To address")
        except ValidationError:
            got = None
        assert got == expected, addr


def test_addresses_are_checked_once_per_string() -> None:
    headers_mod.mailbox.cache_clear()
    for _ in range(50):
        build(to=["Alice <alice@example.org>"], cc=["carol@example.org"])
    info = headers_mod.mailbox.cache_info()
    assert info.misses == 3  # From, To, Cc
    assert info.hits == 147


def test_header_checks_work_when_nothing_else_loaded_the_email_package() -> None:
    """headers.py must import what its checks use; a swallowed AttributeError would hide it."""
    import subprocess
    import sys

    code = (
        "import sysmail_ops.mail.headers as h; "
        "found = list(h._decodings('=?utf-8?q?a?=')); "
        "assert '' not in found, found"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_line_at_a_time_qp_equals_b2a_qp_of_the_whole_body() -> None:
    # compose encodes each distinct line once (cached); the result must not differ
    rng = random.Random(20261128)
    alphabet = "ab =.\tü€😀xyzFrom-"
    for _ in range(3000):
        lines = [
            "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 5, 75, 76, 77, 150])))
            for _ in range(rng.randint(1, 5))
        ]
        data = ("\r\n".join(lines) + "\r\n").encode()
        assert _qp(data) == binascii.b2a_qp(data, istext=True)
