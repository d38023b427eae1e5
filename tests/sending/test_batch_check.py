"""send_batch renders every record before it sends any, and sends what it rendered."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import BadRecordsError, SMTPError
from sysmail_ops.records import sendlog
from sysmail_ops.sending import spool
from sysmail_ops.sending.batch import SendOptions, send_batch
from sysmail_ops.sending.delivery import Composer
from sysmail_ops.templates import catalog as templates


@pytest.fixture
def total(ws: Workspace, service: object) -> templates.Template:
    return templates.add_template(
        ws,
        "total",
        object_type="order",
        subject="Order {{ n }}",
        html="<p>{{ name }} pays {{ '%.2f'|format(amount * 2) }}</p>",
    )


def records(n: int, bad: set[int] = frozenset()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    return [
        {"email": f"p{i}@example.com", "n": i, "name": f"P{i}",
         "amount": "text" if i in bad else i + 0.5}
        for i in range(n)
    ]  # fmt: skip


def test_each_record_is_rendered_once(
    ws: Workspace,
    smtp_server: SMTPTestServer,
    total: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rendered: list[int] = []
    real = Composer.render

    def counted(self: Composer, d: Any) -> Any:
        rendered.append(d.record["n"])
        return real(self, d)

    monkeypatch.setattr(Composer, "render", counted)
    result = send_batch(ws, "service", "total", records(7), options=SendOptions(workers=0))
    assert result.counts == {"sent": 7}
    assert sorted(rendered) == list(range(7))
    bodies = [m.message.get_body(("html",)).get_content() for m in smtp_server.messages]  # type: ignore[union-attr]
    assert "P3 pays 7.00" in bodies[3]


@pytest.mark.parametrize("workers", [0, 1])
def test_a_record_that_fails_to_render_stops_the_batch_whoever_renders(
    ws: Workspace, smtp_server: SMTPTestServer, total: object, workers: int
) -> None:
    with pytest.raises(BadRecordsError) as info:
        send_batch(ws, "service", "total", records(120, bad={5, 77}),
                   options=SendOptions(workers=workers))  # fmt: skip
    assert info.value.bad == 2
    assert [p.split(":")[0] for p in info.value.problems] == ["record 6", "record 78"]
    assert "html: TypeError" in info.value.problems[0]
    assert smtp_server.messages == [] and sendlog.list_logs(ws, limit=None).empty


def test_a_long_batch_sent_from_the_spool_file_arrives_whole_and_in_order(
    ws: Workspace,
    smtp_server: SMTPTestServer,
    total: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(spool, "KEEP_BYTES", 2_000)  # past ~40 messages, the rest in a file
    result = send_batch(ws, "service", "total", records(300), key_column="n",
                        options=SendOptions(workers=1))  # fmt: skip
    assert result.counts == {"sent": 300}
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == [
        f"p{i}@example.com" for i in range(300)
    ]
    assert list(ws.home.glob(".send-batch-*")) == []


# --- the start-up done while the records are checked ---------------------------------------


@pytest.mark.parametrize("workers", [0, 1])
def test_the_connection_made_while_checking_is_the_one_the_batch_sends_on(
    ws: Workspace, smtp_server: SMTPTestServer, total: object, workers: int
) -> None:
    result = send_batch(ws, "service", "total", records(60), options=SendOptions(workers=workers))
    assert result.counts == {"sent": 60}
    assert smtp_server.connections == 1


def test_a_wrong_password_is_tried_once_and_stops_the_batch_as_before(
    ws: Workspace, smtp_server: SMTPTestServer, total: object
) -> None:
    bind(ws, smtp_server, "wrong", password="wrong")
    with pytest.raises(SMTPError, match=r"auth: login as .* rejected: 535"):
        send_batch(ws, "wrong", "total", records(30), options=SendOptions(backoff=0.01))
    assert smtp_server.connections == 1, "the refused login is not tried again"
    assert smtp_server.messages == [] and sendlog.list_logs(ws, limit=None).empty


def test_bad_records_and_a_wrong_password_report_the_records(
    ws: Workspace, smtp_server: SMTPTestServer, total: object
) -> None:
    bind(ws, smtp_server, "wrong", password="wrong")
    with pytest.raises(BadRecordsError) as info:
        send_batch(ws, "wrong", "total", records(30, bad={4}))
    assert info.value.bad == 1 and info.value.problems[0].startswith("record 5")
    assert smtp_server.messages == [] and sendlog.list_logs(ws, limit=None).empty
