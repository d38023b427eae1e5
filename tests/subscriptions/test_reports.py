"""Report notebooks on real kernels: parameters, outputs, rendering for mail, failures, timeouts."""

from __future__ import annotations

import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import bind
from markupsafe import Markup
from nbformat.v4 import new_code_cell, new_notebook
from smtp_testserver import SMTPTestServer

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.demo import sales
from sysmail_ops.errors import ValidationError
from sysmail_ops.mail.mime import Attachment
from sysmail_ops.sending import batch as sending
from sysmail_ops.subscriptions import kit as reportkit
from sysmail_ops.subscriptions import notebooks as reports
from sysmail_ops.subscriptions.notebooks import ReportRun
from sysmail_ops.templates import catalog as templates

ROOT = Path(__file__).parents[2]
BUNDLED = sorted((ROOT / "reports").glob("*.ipynb"))
FAST = sending.SendOptions(backoff=0.01)
CID = re.compile(r'src="cid:([^"]+)"')


def notebook(folder: Path, name: str, *cells: str, params: str = "home = None") -> Path:
    """A report notebook: a ``parameters`` cell, then ``cells`` as code cells."""
    first = new_code_cell(params)
    first.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[first, *(new_code_cell(c) for c in cells)])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def send_some(ws: Workspace, server: SMTPTestServer) -> None:
    """Real send-log rows: 3 sent and 1 refused (550) on 'service', 1 sent on 'news'."""
    bind(ws, server)
    bind(ws, server, "news", kind="marketing")
    templates.add_template(
        ws, "note", object_type="case", subject="Note {{ n }}", html="<p>{{ n }}</p>", fields=["n"]
    )
    server.reject_rcpt = {"nobody@example.com": "550 5.1.1 no such user"}
    to = ["ann@example.com", "bob@example.com", "cy@example.com", "nobody@example.com"]
    sending.send(ws, "service", "note", to=to, record={"n": 1}, options=FAST)
    sending.send(ws, "news", "note", to="dee@example.org", record={"n": 2}, options=FAST)


def assert_mailable(run: ReportRun) -> None:
    """The rendered HTML has no code and no data: URIs; each cid: has its image and back."""
    assert run.ok, run.error
    out = run.output
    assert out is not None
    assert "data:" not in out.html
    assert "<style" not in out.html and "In&nbsp;[" not in out.html and "In [" not in out.html
    assert "reportkit" not in out.html and "import " not in out.html
    assert "application/vnd.sysmail-ops" not in out.html
    cids = CID.findall(out.html)
    assert cids and sorted(cids) == sorted(i.cid for i in out.images)
    assert all(i.data.startswith(b"\x89PNG") for i in out.images)
    assert all(isinstance(df, pd.DataFrame) for df in out.tables.values())
    assert out.html_path is not None and out.html_path.is_file()
    page = out.html_path.read_text()
    assert "cid:" not in page  # the kept page shows the PNG files next to it
    for image in out.images:
        assert image.filename and (out.html_path.parent / image.filename).read_bytes() == image.data
    assert run.output_notebook and run.output_notebook.is_file()
    assert run.kernel_seconds is not None and run.kernel_seconds > 0
    assert run.execute_seconds is not None and run.execute_seconds > 0


# --- finding reports and their parameters (no kernel) -------------------------------------


def test_bundled_reports_are_found_by_name() -> None:
    assert reports.bundled_reports_dir() == ROOT / "reports"
    assert {p.stem for p in reports.list_reports()} >= {"delivery_report", "sales_pipeline"}
    for name in ("delivery_report", "delivery_report.ipynb"):
        assert reports.resolve_notebook(name) == ROOT / "reports" / "delivery_report.ipynb"


def test_resolve_notebook_takes_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = notebook(tmp_path, "mine")
    assert reports.resolve_notebook(path) == path
    monkeypatch.chdir(tmp_path)
    assert reports.resolve_notebook("./mine.ipynb") == path
    with pytest.raises(ValidationError, match=r"for the file here, write \./mine\.ipynb"):
        reports.resolve_notebook("mine.ipynb")  # a bare name means the bundled reports


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "a report notebook is needed"),
        ("no_such_report", "no report named 'no_such_report' in reports/ (there: "),
        ("/nowhere/missing.ipynb", "report notebook /nowhere/missing.ipynb does not exist"),
        ("/etc/hostname", "is not a notebook (.ipynb)"),
    ],
)
def test_resolve_notebook_refuses(given: str, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        reports.resolve_notebook(given)


def test_inspect_sees_the_parameters_of_the_bundled_reports() -> None:
    delivery = reports.report_parameters("delivery_report")
    assert list(delivery) == [
        "home", "log_extract", "days", "since", "until", "account", "locale", "timezone",
    ]  # fmt: skip
    assert delivery["log_extract"]["default"] == "None"  # a cluster run passes one
    assert delivery["days"]["default"] == "7"
    assert delivery["home"]["default"] == "None"
    pipeline = reports.report_parameters("sales_pipeline")
    assert list(pipeline) == ["home", "region", "owner", "data", "locale", "timezone"]
    assert pipeline["region"]["default"] == '"EMEA"'
    assert "EMEA, Americas or APAC" in pipeline["region"]["help"]


def test_report_parameters_refuses_what_is_not_a_report(tmp_path: Path) -> None:
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json")
    with pytest.raises(ValidationError, match="is not a readable notebook"):
        reports.report_parameters(broken)
    plain = tmp_path / "plain.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("x = 1")]), plain)
    with pytest.raises(ValidationError, match="has no cell tagged 'parameters'"):
        reports.report_parameters(plain)
    with pytest.raises(ValidationError, match="does not exist"):
        reports.report_parameters(tmp_path / "gone.ipynb")


def test_report_parameters_sees_an_edited_notebook(tmp_path: Path) -> None:
    path = notebook(tmp_path, "grows", params="home = None")
    assert list(reports.report_parameters(path)) == ["home"]
    time.sleep(0.01)
    notebook(tmp_path, "grows", params="home = None\nregion = 'EMEA'  # where")
    assert list(reports.report_parameters(path)) == ["home", "region"]


def test_check_parameters_names_the_unknown_ones() -> None:
    reports.check_parameters("sales_pipeline", {"region": "APAC", "home": "/x"})
    reports.check_parameters("sales_pipeline", {})
    with pytest.raises(ValidationError) as err:
        reports.check_parameters("sales_pipeline", {"regoin": "APAC", "zone": 1, "owner": None})
    assert str(err.value) == (
        "report sales_pipeline has no parameters regoin, zone"
        " (its parameters: home, region, owner, data, locale, timezone)"
    )
    with pytest.raises(ValidationError, match="has no parameter days "):
        reports.check_parameters("sales_pipeline", {"days": 3})


def test_the_default_kernel_is_this_environment() -> None:
    assert reports.kernel_python() == sys.executable
    with pytest.raises(ValidationError, match="no Jupyter kernel named 'nope'"):
        reports.kernel_python("nope")


def test_reportkit_refuses_bad_declarations() -> None:
    """Checked before anything is published (so this runs outside a kernel too)."""
    df = pd.DataFrame({"a": [1]})
    for name in ("", "two words", "../up", "naïve", "a.csv"):
        with pytest.raises(ValidationError, match="must be letters, digits"):
            reportkit.table(name, df)
    with pytest.raises(ValidationError, match="row_count must be 0 or more, got -1"):
        reportkit.row_count(-1)


def test_bad_input_gives_a_failed_run_and_writes_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    missing = reports.execute_report("no_such_report", run_dir, {}, home=tmp_path)
    assert not missing.ok and missing.output_notebook is None and missing.output is None
    assert "no report named 'no_such_report'" in (missing.error or "")
    unknown = reports.execute_report("sales_pipeline", run_dir, {"regoin": "X"}, home=tmp_path)
    assert not unknown.ok and "has no parameter regoin" in (unknown.error or "")
    assert not run_dir.exists()


# --- the bundled reports on a real kernel --------------------------------------------------


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_committed_without_outputs(path: Path) -> None:
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, path.name


@pytest.mark.slow  # the tests below run each bundled report too, with its content checked
@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_bundled_report_runs_with_defaults(
    path: Path, ws: Workspace, smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    send_some(ws, smtp_server)
    run = reports.execute_report(path.stem, tmp_path / "run", {}, home=ws.home)
    assert_mailable(run)
    assert run.output is not None
    assert run.output.summary and run.output.row_count is not None and run.output.row_count > 0
    assert run.parameters == {"home": str(ws.home)}  # injected because the report declares it
    executed = nbformat.read(run.output_notebook, as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and repr(str(ws.home)) in injected[0].source.replace('"', "'")


def test_delivery_report_content_and_mail(
    ws: Workspace, smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    send_some(ws, smtp_server)
    run = reports.execute_report(
        "delivery_report", tmp_path / "run", {"days": 1}, home=ws.home, timeout=60
    )
    assert_mailable(run)
    out = run.output
    assert out is not None
    assert out.summary == "4 of 5 deliveries sent (80.0%), 1 failed, 0 deferred"
    assert out.row_count == 5
    assert set(out.tables) == {"totals", "by_account", "by_day", "failures"}
    totals = out.tables["totals"].set_index("status")["deliveries"]
    assert (totals["sent"], totals["failed"], totals["deferred"]) == (4, 1, 0)
    by_account = out.tables["by_account"].set_index("account")
    assert by_account.loc["service", "delivery_rate"] == 0.75
    assert by_account.loc["news", "delivery_rate"] == 1.0
    failure = out.tables["failures"].iloc[0]
    assert (failure["smtp_code"], failure["example_recipient"]) == (550, "nobody@example.com")
    assert "no such user" in failure["example_reply"]
    assert "nobody@example.com" in out.html and "550" in out.html
    assert len(out.html.encode()) < 15_000  # compact: the lab template gives ~280 KB
    # Formatted for people: percentages, words for headers, no microseconds.
    assert "75%" in out.html and "Delivery rate" in out.html and "delivery_rate" not in out.html
    assert "Server reply" in out.html and "SMTP code" in out.html
    assert not re.search(r"\d\d:\d\d:\d\d", out.html)
    # The text part: the tables as aligned text, numbers right-aligned; the summary not repeated.
    assert out.summary not in out.text
    lines = out.text.splitlines()
    header = next(line for line in lines if line.startswith("Account"))
    service = next(line for line in lines if line.startswith("service "))
    assert header.index("Delivery rate") + len("Delivery rate") == service.index("75%") + 3

    # Mail it the way a subscription does, and open what the server received.
    record = {
        "subscription": "ops-weekly",
        "report": "delivery report",
        "slot": "Mon 08:00",
        "summary": out.summary,
        "report_html": Markup(out.html),  # noqa: S704 - rendered by us
        "report_text": out.text,
    }
    result = sending.send(
        ws,
        "service",
        "report-mail",
        to="boss@example.com",
        record=record,
        inline_images=out.images,
        attachments=[Attachment.from_dataframe(out.tables["totals"], "totals.csv")],
        key="test:delivery-report:boss",
        options=FAST,
    )
    assert result.counts == {"sent": 1}
    got = smtp_server.messages[-1].message
    assert got["To"] == "boss@example.com"
    html_part = got.get_body(preferencelist=("html",))
    assert isinstance(html_part, EmailMessage)
    body = html_part.get_content()
    assert "data:" not in body and out.summary in body
    cids = set(CID.findall(body))
    parts = {
        str(p["Content-ID"]).strip("<>"): p
        for p in got.walk()
        if p.get_content_maintype() == "image"
    }
    assert cids and cids == set(parts)
    for image in out.images:
        assert parts[image.cid].get_content() == image.data
        assert parts[image.cid].get_content_type() == "image/png"
    csv = next(p for p in got.iter_attachments() if p.get_filename() == "totals.csv")
    assert "sent,4" in csv.get_content().replace("\r\n", "\n")


def test_region_parameter_changes_the_sales_report(tmp_path: Path) -> None:
    """Two regions in parallel threads (as the scheduler runs parameter sets)."""
    regions = ("APAC", "EMEA")
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(
            pool.map(
                lambda r: reports.execute_report(
                    "sales_pipeline", tmp_path / r, {"region": r}, home=tmp_path
                ),
                regions,
            )
        )
    csv = pd.read_csv(ROOT / "reports" / "data" / "opportunities.csv")
    for region, run in zip(regions, runs, strict=True):
        assert_mailable(run)
        out = run.output
        assert out is not None
        mine = csv[csv["region"] == region]
        open_ = mine[mine["stage"].isin(sales.OPEN_STAGES)]
        assert out.row_count == len(open_)
        assert out.summary and out.summary.startswith(f"{region}: {len(open_)} open opportunities")
        assert f"Region {region}" in out.html
        owners = set(out.tables["pipeline_by_owner"]["owner"])
        assert owners == set(open_["owner"])
        stages = out.tables["pipeline_by_stage"].set_index("stage")
        assert stages["opportunities"].sum() == len(mine)
        assert (
            stages.loc["Proposal", "amount_eur"] == mine[mine.stage == "Proposal"].amount_eur.sum()
        )
        assert len(out.tables["largest_open"]) == min(10, len(open_))
    apac, emea = (r.output for r in runs)
    assert apac and emea
    assert "Region EMEA" not in apac.html and "Region APAC" not in emea.html
    assert apac.images[0].data != emea.images[0].data


# --- failures, timeouts, the kernel --------------------------------------------------------


def test_a_failing_notebook_gives_a_failed_run(tmp_path: Path) -> None:
    path = notebook(tmp_path, "fails", "x = 1", "x / 0", "print('never')")
    run = reports.execute_report(path, tmp_path / "run", {}, home=tmp_path)
    assert not run.ok and run.output is None
    assert run.output_notebook == tmp_path / "run" / "report.ipynb"
    executed = nbformat.read(run.output_notebook, as_version=4)
    cell = run.failing_cell
    assert cell is not None
    assert (cell.ename, cell.evalue) == ("ZeroDivisionError", "division by zero")
    assert cell.source == "x / 0"
    # the index is the cell's place in the notebook as written, whatever papermill added
    written = [c.source for c in nbformat.read(path, as_version=4).cells]
    assert written.index("x / 0") == cell.index
    assert cell.index == 2 and cell.execution_count == 4  # after the injected-parameters cell
    assert run.error == "cell 2 (In [4]): ZeroDivisionError: division by zero"
    after = next(c for c in executed.cells if c.source == "print('never')")
    assert after.outputs == [] and after.execution_count is None  # execution stopped there


def test_a_report_running_too_long_times_out(tmp_path: Path) -> None:
    """The timeout bounds the whole run: no cell exceeds 3 s, all of them together do."""
    path = notebook(tmp_path, "slow", "import time", "time.sleep(2.0)", "time.sleep(2.1)", "1")
    began = time.monotonic()
    run = reports.execute_report(path, tmp_path / "run", {}, home=tmp_path, timeout=3)
    assert time.monotonic() - began < 30
    assert not run.ok and run.output is None
    assert run.failing_cell is not None and run.failing_cell.source == "time.sleep(2.1)"
    assert run.failing_cell.index == 3
    assert run.error == (
        f"timed out: the report ran longer than 3 s, stopped in cell 3"
        f" (In [{run.failing_cell.execution_count}])"
    )
    assert run.output_notebook and run.output_notebook.is_file()


def test_the_kernel_runs_this_python_in_the_run_folder_with_home(tmp_path: Path) -> None:
    """Also: plain image outputs and data: URIs become cid: images; stdout shows; no scripts."""
    path = notebook(
        tmp_path,
        "where",
        "import os, sys\nfrom sysmail_ops import reportkit\n"
        "reportkit.summary(f'{sys.executable}|{home}|{os.getcwd()}')",
        "from IPython.display import Image, display\nfrom sysmail_ops import charts\n"
        "display(Image(charts.png_bytes(charts.bar_chart(['a', 'b'], [1, 2]))))\n"
        "print('printed <line>')",
        "import sys\nprint('to stderr', file=sys.stderr)",
        "import base64\nfrom IPython.display import HTML, Markdown, display\n"
        "dot = base64.b64encode(charts.png_bytes(charts.bar_chart(['c'], [3]))).decode()\n"
        "display(Markdown(f'![dot](data:image/png;base64,{dot})'))\n"
        "HTML('<script>steal()</script><b>kept</b>')",
        params="home = None\nregion = 'EMEA'",
    )
    run = reports.execute_report(
        path, tmp_path / "run", {"home": "/ignored", "region": "X"}, home=tmp_path / "ws"
    )
    assert_mailable(run)
    assert run.output is not None
    assert run.output.summary == f"{sys.executable}|{tmp_path / 'ws'}|{tmp_path / 'run'}"
    assert run.output.row_count is None and run.output.tables == {}
    # the displayed Image, then the markdown's data: URI: both are cid: parts now
    assert [i.cid for i in run.output.images] == ["chart-1@report", "chart-2@report"]
    assert "<b>kept</b>" in run.output.html and "steal" not in run.output.html
    assert "printed &lt;line&gt;" in run.output.html
    assert "to stderr" not in run.output.html
    assert run.parameters == {"home": str(tmp_path / "ws"), "region": "X"}


def test_interpreters_of_one_environment_are_the_same_kernel() -> None:
    from sysmail_ops.subscriptions.notebooks import _same_environment

    assert _same_environment("/srv/app/.venv/bin/python", "/srv/app/.venv/bin/python3")
    assert not _same_environment("/srv/app/.venv/bin/python", "/usr/bin/python3")


def test_the_runner_passes_locale_and_timezone_to_reports_that_declare_them(
    tmp_path: Path,
) -> None:
    """A subscription's locale and timezone reach the kernel as defaults; explicit
    parameters (a recipient's own) win; a report that does not declare them is left alone."""
    defaults = {"locale": "de", "timezone": "Europe/Berlin"}
    run = reports.execute_report(
        "sales_pipeline", tmp_path / "de", {}, home=tmp_path / "ws", defaults=defaults
    )
    assert_mailable(run)
    assert run.output is not None
    assert run.parameters["locale"] == "de" and run.parameters["timezone"] == "Europe/Berlin"
    page = run.output.html.replace("&nbsp;", "\xa0")
    assert "1.111.000\xa0EUR" in page and "EUR\xa01,111,000" not in page
    assert run.output.summary and "2.158.000 EUR" in run.output.summary.replace("\xa0", " ")
    assert "1.111.000 EUR" in run.output.text
    mine = reports.execute_report(
        "sales_pipeline", tmp_path / "en", {"locale": "en"}, home=tmp_path / "ws",
        defaults=defaults,
    )  # fmt: skip
    assert mine.ok and mine.output is not None
    assert mine.parameters["locale"] == "en"
    assert "EUR\xa01,111,000" in mine.output.html.replace("&nbsp;", "\xa0")
    plain = notebook(tmp_path, "plain", params="home = None")
    other = reports.execute_report(plain, tmp_path / "plain", {}, home=tmp_path / "ws",
                                   defaults=defaults)  # fmt: skip
    assert other.parameters == {"home": str(tmp_path / "ws")}
