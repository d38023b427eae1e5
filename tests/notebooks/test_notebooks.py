"""Every notebook is committed without outputs and runs top to bottom on a real kernel."""

from __future__ import annotations

import json
from pathlib import Path

import papermill as pm
import pytest
from conftest import bind
from log_fixtures import handmade_log
from smtp_testserver import SMTPTestServer

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.sending import connection_test as conntest

ROOT = Path(__file__).parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# notebooks that read the log run on a hand-made one (tests/log_fixtures.py), with parameters
# that reach it, and must show what it holds
LOG_NOTEBOOKS: dict[str, tuple[dict[str, object], list[str]]] = {
    "04_sending_log_and_analytics.ipynb": ({"since": None}, ["5.7.1 rejected", "example.net"]),
    "05_archive.ipynb": ({"obj": "case:42"}, ["a-m2", "Mail m2"]),
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path: Path) -> None:
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_runs_top_to_bottom(
    path: Path, ws: Workspace, smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    bind(ws, smtp_server)
    conntest.test_account(ws, "service")
    params = pm.inspect_notebook(str(path))
    assert "home" in params, "every notebook takes the workspace as a parameter"
    extra, expected = LOG_NOTEBOOKS.get(path.name, ({}, []))
    if path.name in LOG_NOTEBOOKS:
        handmade_log(ws)
    out = tmp_path / path.name
    pm.execute_notebook(
        str(path),
        str(out),
        parameters={"home": str(ws.home), **extra},
        kernel_name="python3",
        progress_bar=False,
        cwd=str(tmp_path),
    )
    executed = json.loads(out.read_text())
    text = json.dumps(executed)
    assert "Traceback" not in text
    for shown in expected:
        assert shown in text, f"{path.name} does not show {shown!r}"
