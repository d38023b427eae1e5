"""``POST /events`` and ``GET /events/<id>`` on a real ``serve``, a real store and aiosmtpd."""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer

from sysmail_ops import flows as workflows
from sysmail_ops.config import directory
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import NotFoundError, ValidationError
from sysmail_ops.flows import intake
from sysmail_ops.templates import catalog as templates
from sysmail_ops.web import server as web


def setup_rules(ws: Workspace, smtp: SMTPTestServer) -> None:
    """Two rules per approval: the applicant, and finance when the amount is over 1,000."""
    bind(ws, smtp, "workflow", kind="workflow_notification")
    templates.add_template(
        ws,
        "granted",
        object_type="approval",
        subject="Approved: {{ request }}",
        html="<p>{{ request }} ({{ amount }} EUR).</p>",
    )
    directory.add_entry(ws, "finance", "Fay", "fay@example.com")
    common = {"flow_type": "approval_flow", "flow_name": "*", "event": "approved"}
    common |= {"account": "workflow", "template": "granted"}
    workflows.add_rule(ws, "applicant", recipients=["field:applicant_email"], **common)
    workflows.add_rule(
        ws, "finance", recipients=["role:finance"], condition="amount > 1000", **common
    )


def event(eid: str, amount: int = 10, **kw: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "id": eid,
        "flow_type": "approval_flow",
        "flow_name": "travel",
        "event": "approved",
        "object_type": "approval",
        "object_id": f"AP-{eid}",
        "record": {"applicant_email": f"p-{eid}@example.com", "request": eid, "amount": amount},
    }
    ev.update(kw)
    return ev


class Served:
    def __init__(self, srv: web.SurveyServer, queue: intake.IntakeQueue, token: str):
        self.srv, self.queue, self.token = srv, queue, token

    def call(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        token: str | None = "",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        parts = urlsplit(self.srv.url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=20)
        head = dict(headers or {})
        use = self.token if token == "" else token
        if use is not None:
            head["Authorization"] = f"Bearer {use}"
        try:
            conn.request(method, path, body, head)
            resp = conn.getresponse()
            raw = resp.read()
            data = json.loads(raw) if raw else None
            return resp.status, dict(resp.getheaders()), data
        finally:
            conn.close()

    def post(self, *events: dict[str, Any] | str, token: str | None = "") -> Any:
        lines = [e if isinstance(e, str) else json.dumps(e) for e in events]
        return self.call("POST", "/events", "\n".join(lines), token)

    def wait(self, eid: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status, _, data = self.call("GET", f"/events/{eid}")
            assert status == 200, data
            if data["status"] != "queued" or time.monotonic() > deadline:
                return data  # type: ignore[no-any-return]
            time.sleep(0.05)


def start(ws: Workspace, *, limit: int = intake.QUEUE_LIMIT, worker: bool = True) -> Served:
    queue = intake.IntakeQueue(ws, limit=limit)
    srv = web.make_server(ws, "127.0.0.1", 0, intake=queue)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    if worker:
        queue.start()
    return Served(srv, queue, intake.add_source(ws, "erp"))


@pytest.fixture
def served(ws: Workspace, smtp_server: SMTPTestServer) -> Iterator[Served]:
    setup_rules(ws, smtp_server)
    s = start(ws)
    yield s
    s.srv.shutdown()
    s.srv.server_close()
    s.queue.stop()


def intake_rows(ws: Workspace) -> int:
    with ws.store.connect() as con:
        return int(con.execute("SELECT count(*) FROM event_intake").fetchone()[0])  # type: ignore[index]


def test_one_event_is_accepted_durably_then_notified_and_a_redelivery_is_not_mailed(
    ws: Workspace, served: Served, smtp_server: SMTPTestServer
) -> None:
    status, headers, data = served.post(event("E-1", amount=1500))
    assert status == 202 and headers["Content-Type"] == "application/json"
    assert data["id"] == "E-1" and data["status"] == "queued" and data["accepted"] == 1
    assert data["status_url"].endswith("/events/E-1")
    assert headers["X-Content-Type-Options"] == "nosniff"
    done = served.wait("E-1")
    assert done["status"] == "notified"
    assert sorted((s["rule"], s["recipient"], s["status"]) for s in done["sends"]) == [
        ("applicant", "p-E-1@example.com", "sent"),
        ("finance", "fay@example.com", "sent"),
    ]
    assert len(smtp_server.messages) == 2
    status, _, again = served.post(event("E-1", amount=1500))
    assert status == 200 and again["redelivered"] is True and again["status"] == "notified"
    time.sleep(0.5)  # a worker that mailed it again would have done so by now
    assert len(smtp_server.messages) == 2
    assert intake_rows(ws) == 1
    # the pipeline saw the event's id scoped to its source, and logged each send once
    with ws.store.connect() as con:
        keys = [r[0] for r in con.execute("SELECT delivery_key FROM send_log").fetchall()]
    assert sorted(keys) == [
        "event:erp/E-1:rule:applicant:p-E-1@example.com",
        "event:erp/E-1:rule:finance:fay@example.com",
    ]


def test_a_group_with_a_known_id_records_the_new_ones_once(
    ws: Workspace, smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Posts committed together, one of them redelivering a recorded id: the group's
    plain INSERT fails on it and the group goes in again skipping known ids."""
    setup_rules(ws, smtp_server)
    queue = intake.IntakeQueue(ws)
    token = intake.add_source(ws, "erp")
    queue.accept("erp", json.dumps(event("K-1")).encode(), token=token)

    def post(*events: dict[str, Any]) -> intake.Post:
        answers, fresh = intake.parse_post("\n".join(json.dumps(e) for e in events).encode())
        assert len(fresh) == len(answers)
        return intake.Post("erp", fresh, intake.token_hash(token))

    inserts: list[bool] = []
    insert = intake._insert

    def spy(*args: Any, skip_known: bool) -> Any:
        inserts.append(skip_known)
        return insert(*args, skip_known=skip_known)

    monkeypatch.setattr(intake, "_insert", spy)
    posts = [post(event("K-2")), post(event("K-3"), event("K-1")), post(event("K-2"))]
    assert queue.commit_posts(posts) == [None, None, None]
    assert inserts == [False, True]  # a plain INSERT, then again skipping known ids
    answers = [(got.id, got.status, got.redelivered) for p in posts for got, _ in p.fresh]
    assert answers == [
        ("K-2", "queued", False),
        ("K-3", "queued", False),
        ("K-1", "queued", True),
        ("K-2", "queued", True),  # the same group's first line of it is the new one
    ]
    assert intake_rows(ws) == 3 and queue.pending == 3
    queue.start()
    try:
        deadline = time.monotonic() + 20
        while queue.pending and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        queue.stop()
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        "p-K-1@example.com", "p-K-2@example.com", "p-K-3@example.com",
    ]  # fmt: skip


def test_json_lines_with_bad_lines_accept_the_good_ones(
    ws: Workspace, served: Served, smtp_server: SMTPTestServer
) -> None:
    status, _, data = served.post(
        event("L-1"), "{not json", json.dumps({"id": "L-2", "flow_type": "approval_flow"}),
        event("L-3"), "[1, 2]",
    )  # fmt: skip
    assert status == 202
    assert (data["accepted"], data["refused"]) == (2, 3)
    by_line = {e["line"]: e for e in data["events"]}
    assert by_line[1]["status"] == "queued" and by_line[4]["id"] == "L-3"
    assert "JSON" in by_line[2]["error"] or "json" in by_line[2]["error"].lower()
    assert "missing" in by_line[3]["error"] and by_line[3]["id"] == "L-2"
    assert "object" in by_line[5]["error"]
    assert served.wait("L-1")["status"] == "notified"
    assert served.wait("L-3")["status"] == "notified"
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        "p-L-1@example.com",
        "p-L-3@example.com",
    ]
    status, _, _ = served.call("GET", "/events/L-2")
    assert status == 404
    status, _, data = served.post("{bad")
    assert status == 400 and data["accepted"] == 0 and data["refused"] == 1


def test_a_pretty_printed_event_is_one_event(served: Served) -> None:
    status, _, data = served.call("POST", "/events", json.dumps(event("P-1"), indent=2))
    assert status == 202 and data["id"] == "P-1"


@pytest.mark.parametrize(
    "token", [None, "wrong", "Bearer", "x" * 43], ids=["missing", "wrong", "empty", "shaped"]
)
def test_a_wrong_or_missing_token_is_401_and_writes_nothing(
    ws: Workspace, served: Served, smtp_server: SMTPTestServer, token: str | None
) -> None:
    status, headers, data = served.post(event("A-1"), token=token)
    assert status == 401 and "Bearer" in headers["WWW-Authenticate"]
    assert "token" in data["error"]
    status, _, _ = served.call("GET", "/events/A-1", token=token)
    assert status == 401
    time.sleep(0.3)
    assert intake_rows(ws) == 0 and smtp_server.messages == []


def test_a_revoked_token_stops_working_and_sources_do_not_see_each_others_events(
    ws: Workspace, served: Served
) -> None:
    other = intake.add_source(ws, "crm")
    assert served.post(event("S-1"))[0] == 202
    # the same id from another source is another event
    assert served.call("POST", "/events", json.dumps(event("S-1")), other)[0] == 202
    assert served.call("GET", "/events/S-1", token=other)[0] == 200
    intake.revoke_source(ws, "crm")
    assert served.call("GET", "/events/S-1", token=other)[0] == 401
    assert served.call("POST", "/events", json.dumps(event("S-2")), other)[0] == 401
    assert [(s.name, s.active) for s in intake.list_sources(ws)] == [("crm", False), ("erp", True)]


def test_status_reports_no_rule_and_errors(ws: Workspace, served: Served) -> None:
    served.post(event("N-1", event="rejected"), event("X-1", record={"request": "r", "amount": 5}))
    assert served.wait("N-1")["status"] == "no_match"
    bad = served.wait("X-1")
    assert bad["status"] == "error" and "applicant_email" in bad["error"]
    assert served.call("GET", "/events/never")[0] == 404


def test_past_the_queue_bound_the_answer_is_429_with_retry_after_and_nothing_written(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    setup_rules(ws, smtp_server)
    s = start(ws, limit=3, worker=False)  # nothing drains the queue
    try:
        assert s.post(event("B-1"), event("B-2"))[0] == 202
        status, headers, data = s.post(event("B-3"), event("B-4"))
        assert status == 429 and headers["Retry-After"] == web.RETRY_FULL
        assert "queued" in data["error"]
        assert intake_rows(ws) == 2
        assert s.post(event("B-3"))[0] == 202  # one more fits
        assert s.post(event("B-5"))[0] == 429  # full: refused before any store visit
        s.queue.start()
        assert s.wait("B-3")["status"] == "notified"
        assert s.post(event("B-1"))[0] == 200  # drained: a redelivery is answered
        assert s.post(event("B-5"))[0] == 202
        assert s.wait("B-5")["status"] == "notified"
        assert len(smtp_server.messages) == 4
    finally:
        s.srv.shutdown()
        s.srv.server_close()
        s.queue.stop()


def test_the_store_busy_is_503_with_retry_after(
    ws: Workspace, served: Served, tmp_path: Any
) -> None:
    import subprocess
    import sys

    served.queue.stop()  # lets the file go: another process may take it
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(ws.store.path)!r}); "
         "print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        ws.store.lock_wait = 0.2
        status, headers, data = served.post(event("Q-1"))
        assert status == 503 and headers["Retry-After"] == web.RETRY_BUSY
        assert "busy" in data["error"]
    finally:
        holder.kill()
        holder.communicate()
    ws.store.lock_wait = 30
    assert intake_rows(ws) == 0


def test_bodies_over_the_limit_and_bad_methods_are_refused(
    ws: Workspace, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web, "MAX_EVENTS_BODY", 1000)
    status, _, data = served.post(*(event(f"Z-{n}") for n in range(10)))
    assert status == 413 and "bytes" in data["error"]
    assert served.call("GET", "/events")[0] == 405
    assert served.call("POST", "/events/Z-1", "{}")[0] == 405
    status, _, _ = served.call("POST", "/events", json.dumps(event("Y" * 151)))
    assert status == 400
    assert intake_rows(ws) == 0


def test_the_token_is_never_stored_or_logged_in_clear(
    ws: Workspace, served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    served.post(event("T-1"))
    served.wait("T-1")
    served.call("GET", f"/events/{served.token}")  # a token pasted in the path: redacted
    with ws.store.connect() as con:
        rows = con.execute("SELECT * FROM event_sources").fetchall()
    assert served.token not in repr(rows)
    assert len(rows[0][1]) == 64  # the SHA-256, hex
    assert served.token not in caplog.text
    assert served.token.encode() not in ws.store.path.read_bytes()


def test_sources_are_named_once_and_revoked_once(ws: Workspace) -> None:
    token = intake.add_source(ws, "erp")
    assert len(token) >= 43
    with pytest.raises(ValidationError, match="exists"):
        intake.add_source(ws, "erp")
    with pytest.raises(ValidationError, match="source name"):
        intake.add_source(ws, "Bad Name")
    intake.revoke_source(ws, "erp")
    with pytest.raises(ValidationError, match="already revoked"):
        intake.revoke_source(ws, "erp")
    with pytest.raises(NotFoundError):
        intake.revoke_source(ws, "nope")
    assert intake.add_source(ws, "erp") != token  # a revoked name may come back, new token
