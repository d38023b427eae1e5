"""DKIM through the whole pipeline: what the real server received and what was archived verify.

Verification is dkimpy's, offline: its ``dnsfunc`` answers with the TXT
records that ``accounts dkim`` says to publish.
"""

from __future__ import annotations

import dkim as dkimpy
import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer

from sysmail_ops.config import signing
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.records import archive
from sysmail_ops.sending.batch import SendOptions, send
from sysmail_ops.sending.delivery import Composer, Delivery
from sysmail_ops.sending.worker import ComposePool
from sysmail_ops.templates import catalog as templates

FAST = SendOptions(backoff=0.01)


def dns_for(ws: Workspace, account: str):  # type: ignore[no-untyped-def]
    records = {
        name.encode() + b".": value.encode() for name, value in signing.dkim_records(ws, account)
    }
    return lambda name, timeout=5: records.get(name)


def verifies(data: bytes, idx: int, dns: object) -> bool:
    try:
        return bool(dkimpy.DKIM(data).verify(idx=idx, dnsfunc=dns))
    except dkimpy.DKIMException:
        return False


@pytest.fixture
def note(ws: Workspace) -> templates.Template:
    return templates.add_template(
        ws,
        "note",
        object_type="case",
        subject="Case {{ case_id }} for {{ name }}",
        html="<p>Hello {{ name }}, case <b>{{ case_id }}</b> was updated.</p>",
    )


def test_sent_and_archived_bytes_carry_both_signatures_that_verify(
    ws: Workspace, smtp_server: SMTPTestServer, note: object
) -> None:
    bind(ws, smtp_server)  # customer service: sent archiving on
    signing.set_dkim(ws, "service", selector="mail2026")
    signing.set_dkim(ws, "service", selector="ed2026", algorithm="ed25519")
    dns = dns_for(ws, "service")
    result = send(
        ws, "service", "note", to="eve@example.org", cc=["bob@example.org"],
        record={"name": "Eve", "case_id": "C-1"},
        unsubscribe_url="https://example.com/u/eve", options=FAST,
    )  # fmt: skip
    assert result.counts == {"sent": 2}
    (got,) = smtp_server.messages
    assert got.raw.count(b"DKIM-Signature:") == 2
    assert verifies(got.raw, 0, dns) and verifies(got.raw, 1, dns)
    assert b"d=example.com" in got.raw and b"s=mail2026" in got.raw and b"s=ed2026" in got.raw
    header = got.message["DKIM-Signature"]
    assert "list-unsubscribe" in str(header).replace("\r\n", "").replace(" ", "")
    # the archived copy is the signed message, byte for byte what was sent
    arch = archive.list_archive(ws)
    raw = archive.raw_message(ws, arch.iloc[0].id)
    assert raw == got.raw
    # a body changed after signing fails
    tampered = got.raw.replace(b"was updated", b"was deleted")
    assert tampered != got.raw
    assert not verifies(tampered, 0, dns) and not verifies(tampered, 1, dns)


def test_the_compose_worker_signs_what_it_builds(
    ws: Workspace, smtp_server: SMTPTestServer, note: object
) -> None:
    account = bind(ws, smtp_server)
    account, _key = signing.set_dkim(ws, "service", selector="mail2026")
    keys = signing.dkim_keys(ws, account)
    composer = Composer(account, templates.get_template(ws, "note"), dkim_keys=keys)
    deliveries = [
        Delivery([f"u{i}@example.org"], {"name": f"U{i}", "case_id": str(i)}) for i in range(8)
    ]
    with ComposePool(composer, 1, piece=2) as pool:
        pool._workers[0].ready.result(30)  # the worker is up: it builds every piece
        built = [b for _chunk, results, _next in pool.chunks([deliveries]) for b in results]
        assert pool.built_here == 0
    dns = dns_for(ws, "service")
    assert len(built) == 8
    assert all(c is not None and verifies(c.data, 0, dns) for c, _subject, _error in built)


def test_dkim_off_sends_unsigned(ws: Workspace, smtp_server: SMTPTestServer, note: object) -> None:
    bind(ws, smtp_server)
    signing.set_dkim(ws, "service", selector="mail2026")
    account = signing.dkim_off(ws, "service")
    assert account.dkim_rsa_selector is None and account.dkim_domain is None
    assert signing.dkim_records(ws, "service") == []
    send(ws, "service", "note", to="e@example.org", record={"name": "E", "case_id": "1"})
    assert b"DKIM-Signature" not in smtp_server.messages[0].raw
