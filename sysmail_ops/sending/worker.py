"""Render and compose a long batch in a second process while this one sends.

Sending is one thread (one connection, replies journalled in order), and
rendering plus composing is about a third of its work per message. On a
machine with two or more CPUs a long batch hands that third to a worker
process (threads would not help: they share one GIL). The worker only builds
bytes: it never touches the store, the journal or the server, so the
delivery guarantees do not change, and a worker that dies leaves its pieces
to this process. So does a piece the worker cannot take (a record that does
not pickle here, or does not unpickle there) or cannot build as this process
would (building raised something else than a ``SysmailError``): this process
builds that piece itself, raising what it raises, at the same delivery; the
worker goes on with the next one.

Order is kept: results come back in the order deliveries went in. At most
``ahead`` pieces are out at once, so memory stays flat however long the
batch. While the worker starts (a fresh interpreter takes ~0.5 s), this
process builds the first pieces itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any

from sysmail_ops.errors import SysmailError
from sysmail_ops.mail.mime import Composed
from sysmail_ops.sending.delivery import Composer, Delivery
from sysmail_ops.templates.catalog import Rendered

# What building one delivery gave: the message and its subject, or the error (bad input).
Built = tuple[Composed | None, str, SysmailError | None]
# What rendering one delivery gave (``send_batch``'s check): its parts, or the error.
Rendering = tuple[Rendered | None, SysmailError | None]

AUTO_THRESHOLD = 1000  # deliveries: below this a worker's start-up is not worth it
PIPE_BYTES = 2**20  # each pipe to a worker (Linux's default most a user may ask for)


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_workers(total: int | None) -> int:
    """One worker for a long batch on a machine with a CPU to spare, else none."""
    if total is None or total < AUTO_THRESHOLD or usable_cpus() < 2:
        return 0
    return 1


def build_one(composer: Composer, d: Delivery) -> Built:
    try:
        composed, subject = composer.prepare(d)
    except SysmailError as exc:
        return None, "", exc
    return composed, subject, None


def render_one(composer: Composer, d: Delivery) -> Rendering:
    try:
        return composer.render(d), None
    except SysmailError as exc:
        return None, exc


JOBS: dict[str, Callable[[Composer, Delivery], Any]] = {"build": build_one, "render": render_one}


class Kept:
    """The renderings a worker made in ``send_batch``'s check, until it composes them.

    The rendered text stays in the worker: the sender gets only whether each record
    rendered, and later sends the delivery with its number (``Delivery.kept``). The
    first ``keep_bytes`` characters stay in memory, the rest go to an unnamed temporary
    file, read back in order (composing goes in the order of rendering).
    """

    def __init__(self, keep_bytes: int = 4 * 2**20, piece: int = 200):
        self.keep_bytes, self.piece = keep_bytes, piece
        self.size = 0
        self._memory: dict[int, Rendered] = {}
        self._pending: list[tuple[int, Rendered]] = []
        self._file: IO[bytes] | None = None
        self._read = 0  # where the next piece is read from the file
        self._end = 0  # where the next piece is written to it

    def add(self, n: int, rendered: Rendered) -> None:
        if self._file is None and not self._pending and self.size <= self.keep_bytes:
            self._memory[n] = rendered
            self.size += len(rendered.subject) + len(rendered.html) + len(rendered.text)
            return
        self._pending.append((n, rendered))
        if len(self._pending) >= self.piece:
            self._dump()

    def _dump(self) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="sysmail-kept-")  # noqa: SIM115 - lives with the worker
        self._file.seek(self._end)
        pickle.dump(self._pending, self._file, pickle.HIGHEST_PROTOCOL)
        self._end = self._file.tell()
        self._pending = []

    def take(self, n: int) -> Rendered | None:
        """Rendering ``n``, given once; None if this process does not hold it."""
        found = self._memory.pop(n, None)
        if found is not None:
            self.size -= len(found.subject) + len(found.html) + len(found.text)
            return found
        while self._file is not None and self._read < self._end:
            self._file.seek(self._read)
            piece: list[tuple[int, Rendered]] = pickle.load(self._file)  # noqa: S301 - ours
            self._read = self._file.tell()
            self._memory.update(piece)  # read in order: what is asked next is here
            if n in self._memory:
                return self._memory.pop(n)
        for i, (m, rendered) in enumerate(self._pending):
            if m == n:
                del self._pending[i]
                return rendered
        return None

    def close(self) -> None:
        self._memory, self._pending = {}, []
        if self._file is not None:
            self._file.close()
            self._file = None


_KEPT = Kept()  # in a worker process: what its "keep" jobs rendered


def render_keep(composer: Composer, d: Delivery) -> Rendering:
    """Render in a worker and keep the result there (``Kept``); answer only whether it
    rendered. Without a number to keep it under, the rendering goes back."""
    rendered, error = render_one(composer, d)
    if rendered is None or d.kept is None:
        return rendered, error
    _KEPT.add(d.kept, rendered)
    return None, None


def build_kept(composer: Composer, d: Delivery) -> Built:
    """``build_one`` in a worker, from the rendering it kept for ``d``, if any."""
    if d.rendered is None and d.kept is not None:
        d.rendered = _KEPT.take(d.kept)
    return build_one(composer, d)


# What a worker process does for each job: the check's renderings stay there.
WORKER_JOBS: dict[str, Callable[[Composer, Delivery], Any]] = {
    "build": build_kept,
    "render": render_keep,
}


# -- the worker process ------------------------------------------------------------------
#
# The worker process (``main``) reads frames on stdin and answers each on stdout,
# in order: first the pickled Composer (answered b"ready"), then pieces (a job name,
# "build" or "render", and a list of deliveries, answered ("ok", their Built or Rendering
# results) or ("here", None): the sender does that piece itself, see ``_answer``). A
# frame is an 8-byte big-endian length and that many bytes. The worker ends when stdin
# does (its sender finished or died). Not ``multiprocessing``: its spawn start re-runs
# the caller's main script in the child.

_HEAD = struct.Struct(">Q")


def _read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(_HEAD.size)
    if len(head) < _HEAD.size:
        return None
    (size,) = _HEAD.unpack(head)
    data = stream.read(size)
    return data if len(data) == size else None


def _write_frame(stream: IO[bytes], data: bytes) -> None:
    stream.write(_HEAD.pack(len(data)) + data)
    stream.flush()


def _serve(inp: IO[bytes], out: IO[bytes]) -> None:
    first = _read_frame(inp)
    if first is None:
        return
    composer: Composer = pickle.loads(first)  # noqa: S301 - our own bytes, from the parent
    _write_frame(out, b"ready")
    # Pieces are read as they come, while the one before is being built: the sender
    # never waits on a full pipe (it has at most ``ahead`` pieces out, so this is bounded).
    frames: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def read_ahead() -> None:
        try:
            while (frame := _read_frame(inp)) is not None:
                frames.put(frame)
        finally:
            frames.put(None)

    threading.Thread(target=read_ahead, name="compose-read-ahead", daemon=True).start()
    while (frame := frames.get()) is not None:
        _write_frame(out, _answer(composer, frame))
    _KEPT.close()


_HERE = pickle.dumps(("here", None), pickle.HIGHEST_PROTOCOL)


def _answer(composer: Composer, frame: bytes) -> bytes:
    """One piece's Built results; or, if the sender would not get them alike, ``_HERE``.

    A piece that does not unpickle here (a record holding an object of a class this
    process cannot import), or whose building raised something else than a
    ``SysmailError`` (a field of the wrong type: the sender raises it, not a Built),
    goes back: the sender builds it, with what that gives there. The next piece is
    served as usual.
    """
    try:
        job: str
        deliveries: list[Delivery]
        job, deliveries = pickle.loads(frame)  # noqa: S301 - from the parent
        do = WORKER_JOBS[job]
        return pickle.dumps(("ok", [do(composer, d) for d in deliveries]), pickle.HIGHEST_PROTOCOL)
    except Exception:
        return _HERE


class _Worker:
    """One worker process, its pieces answered in the order they were sent."""

    def __init__(self, composer: Composer):
        here = str(Path(__file__).resolve().parents[2])  # the sysmail_ops the caller runs
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        for pipe in (self.proc.stdin, self.proc.stdout):
            # Room for a few pieces in each pipe (64 KiB by default: one piece with its
            # renderings fills it), so that handing a piece over seldom waits for the worker.
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)  # type: ignore[union-attr]
        self._waiting: deque[Future[list[Built] | None]] = deque()
        self._lock = threading.Lock()
        self.ready: Future[bytes] = Future()
        self._reader = threading.Thread(target=self._read, name="compose-reader", daemon=True)
        self._reader.start()
        try:
            self._send(pickle.dumps(composer, pickle.HIGHEST_PROTOCOL))
        except OSError:  # it died at once: ``ready`` fails, and the sender builds everything
            self.close()

    def submit(self, payload: bytes) -> Future[list[Built] | None]:
        """The piece's results; None: build it here (see ``_answer``)."""
        fut: Future[list[Built] | None] = Future()
        with self._lock:
            if self.proc.stdin is None or self.proc.stdin.closed:
                raise BrokenPipeError("the compose worker is gone")
            self._waiting.append(fut)
        self._send(payload)
        return fut

    def _send(self, payload: bytes) -> None:
        assert self.proc.stdin is not None
        _write_frame(self.proc.stdin, payload)  # the reader keeps the other pipe flowing

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            if _read_frame(self.proc.stdout) != b"ready":
                return
            self.ready.set_result(b"ready")
            while (frame := _read_frame(self.proc.stdout)) is not None:
                with self._lock:
                    fut = self._waiting.popleft()
                try:
                    kind, value = pickle.loads(frame)  # noqa: S301 - our worker's answer
                except Exception:  # it does not unpickle here: the piece is built here
                    kind, value = "here", None
                fut.set_result(value if kind == "ok" else None)
        finally:  # the worker ended: whatever it still owed is built by the sender
            gone = BrokenPipeError("the compose worker ended")
            if not self.ready.done():
                self.ready.set_exception(gone)
            with self._lock:
                while self._waiting:
                    self._waiting.popleft().set_exception(gone)
            self.proc.stdout.close()
            self.proc.wait()

    def close(self) -> None:
        """End the worker: it exits when its input does (not waited for: it takes ~0.1 s)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()


# -- the sender's side ---------------------------------------------------------------------


class _Piece:
    __slots__ = ("deliveries", "done", "future", "here", "job")

    def __init__(self, deliveries: list[Delivery], job: str, here: bool = False):
        self.deliveries = deliveries
        self.job = job
        self.future: Future[list[Any] | None] | None = None
        self.here = here  # to be done in this process (it does not pickle, or its turn)
        self.done: list[Any] | None = None  # its results, done here ahead of its turn


class ComposePool:
    """Builds deliveries in order, in ``workers`` processes or (with 0) in this one.

    ``renderings`` only renders them (``send_batch``'s check, before ``chunks`` composes
    and sends them with the same workers). A worker keeps what it rendered (``Kept``) and
    answers only whether each rendered: the text need not come back here and go out
    again to be composed. While this process waits for a worker's renderings it renders
    the last pieces no worker has taken yet (``_steal``): the check then uses both CPUs
    (the renderings made here go to the worker with their deliveries, to be composed).
    """

    def __init__(self, composer: Composer, workers: int = 0, *, piece: int = 50, ahead: int = 4):
        self.composer = composer
        self.piece = piece
        self.ahead = ahead * max(workers, 1)
        self._queue: deque[_Piece] = deque()  # read, not yet taken, in input order
        self._out = 0  # pieces handed to the workers and not yet taken
        self._turn = 0
        self.built_here = 0  # deliveries this process built (the rest: the workers)
        self._workers = [_Worker(composer) for _ in range(workers)]

    def chunks(
        self, chunks: Iterable[list[Delivery]]
    ) -> Iterator[tuple[list[Delivery], Iterator[Built], list[Delivery] | None]]:
        """Each chunk with its results (lazily) and the chunk after it (read ahead).

        Each chunk's results must be used up before the next chunk is asked for.
        """
        return self._chunks(chunks, "build")

    def renderings(
        self, chunks: Iterable[list[Delivery]]
    ) -> Iterator[tuple[list[Delivery], Iterator[Rendering], list[Delivery] | None]]:
        """As ``chunks``, with each delivery rendered only (``Rendering`` results)."""
        return self._chunks(chunks, "render")

    def _chunks(
        self, chunks: Iterable[list[Delivery]], job: str
    ) -> Iterator[tuple[list[Delivery], Iterator[Any], list[Delivery] | None]]:
        it = iter(chunks)
        current = next(it, None)
        if current is not None:
            self._enqueue(current, job)
        while current is not None:
            following = next(it, None)
            if following is not None:
                self._enqueue(following, job)  # so the workers run on across the chunk boundary
            yield current, self._results(len(current)), following
            current = following

    def close(self) -> None:
        workers, self._workers = self._workers, []
        for w in workers:
            w.close()

    # -- inside ------------------------------------------------------------------------------

    def _enqueue(self, chunk: list[Delivery], job: str) -> None:
        for i in range(0, len(chunk), self.piece):
            self._queue.append(_Piece(chunk[i : i + self.piece], job))

    def _results(self, count: int) -> Iterator[Any]:
        while count > 0:
            self._hand_out()
            if self._queue[0].job == "render":
                self._steal(self._queue[0].future)
            p = self._queue.popleft()
            count -= len(p.deliveries)
            yield from self._take(p)

    def _hand_out(self) -> None:
        """Give the workers the next pieces, once they are up, up to ``ahead`` at a time."""
        if not self._workers or not all(w.ready.done() for w in self._workers):
            return
        if any(w.ready.exception() for w in self._workers):  # one did not start
            self.close()
            return
        for p in self._queue:
            if self._out >= self.ahead:
                return
            if p.future is not None or p.here:
                continue
            try:
                payload = pickle.dumps((p.job, p.deliveries), pickle.HIGHEST_PROTOCOL)
            except Exception:
                p.here = True
                continue
            worker = self._workers[self._turn % len(self._workers)]
            try:
                p.future = worker.submit(payload)
            except OSError:  # the worker is gone: the rest is built here
                self.close()
                return
            self._turn += 1
            self._out += 1

    def _steal(self, waiting: Future[Any] | None) -> None:
        """While ``waiting`` is not answered, render here the last pieces no worker has.

        Only renderings: a piece composed here would have to render again what its
        worker keeps. A piece that raises (not a ``SysmailError``, which is a result) is
        left to its turn, so that what it raises comes in order.
        """
        if waiting is None:
            return
        for p in reversed(self._queue):
            if waiting.done() or p.future is not None or p.here:
                return
            p.here = True
            try:
                p.done = [render_one(self.composer, d) for d in p.deliveries]
            except Exception:
                p.done = None

    def _take(self, p: _Piece) -> Iterator[Any]:
        if p.done is not None:
            self.built_here += len(p.deliveries)
            yield from p.done
            return
        if p.future is not None:
            self._out -= 1
            try:
                built = p.future.result()
            except OSError:  # the worker died (killed, out of memory): carry on here
                self.close()
            else:
                if built is not None:
                    yield from built
                    return
        self.built_here += len(p.deliveries)
        do = JOBS[p.job]
        for d in p.deliveries:
            yield do(self.composer, d)

    def __enter__(self) -> ComposePool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


WORKER_CODE = "from sysmail_ops.sending.worker import main; main()"


def main() -> None:
    """The worker process: ``python -c WORKER_CODE``.

    Not ``python -m``: the ``sending`` package imports this module before runpy
    would run it again as ``__main__`` (a RuntimeWarning on every start).
    """
    # Ctrl-C reaches the whole process group: the sender decides, the worker ends with its input.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The frames get the real stdout; anything printed goes to stderr instead.
    with os.fdopen(os.dup(sys.stdout.fileno()), "wb") as frames:
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        _serve(sys.stdin.buffer, frames)
