"""Received Email Archiving against a real Dovecot: incremental, threaded, robust, read-only."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import time
import tracemalloc
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from dovecot_fixture import Dovecot
from received_helpers import DAY, bind_mailbox, case_template, message
from smtp_testserver import SMTPTestServer

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.records import archive, received, sendlog
from sysmail_ops.sending.batch import send

pytestmark = pytest.mark.slow


def rows(ws: Workspace, direction: str | None = "received") -> list[dict[str, object]]:
    with ws.store.connect() as con:
        rel = con.execute(
            "SELECT * FROM archive WHERE ? IS NULL OR direction = ? ORDER BY uid, date",
            [direction, direction],
        )
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]


def test_first_fetch_takes_the_since_window_and_keeps_every_field(
    ws: Workspace, dovecot: Dovecot, mailbox: str
) -> None:
    bind_mailbox(ws, dovecot, mailbox)
    old = time.time() - 60 * DAY
    dovecot.append(mailbox, [message("old", date=old)], date=old)
    reply = EmailMessage()
    reply["From"] = "Jörg Müller <Joerg@Example.org>"
    reply["To"] = "service@example.com"
    reply["Cc"] = "boss@example.org"
    reply["Subject"] = "Rückfrage zur Bestellung"
    reply["Message-ID"] = "<new1@example.org>"
    reply["Date"] = "Mon, 30 Nov 2026 09:00:00 +0100"
    reply.set_content("Guten Tag, wo bleibt meine Bestellung?")
    reply.add_attachment(b"%PDF-1.4 " * 100, maintype="application", subtype="pdf",
                         filename="rechnung.pdf")  # fmt: skip
    raw = reply.as_bytes().replace(b"\n", b"\r\n")
    dovecot.append(mailbox, [raw])

    [result] = received.fetch(ws, ["service"])
    assert result.ok, result.error
    assert result.folders[0].first and result.archived == 1  # the 60-day-old one is outside
    [row] = rows(ws)
    assert row["message_id"] == "<new1@example.org>"
    assert row["from_addr"] == "joerg@example.org"
    assert row["to_addrs"] == ["service@example.com"] and row["cc_addrs"] == ["boss@example.org"]
    assert row["subject"] == "Rückfrage zur Bestellung"
    assert str(row["date"]) == "2026-11-30 08:00:00"
    assert row["attachments"] == ["rechnung.pdf"] and row["attachment_sizes"] == [900]
    assert "wo bleibt meine Bestellung" in str(row["body_text"])
    assert row["folder"] == "INBOX" and row["uid"] == 2 and row["size_bytes"] == len(raw)
    assert archive.raw_message(ws, str(row["id"])) == raw
    path = ws.home / str(row["eml_path"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Read-only: nothing was flagged \Seen, moved or deleted on the server.
    flags = dovecot.flags(mailbox)
    assert len(flags) == 2 and not any(b"\\Seen" in f for f in flags)

    # --since reaches further back on a first fetch (here of another folder).
    dovecot.append(mailbox, [message("arch", date=old)], folder="Archive", date=old)
    [res2] = received.fetch(ws, ["service"], folders=["Archive"], since="90d")
    assert res2.archived == 1


def test_second_fetch_brings_only_new_mail(ws: Workspace, dovecot: Dovecot, mailbox: str) -> None:
    bind_mailbox(ws, dovecot, mailbox)
    dovecot.append(mailbox, [message(1), message(2)])
    assert received.fetch(ws)[0].archived == 2
    again = received.fetch(ws)[0]
    assert again.archived == 0 and again.folders[0].duplicates == 0  # nothing even re-read
    dovecot.append(mailbox, [message(3)])
    third = received.fetch(ws)[0]
    assert third.archived == 1 and third.folders[0].last_uid == 3
    assert [r["message_id"] for r in rows(ws)] == ["<m1@example.org>", "<m2@example.org>",
                                                   "<m3@example.org>"]  # fmt: skip
    [st] = received.status(ws, "service")
    assert st["total_fetched"] == 3 and st["last_fetched"] == 1 and st["last_error"] is None
    assert st["folders"] == [f"INBOX (UID 3, UIDVALIDITY {rows(ws)[0]['uidvalidity']})"]


def test_reply_is_threaded_to_the_sent_message_and_its_object(
    ws: Workspace, dovecot: Dovecot, mailbox: str, smtp_server: SMTPTestServer
) -> None:
    bind_mailbox(ws, dovecot, mailbox, smtp_server)
    case_template(ws)
    sent = send(ws, "service", "case-update", to="eve@example.org",
                record={"name": "Eve", "case_id": "42"}, related=("case", "42"))  # fmt: skip
    assert sent.counts["sent"] == 1
    [sent_row] = rows(ws, "sent")
    mid = str(sent_row["message_id"])
    later = time.time() + 60  # replies are written after the mail they answer
    reply = message("r1", subject="Re: Case 42", sender="eve@example.org", date=later,
                    headers={"In-Reply-To": mid, "References": mid})  # fmt: skip
    # A second reply answers the first one only: it still belongs to case 42.
    again = message("r2", subject="Re: Re: Case 42", sender="eve@example.org", date=later + 60,
                    headers={"In-Reply-To": "<mr1@example.org>",
                             "References": "<mr1@example.org>"})  # fmt: skip
    unrelated = message("u1", subject="Hello", headers={"In-Reply-To": "<nobody@example.org>"})
    dovecot.append(mailbox, [reply, again, unrelated])
    assert received.fetch(ws)[0].archived == 3
    got = {r["message_id"]: r for r in rows(ws)}
    first = got["<mr1@example.org>"]
    assert (first["related_type"], first["related_id"], first["reply_to_id"]) == ("case", "42", mid)
    assert first["thread_id"] == mid
    second = got["<mr2@example.org>"]
    assert (second["related_type"], second["related_id"]) == ("case", "42")
    assert second["reply_to_id"] == "<mr1@example.org>" and second["thread_id"] == mid
    assert got["<mu1@example.org>"]["related_type"] is None

    conversation = archive.list_archive(ws, related="case:42", oldest_first=True)
    assert list(conversation["direction"]) == ["sent", "received", "received"]
    thread = received.thread(ws, mid)
    assert [t["message_id"] for t in thread] == [mid, "<mr1@example.org>", "<mr2@example.org>"]
    assert [t["message_id"] for t in received.thread(ws, "mr2@example.org")] == [
        t["message_id"] for t in thread
    ]


def test_uidvalidity_change_resyncs_without_duplicates(
    ws: Workspace, dovecot: Dovecot, mailbox: str
) -> None:
    bind_mailbox(ws, dovecot, mailbox)
    no_id = message("x", message_id=False, subject="no id")
    dovecot.append(mailbox, [message(1), message(2), no_id], folder="Support")
    assert received.fetch(ws, folders=["Support"])[0].archived == 3
    before = {r["uidvalidity"] for r in rows(ws)}
    dovecot.recreate(mailbox, "Support")
    dovecot.append(mailbox, [message(1), message(2), no_id, message(3)], folder="Support")
    [res] = received.fetch(ws, folders=["Support"])
    folder = res.folders[0]
    assert folder.resync and folder.archived == 1 and folder.duplicates == 3
    assert len(rows(ws)) == 4
    [st] = received.status(ws, "service")
    assert not any(str(v) in st["folders"][0] for v in before)  # the new UIDVALIDITY is kept
    assert received.fetch(ws, folders=["Support"])[0].archived == 0


def test_wrong_imap_password_is_diagnosed(ws: Workspace, dovecot: Dovecot, mailbox: str) -> None:
    bind_mailbox(ws, dovecot, mailbox, password="not-the-password")
    dovecot.append(mailbox, [message(1)])
    [res] = received.fetch(ws)
    assert not res.ok and res.archived == 0
    assert res.error is not None
    assert res.error.startswith(f"login: login as {mailbox} rejected:")
    assert "AUTHENTICATIONFAILED" in res.error and "not-the-password" not in res.error
    [st] = received.status(ws, "service")
    assert st["last_error"] == res.error and st["last_fetch_at"] is not None
    assert rows(ws) == []


def test_malformed_message_is_kept_raw_and_the_fetch_goes_on(
    ws: Workspace, dovecot: Dovecot, mailbox: str
) -> None:
    bind_mailbox(ws, dovecot, mailbox)
    broken = (
        b"From: \xff\xfe broken <x@example.org>\r\nSubject: =?x-unknown-charset?q?caf=E9?=\r\n"
        b'Content-Type: multipart/mixed; boundary="never-closed"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n--never-closed\r\n"
        b"Content-Type: text/plain; charset=klingon\r\n\r\n\xe9t\xe9 \x01 !!!\r\n"
    )
    dovecot.append(mailbox, [message(1), broken, message(2)])
    [res] = received.fetch(ws)
    assert res.ok and res.archived == 3 and res.folders[0].parse_errors == 1
    bad = next(r for r in rows(ws) if r["uid"] == 2)
    assert bad["parse_error"] and "CloseBoundaryNotFoundDefect" in str(bad["parse_error"])
    assert str(bad["message_id"]).startswith("sha256:")  # no Message-ID: the content hash
    assert archive.raw_message(ws, str(bad["id"])) == broken
    assert "t" in str(bad["body_text"])  # klingon is no charset: read as UTF-8, replaced


def test_a_25_mb_attachment_is_streamed_with_bounded_memory(
    ws: Workspace, dovecot: Dovecot, mailbox: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bind_mailbox(ws, dovecot, mailbox)
    big = EmailMessage()
    big["From"], big["To"], big["Subject"] = "a@example.org", "service@example.com", "big"
    big["Message-ID"] = "<big@example.org>"
    big.set_content("see attached")
    big.add_attachment(os.urandom(25 * 1024 * 1024), maintype="application",
                       subtype="octet-stream", filename="scan.bin")  # fmt: skip
    raw = big.as_bytes().replace(b"\n", b"\r\n")
    del big
    dovecot.append(mailbox, [message(1), raw])
    size = len(raw)
    del raw
    tracemalloc.start()
    try:
        [res] = received.fetch(ws)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with capsys.disabled():
        print(f"\n25 MB attachment ({size / 1e6:.1f} MB message): peak {peak / 1e6:.1f} MB")
    assert res.archived == 2
    row = next(r for r in rows(ws) if r["message_id"] == "<big@example.org>")
    assert row["attachments"] == ["scan.bin"] and row["attachment_sizes"] == [25 * 1024 * 1024]
    assert row["size_bytes"] == size and row["eml_offset"] is None
    path = ws.home / str(row["eml_path"])
    assert path.stat().st_size == size and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert peak < 16 * 1024 * 1024  # the message is ~35 MB: never held whole, let alone twice
    assert not list((ws.archive_dir / "received" / "spool").glob("*"))


def test_fetch_killed_midway_resumes_without_loss_or_doubles(
    ws: Workspace, dovecot: Dovecot, mailbox: str
) -> None:
    bind_mailbox(ws, dovecot, mailbox)
    n = 1200
    body = "a longer body line for a realistic size\n" * 40
    msgs = [message(i, body=body) for i in range(n)]
    dovecot.append(mailbox, msgs)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sysmail_ops", "--home", str(ws.home), "archive", "fetch"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = 350 * len(msgs[0])
    folder = ws.archive_dir / "received"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        got = sum(p.stat().st_size for p in folder.rglob("*.emls")) if folder.exists() else 0
        if got >= target:
            proc.kill()
            break
        time.sleep(0.005)
    assert proc.wait() == -9, "the fetch ended before it could be killed"
    with ws.store.connect() as con:
        (committed,) = con.execute("SELECT count(*) FROM archive").fetchone() or (0,)
    assert 0 < committed < n
    [res] = received.fetch(ws)
    assert res.ok
    assert res.folders[0].duplicates <= received.BATCH  # at most one batch fetched twice
    assert committed + res.archived == n
    ids = [r["message_id"] for r in rows(ws)]
    assert len(ids) == n and len(set(ids)) == n


def test_with_archiving_off_nothing_is_fetched(
    ws: Workspace, dovecot: Dovecot, mailbox: str
) -> None:
    bind_mailbox(ws, dovecot, mailbox, kind="workflow_notification")  # off by default
    dovecot.append(mailbox, [message(1)])
    assert received.fetch(ws) == []  # not among "all accounts with archiving on"
    [res] = received.fetch(ws, ["service"])
    assert res.skipped and "Received Email Archiving is off" in res.skipped
    assert rows(ws) == []
    accounts.set_archiving(ws, "service", received=True)
    assert received.fetch(ws)[0].archived == 1


def test_a_second_fetch_of_the_same_account_waits_its_turn(
    ws: Workspace, dovecot: Dovecot, mailbox: str
) -> None:
    bind_mailbox(ws, dovecot, mailbox)
    dovecot.append(mailbox, [message(1)])
    lock = ws.home / "locks" / "imap-service.lock"
    received.fetch(ws)  # makes the lock file
    dovecot.append(mailbox, [message(2)])
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running fetch holds it
        [res] = received.fetch(ws)
        assert res.skipped == "another fetch of this account is running" and res.ok
    finally:
        os.close(fd)
    assert received.fetch(ws)[0].archived == 1
    assert len(rows(ws)) == 2


def test_prune_takes_received_mail_too(ws: Workspace, dovecot: Dovecot, mailbox: str) -> None:
    bind_mailbox(ws, dovecot, mailbox)
    dovecot.append(mailbox, [message(1, date=time.time() - 10 * DAY), message(2)])
    received.fetch(ws)
    [old, new] = sorted(rows(ws), key=lambda r: str(r["date"]))
    cutoff = archive.utcnow().replace(hour=0) - timedelta(days=5)
    assert archive.prune(ws, cutoff) == 1
    assert [r["id"] for r in rows(ws)] == [new["id"]]
    assert (ws.home / str(new["eml_path"])).exists()  # its bundle still holds a message
    assert archive.prune(ws, archive.utcnow() + timedelta(days=1)) == 1
    assert not (ws.home / str(new["eml_path"])).exists()
    assert Path(str(old["eml_path"])).name  # both were bundled received files


def test_bad_input_writes_nothing(ws: Workspace, dovecot: Dovecot, mailbox: str) -> None:
    from sysmail_ops.errors import NotFoundError, ValidationError

    bind_mailbox(ws, dovecot, mailbox)
    with pytest.raises(ValidationError, match="--since"):
        received.fetch(ws, since="last tuesday")
    with pytest.raises(ValidationError, match="folder"):
        received.fetch(ws, folders=["a\r\nb"])
    with pytest.raises(NotFoundError):
        received.fetch(ws, ["nobody"])
    with pytest.raises(NotFoundError):
        received.thread(ws, "<none@example.org>")
    assert received.status(ws, "service")[0]["last_fetch_at"] is None


def test_reply_to_mail_sent_without_archiving_is_linked_through_the_log(
    ws: Workspace, dovecot: Dovecot, mailbox: str, smtp_server: SMTPTestServer
) -> None:
    """Report and survey mail are often not archived: the send log still knows them."""
    bind_mailbox(ws, dovecot, mailbox, smtp_server)
    accounts.set_archiving(ws, "service", sent=False)
    case_template(ws)
    send(ws, "service", "case-update", to="amy@example.org", use_case="survey",
         record={"name": "Amy", "case_id": "9"}, related=("survey", "june-nps"))  # fmt: skip
    assert rows(ws, "sent") == []
    mid = str(sendlog.list_logs(ws).iloc[0]["message_id"])
    dovecot.append(mailbox, [message("a1", headers={"In-Reply-To": mid}, date=time.time() + 60)])
    received.fetch(ws)
    [row] = rows(ws)
    assert (row["related_type"], row["related_id"]) == ("survey", "june-nps")
    assert row["reply_to_id"] == mid and row["thread_id"] == mid
    assert [t["message_id"] for t in received.thread(ws, mid)] == ["<ma1@example.org>"]


def test_a_missing_folder_is_its_own_error_and_the_others_go_on(
    ws: Workspace, dovecot: Dovecot, mailbox: str
) -> None:
    bind_mailbox(ws, dovecot, mailbox)
    dovecot.append(mailbox, [message(1)])
    [res] = received.fetch(ws, folders=["No Such Folder", "INBOX"])
    assert not res.ok and res.archived == 1
    assert res.error is not None and "cannot open folder 'No Such Folder'" in res.error
    assert [f.folder for f in res.folders] == ["INBOX"]


def test_an_account_without_a_password_says_how_to_give_one(
    ws: Workspace, dovecot: Dovecot, mailbox: str
) -> None:
    bind_mailbox(ws, dovecot, mailbox)
    accounts.edit_account(ws, "service", clear_password=True)
    [res] = received.fetch(ws)
    assert res.error is not None and "archive imap-login service" in res.error


def test_two_fetch_processes_at_once_archive_each_message_once(
    ws: Workspace, dovecot: Dovecot, mailbox: str
) -> None:
    """Cron every minute and a person at the terminal: two real processes, one mailbox."""
    bind_mailbox(ws, dovecot, mailbox)
    n = 400
    dovecot.append(mailbox, [message(i) for i in range(n)])
    cmd = [sys.executable, "-m", "sysmail_ops", "--home", str(ws.home), "archive", "fetch"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ids = [r["message_id"] for r in rows(ws)]
    assert len(ids) == n and len(set(ids)) == n
    # One did the work; the other either found it running or found nothing new left.
    assert (
        any(f"INBOX {n} new" in o for o in outs)
        or sum(int(o.split("INBOX ")[1].split()[0]) for o in outs if "INBOX " in o) == n
    )


def test_what_a_killed_fetch_left_in_the_spool_is_swept(
    ws: Workspace, dovecot: Dovecot, mailbox: str
) -> None:
    bind_mailbox(ws, dovecot, mailbox)
    spool = ws.archive_dir / "received" / "spool"
    spool.mkdir(parents=True)
    old, new = spool / "dead.part", spool / "rows-live.jsonl"
    old.write_bytes(b"half a message")
    new.write_bytes(b"{}")
    week_ago = time.time() - 7 * DAY
    os.utime(old, (week_ago, week_ago))
    received.fetch(ws)
    assert not old.exists() and new.exists()  # a newer one may be another fetch's
