"""Report runs on a real Dask cluster: a `dask scheduler` and two `dask worker` processes on
loopback, subscriptions run through them into the real aiosmtpd server; a worker SIGKILLed
mid-run, a timeout, a scheduler that cannot be reached, and delivery_report on a log extract."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import bind
from log_fixtures import handmade_log
from report_fixtures import write_echo_report
from smtp_testserver import SMTPTestServer, closed_port

from sysmail_ops.config import settings
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.store.database import utcnow
from sysmail_ops.subscriptions import model as subscriptions
from sysmail_ops.subscriptions import runs as subscription_runs

pytestmark = [
    pytest.mark.slow,
    # distributed's client warns when its own and the cluster's versions of optional
    # packages differ, and about the event loop it closes at shutdown; neither is ours
    pytest.mark.filterwarnings("ignore::UserWarning:distributed.client"),
]
DASK = str(Path(sys.executable).parent / "dask")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the dask scheduler exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and two single-thread workers; the scheduler's address."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("dask")
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *argv: str) -> subprocess.Popen[bytes]:
        with (logs / f"{name}.log").open("wb") as out:  # the child keeps its own copy
            proc = subprocess.Popen([DASK, *argv], stdout=out, stderr=subprocess.STDOUT, cwd=logs)
        procs.append(proc)
        return proc

    scheduler = start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                      "--no-dashboard")  # fmt: skip
    try:
        wait_for_port(port, scheduler)
        for n in (1, 2):
            start(f"worker{n}", "worker", address, "--nworkers", "1", "--nthreads", "1",
                  "--no-dashboard", "--host", "127.0.0.1")  # fmt: skip
        with client_of(address) as c:
            c.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def client_of(address: str) -> Any:
    from distributed import Client

    return Client(address, timeout=30, set_as_default=False)


@pytest.fixture
def two_workers(cluster: str) -> str:
    """The cluster with both workers up (a test before may have had one killed)."""
    with client_of(cluster) as c:
        c.wait_for_workers(2, timeout=120)
    return cluster


def sleepy_report(folder: Path) -> Path:
    """The echo report with a ``sleep`` parameter and a cell that sleeps that long."""
    path = write_echo_report(folder)
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].source += "\nsleep = 0.0"
    nb.cells.insert(2, nbformat.v4.new_code_cell("import time\n\ntime.sleep(sleep)"))
    nbformat.write(nb, path)
    return path


def subscribe(ws: Workspace, report: Path, name: str = "rows", **kw: Any) -> Any:
    spec: dict[str, Any] = {
        "notebook": str(report),
        "recipients": [
            "ana@example.com",
            "bo@example.com",
            {"address": "li@example.com", "parameters": {"region": "APAC"}},
        ],
        "cron": "0 8 * * *",
        "timezone": "Europe/Berlin",
        "account": "reports",
        "owner": "owner@example.com",
    }
    spec.update(kw)
    return subscriptions.add_subscription(ws, name, **spec)


def mails(server: SMTPTestServer) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for m in server.messages:
        for rcpt in m.rcpt_tos:
            out.setdefault(rcpt, []).append(m.message)
    return out


def text_of(message: Any) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def tomorrow() -> datetime:
    return utcnow().replace(hour=12, minute=0, second=0, microsecond=0) + timedelta(days=1)


def runs_of(ws: Workspace) -> list[dict[str, Any]]:
    df = subscription_runs.list_runs(ws)
    return df.sort_values("parameters").to_dict("records")  # type: ignore[no-any-return]


@pytest.fixture
def reports_account(ws: Workspace, smtp_server: SMTPTestServer) -> Any:
    return bind(ws, smtp_server, "reports", kind="other")


def test_per_recipient_parameters_run_on_the_cluster(
    ws: Workspace, smtp_server: SMTPTestServer, reports_account: Any, two_workers: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    subscribe(ws, write_echo_report(tmp_path))
    lines: list[str] = []
    results = subscription_runs.run_due(ws, now=tomorrow(), cluster=two_workers, out=lines.append)
    assert [g.status for g in results[0].groups] == ["succeeded", "succeeded"]
    got = mails(smtp_server)
    assert sorted(got) == ["ana@example.com", "bo@example.com", "li@example.com"]
    assert all(len(v) == 1 for v in got.values())
    assert "3 rows for EMEA from " in text_of(got["ana@example.com"][0])
    assert "3 rows for APAC from " in text_of(got["li@example.com"][0])
    # the worker ran in a scratch folder of its own, never in the workspace
    assert str(ws.home) not in text_of(got["li@example.com"][0])
    for run in runs_of(ws):  # the executed notebook came back into the workspace's run folder
        assert run["status"] == "succeeded" and run["row_count"] == 3
        kept = Path(run["output_path"])
        assert kept.name == "report.ipynb" and kept.is_file()
        assert kept.is_relative_to(ws.runs_dir)
    assert lines == [results[0].summary()]


def test_setting_names_the_cluster(
    ws: Workspace, smtp_server: SMTPTestServer, reports_account: Any, two_workers: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    settings.set_setting(ws, "report_cluster", two_workers)
    subscribe(ws, write_echo_report(tmp_path), recipients=["ana@example.com"])
    results = subscription_runs.run_due(ws, now=tomorrow())
    assert [g.status for g in results[0].groups] == ["succeeded"]
    assert sorted(mails(smtp_server)) == ["ana@example.com"]


def test_a_worker_killed_mid_run_mails_each_recipient_once(
    ws: Workspace, smtp_server: SMTPTestServer, reports_account: Any, two_workers: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    subscribe(ws, sleepy_report(tmp_path), parameters={"sleep": 6.0})
    done: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: done.update(r=subscription_runs.run_due(ws, now=tomorrow(),
                                                               cluster=two_workers)),
    )  # fmt: skip
    runner.start()
    killed = None
    with client_of(two_workers) as c:
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline:
            busy = {w: keys for w, keys in c.processing().items()
                    if any(str(k).startswith("sysmail-report-") for k in keys)}  # fmt: skip
            if busy:
                time.sleep(2)  # the kernel is up and in its sleep cell
                worker = sorted(busy)[0]
                killed = c.run(os.getpid, workers=[worker])[worker]
                os.kill(killed, signal.SIGKILL)
            else:
                time.sleep(0.1)
    runner.join(300)
    assert killed is not None, "no report task was seen running"
    assert not runner.is_alive()
    assert [g.status for g in done["r"][0].groups] == ["succeeded", "succeeded"]
    got = mails(smtp_server)
    assert {k: len(v) for k, v in got.items()} == {
        "ana@example.com": 1, "bo@example.com": 1, "li@example.com": 1,
    }  # fmt: skip


def test_a_run_past_its_timeout_fails_and_the_owner_is_told(
    ws: Workspace, smtp_server: SMTPTestServer, reports_account: Any, two_workers: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    subscribe(ws, sleepy_report(tmp_path), recipients=["ana@example.com"],
              parameters={"sleep": 60.0}, timeout=3)  # fmt: skip
    results = subscription_runs.run_due(ws, now=tomorrow(), cluster=two_workers)
    (g,) = results[0].groups
    assert g.status == "failed"
    assert g.error is not None and g.error.startswith("timed out: the report ran longer than 3 s")
    assert results[0].owner_notified
    assert sorted(mails(smtp_server)) == ["owner@example.com"]
    assert runs_of(ws)[0]["status"] == "failed"


def test_an_unreachable_scheduler_is_one_line_then_a_failed_slot_or_the_local_pool(
    ws: Workspace, smtp_server: SMTPTestServer, reports_account: Any, tmp_path: Path
) -> None:
    nowhere = f"tcp://127.0.0.1:{closed_port()}"
    subscribe(ws, write_echo_report(tmp_path), recipients=["ana@example.com"])
    lines: list[str] = []
    results = subscription_runs.run_due(ws, now=tomorrow(), cluster=nowhere, out=lines.append)
    assert lines[0].startswith(f"the Dask scheduler at {nowhere} cannot be reached: ")
    assert lines[0].endswith(": the runs fail") and "\n" not in lines[0]
    (g,) = results[0].groups
    assert g.status == "failed" and results[0].owner_notified
    assert sorted(mails(smtp_server)) == ["owner@example.com"]

    before = len(smtp_server.messages)
    lines.clear()
    later = tomorrow() + timedelta(days=1)
    results = subscription_runs.run_due(
        ws, now=later, cluster=nowhere, fallback="local", out=lines.append
    )
    assert lines[0].endswith(": running the reports locally")
    assert [g.status for g in results[0].groups] == ["succeeded"]
    assert [list(m.rcpt_tos) for m in smtp_server.messages[before:]] == [["ana@example.com"]]


def test_delivery_report_reads_a_log_extract_on_the_worker(
    ws: Workspace, smtp_server: SMTPTestServer, reports_account: Any, two_workers: str
) -> None:
    handmade_log(ws)
    subscribe(ws, Path("delivery_report"), recipients=["ana@example.com"],
              parameters={"since": "2026-03-02", "until": "2026-03-04"})  # fmt: skip
    results = subscription_runs.run_due(ws, now=tomorrow(), cluster=two_workers)
    assert [g.status for g in results[0].groups] == ["succeeded"], results[0].groups[0].error
    (mail,) = mails(smtp_server)["ana@example.com"]
    assert "3 of 7 deliveries sent (42.9%), 3 failed, 1 deferred" in text_of(mail)


def test_a_bad_cluster_address_is_one_line_and_claims_nothing(
    ws: Workspace, reports_account: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sysmail_ops.cli import main

    subscribe(ws, write_echo_report(tmp_path))
    code = main(["--home", str(ws.home), "subscriptions", "run-due", "--cluster",
                 "http://sched:8786", "--now", tomorrow().isoformat()])  # fmt: skip
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.strip() == (
        "sysmail-ops: error: report_cluster must be tcp://HOST:PORT or tls://HOST:PORT"
        " (or empty), got 'http://sched:8786'"
    )
    with ws.store.connect() as con:
        assert con.execute("SELECT count(*) FROM subscription_claims").fetchone() == (0,)
