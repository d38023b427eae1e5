"""Rule conditions: what they accept, what they refuse, and that nothing reaches eval."""

from __future__ import annotations

from typing import Any

import pytest

from sysmail_ops.flows.conditions import ConditionError, compile_condition

RECORD = {
    "amount": 1200,
    "currency": "EUR",
    "department": "finance",
    "urgent": False,
    "tags": ["travel", "abroad"],
    "manager": None,
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("amount > 1000", True),
        ("amount > 1000 and currency == 'EUR'", True),
        ("amount <= 1000 or currency != 'EUR'", False),
        ("1000 < amount < 2000", True),
        ("1000 < amount < 1100", False),
        ("department in ['finance', 'legal']", True),
        ("department not in ('finance', 'legal')", False),
        ("'abroad' in tags", True),
        ("'fin' in department", True),
        ("not urgent", True),
        ("manager is None", True),
        ("manager is not None", False),
        ("amount > -5", True),
        ("urgent == False and amount >= 1200.0", True),
        ("(amount > 5 or urgent) and not (currency == 'USD')", True),
    ],
)
def test_conditions_evaluate(source: str, expected: bool) -> None:
    cond = compile_condition(source)
    assert cond is not None
    assert cond.evaluate(RECORD) is expected


def test_empty_condition_is_none_and_fields_are_listed() -> None:
    assert compile_condition(None) is None
    assert compile_condition("   ") is None
    cond = compile_condition("amount > 1 and department in ['x']")
    assert cond is not None and cond.fields == {"amount", "department"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("__import__('os').system('touch /tmp/pwned')", "function calls are not allowed"),
        ("open('/etc/passwd')", "function calls are not allowed"),
        ("amount.__class__", "attribute access are not allowed"),
        ("().__class__.__bases__[0].__subclasses__()", "not allowed"),
        ("__builtins__", "'__builtins__' is not a field name"),
        ("_private == 1", "'_private' is not a field name"),
        ("tags[0] == 'travel'", "subscripts are not allowed"),
        ("amount * 2 > 10", "arithmetic are not allowed"),
        ("10 ** 10 ** 10 > amount", "arithmetic are not allowed"),
        ("[x for x in tags]", "comprehensions are not allowed"),
        ("lambda: 1", "lambda are not allowed"),
        ("f'{amount}' == '1'", "f-strings are not allowed"),
        ("(y := 1)", "assignment (:=) are not allowed"),
        ("{'a': 1} == amount", "dict literals are not allowed"),
        ("amount if urgent else 0", "if-else expressions are not allowed"),
        ("amount in [currency]", "a list may only hold literals"),
        ("b'x' == amount", "bytes literals are not allowed"),
        ("~amount", "operator Invert is not allowed"),
        ("amount >", "does not parse"),
        ("import os", "does not parse"),
        ("amount > 1; x", "does not parse"),
        ("a == 1\nb == 2", "must be one line"),
        ("x" * 501, "at most 500 characters"),
        ("(" * 240 + "1" + ")" * 240, "does not parse"),
    ],
)
def test_hostile_and_unknown_constructs_are_refused_at_compile(source: str, message: str) -> None:
    with pytest.raises(ConditionError) as info:
        compile_condition(source)
    assert message in str(info.value)


def test_nothing_is_executed(tmp_path: Any) -> None:
    target = tmp_path / "pwned"
    with pytest.raises(ConditionError):
        compile_condition(f"__import__('pathlib').Path('{target}').touch()")
    assert not target.exists()


@pytest.mark.parametrize(
    ("source", "record", "message"),
    [
        ("amount > 1", {}, "field `amount` is missing from the record"),
        ("amount > 1", {"amount": "lots"}, "'>' not supported"),
        ("'x' in amount", {"amount": 3}, "'in' needs a text or a list"),
        ("3 in name", {"name": "abc"}, "'in' on a text needs a text"),
        ("-name == 1", {"name": "abc"}, "cannot negate str"),
    ],
)
def test_evaluation_errors_are_condition_errors(
    source: str, record: dict[str, Any], message: str
) -> None:
    cond = compile_condition(source)
    assert cond is not None
    with pytest.raises(ConditionError) as info:
        cond.evaluate(record)
    assert message in str(info.value)


def test_deep_but_short_conditions_evaluate() -> None:
    cond = compile_condition("not " * 120 + "urgent")
    assert cond is not None and cond.evaluate({"urgent": False}) is False


def test_and_or_short_circuit_skips_missing_fields() -> None:
    cond = compile_condition("urgent or amount > 1")
    assert cond is not None and cond.evaluate({"urgent": True}) is True
    cond = compile_condition("urgent and amount > 1")
    assert cond is not None and cond.evaluate({"urgent": False}) is False
