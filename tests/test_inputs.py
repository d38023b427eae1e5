"""Records files and JSON from outside: the documented one-line error, or records; nothing else."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sysmail_ops.errors import SysmailError, ValidationError
from sysmail_ops.inputs import (
    MAX_JSON_DEPTH,
    MAX_JSON_RECORDS_BYTES,
    MAX_LINE_BYTES,
    MAX_RECORDS_BYTES,
    OverCapError,
    capped_lines,
    parse_json,
    read_json,
    read_records,
)

PROPS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def records(path: Path, content: bytes) -> list[dict[str, object]]:
    path.write_bytes(content)
    return list(read_records(path))


def test_a_csv_saved_by_excel_with_a_byte_order_mark_keeps_its_first_column(
    tmp_path: Path,
) -> None:
    got = records(tmp_path / "r.csv", "email,name\r\nzoe@example.com,Zoé\r\n".encode("utf-8-sig"))
    assert got == [{"email": "zoe@example.com", "name": "Zoé"}]


def test_csv_blank_lines_quoted_line_breaks_and_short_rows(tmp_path: Path) -> None:
    got = records(
        tmp_path / "r.csv", b'email,note\n\na@example.com,"two\r\nlines"\nb@example.com\n'
    )
    assert got == [
        {"email": "a@example.com", "note": "two\r\nlines"},
        {"email": "b@example.com", "note": None},
    ]


def test_a_csv_row_with_more_fields_than_its_header_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"^r.csv line 3 has 3 fields, its header 2$"):
        records(tmp_path / "r.csv", b"email,name\na@example.com,A\nb@example.com,B,extra\n")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("r.csv", b"email\n\xff\n", r"^r.csv line 2 is not UTF-8 text$"),
        ("r.jsonl", b'{"a": 1}\n\n{"a": "\xc3"}\n', r"^r.jsonl line 3 is not UTF-8 text$"),
        ("r.jsonl", b'{"a": "\\udc00"}\n', r"^r.jsonl line 1 is not valid JSON: '\\udc00'"),
        ("r.jsonl", b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}\n", "nested deeper than 64"),
        ("r.jsonl", b'{"a": -' + b"1" * 4301 + b"}\n", "a number has more than 4300 digits"),
        ("r.jsonl", b"[1]\n", r"^r.jsonl line 1 is not a JSON object$"),
        ("r.json", b'{"a": 1}', r"^r.json must hold a JSON list of objects$"),
        ("r.json", b"[" * 3000 + b"]" * 3000, r"r.json is not valid JSON: nested deeper than 64"),
        ("r.json", b"\xfe\xff[]", r"r.json is not UTF-8 text \(byte 1\)$"),
        (
            "r.csv",
            b"a\n" + b"x" * (MAX_LINE_BYTES + 1) + b"\n",
            r"^r.csv line 2 is longer than 1 MiB$",
        ),
        ("r.txt", b"", r"^records file must be .csv, .jsonl or .json: r.txt$"),
    ],
)
def test_bad_records_files_are_one_line_errors(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        records(tmp_path / name, content)
    assert "\n" not in str(info.value)


def test_missing_unreadable_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(
        ValidationError, match=r"^cannot read records file .*nope.csv: it does not exist$"
    ):
        list(read_records(tmp_path / "nope.csv"))
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(ValidationError, match=r"cannot read records file .*dir.jsonl: Is a dir"):
        list(read_records(tmp_path / "dir.jsonl"))
    with pytest.raises(ValidationError, match="is not a file name"):
        list(read_records("a\0b.csv"))
    for name, cap in (("big.csv", MAX_RECORDS_BYTES), ("big.json", MAX_JSON_RECORDS_BYTES)):
        big = tmp_path / name
        with big.open("wb") as fh:
            fh.truncate(cap + 1)  # sparse: refused by its size, never read
        with pytest.raises(OverCapError, match=f"is larger than {cap // 2**20} MiB$"):
            list(read_records(big))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_a_records_file_that_never_ends_stops_at_a_cap(tmp_path: Path, suffix: str) -> None:
    zero = tmp_path / f"zero{suffix}"
    zero.symlink_to("/dev/zero")
    with pytest.raises(ValidationError, match=r"is longer than 1 MiB|is larger than 50 MiB"):
        list(read_records(zero))


def test_a_stream_of_short_lines_stops_at_the_total_cap() -> None:
    stream = io.BytesIO(b"ab\n" * 10)
    got = []
    with pytest.raises(OverCapError, match=r"^larger than 20 bytes$"):
        for line in capped_lines(stream, max_line=5, max_total=20):
            got.append(line)
    assert got == [b"ab\n"] * 6


def test_parse_json_and_read_json(tmp_path: Path) -> None:
    assert parse_json('{"a": [1, 2.5, null, "\\u00e9"]}') == {"a": [1, 2.5, None, "é"]}
    depth = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(depth) is not None
    with pytest.raises(ValidationError, match="nested deeper than 64 levels"):
        parse_json("[" + depth + "]")
    record = tmp_path / "record.json"
    record.write_text('{"a": ' + "1" * 5000 + "}")
    with pytest.raises(ValidationError, match=r"record\.json is not valid JSON: a number has more"):
        read_json(record, "record file")


# --- properties: whatever the bytes, records or a SysmailError ------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)
raw_bytes = st.binary(max_size=400)
json_bytes = st.lists(json_values, max_size=4).map(lambda items: json.dumps(items).encode())
jsonl_bytes = st.lists(json_values, max_size=4).map(
    lambda items: b"\n".join(json.dumps(i).encode() for i in items)
)
csv_bytes = st.lists(
    st.lists(st.text(alphabet=',"\r\n\x00ab\xe9', max_size=6), max_size=4), max_size=5
).map(lambda rows: "\n".join(",".join(r) for r in rows).encode())
json_ish = st.text(alphabet='[]{}",:0123456789-.eE \\untrufalsNaI\n\xff', max_size=300).map(
    lambda t: t.encode("utf-8", "surrogatepass")
)


def _read(suffix: str, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"r{suffix}"
        path.write_bytes(content)
        try:
            for rec in read_records(path):
                assert isinstance(rec, dict) and all(isinstance(k, str) for k in rec)
                json.dumps(rec).encode("utf-8")  # stored and mailed later: must be real text
        except SysmailError as exc:
            assert "\n" not in str(exc)


@PROPS
@given(st.sampled_from([".csv", ".jsonl", ".json"]), raw_bytes | json_ish)
def test_any_bytes_in_a_records_file_are_records_or_one_error(suffix: str, content: bytes) -> None:
    _read(suffix, content)


@PROPS
@given(json_bytes | jsonl_bytes | csv_bytes, st.sampled_from([".csv", ".jsonl", ".json"]))
def test_any_structured_records_file_is_records_or_one_error(content: bytes, suffix: str) -> None:
    _read(suffix, content)


@PROPS
@given(st.text(max_size=300) | json_ish.map(lambda b: b.decode("utf-8", "replace")))
def test_parse_json_only_ever_raises_validation_errors(text: str) -> None:
    with contextlib.suppress(ValidationError):
        parse_json(text)
