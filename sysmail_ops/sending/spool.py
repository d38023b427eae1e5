"""The deliveries of a checked batch, kept from the check to the send.

``send_batch`` renders every record before it sends any, so that a record that
cannot be rendered stops the batch before the first message goes out. Each
delivery is kept here with its rendered template (``Delivery.rendered``) and
sent from here: each record is rendered once, and the records file is read
once. The first ``KEEP_BYTES`` stay in memory; the rest go to an unnamed
temporary file in the workspace (nobody else's, gone when closed or when the
process ends), so memory does not grow with the batch.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sysmail_ops.sending.delivery import Delivery

KEEP_BYTES = 4 * 2**20  # rendered text kept in memory, at most; the rest in a file
PIECE = 500  # deliveries per pickle in the file
# What a delivery without its rendering counts for (its record, addresses, key): one a
# worker rendered and keeps (``worker.Kept``) still holds memory here.
RECORD_BYTES = 2048  # about what a small record and its Delivery take in Python


class Spool:
    """Deliveries in order, each with its rendered template; read back with ``iter``."""

    def __init__(self, folder: Path, keep_bytes: int | None = None):
        self.folder = folder
        self.keep_bytes = KEEP_BYTES if keep_bytes is None else keep_bytes
        self.size = 0  # characters of rendered text (and records) held in memory
        self.count = 0
        self._memory: list[Delivery] = []
        self._piece: list[Delivery] = []
        self._file: IO[bytes] | None = None

    @property
    def in_file(self) -> bool:
        return self._file is not None

    def add(self, d: Delivery) -> None:
        self.count += 1
        if self._file is None:
            self._memory.append(d)
            r = d.rendered
            self.size += RECORD_BYTES + (
                len(r.subject) + len(r.html) + len(r.text) if r is not None else 0
            )
            if self.size > self.keep_bytes:
                self._file = tempfile.TemporaryFile(dir=self.folder, prefix=".send-batch-")  # noqa: SIM115 - closed by close()
            return
        self._piece.append(d)
        if len(self._piece) >= PIECE:
            self._dump()

    def _dump(self) -> None:
        assert self._file is not None
        pickle.dump(self._piece, self._file, pickle.HIGHEST_PROTOCOL)
        self._piece = []

    def __iter__(self) -> Iterator[Delivery]:
        yield from self._memory
        if self._file is None:
            return
        if self._piece:
            self._dump()
        self._file.flush()
        self._file.seek(0)
        while True:
            try:
                piece: list[Delivery] = pickle.load(self._file)  # noqa: S301 - written just now
            except EOFError:
                return
            yield from piece

    def close(self) -> None:
        self._memory = []
        self._piece = []
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
