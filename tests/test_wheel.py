"""The wheel works outside the checkout: it ships the bundled reports and runs the demo.

The report notebooks live in the top-level ``reports/``; pyproject.toml maps the data
package ``sysmail_ops.subscriptions.reports`` onto it, so an editable install finds them
there and a wheel carries a copy. The slow test builds the wheel, installs it into a fresh
venv outside the repository and runs ``sysmail-ops demo`` there, report kernels included.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from sysmail_ops.demo import sales
from sysmail_ops.subscriptions import notebooks

ROOT = Path(__file__).resolve().parents[1]
REPORTS = "sysmail_ops/subscriptions/reports"
# what setuptools reads
BUILD_INPUTS = ("pyproject.toml", "README.md", "sysmail_ops", "reports", "notebooks")

# What the installed package reports about itself, as JSON, run by the new venv's python.
PROBE = """
import json, sys
import sysmail_ops
from sysmail_ops.demo import sales
from sysmail_ops.subscriptions import notebooks
print(json.dumps({
    "package": sysmail_ops.__file__,
    "reports": [str(p) for p in notebooks.list_reports()],
    "data": str(sales.demo_data_path()),
    "kernel": notebooks.kernel_python(),
    "executable": sys.executable,
    "path": sys.path,
}))
"""


# --- fast: the resources resolve, the package list is whole ------------------------------


def test_bundled_reports_resolve_through_the_data_package() -> None:
    folder = notebooks.bundled_reports_dir()
    assert folder.is_dir()
    assert {"delivery_report.ipynb", "sales_pipeline.ipynb"} <= {p.name for p in folder.iterdir()}
    assert [p.name for p in notebooks.list_reports()] == [
        "delivery_report.ipynb",
        "sales_pipeline.ipynb",
    ]
    assert sales.demo_data_path().is_file()
    assert sales.demo_data_path().parent == folder / "data"


def test_pyproject_lists_every_sub_package() -> None:
    """The mapped data package rules out discovery: a new sub-package must be listed by hand."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "sysmail_ops").rglob("__init__.py")
    }
    mapped = {
        "sysmail_ops.subscriptions.reports": "reports",
        "sysmail_ops.widgets.notebooks": "notebooks",
    }
    assert set(setuptools["packages"]) == on_disk | set(mapped)
    assert setuptools["package-dir"] == mapped
    assert set(setuptools["package-data"]) <= set(setuptools["packages"])


# --- slow: build, install outside the checkout, run the demo -----------------------------


def _build_wheel(src: Path, out: Path) -> Path:
    """Build as ``python -m build --wheel`` does, offline where this environment can.

    Without isolation when this venv meets the build requirements; when it does not (``make
    setup``'s venv keeps the setuptools python -m venv seeds, older than the 69 pyproject.toml
    asks for, and has no ``wheel``), pip's isolated build, which fetches them from the index.
    """
    offline = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)]
    isolated = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out)]
    said = ""
    for cmd in (offline, isolated):
        done = subprocess.run([*cmd, str(src)], capture_output=True, text=True, timeout=300)
        said += f"$ {' '.join(cmd[2:4])}: exit {done.returncode}\n{done.stdout[-2000:]}"
        said += done.stderr[-2000:]
        if done.returncode == 0:
            break
    wheels = list(out.glob("sysmail_ops-*.whl"))
    assert len(wheels) == 1, said
    return wheels[0]


def _copy_sources(dest: Path) -> Path:
    """The build inputs of the working tree, so that building leaves nothing in the checkout."""
    dest.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name)
        else:
            shutil.copy2(ROOT / name, dest / name)
    return dest


def _clean_env(tmp: Path) -> dict[str, str]:
    """No PYTHONPATH, no active venv, no user-level Jupyter kernels or IPython profile.

    The dependencies' Jupyter data files (nbconvert's templates, ipykernel's ``python3``
    kernel spec), which a full install would put in the new venv's share/jupyter, are this
    venv's: JUPYTER_PATH names them. The spec runs ``python``, i.e. the new venv's.
    """
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["JUPYTER_PATH"] = str(Path(sys.prefix) / "share" / "jupyter")
    env["JUPYTER_DATA_DIR"] = str(tmp / "jupyter")  # a user's kernel spec could name .venv
    env["IPYTHONDIR"] = str(tmp / "ipython")
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.mark.slow
def test_installed_wheel_runs_the_demo_outside_the_checkout(tmp_path: Path) -> None:
    wheel = _build_wheel(_copy_sources(tmp_path / "src"), tmp_path / "dist")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("delivery_report.ipynb", "sales_pipeline.ipynb", "data/opportunities.csv"):
        assert f"{REPORTS}/{name}" in names
    assert "sysmail_ops/py.typed" in names
    assert "sysmail_ops/templates/builtin/builtin.toml" in names
    assert "sysmail_ops/templates/builtin/report-mail.html" in names
    assert "sysmail_ops/widgets/notebooks/01_email_management.ipynb" in names  # the console's
    assert "sysmail_ops/config/providers.json" in names  # the provider presets
    assert f"{REPORTS}/data/make_crm.py" not in names  # it made the CSV once; not shipped
    assert not [n for n in names if "__pycache__" in n or ".ipynb_checkpoints" in n]
    here = {n.split("/")[1] for n in names if n.startswith("sysmail_ops/") and n.count("/") > 1}
    assert here >= {
        *("store", "mail", "config", "templates", "records", "sending", "analytics"),
        *("subscriptions", "flows", "campaigns", "cli", "web", "sink", "demo"),
    }

    # A fresh venv outside the repository: the wheel installed into it, no dependencies;
    # those come from this venv's site-packages through a .pth line, which adds the folder
    # to sys.path but runs none of its .pth files (so not the editable install's finder).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = _clean_env(tmp_path)
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps"]
    subprocess.run(
        [*install, "--no-index", "-q", str(wheel)], check=True, env=env, cwd=tmp_path, timeout=300
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, env=env, cwd=tmp_path,
    ).stdout.strip()  # fmt: skip
    ours = [p for p in sys.path if Path(p).name in {"site-packages", "dist-packages"}]
    (Path(purelib) / "_sysmail_test_deps.pth").write_text("".join(f"{p}\n" for p in ours))

    probe = subprocess.run(
        [str(python), "-c", PROBE], check=True, capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=120,
    )  # fmt: skip
    seen = json.loads(probe.stdout)
    assert Path(seen["package"]).is_relative_to(purelib)  # the wheel's copy, not the checkout
    assert [Path(p).name for p in seen["reports"]] == [
        "delivery_report.ipynb",
        "sales_pipeline.ipynb",
    ]
    assert all(Path(p).is_relative_to(purelib) for p in [*seen["reports"], seen["data"]])
    # the report kernels run this venv's python (so they import the wheel too)
    assert Path(seen["kernel"]).parent == Path(seen["executable"]).parent == python.parent
    entries = [Path(p) for p in seen["path"] if p and p not in ours]  # "": cwd, tmp_path
    assert not [p for p in entries if p.resolve().is_relative_to(ROOT)]  # .venv's deps only

    demo = subprocess.run(
        [str(venv / "bin" / "sysmail-ops"), "--home", str(tmp_path / "demo"), "demo",
         "--sink-port", "0"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    out = demo.stdout
    # both bundled reports subscribed, run on a kernel of the new venv and mailed
    assert "subscribed weekly-delivery: delivery_report to 2" in out
    assert "subscribed weekly-pipeline: sales_pipeline to 3" in out  # reads reports/data
    assert re.search(r"weekly-delivery .*: 1 run\(s\) \[1 succeeded\], 2 sent", out)
    assert re.search(r"weekly-pipeline .*: 2 run\(s\) \[2 succeeded\], 3 sent", out)
    mails = out.split("report mails in the sending log (5):\n")[1].splitlines()[:5]
    assert sum(m.split()[0] == "sent" and "Delivery Report: " in m for m in mails) == 2
    assert sum(m.split()[0] == "sent" and "Sales Pipeline: " in m for m in mails) == 3
