"""Report notebooks: find them, read their parameters, run them with papermill, render them.

A report is a notebook with a cell tagged ``parameters`` (``reports/`` holds
the bundled ones, package data: ``bundled_reports_dir``). ``execute_report``
runs one on a real kernel of this Python environment, with the workspace passed
in as ``home``, keeps the executed notebook in the run folder and never raises
for a failing notebook: it returns a ``ReportRun`` saying what failed, where. A
successful run is rendered for mail (``report_render.render_report``): compact
HTML with its charts as ``cid:`` images, the tables and summary ``reportkit``
declared.

papermill, nbformat and nbconvert are imported inside the functions, so
importing this module (as the subscription code does) stays cheap.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from sysmail_ops.errors import SysmailError, ValidationError
from sysmail_ops.store import private
from sysmail_ops.subscriptions.render import ReportOutput, render_report

__all__ = [
    "FailingCell",
    "ReportOutput",
    "ReportRun",
    "bundled_reports_dir",
    "check_parameters",
    "execute_report",
    "kernel_python",
    "list_reports",
    "render_report",
    "report_parameters",
    "resolve_notebook",
]

DEFAULT_KERNEL = "python3"
OUTPUT_NAME = "report.ipynb"
SOURCE_EXCERPT = 300  # characters of the failing cell's source kept in a ReportRun
ERROR_MARKER_TAG = "papermill-error-cell-tag"  # papermill's banner cells around an error
REPORTS_PACKAGE = "sysmail_ops.subscriptions.reports"  # the bundled reports (reports/)


def bundled_reports_dir() -> Path:
    """The folder of the report notebooks that ship with sysmail-ops (and their ``data/``).

    They are the package data of ``sysmail_ops.subscriptions.reports``: in a checkout
    (``pip install -e .``) that package is the repository's ``reports/`` folder, in an
    installed wheel the copy inside ``sysmail_ops`` (pyproject.toml maps one onto the other).
    """
    try:
        folder = resources.files(REPORTS_PACKAGE)
    except ModuleNotFoundError:  # an editable install made before reports/ became a package
        raise SysmailError(
            f"{REPORTS_PACKAGE} is not installed: reinstall sysmail-ops (make setup)"
        ) from None
    return Path(str(folder))  # a folder on disk: wheels install unzipped


def list_reports() -> list[Path]:
    """The bundled report notebooks."""
    return sorted(bundled_reports_dir().glob("*.ipynb"))


def resolve_notebook(path_or_name: str | os.PathLike[str]) -> Path:
    """The absolute path of a report notebook.

    A bare name (``delivery_report`` or ``delivery_report.ipynb``) is looked
    up in ``reports/``; anything with a folder part (``./mine.ipynb``,
    ``/srv/reports/x.ipynb``) is taken as a path. Raises ``ValidationError``
    when there is no such ``.ipynb`` file.
    """
    text = os.fspath(path_or_name).strip()
    if not text:
        raise ValidationError("a report notebook is needed: a path or a name in reports/")
    given = Path(text).expanduser()
    if given.name == text:  # a bare name: the bundled reports
        name = text if text.endswith(".ipynb") else f"{text}.ipynb"
        path = bundled_reports_dir() / name
        if not path.is_file():
            known = ", ".join(p.stem for p in list_reports()) or "none"
            here = f"; for the file here, write ./{text}" if Path(text).is_file() else ""
            raise ValidationError(f"no report named {text!r} in reports/ (there: {known}){here}")
        return path
    path = given.resolve()
    if path.suffix != ".ipynb":
        raise ValidationError(f"{text} is not a notebook (.ipynb)")
    if not path.is_file():
        raise ValidationError(f"report notebook {path} does not exist")
    return path


@lru_cache(maxsize=64)
def _inspect(path: str, mtime_ns: int, size: int) -> dict[str, dict[str, Any]]:
    """papermill's view of a notebook's parameters, cached per file version."""
    import nbformat
    import papermill as pm

    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError, KeyError) as exc:  # JSON errors are ValueErrors
        raise ValidationError(f"{path} is not a readable notebook: {exc}") from None
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        raise ValidationError(f"{path} has no cell tagged 'parameters'")
    found: dict[str, dict[str, Any]] = pm.inspect_notebook(path)
    return found


def report_parameters(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The parameters a report declares: ``{name: {default, inferred_type_name, help}}``.

    Raises ``ValidationError`` when the notebook does not exist, is not a
    notebook, or has no ``parameters`` cell.
    """
    nb = resolve_notebook(path)
    stat = nb.stat()
    return {k: dict(v) for k, v in _inspect(str(nb), stat.st_mtime_ns, stat.st_size).items()}


def check_parameters(path: str | os.PathLike[str], params: dict[str, Any]) -> None:
    """Refuse parameters the report does not declare, naming them and the ones it has."""
    declared = report_parameters(path)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        names = ", ".join(unknown)
        has = ", ".join(declared) or "none"
        noun = "parameter" if len(unknown) == 1 else "parameters"
        raise ValidationError(
            f"report {Path(path).stem} has no {noun} {names} (its parameters: {has})"
        )


def _same_environment(a: str, b: str) -> bool:
    """Two interpreter paths of one environment (``.venv/bin/python`` and ``python3``)."""
    return os.path.dirname(os.path.abspath(a)) == os.path.dirname(os.path.abspath(b))


def kernel_python(kernel_name: str = DEFAULT_KERNEL) -> str:
    """The interpreter a kernel spec starts (jupyter_client runs ``python`` as this one)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise ValidationError(f"no Jupyter kernel named {kernel_name!r}") from None
    exe = spec.argv[0] if spec.argv else ""
    major, minor = sys.version_info[:2]
    if exe in {"python", f"python{major}", f"python{major}.{minor}"}:
        return sys.executable
    return shutil.which(exe) or exe


@dataclass(frozen=True)
class FailingCell:
    """Where a report failed: the cell's place in the report notebook, its prompt number, source."""

    index: int  # 0-based, in the notebook as written (papermill's added cells not counted)
    execution_count: int | None
    source: str  # the first SOURCE_EXCERPT characters
    ename: str = ""
    evalue: str = ""


@dataclass
class ReportRun:
    """One papermill run of a report: whether it worked, where its files are, how long it took."""

    ok: bool
    output_notebook: Path | None
    error: str | None = None
    failing_cell: FailingCell | None = None
    kernel_seconds: float | None = None  # run start -> first cell start (kernel start-up)
    execute_seconds: float | None = None  # first cell start -> last cell end
    output: ReportOutput | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def _excerpt(source: str) -> str:
    return source if len(source) <= SOURCE_EXCERPT else source[: SOURCE_EXCERPT - 3] + "..."


def _timings(nb_path: Path) -> tuple[float | None, float | None]:
    """Kernel start-up and execution seconds from papermill's metadata."""
    try:
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    began = nb.get("metadata", {}).get("papermill", {}).get("start_time")
    cells = [c.get("metadata", {}).get("papermill", {}) for c in nb.get("cells", [])]
    starts = [c["start_time"] for c in cells if c.get("start_time")]
    ends = [c["end_time"] for c in cells if c.get("end_time")]
    if not began or not starts:
        return None, None
    first = datetime.fromisoformat(min(starts))
    kernel = (first - datetime.fromisoformat(began)).total_seconds()
    execute = (datetime.fromisoformat(max(ends)) - first).total_seconds() if ends else None
    return round(kernel, 3), None if execute is None else round(execute, 3)


def _tags(cell: dict[str, Any]) -> list[str]:
    tags: list[str] = cell.get("metadata", {}).get("tags", [])
    return tags


def _source_cells(nb_path: Path) -> list[dict[str, Any]]:
    """The executed notebook's cells without papermill's additions, i.e. the report's cells."""
    try:
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    added = {"injected-parameters", ERROR_MARKER_TAG}
    return [c for c in nb.get("cells", []) if not added & set(_tags(c))]


def _source_index(nb_path: Path, papermill_index: int) -> int:
    """papermill counts its injected-parameters cell; the author's notebook does not have it."""
    try:
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return papermill_index
    cells = [c for c in nb.get("cells", []) if ERROR_MARKER_TAG not in _tags(c)]
    injected = [i for i, c in enumerate(cells) if "injected-parameters" in _tags(c)]
    return papermill_index - sum(1 for i in injected if i < papermill_index)


def _last_started_cell(nb_path: Path) -> FailingCell | None:
    """The cell that was running when execution stopped (a timeout, a dead kernel)."""
    cells = _source_cells(nb_path)
    started = [
        i
        for i, c in enumerate(cells)
        if c.get("metadata", {}).get("papermill", {}).get("start_time")
    ]
    if not started:
        return None
    cell = cells[started[-1]]
    source = "".join(cell.get("source", ""))
    return FailingCell(started[-1], cell.get("execution_count"), _excerpt(source))


def execute_report(
    notebook: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    parameters: dict[str, Any] | None = None,
    *,
    home: str | os.PathLike[str],
    timeout: float | None = None,
    kernel_name: str | None = None,
    start_timeout: float = 60,
    defaults: Mapping[str, Any] | None = None,
    render: bool = True,
) -> ReportRun:
    """Run a report notebook into ``run_dir`` and render it; never raises for a failing report.

    ``home`` (the workspace) is passed as the ``home`` parameter when the
    notebook declares one, overriding any ``home`` in ``parameters``.
    ``defaults`` are values for the parameters the notebook declares and
    ``parameters`` does not set (a subscription's ``locale`` and ``timezone``).
    ``timeout`` bounds the run's execution, all cells together (the kernel
    start-up is bounded by ``start_timeout``).
    The kernel is ``kernel_name``, by default ``python3`` checked to run this
    environment's interpreter. Everything that goes wrong (missing notebook,
    unknown parameter, an exception in a cell, a timeout, a dead kernel, a
    render error) comes back as ``ReportRun(ok=False, error=...)``. ``render=False``
    leaves the rendering to the caller (a cluster worker: the mailer host renders).
    """
    params = dict(parameters or {})
    folder = Path(run_dir)
    try:
        path = resolve_notebook(notebook)
        declared = report_parameters(path)
        if "home" in declared:
            params["home"] = str(home)
        for key, value in (defaults or {}).items():
            if key in declared and key not in params:
                params[key] = value
        check_parameters(path, params)
        kernel = kernel_name or DEFAULT_KERNEL
        if kernel_name is None and not _same_environment(kernel_python(kernel), sys.executable):
            raise ValidationError(
                f"kernel {kernel!r} runs {kernel_python(kernel)}, not {sys.executable}:"
                " install ipykernel in this environment or pass kernel_name"
            )
        private.make_dirs(folder)
    except (ValidationError, OSError) as exc:
        return ReportRun(False, None, error=str(exc), parameters=params)
    return _run(path, folder, params, kernel, timeout, start_timeout, render=render)


class _Deadline:
    """nbclient's ``timeout_func``: each cell gets what is left of the run's budget.

    papermill's ``execution_timeout`` alone bounds each cell; a scheduler needs
    the whole run bounded. The clock starts at the first cell (the kernel's
    start-up has its own ``start_timeout``).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started: float | None = None

    def __call__(self, cell: Any) -> float:
        now = time.monotonic()
        if self.started is None:
            self.started = now
        return max(self.seconds - (now - self.started), 0.01)  # 0 would mean "no timeout"


@contextmanager
def _ipc_sockets() -> Iterator[Any]:
    """Talk to the kernel over Unix sockets in a private folder, not loopback TCP.

    No other local user can reach the kernel, and ipykernel does not warn on
    every run (into cron logs) that its TCP channels are unencrypted. The
    folder is short-lived and short-named: socket paths are limited to ~100 bytes.
    """
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="sysmail-kernel-") as folder:
        yield Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(folder, "k")}})


@contextmanager
def _thread_loop() -> Iterator[None]:
    """In a worker thread, close the event loop papermill makes there (else its sockets leak)."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # called from async code: papermill runs on its own task runner
        yield
        return
    if threading.current_thread() is threading.main_thread():
        yield
        return
    from jupyter_core.utils import ensure_event_loop

    loop = ensure_event_loop()  # the loop papermill's run_sync will use in this thread
    try:
        yield
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _run(
    path: Path,
    folder: Path,
    params: dict[str, Any],
    kernel: str,
    timeout: float | None,
    start_timeout: float,
    *,
    render: bool = True,
) -> ReportRun:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    out_nb = folder / OUTPUT_NAME
    for stale in [out_nb, folder / "report.html", *folder.glob("chart-*.*")]:
        stale.unlink(missing_ok=True)  # a rerun into the same folder must not show old outputs
    run = ReportRun(False, out_nb, parameters=params)
    began = time.monotonic()
    try:
        # papermill writes the notebook and the kernel its own files with no mode of ours:
        # under the private umask (the kernel, started inside, keeps it for its life).
        with _thread_loop(), _ipc_sockets() as kernel_config, private.private_umask():
            pm.execute_notebook(
                str(path),
                str(out_nb),
                parameters=params,
                kernel_name=kernel,
                log_output=False,
                progress_bar=False,
                cwd=str(folder),
                start_timeout=start_timeout,
                execution_timeout=timeout,
                timeout_func=_Deadline(timeout) if timeout else None,
                shutdown_kernel="immediate",  # every output is in; a graceful stop costs ~0.5-1 s
                config=kernel_config,
            )
    except PapermillExecutionError as exc:
        index = _source_index(out_nb, exc.cell_index)
        run.failing_cell = FailingCell(
            index, exc.exec_count, _excerpt(exc.source), exc.ename, exc.evalue
        )
        run.error = f"cell {index} (In [{exc.exec_count}]): {exc.ename}: {exc.evalue}"
    except TimeoutError:  # nbclient's CellTimeoutError
        run.failing_cell = cell = _last_started_cell(out_nb)
        where = f", stopped in cell {cell.index} (In [{cell.execution_count}])" if cell else ""
        run.error = f"timed out: the report ran longer than {timeout:g} s{where}"
    except Exception as exc:  # a dead kernel, a broken notebook: a failed run, not a crash
        run.failing_cell = _last_started_cell(out_nb)
        run.error = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    run.kernel_seconds, run.execute_seconds = _timings(out_nb)
    if run.execute_seconds is None:
        run.execute_seconds = round(time.monotonic() - began, 3)
    if not out_nb.exists():
        run.output_notebook = None
    if run.error is None and not render:
        run.ok = True
    elif run.error is None:
        try:
            run.output = render_report(out_nb, folder, title=path.stem.replace("_", " "))
        except Exception as exc:  # a render failure fails the run, not the caller
            run.error = f"rendering the report failed: {type(exc).__name__}: {exc}"
        else:
            run.ok = True
    return run
