"""A tiny report notebook the subscription tests (library and CLI) run on real kernels."""

from __future__ import annotations

from pathlib import Path

import nbformat

ECHO_SOURCE = """\
import pandas as pd
from sysmail_ops.subscriptions import kit as reportkit

if fail:
    raise RuntimeError(f"report failed on purpose for {region}")
df = pd.DataFrame({"region": [region] * rows, "n": list(range(rows))})
reportkit.summary(f"{rows} rows for {region} from {home}")
reportkit.table("rows", df)
reportkit.row_count(rows)
df
"""


def write_echo_report(folder: Path) -> Path:
    """A tiny report: its content depends on ``region``; ``fail`` makes it raise."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('home = None\nregion = "EMEA"\nrows = 3\nfail = False')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Rows by region"),
        params,
        nbformat.v4.new_code_cell(ECHO_SOURCE),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = folder / "echo_report.ipynb"
    nbformat.write(nb, path)
    return path
