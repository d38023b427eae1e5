"""Template sources from outside: saved, or refused naming the part and line; never a crash."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import SysmailError, TemplateError, ValidationError
from sysmail_ops.templates import catalog as templates
from sysmail_ops.templates.render import analyse

PROPS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

NESTED = [
    "{% if a %}" * 100 + "x" + "{% endif %}" * 100,
    "{% for x in a %}" * 25 + "x" + "{% endfor %}" * 25,
    "{{ " + "(" * 300 + "a" + ")" * 300 + " }}",
    "{{ " + "[" * 300 + "]" * 300 + " }}",
    "{{ " + "-" * 3000 + "1 }}",
    "{{ a" + "|e" * 300 + " }}",
    "{{ a" + "+a" * 300 + " }}",
    "{{ a" + ".b" * 3000 + " }}",
]


@pytest.mark.parametrize("source", [*NESTED, "{{ 9" + "9" * 5000 + " }}"])
def test_sources_too_deep_or_too_long_to_compile_are_one_problem(source: str) -> None:
    ast, problems = analyse("html", source)
    assert ast is None and len(problems) == 1, problems
    assert problems[0].startswith("html: ")
    assert "\n" not in problems[0]


@pytest.mark.parametrize("source", NESTED[:3])
def test_saving_such_a_template_is_a_template_error(ws: Workspace, source: str) -> None:
    with pytest.raises(TemplateError, match="html: nested too deeply to compile"):
        templates.add_template(ws, "deep", object_type="case", subject="s", html=source)
    assert "deep" not in [t.name for t in templates.list_templates(ws)]


@pytest.mark.parametrize("part", ["subject", "html", "text"])
def test_a_lone_surrogate_in_a_source_is_refused(ws: Workspace, part: str) -> None:
    parts = {"subject": "s", "html": "<p>x</p>", "text": "x"}
    parts[part] = "a\ud800b"
    with pytest.raises(ValidationError, match="not valid Unicode text"):
        templates.add_template(ws, "odd", object_type="case", **parts)


jinja_ish = st.text(
    alphabet="{}%#()[]|.+-*/~'\"ab x019_=<>!,:\n\\",
    max_size=120,
)


@PROPS
@given(st.text(max_size=200) | jinja_ish)
@example("{% raw %}")
@example("{{ a.__class__ }}")
@example("{{ '\\ud800' }}")
def test_any_source_analyses_to_an_ast_or_problems(source: str) -> None:
    ast, problems = analyse("html", source)
    assert (ast is None) <= bool(problems)
    assert all("\n" not in p for p in problems)


@settings(PROPS, max_examples=100)
@given(subject=jinja_ish, html=jinja_ish | st.text(max_size=100))
@example(subject="s", html="{% if a %}" * 100 + "{% endif %}" * 100)
@example(subject="s\ud800", html="x")
def test_add_template_saves_or_refuses_with_a_documented_error(
    ws: Workspace, subject: str, html: str
) -> None:
    try:
        t = templates.add_template(ws, "fuzz", object_type="case", subject=subject, html=html)
    except SysmailError as exc:
        assert "\n" not in str(exc)
        return
    try:
        assert templates.get_template(ws, "fuzz").version == t.version
    finally:
        templates.remove_template(ws, "fuzz")
