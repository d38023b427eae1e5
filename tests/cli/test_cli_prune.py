"""CLI: `sysmail-ops prune --before DATE [--dry-run]`: retention over the whole workspace."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import bind
from report_fixtures import write_echo_report
from smtp_testserver import SMTPTestServer

from sysmail_ops import flows as workflows
from sysmail_ops.cli import main
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.flows import intake
from sysmail_ops.sending.engine import SendOptions
from sysmail_ops.store.database import utcnow
from sysmail_ops.templates import catalog as templates

YEAR_AND_A_MONTH = 400 * 86400  # seconds


@pytest.fixture
def run(ws: Workspace, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    def _run(*argv: str) -> tuple[int, str, str]:
        code = main(["--home", str(ws.home), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def age(paths: list[Path]) -> None:
    then = time.time() - YEAR_AND_A_MONTH
    for p in paths:
        os.utime(p, (then, then))


def count(ws: Workspace, table: str) -> int:
    with ws.store.connect() as con:
        row = con.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - ours
    return int(row[0]) if row else 0


@pytest.fixture
def old(run, ws: Workspace, smtp_server: SMTPTestServer, tmp_path: Path) -> Workspace:  # type: ignore[no-untyped-def]
    """A workspace a year and a month old: a report run, sent and archived mail, an event,
    dry-run previews; all of it dated back."""
    bind(ws, smtp_server)  # customer service: sent archiving on
    bind(ws, smtp_server, "reports", kind="other")
    report = write_echo_report(tmp_path)
    code, _, err = run(
        "subscriptions", "add", "rows", "--notebook", str(report), "--schedule", "0 8 * * mon",
        "--timezone", "UTC", "--account", "reports", "--owner", "owner@example.com",
        "--recipient", "ana@example.com",
    )  # fmt: skip
    assert code == 0, err
    monday = (utcnow() + timedelta(days=8)).strftime("%Y-%m-%dT%H:%MZ")
    code, _, err = run("subscriptions", "run-due", "--now", monday)
    assert code == 0, err
    html = tmp_path / "hello.html"
    html.write_text("<p>Hi {{ name }}</p>")
    code, _, err = run(
        "templates", "add", "hello", "--object", "contact", "--subject", "Hi {{ name }}",
        "--html", str(html),
    )  # fmt: skip
    assert code == 0, err
    records = tmp_path / "people.csv"
    records.write_text("email,name\nann@example.com,Ann\nbob@example.com,Bob\n")
    batch = ("send-batch", "service", "--template", "hello", "--records", str(records))
    assert run(*batch)[0] == 0
    assert run(*batch, "--dry-run")[0] == 0
    events = tmp_path / "events.jsonl"
    events.write_text(
        json.dumps({"id": "e1", "flow_type": "workflow", "flow_name": "intake", "event": "done",
                    "object_type": "ticket", "object_id": "1", "record": {}}) + "\n"
    )  # fmt: skip
    assert run("notify", "--events", str(events))[0] == 0
    with ws.store.transaction() as con:
        con.execute("UPDATE send_log SET queued_at = queued_at - INTERVAL 400 DAY")
        con.execute("UPDATE archive SET date = date - INTERVAL 400 DAY")
        con.execute("UPDATE workflow_events SET received_at = received_at - INTERVAL 400 DAY")
    for folder in (ws.runs_dir, ws.preview_dir, ws.archive_dir):
        assert files_under(folder), folder
        age(files_under(folder))
    return ws


def test_a_dry_run_counts_and_deletes_nothing(run, old: Workspace) -> None:
    before = {f: files_under(f) for f in (old.runs_dir, old.preview_dir, old.archive_dir)}
    rows = {t: count(old, t) for t in ("send_log", "archive", "workflow_events")}
    code, out, err = run("prune", "--before", "365d", "--dry-run", "--json")
    assert code == 0, err
    parts = {p["part"]: p for p in json.loads(out)["parts"]}
    assert parts["send log"]["rows"] == rows["send_log"] > 0
    assert parts["archive"]["rows"] == rows["archive"] == 2
    assert parts["flow events"]["rows"] == 1
    assert parts["report runs (runs/)"]["files"] == len(before[old.runs_dir])
    assert parts["previews (preview/)"]["files"] == 2
    assert parts["report runs (runs/)"]["bytes"] > 0
    assert {f: files_under(f) for f in before} == before
    assert {t: count(old, t) for t in rows} == rows
    code, out, _ = run("prune", "--before", "365d", "--dry-run")
    assert code == 0 and out.startswith("would delete what is older than ")
    assert "would free " in out


def test_prune_drops_what_is_older_keeps_run_history_and_newer_files(
    run, old: Workspace, tmp_path: Path
) -> None:
    runs_before = json.loads(run("subscriptions", "runs", "--json")[1])
    assert len(runs_before) == 1
    aged = files_under(old.preview_dir)
    fresh = tmp_path / "fresh.csv"
    fresh.write_text("email,name\ncy@example.com,Cy\n")
    assert run("send-batch", "service", "--template", "hello", "--records", str(fresh),
               "--dry-run")[0] == 0  # fmt: skip
    new_preview = [p for p in files_under(old.preview_dir) if p not in aged]
    assert len(files_under(old.preview_dir)) == 3
    code, out, err = run("prune", "--before", "365d")
    assert code == 0, err
    assert out.startswith("deleted what is older than ")
    lines = out.splitlines()
    assert any(line.startswith("archive ") and " 2 " in line for line in lines), out
    assert "freed " in out and "report run history is kept" in out
    assert files_under(old.runs_dir) == []
    assert files_under(old.archive_dir) == []
    assert files_under(old.preview_dir) == new_preview  # the recent dry run stays
    assert list(old.runs_dir.iterdir()) == []  # its emptied folders went too
    assert count(old, "archive") == 0 and count(old, "workflow_events") == 0
    assert count(old, "send_log") == 1  # the recent dry run's row
    assert json.loads(run("subscriptions", "runs", "--json")[1]) == runs_before
    code, out, _ = run("prune", "--before", "365d", "--json")
    assert code == 0
    assert all(p["rows"] in (0, None) and p["files"] in (0, None)
               for p in json.loads(out)["parts"])  # fmt: skip


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yesterday", "--before takes an ISO date (2026-01-01) or days (365d), got 'yesterday'"),
        ("2999-01-01", "--before 2999-01-01 is in the future: that would delete everything"),
        ("-5d", "--before takes an ISO date"),
    ],
)
def test_a_bad_date_is_one_line_and_deletes_nothing(
    run, ws: Workspace, value: str, message: str
) -> None:
    (ws.preview_dir / "b1").mkdir(parents=True)
    kept = ws.preview_dir / "b1" / "000001.eml"
    kept.write_bytes(b"Subject: x\r\n\r\nx\r\n")
    age([kept])
    code, out, err = run("prune", f"--before={value}")
    assert code == 2 and out == ""
    assert err == f"sysmail-ops: error: {message}\n" or (message in err and err.count("\n") == 1)
    assert kept.exists()


def test_cron_prints_the_retention_line_commented_out(run, ws: Workspace) -> None:
    code, out, _ = run("cron")
    assert code == 0
    [line] = [x for x in out.splitlines() if " prune " in x]
    assert line.startswith("# 30 3 1 * * ") and line.endswith(
        f"--home {ws.home} prune --before 365d >> {ws.home / 'cron.log'} 2>&1"
    )
    assert all(" prune " not in x for x in out.splitlines() if not x.startswith("#"))


# --- the HTTP intake's rows (serve) --------------------------------------------------------


INTAKE = "event intake (serve)"


def approval(eid: str) -> str:
    return json.dumps(
        {"id": eid, "flow_type": "approval_flow", "flow_name": "travel", "event": "approved",
         "object_type": "approval", "object_id": f"AP-{eid}",
         "record": {"applicant_email": f"p-{eid}@example.com", "request": eid}}
    )  # fmt: skip


def intake_state(ws: Workspace) -> dict[str, str]:
    with ws.store.connect() as con:
        rows = con.execute("SELECT event_id, state FROM event_intake").fetchall()
    return {eid: state for eid, state in rows}


@pytest.fixture
def queue(ws: Workspace, smtp_server: SMTPTestServer) -> Iterator[intake.IntakeQueue]:
    """``serve``'s queue on a real store: e1 and e2 accepted and notified through the
    aiosmtpd server, e3 accepted and still queued."""
    bind(ws, smtp_server, "workflow", kind="workflow_notification")
    templates.add_template(
        ws, "granted", object_type="approval", subject="Approved: {{ request }}",
        html="<p>{{ request }}</p>",
    )  # fmt: skip
    workflows.add_rule(
        ws, "applicant", flow_type="approval_flow", flow_name="*", event="approved",
        account="workflow", template="granted", recipients=["field:applicant_email"],
    )  # fmt: skip
    q = intake.IntakeQueue(ws, options=SendOptions(backoff=0.01, workers=0))
    answers = q.accept("erp", "\n".join([approval("e1"), approval("e2")]).encode())
    assert [(a.id, a.status) for a in answers] == [("e1", "queued"), ("e2", "queued")]
    assert q.work_once() == 2
    assert [a.status for a in q.accept("erp", approval("e3").encode())] == ["queued"]
    assert intake_state(ws) == {"e1": "done", "e2": "done", "e3": "queued"}
    assert len(smtp_server.messages) == 2
    yield q
    q.stop()


def test_prune_drops_the_intake_rows_of_done_events_never_queued_ones(
    run, ws: Workspace, queue: intake.IntakeQueue
) -> None:
    cutoff = utcnow().isoformat()  # after e1 and e2 were done
    code, out, err = run("prune", "--before", cutoff, "--dry-run", "--json")
    assert code == 0, err
    assert {p["part"]: p["rows"] for p in json.loads(out)["parts"]}[INTAKE] == 2
    code, out, _ = run("prune", "--before", "1d", "--json")  # done a moment ago: kept
    assert {p["part"]: p["rows"] for p in json.loads(out)["parts"]}[INTAKE] == 0
    assert len(intake_state(ws)) == 3
    code, out, err = run("prune", "--before", cutoff)
    assert code == 0, err
    [line] = [x for x in out.splitlines() if x.startswith(INTAKE)]
    assert line.split()[3] == "2", out
    assert intake_state(ws) == {"e3": "queued"}  # accepted, not yet notified: it stays
    assert queue.work_once() == 1 and intake_state(ws) == {"e3": "done"}  # and is notified


def test_intake_prune_counts_in_a_dry_run_and_deletes_nothing(
    ws: Workspace, queue: intake.IntakeQueue
) -> None:
    now = utcnow()
    assert intake.prune(ws, now, dry_run=True) == 2
    assert intake.prune(ws, now - timedelta(hours=1)) == 0
    assert len(intake_state(ws)) == 3
    assert intake.prune(ws, now) == 2 and intake.prune(ws, now) == 0
    assert intake_state(ws) == {"e3": "queued"}


def test_a_pruned_event_redelivered_is_accepted_as_new_and_mailed_only_once_the_log_is_gone(
    run, ws: Workspace, queue: intake.IntakeQueue, smtp_server: SMTPTestServer
) -> None:
    [again] = queue.accept("erp", approval("e1").encode())  # before pruning: known
    assert (again.redelivered, again.status) == (True, "notified")
    # The intake rows pruned, the send log kept: e1 is new again, but its keys skip p-e1.
    assert intake.prune(ws, utcnow()) == 2
    [again] = queue.accept("erp", approval("e1").encode())
    assert (again.redelivered, again.status) == (False, "queued")
    assert queue.work_once() == 2  # e3 and e1 again
    found = queue.status("erp", "e1")
    assert found is not None and found["status"] == "notified"
    assert [s["status"] for s in found["sends"]] == ["skipped_duplicate"]
    assert len(smtp_server.messages) == 3  # e3's; nothing for e1 again
    # `prune` with one date for all: e2's intake row and its log rows both go, so a
    # redelivery of e2 is mailed a second time (what the README says the date trades).
    code, _, err = run("prune", "--before", utcnow().isoformat())
    assert code == 0, err
    [again] = queue.accept("erp", approval("e2").encode())
    assert (again.redelivered, again.status) == (False, "queued")
    assert queue.work_once() == 1
    assert [m.rcpt_tos[0] for m in smtp_server.messages].count("p-e2@example.com") == 2
