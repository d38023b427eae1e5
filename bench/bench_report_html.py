"""Size and time of a report's HTML for mail: nbconvert's default ``lab`` template vs ours.

    .venv/bin/python bench/bench_report_html.py [--runs 3] [--baseline TREE]

Runs each bundled report (a fresh temporary workspace for ``home``), then
exports the same executed notebook with the ``lab`` template (nbconvert's
default), the ``basic`` template without inputs, and ``reports.render_report``
(our template, CSS inlined, images as cid: parts, counted separately), and
times ``render_report`` alone (median of 5) and the whole run (kernel start,
cells, render).

``--baseline TREE`` (a checkout of an older commit, e.g. made with ``git
worktree add /tmp/base HEAD~3``) measures that tree's package and its own
bundled reports in the same run, alternating with this one, and prints the
ratios: new / baseline, below 1.00 is faster or smaller.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 5  # render_report timings per report


def kb(n: float) -> str:
    return f"{n / 1024:,.1f} KB"


def measure(notebooks: list[Path]) -> dict[str, dict[str, float]]:
    """One pass over the reports: sizes (bytes) and times (seconds) per report."""
    import nbformat
    from nbconvert import HTMLExporter

    from sysmail_ops.config.workspace import Workspace
    from sysmail_ops.subscriptions import notebooks as reports
    from sysmail_ops.subscriptions.render import render_report

    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ws, _ = Workspace.init(Path(tmp) / "ws")
        for path in notebooks:
            began = time.monotonic()
            run = reports.execute_report(path, Path(tmp) / path.stem, {}, home=ws.home)
            wall = time.monotonic() - began
            assert run.ok and run.output and run.output_notebook, run.error
            nb = nbformat.read(run.output_notebook, as_version=4)
            lab, _ = HTMLExporter().from_notebook_node(nb)
            basic, _ = HTMLExporter(template_name="basic", exclude_input=True).from_notebook_node(
                nb
            )
            renders = []
            for n in range(ROUNDS):
                t0 = time.perf_counter()
                render_report(run.output_notebook, Path(tmp) / f"render-{path.stem}-{n}")
                renders.append(time.perf_counter() - t0)
            out[path.stem] = {
                "lab": len(lab.encode()),
                "basic": len(basic.encode()),
                "html": len(run.output.html.encode()),
                "png": sum(len(i.data) for i in run.output.images),
                "render": statistics.median(renders),
                "run": wall,
                "kernel": run.kernel_seconds or 0.0,
                "cells": run.execute_seconds or 0.0,
            }
    return out


def print_pass(label: str, result: dict[str, dict[str, float]]) -> None:
    head = ("lab", 10), ("basic, no input", 16), ("ours (html)", 12), ("ours (png)", 11)
    print(f"{label:<18}" + "".join(f" {name:>{width}}" for name, width in head))
    for name, r in result.items():
        print(
            f"{name:<18} {kb(r['lab']):>10} {kb(r['basic']):>16}"
            f" {kb(r['html']):>12} {kb(r['png']):>11}"
        )
        print(
            f"{'':<18} render {r['render'] * 1000:.0f} ms; run {r['run']:.2f} s:"
            f" kernel start {r['kernel']:.2f} s, cells {r['cells']:.2f} s"
        )


def baseline_pass(tree: Path) -> dict[str, dict[str, float]]:
    """The same pass with ``tree``'s package (and its kernels: PYTHONPATH is inherited)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, __file__, "--json", "--notebooks", str(tree / "reports")],
        env=env,
        cwd=tempfile.gettempdir(),  # not this checkout: its package must not shadow the tree's
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, dict[str, float]] = json.loads(done.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--baseline", type=Path, help="an older checkout to compare with")
    parser.add_argument("--notebooks", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.notebooks:
        notebooks = sorted(args.notebooks.glob("*.ipynb"))
    else:
        from sysmail_ops.subscriptions import notebooks as reports

        notebooks = reports.list_reports()
    if args.json:
        print(json.dumps(measure(notebooks)))
        return
    for n in range(1, args.runs + 1):
        base = baseline_pass(args.baseline.resolve()) if args.baseline else None
        new = measure(notebooks)
        if base is not None:
            print_pass(f"run {n}: baseline", base)
        print_pass(f"run {n}: this tree", new)
        if base is not None:
            for name, r in new.items():
                b = base.get(name)
                if b:
                    ratios = ", ".join(
                        f"{k} {r[k] / b[k]:.2f}" for k in ("render", "run", "cells", "html", "png")
                    )
                    print(f"{name:<18} new/baseline: {ratios}")
        print()


if __name__ == "__main__":
    main()
