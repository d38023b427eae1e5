"""Sending benchmark: this pipeline vs Red Mail vs a naive loop vs the server's ceiling.

All four send the same 5,000 distinct templated messages (HTML + text, ~4 KB)
to Postfix's ``smtp-sink`` (Debian package ``postfix``) in a separate process,
which is much faster than aiosmtpd, so that the server is not what gets
measured. Each variant runs in its own subprocess so that its peak memory
(ru_maxrss) is its own. Run: ``make bench`` or ``python bench/bench_send.py``.

  (a) pipeline  send_batch: sandboxed Jinja2, composed MIME, journal + DuckDB
                log, sent archiving (.eml + archive row) on, delivery keys;
                on 2+ CPUs a worker process renders and composes (its memory
                is reported apart, as "worker MB")
  (a1) one-proc the same with SendOptions(workers=0): everything in one process
  (b) redmail   Red Mail over one kept-open connection (its own Jinja rendering)
  (c) naive     EmailMessage + a new smtplib connection + one DuckDB insert per message
  (d) ceiling   pre-serialised bytes over one smtplib connection
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"  # workspaces live here (gitignored), on the project's disk
RESULTS.mkdir(exist_ok=True)
SUBJECT = "Your order {{ order_id }} has shipped, {{ name }}"
HTML = (HERE / "template.html").read_text()
TEXT = (HERE / "template.txt").read_text()


class Records:
    """N distinct records, generated on each pass (re-iterable, constant memory)."""

    def __init__(self, n: int):
        self.n = n

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self.n):
            yield {
                "email": f"customer{i}@example.com",
                "id": i,
                "name": f"Customer Nummer {i} Müller",
                "order_id": f"SO-{100000 + i}",
                "amount": f"{(i * 37) % 1000}.{i % 100:02d}",
                "items": [f"Item {j} for order {i}" for j in range(3)],
                "city": ["Berlin", "Zürich", "Lyon", "Porto"][i % 4],
            }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sink() -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not Path(exe).exists():
        sys.exit("smtp-sink not found: install Debian's postfix (make system-deps)")
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([exe, *user, "-a", f"127.0.0.1:{port}", "200"])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("smtp-sink did not start")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def watch_compose_workers() -> list[float]:
    """Each compose worker's peak RSS (MB), read from /proc as its batch closes it.

    Not RUSAGE_CHILDREN: a child's ru_maxrss counts the parent's pages it held
    between fork and exec, so a 36 MB worker of a 300 MB parent shows 335 MB.
    """
    from sysmail_ops.sending import worker as compose_pool

    peaks: list[float] = []
    close = compose_pool._Worker.close

    def close_and_measure(self: Any) -> None:
        status = Path(f"/proc/{self.proc.pid}/status")
        for line in status.read_text().splitlines() if status.exists() else []:
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
        close(self)

    compose_pool._Worker.close = close_and_measure  # type: ignore[method-assign]
    return peaks


# -- the variants (each runs in its own process) -------------------------------------------


def run_pipeline(port: int, n: int, workers: int | None = None) -> dict[str, Any]:
    from sysmail_ops.config import accounts
    from sysmail_ops.config.workspace import Workspace
    from sysmail_ops.sending.batch import SendOptions, send_batch
    from sysmail_ops.templates import catalog as templates

    home = tempfile.mkdtemp(prefix="bench-ws-", dir=RESULTS)
    ws, _ = Workspace.init(home)
    accounts.add_account(
        ws,
        "bench",
        kind="customer_service",
        from_address="shop@example.com",
        display_name="Example Shop",
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
    )
    templates.add_template(
        ws, "shipped", object_type="order", subject=SUBJECT, html=HTML, text=TEXT
    )
    started = time.perf_counter()
    result = send_batch(
        ws,
        "bench",
        "shipped",
        Records(n),
        key_column="id",
        options=SendOptions(per_connection=10_000, workers=workers),
    )
    elapsed = time.perf_counter() - started
    assert result.counts == {"sent": n}, result.counts
    with ws.store.connect() as con:  # counted in SQL: a DataFrame of n rows would be measured
        row = con.execute("SELECT count(*) FROM archive").fetchone()
    assert row and row[0] == n, row
    shutil.rmtree(home)
    return {"seconds": elapsed, "messages": n}


def run_one_process(port: int, n: int) -> dict[str, Any]:
    return run_pipeline(port, n, workers=0)


def run_redmail(port: int, n: int) -> dict[str, Any]:
    from redmail import EmailSender

    sender = EmailSender(host="127.0.0.1", port=port, use_starttls=False)
    sender.connect()
    started = time.perf_counter()
    for rec in Records(n):
        sender.send(
            subject=f"Your order {rec['order_id']} has shipped, {rec['name']}",
            sender="Example Shop <shop@example.com>",
            receivers=[rec["email"]],
            html=HTML,
            text=TEXT,
            body_params=rec,
        )
    elapsed = time.perf_counter() - started
    sender.close()
    return {"seconds": elapsed, "messages": n}


def run_naive(port: int, n: int) -> dict[str, Any]:
    import duckdb
    import jinja2

    env = jinja2.Environment(autoescape=True)
    subject_t, html_t = env.from_string(SUBJECT), env.from_string(HTML)
    text_t = jinja2.Environment(autoescape=False).from_string(TEXT)  # noqa: S701 - plain text
    db = Path(tempfile.mkdtemp(prefix="bench-naive-")) / "log.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE log (recipient VARCHAR, message_id VARCHAR, sent_at TIMESTAMP)")
    started = time.perf_counter()
    for rec in Records(n):
        msg = EmailMessage()
        msg["From"] = "Example Shop <shop@example.com>"
        msg["To"] = rec["email"]
        msg["Subject"] = subject_t.render(rec)
        msg.set_content(text_t.render(rec))
        msg.add_alternative(html_t.render(rec), subtype="html")
        with smtplib.SMTP("127.0.0.1", port, local_hostname="bench") as smtp:
            smtp.send_message(msg)
        con.execute("INSERT INTO log VALUES (?, ?, now())", [rec["email"], msg["Message-ID"]])
    elapsed = time.perf_counter() - started
    con.close()
    shutil.rmtree(db.parent)
    return {"seconds": elapsed, "messages": n}


def run_ceiling(port: int, n: int) -> dict[str, Any]:
    from sysmail_ops.config.workspace import Workspace
    from sysmail_ops.mail.mime import compose
    from sysmail_ops.templates import catalog as templates

    # Serialise the same messages beforehand; only sending is timed.
    home = tempfile.mkdtemp(prefix="bench-ceiling-")
    ws, _ = Workspace.init(home)
    t = templates.add_template(
        ws, "shipped", object_type="order", subject=SUBJECT, html=HTML, text=TEXT
    )
    tpl = templates.compile_template(t)
    data = []
    for rec in Records(n):
        r = tpl.render(rec)
        c = compose(
            from_addr="shop@example.com",
            from_name="Example Shop",
            to=[rec["email"]],
            subject=r.subject,
            text=r.text,
            html=r.html,
        )
        data.append((rec["email"], c.data))
    shutil.rmtree(home)
    smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="bench")
    started = time.perf_counter()
    for rcpt, raw in data:
        smtp.sendmail("shop@example.com", [rcpt], raw)
    elapsed = time.perf_counter() - started
    smtp.quit()
    return {"seconds": elapsed, "messages": n, "bytes": sum(len(d) for _, d in data) / n}


VARIANTS = {
    "pipeline": run_pipeline,
    "one-proc": run_one_process,
    "redmail": run_redmail,
    "naive": run_naive,
    "ceiling": run_ceiling,
}


def child(variant: str, port: int, n: int, trace: bool) -> None:
    if trace:
        tracemalloc.start()
    worker_peaks = watch_compose_workers()
    out = VARIANTS[variant](port, n)
    out["peak_mb"] = peak_mb()
    out["worker_mb"] = max(worker_peaks, default=0.0)
    if trace:
        out["heap_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    print(json.dumps(out))


def measure(variant: str, port: int, n: int, trace: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", variant, "--port", str(port), "-n", str(n)]
    proc = subprocess.run(
        cmd + (["--trace"] if trace else []), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"{variant} failed:\n{proc.stderr}")
    res: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    res["rate"] = res["messages"] / res["seconds"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5000, help="messages per variant (5000)")
    ap.add_argument("--big", type=int, default=50_000, help="second pipeline run for memory")
    ap.add_argument("--child")
    ap.add_argument("--port", type=int)
    ap.add_argument("--trace", action="store_true", help="also measure the Python heap")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.port, args.n, args.trace)
        return
    sink, port = start_sink()
    try:
        res = {v: measure(v, port, args.n) for v in VARIANTS}
        # Memory against batch size: the Python heap (tracemalloc; slower, so a run of its
        # own) and the process's RSS, which also holds DuckDB's cache of the growing store.
        small = measure("pipeline", port, args.n, trace=True) if args.big else None
        big = measure("pipeline", port, args.big, trace=True) if args.big else None
    finally:
        sink.terminate()
        sink.wait()
    a = res["pipeline"]["rate"]
    print(
        f"\n{args.n} messages, ~{res['ceiling']['bytes'] / 1024:.1f} KB each, smtp-sink on "
        f"loopback, {os.cpu_count()} cores\n"
    )
    print(f"{'variant':<10} {'msg/s':>8} {'peak MB':>8} {'worker MB':>10}")
    for v, r in res.items():
        worker = f"{r['worker_mb']:>10.0f}" if r["worker_mb"] else f"{'-':>10}"
        print(f"{v:<10} {r['rate']:>8.0f} {r['peak_mb']:>8.0f} {worker}")
    print(f"\na/b (pipeline / Red Mail)       {a / res['redmail']['rate']:.2f}   (goal >= 3)")
    print(f"a/c (pipeline / naive loop)     {a / res['naive']['rate']:.2f}")
    print(f"a/d (pipeline / server ceiling) {a / res['ceiling']['rate']:.2f}   (goal >= 0.7)")
    a1 = res["one-proc"]["rate"]
    print(f"a1/d (one process / ceiling)    {a1 / res['ceiling']['rate']:.2f}")
    if small and big:
        print(f"\npipeline memory      {args.n:>8} msgs {args.big:>8} msgs")
        print(f"Python heap peak MB  {small['heap_mb']:>13.1f} {big['heap_mb']:>13.1f}")
        print(f"process RSS peak MB  {small['peak_mb']:>13.0f} {big['peak_mb']:>13.0f}")
        print(f"worker RSS peak MB   {small['worker_mb']:>13.0f} {big['worker_mb']:>13.0f}")


if __name__ == "__main__":
    main()
