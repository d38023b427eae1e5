"""DKIM benchmark: the sending pipeline with signing off, RSA 2048, and RSA + Ed25519.

Same messages, same server, same run (see ``bench_send.py``: 4 KB templated
messages to Postfix's ``smtp-sink``, log and sent archiving on). Each variant
runs in its own subprocess, the variants alternate, ``--runs`` times; the
ratio to "off" is per run. Run: ``python bench/bench_dkim.py [-n 2000] [--runs 3]``.

dkimpy computes RSA signatures in pure Python (~6-7 ms each here), which is
what "rsa" measures; on a machine with a CPU to spare a long batch signs in
the compose worker, beside the sending process.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_send  # noqa: E402 - the shared records, template and smtp-sink helpers

VARIANTS = ("off", "rsa", "rsa+ed25519")


def run(variant: str, port: int, n: int, workers: int | None) -> dict[str, Any]:
    from sysmail_ops.config import accounts, signing
    from sysmail_ops.config.workspace import Workspace
    from sysmail_ops.sending.batch import SendOptions, send_batch
    from sysmail_ops.templates import catalog as templates

    home = tempfile.mkdtemp(prefix="bench-dkim-", dir=bench_send.RESULTS)
    ws, _ = Workspace.init(home)
    accounts.add_account(
        ws, "bench", kind="customer_service", from_address="shop@example.com",
        display_name="Example Shop", smtp_host="127.0.0.1", smtp_port=port,
        smtp_security="none",
    )  # fmt: skip
    if variant != "off":
        signing.set_dkim(ws, "bench", selector="rsa1")
    if variant == "rsa+ed25519":
        signing.set_dkim(ws, "bench", selector="ed1", algorithm="ed25519")
    templates.add_template(
        ws, "shipped", object_type="order", subject=bench_send.SUBJECT,
        html=bench_send.HTML, text=bench_send.TEXT,
    )  # fmt: skip
    started = time.perf_counter()
    result = send_batch(
        ws, "bench", "shipped", bench_send.Records(n), key_column="id",
        options=SendOptions(per_connection=10_000, workers=workers),
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    assert result.counts == {"sent": n}, result.counts
    shutil.rmtree(home)
    return {"seconds": elapsed, "messages": n}


def measure(variant: str, port: int, n: int, workers: int | None) -> float:
    cmd = [sys.executable, __file__, "--child", variant, "--port", str(port), "-n", str(n)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{variant} failed:\n{proc.stderr}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(res["messages"] / res["seconds"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000, help="messages per variant and run (2000)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, help="compose workers (default: automatic)")
    ap.add_argument("--child")
    ap.add_argument("--port", type=int)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run(args.child, args.port, args.n, args.workers)))
        return
    sink, port = bench_send.start_sink()
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        for _ in range(args.runs):
            for v in VARIANTS:
                rates[v].append(measure(v, port, args.n, args.workers))
    finally:
        sink.terminate()
        sink.wait()
    workers = "auto" if args.workers is None else args.workers
    print(f"\n{args.n} messages per run, {args.runs} runs, workers {workers}, smtp-sink\n")
    print(f"{'variant':<12} " + " ".join(f"{'run ' + str(i + 1):>9}" for i in range(args.runs)))
    for v in VARIANTS:
        print(f"{v:<12} " + " ".join(f"{r:>9.0f}" for r in rates[v]) + "  msg/s")
    for v in VARIANTS[1:]:
        ratios = [s / o for s, o in zip(rates[v], rates["off"], strict=True)]
        shown = " ".join(f"{r:>9.3f}" for r in ratios)
        print(f"{v + '/off':<12} {shown}  median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
