"""Same-run A/B of the sending benchmark over source trees, alternated.

Each tree is a folder holding a ``sysmail_ops`` package, e.g. an older commit's:

    git archive 1b867d8 sysmail_ops | tar -x -C /tmp/trees --one-top-level=before

Run: ``python bench/ab_trees.py 5 5000 pipeline,one-proc /tmp/trees/before,/tmp/trees/now``.
Each round runs ``bench_send.py --child VARIANT`` once per tree (the order reversed
every other round) against one ``smtp-sink``; prints each run, then per tree the median
rate and its ratio to the first tree's run of the same round.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench_send import start_sink

BENCH = Path(__file__).resolve().parent / "bench_send.py"


def main() -> None:
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    rounds, n = int(sys.argv[1]), int(sys.argv[2])
    variants, trees = sys.argv[3].split(","), sys.argv[4].split(",")
    sink, port = start_sink()
    runs: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    try:
        for r in range(rounds):
            for v in variants:
                for t in trees if r % 2 == 0 else trees[::-1]:
                    cmd = [sys.executable, str(BENCH), "--child", v, "--port", str(port)]
                    proc = subprocess.run(
                        [*cmd, "-n", str(n)],
                        env={**os.environ, "PYTHONPATH": t},
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                    if proc.returncode:
                        sys.exit(f"{v} in {t} failed:\n{proc.stderr}")
                    out = json.loads(proc.stdout.strip().splitlines()[-1])
                    rate = n / out["seconds"]
                    runs.setdefault((v, t), []).append((rate, out["peak_mb"], out["worker_mb"]))
                    print(
                        f"round {r} {v:9} {os.path.basename(t):10} {rate:7.0f} msg/s "
                        f"peak {out['peak_mb']:.0f} MB worker {out['worker_mb']:.0f} MB",
                        flush=True,
                    )
    finally:
        sink.terminate()
        sink.wait()
    for v in variants:
        for t in trees:
            got, first = runs[(v, t)], runs[(v, trees[0])]
            ratios = [a[0] / b[0] for a, b in zip(got, first, strict=True)]
            peaks = [x[1] for x in got]
            print(
                f"{v:9} {os.path.basename(t):10} median {statistics.median(x[0] for x in got):7.0f}"
                f" msg/s  / first tree {statistics.median(ratios):.2f}"
                f" ({min(ratios):.2f}-{max(ratios):.2f})"
                f"  peak {min(peaks):.0f}-{max(peaks):.0f} MB"
            )


if __name__ == "__main__":
    main()
