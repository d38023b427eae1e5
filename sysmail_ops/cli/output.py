"""Printing for the CLI: aligned tables for people, JSON for scripts.

Text from outside (subjects, addresses, event ids, server replies, log rows)
may hold control characters that a terminal obeys instead of showing: ESC
sequences recolour or clear it, CR and backspace overwrite what was printed,
bidi overrides reorder it. ``print_table``, ``print_fields`` and ``warn`` show
them escaped (``\\x1b``, ``\\r``, ``\\u202e``), as does ``safe()`` for plain
prints; ``print_json`` leaves none raw either (JSON escapes).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


# What a terminal acts on rather than shows: C0 and C1 controls, DEL, the line and
# paragraph separators, bidi marks, overrides and isolates; lone surrogates (from
# undecodable bytes) cannot be printed at all.
_BIDI_AND_SEPARATORS = "\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI_AND_SEPARATORS}]")
# json.dumps escapes C0 itself; with ensure_ascii=False it leaves these raw.
_JSON_UNSAFE = re.compile(f"[\x7f-\x9f{_BIDI_AND_SEPARATORS}]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(m: re.Match[str]) -> str:
    c = m.group(0)
    n = ord(c)
    return _NAMED.get(c) or (f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}")


def safe_lines(text: str) -> str:
    """Several lines of text, each escaped as ``safe`` does: for summaries naming outside data."""
    return "\n".join(safe(line) for line in str(text).split("\n"))  # not splitlines: \r too


def safe(value: object) -> str:
    """``value`` as text a terminal shows as it is: control characters escaped, on one line."""
    if value is None:
        return ""
    return _UNSAFE.sub(_escape, str(value))


def _default(obj: Any) -> Any:
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    return str(obj)


def print_json(data: Any) -> None:
    text = json.dumps(data, indent=2, default=_default, ensure_ascii=False)
    write_out(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text) + "\n")


PIECE = 2048  # characters: at most 8 KiB of UTF-8, what stdout's buffer takes in one go


def write_out(text: str | bytes) -> None:
    """Write ``text`` (or bytes) to stdout in pieces that go through its buffer.

    One write larger than the buffer goes to the pipe directly, and when the reader
    closes the pipe part-way (``| head -1``) Python reports part of it written and
    drops the rest without an error; through the buffer, the next write raises
    ``BrokenPipeError``, which ``cli.main`` turns into a quiet exit (status 141).
    """
    out = sys.stdout.buffer if isinstance(text, bytes) else sys.stdout
    for start in range(0, len(text), PIECE):
        out.write(text[start : start + PIECE])  # type: ignore[arg-type]


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    return safe(value)


def print_table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
    body = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headers)]
    for row in [list(headers), *body]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def print_fields(pairs: Iterable[tuple[str, Any]]) -> None:
    items = list(pairs)
    width = max((len(k) for k, _ in items), default=0)
    for key, value in items:
        print(f"{key + ':':<{width + 1}} {cell(value)}")


def warn(message: str) -> None:
    print(f"hint: {safe(message)}", file=sys.stderr)


def frame_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as JSON-friendly dicts: lists for arrays, None for NA."""
    import numpy as np
    import pandas as pd

    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray | list | tuple):
            return [plain(v) for v in value]
        return None if pd.isna(value) else value

    return [{str(k): plain(v) for k, v in r.items()} for r in df.to_dict("records")]
