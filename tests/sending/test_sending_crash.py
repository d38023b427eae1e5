"""Crash and concurrency: kill -9 a sending batch at random points; share the store meanwhile."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest
from smtp_testserver import SMTPTestServer

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.records import sendlog
from sysmail_ops.sending.worker import AUTO_THRESHOLD
from sysmail_ops.templates import catalog as templates

pytestmark = pytest.mark.slow

BATCH = textwrap.dedent(
    """
    import sys
    from sysmail_ops.sending.batch import SendOptions, send_batch
    from sysmail_ops.config.workspace import Workspace

    ws = Workspace.open(sys.argv[1])
    n = int(sys.argv[2])
    records = [{"email": f"u{i}@example.com", "id": i, "name": f"User {i}"} for i in range(n)]
    result = send_batch(ws, "service", "hello", records, key_column="id",
                        options=SendOptions(backoff=0.01, chunk=int(sys.argv[3]),
                                            per_connection=int(sys.argv[4])))
    print(result.summary(), flush=True)
    """
)


def start_batch(ws: Workspace, n: int, chunk: int = 50, per_connection: int = 1000):
    return subprocess.Popen(
        [sys.executable, "-c", BATCH, str(ws.home), str(n), str(chunk), str(per_connection)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def hello(ws: Workspace) -> templates.Template:
    return templates.add_template(
        ws, "hello", object_type="contact", subject="Hello {{ name }}", html="<p>Hi {{ name }}</p>"
    )


def test_killed_batches_rerun_to_exactly_one_logged_delivery_each(
    ws: Workspace, smtp_server: SMTPTestServer, service: object, hello: object
) -> None:
    # As long as one process sends alone (no compose worker), so that a batch is still
    # running when it is killed: a batch of 400 now starts and finishes within the window.
    n, kills = AUTO_THRESHOLD - 1, 0
    rng = random.Random(20261128)
    for _ in range(5):
        proc = start_batch(ws, n)
        time.sleep(rng.uniform(0.3, 1.2))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
    final = start_batch(ws, n)
    _, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    assert kills >= 3, "the batch finished too fast to be killed: raise n"

    got = Counter(rcpt for m in smtp_server.messages for rcpt in m.rcpt_tos)
    assert set(got) == {f"u{i}@example.com" for i in range(n)}, "every recipient has it"
    duplicates = sum(c - 1 for c in got.values())
    # at most the one message per open connection whose 250 was not yet journalled
    assert duplicates <= kills
    # and that copy carries the first one's Message-ID (keyed): one message each
    ids: dict[str, set[str]] = {}
    for m in smtp_server.messages:
        ids.setdefault(m.rcpt_tos[0], set()).add(str(m.message["Message-ID"]))
    several = {r: found for r, found in ids.items() if len(found) > 1}
    assert not several, f"{duplicates} copies; distinct messages to one recipient: {several}"

    log = sendlog.list_logs(ws, status="sent", limit=None)
    per_recipient = Counter(log.recipient)
    assert set(per_recipient.values()) == {1}, "the log has exactly one delivery per recipient"
    assert len(per_recipient) == n
    assert not list((ws.home / "journal").glob("*.jsonl")), "orphan journals were folded"


def test_a_long_batch_does_not_block_the_workspace(
    ws: Workspace, smtp_server: SMTPTestServer, service: object, hello: object
) -> None:
    proc = start_batch(ws, 1500, chunk=200)
    try:
        time.sleep(1.0)
        for i in range(3):
            t = templates.add_template(
                ws, f"note-{i}", object_type="case", subject="Note", html="<p>{{ text }}</p>"
            )
            assert t.version == 1
            assert proc.poll() is None, "the batch must still be running while we write"
    finally:
        out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert "1500 sent" in out
