"""Report runs three ways in one run: the local pool (2), Dask with 2 workers, Dask with 1.

One subscription with ``--sets`` (20) distinct parameter sets, one recipient each,
of a small report whose cells take about ``--cell-seconds`` (2 s: a sleep, a
stand-in for a query that waits on a database) and then build a table; mailed to
Postfix's ``smtp-sink``. Each way runs the same slot in a fresh workspace through
``run_due`` (claims, papermill, rendering, delivery, log), with a scheduler and
its workers started on this machine (``dask scheduler`` / ``dask worker`` on
loopback, started before the clock runs).

Per-task overhead = wall time x runs at once / runs - the cell seconds: what one
run costs beyond its cells (kernel start-up, transfer, rendering, delivery).
Run: ``python bench/bench_dask_reports.py [--sets 20] [--cell-seconds 2] [--repeat 1]``.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import nbformat
from bench_send import RESULTS, free_port, start_sink

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.store.database import utcnow
from sysmail_ops.subscriptions import model as subscriptions
from sysmail_ops.subscriptions import runs as subscription_runs

DASK = str(Path(sys.executable).parent / "dask")
SOURCE = """\
import time
import pandas as pd
from sysmail_ops.subscriptions import kit as reportkit

time.sleep(cell_seconds)
df = pd.DataFrame({"region": [region] * 5, "n": range(5)})
reportkit.summary(f"5 rows for {region}")
reportkit.table("rows", df)
reportkit.row_count(len(df))
"""


def write_report(folder: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('region = "EMEA"\ncell_seconds = 2.0')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(SOURCE)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}  # fmt: skip
    path = folder / "bench_report.ipynb"
    nbformat.write(nb, path)
    return path


def setup(port: int, report: Path, sets: int, cell_seconds: float) -> Workspace:
    ws, _ = Workspace.init(tempfile.mkdtemp(prefix="bench-dask-", dir=RESULTS))
    accounts.add_account(
        ws, "reports", kind="other", from_address="reports@example.com",
        smtp_host="127.0.0.1", smtp_port=port, smtp_security="none",
    )  # fmt: skip
    subscriptions.add_subscription(
        ws, "bench", notebook=str(report), cron="0 8 * * *", timezone="UTC",
        account="reports", owner="owner@example.com",
        parameters={"cell_seconds": cell_seconds},
        recipients=[{"address": f"r{i}@example.com", "parameters": {"region": f"R{i:02d}"}}
                    for i in range(sets)],
    )  # fmt: skip
    return ws


class Cluster:
    """A scheduler and ``n`` single-thread workers on loopback."""

    def __init__(self, n: int) -> None:
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self.log = (RESULTS / "bench_dask_reports.log").open("ab")  # the cluster's own output
        self.folder = tempfile.mkdtemp(prefix="bench-dask-cluster-", dir=RESULTS)  # its cwd
        quiet = {"stdout": self.log, "stderr": subprocess.STDOUT, "cwd": self.folder}
        self.procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port",
                                        str(port), "--no-dashboard"], **quiet)]  # fmt: skip
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        for _ in range(n):
            self.procs.append(subprocess.Popen(
                [DASK, "worker", self.address, "--nworkers", "1", "--nthreads", "1",
                 "--no-dashboard", "--host", "127.0.0.1"], **quiet))  # fmt: skip
        from distributed import Client

        try:
            with Client(self.address, timeout=30, set_as_default=False) as c:
                c.wait_for_workers(n, timeout=300)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            p.wait(30)
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def one_way(port: int, report: Path, args: argparse.Namespace, cluster: str | None) -> float:
    ws = setup(port, report, args.sets, args.cell_seconds)
    try:
        started = time.perf_counter()
        results = subscription_runs.run_due(
            ws, now=utcnow() + timedelta(days=1), workers=2, cluster=cluster or "local"
        )
        seconds = time.perf_counter() - started
        (result,) = results
        errors = sorted({g.error or "" for g in result.groups if g.status != "succeeded"})
        assert not errors, f"{result.summary()}: {errors[:3]}"
        assert sum(g.counts.get("sent", 0) for g in result.groups) == args.sets
        return seconds
    finally:
        shutil.rmtree(ws.home, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=int, default=20, help="distinct parameter sets (20)")
    ap.add_argument("--cell-seconds", type=float, default=2.0, help="seconds of cells (2)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of the three ways (1)")
    args = ap.parse_args()
    sink, port = start_sink()
    folder = Path(tempfile.mkdtemp(prefix="bench-dask-report-", dir=RESULTS))
    report = write_report(folder)
    rows: dict[str, list[float]] = {"local pool (2)": [], "dask, 2 workers": [],
                                     "dask, 1 worker": []}  # fmt: skip
    at_once = {"local pool (2)": 2, "dask, 2 workers": 2, "dask, 1 worker": 1}
    try:
        for _ in range(args.repeat):
            rows["local pool (2)"].append(one_way(port, report, args, None))
            for n, name in ((2, "dask, 2 workers"), (1, "dask, 1 worker")):
                c = Cluster(n)
                try:
                    rows[name].append(one_way(port, report, args, c.address))
                finally:
                    c.close()
    finally:
        sink.terminate()
        sink.wait()
        shutil.rmtree(folder, ignore_errors=True)
    base = min(rows["local pool (2)"])
    print(f"{args.sets} parameter sets, {args.cell_seconds:g} s of cells each, "
          f"best of {args.repeat}")  # fmt: skip
    print(f"{'way':<18} {'wall s':>8} {'overhead/task s':>16} {'vs local':>9}  every run")
    for name, seconds in rows.items():
        best = min(seconds)
        overhead = best * at_once[name] / args.sets - args.cell_seconds
        each = ", ".join(f"{x:.1f}" for x in seconds)
        print(f"{name:<18} {best:8.1f} {overhead:16.2f} {best / base:8.2f}x  {each}")


if __name__ == "__main__":
    main()
