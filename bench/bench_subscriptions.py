"""Subscription benchmark: `run-due` vs the naive approach, in the same run.

One subscription of the bundled ``sales_pipeline`` report with 200 recipients
spread over 10 distinct parameter sets (the 9 region/owner pairs of the demo
CRM data and one whole region), mailed as HTML with its chart and an XLSX
attachment to Postfix's ``smtp-sink``:

  run-due  one papermill run per distinct parameter set (10), then the
           pipeline mails each run's recipients (keys, log, archive)
  naive    one papermill run per recipient (200), then one send each

Both use the same number of kernels at once (``--workers``, default 2), so
the ratio shows what sharing runs between recipients buys, not parallelism.
Run: ``python bench/bench_subscriptions.py [--naive-sample N]``; with a
sample, the naive time is extrapolated from N recipients (and says so).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from bench_send import RESULTS, start_sink

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.sending import batch as sending
from sysmail_ops.store.database import utcnow
from sysmail_ops.subscriptions import model as subscriptions
from sysmail_ops.subscriptions import notebooks as reports
from sysmail_ops.subscriptions import runs as subscription_runs

PARAMETER_SETS: list[dict[str, Any]] = [
    {"region": "EMEA", "owner": "Ana Schmidt"},
    {"region": "EMEA", "owner": "Luc Moreau"},
    {"region": "EMEA", "owner": "Sofia Rossi"},
    {"region": "Americas", "owner": "Ben Carter"},
    {"region": "Americas", "owner": "Diego Alvarez"},
    {"region": "Americas", "owner": "Maya Johnson"},
    {"region": "APAC", "owner": "Kenji Sato"},
    {"region": "APAC", "owner": "Priya Nair"},
    {"region": "APAC", "owner": "Wei Chen"},
    {"region": "EMEA"},
]


def setup(port: int, n: int) -> tuple[Workspace, subscriptions.Subscription]:
    home = tempfile.mkdtemp(prefix="bench-subs-", dir=RESULTS)
    ws, _ = Workspace.init(home)
    accounts.add_account(
        ws, "reports", kind="other", from_address="reports@example.com",
        smtp_host="127.0.0.1", smtp_port=port, smtp_security="none",
    )  # fmt: skip
    recipients = [
        {"address": f"reader{i}@example.com", "parameters": PARAMETER_SETS[i % 10]}
        for i in range(n)
    ]
    s = subscriptions.add_subscription(
        ws, "pipeline", notebook="sales_pipeline", recipients=recipients, cron="0 8 * * *",
        timezone="Europe/Berlin", account="reports", owner="owner@example.com",
        formats=["html_body", "xlsx"],
    )  # fmt: skip
    return ws, s


def bench_run_due(ws: Workspace, workers: int) -> dict[str, Any]:
    started = time.perf_counter()
    results = subscription_runs.run_due(ws, now=utcnow() + timedelta(days=1), workers=workers)
    seconds = time.perf_counter() - started
    (result,) = results
    assert all(g.status == "succeeded" for g in result.groups), result.summary()
    runs = subscription_runs.list_runs(ws)
    return {
        "seconds": seconds,
        "runs": len(runs),
        "sent": sum(g.counts.get("sent", 0) for g in result.groups),
        "kernel": statistics.mean(runs["kernel_seconds"]),
        "execute": statistics.mean(runs["execute_seconds"]),
    }


def bench_naive(
    ws: Workspace, s: subscriptions.Subscription, workers: int, sample: int
) -> dict[str, Any]:
    """One papermill run per recipient, then one send each, ``workers`` at a time."""
    slot = utcnow()
    folder = ws.runs_dir / "naive"
    chosen = list(s.recipients)[:sample]

    def one(n: int) -> tuple[float | None, int]:
        r = chosen[n]
        params = {**s.parameters, **r.parameters}
        run = reports.execute_report(s.notebook, folder / f"{n:03d}", params, home=ws.home)
        assert run.ok and run.output is not None, run.error
        (d,) = subscription_runs.build_deliveries(s, slot, run.output, [r.address], keyed=False)
        res = sending.send(
            ws, s.account, s.template, to=d.to, record=d.record, attachments=d.attachments,
            inline_images=d.inline_images, use_case="report_subscription",
        )  # fmt: skip
        return run.kernel_seconds, res.counts.get("sent", 0)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(one, range(len(chosen))))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "runs": len(chosen),
        "sent": sum(sent for _, sent in done),
        "kernel": statistics.mean(k for k, _ in done if k is not None),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="recipients (200)")
    ap.add_argument("--workers", type=int, default=2, help="kernels at once, both ways (2)")
    ap.add_argument(
        "--naive-sample", type=int, help="run the naive way for only this many recipients"
    )
    args = ap.parse_args()
    sample = min(args.naive_sample or args.n, args.n)
    sink, port = start_sink()
    ws, s = setup(port, args.n)
    try:
        due = bench_run_due(ws, args.workers)
        naive = bench_naive(ws, s, args.workers, sample)
    finally:
        sink.terminate()
        sink.wait()
        shutil.rmtree(ws.home, ignore_errors=True)
    naive_total = naive["seconds"] * args.n / sample
    est = "" if sample == args.n else f" (extrapolated from {sample} recipients)"
    print(f"\n{args.n} recipients, {len(PARAMETER_SETS)} parameter sets, {args.workers} kernels"
          f" at once, smtp-sink on loopback, {os.cpu_count()} cores\n")  # fmt: skip
    print(f"run-due: {due['seconds']:7.1f} s  {due['runs']:>3} papermill runs, {due['sent']} sent")
    print(f"naive:   {naive_total:7.1f} s  {args.n:>3} papermill runs{est}")
    print(f"\nratio naive / run-due: {naive_total / due['seconds']:.1f}   (goal >= 10)")
    print(f"kernel start per run: {due['kernel']:.2f} s (run-due), {naive['kernel']:.2f} s (naive);"
          f" cell execution per run {due['execute']:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
