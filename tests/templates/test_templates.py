"""Object email templates: versions, sandboxed rendering, checks at save, CSS, text, CLI."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import pytest

from sysmail_ops.cli import main
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import NotFoundError, TemplateError, ValidationError
from sysmail_ops.templates import catalog as templates
from sysmail_ops.templates import render as template_source

CASE_HTML = """<html><body>
<p>Hello {{ name }},</p>
<p>case <b>{{ case_id }}</b> is now {{ status }}.</p>
</body></html>
"""
RECORD = {"name": "Eve", "case_id": "C-1", "status": "open"}


def add_case(ws: Workspace, **kw: Any) -> templates.Template:
    values: dict[str, Any] = {
        "object_type": "case",
        "subject": "Case {{ case_id }}",
        "html": CASE_HTML,
        "text": "Hello {{ name }}, case {{ case_id }} is now {{ status }}.\n",
        "fields": ["name", "case_id", "status"],
        "description": "case status changes",
    }
    values.update(kw)
    return templates.add_template(ws, "case-update", **values)


def a_template(html: str, *, subject: str = "s", text: str = "t") -> templates.Template:
    """A version built by hand, as if stored without the checks made at save."""
    return templates.Template(
        name="hand",
        version=1,
        object_type="case",
        subject=subject,
        html=html,
        text=text,
        text_derived=False,
        html_inlined=None,
        fields=None,
        builtin=False,
        created_at=templates.utcnow(),
    )


# --- versions -----------------------------------------------------------------------------


def test_every_edit_adds_a_version_and_keeps_the_old_ones(ws: Workspace) -> None:
    v1 = add_case(ws)
    assert (v1.version, v1.text_derived, v1.builtin) == (1, False, False)
    v2 = templates.edit_template(ws, "case-update", subject="Your case {{ case_id }}")
    v3 = templates.edit_template(ws, "case-update", description="new words")
    assert (v2.version, v3.version) == (2, 3)
    assert templates.list_versions(ws, "case-update") == [1, 2, 3]
    assert templates.get_template(ws, "case-update") == v3
    assert templates.get_template(ws, "case-update", 1) == v1
    assert templates.get_template(ws, "case-update", 2).subject == "Your case {{ case_id }}"
    # unchanged fields are carried over
    assert (v3.html, v3.text, v3.fields, v3.object_type) == (v1.html, v1.text, v1.fields, "case")
    assert v3.subject == v2.subject
    current = [t for t in templates.list_templates(ws) if t.name == "case-update"]
    assert [t.version for t in current] == [3]
    assert templates.list_templates(ws, "case") == current
    old = templates.preview(ws, "case-update", RECORD, version=1)
    assert old.subject == "Case C-1"
    assert templates.preview(ws, "case-update", RECORD).subject == "Your case C-1"
    with pytest.raises(NotFoundError, match="has no version 9"):
        templates.get_template(ws, "case-update", 9)
    with pytest.raises(NotFoundError, match="no template named 'nope'"):
        templates.get_template(ws, "nope")


def test_edit_without_a_change(ws: Workspace) -> None:
    v1 = add_case(ws)
    with pytest.raises(ValidationError, match="nothing to change"):
        templates.edit_template(ws, "case-update")
    with pytest.raises(ValidationError, match="cannot edit template field"):
        templates.edit_template(ws, "case-update", version=7)
    assert templates.edit_template(ws, "case-update", subject=v1.subject) == v1
    assert templates.list_versions(ws, "case-update") == [1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "bad name"}, "must be 1-40 letters"),
        ({"name": "x" * 41}, "must be 1-40 letters"),
        ({"object_type": ""}, "object type"),
        ({"subject": "  "}, "needs a subject"),
        ({"subject": "a\nb"}, "one line"),
        ({"html": ""}, "needs a html"),
        ({"fields": ["ok", "not ok"]}, "field name 'not ok'"),
        ({"description": "two\nlines"}, "line breaks"),
    ],
)
def test_bad_input_writes_nothing(ws: Workspace, change: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {
        "name": "t1",
        "object_type": "case",
        "subject": "s",
        "html": "<p>x</p>",
        "text": "x",
    }
    values.update(change)
    name = values.pop("name")
    with pytest.raises(ValidationError, match=message):
        templates.add_template(ws, name, **values)
    assert not [t for t in templates.list_templates(ws) if not t.builtin]


def test_duplicate_name_is_refused(ws: Workspace) -> None:
    add_case(ws)
    with pytest.raises(ValidationError, match="already exists"):
        add_case(ws)
    assert templates.list_versions(ws, "case-update") == [1]


# --- rendering ----------------------------------------------------------------------------


def test_a_missing_field_is_an_error_naming_it(ws: Workspace) -> None:
    add_case(ws)
    with pytest.raises(TemplateError, match="field `status` is missing from the record"):
        templates.preview(ws, "case-update", {"name": "Eve", "case_id": "C-1"})
    with pytest.raises(TemplateError, match="subject: field `case_id` is missing"):
        templates.preview(ws, "case-update", {"name": "Eve", "status": "x"})
    with pytest.raises(ValidationError, match="must be a mapping"):
        templates.preview(ws, "case-update", ["not", "a", "record"])  # type: ignore[arg-type]


def test_html_is_autoescaped_text_and_subject_are_not(ws: Workspace) -> None:
    add_case(ws, subject="Case {{ case_id }} for {{ name }}")
    r = templates.preview(ws, "case-update", {**RECORD, "name": "<b>Eve</b> & Co"})
    assert "Hello &lt;b&gt;Eve&lt;/b&gt; &amp; Co," in r.html
    assert "<b>Eve</b>" not in r.html
    assert r.text.startswith("Hello <b>Eve</b> & Co, case C-1")
    assert r.subject == "Case C-1 for <b>Eve</b> & Co"


def test_template_syntax_in_data_stays_literal(ws: Workspace) -> None:
    add_case(ws, subject="Case {{ case_id }}")
    r = templates.preview(
        ws, "case-update", {**RECORD, "case_id": "{{7*7}}", "name": "{% if 1 %}x"}
    )
    assert r.subject == "Case {{7*7}}"
    assert "{{7*7}}" in r.html and "{{7*7}}" in r.text and "49" not in r.html + r.text
    assert "{% if 1 %}x" in r.text


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ name['__class__'] }}",
    ],
)
def test_sandbox_payloads_are_refused(ws: Workspace, payload: str) -> None:
    with pytest.raises(TemplateError, match="refused by the template sandbox"):
        templates.add_template(
            ws, "evil", object_type="case", subject="s", html=f"<p>{payload}</p>"
        )
    with pytest.raises(NotFoundError):
        templates.get_template(ws, "evil")
    # a version that skipped the checks at save still cannot escape when rendered
    compiled = templates.compile_template(a_template(f"<p>{payload}</p>"))
    with pytest.raises(TemplateError, match="refused by the sandbox") as info:
        compiled.render({"name": "Eve"})
    assert "object" not in str(info.value).split("sandbox:")[0]
    assert "subprocess" not in str(info.value) and "Popen" not in str(info.value)


def test_the_sandbox_caps_huge_values() -> None:
    compiled = templates.compile_template(a_template("<p>{{ 'ab' * n }}</p>"))
    assert compiled.render({"n": 3}).html == "<p>ababab</p>"
    with pytest.raises(TemplateError, match="too large"):
        compiled.render({"n": 10**9})
    with pytest.raises(TemplateError, match="too large"):
        templates.compile_template(a_template("{{ 10 ** n }}")).render({"n": 10**6})


def test_cr_lf_in_a_rendered_subject_is_refused(ws: Workspace) -> None:
    add_case(ws, subject="Case {{ case_id }}")
    with pytest.raises(TemplateError, match="header injection"):
        templates.preview(ws, "case-update", {**RECORD, "case_id": "C-1\r\nBcc: all@example.com"})
    with pytest.raises(TemplateError, match="header injection"):
        templates.preview(ws, "case-update", {**RECORD, "case_id": "C-1\nX"})
    # the subject is stripped first: a trailing newline is harmless
    r = templates.preview(ws, "case-update", {**RECORD, "case_id": "C-1\n"})
    assert r.subject == "Case C-1"


def test_compiled_once_per_version(ws: Workspace) -> None:
    v1 = add_case(ws)
    c1 = templates.compile_template(v1)
    assert templates.compile_template(templates.get_template(ws, "case-update")) is c1
    assert c1.fields_used == {"name", "case_id", "status"}
    v2 = templates.edit_template(ws, "case-update", subject="{{ name }}")
    c2 = templates.compile_template(v2)
    assert c2 is not c1 and (c2.name, c2.version) == ("case-update", 2)
    assert c2.render(RECORD) == templates.Rendered(
        "Eve", c1.render(RECORD).html, "Hello Eve, case C-1 is now open."
    )


def test_template_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(TemplateError("field `x` is missing")))  # noqa: S301
    assert isinstance(err, ValidationError) and str(err) == "field `x` is missing"


# --- checks at save -----------------------------------------------------------------------


def test_syntax_errors_at_save_name_part_and_line(ws: Workspace) -> None:
    html = "<p>one</p>\n<p>two</p>\n<p>{{ name }</p>\n"
    with pytest.raises(TemplateError) as info:
        templates.add_template(
            ws, "broken", object_type="case", subject="{% if %}", html=html, text="ok\n{{ x"
        )
    message = str(info.value)
    assert "subject line 1" in message and "html line 3" in message and "text line 2" in message
    assert "\n" not in message
    with pytest.raises(NotFoundError):
        templates.get_template(ws, "broken")
    with pytest.raises(TemplateError, match=r"html line 2: .*endfor"):
        templates.add_template(
            ws, "broken", object_type="case", subject="s", html="<ul>\n{% for x in xs %}<li>"
        )
    with pytest.raises(TemplateError, match="No filter named 'nosuch'"):
        templates.add_template(ws, "broken", object_type="case", subject="s", html="{{ a|nosuch }}")
    add_case(ws)
    with pytest.raises(TemplateError, match="html line 1"):
        templates.edit_template(ws, "case-update", html="{% endif %}")
    assert templates.list_versions(ws, "case-update") == [1]


def test_a_field_used_but_not_declared_is_reported_at_save(ws: Workspace) -> None:
    with pytest.raises(TemplateError, match=r"field `case_id` is not defined \(declared: name\)"):
        templates.add_template(
            ws,
            "case-note",
            object_type="case",
            subject="Case {{ case_id }}",
            html="<p>{{ name }}</p>",
            fields=["name"],
        )
    with pytest.raises(TemplateError, match="fields `agent`, `case_id` are not defined"):
        add_case(ws, fields=["name", "status"], text="{{ agent }} {{ case_id }}")
    with pytest.raises(NotFoundError):
        templates.get_template(ws, "case-note")
    # loop and `set` variables and Jinja's globals are not record fields
    t = templates.add_template(
        ws,
        "case-list",
        object_type="case",
        subject="{{ items|length }} cases",
        html=(
            "{% set total = items|length %}{% for item in items %}"
            "<p>{{ loop.index }} {{ item.id }} {{ cycler('a', 'b').next() }}</p>{% endfor %}"
            "{{ total }} {% for i in range(2) %}{{ i }}{% endfor %}"
        ),
        fields=["items", "owner"],
    )
    assert t.fields == ("items", "owner")
    assert templates.check(ws, "case-list") == {
        "name": "case-list",
        "version": 1,
        "used": ["items"],
        "declared": ["items", "owner"],
        "undeclared_used": [],
        "declared_unused": ["owner"],
    }
    # an edit that drops a declared field still in use is refused
    with pytest.raises(TemplateError, match="field `items` is not defined"):
        templates.edit_template(ws, "case-list", fields=["owner"])
    # fields=[] drops the declaration
    assert templates.edit_template(ws, "case-list", fields=[]).fields is None
    assert templates.check(ws, "case-list")["declared"] is None


# --- CSS ------------------------------------------------------------------------------------

STYLED = """<html><head><style>p.lead { color: #c01c28; } td { padding: 4px; }</style></head>
<body><p class="lead">Hello {{ name }}</p>
<p>{% if n > 1 %}{{ n }} cases{% else %}one case{% endif %}:
<a href="{{ url }}?a=1&b=2">open</a></p></body></html>
"""


def test_css_is_inlined_once_at_save(ws: Workspace) -> None:
    t = templates.add_template(ws, "styled", object_type="case", subject="s", html=STYLED, text="x")
    assert t.html_inlined is not None
    assert "<style" not in t.html_inlined
    assert 'style="color: #c01c28;"' in t.html_inlined
    for token in ("{{ name }}", "{% if n > 1 %}", "{{ n }}", "{% else %}", "{{ url }}"):
        assert token in t.html_inlined
    r = templates.preview(ws, "styled", {"name": "<Eve>", "n": 2, "url": "https://example.com/x"})
    assert '<p class="lead" style="color: #c01c28;">Hello &lt;Eve&gt;</p>' in r.html
    assert "2 cases" in r.html and 'href="https://example.com/x?a=1&amp;b=2"' in r.html


def test_css_is_inlined_after_render_when_the_parser_would_move_tokens(ws: Workspace) -> None:
    # an HTML parser moves the loop tags out of the table: inlining must wait for the data
    html = (
        "<style>td { color: red; }</style><table>"
        "{% for row in rows %}<tr><td>{{ row }}</td></tr>{% endfor %}</table>"
    )
    t = templates.add_template(ws, "rows", object_type="case", subject="s", html=html, text="x")
    assert t.html_inlined is None
    r = templates.preview(ws, "rows", {"rows": ["a", "b"]})
    assert (
        '<tr><td style="color: red;">a</td></tr><tr><td style="color: red;">b</td></tr>' in r.html
    )
    assert "<style" not in r.html
    # tokens where an attribute goes, or inside the CSS, also wait
    for html in (
        "<style>p{color:red}</style><p {{ attrs }}>x</p>",
        "<style>p{color:{{ c }}}</style><p>x</p>",
    ):
        t = templates.edit_template(ws, "rows", html=html)
        assert t.html_inlined is None
    r = templates.preview(ws, "rows", {"c": "blue"})
    assert '<p style="color: blue;">x</p>' in r.html


def test_html_without_style_is_stored_as_it_is(ws: Workspace) -> None:
    t = add_case(ws)
    assert t.html_inlined == CASE_HTML
    assert templates.preview(ws, "case-update", RECORD).html.startswith(
        "<html><body>\n<p>Hello Eve"
    )


# --- derived text body ----------------------------------------------------------------------

LETTER = """<html><head><title>{{ subject_line }}</title><style>p { margin: 0; }</style></head>
<body><h1>Hello {{ user_name }}</h1>
<p>Your case <b>{{ case_id }}</b> costs *{{ amount * 2 }}* {{ note|default("_none_") }}.</p>
<ul>{% for item in items %}<li>{{ item.first_name }}</li>{% endfor %}</ul>
<p><a href="{{ case_url }}">Open the case</a></p></body></html>
"""


def test_text_body_is_derived_once_at_save_and_stays_editable(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = template_source.html_to_text

    def counting(html: str) -> str:
        calls.append(html)
        return real(html)

    monkeypatch.setattr(template_source, "html_to_text", counting)
    t = templates.add_template(ws, "letter", object_type="case", subject="s", html=LETTER)
    assert t.text_derived and len(calls) == 1
    for token in ("{{ user_name }}", "{{ amount * 2 }}", '{{ note|default("_none_") }}'):
        assert token in t.text
    assert "{% for item in items %}" in t.text and "{{ item.first_name }}" in t.text
    assert "({{ case_url }})" in t.text
    record = {
        "subject_line": "x",
        "user_name": "Eve_Smith",
        "case_id": "C_1",
        "amount": 21,
        "items": [{"first_name": "Ann"}, {"first_name": "Bob"}],
        "case_url": "https://example.com/c",
    }
    compiled = templates.compile_template(templates.get_template(ws, "letter"))
    for _ in range(20):
        text = compiled.render(record).text
    assert len(calls) == 1, "html2text runs at save, never per message"
    assert "# Hello Eve_Smith" in text and "*42* _none_" in text and "C_1" in text
    assert "Ann" in text and "Bob" in text and "(https://example.com/c)" in text
    assert "<b>" not in text

    # an HTML edit derives the text again; an own text body is kept across HTML edits
    v2 = templates.edit_template(ws, "letter", html=LETTER.replace("Hello", "Hi"))
    assert v2.text_derived and "# Hi {{ user_name }}" in v2.text and len(calls) == 2
    v3 = templates.edit_template(ws, "letter", text="Hi {{ user_name }}\n")
    assert (v3.text_derived, v3.text) == (False, "Hi {{ user_name }}\n")
    v4 = templates.edit_template(ws, "letter", html=LETTER.replace("Hello", "Dear"))
    assert (v4.text_derived, v4.text) == (False, "Hi {{ user_name }}\n")
    assert len(calls) == 2
    v5 = templates.edit_template(ws, "letter", text="")
    assert v5.text_derived and "# Dear {{ user_name }}" in v5.text


def test_a_text_body_that_cannot_be_derived_is_reported(ws: Workspace) -> None:
    # the block ends inside an HTML comment: html2text drops it, the rest would not parse
    html = "<p>{% if x %}<span>{{ y }}</span><!-- {% endif %} --></p>"
    with pytest.raises(TemplateError, match=r"could not derive a text body.*--text-file"):
        templates.add_template(ws, "odd", object_type="case", subject="s", html=html)
    t = templates.add_template(
        ws, "odd", object_type="case", subject="s", html=html, text="{{ y }}"
    )
    assert templates.preview(ws, "odd", {"x": 1, "y": 2}).html == "<p><span>2</span><!--  --></p>"
    assert t.text == "{{ y }}"


# --- built-in templates and removal --------------------------------------------------------

BUILTIN = {"connection-test", "report-mail", "subscription-failure", "survey-reminder"}


def test_builtin_templates_are_seeded_once_and_edits_are_kept(ws: Workspace) -> None:
    seeded = {t.name: t for t in templates.list_templates(ws)}
    assert set(seeded) == BUILTIN
    assert all(t.builtin and t.version == 1 and t.fields for t in seeded.values())
    assert seeded["connection-test"].object_type == "system"
    assert seeded["subscription-failure"].fields == ("subscription", "slot", "error", "output_path")
    assert seeded["survey-reminder"].object_type == "survey"
    assert templates.ensure_builtin(ws) == []
    edited = templates.edit_template(ws, "survey-reminder", subject="Please: {{ campaign }}")
    assert edited.builtin and edited.version == 2
    again, created_key = Workspace.init(ws.home)
    assert not created_key
    assert templates.get_template(again, "survey-reminder") == edited
    assert templates.list_versions(again, "survey-reminder") == [1, 2]
    assert templates.list_versions(again, "connection-test") == [1]
    with pytest.raises(ValidationError, match="built-in template"):
        templates.remove_template(ws, "connection-test")


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_templates_render_their_declared_fields(ws: Workspace, name: str) -> None:
    t = templates.get_template(ws, name)
    result = templates.check(ws, name)
    assert result["undeclared_used"] == [] and result["declared_unused"] == []
    assert t.html_inlined is not None
    styles = re.findall(r"<style[^>]*>(.*?)</style>", t.html_inlined, re.S)
    assert all(css.strip().startswith("@media") for css in styles)  # only what cannot be inlined
    record = {f: f"<{f}>" for f in t.fields or ()}
    r = templates.preview(ws, name, record)
    assert r.subject and "\n" not in r.subject
    for f in t.fields or ():  # every field a part uses arrives there (escaped in the HTML)
        assert f in t.html or f in t.text or f in t.subject
        assert f"&lt;{f}&gt;" in r.html or f not in t.html
        assert f"<{f}>" in r.text or f not in t.text or f == "output_path"


def test_remove_deletes_every_version_of_an_unused_template(ws: Workspace) -> None:
    add_case(ws)
    templates.edit_template(ws, "case-update", subject="v2")
    assert templates.list_versions(ws, "case-update") == [1, 2]
    templates.remove_template(ws, "case-update")
    assert templates.list_versions(ws, "case-update") == []
    with pytest.raises(NotFoundError):
        templates.get_template(ws, "case-update")
    with pytest.raises(NotFoundError):
        templates.remove_template(ws, "case-update")


# --- CLI --------------------------------------------------------------------------------------


class CLI:
    def __init__(self, ws: Workspace, capsys: pytest.CaptureFixture[str]):
        self.ws, self.capsys = ws, capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        code = main(["--home", str(self.ws.home), "templates", *argv])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> CLI:
    return CLI(ws, capsys)


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_cli_add_list_show_edit_preview_check_remove(cli: CLI, tmp_path: Path) -> None:
    html = write(tmp_path / "case.html", STYLED)
    code, out, err = cli(
        "add", "case-new", "--object", "case", "--subject", "New case for {{ name }}",
        "--html-file", html, "--fields", "name, n,url", "--description", "new cases",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("added case-new v1 (object case; text body derived from the HTML")
    assert "CSS inlined at save" in out

    listed = cli.json("list")
    assert [t["name"] for t in listed] == ["case-new", *sorted(BUILTIN)]
    assert listed[0]["fields"] == ["name", "n", "url"] and listed[0]["text_derived"] is True
    code, out, _ = cli("list", "--object", "case")
    assert code == 0 and "case-new" in out and "survey-reminder" not in out
    assert out.rstrip().endswith("1 template")

    code, out, err = cli("edit", "case-new", "--subject", "Case for {{ name }}")
    assert code == 0 and out.startswith("saved case-new v2"), err
    shown = cli.json("show", "case-new")
    assert (shown["version"], shown["versions"]) == (2, [1, 2])
    assert shown["subject"] == "Case for {{ name }}" and shown["created_at"].endswith("Z")
    assert cli.json("show", "case-new", "--version", "1")["subject"] == "New case for {{ name }}"
    code, out, _ = cli("show", "case-new")
    assert code == 0 and "versions: 1, 2" in out and "--- HTML ---" in out and "--- text ---" in out

    record = write(tmp_path / "r.json", json.dumps({"name": "<Eve>", "n": 1, "url": "https://e.x"}))
    got = cli.json("preview", "case-new", "--record", record)
    assert got["subject"] == "Case for <Eve>"
    assert "Hello &lt;Eve&gt;" in got["html"] and "Hello <Eve>" in got["text"]
    assert cli.json("preview", "case-new", "--record", record, "--version", "1")["subject"] == (
        "New case for <Eve>"
    )
    code, out, _ = cli("preview", "case-new", "--record", record)
    assert code == 0 and out.startswith("Subject: Case for <Eve>\n")
    assert out.index("--- text ---") < out.index("--- HTML ---")

    assert cli.json("check", "case-new")["declared_unused"] == []
    code, out, _ = cli("edit", "case-new", "--fields", "name,n,url,extra")
    assert code == 0
    assert cli.json("check", "case-new")["declared_unused"] == ["extra"]
    code, out, _ = cli("check", "case-new")
    assert code == 0 and "declared, not used: extra" in out

    own = write(tmp_path / "own.txt", "Text for {{ name }}\n")
    code, out, _ = cli("edit", "case-new", "--text-file", own, "--object", "lead")
    assert code == 0 and "text body own" in out and "(object lead;" in out

    code, out, _ = cli("remove", "case-new")
    assert (code, out) == (0, "removed template case-new (4 versions)\n")
    assert [t["name"] for t in cli.json("list")] == sorted(BUILTIN)


def test_cli_errors_are_one_line_and_exit_2(cli: CLI, tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.html", "<p>\n{{ name }</p>")
    code, out, err = cli("add", "x", "--object", "case", "--subject", "s", "--html-file", bad)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "html line 2" in err and err.startswith("sysmail-ops: error:")
    code, _, err = cli(
        "add", "x", "--object", "case", "--subject", "s", "--html-file", str(tmp_path / "none")
    )
    assert code == 2 and "cannot read --html-file" in err
    good = write(tmp_path / "good.html", "<p>{{ name }}</p>")
    code, _, err = cli(
        "add", "x", "--object", "case", "--subject", "s", "--html-file", good, "--fields", "nme"
    )
    assert code == 2 and "field `name` is not defined" in err
    assert cli("add", "x", "--object", "case", "--subject", "s", "--html-file", good)[0] == 0

    empty = write(tmp_path / "empty.json", json.dumps({}))
    code, _, err = cli("preview", "x", "--record", empty)
    assert code == 2 and "field `name` is missing from the record" in err
    listish = write(tmp_path / "list.json", "[1, 2]")
    code, _, err = cli("preview", "x", "--record", listish)
    assert code == 2 and "one JSON object" in err
    code, _, err = cli("preview", "x", "--record", write(tmp_path / "bad.json", "{nope"))
    assert code == 2 and "is not valid JSON" in err
    code, _, err = cli("show", "nope")
    assert code == 2 and "no template named 'nope'" in err
    code, _, err = cli("remove", "connection-test")
    assert code == 2 and "built-in" in err
    code, _, err = cli("edit", "x")
    assert code == 2 and "nothing to change" in err
    # argparse usage errors also exit 2
    with pytest.raises(SystemExit) as info:
        cli("add", "y", "--subject", "s")
    assert info.value.code == 2


@pytest.mark.parametrize(
    "subject",
    [
        "Hello =?utf-8?q?there=0D=0ABcc:_x@example.com?= {{ name }}",
        "Hello =?utf-8?b?dGhlcmUNCkJjYzogeEBleGFtcGxlLmNvbQ==?=",
        "Hello\u2028Bcc: x@example.com",
        "Hello\x0bthere",
    ],
)
def test_a_subject_that_would_fail_every_send_is_refused_at_save(
    ws: Workspace, subject: str
) -> None:
    with pytest.raises(ValidationError, match="line break"):
        templates.add_template(ws, "bad", object_type="case", subject=subject, html="<p>x</p>")
    add_case(ws)
    with pytest.raises(ValidationError, match="line break"):
        templates.edit_template(ws, "case-update", subject=subject)
    assert templates.list_versions(ws, "case-update") == [1]
