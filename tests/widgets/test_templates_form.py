"""The Object Template Management form driven from Python: create, preview, errors with their
line, edit into a new version, diff two versions."""

from __future__ import annotations

import json

from conftest import bind
from smtp_testserver import SMTPTestServer

from sysmail_ops import sending
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.templates import catalog
from sysmail_ops.widgets.templates import NEW, TemplateManagement


def _new(form: TemplateManagement) -> None:
    form.pick.value = NEW
    form.name.value = "case-update"
    form.object_type.value = "case"
    form.record.value = '{"first_name": "Ana", "case_id": "C-7"}'
    form.subject.value = "Case {{ case_id }} updated"
    form.html.value = "<p>Hello {{ first_name }},</p>\n<p>case {{ case_id }} moved.</p>"


def test_create_with_live_preview(ws: Workspace) -> None:
    form = TemplateManagement(ws)
    _new(form)
    assert "Case C-7 updated" in form.preview_subject.value
    assert "Hello Ana" in form.preview_html.value and 'sandbox=""' in form.preview_html.value
    assert "Hello Ana" in form.preview_text.value  # derived text part
    assert "renders without problems" in form.problems.value
    form.save.click()
    assert "saved case-update v1" in form.status.value, form.status.value
    t = catalog.get_template(ws, "case-update")
    assert t.object_type == "case" and t.version == 1 and t.text_derived
    assert form.pick.value == "case-update" and "v1" in form.versions.value


def test_preview_errors_carry_their_line_and_nothing_is_saved(ws: Workspace) -> None:
    form = TemplateManagement(ws)
    _new(form)
    form.html.value = "<p>Hello {{ first_name }}</p>\n<p>{% if case_id %}open</p>\n"
    assert "html line 2" in form.problems.value or "html line 3" in form.problems.value
    assert "sysmail-error" in form.problems.value
    form.html.value = "<p>Hello {{ first_name }}</p>"
    form.fields.value = "case_id"
    assert "`first_name`" in form.problems.value and "not defined" in form.problems.value
    form.fields.value = ""
    form.record.value = '{"case_id": "C-7"}'
    assert "field `first_name` is missing" in form.problems.value
    form.record.value = "{not json"
    assert "not valid JSON" in form.problems.value
    form.save.click()  # the sources are fine, so Save works; the broken ones never were saved
    form.pick.value = NEW
    form.name.value = "broken"
    form.object_type.value = "case"
    form.subject.value = "{{ oops"
    form.html.value = "<p>x</p>"
    form.save.click()
    assert "sysmail-error" in form.status.value and "subject line 1" in form.status.value
    assert [t.name for t in catalog.list_templates(ws) if t.name == "broken"] == []


def test_versions_and_diff(ws: Workspace) -> None:
    form = TemplateManagement(ws)
    _new(form)
    form.save.click()
    form.html.value = "<p>Hi {{ first_name }},</p>\n<p>case {{ case_id }} moved.</p>"
    form.save.click()
    assert "saved case-update v2" in form.status.value
    assert catalog.list_versions(ws, "case-update") == [1, 2]
    assert form.diff_from.value == 1 and form.diff_to.value == 2
    assert "-&lt;p&gt;Hello" in form.diff.value and "+&lt;p&gt;Hi" in form.diff.value
    form.save.click()  # nothing changed: no v3
    assert "nothing changed" in form.status.value
    assert catalog.list_versions(ws, "case-update") == [1, 2]


def test_skeleton_and_recent_sends(ws: Workspace, smtp_server: SMTPTestServer) -> None:
    bind(ws, smtp_server)
    catalog.add_template(ws, "notice", object_type="case", subject="About {{ case_id }}",
                         html="<p>{{ first_name }}: {{ case_id }}</p>")  # fmt: skip
    sending.send(ws, "service", "notice", to="ana@example.com",
                 record={"first_name": "Ana", "case_id": "C-9"})  # fmt: skip
    form = TemplateManagement(ws)
    form.pick.value = "notice"
    # a picked template fills the sample with its fields, keeping the values typed so far
    assert json.loads(form.record.value) == {"case_id": "C-1001", "first_name": "Ana"}
    assert "About C-1001" in form.preview_subject.value
    assert "ana@example.com" in form.recent.value and "About C-9" in form.recent.value
    form.record.value = '{"case_id": "C-1", "other": 1}'
    form.skeleton.click()
    assert (
        '"case_id": "C-1"' in form.record.value
        and '"first_name": "[first_name]"' in form.record.value
    )
    assert "other" not in form.record.value
