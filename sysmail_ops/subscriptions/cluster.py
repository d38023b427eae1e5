"""Report runs on a Dask ``distributed`` cluster: the papermill runs go out, the rest stays.

``subscriptions run-due --cluster tcp://HOST:8786`` (or the ``report_cluster``
setting) sends each distinct parameter set's notebook run to the cluster as one
task of ``run_report_task``: the notebook's bytes, its parameters and the files
it needs travel; the executed notebook's bytes come back. A worker needs only
this package installed, never the workspace. A report that reads the
workspace's log declares a ``log_extract`` parameter (``delivery_report``
does): the mailer host writes the window of the log the run needs as Parquet
(``records.export.log_extract``) and it travels with the task.

Everything with a guarantee stays on the mailer host (``runs.run_slot``):
claims, rendering (from the returned notebook, with the same code as a local
run), delivery with its per-recipient keys, the log and the run history. A
worker lost mid-run makes the scheduler run the task elsewhere; the slot still
mails each recipient once because mailing happens here, once per finished run.
"""

from __future__ import annotations

import ast
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sysmail_ops.analytics import queries as analytics
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import SysmailError, ValidationError
from sysmail_ops.records import export
from sysmail_ops.store import private
from sysmail_ops.subscriptions import notebooks as reports
from sysmail_ops.subscriptions.notebooks import FailingCell, ReportRun
from sysmail_ops.subscriptions.render import render_report

if TYPE_CHECKING:
    from distributed import Client, Future

CONNECT_TIMEOUT = 10.0  # seconds to reach the scheduler
RETRIES = 2  # a task that raised is run again this often (a lost worker: Dask reschedules)
START_GRACE = 90.0  # beyond a run's own timeout: kernel start-up, queueing, transfer
EXTRACT_PARAMETER = "log_extract"
EXTRACT_MARGIN = timedelta(hours=1)  # a worker's clock may be ahead: extract a little more


class ClusterError(SysmailError):
    """The Dask scheduler could not be reached."""


def run_report_task(
    notebook_name: str,
    notebook: bytes,
    parameters: dict[str, Any],
    timeout: float | None,
    files: dict[str, tuple[str, bytes]],
) -> dict[str, Any]:
    """What a cluster worker runs: one report notebook on a kernel of the worker's environment.

    ``files`` maps a parameter name to ``(file name, bytes)``: each is written into the run's
    scratch folder and the parameter is set to its path. Returns plain values (they cross the
    network): ``ok``, ``error``, ``failing_cell`` (a dict), the timings and the executed
    ``notebook`` bytes (None when there is none). Never raises for a failing report.
    """
    params = dict(parameters)
    with tempfile.TemporaryDirectory(prefix="sysmail-task-") as tmp:
        folder = Path(tmp)
        source = folder / notebook_name
        private.write_file(source, notebook)
        for param, (name, blob) in files.items():
            private.write_file(folder / name, blob)
            params[param] = str(folder / name)
        run = reports.execute_report(
            source, folder / "run", params, home=folder / "home", timeout=timeout, render=False
        )
        out = run.output_notebook
        cell = run.failing_cell
        return {
            "ok": run.ok,
            "error": run.error,
            "failing_cell": None if cell is None else cell.__dict__.copy(),
            "kernel_seconds": run.kernel_seconds,
            "execute_seconds": run.execute_seconds,
            "notebook": out.read_bytes() if out is not None and out.exists() else None,
        }


@dataclass
class Cluster:
    """A connection to a Dask scheduler, held by one ``run_due``."""

    address: str
    client: Client

    def close(self) -> None:
        self.client.close()


def connect(address: str, *, timeout: float = CONNECT_TIMEOUT) -> Cluster:
    """Connect to the scheduler at ``address``; ``ClusterError`` (one line) when it cannot."""
    from distributed import Client

    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ClusterError(f"the Dask scheduler at {address} cannot be reached: {reason}") from None
    return Cluster(address, client)


def _declared_value(declared: dict[str, dict[str, Any]], params: dict[str, Any], name: str) -> Any:
    if name in params:
        return params[name]
    default = declared.get(name, {}).get("default")
    try:
        return None if default is None else ast.literal_eval(default)
    except (ValueError, SyntaxError):  # a default that is an expression: the whole log
        return None


def _extract_window(declared: dict[str, dict[str, Any]], params: dict[str, Any]) -> tuple[Any, Any]:
    """The part of the log a report's ``days``/``since``/``until`` read, with a margin."""
    try:
        start, end = analytics.period(
            _declared_value(declared, params, "days"),
            _declared_value(declared, params, "since"),
            _declared_value(declared, params, "until"),
        )
    except (ValidationError, TypeError, ValueError):  # the report will say it, in its run
        return None, None
    return (start - EXTRACT_MARGIN if start else None), end


@dataclass
class Submitted:
    """One parameter set's run on the cluster."""

    future: Future
    timeout: float | None
    title: str


def submit(
    cluster: Cluster,
    ws: Workspace,
    notebook: str,
    runs: list[tuple[str, dict[str, Any]]],
    *,
    timeout: float | None,
    defaults: dict[str, Any],
) -> list[Submitted]:
    """Send one task per ``(run id, parameters)``; a report with a ``log_extract`` parameter
    gets its window of the log as Parquet."""
    path = reports.resolve_notebook(notebook)
    data = path.read_bytes()
    declared = reports.report_parameters(path)
    out = []
    for run_id, parameters in runs:
        params = dict(parameters)
        for key, value in defaults.items():
            if key in declared and key not in params:
                params[key] = value
        files: dict[str, tuple[str, bytes]] = {}
        if EXTRACT_PARAMETER in declared and not params.get(EXTRACT_PARAMETER):
            extract = export.log_extract(ws, *_extract_window(declared, params))
            files[EXTRACT_PARAMETER] = ("send_log.parquet", extract)
        future = cluster.client.submit(
            run_report_task,
            path.name,
            data,
            params,
            timeout,
            files,
            key=f"sysmail-report-{run_id}",
            pure=False,
            retries=RETRIES,
        )
        out.append(Submitted(future, timeout, path.stem.replace("_", " ")))
    return out


def collect(task: Submitted, run_dir: str | Path, parameters: dict[str, Any]) -> ReportRun:
    """Wait for one task, keep its executed notebook in ``run_dir`` and render it here.

    A task still running ``START_GRACE`` seconds past its timeout (counted from when this
    starts waiting) is cancelled and comes back as a failed run, as a local timeout does.
    """
    budget = task.timeout + START_GRACE if task.timeout else None
    try:
        got = task.future.result(timeout=budget)
    except TimeoutError:
        task.future.cancel()
        return ReportRun(
            False,
            None,
            error=f"timed out: the report ran longer than {task.timeout:g} s on the cluster"
            " (cancelled)",
            parameters=parameters,
        )
    except Exception as exc:  # raised on every try, or lost with too many workers
        reason = (str(exc).strip().splitlines() or [""])[0]
        return ReportRun(
            False,
            None,
            error=f"on the cluster: {type(exc).__name__}: {reason}".rstrip(": "),
            parameters=parameters,
        )
    return _from_task(got, Path(run_dir), task.title, parameters)


def _from_task(
    got: dict[str, Any], folder: Path, title: str, parameters: dict[str, Any]
) -> ReportRun:
    private.make_dirs(folder)
    out_nb = folder / reports.OUTPUT_NAME
    for stale in [out_nb, folder / "report.html", *folder.glob("chart-*.*")]:
        stale.unlink(missing_ok=True)
    if got.get("notebook") is not None:
        private.write_file(out_nb, got["notebook"])
    cell = got.get("failing_cell")
    run = ReportRun(
        False,
        out_nb if out_nb.exists() else None,
        error=got.get("error"),
        failing_cell=FailingCell(**cell) if cell else None,
        kernel_seconds=got.get("kernel_seconds"),
        execute_seconds=got.get("execute_seconds"),
        parameters=parameters,
    )
    if got.get("ok") and run.output_notebook is not None:
        try:
            run.output = render_report(out_nb, folder, title=title)
        except Exception as exc:  # a render failure fails the run, as a local run's does
            run.error = f"rendering the report failed: {type(exc).__name__}: {exc}"
        else:
            run.ok = True
    elif run.error is None:
        run.error = "the cluster returned no notebook"
    return run
