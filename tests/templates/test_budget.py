"""The render budget: wall time, output size and loop iterations for every render.

Each payload runs in a child process under a 300 MB address-space cap (a template
that allocated a gigabyte would die of MemoryError there, not get a budget error):
at save (``add_template``, ``edit_template``) with the payload in the source, and at
send (``send``, ``send_batch`` through a real SMTP server) with the size coming from
the record. The child prints what it got and how long it took; it must answer with the
budget error, within 5 s, and exit cleanly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from smtp_testserver import SMTPTestServer

import sysmail_ops
from sysmail_ops.config import accounts, settings
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import TemplateError, ValidationError
from sysmail_ops.records import sendlog
from sysmail_ops.sending.batch import send, send_batch
from sysmail_ops.templates import catalog as templates

MEMORY_CAP = 300 * 2**20
ANSWER_WITHIN = 5.0  # seconds, measured in the child: a behaviour bound, not a benchmark

CHILD = r"""
import json, resource, sys, time
cap = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
job = json.loads(sys.argv[1])
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import SysmailError
from sysmail_ops.sending.batch import SendOptions, send, send_batch
from sysmail_ops.templates import catalog as templates

ws = Workspace.open(job["home"])
fast = SendOptions(backoff=0.01)
if job["mode"] == "edit":
    templates.add_template(ws, "evil", object_type="case", subject="s", html="<p>fine</p>")
elif job["mode"] != "add":
    templates.add_template(ws, "evil", object_type="case", subject="s", html=job["html"])
started = time.perf_counter()
try:
    if job["mode"] == "add":
        templates.add_template(ws, "evil", object_type="case", subject="s", html=job["html"])
    elif job["mode"] == "edit":
        templates.edit_template(ws, "evil", html=job["html"])
    elif job["mode"] == "send":
        send(ws, "service", "evil", to="eve@example.com", record=job["record"], options=fast)
    elif job["mode"] == "batch":
        send_batch(ws, "service", "evil", job["records"], options=fast)
    error = None
except SysmailError as exc:
    error = f"{type(exc).__name__}: {exc}"
seconds = time.perf_counter() - started
# still healthy: the same process renders and sends a harmless message afterwards
templates.add_template(ws, "fine", object_type="case", subject="ok", html="<p>{{ n }}</p>")
if job["mode"] in ("send", "batch"):
    send(ws, "service", "fine", to="ok@example.com", record={"n": 1}, options=fast)
else:
    assert templates.preview(ws, "fine", {"n": 1}).html == "<p>1</p>"
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps({"error": error, "seconds": seconds, "peak_mb": peak}))
"""


def child(ws: Workspace, **job: Any) -> dict[str, Any]:
    """Run one job in a fresh process under the memory cap; what it printed."""
    job["home"] = str(ws.home)
    # glibc reserves 64 MB of address space per malloc arena (one per thread, DuckDB has a
    # few): one arena, so that the cap measures memory used, not address space reserved.
    # and the child imports the same sysmail_ops as this process
    package_root = str(Path(sysmail_ops.__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "MALLOC_ARENA_MAX": "1", "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(job), str(MEMORY_CAP)],
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def assert_budget_error(answer: dict[str, Any], template: str, version: int) -> None:
    error = answer["error"]
    assert error is not None, "the payload was accepted"
    assert "RenderBudgetError" in error or "over the render budget" in error, error
    assert f"template {template!r} v{version}" in error, error
    assert any(limit in error for limit in ("render_", "bits")), error  # the limit it hit
    assert answer["seconds"] < ANSWER_WITHIN, answer


def doubling(step: str, times: int = 40) -> str:
    return "{% set a = seed %}" + step * times + "{{ a|length }}"


# Each payload with its size in the source: refused when saved, whatever the record.
AT_SAVE = {
    # the issue's examples
    "percent-width": "{{ '%0999999999d' % 1 }}",
    "center": "{{ 'a'|center(999999999) }}",
    "format-width": "{{ '{:>999999999}'.format('a') }}",
    "nested-ranges": "{% for i in range(100000) %}{% for j in range(100000) %}.{% endfor %}"
    "{% endfor %}",
    "power-tower": "{{ ((9**999)**999)**999 }}",
    "concat-doubling": doubling("{% set a = a ~ a %}").replace("seed", "'ab'"),
    # more of each kind
    "percent-star": "{{ '%*d' % (999999999, 1) }}",
    "percent-precision": "{{ '%.999999999f' % 1.5 }}",
    "format-nested-width": "{{ '{:>{}}'.format('a', 999999999) }}",
    "format-map": "{{ '{x:>999999999}'.format_map({'x': 1}) }}",
    "format-filter": "{{ '%0999999999d'|format(1) }}",
    "indent": "{{ 'a\nb'|indent(999999999, true) }}",
    "replace-empty": "{{ ('a' * 100000)|replace('', 'b' * 1000) }}",
    "str-ljust": "{{ 'a'.ljust(999999999) }}",
    "int-to-bytes": "{{ (1).to_bytes(999999999, 'big') }}",
    "batch-fill": "{{ [1]|batch(999999999, 0)|list|length }}",
    "join-separator": "{{ range(100000)|join('x' * 1000) }}",
    "plus-doubling": doubling("{% set a = a + a %}").replace("seed", "'ab'"),
    "list-doubling": doubling("{% set a = [a, a] %}")
    .replace("{{ a|length }}", "{{ a }}")
    .replace("seed", "'ab'"),
    "namespace-loop": "{% set ns = namespace(a='ab') %}{% for i in range(64) %}"
    "{% set ns.a = ns.a ~ ns.a %}{% endfor %}{{ ns.a|length }}",
    "block-doubling": doubling("{% set a %}{{ a }}{{ a }}{% endset %}").replace("seed", "'ab'"),
    "output-in-loop": "{% set s = 'x' * 1000000 %}{% for i in range(100000) %}{{ s }}{% endfor %}",
    "exponential-macro": "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}"
    "{% endmacro %}{{ f(60) }}",
    "lipsum": "{{ lipsum(9999999) }}",
}

# The same kinds with the size coming from the record: saved, then refused when sent.
AT_SEND: dict[str, tuple[str, dict[str, Any]]] = {
    "percent-width": ("{{ fmt % n }}", {"fmt": "%0999999999d", "n": 1}),
    "center": ("{{ name|center(width) }}", {"name": "a", "width": 999999999}),
    "format-width": ("{{ fmt.format(name) }}", {"fmt": "{:>999999999}", "name": "a"}),
    "nested-ranges": (
        "{% for i in range(n) %}{% for j in range(n) %}.{% endfor %}{% endfor %}",
        {"n": 100000},
    ),
    "power-tower": ("{{ ((b ** e) ** e) ** e }}", {"b": 9, "e": 999}),
    "concat-doubling": (doubling("{% set a = a ~ a %}"), {"seed": "ab"}),
    "percent-star": ("{{ '%*d' % (width, 1) }}", {"width": 999999999}),
    "format-nested-width": ("{{ '{:>{}}'.format(name, width) }}", {"name": "a", "width": 10**9}),
    "indent": ("{{ text|indent(width, true) }}", {"text": "a\nb", "width": 999999999}),
    "replace-count": ("{{ text|replace('', new) }}", {"text": "a" * 100000, "new": "b" * 1000}),
    "join-separator": ("{{ items|join(sep) }}", {"items": list(range(10000)), "sep": "x" * 1000}),
    "list-doubling": (
        "{% set ns = namespace(a=seed) %}{% for i in range(n) %}{% set ns.a = [ns.a, ns.a] %}"
        "{% endfor %}{{ ns.a }}",
        {"seed": "ab", "n": 64},
    ),
    "loop-over-record": (
        "{% for x in items %}{% for y in items %}.{% endfor %}{% endfor %}",
        {"items": list(range(1000))},
    ),
    "big-value-in-loop": (
        "{% for i in range(n) %}{{ big }}{% endfor %}",
        {"n": 1000, "big": "x" * 100000},
    ),
    "exponential-macro": (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(depth) }}",
        {"depth": 60},
    ),
}


ISSUE_EXAMPLES = {
    "percent-width",
    "center",
    "format-width",
    "nested-ranges",
    "power-tower",
    "concat-doubling",
}


def cases(table: dict[str, Any], modes: tuple[str, ...]) -> list[Any]:
    """The issue's examples in every run; the rest (a child process each) as slow tests."""
    return [
        pytest.param(
            key,
            mode,
            id=f"{key}-{mode}",
            marks=() if key in ISSUE_EXAMPLES and mode == modes[0] else (pytest.mark.slow,),
        )
        for key in table
        for mode in modes
    ]


@pytest.mark.parametrize(("payload", "mode"), cases(AT_SAVE, ("add", "edit")))
def test_a_payload_is_refused_at_save(ws: Workspace, payload: str, mode: str) -> None:
    answer = child(ws, mode=mode, html=f"<p>{AT_SAVE[payload]}</p>")
    assert_budget_error(answer, "evil", 1 if mode == "add" else 2)
    assert templates.list_versions(ws, "evil") == ([] if mode == "add" else [1])


@pytest.mark.parametrize(("payload", "mode"), cases(AT_SEND, ("send",)))
def test_a_payload_is_refused_at_send_and_nothing_is_sent(
    ws: Workspace, smtp_server: SMTPTestServer, service: accounts.Account, payload: str, mode: str
) -> None:
    html, record = AT_SEND[payload]
    answer = child(ws, mode=mode, html=f"<p>{html}</p>", record=record)
    assert_budget_error(answer, "evil", 1)
    # only the harmless message the child sent afterwards went out
    assert [m.rcpt_tos for m in smtp_server.messages] == [("ok@example.com",)]
    assert list(sendlog.list_logs(ws, limit=None).template) == ["fine"]


def test_a_batch_with_one_budget_breaking_record_sends_nothing(
    ws: Workspace, smtp_server: SMTPTestServer, service: accounts.Account
) -> None:
    records = [{"email": f"c{i}@example.com", "name": f"C{i}", "width": 10} for i in range(30)]
    records[17]["width"] = 999999999
    answer = child(ws, mode="batch", html="<p>{{ name|center(width) }}</p>", records=records)
    assert_budget_error(answer, "evil", 1)
    assert "record 18:" in answer["error"] and "nothing was sent" in answer["error"]
    assert [m.rcpt_tos for m in smtp_server.messages] == [("ok@example.com",)]
    assert list(sendlog.list_logs(ws, limit=None).template) == ["fine"]


# --- the limits are workspace settings ------------------------------------------------------


def add(ws: Workspace, html: str, name: str = "t") -> templates.Template:
    return templates.add_template(ws, name, object_type="case", subject="s", html=html)


def test_the_defaults_and_the_settings_that_change_them(ws: Workspace) -> None:
    budget = templates.render_budget(ws)
    assert budget == templates.Budget(seconds=2.0, output=5_000_000, loops=100_000)
    listed = {s.name: s for s in settings.list_settings(ws)}
    for name in ("render_time_limit", "render_output_limit", "render_loop_limit"):
        assert listed[name].is_default
    assert settings.set_setting(ws, "render_time_limit", "0.5") == 0.5
    assert settings.set_setting(ws, "render_output_limit", "20_000") == 20_000
    assert settings.set_setting(ws, "render_loop_limit", "1,000") == 1000
    assert templates.render_budget(ws) == templates.Budget(seconds=0.5, output=20_000, loops=1000)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("render_time_limit", "0", "from 0.05 to 60 seconds"),
        ("render_time_limit", "61", "from 0.05 to 60 seconds"),
        ("render_time_limit", "soon", "number of seconds"),
        ("render_time_limit", "nan", "number of seconds"),
        ("render_output_limit", "999", "from 1,000 to 100,000,000 characters"),
        ("render_output_limit", "5MB", "whole number of characters"),
        ("render_output_limit", "-5", "whole number of characters"),
        ("render_loop_limit", "0", "from 10 to 10,000,000 iterations"),
        ("render_loop_limit", True, "whole number of iterations"),
    ],
)
def test_bad_limits_are_refused(ws: Workspace, name: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings.set_setting(ws, name, value)
    assert settings.list_settings(ws)[0].is_default


def test_a_lower_loop_limit_applies_at_preview_save_and_send(
    ws: Workspace, smtp_server: SMTPTestServer, service: accounts.Account
) -> None:
    add(ws, "<p>{% for x in items %}{{ x }}{% endfor %}</p>")
    assert templates.preview(ws, "t", {"items": list(range(60))}).html.startswith("<p>0123")
    settings.set_setting(ws, "render_loop_limit", 50)
    with pytest.raises(templates.RenderBudgetError) as info:
        templates.preview(ws, "t", {"items": list(range(60))})
    assert str(info.value) == (
        "template 't' v1 html: over the render budget: "
        "more than 50 loop iterations (render_loop_limit)"
    )
    # one budget for the whole render: 20 in the HTML and 20 in the derived text
    assert templates.preview(ws, "t", {"items": list(range(20))})
    with pytest.raises(templates.RenderBudgetError, match="render_loop_limit"):
        add(ws, "<p>{% for x in range(60) %}.{% endfor %}</p>", name="t2")
    with pytest.raises(templates.RenderBudgetError, match=r"'t' v2 html.*render_loop_limit"):
        templates.edit_template(ws, "t", html="<p>{% for x in range(60) %}.{% endfor %}</p>")
    with pytest.raises(templates.RenderBudgetError, match="render_loop_limit"):
        send(ws, "service", "t", to="eve@example.com", record={"items": list(range(60))})
    records = [{"email": "a@example.com", "items": [1]}, {"email": "b@example.com", "items": []}]
    records.append({"email": "c@example.com", "items": list(range(60))})
    with pytest.raises(ValidationError, match=r"record 3: .*render_loop_limit.*nothing was sent"):
        send_batch(ws, "service", "t", records)
    assert smtp_server.messages == []
    assert sendlog.list_logs(ws, limit=None).empty
    settings.reset_setting(ws, "render_loop_limit")
    assert templates.preview(ws, "t", {"items": list(range(60))})


def test_a_lower_output_limit_applies(ws: Workspace) -> None:
    add(ws, "<p>{{ name }}</p>")
    settings.set_setting(ws, "render_output_limit", 1000)
    assert templates.preview(ws, "t", {"name": "x" * 450})  # HTML and derived text: ~900
    with pytest.raises(templates.RenderBudgetError, match="over 1,000 characters"):
        templates.preview(ws, "t", {"name": "x" * 600})
    with pytest.raises(templates.RenderBudgetError, match="over 1,000 characters"):
        add(ws, "<p>{{ 'x' * 2000 }}</p>", name="t2")  # a value larger than the output
    with pytest.raises(templates.RenderBudgetError, match="4 x render_output_limit"):
        add(ws, "{% set a = 'x' * 900 %}" + "{% set b = a|upper %}" * 5, name="t3")


def test_a_lower_time_limit_applies(ws: Workspace) -> None:
    slow = (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(depth) }}"
    )
    add(ws, slow)
    assert templates.preview(ws, "t", {"depth": 3}).html == ""
    settings.set_setting(ws, "render_time_limit", 0.05)
    with pytest.raises(templates.RenderBudgetError, match=r"took more than 0.05 s"):
        templates.preview(ws, "t", {"depth": 40})


def test_the_cli_answers_one_line(ws: Workspace, tmp_path: Path, capsys: Any) -> None:
    from sysmail_ops.cli import main

    add(ws, "<p>{{ name|center(width) }}</p>")
    record = tmp_path / "r.json"
    record.write_text(json.dumps({"name": "a", "width": 10**9}))
    code = main(["--home", str(ws.home), "templates", "preview", "t", "--record", str(record)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "template 't' v1 html: over the render budget" in err


# --- what stays as it was -------------------------------------------------------------------


def render(source: str, record: dict[str, Any] | None = None) -> str:
    """The text part (not autoescaped) of a version stored without the checks at save."""
    t = templates.Template(
        name="hand",
        version=1,
        object_type="case",
        subject="s",
        html="<p>h</p>",
        text=source,
        text_derived=False,
        html_inlined=None,
        fields=None,
        builtin=False,
        created_at=templates.utcnow(),
    )
    return templates.compile_template(t).render(record or {}).text


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "{{ '%-4s|%(a)s' % {'a': 1} if false else '%05.1f' % 3.14159 }}",
            "003.1",
        ),
        ("{{ '%(a)s-%(b)03d' % {'a': 'x', 'b': 7} }}", "x-007"),
        ("{{ '{:>6}|{:.2f}|{x}'.format('ab', 2.5, x=1) }}", "    ab|2.50|1"),
        ("{{ '{v:^7}'.format_map({'v': 'mid'}) }}", "  mid  "),
        ("{{ 'ab'|center(6) }}|{{ 'a\nb'|indent(2) }}", "  ab  |a\n  b"),
        ("{{ 'aaa bbb ccc'|wordwrap(4) }}", "aaa\nbbb\nccc"),
        ("{{ 'hello world'|truncate(9, end='~', leeway=0) }}", "hello~"),
        ("{{ 'banana'|replace('a', 'o', 2) }}", "bonona"),
        (
            "{{ [1, 2, 3]|join(', ') }}|{{ [1, 2, 3, 4, 5]|batch(2)|list }}",
            "1, 2, 3|[[1, 2], [3, 4], [5]]",
        ),
        ("{{ [1, 2, 3, 4]|slice(2)|list }}|{{ [1, 2, 3]|sum }}", "[[1, 2], [3, 4]]|6"),
        ("{{ [[1], [2]]|sum(start=[]) }}", "[1, 2]"),
        (
            "{{ 2 ** 64 }}|{{ 'ab' * 3 }}|{{ [1] + [2] }}|{{ 'a' ~ 1 ~ 'b' }}",
            "18446744073709551616|ababab|[1, 2]|a1b",
        ),
        ("{{ 7 * 6 }}|{{ 7 % 4 }}|{{ 1 + 2 }}|{{ (2 ** 0.5)|round(3) }}", "42|3|3|1.414"),
        (
            "{% set ns = namespace(n=0) %}{% for i in range(5) %}{% set ns.n = ns.n + i %}"
            "{% endfor %}{{ ns.n }}",
            "10",
        ),
        ("{% for x in 'abc' %}{{ loop.index }}{{ loop.cycle('-', '+') }}{% endfor %}", "1-2+3-"),
        (
            "{% for x in [1, 2, 3] if x > 1 %}{{ x }}{{ loop.length }}{% else %}none{% endfor %}",
            "2232",
        ),
        ("{% for x in [] %}{{ x }}{% else %}none{% endfor %}", "none"),
        ("{% for n in tree recursive %}{{ n.name }}({{ loop(n.kids) }}){% endfor %}", "a(b())c()"),
        (
            "{% macro m(x) %}<{{ x }}>{% endmacro %}{{ m(1) }}"
            "{% set s %}{{ m(2) }}{% endset %}{{ s }}",
            "<1><2>",
        ),
        (
            "{{ dict(a=1)|tojson }}|{{ {'b': [1, (2, 3)]} }}|{{ 'x'.upper() }}",
            "{\"a\": 1}|{'b': [1, (2, 3)]}|X",
        ),
        (
            "{{ ','.join(['a', 'b']) }}|{{ 'a-b'.split('-') }}|{{ 'ab'.zfill(4) }}",
            "a,b|['a', 'b']|00ab",
        ),
        ("{{ lipsum(2, html=false)|wordcount > 10 }}", "True"),
    ],
)
def test_templates_within_the_budget_render_as_before(source: str, expected: str) -> None:
    tree = {"tree": [{"name": "a", "kids": [{"name": "b", "kids": []}]}, {"name": "c", "kids": []}]}
    assert render(source, tree) == expected


def test_a_large_but_honest_render_passes() -> None:
    rows = [{"id": i, "name": f"Customer {i}", "amount": i * 1.5} for i in range(10_000)]
    html = (
        "{% macro cell(v) %}<td>{{ v }}</td>{% endmacro %}<table>"
        "{% for r in rows %}<tr>{{ cell(r.id) }}{{ cell(r.name|upper) }}"
        "{{ cell('%.2f' % r.amount) }}{{ cell('{:>8}'.format(loop.index)) }}</tr>{% endfor %}"
        "</table>{{ rows|map(attribute='amount')|sum }}"
    )
    out = render(html, {"rows": rows})
    assert out.count("<tr>") == 10_000 and out.endswith("74992500.0")


def test_an_error_leaves_no_meter_behind() -> None:
    from sysmail_ops.templates import render as source

    with pytest.raises(TemplateError, match="render_loop_limit"):
        render("{% for i in range(100000) %}{% for j in range(10) %}{% endfor %}{% endfor %}")
    assert getattr(source.ACTIVE, "meter", None) is None
    assert render("{% for i in range(99000) %}{% endfor %}ok") == "ok"  # a fresh budget


def test_a_record_too_small_to_matter_is_not_rendered_twice() -> None:
    from sysmail_ops.templates import render as source

    envs = source.environments()
    simple = "<p>{{ name }}</p>{% for x in items %}{% if x.ok %}{{ x.v }}{% endif %}{% endfor %}"
    shape = source.shape_of([envs.html.parse(simple)])
    assert shape is not None and shape.loops == (0, 1) and shape.expressions == (1, 1)
    for busy in ("{{ name|upper }}", "{{ f() }}", "{{ a ~ b }}", "{{ [a] }}", "{{ a * 2 }}"):
        assert source.shape_of([envs.html.parse(busy)]) is None
    small = templates.Budget(output=20_000, loops=300)
    compiled = templates.compile_template(
        templates.Template(
            name="hand",
            version=1,
            object_type="case",
            subject="s",
            html=simple,
            text="{% for x in items %}{{ x.v }}{% endfor %}",
            text_derived=False,
            html_inlined=None,
            fields=None,
            builtin=False,
            created_at=templates.utcnow(),
        )
    )
    records = [
        {"name": "n" * n, "items": [{"ok": True, "v": "v" * v}] * k}
        for n in (0, 5, 50, 500, 5000)
        for v in (0, 5, 50, 500)
        for k in (0, 1, 3, 20, 100)
    ]
    judged = 0
    for record in records:
        if compiled._shape is not None and compiled._shape.fits(record, small):
            judged += 1
            compiled.render(record, small)  # the bound holds: this never goes over
        else:
            try:
                compiled.check_budget(record, small)
            except templates.RenderBudgetError:
                continue
    assert judged  # some records are judged by their size alone
    with pytest.raises(templates.RenderBudgetError):
        compiled.check_budget({"name": "x", "items": [{"ok": True, "v": 1}] * 200}, small)
