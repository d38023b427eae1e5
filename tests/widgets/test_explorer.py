"""The log and archive explorer, driven from Python on a hand-made log, and the sandboxed
message frame opened in a real headless Chromium (no script runs, nothing remote loads)."""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from log_fixtures import EVIL_HTML, handmade_log, message_bytes
from system_servers import artifact_dir

from sysmail_ops.analytics import explore
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import ValidationError
from sysmail_ops.widgets.explorer import (
    CSP,
    ArchiveExplorer,
    LogExplorer,
    sandboxed_iframe,
)


@pytest.fixture
def log(ws: Workspace) -> Workspace:
    return handmade_log(ws)


def ids(form: LogExplorer) -> list[int]:
    return [value for _, value in form.rows.options]


# -- the query layer ----------------------------------------------------------------------


def test_pages_are_counted_and_distinct(log: Workspace) -> None:
    one = explore.log_page(log, None, 1, 4)
    two = explore.log_page(log, None, 2, 4)
    three = explore.log_page(log, None, 3, 4)
    assert (one.total, one.pages) == (11, 3)
    assert list(one.rows["id"]) == [11, 10, 9, 8] and list(two.rows["id"]) == [7, 6, 5, 4]
    assert list(three.rows["id"]) == [3, 2, 1]
    assert three.describe() == "rows 9-11 of 11 (page 3 of 3)"
    assert explore.log_page(log, None, 4, 4).rows.empty
    again = explore.log_page(log, None, 2, 4, total=one.total)  # paging on: not counted again
    assert list(again.rows["id"]) == [7, 6, 5, 4] and again.total == 11


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"to": "ANN@Example.com"}, [11, 10, 9, 3, 1]),
        ({"to": "example.net"}, [5, 4]),
        ({"domain": "@EXAMPLE.NET"}, [5, 4]),
        ({"status": "failed"}, [11, 5, 4]),
        ({"use_case": "workflow"}, [4, 3, 2, 1]),
        ({"template": "note"}, [4, 3, 2, 1]),
        ({"account": "service", "status": "sent"}, [3, 2]),
        ({"key": "k-m8"}, [11, 10, 9]),
        ({"since": "2026-03-03"}, [11, 10, 9, 8, 7, 6]),
        ({"until": "2026-03-02T11:00"}, [3, 2, 1]),
        ({"to": "ann@example.com", "status": "sent"}, [3]),
        ({"to": "nobody@example.com"}, []),
    ],
)
def test_each_filter(log: Workspace, kwargs: dict[str, Any], expected: list[int]) -> None:
    page = explore.log_page(log, explore.log_filter(**kwargs), 1, 50)
    assert list(page.rows["id"]) == expected and page.total == len(expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": "lost"}, "unknown status 'lost': choose one of sent, deferred"),
        ({"use_case": "spam"}, "unknown use_case 'spam'"),
        ({"to": "ann@@example.com"}, "to 'ann@@example.com' is not valid"),
        ({"domain": "exa mple.com"}, "domain 'exa mple.com' is not a domain name"),
        ({"to": "a@example.com\nBcc: x"}, "to must be one line"),
        ({"since": "yesterday"}, "since takes a date"),
        ({"since": "2026-03-03", "until": "2026-03-02"}, "until .* is not after since"),
        ({"key": 42}, "key must be text"),
    ],
)
def test_bad_filter_values_are_one_clear_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        explore.log_filter(**kwargs)


@pytest.mark.parametrize(("page", "size"), [(0, 10), (1, 0), (1, 501), (-1, 5)])
def test_bad_paging_is_refused(log: Workspace, page: int, size: int) -> None:
    with pytest.raises(ValidationError, match="page"):
        explore.log_page(log, None, page, size)


def test_details_have_every_attempt_and_the_archived_message(log: Workspace) -> None:
    d = explore.log_details(log, 11)
    assert d.row["status"] == "failed" and d.row["recipient"] == "ann@example.com"
    assert list(d.attempts["status"]) == ["deferred", "deferred", "failed"]
    assert list(d.attempts["attempt"]) == [1, 2, 3] and d.raw is None
    sent = explore.log_details(log, 2)
    assert sent.archive is not None and sent.raw == message_bytes()
    mail = explore.render_message(sent.raw)
    assert ("Subject", "Mail m2") in mail.headers and "plain text" in (mail.text or "")
    assert mail.html is not None and "cid:logo@x" not in mail.html
    assert "data:image/png;base64," in mail.html
    with pytest.raises(Exception, match="no send log row 99"):
        explore.log_details(log, 99)


def test_did_they_get_it(log: Workspace) -> None:
    mails = explore.did_they_get_it(log, "Ann@example.com")
    assert list(mails["outcome"]) == ["failed", "sent"]
    assert list(mails["attempts"]) == [3, 2] and list(mails["log_id"]) == [11, 3]
    assert explore.verdict("ann@example.com", mails) == (
        "2 mails to ann@example.com: 1 failed, 1 sent (failed with 451)"
    )
    bob = explore.did_they_get_it(log, "bob@example.com")
    assert bool(bob["archived"].iloc[0]) and bob["sent_at"].notna().all()
    later = explore.did_they_get_it(log, "ann@example.com", since="2026-03-03")
    assert later["log_id"].tolist() == [11]
    assert explore.verdict("zed@example.com", explore.did_they_get_it(log, "zed@example.com")) == (
        "no mail to zed@example.com in this period"
    )
    with pytest.raises(ValidationError, match="an address is needed"):
        explore.did_they_get_it(log, "example.com")


def test_the_archive_by_object(log: Workspace) -> None:
    rows = explore.conversation(log, "case:42")
    assert list(rows["id"]) == ["a-m2"]
    assert explore.archive_page(log, explore.archive_filter(related="case:7")).total == 0
    found = explore.archive_page(log, explore.archive_filter(address="BOB@example.com"))
    assert found.total == 1
    assert explore.archive_page(log, explore.archive_filter(subject="m2")).total == 1
    assert explore.archive_page(log, explore.archive_filter(direction="received")).total == 0
    with pytest.raises(ValidationError, match="object takes TYPE:ID"):
        explore.archive_filter(related="case42")
    with pytest.raises(ValidationError, match="direction is sent or received"):
        explore.archive_filter(direction="both")


# -- the widget ----------------------------------------------------------------------------


def test_the_explorer_pages_through_the_log(log: Workspace) -> None:
    form = LogExplorer(log, page_size=4)
    assert ids(form) == [11, 10, 9, 8] and form.prev.disabled and not form.next.disabled
    assert "rows 1-4 of 11" in form.counts.value
    form.next.click()
    assert ids(form) == [7, 6, 5, 4] and not form.prev.disabled
    form.next.click()
    assert ids(form) == [3, 2, 1] and form.next.disabled
    form.prev.click()
    assert ids(form) == [7, 6, 5, 4]
    assert form.details.value == ""  # paging opened no row


def test_the_explorer_shows_more_than_n_when_the_count_is_capped(log: Workspace) -> None:
    form = LogExplorer(log, page_size=2, count_cap=3)  # 11 rows, counted up to 3
    assert form.counts.value == "rows 1-2 of 11 (page 1 of 6)"  # no filter: exact, cheap
    form.since.value = "2000-01-01"  # every row, through a filter
    form.search.click()
    assert ids(form) == [11, 10] and not form.next.disabled
    assert form.counts.value == "rows 1-2 of more than 3 (page 1 of 2+)"
    seen = [ids(form)]
    while not form.next.disabled:
        form.next.click()
        seen.append(ids(form))
    assert seen == [[11, 10], [9, 8], [7, 6], [5, 4], [3, 2], [1]]  # each page its own rows
    assert form.counts.value == "rows 11-11 of 11 (page 6 of 6)"  # the end: exact
    form.prev.click()
    assert ids(form) == [3, 2] and "of 11 (page 5 of 6)" in form.counts.value
    form.to.value, form.since.value = "ann@example.com", ""  # 5 rows: a new search counts again
    form.search.click()
    assert ids(form) == [11, 10] and "of more than 3" in form.counts.value
    exact = LogExplorer(log, page_size=2, count_cap=5)
    exact.to.value = "ann@example.com"
    exact.search.click()
    assert exact.counts.value == "rows 1-2 of 5 (page 1 of 3)"


def test_the_explorer_filters(log: Workspace) -> None:
    form = LogExplorer(log, page_size=4)
    assert list(form.account.options) == ["(any)"]  # no system email bound in this workspace
    form.to.value = "ann@example.com"
    form.search.click()
    assert ids(form) == [11, 10, 9, 3] and "of 5" in form.counts.value
    form.status_pick.value = "sent"
    form.search.click()
    assert ids(form) == [3]
    form.to.value, form.status_pick.value = "example.net", "(any)"
    form.search.click()
    assert ids(form) == [5, 4]
    form.to.value = ""
    form.use_case.value, form.template.value = "marketing", "promo"
    form.search.click()
    assert ids(form)[:2] == [11, 10] and "of 7" in form.counts.value


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("to", "ann@@example.com", "is not valid"),
        ("since", "last tuesday", "since takes a date"),
        ("to", "not a domain!", "is not a domain name"),
    ],
)
def test_a_bad_filter_is_one_line_in_the_form(
    log: Workspace, field: str, value: str, message: str
) -> None:
    form = LogExplorer(log, page_size=4)
    before = ids(form)
    getattr(form, field).value = value
    form.search.click()
    assert "sysmail-error" in form.status.value and message in html.unescape(form.status.value)
    assert "Traceback" not in form.status.value and "<br" not in form.status.value
    assert ids(form) == before  # the table was left as it was
    assert form.output.outputs == ()  # nothing leaked into the capture


def test_opening_a_row_shows_every_attempt_and_the_reply(log: Workspace) -> None:
    form = LogExplorer(log, page_size=20)
    form.rows.value = 11
    text = html.unescape(form.details.value)
    assert "gave up after 0:20:00: 4.7.1 try later" in text
    assert text.count("4.7.1 try later") == 4  # the row's reply, then each of the 3 attempts
    assert "not archived" in form.message.headers.value


def test_the_archived_message_is_shown_as_text_or_sandboxed_html(log: Workspace) -> None:
    form = LogExplorer(log, page_size=20)
    form.rows.value = 2
    assert "Mail m2" in form.message.headers.value
    assert "Hello Bob, plain text." in form.message.body.value  # text by default
    form.message.mode.value = "HTML"
    frame = form.message.body.value
    assert frame.count("<iframe") == 1 and frame.count("</iframe>") == 1
    sandbox = re.search(r'<iframe sandbox="([^"]*)"', frame)
    assert sandbox is not None and sandbox.group(1) == ""  # no allow-scripts, no allow-anything
    assert "allow-" not in frame.split("srcdoc=")[0]
    # everything the mail wrote is inside the escaped srcdoc: no raw tag of it outside
    srcdoc = re.fullmatch(r'<iframe sandbox="" referrerpolicy="no-referrer" srcdoc="([^"]*)".*',
                          frame, re.S)  # fmt: skip
    assert srcdoc is not None
    assert "<script" not in frame and "&lt;script&gt;" in srcdoc.group(1)
    inner = html.unescape(srcdoc.group(1))
    assert inner.index(f'content="{CSP}"') < inner.index("<script>")  # CSP comes first
    assert "document.title = 'pwned'" in inner and "data:image/png;base64," in inner
    form.message.mode.value = "Source"
    assert "&lt;script&gt;" in form.message.body.value and "<script" not in form.message.body.value


def test_did_they_get_it_in_the_form(log: Workspace) -> None:
    form = LogExplorer(log)
    form.who.value = "ann@example.com"
    form.check.click()
    assert "2 mails to ann@example.com: 1 failed, 1 sent (failed with 451)" in form.answer.value
    form.who.value = "gus@example.com"
    form.check.click()
    assert "on the suppression list since 2026-03-03 (unsubscribe)" in form.answer.value
    assert "1 mail to gus@example.com: 1 suppressed" in form.answer.value
    form.who.value = "nobody"
    form.check.click()
    assert "sysmail-error" in form.status.value


def test_the_archive_explorer_by_object(log: Workspace) -> None:
    form = ArchiveExplorer(log)
    form.obj.value = "case:42"
    form.search.click()
    assert [v for _, v in form.rows.options] == ["a-m2"]
    form.rows.value = "a-m2"
    assert "bob@example.com" in form.details.value and "Mail m2" in form.message.headers.value
    form.obj.value = "case-42"
    form.search.click()
    assert "object takes TYPE:ID" in form.status.value


# -- the frame in a real browser -----------------------------------------------------------


class _Hits(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:  # the stdlib's name
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"hit")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def tracker() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that records every request (a tracking pixel's view)."""
    _Hits.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hits)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Hits.seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_no_script_runs_and_nothing_remote_loads_in_chromium(
    page: Any, tracker: tuple[str, list[str]]
) -> None:
    base, seen = tracker
    mail = EVIL_HTML.replace("http://127.0.0.1:9", base) + (
        f'<link rel="stylesheet" href="{base}/style.css">'
        f'<div style="background:url({base}/bg.png)">x</div>'
        f'<form action="{base}/post" method="post"><button id="go">go</button></form>'
        "<script>document.body.insertAdjacentText('beforeend', 'PWNED');"
        "fetch('" + base + "/fetch')</script>"
        f'<iframe src="{base}/inner"></iframe>'
    )
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    host = f"<html><head><title>host</title></head><body>{sandboxed_iframe(mail)}</body></html>"
    page.set_content(host)
    page.wait_for_timeout(1500)  # the meta refresh (0 s) would have fired by now
    frame = page.frames[1]
    assert page.title() == "host"
    body = frame.inner_text("body")
    assert "Hello & welcome" in body and "PWNED" not in body
    assert frame.url == "about:srcdoc"  # not refreshed away
    page.screenshot(path=str(artifact_dir() / "explorer-sandboxed-mail.png"))
    assert seen == []  # no pixel, style sheet, background, fetch, frame or refresh reached it
    said = "\n".join(console)
    assert "Blocked script execution in 'about:srcdoc'" in said
    assert "violates the following Content Security Policy" in said
    # the control: the same mail in a plain frame does load from the tracker
    page.set_content(f'<iframe srcdoc="{html.escape(mail, quote=True)}"></iframe>')
    page.wait_for_timeout(1500)
    assert "/pixel.png" in seen
