"""The pipeline against a real SMTP server: what it received, what the log and archive say."""

from __future__ import annotations

import json
from email import message_from_bytes, policy
from pathlib import Path

import pandas as pd
import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import SMTPError, SysmailError, ValidationError
from sysmail_ops.mail.smtp import SMTPConnection
from sysmail_ops.records import archive, sendlog
from sysmail_ops.sending import retry as deferred
from sysmail_ops.sending.batch import SendOptions, send, send_batch
from sysmail_ops.store.database import utcnow
from sysmail_ops.templates import catalog as templates

FAST = SendOptions(backoff=0.01)


@pytest.fixture(autouse=True, params=["sendmail", "pipelining"])
def smtp_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with smtplib's sendmail and with the pipelined client (RFC 2920).

    aiosmtpd does not advertise PIPELINING but reads pipelined commands in order.
    """
    forced = request.param == "pipelining"
    monkeypatch.setattr(SMTPConnection, "use_pipelining", property(lambda self: forced))
    return str(request.param)


RECORD = {"name": "Eve", "case_id": "C-1"}


@pytest.fixture
def case_template(ws: Workspace) -> templates.Template:
    return templates.add_template(
        ws,
        "case-update",
        object_type="case",
        subject="Case {{ case_id }} for {{ name }}",
        html="<p>Hello {{ name }}, case <b>{{ case_id }}</b> was updated.</p>",
        fields=["name", "case_id"],
    )


def log_rows(ws: Workspace) -> pd.DataFrame:
    return sendlog.list_logs(ws, limit=None).sort_values("id").reset_index(drop=True)


def test_send_delivers_logs_and_archives(
    ws: Workspace, smtp_server: SMTPTestServer, service: accounts.Account, case_template: object
) -> None:
    result = send(
        ws,
        "service",
        "case-update",
        to="eve@example.com",
        record=RECORD,
        related=("case", "C-1"),
        options=FAST,
    )
    assert result.counts == {"sent": 1}
    (got,) = smtp_server.messages
    assert got.rcpt_tos == ("eve@example.com",)
    assert str(got.message["Subject"]) == "Case C-1 for Eve"
    log = log_rows(ws)
    assert len(log) == 1
    row = log.iloc[0]
    assert (row.status, row.recipient, row.role, row.attempt) == (
        "sent",
        "eve@example.com",
        "to",
        1,
    )
    assert (row.template, row.template_version, row.use_case) == ("case-update", 1, "manual")
    assert (row.related_type, row.related_id) == ("case", "C-1")
    assert row.message_id == got.message["Message-ID"]
    arch = archive.list_archive(ws)
    assert len(arch) == 1 and arch.iloc[0].message_id == row.message_id
    raw = archive.raw_message(ws, arch.iloc[0].id)
    assert raw.replace(b"\r\n", b"\n").strip() == got.raw.replace(b"\r\n", b"\n").strip()
    assert list(archive.list_archive(ws, related="case:C-1").id) == [arch.iloc[0].id]


def test_archiving_off_logs_but_does_not_archive(
    ws: Workspace, smtp_server: SMTPTestServer, case_template: object
) -> None:
    bind(ws, smtp_server, "workflow", kind="workflow_notification")
    send(ws, "workflow", "case-update", to="eve@example.com", record=RECORD, options=FAST)
    assert len(smtp_server.messages) == 1
    assert list(log_rows(ws).status) == ["sent"]
    assert archive.list_archive(ws).empty


def test_a_delivered_key_is_skipped_and_a_keyless_send_is_not(
    ws: Workspace, smtp_server: SMTPTestServer, service: object, case_template: object
) -> None:
    for _ in range(2):
        send(
            ws,
            "service",
            "case-update",
            to="eve@example.com",
            record=RECORD,
            key="evt-1",
            options=FAST,
        )
    assert len(smtp_server.messages) == 1
    assert list(log_rows(ws).status) == ["sent", "skipped_duplicate"]
    for _ in range(2):
        send(ws, "service", "case-update", to="eve@example.com", record=RECORD, options=FAST)
    assert len(smtp_server.messages) == 3


def test_one_refused_recipient_of_three(
    ws: Workspace, smtp_server: SMTPTestServer, service: object, case_template: object
) -> None:
    smtp_server.reject_rcpt = {"gone@example.com": "550 5.1.1 no such user"}
    result = send(
        ws,
        "service",
        "case-update",
        to=["eve@example.com"],
        cc=["gone@example.com"],
        bcc=["boss@example.com"],
        record=RECORD,
        options=FAST,
    )
    assert result.counts == {"sent": 2, "failed": 1}
    (got,) = smtp_server.messages
    assert set(got.rcpt_tos) == {"eve@example.com", "boss@example.com"}
    assert got.message["Bcc"] is None and "boss@example.com" not in got.raw.decode()
    log = log_rows(ws).set_index("recipient")
    assert log.loc["gone@example.com"].status == "failed"
    assert log.loc["gone@example.com"].smtp_code == 550
    assert log.loc["gone@example.com"].smtp_phase == "rcpt"
    assert log.loc["boss@example.com"].role == "bcc"
    assert log["message_id"].nunique() == 1


def test_temporary_data_failures_are_retried_with_the_same_message_id(
    ws: Workspace, smtp_server: SMTPTestServer, service: object, case_template: object
) -> None:
    smtp_server.fail_data_times = 2
    result = send(ws, "service", "case-update", to="eve@example.com", record=RECORD, options=FAST)
    assert result.counts == {"sent": 1}
    assert len(smtp_server.messages) == 1
    log = log_rows(ws)
    assert list(log.status) == ["deferred", "deferred", "sent"]
    assert list(log.attempt) == [1, 2, 3]
    assert list(log.smtp_code) == [451, 451, 250]
    assert log.message_id.nunique() == 1
    assert log.message_id[0] == smtp_server.messages[0].message["Message-ID"]


def test_persistent_4xx_goes_to_the_queue_and_retry_deferred_delivers_once(
    ws: Workspace, smtp_server: SMTPTestServer, service: object, case_template: object
) -> None:
    smtp_server.fail_data_times = 100
    result = send(
        ws, "service", "case-update", to="eve@example.com", record=RECORD, key="k1", options=FAST
    )
    assert result.counts == {"deferred": 1}
    assert smtp_server.messages == []
    (queued,) = deferred.list_deferred(ws)
    assert queued["recipient"] == "eve@example.com" and queued["attempts"] == 3
    # a rerun of the same delivery does not send it while it waits in the queue
    send(ws, "service", "case-update", to="eve@example.com", record=RECORD, key="k1", options=FAST)
    assert smtp_server.messages == []
    # not due yet: nothing happens
    assert deferred.retry_deferred(ws).counts == {}
    smtp_server.fail_data_times = 0
    later = utcnow() + deferred.FIRST_RETRY * 2
    assert deferred.retry_deferred(ws, now=later).counts == {"sent": 1}
    assert deferred.retry_deferred(ws, now=later).counts == {}
    (got,) = smtp_server.messages
    assert got.message["Message-ID"] == queued["message_id"]
    assert deferred.list_deferred(ws) == []
    statuses = list(log_rows(ws).status)
    assert statuses == ["deferred"] * 3 + ["skipped_duplicate", "sent"]
    assert len(archive.list_archive(ws)) == 1


def test_queue_gives_up_after_its_lifetime(
    ws: Workspace, smtp_server: SMTPTestServer, service: object, case_template: object
) -> None:
    smtp_server.fail_data_times = 100
    send(ws, "service", "case-update", to="eve@example.com", record=RECORD, options=FAST)
    much_later = utcnow() + deferred.LIFETIME * 2
    result = deferred.retry_deferred(ws, now=much_later)
    assert result.counts == {"failed": 1}
    assert deferred.list_deferred(ws) == []
    last = log_rows(ws).iloc[-1]
    assert last.status == "failed" and "gave up after" in last.smtp_reply


def test_dropped_connection_mid_data_reconnects(
    ws: Workspace, smtp_server: SMTPTestServer, service: object, case_template: object
) -> None:
    smtp_server.drop_on_data = 1
    result = send(ws, "service", "case-update", to="eve@example.com", record=RECORD, options=FAST)
    assert result.counts == {"sent": 1}
    assert smtp_server.connections == 2
    assert list(log_rows(ws).status) == ["deferred", "sent"]


def test_421_on_connect_is_retried(
    ws: Workspace, smtp_server: SMTPTestServer, service: object, case_template: object
) -> None:
    smtp_server.reject_connect_with = "421 4.3.2 try later"
    smtp_server.reject_connect_times = 1
    result = send(ws, "service", "case-update", to="eve@example.com", record=RECORD, options=FAST)
    assert result.counts == {"sent": 1}


def test_server_down_defers_the_whole_batch_quickly(
    ws: Workspace, refused_port: int, case_template: object
) -> None:
    accounts.add_account(
        ws,
        "service",
        from_address="s@example.com",
        smtp_host="127.0.0.1",
        smtp_port=refused_port,
        smtp_security="none",
    )
    records = [{"email": f"u{i}@example.com", "id": i, **RECORD} for i in range(5)]
    result = send_batch(ws, "service", "case-update", records, key_column="id", options=FAST)
    assert result.counts == {"deferred": 5}
    assert len(deferred.list_deferred(ws)) == 5
    assert set(log_rows(ws).smtp_phase) == {"connect"}


def test_wrong_password_stops_with_a_clear_error(
    ws: Workspace, smtp_server: SMTPTestServer, case_template: object
) -> None:
    bind(ws, smtp_server, password="wrong")
    with pytest.raises(SMTPError, match=r"auth: login as .* rejected: 535"):
        send(ws, "service", "case-update", to="eve@example.com", record=RECORD, options=FAST)
    assert smtp_server.messages == []
    assert log_rows(ws).empty


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"record": {"name": "Eve"}}, "case_id"),
        ({"to": "not-an-address"}, "not valid"),
        ({"record": {**RECORD, "case_id": "1\r\nBcc: x@example.com"}}, "line break"),
        ({"record": {**RECORD, "name": "=?UTF-8?Q?=0A?= Bcc: x@example.com"}}, "line break"),
        ({"reply_to": "a@example.com\nBcc: x@example.com"}, "line break"),
        ({"cc": ["bad@"]}, "not valid"),
        ({"use_case": "spam"}, "unknown use case"),
    ],
)
def test_bad_input_sends_nothing_and_writes_nothing(
    ws: Workspace,
    smtp_server: SMTPTestServer,
    service: object,
    case_template: object,
    kwargs: dict[str, object],
    message: str,
) -> None:
    args: dict[str, object] = {"to": "eve@example.com", "record": RECORD, "options": FAST, **kwargs}
    with pytest.raises(SysmailError, match=message):
        send(ws, "service", "case-update", **args)  # type: ignore[arg-type]
    assert smtp_server.messages == []
    assert log_rows(ws).empty
    assert not list((ws.home / "journal").glob("*.jsonl"))


def test_unknown_account_or_template(ws: Workspace, service: object, case_template: object) -> None:
    with pytest.raises(SysmailError, match="no system email named 'nope'"):
        send(ws, "nope", "case-update", to="eve@example.com", record=RECORD)
    with pytest.raises(SysmailError, match="nope"):
        send(ws, "service", "nope", to="eve@example.com", record=RECORD)


def test_dry_run_writes_previews_and_sends_nothing(
    ws: Workspace, smtp_server: SMTPTestServer, service: object, case_template: object
) -> None:
    result = send(
        ws,
        "service",
        "case-update",
        to="eve@example.com",
        record=RECORD,
        options=SendOptions(dry_run=True),
    )
    assert result.counts == {"dry_run": 1}
    assert smtp_server.messages == []
    assert result.preview_dir
    (eml,) = Path(result.preview_dir).glob("*.eml")
    parsed = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert str(parsed["Subject"]) == "Case C-1 for Eve"
    assert archive.list_archive(ws).empty


def test_batch_from_csv_and_rerun_delivers_nothing_twice(
    ws: Workspace,
    smtp_server: SMTPTestServer,
    service: object,
    case_template: object,
    tmp_path: Path,
) -> None:
    path = tmp_path / "contacts.csv"
    pd.DataFrame(
        {
            "email": [f"u{i}@example.com" for i in range(12)],
            "id": range(12),
            "name": [f"User {i}" for i in range(12)],
            "case_id": [f"C-{i}" for i in range(12)],
        }
    ).to_csv(path, index=False)
    opts = SendOptions(backoff=0.01, chunk=5, per_connection=4)
    first = send_batch(ws, "service", "case-update", path, key_column="id", options=opts)
    assert first.counts == {"sent": 12}
    assert smtp_server.connections == 3
    again = send_batch(ws, "service", "case-update", path, key_column="id", options=opts)
    assert again.counts == {"skipped_duplicate": 12}
    assert len(smtp_server.messages) == 12
    subjects = sorted(str(m.message["Subject"]) for m in smtp_server.messages)
    assert subjects[0] == "Case C-0 for User 0"


def test_batch_with_a_bad_record_sends_nothing(
    ws: Workspace,
    smtp_server: SMTPTestServer,
    service: object,
    case_template: object,
    tmp_path: Path,
) -> None:
    path = tmp_path / "contacts.jsonl"
    rows = [
        {"email": "a@example.com", "id": 1, **RECORD},
        {"email": "oops", "id": 2, **RECORD},
        {"email": "c@example.com", "id": 3, "name": "no case"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(ValidationError) as info:
        send_batch(ws, "service", "case-update", path, key_column="id", options=FAST)
    assert "record 2 (line 2): email 'oops' is not valid" in str(info.value)
    assert "record 3 (line 3): case_id: missing (the template uses it)" in str(info.value)
    assert smtp_server.messages == [] and log_rows(ws).empty


def test_marketing_mail_carries_list_unsubscribe(
    ws: Workspace, smtp_server: SMTPTestServer, case_template: object
) -> None:
    bind(
        ws,
        smtp_server,
        "news",
        kind="marketing",
        unsubscribe_mailto="unsub@example.com",
        unsubscribe_url="https://example.com/u",
    )
    send(ws, "news", "case-update", to="eve@example.com", record=RECORD, options=FAST)
    (got,) = smtp_server.messages
    # The same order as a personal link: the one-click https link first, then the mailto.
    assert got.message["List-Unsubscribe"] == (
        "<https://example.com/u>, <mailto:unsub@example.com?subject=unsubscribe>"
    )
    assert got.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_log_summary_and_prune(
    ws: Workspace, smtp_server: SMTPTestServer, service: object, case_template: object
) -> None:
    send(ws, "service", "case-update", to="eve@example.com", record=RECORD, options=FAST)
    summary = sendlog.summary(ws)
    assert summary.to_dict("records") == [
        {"account": "service", "status": "sent", "last_24h": 1, "last_7d": 1}
    ]
    assert sendlog.summary_rows(ws) == [("service", "sent", 1, 1)]  # the CLI's, no pandas
    assert sendlog.prune(ws, utcnow() + deferred.LIFETIME) == 1
    assert log_rows(ws).empty
    assert archive.prune(ws, utcnow() + deferred.LIFETIME) == 1
    assert archive.list_archive(ws).empty


def test_rate_limit_spaces_messages(
    ws: Workspace, smtp_server: SMTPTestServer, case_template: object
) -> None:
    bind(ws, smtp_server, rate_limit_per_minute=600)  # one message per 0.1 s
    records = [{"email": f"u{i}@example.com", "id": i, **RECORD} for i in range(4)]
    send_batch(ws, "service", "case-update", records, key_column="id", options=FAST)
    sent = log_rows(ws).sent_at.sort_values().reset_index(drop=True)
    gaps = list(sent.diff().dropna().dt.total_seconds())
    # pacing spaces the starts; the first send also paid for opening the connection
    assert all(g >= 0.08 for g in gaps[1:]), gaps


def test_international_address_uses_smtputf8(
    ws: Workspace, smtp_server: SMTPTestServer, service: object, case_template: object
) -> None:
    result = send(ws, "service", "case-update", to="jörg@bücher.example", record=RECORD,
                  options=FAST)  # fmt: skip
    assert result.counts == {"sent": 1}
    (got,) = smtp_server.messages
    assert got.rcpt_tos == ("jörg@xn--bcher-kva.example",)


def test_international_address_without_smtputf8_fails_clearly(
    ws: Workspace,
    smtp_server: SMTPTestServer,
    service: object,
    case_template: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # aiosmtpd always offers SMTPUTF8 here; a server without it is simulated.
    monkeypatch.setattr(SMTPConnection, "supports_smtputf8", property(lambda self: False))
    result = send(ws, "service", "case-update", to="jörg@example.com", record=RECORD,
                  options=FAST)  # fmt: skip
    assert result.counts == {"failed": 1}
    assert smtp_server.messages == []
    assert "SMTPUTF8" in log_rows(ws).iloc[0].smtp_reply


def test_a_key_repeated_within_a_batch_is_sent_once(
    ws: Workspace, smtp_server: SMTPTestServer, service: object, case_template: object
) -> None:
    # the repeats fall in the same chunk and in a later one
    records = [{"email": "eve@example.com", "id": i % 3, **RECORD} for i in range(7)]
    opts = SendOptions(backoff=0.01, chunk=2)
    result = send_batch(ws, "service", "case-update", records, key_column="id", options=opts)
    assert result.counts == {"sent": 3, "skipped_duplicate": 4}
    assert len(smtp_server.messages) == 3


@pytest.mark.parametrize("fault", ["drop_on_data", "fail_data_times", "421_at_data", "reject_rcpt"])
def test_a_fault_mid_batch_touches_only_its_own_message(
    ws: Workspace, smtp_server: SMTPTestServer, service: object, case_template: object, fault: str
) -> None:
    # Pipelined, the next message's MAIL/RCPT/DATA is already on the wire behind the faulty
    # message's data: it must still go out once, as its own first attempt.
    records = [{"email": f"u{i}@example.com", "id": i, **RECORD} for i in range(5)]
    if fault == "reject_rcpt":
        smtp_server.reject_rcpt = {"u0@example.com": "550 5.1.1 no such user"}
    elif fault == "421_at_data":  # the client must hang up and reconnect
        smtp_server.fail_data_times, smtp_server.fail_data_reply = 1, "421 4.3.2 closing"
    else:
        setattr(smtp_server, fault, 1)
    result = send_batch(ws, "service", "case-update", records, key_column="id", options=FAST)
    log = log_rows(ws)
    others = log[log.recipient != "u0@example.com"]
    assert list(others.status) == ["sent"] * 4 and set(others.attempt) == {1}
    first = log[log.recipient == "u0@example.com"]
    if fault == "reject_rcpt":
        assert result.counts == {"sent": 4, "failed": 1}
        assert list(first.status) == ["failed"] and list(first.smtp_phase) == ["rcpt"]
    else:
        assert result.counts == {"sent": 5}
        assert list(first.status) == ["deferred", "sent"] and list(first.attempt) == [1, 2]
    got = sorted(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert got == sorted(set(log[log.status == "sent"].recipient))
    assert len(got) == len(set(got)), "nobody got it twice"
    assert smtp_server.connections == (2 if fault in ("drop_on_data", "421_at_data") else 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"per_connection": 0},
        {"chunk": -1},
        {"max_attempts": 1.5},
        {"timeout": 0},
        {"backoff": -1},
        {"workers": -1},
    ],
)
def test_send_options_out_of_range_are_refused_up_front(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="SendOptions"):
        SendOptions(**kwargs)  # type: ignore[arg-type]
