"""A report run's folder and everything in it (papermill's notebook, the rendered HTML and
charts, files the report's kernel writes itself) are the owner's alone, under umask 022."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook
from private_modes import loose_umask, mode_of, not_private

from sysmail_ops.subscriptions import notebooks as reports

__all__ = ["loose_umask"]

WRITES_FILES = """\
import os
from pathlib import Path
import matplotlib.pyplot as plt
from sysmail_ops.subscriptions import kit as reportkit
Path("notes.txt").write_text("written by the report's kernel")
os.makedirs("extra/deeper")
Path("extra/deeper/data.csv").write_text("a,b\\n1,2\\n")
fig, ax = plt.subplots()
ax.plot([1, 2, 3])
reportkit.chart(fig)
"""


def test_run_folder_and_its_files_are_private(loose_umask: None, tmp_path: Path) -> None:
    nb = new_notebook()
    params = new_code_cell("home = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell(WRITES_FILES)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = tmp_path / "writer.ipynb"
    nbformat.write(nb, path)
    home = tmp_path / "ws"
    run = reports.execute_report(path, home / "runs" / "writer" / "r1", {}, home=home, timeout=60)
    assert run.ok, run.error
    folder = home / "runs" / "writer" / "r1"
    assert {"report.ipynb", "report.html", "notes.txt", "extra"} <= set(os.listdir(folder))
    assert list(folder.glob("chart-*"))
    assert not_private(home) == []
    # the process keeps its own umask once the run is over
    made = tmp_path / "after.txt"
    made.write_text("x")
    assert mode_of(made) == 0o644
