"""The report mail of both bundled reports, as its readers open it: headless Chromium at a
phone's width (390 px) and a desktop's (900 px). The page must never be wider than the
screen, every image must load and say what it shows, and the numbers read as numbers."""

from __future__ import annotations

import base64
import re
from email.message import EmailMessage
from typing import Any

import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer
from system_servers import artifact_dir

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.sending import batch as sending
from sysmail_ops.sending.batch import SendOptions
from sysmail_ops.subscriptions import model as subscriptions
from sysmail_ops.subscriptions import runs
from sysmail_ops.templates import catalog as templates

pytestmark = pytest.mark.slow

WIDTHS = (390, 900)
CHECK = """() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    images: [...document.images].map(i => ({
        complete: i.complete, width: i.naturalWidth, shown: i.clientWidth,
        alt: (i.getAttribute("alt") || "").trim()})),
    text: document.body.innerText,
})"""


def page_of(message: EmailMessage) -> str:
    """The HTML part with its cid: images as data: URIs, as a mail client resolves them."""
    part = message.get_body(preferencelist=("html",))
    assert isinstance(part, EmailMessage)
    html = str(part.get_content())
    for sub in message.walk():
        cid = str(sub.get("Content-ID", "")).strip("<>")
        if cid and sub.get_content_maintype() == "image":
            blob = base64.b64encode(sub.get_payload(decode=True)).decode()
            html = html.replace(f"cid:{cid}", f"data:{sub.get_content_type()};base64,{blob}")
    assert "cid:" not in html
    return html


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert isinstance(part, EmailMessage)
    return str(part.get_content())


@pytest.fixture
def mails(ws: Workspace, smtp_server: SMTPTestServer) -> dict[str, EmailMessage]:
    """Both bundled reports test-sent through the real pipeline, with a log to report on."""
    bind(ws, smtp_server, "reports", kind="other")
    templates.add_template(
        ws, "note", object_type="case", subject="Note {{ n }}", html="<p>{{ n }}</p>", fields=["n"]
    )
    smtp_server.reject_rcpt = {"nobody@example.com": "550 5.1.1 no such user, a long reply"}
    to = ["ann@example.com", "bob@example.com", "nobody@example.com"]
    fast = SendOptions(backoff=0.01)
    sending.send(ws, "reports", "note", to=to, record={"n": 1}, options=fast)
    out = {}
    for report in ("delivery_report", "sales_pipeline"):
        subscriptions.add_subscription(
            ws,
            report,
            notebook=report,
            recipients=["boss@example.com"],
            cron="0 8 * * mon",
            timezone="Europe/Berlin",
            account="reports",
            owner="owner@example.com",
            formats=("html_body", "html_attachment", "csv"),
        )
        before = len(smtp_server.messages)
        result = runs.test_send(ws, report, "boss@example.com")
        assert result.counts == {"sent": 1}
        assert len(smtp_server.messages) == before + 1
        out[report] = smtp_server.messages[-1].message
    return out


def test_report_mails_fit_phone_and_desktop_screens(
    mails: dict[str, EmailMessage], page: Any
) -> None:
    shots = artifact_dir()
    for report, message in mails.items():
        html = page_of(message)
        summary = str(message.get_body(preferencelist=("plain",)).get_content()).splitlines()[0]
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            page.set_content(html, wait_until="load")
            got = page.evaluate(CHECK)
            assert got["scrollWidth"] <= got["innerWidth"], (report, width, got["scrollWidth"])
            assert got["images"], report
            for image in got["images"]:
                assert image["complete"] and image["width"] > 0, (report, width, image)
                assert image["alt"] and image["alt"] != "chart", (report, image)
                assert image["shown"] <= width  # shrunk to the column, never wider
                assert image["width"] >= 2 * image["shown"] * 0.95  # drawn at 2x
            text = got["text"]
            assert text.count(summary) == 1, (report, width)  # once: the first line
            assert text.lstrip().startswith(summary)
            assert "report.html" in text  # the note for the attached page
            assert not re.search(r"\d\d:\d\d:\d\d", text)  # times to the minute
            page.screenshot(path=str(shots / f"report-mail-{report}-{width}.png"), full_page=True)

    pipeline = page_of(mails["sales_pipeline"])
    assert "EUR\xa01,111,000" in pipeline or "EUR&nbsp;1,111,000" in pipeline
    assert "open_opportunities" not in pipeline and "Open opportunities" in pipeline
    delivery = page_of(mails["delivery_report"])
    assert re.search(r">\s*66\.7%\s*<", delivery)  # 2 of 3 sent, as a percentage
    assert "No failed" not in delivery  # there was a failure: its table is shown
    assert "SMTP code" in delivery and "smtp_code" not in delivery


def test_the_text_part_is_the_summary_and_aligned_tables(mails: dict[str, EmailMessage]) -> None:
    text = text_of(mails["sales_pipeline"])
    lines = text.splitlines()
    assert lines[0].startswith("EMEA: 55 open opportunities, EUR 2,158,000")
    assert text.count(lines[0]) == 1
    assert "<" not in text and "|" not in text  # not HTML, not a markdown pipe table
    head = next(line for line in lines if line.startswith("Stage "))
    row = next(line for line in lines if line.startswith("Prospecting "))
    assert head.index("Amount") + len("Amount") == row.index("EUR 1,111,000") + len(
        "EUR 1,111,000"
    )  # numbers right-aligned under their header
    assert "report.html" in text
    delivery = text_of(mails["delivery_report"])
    assert "66.7%" in delivery and "SMTP code" in delivery
