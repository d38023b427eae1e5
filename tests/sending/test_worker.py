"""The compose worker: messages built in a second process come back in order, as built here.

Every test runs the real worker (``python -c WORKER_CODE``) and
compares what it built with what ``build_one`` builds in this process: the
message parsed back with ``email.policy.default``, or the error (same type,
same message).
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from smtp_testserver import SMTPTestServer

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import HeaderInjectionError, TemplateError, ValidationError
from sysmail_ops.records import archive, sendlog
from sysmail_ops.sending import worker as worker_module
from sysmail_ops.sending.batch import SendOptions, send_batch, send_deliveries
from sysmail_ops.sending.delivery import Composer, Delivery
from sysmail_ops.sending.worker import Built, ComposePool, build_one
from sysmail_ops.templates import catalog as templates

READY_WAIT = 30.0  # seconds: a fresh interpreter takes ~0.3 s, a loaded CI box much longer
SIZES = (40, 13, 1, 29)  # chunk sizes, cycled: pieces of 7 split them unevenly


@pytest.fixture
def note(ws: Workspace) -> templates.Template:
    return templates.add_template(
        ws,
        "note",
        object_type="contact",
        subject="Hello {{ name }} #{{ n }}",
        html="<p>Grüße {{ name }},</p><p>{{ body }}</p>",
        fields=["name", "n", "body"],
    )


@pytest.fixture
def composer(service: accounts.Account, note: templates.Template) -> Composer:
    return Composer(service, note)


@pytest.fixture
def pool_factory() -> Iterator[Callable[..., ComposePool]]:
    """ComposePool, closed at the end of the test whatever happens."""
    made: list[ComposePool] = []

    def make(composer: Composer, workers: int = 1, **kw: Any) -> ComposePool:
        pool = ComposePool(composer, workers, **kw)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        for w in pool._workers:
            w.proc.kill()
        pool.close()


def delivery(i: int, **record: Any) -> Delivery:
    rec = {"name": f"User {i}", "n": i, "body": f"Line one of {i}.\nZeile zwei: é {i}"}
    rec.update(record)
    return Delivery([f"u{i}@example.com"], rec, key=f"k{i}")


def split(items: Sequence[Delivery], sizes: Sequence[int] = SIZES) -> list[list[Delivery]]:
    chunks, i, n = [], 0, 0
    while i < len(items):
        size = sizes[n % len(sizes)]
        chunks.append(list(items[i : i + size]))
        i, n = i + size, n + 1
    return chunks


def run_pool(
    pool: ComposePool,
    chunks: list[list[Delivery]],
    after_chunk: Callable[[int], None] = lambda n: None,
) -> list[Built]:
    """Every result, in the order ``chunks`` yields them; checks the chunk and its follower."""
    out: list[Built] = []
    for n, (chunk, results, following) in enumerate(pool.chunks(iter(chunks))):
        assert chunk is chunks[n]
        assert following is (chunks[n + 1] if n + 1 < len(chunks) else None)
        got = list(results)
        assert len(got) == len(chunk), f"chunk {n} gave {len(got)} results for {len(chunk)}"
        out.extend(got)
        after_chunk(n)
    return out


def parsed(data: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


def normalized(data: bytes) -> bytes:
    """The wire bytes less what differs per build: Date, Message-ID, multipart boundaries."""
    data = re.sub(rb"(?m)^(Date|Message-ID): [^\r\n]*\r\n", rb"\1: -\r\n", data)
    return re.sub(rb"=_[0-9a-f]{24}", b"=_boundary", data)


def assert_same(composer: Composer, deliveries: Sequence[Delivery], got: list[Built]) -> None:
    """``got`` holds, in order, what this process builds for each delivery."""
    assert len(got) == len(deliveries)
    for n, (d, (composed, subject, error)) in enumerate(zip(deliveries, got, strict=True)):
        want_c, want_subject, want_error = build_one(composer, d)
        if want_error is not None:
            assert composed is None, f"delivery {n} should have failed"
            assert type(error) is type(want_error), (n, error, want_error)
            assert error is not None and error.args == want_error.args
            assert str(error) == str(want_error)
            continue
        assert error is None, f"delivery {n}: {error}"
        assert composed is not None and want_c is not None
        assert subject == want_subject
        assert composed.recipients == want_c.recipients == [(d.to[0], "to")]
        assert composed.envelope_from == want_c.envelope_from
        assert normalized(composed.data) == normalized(want_c.data), f"delivery {n}"


def assert_plain(got: list[Built], numbers: Sequence[int]) -> None:
    """Each result is the good message of its number (parsed back: every 5th, and the last)."""
    assert len(got) == len(numbers)
    for k, ((composed, subject, error), i) in enumerate(zip(got, numbers, strict=True)):
        assert error is None and composed is not None, (i, error)
        assert composed.recipients == [(f"u{i}@example.com", "to")]
        assert subject == f"Hello User {i} #{i}"
        if k % 5 and k != len(got) - 1:
            continue
        msg = parsed(composed.data)
        assert str(msg["To"]) == f"u{i}@example.com"
        assert str(msg["Subject"]) == subject
        text, html = msg.get_body(("plain",)), msg.get_body(("html",))
        assert text is not None and html is not None
        plain = text.get_content()
        assert f"Grüße User {i}," in plain and f"Line one of {i}." in plain
        assert f"Zeile zwei: é {i}" in plain
        assert f"<p>Grüße User {i},</p>" in html.get_content()


# --- order and equality ---------------------------------------------------------------------


def test_a_ready_worker_builds_the_batch_in_order(
    composer: Composer, pool_factory: Callable[..., ComposePool]
) -> None:
    items = [delivery(i) for i in range(320)]
    pool = pool_factory(composer, 1, piece=7)
    assert pool._workers[0].ready.result(timeout=READY_WAIT) == b"ready"
    got = run_pool(pool, split(items))
    assert pool.built_here == 0, "every piece went to the ready worker"
    assert_plain(got, range(320))
    assert_same(composer, items, got)


def test_pieces_built_here_while_the_worker_starts_keep_their_order(
    composer: Composer, pool_factory: Callable[..., ComposePool]
) -> None:
    items = [delivery(i) for i in range(320)]
    pool = pool_factory(composer, 1, piece=7)
    ready = pool._workers[0].ready

    def halfway(n: int) -> None:
        if n == 2:  # the first chunks were built here; the rest goes to the worker
            ready.result(timeout=READY_WAIT)

    got = run_pool(pool, split(items), halfway)
    assert 0 < pool.built_here < len(items), pool.built_here
    assert_plain(got, range(320))
    assert_same(composer, items, got)


def test_bad_deliveries_come_back_as_the_same_errors_in_their_place(
    composer: Composer, pool_factory: Callable[..., ComposePool]
) -> None:
    items = [delivery(i) for i in range(120)]
    bad: dict[int, type[Exception]] = {}

    def spoil(i: int, d: Delivery, expected: type[Exception]) -> None:
        items[i] = d
        bad[i] = expected

    spoil(3, Delivery(["u3@example.com"], {"name": "x", "n": 3}), TemplateError)  # no body
    spoil(20, delivery(20, name="Eve\r\nBcc: evil@example.com"), TemplateError)  # subject
    spoil(
        41,
        Delivery(["u41@example.com"], delivery(41).record, headers={"X-Tag": "a\r\nBcc: x@y.z"}),
        HeaderInjectionError,
    )
    spoil(42, Delivery(["not an address"], delivery(42).record), ValidationError)
    spoil(
        43,
        Delivery(["u43@example.com"], delivery(43).record, reply_to="a@b.c\r\nBcc: x@y.z"),
        HeaderInjectionError,
    )
    spoil(119, Delivery(["u119@@example.com"], delivery(119).record), ValidationError)

    pool = pool_factory(composer, 1, piece=7)
    pool._workers[0].ready.result(timeout=READY_WAIT)
    got = run_pool(pool, split(items))
    assert pool.built_here == 0
    for i, expected in bad.items():
        composed, _subject, error = got[i]
        assert composed is None and type(error) is expected, (i, error)
    assert_plain(
        [got[i] for i in range(120) if i not in bad], [i for i in range(120) if i not in bad]
    )
    assert_same(composer, items, got)


@pytest.mark.parametrize("unpicklable", ["lock", "lambda"])
def test_a_record_that_does_not_pickle_is_built_here_in_order(
    composer: Composer, pool_factory: Callable[..., ComposePool], unpicklable: str
) -> None:
    items = [delivery(i) for i in range(100)]
    extra: Any = threading.Lock() if unpicklable == "lock" else (lambda: "never rendered")
    items[50] = delivery(50, unused=extra)  # the template never reads it
    pool = pool_factory(composer, 1, piece=7)
    pool._workers[0].ready.result(timeout=READY_WAIT)
    chunks = split(items, [40])  # delivery 50 is in the piece 49..55 of the second chunk
    got = run_pool(pool, chunks)
    assert pool.built_here == 7, "only the piece holding it was built here"
    assert_plain(got, range(100))
    assert pool._workers, "the worker is still in use"


class _Opaque:
    """A record value the worker cannot unpickle: this module is not importable there."""

    def __str__(self) -> str:
        return "opaque"


def test_a_record_the_worker_cannot_unpickle_is_built_here_with_its_piece_only(
    composer: Composer, pool_factory: Callable[..., ComposePool]
) -> None:
    items = [delivery(i) for i in range(100)]
    items[30] = delivery(30, unused=_Opaque())  # in the piece 28..34 of the first chunk
    items[60] = delivery(60, unused=_Opaque())  # in the piece 54..60 of the second
    pool = pool_factory(composer, 1, piece=7)
    worker = pool._workers[0]
    worker.ready.result(timeout=READY_WAIT)
    got = run_pool(pool, split(items, [40]))
    assert_plain(got, range(100))
    assert pool.built_here == 14, "only the two pieces holding them were built here"
    assert pool._workers == [worker] and worker.proc.poll() is None, "the worker serves on"


def test_an_answer_that_does_not_unpickle_here_is_built_here_not_waited_for(
    composer: Composer, pool_factory: Callable[..., ComposePool], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(data: bytes) -> Any:
        raise pickle.UnpicklingError("not here")

    items = [delivery(i) for i in range(30)]
    pool = pool_factory(composer, 1, piece=7)
    pool._workers[0].ready.result(timeout=READY_WAIT)
    # the reader thread unpickles every answer with this module's ``pickle``
    monkeypatch.setattr(
        worker_module,
        "pickle",
        SimpleNamespace(dumps=pickle.dumps, loads=refuse, HIGHEST_PROTOCOL=pickle.HIGHEST_PROTOCOL),
    )
    got: list[Built] = []
    runner = threading.Thread(target=lambda: got.extend(run_pool(pool, [items])), daemon=True)
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive(), "the sender waits for an answer that never comes"
    assert_plain(got, range(30))
    assert pool.built_here == 30


@pytest.mark.parametrize(
    ("field", "value", "raised"),
    [("reply_to", 3, TypeError), ("headers", [("X-Tag", "a")], AttributeError)],
)
def test_a_field_of_the_wrong_type_raises_alike_with_or_without_a_worker(
    composer: Composer,
    pool_factory: Callable[..., ComposePool],
    field: str,
    value: Any,
    raised: type[Exception],
) -> None:
    items = [delivery(i) for i in range(40)]
    items[24] = Delivery(["u24@example.com"], delivery(24).record, **{field: value})

    def outcome(workers: int) -> tuple[list[Built], BaseException]:
        pool = pool_factory(composer, workers, piece=7)
        if workers:
            pool._workers[0].ready.result(timeout=READY_WAIT)
        got: list[Built] = []
        with pytest.raises(raised) as caught:
            for _chunk, results, _following in pool.chunks(iter(split(items, [40]))):
                for item in results:
                    got.append(item)
        return got, caught.value

    here, here_error = outcome(0)
    there, there_error = outcome(1)
    assert type(there_error) is type(here_error) is raised
    assert str(there_error) == str(here_error)
    assert len(there) == len(here) == 24, "raised at the same delivery"
    assert_plain(there, range(24))


def test_a_worker_killed_mid_batch_leaves_the_rest_to_this_process(
    composer: Composer, pool_factory: Callable[..., ComposePool]
) -> None:
    items = [delivery(i) for i in range(330)]
    pool = pool_factory(composer, 1, piece=7)
    worker = pool._workers[0]
    worker.ready.result(timeout=READY_WAIT)

    def kill(n: int) -> None:
        if n == 1:
            assert pool.built_here == 0
            worker.proc.kill()
            worker.proc.wait(timeout=10)

    got = run_pool(pool, split(items), kill)
    assert_plain(got, range(330))  # nothing lost, nothing repeated, in order
    assert 0 < pool.built_here <= len(items) - 40 - 13
    assert not pool._workers, "the pool let the dead worker go"


def test_a_worker_that_dies_while_starting_leaves_everything_to_this_process(
    composer: Composer, pool_factory: Callable[..., ComposePool]
) -> None:
    items = [delivery(i) for i in range(60)]
    pool = pool_factory(composer, 1, piece=7)
    worker = pool._workers[0]
    worker.proc.kill()
    with pytest.raises(BrokenPipeError):
        worker.ready.result(timeout=READY_WAIT)
    got = run_pool(pool, split(items))
    assert pool.built_here == len(items)
    assert_plain(got, range(60))


# --- processes: the parent's death, a script without a main guard ----------------------------

ORPHAN = textwrap.dedent(
    """
    import sys, time
    from sysmail_ops.config import accounts
    from sysmail_ops.templates import catalog as templates
    from sysmail_ops.sending.worker import ComposePool
    from sysmail_ops.sending.delivery import Composer
    from sysmail_ops.config.workspace import Workspace

    ws = Workspace.open(sys.argv[1])
    c = Composer(accounts.get_account(ws, "service"), templates.get_template(ws, "note"))
    pool = ComposePool(c, 1)
    worker = pool._workers[0]
    worker.ready.result(timeout=60)
    print(worker.proc.pid, flush=True)
    time.sleep(120)
    """
)


def _alive(pid: int) -> bool:
    """Running (a zombie is dead: it only waits for whoever adopted it to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_parent_killed_with_sigkill_leaves_no_worker_behind(
    ws: Workspace, service: object, note: object
) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(ws.home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"no worker pid from the parent: {line!r}"
        pid = int(line)
        assert _alive(pid), "the worker runs while its parent does"
        time.sleep(0.2)
        assert _alive(pid) and parent.poll() is None
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):  # clean up before failing
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"worker {pid} outlived its SIGKILLed parent by 10 s")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


NO_GUARD = textwrap.dedent(
    """
    # A user's script: no ``if __name__ == "__main__":`` guard.
    import sys
    from sysmail_ops.sending.batch import SendOptions, send_batch
    from sysmail_ops.config.workspace import Workspace

    with open(sys.argv[2], "a") as fh:
        fh.write("ran\\n")
    ws = Workspace.open(sys.argv[1])
    records = [{"email": f"u{i}@example.com", "id": i, "name": f"User {i}", "n": i,
                "body": "b"} for i in range(int(sys.argv[3]))]
    result = send_batch(ws, "service", "note", records, key_column="id",
                        options=SendOptions(backoff=0.01, chunk=100, workers=1))
    print(result.summary(), flush=True)
    """
)


@pytest.mark.slow
def test_a_script_without_a_main_guard_runs_once(
    ws: Workspace, smtp_server: SMTPTestServer, service: object, note: object, tmp_path: Path
) -> None:
    script, runs, n = tmp_path / "user_script.py", tmp_path / "runs.txt", 200
    script.write_text(NO_GUARD)
    proc = subprocess.run(
        [sys.executable, str(script), str(ws.home), str(runs), str(n)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert runs.read_text() == "ran\n", "the script ran once, not once more per worker"
    assert f"{n} sent" in proc.stdout
    got = Counter(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert got == Counter(f"u{i}@example.com" for i in range(n))


# --- through send_batch and send_deliveries -------------------------------------------------


@pytest.mark.slow
def test_a_long_batch_with_a_worker_sends_each_message_once_as_archived(
    ws: Workspace, smtp_server: SMTPTestServer, service: object, note: object
) -> None:
    n = 1200
    body = ".a line starting with a dot\nFrom the start of a line\n" + "é" * 30
    records = [
        {"email": f"u{i}@example.com", "id": i, "name": f"User {i}", "n": i, "body": body}
        for i in range(n)
    ]
    opts = SendOptions(backoff=0.01, chunk=250, workers=1, per_connection=500)
    result = send_batch(ws, "service", "note", records, key_column="id", options=opts)
    assert result.counts == {"sent": n}, result.errors

    want = {f"u{i}@example.com" for i in range(n)}
    got = Counter(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert set(got) == want and set(got.values()) == {1}
    log = sendlog.list_logs(ws, limit=None)
    assert list(log.status.unique()) == ["sent"]
    assert Counter(log.recipient) == Counter(want)
    arch = archive.list_archive(ws, limit=None)
    assert len(arch) == n and set(arch.message_id) == set(log.message_id)

    by_mid = {str(m.message["Message-ID"]): m for m in smtp_server.messages}
    assert len(by_mid) == n
    for _, row in arch.iloc[:: n // 40].iterrows():
        received = by_mid[row.message_id]
        assert archive.raw_message(ws, row.id) == received.raw, row.message_id
        i = int(row.delivery_key)
        assert received.rcpt_tos == (f"u{i}@example.com",)
        assert str(received.message["Subject"]) == f"Hello User {i} #{i}"


@pytest.mark.parametrize("workers", [0, 1])
def test_a_key_repeated_across_chunks_is_sent_once(
    ws: Workspace, smtp_server: SMTPTestServer, service: object, note: object, workers: int
) -> None:
    chunk, n = 6, 30
    ids = list(range(n))
    for pos in (chunk + 1, 3 * chunk):  # the next chunk, and two chunks later
        ids[pos] = 0
    records = [
        {"email": "eve@example.com", "id": k, "name": "Eve", "n": pos, "body": "b"}
        for pos, k in enumerate(ids)
    ]
    opts = SendOptions(backoff=0.01, chunk=chunk, workers=workers)
    result = send_batch(ws, "service", "note", records, key_column="id", options=opts)
    assert result.counts == {"sent": n - 2, "skipped_duplicate": 2}
    assert len(smtp_server.messages) == n - 2
    log = sendlog.list_logs(ws, limit=None).sort_values("seq")
    zero = log[log.delivery_key == "0"]
    assert list(zero.status) == ["sent", "skipped_duplicate", "skipped_duplicate"]
    subjects = [str(m.message["Subject"]) for m in smtp_server.messages]
    assert subjects.count("Hello Eve #0") == 1
    assert "Hello Eve #7" not in subjects and "Hello Eve #18" not in subjects


@pytest.mark.parametrize("workers", [0, 1])
def test_send_deliveries_refuses_a_bad_delivery_alike_with_or_without_a_worker(
    ws: Workspace, smtp_server: SMTPTestServer, composer: Composer, workers: int
) -> None:
    # long enough that, with a worker, the bad one is built there: this process builds
    # ~8,000 a second while the worker starts (~0.3 s)
    n = 6000
    items = [delivery(i) for i in range(n)]
    items[n - 10] = delivery(n - 10, name="Eve\nBcc: evil@example.com")
    items[n - 5] = Delivery(["nobody"], delivery(n - 5).record)  # only the first is raised
    opts = SendOptions(backoff=0.01, workers=workers)
    with pytest.raises(TemplateError, match="line break") as caught:
        send_deliveries(ws, "service", "note", items, options=opts)
    in_process = build_one(composer, items[n - 10])[2]
    assert type(caught.value) is type(in_process) and str(caught.value) == str(in_process)
    assert smtp_server.messages == []
    assert sendlog.list_logs(ws, limit=None).empty


def test_the_worker_starts_and_ends_silently() -> None:
    """Nothing on stderr: a long batch's worker would otherwise print a warning each time."""
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", worker_module.WORKER_CODE],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, b"")


# --- the check's renderings: this process renders the tail while it waits -----------------


def rendered_alike(composer: Composer, items: Sequence[Delivery], got: list[Any]) -> None:
    """``got`` holds, in order, what ``render_one`` gives here for each delivery."""
    assert len(got) == len(items)
    for n, (d, (rendered, error)) in enumerate(zip(items, got, strict=True)):
        want, want_error = worker_module.render_one(composer, d)
        assert (type(error), str(error)) == (type(want_error), str(want_error)), n
        if rendered is not None:  # None: the worker keeps it (Delivery.kept)
            assert rendered == want, n


def test_while_waiting_for_a_worker_this_process_renders_the_last_pieces_in_order(
    composer: Composer, pool_factory: Callable[..., ComposePool]
) -> None:
    items = [delivery(i) for i in range(60)]
    items[45] = Delivery(["u45@example.com"], {"name": "x", "n": 45})  # no body: an error
    pool = pool_factory(composer, 1, piece=7, ahead=2)
    pool._workers[0].ready.result(timeout=READY_WAIT)
    pool._enqueue(items, "render")  # 9 pieces; the worker is handed the first 2
    pool._hand_out()
    assert [p.future is not None for p in pool._queue] == [True] * 2 + [False] * 7
    pool._steal(Future())  # a worker's answer that has not come: 7 pieces are done here
    assert all(p.here and p.done is not None for p in list(pool._queue)[2:])
    got = list(pool._results(len(items)))
    assert pool.built_here == 60 - 14
    rendered_alike(composer, items, got)
    assert got[45][1] is not None and got[44][1] is None


def test_the_check_renders_every_record_alike_with_a_worker_stealing_or_not(
    composer: Composer, pool_factory: Callable[..., ComposePool]
) -> None:
    items = [delivery(i) for i in range(400)]
    pool = pool_factory(composer, 1, piece=7)
    pool._workers[0].ready.result(timeout=READY_WAIT)
    got = [r for _c, results, _f in pool.renderings(iter(split(items))) for r in results]
    rendered_alike(composer, items, got)
