"""Reading input from outside: batch records, JSON text and line streams, each under a cap.

Records come as a DataFrame, mappings, or a CSV / JSONL / JSON file, streamed.
Whatever a file holds (bytes that are not UTF-8, JSON nested thousands deep, a
number of ten thousand digits, no end at all like ``/dev/zero``), the answer is
a one-line ``ValidationError`` naming the file, the line and the cap hit: no
file is read past its cap, and nothing else ever comes out.
"""

from __future__ import annotations

import csv
import json
import math
import os
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sysmail_ops.errors import ValidationError

if TYPE_CHECKING:
    import pandas as pd

MiB = 1024 * 1024
MAX_RECORDS_BYTES = 200 * MiB  # a CSV or JSONL records file, streamed (a batch reads it twice)
MAX_JSON_RECORDS_BYTES = 50 * MiB  # a .json records file, parsed whole: use JSONL for more
MAX_LINE_BYTES = 1 * MiB  # one CSV or JSONL line
MAX_DOCUMENT_BYTES = 1 * MiB  # one JSON record given as a file (``send --record``)
MAX_JSON_DEPTH = 64  # lists and objects inside each other; real records use two or three


class OverCapError(ValidationError):
    """Input went past its size cap (``cap``, in bytes)."""

    def __init__(self, message: str, cap: int = 0):
        super().__init__(message, cap)
        self.cap = cap

    def __str__(self) -> str:
        return str(self.args[0])


def size_text(n: int) -> str:
    """A cap as people say it: ``200 MiB``, ``64 KiB``, ``100 bytes``."""
    for unit, factor in (("GiB", 1024**3), ("MiB", MiB), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n:,} bytes"


# --- JSON ------------------------------------------------------------------------------------


def parse_json(text: str | bytes) -> Any:
    """JSON text as Python values; ``ValidationError('not valid JSON: ...')`` for anything else.

    Nesting deeper than ``MAX_JSON_DEPTH`` and integers past Python's digit
    limit are refused like a syntax error, never a RecursionError or ValueError;
    so is text with a lone surrogate (``"\\ud800"``).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise ValidationError(
            f"not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels"
        ) from None
    except UnicodeDecodeError:
        raise ValidationError("not UTF-8 text") from None
    except ValueError:  # int("9" * 5000) is past sys.get_int_max_str_digits()
        raise ValidationError(
            f"not valid JSON: a number has more than {sys.get_int_max_str_digits()} digits"
        ) from None
    check_json_value(data)
    return data


def check_json_value(value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse lists and mappings nested deeper than ``limit``, and text that is not Unicode.

    JSON's ``\\ud800`` escapes make a lone surrogate, which no mail, file or
    database can hold. The walk needs no recursion, whatever the depth.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
            continue
        if isinstance(item, dict):
            for key in item:
                if isinstance(key, str):
                    _check_text(key)
            children: Iterable[Any] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth >= limit:
            raise ValidationError(f"not valid JSON: nested deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children)


def _check_text(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError(
                f"not valid JSON: {text[exc.start]!r} (a lone surrogate) is not a character"
            ) from None


# --- files and streams under a cap ---------------------------------------------------------


def open_input(path: str | os.PathLike[str], what: str, cap: int) -> IO[bytes]:
    """A file opened to read bytes; a regular file over ``cap`` is refused before any read.

    A stream (a pipe, ``/dev/zero``) has no size to look at: its reader counts
    what it reads and stops at the cap.
    """
    p = Path(path)
    try:
        fh = p.open("rb")
    except FileNotFoundError:
        raise ValidationError(f"cannot read {what} {p}: it does not exist") from None
    except OSError as exc:
        raise ValidationError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    except ValueError:  # a NUL byte in the name
        raise ValidationError(f"{what} {str(p)!r} is not a file name") from None
    try:
        info = os.fstat(fh.fileno())
        if stat.S_ISREG(info.st_mode) and info.st_size > cap:
            raise OverCapError(f"{what} {p} is larger than {size_text(cap)}", cap)
    except BaseException:
        fh.close()
        raise
    return fh


def read_capped(path: str | os.PathLike[str], what: str, cap: int) -> bytes:
    """The bytes of a file of at most ``cap`` bytes; never reads more than ``cap + 1``."""
    with open_input(path, what, cap) as fh:
        try:
            data = fh.read(cap + 1)
        except OSError as exc:
            raise ValidationError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > cap:
        raise OverCapError(f"{what} {path} is larger than {size_text(cap)}", cap)
    return data


def read_text(path: str | os.PathLike[str], what: str, cap: int) -> str:
    """A UTF-8 text file of at most ``cap`` bytes (a leading byte-order mark is dropped)."""
    data = read_capped(path, what, cap)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{what} {path} is not UTF-8 text (byte {exc.start + 1:,})") from None


def read_json(path: str | os.PathLike[str], what: str, cap: int = MAX_DOCUMENT_BYTES) -> Any:
    """A JSON file of at most ``cap`` bytes as Python values; the error names the file."""
    text = read_text(path, what, cap)
    try:
        return parse_json(text)
    except ValidationError as exc:
        raise ValidationError(f"{what} {path} is {exc}") from None


def capped_lines(
    lines: Iterable[str | bytes], *, max_line: int, max_total: int
) -> Iterator[str | bytes | None]:
    """The lines of a stream, each at most ``max_line`` long and ``max_total`` in all.

    A file object is read with ``readline(max_line + 1)``, so a line that never
    ends costs no more than its cap: it comes out as ``None``, and the rest of
    it is skipped if the reader asks for the next line. Past ``max_total`` an
    ``OverCapError`` stops the reading, whether a line end ever came or not.
    (Lengths are bytes, or characters for text.)
    """
    total = 0

    def count(piece: str | bytes) -> None:
        nonlocal total
        total += len(piece)
        if total > max_total:
            raise OverCapError(f"larger than {size_text(max_total)}", max_total)

    readline = getattr(lines, "readline", None)
    if readline is None:  # lines already in memory: only their lengths to check
        for line in lines:
            count(line)
            body = line.rstrip(b"\r\n") if isinstance(line, bytes) else line.rstrip("\r\n")
            yield None if len(body) > max_line else line
        return
    while line := readline(max_line + 1):
        count(line)
        end = b"\n" if isinstance(line, bytes) else "\n"
        if len(line) <= max_line or line.endswith(end):
            yield line
            continue
        yield None  # said at once: a reader that stops here reads no more of it
        while line and not line.endswith(end):  # skip the rest of the long line
            line = readline(max_line + 1)
            count(line)


# --- records ---------------------------------------------------------------------------------


def read_records(source: Any) -> Iterator[dict[str, Any]]:
    """Records from a DataFrame, an iterable of mappings, or a CSV / JSONL / JSON file.

    A file is checked as it is read: UTF-8 (a byte-order mark is fine), each
    line at most ``MAX_LINE_BYTES``, the file at most ``MAX_RECORDS_BYTES``
    (``MAX_JSON_RECORDS_BYTES`` for ``.json``, which is parsed whole), JSON
    nested at most ``MAX_JSON_DEPTH`` deep; a CSV row has no more fields than
    its header. Anything else is a ValidationError naming the file and line.
    CSV values are text (``None`` for a row's missing trailing fields); JSON
    values keep their types.
    """
    for _where, rec in read_numbered_records(source):
        yield rec


def read_numbered_records(source: Any) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """``read_records`` with where each record is in its file: ``"line 7"`` (CSV, JSONL:
    the line it starts on), ``"item 3"`` (a .json list), ``None`` (not from a file)."""
    if _is_frame(source):
        for rec in _frame_records(source):
            yield None, rec
        return
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix == ".json":
            data = read_json(path, "records file", MAX_JSON_RECORDS_BYTES)
            if not isinstance(data, list):
                raise ValidationError(f"{path.name} must hold a JSON list of objects")
            for n, item in enumerate(data, 1):
                yield f"item {n}", _json_object(item, f"{path.name} item {n}")
            return
        if suffix not in (".csv", ".jsonl", ".ndjson"):
            raise ValidationError(f"records file must be .csv, .jsonl or .json: {path.name}")
        with open_input(path, "records file", MAX_RECORDS_BYTES) as fh:
            lines = _text_lines(fh, path)
            if suffix == ".csv":
                yield from _csv_records(lines, path.name)
            else:
                for n, line in lines:
                    if line.strip():
                        yield f"line {n}", _json_object(line, f"{path.name} line {n}")
        return
    for rec in source:
        yield None, dict(rec)


def _text_lines(fh: IO[bytes], path: Path) -> Iterator[tuple[int, str]]:
    """Numbered lines of a records file, decoded, under the line and file caps."""
    try:
        for n, raw in enumerate(
            capped_lines(fh, max_line=MAX_LINE_BYTES, max_total=MAX_RECORDS_BYTES), 1
        ):
            if raw is None:
                raise ValidationError(
                    f"{path.name} line {n} is longer than {size_text(MAX_LINE_BYTES)}"
                )
            assert isinstance(raw, bytes)
            try:
                yield n, raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError:
                raise ValidationError(f"{path.name} line {n} is not UTF-8 text") from None
    except OverCapError as exc:
        raise OverCapError(
            f"records file {path} is larger than {size_text(exc.cap)}", exc.cap
        ) from None
    except OSError as exc:
        raise ValidationError(f"cannot read records file {path}: {exc.strerror or exc}") from None


def _csv_records(
    lines: Iterator[tuple[int, str]], name: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    reader = csv.reader(line for _, line in lines)
    try:
        header = next(reader, None)
        if header is None:
            return
        while True:
            start = reader.line_num + 1  # the line this row starts on
            row = next(reader, None)
            if row is None:
                return
            if not row:  # a blank line, as csv.DictReader skips it
                continue
            if len(row) > len(header):
                raise ValidationError(
                    f"{name} line {reader.line_num} has {len(row)} fields, its header {len(header)}"
                )
            values: list[str | None] = [*row, *[None] * (len(header) - len(row))]
            yield f"line {start}", dict(zip(header, values, strict=True))
    except csv.Error as exc:
        why = str(exc)
        if why.startswith("new-line character seen"):
            why = "a line ends in CR alone (lines must end in LF or CRLF)"
        raise ValidationError(f"{name} line {reader.line_num} is not valid CSV: {why}") from None


def _is_frame(source: Any) -> bool:
    """Whether ``source`` is a DataFrame, without importing pandas: none exists before it is."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(source, pandas.DataFrame)


def _frame_records(frame: pd.DataFrame) -> Iterator[dict[str, Any]]:
    from pandas import NaT

    cols = [str(c) for c in frame.columns]
    for row in frame.itertuples(index=False, name=None):
        yield {c: (None if _isna(v, NaT) else v) for c, v in zip(cols, row, strict=True)}


def _isna(v: Any, nat: Any) -> bool:
    return (isinstance(v, float) and math.isnan(v)) or v is nat


def _json_object(item: Any, where: str) -> dict[str, Any]:
    if isinstance(item, str):
        try:
            item = parse_json(item)
        except ValidationError as exc:
            raise ValidationError(f"{where} is {exc}") from None
    if not isinstance(item, dict):
        raise ValidationError(f"{where} is not a JSON object")
    return item


# --- typed fields ----------------------------------------------------------------------------

FIELD_TYPES = ("str", "int", "float", "decimal", "bool", "date", "datetime", "json")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def parse_types(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """Field types as ``{"amount": "float", "count": "int"}`` from ``amount=float,count=int``.

    Types are ``FIELD_TYPES``; a spec that is not ``NAME=TYPE,...`` with known
    types and each name once is a ValidationError.
    """
    if not spec:
        return {}
    if isinstance(spec, str):
        pairs = []
        for item in spec.split(","):
            name, sep, kind = item.partition("=")
            if not sep or not name.strip() or not kind.strip():
                raise ValidationError(f"types take NAME=TYPE[,NAME=TYPE...], got {item.strip()!r}")
            pairs.append((name.strip(), kind.strip()))
    else:
        pairs = list(spec.items())
    types: dict[str, str] = {}
    for name, kind in pairs:
        if kind not in FIELD_TYPES:
            raise ValidationError(
                f"unknown type {kind!r} for {name!r}: choose one of {', '.join(FIELD_TYPES)}"
            )
        if name in types:
            raise ValidationError(f"types name {name!r} twice")
        types[name] = kind
    return types


def convert_fields(record: dict[str, Any], types: Mapping[str, str]) -> list[tuple[str, str]]:
    """Convert ``record``'s text values in place to ``types``; what did not convert.

    Text is converted; a value that already has the type (a JSON number for
    ``float``) is kept; an empty text or a missing value becomes ``None``.
    Returns ``(field, reason)`` for each value that does not convert (left as it was).
    """
    problems: list[tuple[str, str]] = []
    for name, kind in types.items():
        if name not in record:
            continue
        try:
            record[name] = _typed(record[name], kind)
        except (ValueError, ArithmeticError, ValidationError) as exc:
            problems.append((name, f"{_shown(record[name])} is not {_A[kind]}{_why(exc)}"))
    return problems


_A = {
    "str": "text",
    "int": "a whole number",
    "float": "a number",
    "decimal": "a decimal number",
    "bool": "true or false",
    "date": "a date (YYYY-MM-DD)",
    "datetime": "a date and time (ISO 8601)",
    "json": "JSON",
}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _why(exc: Exception) -> str:
    return f" ({exc})" if isinstance(exc, ValidationError) else ""


def _typed(value: Any, kind: str) -> Any:
    from datetime import date, datetime
    from decimal import Decimal

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        return _retyped(value, kind)
    if kind == "str":
        return value
    text = value.strip()
    if kind in ("int", "float", "decimal") and "_" in text:
        raise ValueError(text)  # Python reads 1_000; a record means something else by it
    if kind == "int":
        return int(text)
    if kind == "float":
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(text)
        return number
    if kind == "decimal":
        dec = Decimal(text)
        if not dec.is_finite():
            raise ValueError(text)
        return dec
    if kind == "bool":
        low = text.lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ValueError(text)
    if kind == "date":
        return date.fromisoformat(text)
    if kind == "datetime":
        return datetime.fromisoformat(text)
    return parse_json(text)  # json


def _retyped(value: Any, kind: str) -> Any:
    """A value that is not text (from JSON, a DataFrame): kept if it has the type."""
    from datetime import date, datetime
    from decimal import Decimal

    number = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    if kind in ("str", "json"):
        return str(value) if kind == "str" else value
    if kind == "int" and number and value == int(value):
        return int(value)
    if kind == "float" and number:
        return float(value)
    if kind == "decimal" and number:
        return Decimal(str(value))
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "datetime" and isinstance(value, datetime):
        return value
    if kind == "date" and isinstance(value, date):
        return value.date() if isinstance(value, datetime) else value
    raise ValueError(value)
