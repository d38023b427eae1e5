"""The capture sink: STARTTLS with its own certificate, AUTH with anything, byte-exact storage."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sysmail_ops.errors import SysmailError
from sysmail_ops.sink.server import (
    INDEX_NAME,
    KEY_NAME,
    CaptureSink,
    ensure_certificate,
    list_mailbox,
    run_forever,
)

MESSAGE = (
    b"From: ops@example.com\r\n"
    b"To: a@example.com\r\n"
    b"Subject: =?utf-8?b?QmVyaWNodCBmw7xyIEvDtmxu?=\r\n"
    b"Message-ID: <m1@example.com>\r\n"
    b"\r\n"
    b"Line one.\r\n"
    b".a line that starts with a dot\r\n"
    b"\r\n"
)


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[CaptureSink]:
    with CaptureSink(tmp_path / "mailbox", tmp_path / "sink", port=0) as running:
        yield running


def strict_context(cafile: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # what newer Pythons default to
    return ctx


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_starttls_verifies_with_ca_path_and_stores_byte_exact(sink: CaptureSink, host: str) -> None:
    with smtplib.SMTP(host, sink.port, timeout=5) as client:
        client.starttls(context=strict_context(sink.ca_path))
        client.login("anyone@example.com", "any password")
        assert client.sendmail("ops@example.com", ["a@example.com", "b@example.com"], MESSAGE) == {}
    [entry] = list_mailbox(sink.mailbox_dir)
    assert (sink.mailbox_dir / entry["file"]).read_bytes() == MESSAGE
    assert entry["subject"] == "Bericht für Köln"
    assert entry["message_id"] == "<m1@example.com>"
    assert entry["mail_from"] == "ops@example.com"
    assert entry["rcpt_tos"] == ["a@example.com", "b@example.com"]
    assert entry["size"] == len(MESSAGE)
    assert (entry["login"], entry["tls"]) == ("anyone@example.com", True)
    assert entry["received_at"].endswith("+00:00")


def test_plain_auth_any_login_and_smtputf8(sink: CaptureSink) -> None:
    raw = "From: büro@example.com\r\nSubject: Grüße\r\n\r\nHallo\r\n".encode()
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        client.login("x", "y")
        client.sendmail("büro@example.com", ["zoë@example.com"], raw, mail_options=["SMTPUTF8"])
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:  # no AUTH at all is fine too
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: second\r\n\r\nx\r\n")
    first, second = list_mailbox(sink.mailbox_dir)
    assert (first["mail_from"], first["rcpt_tos"], first["subject"]) == (
        "büro@example.com",
        ["zoë@example.com"],
        "Grüße",
    )
    assert (first["login"], first["tls"]) == ("x", False)
    assert (second["login"], second["subject"], second["message_id"]) == (None, "second", None)
    assert (sink.mailbox_dir / first["file"]).read_bytes() == raw


def test_certificate_made_once_then_reused(tmp_path: Path) -> None:
    with CaptureSink(tmp_path / "mb", tmp_path / "sink", port=0) as first:
        pem = first.ca_path.read_bytes()
        assert first.port != 0
    assert stat.S_IMODE((tmp_path / "sink" / KEY_NAME).stat().st_mode) == 0o600
    with CaptureSink(tmp_path / "mb", tmp_path / "sink", host="localhost", port=0) as second:
        assert second.ca_path.read_bytes() == pem
        with smtplib.SMTP("localhost", second.port, timeout=5) as client:
            client.starttls(context=strict_context(second.ca_path))
            assert client.noop()[0] == 250


def test_unreadable_certificate_is_remade(tmp_path: Path) -> None:
    cert_path, _ = ensure_certificate(tmp_path)
    cert_path.write_text("not a certificate")
    assert ensure_certificate(tmp_path)[0].read_bytes().startswith(b"-----BEGIN CERTIFICATE")


@pytest.mark.parametrize("host", ["0.0.0.0", "", "192.0.2.1", "mail.example.com"])  # noqa: S104
def test_refuses_non_loopback_host(tmp_path: Path, host: str) -> None:
    with pytest.raises(SysmailError, match="loopback"):
        CaptureSink(tmp_path / "mb", tmp_path / "sink", host=host)
    CaptureSink(tmp_path / "mb", tmp_path / "sink", host=host, allow_remote=True)  # no raise


def test_busy_port_is_a_clear_error(sink: CaptureSink, tmp_path: Path) -> None:
    other = CaptureSink(tmp_path / "mb2", tmp_path / "sink", port=sink.port)
    with pytest.raises(SysmailError, match=f"cannot listen on 127.0.0.1:{sink.port}"):
        other.start()
    assert not other.running


def test_list_mailbox_missing_and_torn(tmp_path: Path) -> None:
    assert list_mailbox(tmp_path / "nowhere") == []
    good = {"file": "a.eml", "subject": "ok"}
    (tmp_path / INDEX_NAME).write_text(json.dumps(good) + "\n" + '{"file": "b.e', encoding="utf-8")
    assert list_mailbox(tmp_path) == [good]


def test_concurrent_sessions_index_every_message(sink: CaptureSink) -> None:
    def client(n: int) -> None:
        with smtplib.SMTP(sink.host, sink.port, timeout=5) as smtp:
            for i in range(5):
                smtp.sendmail("a@example.com", ["b@example.com"], f"Subject: {n}-{i}\r\n\r\nx\r\n")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = list_mailbox(sink.mailbox_dir)
    assert sorted(e["subject"] for e in entries) == sorted(
        f"{n}-{i}" for n in range(4) for i in range(5)
    )
    assert len({e["file"] for e in entries}) == 20
    assert len(list(sink.mailbox_dir.glob("*.eml"))) == 20


def test_run_forever_stops_on_sigterm(tmp_path: Path) -> None:
    sink = CaptureSink(tmp_path / "mb", tmp_path / "sink", port=0)
    lines: list[str] = []

    def out(line: str) -> None:
        lines.append(line)
        if line.startswith("stop with"):
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()

    before = signal.getsignal(signal.SIGTERM)
    run_forever(sink, out=out)
    assert f"127.0.0.1:{sink.port}" in lines[0]
    assert str(sink.mailbox_dir) in lines[1] and str(sink.ca_path) in lines[2]
    assert lines[-1] == "capture sink stopped"
    assert not sink.running and signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", sink.port)):
        pass
