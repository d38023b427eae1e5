"""Template sources: the sandboxed Jinja2 environments and the work done once, at save.

``templates`` keeps the model, the store and rendering; this module holds
what checks and prepares a version when it is saved: parsing each part (with
part and line in every error), the fields a source uses, CSS inlined once
where the Jinja tokens survive it (``css_inline``), and a text body derived
from the HTML (``html2text``, far too slow to run per message).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from secrets import token_hex
from typing import TYPE_CHECKING, Any

from sysmail_ops.errors import TemplateError

if TYPE_CHECKING:  # Jinja2, css_inline and html2text load with the first template (~20 ms)
    import css_inline
    from jinja2 import nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_REPEAT = 1_000_000  # longest string or list a template may build with ``*``

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
    from jinja2.runtime import Context
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

    class Sandbox(ImmutableSandboxedEnvironment):
        """The immutable sandbox, plus a cap on ``*`` and ``**`` so a template cannot eat
        memory."""

        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
            if operator == "**":
                if isinstance(right, int | float) and abs(right) > 1000:
                    raise SecurityError("exponent too large for a template")
            else:
                for seq, times in ((left, right), (right, left)):
                    if (
                        isinstance(seq, str | list | tuple)
                        and isinstance(times, int)
                        and len(seq) * times > MAX_REPEAT
                    ):
                        raise SecurityError("'*' would build a value too large for a template")
            return super().call_binop(context, operator, left, right)

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
