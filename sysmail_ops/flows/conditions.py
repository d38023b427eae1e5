"""Rule conditions: a small, safe expression language over an event's record.

A condition reads like Python but only a handful of constructs are allowed:
record field names, literals (strings, numbers, ``True``/``False``/``None``
and lists/tuples of them), comparisons (``== != < <= > >= in not in is is
not``), ``and``/``or``/``not`` and unary minus. Examples::

    amount > 1000 and currency == "EUR"
    department in ["finance", "legal"] or not urgent

It is parsed with :mod:`ast` and checked once, when a rule is saved: calls,
attribute access, subscripts, arithmetic, comprehensions, f-strings and names
starting with ``_`` are refused with a message naming the construct. So is an
operation that no record could ever make work, decided from its literals (and
from comparisons and ``not``, which always give a bool): unary minus on a
non-number (``a == -True``), ``in`` with a non-text, non-list right side or a
non-text left side against a text, ordering against ``None`` or between
mismatched types, and ``is`` with a literal other than None/True/False. Nothing
is ever handed to ``eval``; a tiny tree walker evaluates the checked tree, so
a condition can read fields and nothing else. A field missing from a record,
or a comparison of incompatible values, is a ``ConditionError`` for that
event, not a crash.
"""

from __future__ import annotations

import ast
import operator
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from sysmail_ops.errors import ValidationError

MAX_LENGTH = 500
_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_LITERALS = (str, int, float, bool, type(None))
# What a refused construct is called in the error message.
_NAMES = {
    ast.Call: "function calls",
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.BinOp: "arithmetic",
    ast.Lambda: "lambda",
    ast.IfExp: "if-else expressions",
    ast.JoinedStr: "f-strings",
    ast.NamedExpr: "assignment (:=)",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.Dict: "dict literals",
    ast.Starred: "starred expressions",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "slices",
}


class ConditionError(ValidationError):
    """A condition does not parse, uses a refused construct, or cannot be evaluated."""


class Condition:
    """A checked condition; ``evaluate(record)`` tells whether it holds."""

    __slots__ = ("_tree", "fields", "source")

    def __init__(self, source: str):
        self.source = source
        self._tree = _parse(source)
        self.fields: frozenset[str] = frozenset(
            n.id for n in ast.walk(self._tree) if isinstance(n, ast.Name)
        )

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"

    def evaluate(self, record: Mapping[str, Any]) -> bool:
        """True when the condition holds for ``record``; ConditionError when it cannot say."""
        try:
            return bool(_eval(self._tree, record))
        except ConditionError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConditionError(f"condition {self.source!r}: {exc}") from None


def compile_condition(source: str | None) -> Condition | None:
    """A checked condition, or None for an empty one. Raises ConditionError on bad input."""
    if source is None or not source.strip():
        return None
    return Condition(source.strip())


def _parse(source: str) -> ast.expr:
    if len(source) > MAX_LENGTH:
        raise ConditionError(f"a condition is at most {MAX_LENGTH} characters")
    if any(c in source for c in "\r\n\0"):
        raise ConditionError("a condition must be one line")
    try:
        with warnings.catch_warnings():  # e.g. an invalid escape: the parse decides, not a warning
            warnings.simplefilter("ignore")
            tree = ast.parse(source, mode="eval").body
    except SyntaxError as exc:
        raise ConditionError(f"condition {source!r} does not parse: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ConditionError(f"condition {source!r} is too deeply nested") from None
    _check(tree, source)
    return tree


def _check(node: ast.AST, source: str) -> None:
    """Refuse every construct but the few a condition may use, and what can never evaluate."""
    bad = f"condition {source!r}"
    if isinstance(node, ast.BoolOp | ast.Compare):
        for op in [*getattr(node, "ops", [])]:
            if type(op) not in _COMPARE:
                raise ConditionError(f"{bad}: operator {type(op).__name__} is not allowed")
        children = node.values if isinstance(node, ast.BoolOp) else [node.left, *node.comparators]
        for child in children:
            _check(child, source)
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            for op, left, right in zip(node.ops, sides, sides[1:], strict=False):
                problem = _compare_problem(op, left, right)
                if problem:
                    raise ConditionError(f"{bad}: {problem}")
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.Not | ast.USub):
            raise ConditionError(f"{bad}: operator {type(node.op).__name__} is not allowed")
        _check(node.operand, source)
        kind = _kind(node.operand)
        if isinstance(node.op, ast.USub) and kind is not None and kind not in (int, float):
            raise ConditionError(
                f"{bad}: unary minus needs a number, not {_kind_name(node.operand, kind)}"
            )
    elif isinstance(node, ast.Name):
        if not _FIELD.fullmatch(node.id):
            raise ConditionError(
                f"{bad}: {node.id!r} is not a field name (letters, digits and '_', "
                "starting with a letter)"
            )
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, _LITERALS):
            raise ConditionError(f"{bad}: {type(node.value).__name__} literals are not allowed")
    elif isinstance(node, ast.List | ast.Tuple | ast.Set):
        for elt in node.elts:
            if not isinstance(elt, ast.Constant | ast.UnaryOp):
                raise ConditionError(f"{bad}: a list may only hold literals")
            _check(elt, source)
    else:
        what = _NAMES.get(type(node), type(node).__name__)
        raise ConditionError(f"{bad}: {what} are not allowed (only fields, literals, "
                             "comparisons, and/or/not)")  # fmt: skip


# --- what is decidable when a rule is saved ----------------------------------------------
#
# A sub-expression that reads no field has one value whatever the record holds, and a
# comparison or ``not`` always gives a bool: when such a value can never take part in an
# operation (``-True``, ``x in 5``, ``x < None``, ``5 in 'abc'``), the condition could never
# evaluate for any event, so it is refused at save instead of failing every event.


def _reads_fields(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) for n in ast.walk(node))


def _kind(node: ast.AST) -> type | None:
    """The type a checked sub-expression gives for every record, or None when fields decide."""
    if not _reads_fields(node):
        return type(_eval(node, {}))
    if isinstance(node, ast.Compare) or (
        isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
    ):
        return bool
    if isinstance(node, ast.UnaryOp):  # unary minus on a field: int or float, or an error
        return None
    if isinstance(node, ast.BoolOp):  # and/or give one of their operands
        kinds = {_kind(v) for v in node.values}
        return kinds.pop() if len(kinds) == 1 else None
    return None


def _kind_name(node: ast.AST, kind: type) -> str:
    if isinstance(node, ast.Compare):
        return "a comparison"
    return {type(None): "None", list: "a list"}.get(kind, kind.__name__)


_ORDERING = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_NUMBERS = (int, float, bool)


def _compare_problem(op: ast.cmpop, left: ast.expr, right: ast.expr) -> str | None:
    """Why ``left op right`` could never be evaluated, or None when it can (or fields decide)."""
    lk, rk = _kind(left), _kind(right)
    if isinstance(op, ast.In | ast.NotIn):
        if rk is not None and rk not in (str, list):
            return f"'in' needs a text or a list on its right, not {_kind_name(right, rk)}"
        if rk is str and lk is not None and lk is not str:
            return f"'in' on a text needs a text on its left, not {_kind_name(left, lk)}"
    elif isinstance(op, _ORDERING):
        if type(None) in (lk, rk):
            return "None cannot be ordered"
        comparable = lk is rk or (lk in _NUMBERS and rk in _NUMBERS)
        if lk is not None and rk is not None and not comparable:
            return f"{_kind_name(left, lk)} and {_kind_name(right, rk)} cannot be ordered"
    elif isinstance(op, ast.Is | ast.IsNot):
        for side, kind in ((left, lk), (right, rk)):
            if not _reads_fields(side) and kind not in (type(None), bool):
                word, instead = ("is", "==") if isinstance(op, ast.Is) else ("is not", "!=")
                assert kind is not None
                return (
                    f"'{word}' compares with None, True or False: use {instead} for "
                    f"{_kind_name(side, kind)}"
                )
    if not _reads_fields(left) and not _reads_fields(right):
        try:
            _compare(op, _eval(left, {}), _eval(right, {}))
        except (TypeError, ValueError):
            what = "ordered" if isinstance(op, _ORDERING) else "compared"
            return f"{ast.unparse(left)} and {ast.unparse(right)} cannot be {what}"
    return None


def _eval(node: ast.AST, record: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            value: Any = True
            for child in node.values:
                value = _eval(child, record)
                if not value:
                    return value
            return value
        value = False
        for child in node.values:
            value = _eval(child, record)
            if value:
                return value
        return value
    if isinstance(node, ast.Compare):
        left = _eval(node.left, record)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, record)
            if not _compare(op, left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, record)
        if isinstance(node.op, ast.Not):
            return not operand
        if isinstance(operand, bool) or not isinstance(operand, int | float):
            raise TypeError(f"cannot negate {type(operand).__name__}")
        return -operand
    if isinstance(node, ast.Name):
        if node.id not in record:
            raise ConditionError(f"field `{node.id}` is missing from the record")
        return record[node.id]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return [_eval(e, record) for e in node.elts]
    raise ConditionError(f"cannot evaluate {type(node).__name__}")  # refused by _check


def _compare(op: ast.cmpop, left: Any, right: Any) -> bool:
    if isinstance(op, ast.In | ast.NotIn) and not isinstance(right, str | list | tuple | dict):
        raise TypeError(f"'in' needs a text or a list on its right, got {type(right).__name__}")
    if isinstance(op, ast.In | ast.NotIn) and isinstance(right, str) and not isinstance(left, str):
        raise TypeError(f"'in' on a text needs a text on its left, got {type(left).__name__}")
    return bool(_COMPARE[type(op)](left, right))
