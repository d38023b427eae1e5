"""Reading received messages: fields, bounded memory, and real mail's mess never raising."""

from __future__ import annotations

import io
import os
import tracemalloc
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st

from sysmail_ops.mail.incoming import KEEP_BODY, message_ids, normalise_id, read_message


def test_fields_of_an_ordinary_reply() -> None:
    msg = EmailMessage()
    msg["From"] = "=?utf-8?q?J=C3=B6rg?= <Joerg@Example.org>"
    msg["To"] = "a@example.com, B <b@example.com>"
    msg["Subject"] = "=?iso-8859-1?q?Caf=E9?= order"
    msg["Message-ID"] = " <abc@example.org> "
    msg["In-Reply-To"] = "<sent-1@example.com>"
    msg["References"] = "<root@example.com> <sent-1@example.com>"
    msg["Date"] = "Mon, 30 Nov 2026 10:00:00 +0200"
    msg.set_content("plain words")
    msg.add_alternative("<p>html words</p>", subtype="html")
    p = read_message(msg.as_bytes())
    assert p.message_id == "<abc@example.org>" and p.from_addr == "joerg@example.org"
    assert p.to == ["a@example.com", "b@example.com"] and p.subject == "Café order"
    assert p.in_reply_to == "<sent-1@example.com>"
    assert p.references == ["<root@example.com>", "<sent-1@example.com>"]
    assert str(p.date) == "2026-11-30 08:00:00" and p.text.strip() == "plain words"
    assert p.error is None and p.content_hash.startswith("sha256:")


def test_html_only_mail_gives_text_for_search() -> None:
    raw = b"Subject: x\r\nContent-Type: text/html\r\n\r\n<p>Hello <b>there</b></p>\r\n"
    assert "Hello **there**" in read_message(raw).text


def test_a_large_attachment_is_measured_exactly_without_being_held() -> None:
    msg = EmailMessage()
    msg["Subject"] = "big"
    msg.set_content("body")
    payload = os.urandom(8 * 1024 * 1024 + 7)
    msg.add_attachment(payload, maintype="application", subtype="zip", filename="a.zip")
    raw = msg.as_bytes()
    del msg, payload
    tracemalloc.start()
    try:
        p = read_message(io.BytesIO(raw))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert p.attachments == [("a.zip", 8 * 1024 * 1024 + 7)] and p.text.strip() == "body"
    assert peak < 4 * KEEP_BODY * 4  # a few skeleton parts, never the 11 MB message


def test_missing_message_id_and_broken_headers() -> None:
    raw = (
        b"From: \xc3\xa9mile <e@example.org>\r\nSubject: \xe9t\xe9 =?bogus?q?x?=\r\n"
        b"Content-Type: text/plain; charset=no-such-charset\r\n\r\n\xff\xfe body\r\n"
    )
    p = read_message(raw)
    assert p.message_id is None and p.from_addr == "e@example.org"
    assert p.subject is not None and "body" in p.text


def test_ids() -> None:
    assert normalise_id("abc@x") == "<abc@x>" and normalise_id("") is None
    assert normalise_id("a b") is None
    assert message_ids("<a@x> junk <b@y>") == ["<a@x>", "<b@y>"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_any_bytes_are_read_without_raising(raw: bytes) -> None:
    p = read_message(raw)
    assert p.content_hash.startswith("sha256:")
    p2 = read_message(io.BytesIO(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" + raw))
    assert p2.content_hash != p.content_hash or raw == b""
