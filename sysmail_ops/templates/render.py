"""Template sources: the sandboxed Jinja2 environments and the work done once, at save.

``templates`` keeps the model, the store and rendering; this module holds
what checks and prepares a version when it is saved: parsing each part (with
part and line in every error), the fields a source uses, CSS inlined once
where the Jinja tokens survive it (``css_inline``), and a text body derived
from the HTML (``html2text``, far too slow to run per message).
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from secrets import token_hex
from time import perf_counter
from typing import TYPE_CHECKING, Any

from sysmail_ops.errors import TemplateError

if TYPE_CHECKING:  # Jinja2, css_inline and html2text load with the first template (~20 ms)
    import css_inline
    import jinja2
    from jinja2 import nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

# --- the render budget --------------------------------------------------------------------
#
# Every render runs under a budget: wall time, characters output, loop iterations. Time is
# checked cooperatively (no thread, no signal): the hooks a render passes through (loop
# iterations, calls, filters, operators, joins) count ticks and look at the clock every few
# milliseconds of work. Memory is bounded at the cause: every way a template can build a
# value (``*``, ``**``, ``%``, ``+``, ``~``, str.format, literals, filters, method calls) is
# sized before it runs, so nothing huge is ever allocated, and every value built is counted.


@dataclass(frozen=True, slots=True)
class Budget:
    """What one render (subject, HTML and text together) may use."""

    seconds: float = 2.0  # wall time
    output: int = 5_000_000  # characters output; also the largest value a template may build
    loops: int = 100_000  # loop iterations, all loops of the render together


DEFAULT_BUDGET = Budget()
MAX_INT_BITS = 32_768  # ~9,900 digits: more than Python prints (4,300), cheap to compute with
BUILT_FACTOR = 4  # the values a render builds may total this many times ``output``
STEPS_PER_LOOP = 100  # loop bodies weigh their size: at most this many steps per iteration
_CLOCK_EVERY = 0.005  # seconds of work between two looks at the clock, about


class RenderBudgetError(TemplateError):
    """A render went over its budget (time, output, loops): names the template and the limit."""


class OverBudget(Exception):
    """Raised by the hooks; not a TemplateError so that nothing on the way catches it."""


class Meter:
    """What is left of one render's budget; the hooks of the sandbox count against it."""

    __slots__ = (
        "budget",
        "built",
        "deadline",
        "interval",
        "loops",
        "mark",
        "room",
        "sizes",
        "steps",
        "ticks",
    )

    def __init__(self, budget: Budget = DEFAULT_BUDGET):
        now = perf_counter()
        self.budget = budget
        self.deadline = now + budget.seconds
        self.mark = now
        self.interval = self.ticks = 64  # ticks until the next look at the clock
        self.loops = budget.loops  # iterations left
        self.steps = budget.loops * STEPS_PER_LOOP  # loop body sizes left
        self.room = budget.output  # output characters left
        self.built = budget.output * BUILT_FACTOR  # characters of built values left
        self.sizes: dict[int, tuple[Any, int]] = {}  # id -> (container, size), this render

    def tick(self, weight: int = 1) -> None:
        self.ticks -= weight
        if self.ticks <= 0:
            self.clock()

    def clock(self) -> None:
        now = perf_counter()
        if now > self.deadline:
            raise OverBudget(f"took more than {self.budget.seconds:g} s (render_time_limit)")
        used = self.interval - self.ticks  # ticks since the last look
        per_tick = (now - self.mark) / used if used > 0 else 0.0
        self.interval = self.ticks = (
            max(1, min(4096, int(_CLOCK_EVERY / per_tick))) if per_tick > 0 else 4096
        )
        self.mark = now

    def run(self, iterations: int, weight: int) -> None:
        """Count ``iterations`` of a loop whose body weighs ``weight``."""
        self.loops -= iterations
        steps = iterations * weight
        self.steps -= steps
        self.ticks -= steps
        if self.ticks <= 0 or self.loops < 0 or self.steps < 0:
            self.over_loops()

    def over_loops(self) -> None:
        if self.loops < 0:
            raise OverBudget(f"more than {self.budget.loops:,} loop iterations (render_loop_limit)")
        if self.steps < 0:
            raise OverBudget(
                f"its loops run more than {self.budget.loops * STEPS_PER_LOOP:,} steps "
                "(100 x render_loop_limit)"
            )
        self.clock()

    def too_large(self, what: str) -> OverBudget:
        return OverBudget(
            f"{what} would build a value too large: over {self.budget.output:,} characters "
            "(render_output_limit)"
        )

    def expect(self, size: int, what: str) -> None:
        """Refuse, before it is built, a value of about ``size`` characters that is too large."""
        if size > self.budget.output:
            raise self.too_large(what)

    def count(self, count: int, what: str) -> None:
        """Refuse a number of items (batch, slice) above what the loops may run."""
        if count > self.budget.loops:
            raise OverBudget(
                f"{what} asks for more than {self.budget.loops:,} items (render_loop_limit)"
            )

    def made(self, value: Any, what: str) -> Any:
        """Count a value just built; refuse it when too large or when the render built too much."""
        if isinstance(value, str):
            n = len(value)
        elif type(value) is int:
            if value.bit_length() > MAX_INT_BITS:
                raise OverBudget(f"{what} would build an integer over {MAX_INT_BITS:,} bits")
            return value
        elif value is None or isinstance(value, float | bool):
            return value
        else:
            n = self.size(value)
        if n > self.budget.output:
            raise self.too_large(what)
        self.built -= n
        if self.built < 0:
            raise OverBudget(
                f"the values it builds total over {self.budget.output * BUILT_FACTOR:,} "
                f"characters ({BUILT_FACTOR} x render_output_limit)"
            )
        return value

    def size(self, value: Any) -> int:
        """About how many characters ``value`` prints as (containers: their repr), at most
        just over the output limit (counting stops there)."""
        return _size(value, self.budget.output + 1, self.sizes, 0)


_SIZED_SCALARS = (int, float, bool, complex, type(None))
_CONTAINERS = (list, tuple, set, frozenset)
_DEEPEST = 200  # a value nested deeper is taken as too large
_namespace: list[type] = []  # jinja2.utils.Namespace, once Jinja2 is loaded


def _size(value: Any, limit: int, memo: dict[int, tuple[Any, int]], depth: int) -> int:
    kind = type(value)  # the common exact types first: records are mostly these
    if kind is str:
        return len(value)
    if kind is int:
        return value.bit_length() * 3 // 10 + 2
    if kind is float or kind is bool or value is None:
        return 24
    if (kind is dict or kind is list) and depth <= _DEEPEST and len(value) <= 64:
        total = 2
        for item in value.values() if kind is dict else value:
            total += _size(item, limit, memo, depth + 1) + 2
            if total > limit:
                return total
        if kind is dict:
            for key in value:
                total += _size(key, limit, memo, depth + 1) + 2
        return total
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    if isinstance(value, _SIZED_SCALARS):
        return value.bit_length() * 3 // 10 + 2 if type(value) is int else 24
    if depth > _DEEPEST:
        return limit
    if isinstance(value, Mapping) or (_namespace and isinstance(value, _namespace[0])):
        items: Iterable[Any]
        if isinstance(value, Mapping):
            items = (x for kv in value.items() for x in kv)
        else:
            items = (
                x for kv in object.__getattribute__(value, "_Namespace__attrs").items() for x in kv
            )
        container = isinstance(value, dict)
    elif isinstance(value, _CONTAINERS):
        items = value
        container = True
    elif isinstance(value, Iterable) and hasattr(value, "__len__") and not isinstance(value, range):
        items, container = value, False  # dict views and the like: printed with their items
    else:
        return 16  # anything else prints as a short repr
    key = id(value)
    if container:
        hit = memo.get(key)
        if hit is not None:
            return hit[1]
    total = 2
    for item in items:
        total += _size(item, limit, memo, depth + 1) + 2
        if total > limit:
            break
    if container and total > 64:
        memo[key] = (value, total)  # kept alive, so the id stays its own during the render
    return total


ACTIVE = threading.local()  # .meter: the Meter of the render running in this thread


def current_meter() -> Meter:
    """The meter of the render under way (a fresh default one outside a render)."""
    meter: Meter | None = getattr(ACTIVE, "meter", None)
    return meter if meter is not None else Meter()


class metered:
    """Make ``meter`` the one the sandbox's hooks count against, for the ``with`` block."""

    __slots__ = ("meter", "previous")

    def __init__(self, meter: Meter):
        self.meter = meter

    def __enter__(self) -> Meter:
        self.previous = getattr(ACTIVE, "meter", None)
        ACTIVE.meter = self.meter
        return self.meter

    def __exit__(self, *exc: object) -> None:
        ACTIVE.meter = self.previous


def emit(template: jinja2.Template, record: Mapping[str, Any], meter: Meter) -> str:
    """Render one part, counting its output against the meter (the render's hot path)."""
    room = meter.room
    out: list[str] = []
    append = out.append
    for piece in template.root_render_func(template.new_context(dict(record))):
        room -= len(piece)
        if room < 0:
            raise OverBudget(
                f"its output is over {meter.budget.output:,} characters (render_output_limit)"
            )
        append(piece)
    meter.room = room
    return "".join(out)


def _int(value: Any) -> int:
    """An int-like argument as an int (0 when it is none: the call then fails by itself)."""
    if isinstance(value, int):
        return abs(value)
    if isinstance(value, float) and math.isfinite(value):
        return abs(int(value))
    return 0


_PERCENT = re.compile(r"%(?:\(([^)]*)\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.?)", re.DOTALL)
_DIGITS = re.compile(r"\d+")


def _digits(text: str, meter: Meter, what: str) -> int:
    """The largest number written in a format spec (a width or precision), refused if huge."""
    largest = 0
    for run in _DIGITS.findall(text):
        if len(run) > 12:
            raise meter.too_large(what)
        largest = max(largest, int(run))
    meter.expect(largest, what)
    return largest


def check_percent(fmt: str | bytes, args: Any, meter: Meter, what: str = "'%'") -> None:
    """Size ``fmt % args`` before it runs: widths, precisions (also ``*``) and the values."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes | bytearray) else fmt
    mapping = args if isinstance(args, Mapping) else None
    seq = args if isinstance(args, tuple) else (args,)
    total, i = len(text), 0
    for key, width, precision, conversion in _PERCENT.findall(text):
        if conversion == "%":
            continue
        for n in (width, precision):
            if n == "*":
                total += _int(seq[i]) if i < len(seq) else 0
                i += 1
            elif n:
                total += _digits(n, meter, what)
        if key and mapping is not None:
            try:
                value = mapping[key]
            except Exception:  # the formatting fails on its own
                value = None
        else:
            value = seq[i] if i < len(seq) else None
            i += 1
        total += meter.size(value) * (4 if conversion in "ra" else 1)
        meter.expect(total, what)


def _check_method(obj: Any, args: tuple[Any, ...], meter: Meter) -> tuple[Any, ...]:
    """Size what a method of a str, bytes or int would build, before the call; ``args`` back
    (a lazy iterable to ``join`` comes back as a list)."""
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(owner, str | bytes | bytearray):
        what = f"{type(owner).__name__}.{name}"
        n = len(owner)
        if name in ("center", "ljust", "rjust", "zfill") and args:
            meter.expect(max(n, _int(args[0])), what)
        elif name == "expandtabs":
            tab = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            meter.expect(n + tab * _int(args[0] if args else 8), what)
        elif name == "replace" and len(args) >= 2:
            meter.expect(_replaced_size(owner, *args), what)
        elif name == "join" and args:
            items = list(args[0])
            meter.expect(sum(meter.size(x) for x in items) + n * len(items), what)
            return (items, *args[1:])
        elif name == "translate" and args and isinstance(args[0], Mapping):
            longest = max((meter.size(v) for v in args[0].values()), default=1)
            meter.expect(n * max(1, longest), what)
        elif name in ("strftime", "__format__") and args and isinstance(args[0], str):
            _digits(args[0], meter, what)
    elif name == "strftime" and args and isinstance(args[0], str):
        _digits(args[0], meter, "strftime")
    elif isinstance(owner, int) and name == "to_bytes":
        meter.expect(_int(args[0]) if args else 1, "int.to_bytes")
    return args


def _replaced_size(s: Any, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(s, str | bytes | bytearray) or not isinstance(old, type(s)):
        return len(s) if isinstance(s, str) else 0
    text: Any = s
    hits = len(text) + 1 if not old else text.count(old)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * max(0, len(new) - len(old)) if isinstance(new, type(s)) else len(s)


# Checks made before a filter runs, on the arguments as the template gives them. Each may
# return a new first argument (a lazy iterable made a list, so it is sized and then used).


def _pre_center(m: Meter, value: Any, width: Any = 80, *_: Any) -> None:
    m.expect(max(m.size(value), _int(width)), "center")


def _pre_indent(m: Meter, s: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    prefix = len(width) if isinstance(width, str) else _int(width)
    m.expect(prefix, "indent")
    lines = s.count("\n") + 2 if isinstance(s, str) else m.size(s)
    m.expect(m.size(s) + lines * prefix, "indent")


def _pre_wordwrap(
    m: Meter, s: Any, width: Any = 79, wrap: Any = True, wrapstring: Any = None, *_: Any
) -> None:
    n = m.size(s)
    sep = len(wrapstring) if isinstance(wrapstring, str) else 1
    lines = n // max(1, _int(width)) + (s.count("\n") if isinstance(s, str) else 0) + 1
    m.expect(n + lines * sep, "wordwrap")


def _pre_replace(m: Meter, s: Any, old: Any = "", new: Any = "", count: Any = None) -> None:
    if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
        m.expect(_replaced_size(s, old, new, -1 if count is None else count), "replace")


def _pre_join(m: Meter, value: Any, d: Any = "", attribute: Any = None) -> list[Any]:
    items = list(value)
    sep = m.size(d)
    m.expect(sum(m.size(x) for x in items) + sep * len(items), "join")
    return items


def _pre_batch(m: Meter, value: Any, linecount: Any = 0, *_: Any) -> None:
    m.count(_int(linecount), "batch")


def _pre_slice(m: Meter, value: Any, slices: Any = 0, *_: Any) -> None:
    m.count(_int(slices), "slice")


def _pre_format(m: Meter, value: Any, *args: Any, **kwargs: Any) -> None:
    check_percent(str(value), kwargs or args, m, "format")


def _pre_urlize(
    m: Meter,
    value: Any,
    trim: Any = None,
    nofollow: Any = False,
    target: Any = None,
    rel: Any = None,
    *_: Any,
) -> None:
    n = m.size(value)
    extra = 80 + m.size(target or "") + m.size(rel or "")
    m.expect(2 * n + (n // 4 + 1) * extra, "urlize")


def _pre_sum(m: Meter, iterable: Any, attribute: Any = None, start: Any = 0) -> list[Any] | None:
    if not isinstance(start, list | tuple):
        return None
    items = list(iterable)  # a sum of lists copies the total so far at every step
    total = m.size(start) + sum(m.size(x) for x in items)
    m.expect(total * max(1, len(items)) // 8, "sum")
    return items


_FILTER_CHECKS: dict[str, Callable[..., Any]] = {
    "center": _pre_center,
    "indent": _pre_indent,
    "wordwrap": _pre_wordwrap,
    "replace": _pre_replace,
    "join": _pre_join,
    "batch": _pre_batch,
    "slice": _pre_slice,
    "format": _pre_format,
    "urlize": _pre_urlize,
    "sum": _pre_sum,
}


def _counted(iterable: Iterable[Any], weight: int = 1) -> Iterator[Any]:
    """A loop's iterable, each iteration counted (``weight``: the size of the loop's body).

    Iterations are counted here and passed on to the meter in small batches (a batch
    weighs about 64 steps), so a short loop costs one call to the meter.
    """
    batch = max(1, 64 // weight)
    left = batch
    for item in iterable:
        left -= 1
        if left <= 0:
            current_meter().run(batch, weight)
            left = batch
        yield item
    if left != batch:
        current_meter().run(batch - left, weight)


def _checked_concat(parts: Iterable[str]) -> str:
    """``concat`` of the compiled templates: the buffers of macros, blocks and ``set``."""
    meter = current_meter()
    meter.tick()
    if not isinstance(parts, list):
        parts = list(parts)
    meter.expect(sum(map(len, parts)), "a block")
    return meter.made("".join(parts), "a block")


def _buffered(piece: str) -> str:
    """A piece of output going into a buffer (a macro's, a ``set`` block's)."""
    meter = current_meter()
    meter.tick()
    return meter.made(piece, "a block")


def _checked_value(value: Any) -> Any:
    """A list, tuple or dict literal of a template, once built."""
    meter = current_meter()
    meter.tick()
    return meter.made(value, "a literal")


@dataclass(frozen=True, slots=True)
class Shape:
    """A template that only substitutes, tests and loops over record data (no calls,
    filters, operators, literals or macros): what bounds its work for a given record.

    Index ``i`` of each tuple is about what sits inside ``i`` nested loops.
    """

    data: tuple[int, ...]  # characters of constant text
    expressions: tuple[int, ...]  # expressions output
    loops: tuple[int, ...]  # ``for`` tags (a loop at index i runs inside i - 1 others)
    nodes: int  # nodes of the whole tree: the largest weight a loop body can have

    def fits(self, record: Mapping[str, Any], budget: Budget) -> bool:
        """Whether every render of ``record`` stays within ``budget``, whatever it holds:
        a loop runs at most once per character or item of the record, and each value
        printed is part of the record, at most 10 times longer once escaped or quoted."""
        size = _size(record, budget.output + 1, {}, 0)
        passes = output = 0
        for level, (data, expressions, loops) in enumerate(
            zip(self.data, self.expressions, self.loops, strict=True)
        ):
            runs = size**level
            passes += loops * runs
            output += (data + 10 * size * expressions) * runs
        return (
            passes <= budget.loops
            and passes * self.nodes <= budget.loops * STEPS_PER_LOOP
            and output <= budget.output
        )


def shape_of(asts: Iterable[nodes.Template]) -> Shape | None:
    """The ``Shape`` of a template's parts, or None when they do more than substitute."""
    from jinja2 import nodes

    allowed = (
        nodes.Template,
        nodes.Output,
        nodes.TemplateData,
        nodes.Name,
        nodes.Getattr,
        nodes.Getitem,
        nodes.Const,
        nodes.For,
        nodes.If,
        nodes.Compare,
        nodes.Operand,
        nodes.And,
        nodes.Or,
        nodes.Not,
        nodes.Test,
        nodes.CondExpr,
    )
    data: dict[int, int] = {}
    expressions: dict[int, int] = {}
    loops: dict[int, int] = {}
    count = 0

    def walk(node: nodes.Node, level: int) -> bool:
        nonlocal count
        count += 1
        if not isinstance(node, allowed) and not (
            isinstance(node, nodes.Tuple) and node.ctx == "store"
        ):
            return False
        if isinstance(node, nodes.For):
            if node.recursive:
                return False
            loops[level + 1] = loops.get(level + 1, 0) + 1
            if not walk(node.iter, level) or not walk(node.target, level):
                return False
            inner = [*node.body, *node.else_] + ([node.test] if node.test else [])
            return all(walk(child, level + 1) for child in inner)
        if isinstance(node, nodes.TemplateData):
            data[level] = data.get(level, 0) + len(node.data)
        if isinstance(node, nodes.Output):
            n = sum(1 for child in node.nodes if not isinstance(child, nodes.TemplateData))
            expressions[level] = expressions.get(level, 0) + n
        return all(walk(child, level) for child in node.iter_child_nodes())

    if not all(walk(ast, 0) for ast in asts):
        return None
    top = max([0, *data, *expressions, *loops])
    levels = range(top + 1)
    return Shape(
        tuple(data.get(i, 0) for i in levels),
        tuple(expressions.get(i, 0) for i in levels),
        tuple(loops.get(i, 0) for i in levels),
        count,
    )


# --- environments -------------------------------------------------------------------------


@dataclass(frozen=True)
class Environments:
    """The sandboxed environments: made once, on first use (``environments()``)."""

    html: ImmutableSandboxedEnvironment  # autoescaped
    text: ImmutableSandboxedEnvironment  # subject and text bodies
    lenient: ImmutableSandboxedEnvironment  # trial renders only
    globals: frozenset[str]  # names every template has (range, dict, ...): not record fields

    def of(self, part: str) -> ImmutableSandboxedEnvironment:
        return self.html if part == "html" else self.text


@functools.cache
def environments() -> Environments:
    import jinja2
    from jinja2 import nodes
    from jinja2.compiler import CodeGenerator, Frame
    from jinja2.runtime import Context, LoopContext, markup_join
    from jinja2.sandbox import (
        ImmutableSandboxedEnvironment,
        SandboxedEscapeFormatter,
        SandboxedFormatter,
    )
    from jinja2.utils import Namespace, generate_lorem_ipsum
    from jinja2.utils import pass_context as jinja_pass_context
    from markupsafe import Markup

    _namespace[:] = [Namespace]

    class Generator(CodeGenerator):
        """Jinja's code generator, plus the budget's hooks: loops, ``~`` and literals."""

        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.loop_iters: dict[int, int] = {}  # id of a loop's iterable node -> body weight

        def visit_For(self, node: nodes.For, frame: Frame) -> None:
            # Jinja writes the iterable once (``for x in <iter>`` or, recursive, ``loop(<iter>``):
            # ``visit`` wraps it there, weighed by the size of the loop's body.
            weight = 1 + sum(1 for child in node.body for _ in child.find_all(nodes.Node))
            self.loop_iters[id(node.iter)] = weight
            super().visit_For(node, frame)

        def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
            weight = self.loop_iters.pop(id(node), None) if self.loop_iters else None
            if weight is None:
                return super().visit(node, *args, **kwargs)
            self.write("environment.counted(")
            super().visit(node, *args, **kwargs)
            self.write(f", {weight})")
            return None

        # An expression output into a buffer (macro, ``set`` or ``filter`` block, ``caller``)
        # is counted as it is made; the root output is counted by ``emit``.
        def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
            if frame.buffer is not None:
                self.write("environment.buffered(")
            super()._output_child_pre(node, frame, finalize)

        def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
            super()._output_child_post(node, frame, finalize)
            if frame.buffer is not None:
                self.write(")")

        def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
            if frame.eval_ctx.volatile:
                join = (
                    "(environment.join_markup if context.eval_ctx.volatile"
                    " else environment.join_str)"
                )
            elif frame.eval_ctx.autoescape:
                join = "environment.join_markup"
            else:
                join = "environment.join_str"
            self.write(f"{join}((")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write("))")

        def visit_List(self, node: nodes.List, frame: Frame) -> None:
            self.write("environment.checked_value(")
            super().visit_List(node, frame)
            self.write(")")

        def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
            self.write("environment.checked_value(")
            super().visit_Dict(node, frame)
            self.write(")")

        def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
            if node.ctx != "load":  # a loop or ``set`` target
                super().visit_Tuple(node, frame)
                return
            self.write("environment.checked_value(")
            super().visit_Tuple(node, frame)
            self.write(")")

    class BudgetTemplate(jinja2.Template):
        """Any render through these environments runs under a budget (the default one,
        unless a render already under way set its own)."""

        def render(self, *args: Any, **kwargs: Any) -> str:
            meter = getattr(ACTIVE, "meter", None)
            if meter is not None:
                return emit(self, dict(*args, **kwargs), meter)
            with metered(Meter()) as meter:
                return emit(self, dict(*args, **kwargs), meter)

    def checked_formatter(base: type[SandboxedFormatter]) -> type[SandboxedFormatter]:
        class Checked(base):  # type: ignore[valid-type,misc]
            """str.format under the budget: widths and precisions sized, output counted."""

            total = 0

            def format_field(self, value: Any, format_spec: str) -> Any:
                meter = current_meter()
                meter.tick()
                _digits(format_spec, meter, "str.format")
                meter.expect(meter.size(value), "str.format")
                out = super().format_field(value, format_spec)
                self.total += len(out)
                meter.expect(self.total, "str.format")
                return out

            def convert_field(self, value: Any, conversion: str | None) -> Any:
                out = super().convert_field(value, conversion)
                if conversion:
                    current_meter().expect(len(out), "str.format")
                return out

        return Checked

    formatters = {
        False: checked_formatter(SandboxedFormatter),
        True: checked_formatter(SandboxedEscapeFormatter),
    }

    class BudgetNamespace(Namespace):
        def __repr__(self) -> str:
            current_meter().expect(current_meter().size(self), "a namespace")
            return super().__repr__()

    def lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
        meter = current_meter()
        meter.expect(_int(n) * _int(max) * 12, "lipsum")
        return meter.made(generate_lorem_ipsum(n, html, min, max), "lipsum")

    def budget_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        pass_arg = getattr(func, "jinja_pass_arg", None)
        pre = _FILTER_CHECKS.get(name)
        what = f"filter {name}"

        # pass_context: the filter is never run at compile time (constant folding), where
        # no budget applies, and it gets what the filter it wraps needs.
        @jinja_pass_context
        def filtered(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
            meter = current_meter()
            meter.tick()
            if pre is not None:
                replaced = pre(meter, value, *args, **kwargs)
                if replaced is not None:
                    value = replaced
            if pass_arg is None:
                out = func(value, *args, **kwargs)
            elif pass_arg is jinja2.utils._PassArg.context:
                out = func(context, value, *args, **kwargs)
            elif pass_arg is jinja2.utils._PassArg.eval_context:
                out = func(context.eval_ctx, value, *args, **kwargs)
            else:
                out = func(context.environment, value, *args, **kwargs)
            if out is value or isinstance(out, Iterator):
                return out  # nothing new, or lazy: sized where it is used
            return meter.made(out, what)

        filtered.__name__ = getattr(func, "__name__", name)
        return filtered

    class Sandbox(ImmutableSandboxedEnvironment):
        """The immutable sandbox under a render budget: each way of building a value is
        sized first, and loops, calls, filters and operators count against the budget."""

        code_generator_class = Generator
        template_class = BudgetTemplate
        intercepted_binops = frozenset({"*", "**", "%", "+"})
        concat = staticmethod(_checked_concat)
        counted = staticmethod(_counted)
        checked_value = staticmethod(_checked_value)
        buffered = staticmethod(_buffered)

        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            self.filters = {k: budget_filter(k, f) for k, f in self.filters.items()}
            self.globals["lipsum"] = lipsum
            self.globals["namespace"] = BudgetNamespace

        @staticmethod
        def join_str(parts: tuple[Any, ...]) -> str:
            meter = current_meter()
            meter.tick()
            meter.expect(sum(meter.size(p) for p in parts), "'~'")
            return meter.made("".join(map(str, parts)), "'~'")

        @staticmethod
        def join_markup(parts: tuple[Any, ...]) -> str:
            meter = current_meter()
            meter.tick()
            meter.expect(sum(meter.size(p) for p in parts), "'~'")
            return meter.made(markup_join(parts), "'~'")

        def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
            meter = current_meter()
            meter.tick()
            what = f"'{operator}'"
            if operator == "**":
                if (
                    type(left) is int
                    and type(right) is int
                    and right > 0
                    and abs(left) > 1
                    and right * math.log2(abs(left)) > MAX_INT_BITS
                ):
                    raise OverBudget(
                        f"'**' would build an integer too large: over {MAX_INT_BITS:,} bits"
                    )
            elif operator == "*":
                if isinstance(left, int) and isinstance(right, int):
                    if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                        raise OverBudget(
                            f"'*' would build an integer too large: over {MAX_INT_BITS:,} bits"
                        )
                else:
                    for seq, times in ((left, right), (right, left)):
                        if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int):
                            meter.expect(meter.size(seq) * times, what)
            elif operator == "%":
                if isinstance(left, str | bytes):
                    check_percent(left, right, meter)
            elif isinstance(left, str | bytes | list | tuple) and isinstance(
                right, str | bytes | list | tuple
            ):
                meter.expect(meter.size(left) + meter.size(right), what)
            return meter.made(self.binop_table[operator](left, right), what)

        def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
            meter = current_meter()
            meter.tick()
            if type(obj) is LoopContext and args:  # a recursive loop's next level
                args = (_counted(args[0]), *args[1:])
            elif args:
                args = _check_method(obj, args, meter)
            out = super().call(context, obj, *args, **kwargs)
            if isinstance(out, str | list | tuple | dict | int | bytes) and out is not obj:
                return meter.made(out, "a call")
            return out

        def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
            wrapped = super().wrap_str_format(value)
            if wrapped is None:
                return None
            owner: str = value.__self__
            is_map = value.__name__ == "format_map"
            make = formatters[isinstance(owner, Markup)]

            def fmt(*args: Any, **kwargs: Any) -> str:
                if is_map:
                    if kwargs or len(args) != 1:
                        raise TypeError("format_map() takes exactly one argument")
                    return run((), args[0])
                return run(args, kwargs)

            def run(args: tuple[Any, ...], kwargs: Any) -> str:
                meter = current_meter()
                meter.tick()
                meter.expect(len(owner), "str.format")
                formatter = (
                    make(self, escape=owner.escape) if isinstance(owner, Markup) else make(self)
                )
                out = type(owner)(formatter.vformat(owner, args, kwargs))
                return meter.made(out, "str.format")

            return functools.update_wrapper(fmt, value)

    def make_env(*, autoescape: bool, undefined: type[jinja2.Undefined]) -> Sandbox:
        # Block tags on their own line leave no blank line behind (matters in text bodies).
        return Sandbox(
            autoescape=autoescape, undefined=undefined, trim_blocks=True, lstrip_blocks=True
        )

    text = make_env(autoescape=False, undefined=jinja2.StrictUndefined)
    return Environments(
        html=make_env(autoescape=True, undefined=jinja2.StrictUndefined),
        text=text,
        lenient=make_env(autoescape=False, undefined=jinja2.ChainableUndefined),
        globals=frozenset(text.globals),
    )


@functools.cache
def _inliner() -> css_inline.CSSInliner:
    import css_inline

    return css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


STYLE_TAG = re.compile(r"<style[\s>]", re.IGNORECASE)
BAD_SUBJECT = re.compile(r"[\r\n\0\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")

# --- checking a version at save -----------------------------------------------------------


def one_line(message: str) -> str:
    return " ".join(message.split())


def analyse(part: str, source: str) -> tuple[nodes.Template | None, list[str]]:
    """Parse and compile one part: (AST, problems with part and line)."""
    import jinja2
    from jinja2 import nodes

    env = environments().of(part)
    try:
        ast = env.parse(source)
        env.compile(ast)  # unknown filters and tests are reported here
    except jinja2.TemplateSyntaxError as exc:
        return None, [f"{part} line {exc.lineno}: {one_line(exc.message or str(exc))}"]
    except (RecursionError, SyntaxError, MemoryError):  # Jinja's parser or Python's compiler
        return None, [f"{part}: nested too deeply to compile (blocks, brackets or filters)"]
    except ValueError as exc:  # an integer literal past sys.get_int_max_str_digits()
        return None, [f"{part}: {one_line(str(exc).split(';')[0])}"]
    unsafe = []  # outermost first: reversed, a chain reads in source order
    for node in reversed(list(ast.find_all((nodes.Getattr, nodes.Getitem)))):
        attr: Any = None
        if isinstance(node, nodes.Getattr):
            attr = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            attr = node.arg.value
        if isinstance(attr, str) and attr.startswith("__"):
            unsafe.append((node.lineno, attr))
    problems = [
        f"{part} line {line}: access to {attr!r} is refused by the template sandbox"
        for line, attr in sorted(unsafe, key=lambda u: u[0])
    ]
    return ast, problems


def fields_used(asts: Iterable[nodes.Template]) -> set[str]:
    """Record fields the parts read: loop and ``set`` variables and globals excluded."""
    from jinja2 import meta

    used: set[str] = set()
    for ast in asts:
        used |= meta.find_undeclared_variables(ast)
    return used - environments().globals


def _tokens(source: str) -> list[tuple[bool, str]]:
    """Split a (valid) template into data and Jinja tokens (``{{ }}``, ``{% %}``, ``{# #}``)."""
    out: list[tuple[bool, str]] = []
    pos, n = 0, len(source)
    for m in _OPENER.finditer(source):
        start = m.start()
        if start < pos:
            continue
        kind = source[start + 1]
        if kind == "#":
            close = source.find("#}", start + 2)
            end = n if close < 0 else close + 2
        else:
            end = _token_end(source, start + 2, "}}" if kind == "{" else "%}")
            raw = _RAW.match(source, start)
            if raw:
                endraw = _ENDRAW.search(source, raw.end())
                end = endraw.end() if endraw else n
        if start > pos:
            out.append((False, source[pos:start]))
        out.append((True, source[start:end]))
        pos = end
    if pos < n:
        out.append((False, source[pos:]))
    return out


_OPENER = re.compile(r"\{[{%#]")
_RAW = re.compile(r"\{%-?\s*raw\s*-?%\}")
_ENDRAW = re.compile(r"\{%-?\s*endraw\s*-?%\}")


def _token_end(source: str, i: int, closer: str) -> int:
    quote = ""
    while i < len(source):
        c = source[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif source.startswith(closer, i):
            return i + 2
        i += 1
    return len(source)


class _Protected:
    """A template with each Jinja token replaced by a plain lowercase marker.

    HTML parsers and html2text leave such words alone, where they would escape
    ``>`` or ``_`` inside a token; ``restore`` puts the tokens back.
    """

    def __init__(self, source: str):
        nonce = token_hex(4)
        self.pattern = re.compile(rf"jinjatok(\d+)z{nonce}")
        self.tokens: list[str] = []
        parts = []
        for is_token, text in _tokens(source):
            if is_token:
                parts.append(f"jinjatok{len(self.tokens)}z{nonce}")
                self.tokens.append(text)
            else:
                parts.append(text)
        self.marked = "".join(parts)

    def restore(self, text: str) -> str:
        return self.pattern.sub(lambda m: self.tokens[int(m[1])], text)


class _Shape(HTMLParser):
    """Where the markers sit: in text, in which attribute of which tag, between which tags."""

    IMPLIED = frozenset({"html", "head", "body", "tbody", "colgroup", "style", "link"})

    def __init__(self, pattern: re.Pattern[str]):
        super().__init__(convert_charrefs=True)
        self.pattern = pattern
        self.events: list[tuple[str, ...]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.IMPLIED:
            self.events.append(("tag", tag))
        for name, value in attrs:
            if self.pattern.search(name):
                self.events.append(("inside-tag",))  # a token where an attribute goes
            self.events.extend(("attr", tag, name, m) for m in self.pattern.findall(value or ""))

    def handle_data(self, data: str) -> None:
        self.events.extend(("data", m) for m in self.pattern.findall(data))

    def handle_comment(self, data: str) -> None:
        self.events.extend(("comment", m) for m in self.pattern.findall(data))

    @classmethod
    def of(cls, html: str, pattern: re.Pattern[str]) -> list[tuple[str, ...]]:
        parser = cls(pattern)
        parser.feed(html)
        parser.close()
        return parser.events


def inline_once(html: str) -> str | None:
    """The HTML template with its ``<style>`` CSS inlined, or None when that must wait.

    Inlining parses the HTML, and an HTML parser moves text around tables, so
    the result is kept only when every Jinja token survives in the same place
    (same text or attribute, same order, same tags in between). Otherwise the
    CSS is inlined after each render instead.
    """
    if not STYLE_TAG.search(html):
        return html
    p = _Protected(html)
    before = _Shape.of(p.marked, p.pattern)
    if ("inside-tag",) in before:
        return None
    try:
        inlined = _inliner().inline(p.marked)
    except ValueError:
        return None
    if _Shape.of(inlined, p.pattern) != before:
        return None
    return p.restore(inlined)


def inline_rendered(html: str) -> str:
    if not STYLE_TAG.search(html):
        return html
    try:
        return _inliner().inline(html)
    except ValueError as exc:
        raise TemplateError(f"CSS inlining failed: {one_line(str(exc))}") from None


def html_to_text(html: str) -> str:
    """A plain-text template from an HTML template, Jinja tokens kept as they were.

    html2text is slow (a few milliseconds a body), so this runs once per saved
    version, never per message.
    """
    import html2text

    p = _Protected(html)
    h = html2text.HTML2Text()
    h.body_width = 0  # no wrapping: it could split a line inside a token
    h.unicode_snob = True
    h.images_to_alt = True
    h.ignore_emphasis = True
    text = "\n".join(line.rstrip() for line in h.handle(p.marked).splitlines())
    return p.restore(re.sub(r"\n{3,}", "\n\n", text)).strip() + "\n"


def lenient_render_error(source: str) -> str | None:
    try:
        environments().lenient.from_string(source).render()
    except Exception as exc:  # any failure is the answer
        return one_line(f"{type(exc).__name__}: {exc}")
    return None


def derive_text(html: str, html_ast: nodes.Template) -> tuple[str, nodes.Template]:
    text = html_to_text(html)
    ast, problems = analyse("text", text)
    if ast is not None and not problems:
        stray = fields_used([ast]) - fields_used([html_ast])
        if stray:
            problems = [f"it uses {', '.join(sorted(stray))}, which the HTML does not"]
        elif lenient_render_error(html) is None:
            error = lenient_render_error(text)
            problems = [f"it does not render: {error}"] if error else []
    if ast is None or problems:
        raise TemplateError(
            "could not derive a text body from the HTML "
            f"({'; '.join(problems)}): give one explicitly (text= / --text-file)"
        )
    return text, ast
