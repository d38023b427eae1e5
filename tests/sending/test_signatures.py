"""The account's signature: ``{{ sender.signature }}`` in templates, appended where not placed."""

from __future__ import annotations

import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer

from sysmail_ops.config import signing
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import ValidationError
from sysmail_ops.sending.batch import SendOptions, send, send_batch
from sysmail_ops.templates import catalog as templates

FAST = SendOptions(backoff=0.01)
SIG_HTML = '<p class="sig">Bob <b>Smith</b><br>ACME Support</p>'
SIG_TEXT = "Bob Smith\nACME Support"


def parts(server: SMTPTestServer) -> tuple[str, str]:
    (got,) = server.messages
    html = got.message.get_body(("html",))
    text = got.message.get_body(("plain",))
    assert html is not None and text is not None
    return html.get_content().replace("\r\n", "\n"), text.get_content().replace("\r\n", "\n")


@pytest.fixture
def signed(ws: Workspace, smtp_server: SMTPTestServer) -> None:
    bind(ws, smtp_server, display_name="ACME Support")
    signing.set_signature(ws, "service", html=SIG_HTML, text=SIG_TEXT)


def test_appended_where_the_template_does_not_place_it(
    ws: Workspace, smtp_server: SMTPTestServer, signed: None
) -> None:
    templates.add_template(
        ws, "plain", object_type="case", subject="Hi {{ name }}",
        html="<html><body><p>Hello {{ name }}</p></body></html>",
    )  # fmt: skip
    send(ws, "service", "plain", to="eve@example.org", record={"name": "Eve"}, options=FAST)
    html, text = parts(smtp_server)
    assert html.count(SIG_HTML) == 1
    assert html.index(SIG_HTML) < html.index("</body>")  # inside the body, at its end
    assert text.rstrip().endswith("-- \n" + SIG_TEXT)
    assert text.index("Hello Eve") < text.index(SIG_TEXT)


def test_placed_by_the_template_once_unescaped_and_not_appended(
    ws: Workspace, smtp_server: SMTPTestServer, signed: None
) -> None:
    templates.add_template(
        ws, "placed", object_type="case",
        subject="From {{ sender.name }}",
        html="<p>Hello {{ name }} &lt;{{ sender.address }}&gt;</p>{{ sender.signature }}<p>PS</p>",
        text="Hello {{ name }}\n{{ sender.signature }}\nPS",
        fields=["name"],  # sender is the account's, not a field the record must bring
    )  # fmt: skip
    send(ws, "service", "placed", to="eve@example.org", record={"name": "Eve"}, options=FAST)
    (got,) = smtp_server.messages
    assert str(got.message["Subject"]) == "From ACME Support"
    html, text = parts(smtp_server)
    assert html.count(SIG_HTML) == 1 and html.index(SIG_HTML) < html.index("PS")
    assert "&lt;b&gt;" not in html  # the admin's HTML, not escaped
    assert "&lt;sender@example.com&gt;" in html
    assert text.count(SIG_TEXT) == 1 and "-- \n" not in text  # placed, so not appended


def test_auto_off_appends_nothing_but_placement_still_works(
    ws: Workspace, smtp_server: SMTPTestServer, signed: None
) -> None:
    signing.set_signature(ws, "service", auto=False)
    templates.add_template(ws, "plain", object_type="case", subject="Hi", html="<p>Hello</p>")
    send(ws, "service", "plain", to="eve@example.org", record={}, options=FAST)
    html, text = parts(smtp_server)
    assert "Bob" not in html and "Bob" not in text


def test_a_record_field_named_sender_wins_and_the_batch_needs_no_sender_field(
    ws: Workspace, smtp_server: SMTPTestServer, signed: None
) -> None:
    templates.add_template(
        ws, "legacy", object_type="case", subject="Hi", html="<p>from {{ sender }}</p>"
    )
    send(ws, "service", "legacy", to="eve@example.org", record={"sender": "Ann"}, options=FAST)
    html, _text = parts(smtp_server)
    assert "from Ann" in html
    templates.add_template(
        ws, "sig", object_type="case", subject="Hi {{ name }}", html="{{ sender.signature }}"
    )
    result = send_batch(
        ws, "service", "sig", [{"email": "a@example.org", "name": "A"}], options=FAST
    )
    assert result.counts == {"sent": 1}


def test_text_only_signature_becomes_html_and_html_only_becomes_text(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    bind(ws, smtp_server)
    templates.add_template(ws, "plain", object_type="case", subject="Hi", html="<p>Hello</p>")
    signing.set_signature(ws, "service", text="Ann <ann@example.com>")
    send(ws, "service", "plain", to="eve@example.org", record={}, options=FAST)
    html, text = parts(smtp_server)
    assert "Ann &lt;ann@example.com&gt;" in html  # escaped: it was text
    assert text.rstrip().endswith("-- \nAnn <ann@example.com>")


def test_preview_without_an_account_shows_an_example_sender(ws: Workspace) -> None:
    templates.add_template(
        ws, "sig", object_type="case", subject="From {{ sender.name }}",
        html="{{ sender.signature }}",
    )  # fmt: skip
    shown = templates.preview(ws, "sig", {})
    assert shown.subject == "From Customer Service" and "Example Ltd." in shown.html


def test_off_removes_it_and_bad_input_writes_nothing(
    ws: Workspace, smtp_server: SMTPTestServer, signed: None
) -> None:
    with pytest.raises(ValidationError, match="NUL"):
        signing.set_signature(ws, "service", html="<p>\0</p>")
    with pytest.raises(ValidationError, match="at most"):
        signing.set_signature(ws, "service", text="x" * 70_000)
    with pytest.raises(ValidationError, match="--off cannot"):
        signing.set_signature(ws, "service", html="<p>x</p>", off=True)
    from sysmail_ops.config import accounts

    a = accounts.get_account(ws, "service")
    assert (a.signature_html, a.signature_text) == (SIG_HTML, SIG_TEXT)
    a = signing.set_signature(ws, "service", off=True)
    assert (a.signature_html, a.signature_text) == (None, None)
