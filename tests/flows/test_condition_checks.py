"""Conditions that could never evaluate are refused when the rule is saved, not on every event."""

from __future__ import annotations

import pytest
from conftest import bind
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from smtp_testserver import SMTPTestServer

from sysmail_ops import flows as workflows
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import SysmailError
from sysmail_ops.flows.conditions import ConditionError, compile_condition
from sysmail_ops.templates import catalog as templates

PROPS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("a == -True", "unary minus needs a number, not bool"),
        ("a == -'x'", "unary minus needs a number, not str"),
        ("a == -None", "unary minus needs a number, not None"),
        ("a == -[1]", "unary minus needs a number, not a list"),
        ("a == -(b < 1)", "unary minus needs a number, not a comparison"),
        ("a == -(not b)", "unary minus needs a number, not bool"),
        ("a == - -'x'", "unary minus needs a number, not str"),
        ("a in [1, -'x']", "unary minus needs a number, not str"),
        ("a in 5", "'in' needs a text or a list on its right, not int"),
        ("a not in None", "'in' needs a text or a list on its right, not None"),
        ("a in True", "'in' needs a text or a list on its right, not bool"),
        ("a in -1.5", "'in' needs a text or a list on its right, not float"),
        ("a in (b > 1)", "'in' needs a text or a list on its right, not a comparison"),
        ("5 in 'abc'", "'in' on a text needs a text on its left, not int"),
        ("[1] in 'abc'", "'in' on a text needs a text on its left, not a list"),
        ("None not in a == 'abc'", None),  # chained: 'in' reads a (a field): fine
        ("a < None", "None cannot be ordered"),
        ("None >= a", "None cannot be ordered"),
        ("1 < a <= None", "None cannot be ordered"),
        ("1 < 'a'", "int and str cannot be ordered"),
        ("'a' > [1]", "str and a list cannot be ordered"),
        ("[1] < ['a']", "[1] and ['a'] cannot be ordered"),
        ("a is 'x'", "'is' compares with None, True or False: use == for str"),
        ("a is not 5", "'is not' compares with None, True or False: use != for int"),
        ("a is [1]", "'is' compares with None, True or False: use == for a list"),
    ],
)
def test_conditions_that_can_never_evaluate_are_refused(source: str, message: str | None) -> None:
    if message is None:
        assert compile_condition(source) is not None
        return
    with pytest.raises(ConditionError) as info:
        compile_condition(source)
    assert str(info.value) == f"condition {source!r}: {message}"


@pytest.mark.parametrize(
    "source",
    [
        "a == -1",
        "a == -1.5",
        "a > - -2",
        "-a > 3",  # a field: its value decides
        "-(a) > 3",
        "a in 'abc'",
        "'x' in a",
        "a in [1, -2, 'x', None, True]",
        "[1] in a",
        "a < b",
        "1 < 2.5 <= a",
        "True < 2",  # bools are numbers when ordered, as in Python
        "'a' < 'b'",
        "[1, 'x'] < [2]",
        "a is None",
        "a is not True",
        "a is False",
        "(a and b) < 3",  # and/or give one of their operands: not decidable
        "-(a or 1) < 3",
        "not -1",
    ],
)
def test_conditions_that_can_evaluate_are_accepted(source: str) -> None:
    assert compile_condition(source) is not None


def test_a_rule_with_such_a_condition_is_refused_at_save(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    bind(ws, smtp_server, "workflow", kind="workflow_notification")
    templates.add_template(ws, "t", object_type="approval", subject="s", html="<p>x</p>")
    with pytest.raises(ConditionError, match="unary minus needs a number, not bool"):
        workflows.add_rule(
            ws, "r", flow_type="approval_flow", flow_name="*", event="approved",
            account="workflow", template="t", recipients=["a@example.com"],
            condition="amount == -True",
        )  # fmt: skip
    assert workflows.list_rules(ws) == []


# --- properties ----------------------------------------------------------------------------

literal = st.sampled_from(
    ["1", "-1", "2.5", "0", "True", "False", "None", "'a'", "''", "[1, 'a']", "[]", "(1,)", "{2}"]
)
field = st.sampled_from(["a", "b"])
op = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in", "is", "is not"])


def _expr(leaf: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.tuples(inner, op, inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(" ".join),
            inner.map(lambda e: f"(not {e})"),
            inner.map(lambda e: f"(-{e})"),
        ),
        max_leaves=6,
    )


@PROPS
@given(_expr(literal))
@example("-True == 1")
@example("1 in 2")
@example("None < 1")
@example("(1 in 'a') == 1")
def test_a_condition_of_literals_that_compiles_always_evaluates(source: str) -> None:
    """Nothing reads a field, so everything is decidable: compiled means it evaluates."""
    try:
        cond = compile_condition(source)
    except ConditionError:
        return
    assert cond is not None
    cond.evaluate({})


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
    st.lists(st.integers() | st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@PROPS
@given(_expr(literal | field), st.fixed_dictionaries({"a": values, "b": values}))
def test_any_condition_compiles_and_evaluates_or_is_a_condition_error(
    source: str, record: dict[str, object]
) -> None:
    try:
        cond = compile_condition(source)
        if cond is not None:
            cond.evaluate(record)
    except ConditionError:
        pass


@PROPS
@given(
    st.text(max_size=120)
    | st.text(alphabet="ab()[]{}'\"-+*~<>=!,.:0123456789 notandris\\", max_size=120)
)
def test_any_text_compiles_or_is_a_condition_error(source: str) -> None:
    try:
        compile_condition(source)
    except SysmailError as exc:
        assert isinstance(exc, ConditionError)
