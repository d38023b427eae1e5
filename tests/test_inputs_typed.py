"""inputs: where each record is in its file, and typed fields (send-batch --types)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from sysmail_ops.errors import ValidationError
from sysmail_ops.inputs import convert_fields, parse_types, read_numbered_records


def test_records_know_the_line_they_start_on(tmp_path: Path) -> None:
    csv_path = tmp_path / "r.csv"
    csv_path.write_text('email,note\na@example.com,one\n\nb@example.com,"two\nlines"\nc@x.org,3\n')
    assert [w for w, _ in read_numbered_records(csv_path)] == ["line 2", "line 4", "line 6"]
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text('{"a": 1}\n\n{"a": 2.5}\n')
    assert list(read_numbered_records(jsonl)) == [("line 1", {"a": 1}), ("line 3", {"a": 2.5})]
    js = tmp_path / "r.json"
    js.write_text('[{"a": true}, {"a": null}]')
    assert list(read_numbered_records(js)) == [("item 1", {"a": True}), ("item 2", {"a": None})]
    assert list(read_numbered_records([{"a": "x"}])) == [(None, {"a": "x"})]


def test_text_is_converted_to_each_type() -> None:
    types = parse_types(
        "i=int,f=float,d=decimal,b=bool,day=date,at=datetime,j=json,s=str,empty=int"
    )
    rec = {"i": " 42 ", "f": "1.5e3", "d": "19.90", "b": "Yes", "day": "2026-03-01",
           "at": "2026-03-01T08:00:00+01:00", "j": '{"x": [1, 2]}', "s": "007", "empty": "",
           "other": "left alone"}  # fmt: skip
    assert convert_fields(rec, types) == []
    assert rec == {
        "i": 42, "f": 1500.0, "d": Decimal("19.90"), "b": True, "day": date(2026, 3, 1),
        "at": datetime.fromisoformat("2026-03-01T08:00:00+01:00"), "j": {"x": [1, 2]},
        "s": "007", "empty": None, "other": "left alone",
    }  # fmt: skip


def test_values_that_already_have_the_type_are_kept() -> None:
    rec = {"i": 3, "f": 2, "b": False, "d": 1.25, "j": [1], "s": 5}
    assert convert_fields(rec, parse_types("i=int,f=float,b=bool,d=decimal,j=json,s=str")) == []
    assert rec == {"i": 3, "f": 2.0, "b": False, "d": Decimal("1.25"), "j": [1], "s": "5"}


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    [
        ("int", "4.5", "'4.5' is not a whole number"),
        ("int", "1_000", "'1_000' is not a whole number"),
        ("int", "9" * 5000, "is not a whole number"),
        ("int", True, "True is not a whole number"),
        ("float", "12,5", "'12,5' is not a number"),
        ("float", "nan", "'nan' is not a number"),
        ("float", "inf", "'inf' is not a number"),
        ("decimal", "abc", "'abc' is not a decimal number"),
        ("bool", "maybe", "'maybe' is not true or false"),
        ("bool", 1, "1 is not true or false"),
        ("date", "01.03.2026", "'01.03.2026' is not a date (YYYY-MM-DD)"),
        ("datetime", "soon", "'soon' is not a date and time (ISO 8601)"),
        ("json", "[1,", "'[1,' is not JSON (not valid JSON: Expecting value"),
        ("json", "[" * 100 + "]" * 100, "nested deeper than 64 levels"),
    ],
)
def test_a_value_that_does_not_convert_is_named_and_left_as_it_was(
    kind: str, value: object, reason: str
) -> None:
    rec = {"v": value}
    [(field, why)] = convert_fields(rec, {"v": kind})
    assert field == "v" and reason in why and len(why) < 200
    assert rec == {"v": value}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("amount", "types take NAME=TYPE[,NAME=TYPE...], got 'amount'"),
        ("a=int,,b=int", "types take NAME=TYPE[,NAME=TYPE...], got ''"),
        ("a=integer", "unknown type 'integer' for 'a': choose one of str, int, float, decimal"),
        ("a=int,a=str", "types name 'a' twice"),
    ],
)
def test_a_bad_spec_is_refused(spec: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_types(spec)
    assert message in str(info.value)


def test_no_spec_means_no_types() -> None:
    assert parse_types(None) == {} and parse_types("") == {}
    assert parse_types({"a": "int"}) == {"a": "int"}
