"""`logs export`: the send log and archive metadata as day-partitioned Parquet, read back by
pandas (pyarrow) and DuckDB; a re-export replaces a day's partition, never adds to it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from conftest import bind
from log_fixtures import ROWS, handmade_log
from smtp_testserver import SMTPTestServer

from sysmail_ops.cli import main
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.records import export
from sysmail_ops.sending.batch import send
from sysmail_ops.store.database import utcnow
from sysmail_ops.templates import catalog as templates


def cli(ws: Workspace, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--home", str(ws.home), "logs", "export", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def files(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def log_count(ws: Workspace, table: str, where: str = "true") -> int:
    with ws.store.connect() as con:
        row = con.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()  # noqa: S608
    return int(row[0]) if row else 0


def read_duckdb(folder: Path, table: str) -> pd.DataFrame:
    with duckdb.connect() as con:
        return con.execute(
            "SELECT * FROM read_parquet(?, hive_partitioning = true) ORDER BY id",
            [str(folder / table / "**" / "*.parquet")],
        ).df()


def test_days_read_back_by_pandas_and_duckdb(
    ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    handmade_log(ws)
    out = tmp_path / "warehouse"
    code, said, err = cli(ws, capsys, "--since", "2026-03-01", "--until", "2026-03-04", "--to",
                          str(out))  # fmt: skip
    assert (code, err) == (0, "")
    assert said.strip() == (
        f"exported 2026-03-01 .. 2026-03-04 to {out}: 11 send_log row(s) in 2 day(s),"
        " 1 archive row(s) in 1 day(s)"
    )
    assert files(out) == [
        "archive/day=2026-03-02/data_0.parquet",
        "send_log/day=2026-03-02/data_0.parquet",
        "send_log/day=2026-03-03/data_0.parquet",
    ]
    by_pandas = pd.read_parquet(out / "send_log")  # pyarrow reads the Hive layout
    assert len(by_pandas) == log_count(ws, "send_log") == len(ROWS)
    days = by_pandas.groupby(by_pandas["day"].astype(str)).size().to_dict()
    assert days == {
        "2026-03-02": log_count(ws, "send_log", "queued_at::DATE = DATE '2026-03-02'"),
        "2026-03-03": log_count(ws, "send_log", "queued_at::DATE = DATE '2026-03-03'"),
    }
    by_duck = read_duckdb(out, "send_log")
    with ws.store.connect() as con:
        original = con.execute("SELECT * FROM send_log ORDER BY id").df()
    columns = export.TABLES["send_log"][1]
    pd.testing.assert_frame_equal(
        by_duck[columns].reset_index(drop=True), original[columns].reset_index(drop=True),
        check_dtype=False,
    )  # fmt: skip
    archived = read_duckdb(out, "archive")
    assert archived[["id", "message_id", "account"]].values.tolist() == [["a-m2", "m2", "service"]]
    assert list(archived["to_addrs"][0]) == ["bob@example.com"]
    assert "body_text" not in archived.columns  # metadata only


def test_reexport_replaces_the_day_without_duplicates(
    ws: Workspace, smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    bind(ws, smtp_server)
    templates.add_template(ws, "note", object_type="case", subject="Case {{ case_id }}",
                           html="<p>case {{ case_id }}</p>")  # fmt: skip
    today = utcnow().date()
    send(ws, "service", "note", to="a@example.com", record={"case_id": "1"})
    out = tmp_path / "wh"
    first = export.export_days(ws, out, today)
    assert first.rows["send_log"] == {today: 1}
    send(ws, "service", "note", to=["b@example.com", "c@example.com"], record={"case_id": "2"})
    again = export.export_days(ws, out, today, today)
    assert again.rows["send_log"] == {today: 3}
    frame = read_duckdb(out, "send_log")
    assert len(frame) == log_count(ws, "send_log") == 3
    assert sorted(frame["recipient"]) == ["a@example.com", "b@example.com", "c@example.com"]
    assert frame["id"].is_unique
    assert len(read_duckdb(out, "archive")) == log_count(ws, "archive") == 2  # archiving on
    assert files(out) == [
        f"archive/day={today}/data_0.parquet",
        f"send_log/day={today}/data_0.parquet",
    ]  # no scratch left behind
    with ws.store.transaction() as con:  # retention took the day away: so does the export
        con.execute("DELETE FROM send_log")
        con.execute("DELETE FROM archive")
    gone = export.export_days(ws, out, today, today)
    assert sorted(gone.removed) == [f"archive/day={today}", f"send_log/day={today}"]
    assert files(out) == []


def test_other_days_are_left_alone(ws: Workspace, tmp_path: Path) -> None:
    handmade_log(ws)
    out = tmp_path / "wh"
    export.export_days(ws, out, "2026-03-02", "2026-03-03")
    marker = out / "send_log" / "day=2026-03-03" / "data_0.parquet"
    before = marker.stat().st_mtime_ns
    export.export_days(ws, out, date(2026, 3, 2), date(2026, 3, 2))
    assert marker.stat().st_mtime_ns == before
    assert len(pd.read_parquet(out / "send_log")) == len(ROWS)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "2026-13-01"], "--since takes a day as YYYY-MM-DD, got '2026-13-01'"),
        (["--since", "2026-03-02", "--until", "yesterday"],
         "--until takes a day as YYYY-MM-DD, got 'yesterday'"),
        (["--since", "2026-03-04", "--until", "2026-03-02"],
         "--until 2026-03-02 is before --since 2026-03-04"),
        (["--since", "1990-01-01", "--until", "2026-03-02"],
         "at most 3660 days in one export, got 1990-01-01 .. 2026-03-02"),
    ],
)  # fmt: skip
def test_bad_days_are_one_line_and_write_nothing(
    ws: Workspace,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    handmade_log(ws)
    out = tmp_path / "wh"
    code, said, err = cli(ws, capsys, *argv, "--to", str(out))
    assert (code, said) == (2, "")
    assert err.strip().splitlines() == [f"sysmail-ops: error: {message}"]
    assert not out.exists()


def test_unwritable_folder_is_one_line_and_writes_nothing(
    ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    handmade_log(ws)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, said, err = cli(ws, capsys, "--since", "2026-03-02", "--to", str(a_file))
    assert (code, said) == (2, "")
    assert err.strip() == f"sysmail-ops: error: {a_file} is not a folder"
    code, said, err = cli(ws, capsys, "--since", "2026-03-02", "--to", str(a_file / "wh"))
    assert (code, said) == (2, "")
    assert err.strip() == (
        f"sysmail-ops: error: cannot write to {a_file / 'wh'}: {a_file} is not a folder"
    )
    assert a_file.read_text() == "x"
    read_only = Path("/proc/sysmail-export")  # refused even to root: the kernel's own folder
    code, said, err = cli(ws, capsys, "--since", "2026-03-02", "--to", str(read_only))
    assert (code, said) == (2, "")
    assert err.strip().startswith(f"sysmail-ops: error: cannot write to {read_only}: ")
    assert len(err.strip().splitlines()) == 1
    assert not read_only.exists()
