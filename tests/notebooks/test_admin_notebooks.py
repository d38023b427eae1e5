"""The Admin Console notebooks: committed clean (no outputs, no saved widget state) and thin
(they import and display a form). tests/widgets/test_jupyterlab_browser.py saves one in a real
JupyterLab after a password was typed into its form and searches the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ADMIN = [p for p in NOTEBOOKS if p.name[:3] in ("01_", "02_", "03_")]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_saved_widget_state(path: Path) -> None:
    text = path.read_text()
    nb = json.loads(text)
    assert "widgets" not in nb.get("metadata", {}), f"{path.name} carries saved widget state"
    assert WIDGET_STATE not in text and WIDGET_VIEW not in text


def test_admin_notebooks_are_numbered_and_thin() -> None:
    assert [p.name for p in ADMIN] == [
        "01_email_management.ipynb",
        "02_object_templates.ipynb",
        "03_report_subscriptions.ipynb",
    ]
    for path in ADMIN:
        nb = json.loads(path.read_text())
        assert nb["cells"][0]["cell_type"] == "markdown", "each opens with a note"
        code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
        assert code[0].startswith("home = None")  # the parameters cell
        assert all(
            line.startswith(("from sysmail_ops.widgets import", "home = None")) or "(home)" in line
            for src in code
            for line in src.splitlines()
            if line.strip()
        ), f"{path.name}: a form notebook only imports and displays"
