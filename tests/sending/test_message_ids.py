"""Keyed Message-IDs: a delivery with a key keeps its Message-ID in every process.

A send killed between the server's 250 and the journal line is sent again after the
restart; these tests check that the copy carries the Message-ID of the first, so the
receiver, the archive and the log can see it is one message, and that the id shows
nothing of the key, the account or the recipients.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from email import policy

import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.mail.headers import keyed_message_id
from sysmail_ops.records import archive, sendlog
from sysmail_ops.sending.batch import SendOptions, send_deliveries
from sysmail_ops.sending.delivery import Composer, Delivery, message_id_secret
from sysmail_ops.templates import catalog as templates

KEY = "approval:AP-7:applicant:eve@example.com"
# <32 hex digits@domain>: a dot-atom on each side (RFC 5322 msg-id), no display of data
KEYED = re.compile(r"<[0-9a-f]{32}@example\.com>")


@pytest.fixture
def note(ws: Workspace) -> templates.Template:
    return templates.add_template(
        ws, "note", object_type="case", subject="Note {{ n }}", html="<p>{{ n }}</p>"
    )


def composer(ws: Workspace, account: str = "service") -> Composer:
    return Composer(
        accounts.get_account(ws, account),
        templates.get_template(ws, "note"),
        id_secret=message_id_secret(ws),
    )


def mid(c: Composer, to: list[str], key: str | None = KEY, **extra: object) -> str:
    composed, _ = c.prepare(Delivery(to, {"n": 1}, key=key, **extra))  # type: ignore[arg-type]
    return composed.message_id


def test_a_keyed_message_id_is_the_same_in_another_process(
    ws: Workspace, smtp_server: SMTPTestServer, note: object
) -> None:
    bind(ws, smtp_server)
    here = mid(composer(ws), ["eve@example.com"])
    script = textwrap.dedent(
        """
        import sys
        from sysmail_ops.config import accounts
        from sysmail_ops.config.workspace import Workspace
        from sysmail_ops.sending.delivery import Composer, Delivery, message_id_secret
        from sysmail_ops.templates import catalog as templates

        ws = Workspace.open(sys.argv[1])
        c = Composer(accounts.get_account(ws, "service"), templates.get_template(ws, "note"),
                     id_secret=message_id_secret(ws))
        composed, _ = c.prepare(Delivery(["eve@example.com"], {"n": 2}, key=sys.argv[2]))
        print(composed.message_id)
        """
    )
    other = subprocess.run(
        [sys.executable, "-c", script, str(ws.home), KEY],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip
    assert other == here  # another process, another record and Date: the same message id
    assert KEYED.fullmatch(here), here


def test_a_keyed_message_id_differs_by_key_recipients_and_account(
    ws: Workspace, smtp_server: SMTPTestServer, note: object
) -> None:
    bind(ws, smtp_server)
    bind(ws, smtp_server, "other")
    c = composer(ws)
    base = mid(c, ["eve@example.com", "bob@example.com"])
    assert mid(c, ["eve@example.com", "bob@example.com"]) == base  # built again: the same
    assert mid(c, ["Bob@Example.com", "eve@example.com"]) == base  # order and case aside
    assert mid(c, ["eve@example.com"], cc=["bob@example.com"]) == base  # one message to both
    differing = {
        "another key": mid(c, ["eve@example.com", "bob@example.com"], key=KEY + "x"),
        "another recipient": mid(c, ["eve@example.com", "ann@example.com"]),
        "one recipient fewer": mid(c, ["eve@example.com"]),
        "a bcc more": mid(c, ["eve@example.com", "bob@example.com"], bcc=["ann@example.com"]),
        "another account": mid(composer(ws, "other"), ["eve@example.com", "bob@example.com"]),
    }
    assert base not in differing.values()
    assert len(set(differing.values())) == len(differing), differing


def test_a_keyed_message_id_is_well_formed_and_shows_no_data(
    ws: Workspace, smtp_server: SMTPTestServer, note: object
) -> None:
    bind(ws, smtp_server)
    key = "survey:Zürich-2026:eve.smith@example.com"
    value = mid(composer(ws), ["eve.smith@example.com"], key=key)
    assert KEYED.fullmatch(value), value
    header = policy.default.header_factory("Message-ID", value)
    assert not header.defects and str(header) == value
    local = value[1:].split("@")[0]
    for piece in ("survey", "Zürich", "2026", "eve", "smith", "service"):
        assert piece.lower() not in local.lower()
    # a keyed hash: without the workspace's key nobody recomputes it from a guessed key
    bare = Composer(accounts.get_account(ws, "service"), templates.get_template(ws, "note"))
    assert mid(bare, ["eve.smith@example.com"], key=key) != value


def test_another_workspace_gives_the_same_delivery_another_message_id(
    ws: Workspace, smtp_server: SMTPTestServer, note: object
) -> None:
    bind(ws, smtp_server)
    second, _ = Workspace.init(ws.home.parent / "second")
    bind(second, smtp_server)
    templates.add_template(
        second, "note", object_type="case", subject="Note {{ n }}", html="<p>{{ n }}</p>"
    )
    assert message_id_secret(second) != message_id_secret(ws)
    assert mid(composer(second), ["eve@example.com"]) != mid(composer(ws), ["eve@example.com"])


def test_without_a_key_each_build_gets_a_fresh_random_message_id(
    ws: Workspace, smtp_server: SMTPTestServer, note: object
) -> None:
    bind(ws, smtp_server)
    c = composer(ws)
    first, second = mid(c, ["eve@example.com"], key=None), mid(c, ["eve@example.com"], key=None)
    assert first != second
    assert re.fullmatch(r"<[0-9a-f]+\.[0-9a-f]{32}@example\.com>", first), first


def test_keyed_message_id_takes_plain_values() -> None:
    one = keyed_message_id(b"k" * 32, ["a@example.org", "b@example.org"], "example.com")
    assert one == keyed_message_id(b"k" * 32, ["B@example.org", "a@example.org"], "example.com")
    assert one != keyed_message_id(b"j" * 32, ["a@example.org", "b@example.org"], "example.com")
    assert one.endswith("@example.com>")


def test_a_send_made_again_after_its_log_row_was_lost_repeats_its_message_id(
    ws: Workspace, smtp_server: SMTPTestServer, note: object
) -> None:
    """What a SIGKILL between the server's 250 and the journal line leaves: the message
    delivered, its log row missing. Sending again mails it again (SMTP cannot help
    that), with the same Message-ID; the archive keeps it as one message."""
    bind(ws, smtp_server)
    fast = SendOptions(backoff=0.01, workers=0)
    deliveries = [Delivery([f"u{i}@example.com"], {"n": i}, key=f"k-{i}") for i in range(3)]
    assert send_deliveries(ws, "service", "note", deliveries, options=fast).counts == {"sent": 3}
    with ws.store.transaction() as con:  # the kill came before u1's reply was journalled
        con.execute("DELETE FROM send_log WHERE recipient = 'u1@example.com'")
    again = send_deliveries(ws, "service", "note", deliveries, options=fast)
    assert again.counts == {"sent": 1, "skipped_duplicate": 2}
    ids: dict[str, set[str]] = {}
    for m in smtp_server.messages:
        ids.setdefault(m.rcpt_tos[0], set()).add(str(m.message["Message-ID"]))
    assert len(smtp_server.messages) == 4  # u1 got two copies ...
    assert {r: len(s) for r, s in ids.items()} == dict.fromkeys(ids, 1)  # ... of one message
    log = sendlog.list_logs(ws, status="sent", limit=None)
    assert sorted(log.recipient) == [f"u{i}@example.com" for i in range(3)]
    assert set(log.message_id) == set().union(*ids.values())
    arch = archive.list_archive(ws)
    assert len(arch) == 3 and set(arch.message_id) == set(log.message_id)
