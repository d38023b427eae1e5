"""The intake's worker: sessions kept open between micro-batches, pickup, a poison event.

A real ``serve`` (in a thread), a real store and the aiosmtpd test server, as in
``test_intake.py``, whose helpers these tests use.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer
from test_intake import Served, event, setup_rules, start

from sysmail_ops import flows as workflows
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.flows import intake
from sysmail_ops.templates import catalog as templates


@pytest.fixture
def served(ws: Workspace, smtp_server: SMTPTestServer) -> Iterator[Served]:
    setup_rules(ws, smtp_server)
    s = start(ws)
    yield s
    s.srv.shutdown()
    s.srv.server_close()
    s.queue.stop()


def log_rows(ws: Workspace) -> list[tuple[str, str, str, int, str]]:
    with ws.store.connect() as con:
        return con.execute(
            "SELECT delivery_key, status, batch_id, attempt, subject FROM send_log ORDER BY seq"
        ).fetchall()


def delivered_to(smtp: SMTPTestServer) -> list[str]:
    return sorted(r for m in smtp.messages for r in m.rcpt_tos)


def test_micro_batches_share_one_smtp_connection(
    ws: Workspace, served: Served, smtp_server: SMTPTestServer
) -> None:
    for n in range(1, 4):
        assert served.post(event(f"K-{n}", amount=1500))[0] == 202
        assert served.wait(f"K-{n}")["status"] == "notified"
    assert smtp_server.connections == 1  # three micro-batches, one connection (and one AUTH)
    assert len(smtp_server.auth_attempts) == 1
    assert delivered_to(smtp_server) == sorted(
        ["fay@example.com"] * 3 + [f"p-K-{n}@example.com" for n in range(1, 4)]
    )
    rows = log_rows(ws)
    assert [r[1] for r in rows] == ["sent"] * 6
    assert len({r[2] for r in rows}) == 3  # each micro-batch is its own batch in the log
    assert not list((ws.home / "journal").glob("*.jsonl"))  # every journal folded and gone


def test_a_connection_the_server_dropped_is_opened_again_and_nothing_is_lost_or_doubled(
    ws: Workspace, served: Served, smtp_server: SMTPTestServer
) -> None:
    served.post(event("D-1"))
    assert served.wait("D-1")["status"] == "notified"
    smtp_server.drop_connections()  # as an idle timeout on the server's side would
    served.post(event("D-2"))
    assert served.wait("D-2")["status"] == "notified"
    assert smtp_server.connections == 2
    # the dropped connection was noticed before use: nothing was deferred or sent twice
    assert [(r[1], r[3]) for r in log_rows(ws)] == [("sent", 1), ("sent", 1)]
    # a hang-up in the middle of a micro-batch: the message is tried again, once
    smtp_server.drop_on_data = 1
    served.post(event("D-3"), event("D-4"))
    assert served.wait("D-3")["status"] == "notified"
    assert served.wait("D-4")["status"] == "notified"
    assert delivered_to(smtp_server) == [f"p-D-{n}@example.com" for n in range(1, 5)]
    statuses = sorted((r[0].split(":")[1], r[1], r[3]) for r in log_rows(ws))
    assert statuses == [
        ("erp/D-1", "sent", 1),
        ("erp/D-2", "sent", 1),
        ("erp/D-3", "deferred", 1),
        ("erp/D-3", "sent", 2),
        ("erp/D-4", "sent", 1),
    ]


def test_an_edited_template_or_rule_is_used_by_the_next_micro_batch(
    ws: Workspace, served: Served, smtp_server: SMTPTestServer
) -> None:
    served.post(event("T-1"))
    assert served.wait("T-1")["status"] == "notified"
    templates.edit_template(ws, "granted", subject="Granted: {{ request }}")
    served.post(event("T-2"))
    assert served.wait("T-2")["status"] == "notified"
    subjects = [m.message["Subject"] for m in smtp_server.messages]
    assert subjects == ["Approved: T-1", "Granted: T-2"]
    with ws.store.connect() as con:
        versions = con.execute("SELECT template_version FROM send_log ORDER BY seq").fetchall()
    assert versions == [(1,), (2,)]
    workflows.pause_rule(ws, "applicant")
    served.post(event("T-3"))
    assert served.wait("T-3")["status"] == "no_match"
    assert len(smtp_server.messages) == 2


def test_a_post_right_after_a_micro_batch_does_not_wait_for_the_interval(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    setup_rules(ws, smtp_server)
    s = start(ws, worker=False)
    s.queue.interval = 60.0  # an idle worker sleeps this long unless a post wakes it
    s.queue.start()
    try:
        s.post(event("W-1"))
        assert s.wait("W-1", timeout=20)["status"] == "notified"
        s.post(event("W-2"))  # the worker just finished a micro-batch of one
        assert s.wait("W-2", timeout=20)["status"] == "notified"
    finally:
        s.srv.shutdown()
        s.srv.server_close()
        s.queue.stop()


def test_a_poison_event_costs_one_event_and_is_marked_error(
    ws: Workspace,
    smtp_server: SMTPTestServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An account whose CA bundle file was removed after it was set up makes its sends
    raise FileNotFoundError (not a SysmailError): before, the worker retried that
    micro-batch for ever and nothing behind it was notified."""
    monkeypatch.setattr(intake, "RETRY_FIRST", 0.1)
    setup_rules(ws, smtp_server)
    assert smtp_server.ca_path is not None
    ca = tmp_path / "moved-ca.pem"
    shutil.copy(smtp_server.ca_path, ca)
    bind(ws, smtp_server, "audit", kind="workflow_notification", ca_bundle=str(ca))
    workflows.add_rule(
        ws, "audit", flow_type="approval_flow", flow_name="audited", event="approved",
        recipients=["audit@example.com"], account="audit", template="granted",
    )  # fmt: skip
    ca.unlink()
    caplog.set_level(logging.INFO, logger="sysmail_ops.flows.intake")
    s = start(ws)
    try:
        status, _, data = s.post(event("G-1"), event("X-1", flow_name="audited"), event("G-2"))
        assert status == 202 and data["accepted"] == 3
        assert s.wait("G-1")["status"] == "notified"
        assert s.wait("G-2")["status"] == "notified"
        bad = s.wait("X-1")
        assert bad["status"] == "error"
        assert bad["error"].startswith("could not be processed: FileNotFoundError")
        assert "\n" not in bad["error"] and "Traceback" not in bad["error"]
        # the queue moves on: a later event goes out as usual
        s.post(event("G-3"))
        assert s.wait("G-3")["status"] == "notified"
        assert s.queue.pending == 0
    finally:
        s.srv.shutdown()
        s.srv.server_close()
        s.queue.stop()
    # each mail once: the failed micro-batch's sends were logged, not repeated (X-1's
    # applicant rule went out before its audit rule failed)
    assert delivered_to(smtp_server) == [f"p-{e}@example.com" for e in ("G-1", "G-2", "G-3", "X-1")]
    marked = [r for r in caplog.records if "marked error" in r.getMessage()]
    assert len(marked) == 1 and "X-1" in marked[0].getMessage()
    assert marked[0].levelno == logging.ERROR and marked[0].exc_info is None
    assert all(r.exc_info is None for r in caplog.records)


def test_the_worker_closes_an_idle_connection_and_opens_one_when_needed(
    ws: Workspace, served: Served, smtp_server: SMTPTestServer
) -> None:
    served.queue.idle_close = 0.0  # closed at the worker's next idle look (each 0.2 s)
    served.post(event("I-1"))
    assert served.wait("I-1")["status"] == "notified"
    sessions = served.queue._batcher._sessions
    deadline = time.monotonic() + 20
    while any(x.conn is not None and x.conn.is_open for x in list(sessions.values())):
        assert time.monotonic() < deadline, "the idle connection was not closed"
        time.sleep(0.05)
    served.post(event("I-2"))
    assert served.wait("I-2")["status"] == "notified"
    assert smtp_server.connections == 2
    assert delivered_to(smtp_server) == ["p-I-1@example.com", "p-I-2@example.com"]


def test_a_revoked_token_taken_from_memory_writes_nothing(
    ws: Workspace, served: Served, smtp_server: SMTPTestServer
) -> None:
    assert served.post(event("R-1"))[0] == 202  # the token is now remembered
    assert served.wait("R-1")["status"] == "notified"
    intake.revoke_source(ws, "erp")
    status, headers, _ = served.post(event("R-2"), "{bad line")
    assert status == 401 and "Bearer" in headers["WWW-Authenticate"]
    assert served.post("{only a bad line")[0] == 401  # nothing to record: checked all the same
    with ws.store.connect() as con:
        ids = [r[0] for r in con.execute("SELECT event_id FROM event_intake").fetchall()]
    assert ids == ["R-1"]
    time.sleep(0.3)  # a worker that had R-2 would mail it by now
    assert delivered_to(smtp_server) == ["p-R-1@example.com"]


def test_a_time_out_of_range_in_utc_is_its_own_bad_line(
    ws: Workspace, served: Served, smtp_server: SMTPTestServer
) -> None:
    """Such a line raised OverflowError while the post was read: the post got a 500."""
    status, _, data = served.post(
        event("O-1"), event("O-2", occurred_at="0001-01-01T00:00:00+14:00"), event("O-3")
    )
    assert status == 202 and (data["accepted"], data["refused"]) == (2, 1)
    assert "out of range" in data["events"][1]["error"]
    assert served.wait("O-3")["status"] == "notified"
    assert served.call("GET", "/events/O-2")[0] == 404


def test_a_session_archives_and_queues_for_retry_as_every_send_does(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    """Each micro-batch's journal holds log, archive and retry-queue lines: all folded."""
    from sysmail_ops.records import archive
    from sysmail_ops.sending import retry

    bind(ws, smtp_server, "service")  # customer service: sent archiving on
    templates.add_template(
        ws, "granted", object_type="approval", subject="Approved: {{ request }}",
        html="<p>{{ request }}</p>",
    )  # fmt: skip
    workflows.add_rule(
        ws, "applicant", flow_type="approval_flow", flow_name="*", event="approved",
        recipients=["field:applicant_email"], account="service", template="granted",
    )  # fmt: skip
    s = start(ws)
    try:
        s.post(event("A-1"))
        assert s.wait("A-1")["status"] == "notified"
        smtp_server.fail_data_times = 2  # both tries the intake makes within the batch
        s.post(event("A-2"))
        assert s.wait("A-2")["status"] == "deferred"
    finally:
        s.srv.shutdown()
        s.srv.server_close()
        s.queue.stop()
    archived = archive.list_archive(ws)
    assert list(archived["delivery_key"]) == ["event:erp/A-1:rule:applicant:p-A-1@example.com"]
    raw = archive.raw_message(ws, archived["id"][0])
    assert raw == smtp_server.messages[0].raw
    queued = retry.list_deferred(ws)
    assert [q["delivery_key"] for q in queued] == ["event:erp/A-2:rule:applicant:p-A-2@example.com"]


def test_what_another_process_did_while_the_store_was_let_go_is_seen_at_the_next_hold(
    ws: Workspace, served: Served, smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within a hold the worker keeps the queued rows and the configuration in memory (no
    other process can open the file); a hold that begins reads them again. Here another
    process edits the template and queues an event (as a second ``serve`` would) while
    the intake has let the file go: the next micro-batch sees both."""
    monkeypatch.setattr(intake, "IDLE_RELEASE", 0.2)
    served.post(event("H-1"))
    assert served.wait("H-1")["status"] == "notified"
    deadline = time.monotonic() + 20
    while served.queue._held is not None:  # let go after IDLE_RELEASE without traffic
        assert time.monotonic() < deadline, "the intake did not let the store go"
        time.sleep(0.05)
    cli = [sys.executable, "-m", "sysmail_ops", "--home", str(ws.home)]
    subprocess.run(
        [*cli, "templates", "edit", "granted", "--subject", "Granted: {{ request }}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    other = (
        "import sys, json; from sysmail_ops.config.workspace import Workspace; "
        "from sysmail_ops.flows import intake; "
        "intake.IntakeQueue(Workspace.open(sys.argv[1])).accept('erp', sys.argv[2].encode())"
    )
    body = json.dumps(event("H-2"))
    subprocess.run([sys.executable, "-c", other, str(ws.home), body], check=True, timeout=60)
    served.post(event("H-3"))  # a new hold: the worker reads the queue and the rules again
    assert served.wait("H-3")["status"] == "notified"
    assert served.wait("H-2")["status"] == "notified"
    subjects = sorted(str(m.message["Subject"]) for m in smtp_server.messages)
    assert subjects == ["Approved: H-1", "Granted: H-2", "Granted: H-3"]


def test_past_the_memory_budget_queued_bodies_are_read_from_the_store(
    ws: Workspace, smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue in memory keeps bodies up to QUEUE_MEMORY characters: a long queue of
    big events costs the store's disk, not the owner's memory."""
    monkeypatch.setattr(intake, "QUEUE_MEMORY", 800)
    setup_rules(ws, smtp_server)
    s = start(ws, worker=False)
    try:
        status, _, data = s.post(*[event(f"M-{n}") for n in range(6)])
        assert status == 202 and data["accepted"] == 6
        kept = [row[3] is not None for row in s.queue._queue.values()]
        assert kept[0] and not kept[-1] and s.queue._queue_bytes <= 800
        again = intake.IntakeQueue(ws)  # a restart reads the queue within the same budget
        assert [row[3] is not None for row in again._queue.values()] == kept
        s.queue.start()
        for n in range(6):
            assert s.wait(f"M-{n}")["status"] == "notified"
        assert s.queue.pending == 0 and s.queue._queue_bytes == 0
    finally:
        s.srv.shutdown()
        s.srv.server_close()
        s.queue.stop()
    assert delivered_to(smtp_server) == sorted(f"p-M-{n}@example.com" for n in range(6))
