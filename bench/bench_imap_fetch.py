"""Received-archiving benchmark: ``archive fetch`` from a private Dovecot, beside plain imaplib.

N small messages (default 10,000) are APPENDed to a mailbox on a private Dovecot
(Debian's dovecot-imapd, started as the tests start it: loopback, IMAPS with a
throwaway CA; run as root). Then, for each of ``--runs`` rounds, in fresh child
processes (so each peak RSS is its own):

- **archive**: ``records.received.fetch`` into an empty workspace (rows,
  threading, bounce detection, raw bundle, state commits per 100), then a second
  fetch with nothing new (the no-op);
- **baseline**: a plain ``imaplib`` loop over the same connection type: login,
  EXAMINE, ``UID SEARCH ALL``, then ``UID FETCH uid (BODY.PEEK[])`` one message
  at a time, each written to its own file on disk.

Reported: messages/s of the first fetch and of the loop (and their ratio),
seconds of the no-op fetch, peak RSS (ru_maxrss) and, for the archive,
Python's own peak during the fetch (tracemalloc, in a separate, slower run).
Run: ``python bench/bench_imap_fetch.py [-n 10000] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import os
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def child_archive(args: argparse.Namespace) -> dict[str, Any]:
    from sysmail_ops.config import accounts
    from sysmail_ops.config.workspace import Workspace
    from sysmail_ops.records import received

    ws, _ = Workspace.init(Path(args.home))
    accounts.add_account(
        ws, "service", kind="customer_service", from_address="service@example.com",
        login=args.user, password="secret", smtp_host="127.0.0.1", smtp_port=2525,
        smtp_security="ssl", ca_bundle=args.ca, imap_host="127.0.0.1", imap_port=args.port,
        imap_security="ssl",
    )  # fmt: skip
    trace = args.tracemalloc
    if trace:
        import tracemalloc

        tracemalloc.start()
    t0 = time.perf_counter()
    [first] = received.fetch(ws, ["service"])
    t1 = time.perf_counter()
    [again] = received.fetch(ws, ["service"])
    t2 = time.perf_counter()
    peak_py = tracemalloc.get_traced_memory()[1] if trace else None
    assert first.ok and again.ok, (first.error, again.error)
    with ws.store.connect() as con:
        (rows,) = con.execute("SELECT count(*) FROM archive").fetchone() or (0,)
    return {
        "archived": first.archived,
        "rows": rows,
        "seconds": t1 - t0,
        "noop_seconds": t2 - t1,
        "noop_archived": again.archived,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_python_mb": peak_py / 1e6 if peak_py is not None else None,
    }


def child_baseline(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.home)
    out.mkdir(parents=True, exist_ok=True)
    ctx = ssl.create_default_context(cafile=args.ca)
    t0 = time.perf_counter()
    imap = imaplib.IMAP4_SSL("127.0.0.1", args.port, ssl_context=ctx, timeout=60)
    imap.login(args.user, "secret")
    imap.select("INBOX", readonly=True)
    _, data = imap.uid("SEARCH", "ALL")
    uids = data[0].split()
    n = 0
    for uid in uids:
        _, got = imap.uid("FETCH", uid, "(BODY.PEEK[])")
        body = got[0][1]
        fd = os.open(out / f"{uid.decode()}.eml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
        n += 1
    imap.logout()
    t1 = time.perf_counter()
    return {
        "archived": n,
        "seconds": t1 - t0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def message(i: int) -> bytes:
    return (
        f"From: Customer {i} <customer{i}@example.org>\r\n"
        "To: service@example.com\r\n"
        f"Subject: Question {i} about my order\r\n"
        f"Message-ID: <q{i}@example.org>\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
        + (f"In-Reply-To: <case-{i % 50}@example.com>\r\n" if i % 3 == 0 else "")
        + "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + f"Hello, this is message {i}. Where is my order? Kind regards.\r\n" * 12
    ).encode()


def run_child(
    kind: str, dovecot: Any, user: str, home: Path, trace: bool = False
) -> dict[str, Any]:
    cmd = [
        sys.executable, __file__, "--child", kind, "--home", str(home), "--user", user,
        "--port", str(dovecot.port_tls), "--ca", str(dovecot.ca_path),
    ]  # fmt: skip
    if trace:
        cmd.append("--tracemalloc")
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{kind} child failed:\n{out.stderr}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--child", choices=("archive", "baseline"))
    p.add_argument("--home")
    p.add_argument("--user")
    p.add_argument("--port", type=int)
    p.add_argument("--ca")
    p.add_argument("--tracemalloc", action="store_true")
    args = p.parse_args()
    if args.child:
        result = child_archive(args) if args.child == "archive" else child_baseline(args)
        print(json.dumps(result))
        return

    import trustme
    from dovecot_fixture import start_dovecot, stop_dovecot

    root = Path(tempfile.mkdtemp(prefix="sysmail-dovecot-bench-"))
    work = Path(tempfile.mkdtemp(prefix="sysmail-bench-imap-"))
    dovecot = start_dovecot(root, trustme.CA())
    try:
        user = "bench"
        t0 = time.perf_counter()
        dovecot.append(user, [message(i) for i in range(args.n)])
        print(f"appended {args.n} messages in {time.perf_counter() - t0:.1f} s "
              f"({len(message(1))} bytes each)")  # fmt: skip
        rows = []
        for r in range(args.runs):
            base = run_child("baseline", dovecot, user, work / f"base{r}")
            arch = run_child("archive", dovecot, user, work / f"ws{r}")
            assert arch["archived"] == args.n == base["archived"] and arch["noop_archived"] == 0
            rows.append((arch, base))
            a_rate, b_rate = args.n / arch["seconds"], args.n / base["seconds"]
            print(
                f"run {r + 1}: archive fetch {a_rate:,.0f} msg/s ({arch['seconds']:.2f} s, "
                f"peak RSS {arch['peak_rss_mb']:.0f} MB), no-op fetch {arch['noop_seconds']:.2f} s;"
                f" imaplib loop {b_rate:,.0f} msg/s ({base['seconds']:.2f} s, peak RSS "
                f"{base['peak_rss_mb']:.0f} MB); ratio {a_rate / b_rate:.2f}"
            )
        traced = run_child("archive", dovecot, user, work / "ws-trace", trace=True)
        ratios = [(args.n / a["seconds"]) / (args.n / b["seconds"]) for a, b in rows]
        print(
            f"median: archive {statistics.median(args.n / a['seconds'] for a, _ in rows):,.0f}"
            f" msg/s, loop {statistics.median(args.n / b['seconds'] for _, b in rows):,.0f} msg/s,"
            f" ratio {statistics.median(ratios):.2f} (runs: "
            + ", ".join(f"{x:.2f}" for x in ratios)
            + f"); no-op {statistics.median(a['noop_seconds'] for a, _ in rows):.2f} s;"
            f" Python peak during the fetch (tracemalloc run) {traced['peak_python_mb']:.1f} MB"
        )
    finally:
        stop_dovecot(dovecot)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
