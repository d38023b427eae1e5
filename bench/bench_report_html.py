"""Size of a report's HTML for mail: nbconvert's default ``lab`` template vs ours.

    .venv/bin/python bench/bench_report_html.py

Runs each bundled report once (a fresh temporary workspace for ``home``), then
exports the same executed notebook with the ``lab`` template (nbconvert's
default), the ``basic`` template without inputs, and ``reports.render_report``
(our template, CSS inlined, images as cid: parts, counted separately).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.subscriptions import notebooks as reports


def kb(n: int) -> str:
    return f"{n / 1024:,.1f} KB"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws, _ = Workspace.init(Path(tmp) / "ws")
        head = ("lab", 10), ("basic, no input", 16), ("ours (html)", 12), ("ours (png)", 11)
        print(f"{'report':<18}" + "".join(f" {name:>{width}}" for name, width in head))
        for path in reports.list_reports():
            began = time.monotonic()
            run = reports.execute_report(path.stem, Path(tmp) / path.stem, {}, home=ws.home)
            wall = time.monotonic() - began
            assert run.ok and run.output and run.output_notebook, run.error
            nb = nbformat.read(run.output_notebook, as_version=4)
            lab, _ = HTMLExporter().from_notebook_node(nb)
            basic, _ = HTMLExporter(template_name="basic", exclude_input=True).from_notebook_node(
                nb
            )
            ours = len(run.output.html.encode())
            png = sum(len(i.data) for i in run.output.images)
            print(
                f"{path.stem:<18} {kb(len(lab.encode())):>10} {kb(len(basic.encode())):>16}"
                f" {kb(ours):>12} {kb(png):>11}"
            )
            print(
                f"{'':<18} run {wall:.2f} s: kernel start {run.kernel_seconds} s,"
                f" cells {run.execute_seconds} s"
            )


if __name__ == "__main__":
    main()
