"""`sysmail-ops serve` with real HTTP requests: GET never records, POST does, bad links 4xx."""

from __future__ import annotations

import http.client
import logging
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode, urlsplit

import pandas as pd
import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer

from sysmail_ops.campaigns import surveys
from sysmail_ops.config import settings
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.records import sendlog, suppression
from sysmail_ops.sending.batch import Delivery, SendOptions, send, send_deliveries
from sysmail_ops.templates import catalog as templates
from sysmail_ops.web import server as web

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def server(ws: Workspace) -> Iterator[web.SurveyServer]:
    srv = web.make_server(ws, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    settings.set_setting(ws, "public_base_url", srv.url)
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def request(
    url: str,
    method: str = "GET",
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], str]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request(
            method, parts.path + (f"?{parts.query}" if parts.query else ""), body, headers or {}
        )
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode()
    finally:
        conn.close()


def post(url: str, fields: dict[str, str]) -> tuple[int, dict[str, str], str]:
    return request(url, "POST", urlencode(fields), FORM)


def token(ws: Workspace, **kw: object) -> str:
    args: dict[str, object] = {"campaign": "nov", "contact": "c-1", "email": "eve@example.com"}
    args.update(kw)
    return surveys.make_token(ws, purpose="survey", **args)  # type: ignore[arg-type]


def answers(ws: Workspace) -> pd.DataFrame:
    return surveys.responses(ws, "nov")


def test_get_shows_the_chosen_score_and_records_nothing(
    ws: Workspace, server: web.SurveyServer
) -> None:
    links = surveys.survey_links(ws, token(ws, campaign="Q4 <b>&amp;"))
    status, headers, body = request(links[4])
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert 'value="4" required checked>' in body
    assert body.count("checked") == 1
    assert 'name="comment"' in body and 'type="submit"' in body
    assert "Q4 &lt;b&gt;&amp;amp;" in body and "<b>" not in body
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Server"] == "sysmail-ops"  # no Python version on show
    for url in (links[1], links[5], surveys.survey_url(ws, token(ws)), links[2] + "0"):
        assert request(url)[0] == 200
        assert request(url, "HEAD")[0] == 200
    assert request(surveys.survey_url(ws, token(ws)))[2].count("checked") == 0
    assert surveys.responses(ws, "Q4 <b>&amp;").empty and answers(ws).empty


def test_post_records_and_a_second_post_updates(ws: Workspace, server: web.SurveyServer) -> None:
    links = surveys.survey_links(ws, token(ws))
    status, _, body = post(links[2], {"score": "2", "comment": "<script>x</script> slow"})
    assert status == 200 and "Thank you" in body and "is recorded" in body
    (row,) = answers(ws).to_dict("records")
    assert (row["score"], row["comment"], row["answers"]) == (2, "<script>x</script> slow", 1)
    # The page now says what was answered, escaped, and that submitting again replaces it.
    page = request(links[5])[2]
    assert "You answered 2 on" in page and "<script>" not in page
    status, _, body = post(links[5], {"score": "5"})  # the form's choice wins over ?score=
    assert status == 200 and "is updated" in body and "5 &ndash; Very satisfied" in body
    (row,) = answers(ws).to_dict("records")
    assert (row["score"], row["comment"], row["answers"]) == (5, None, 2)


def test_multipart_form_is_understood(ws: Workspace, server: web.SurveyServer) -> None:
    boundary = "XyZ123"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="score"\r\n\r\n3\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="comment"\r\n\r\nok\r\n'
        f"--{boundary}--\r\n"
    )
    status, _, _ = request(
        surveys.survey_url(ws, token(ws)), "POST", body,
        {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )  # fmt: skip
    assert status == 200
    assert answers(ws)[["score", "comment"]].to_dict("records") == [{"score": 3, "comment": "ok"}]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"score": "9"}, "score must be from 1 to 5, got 9"),
        (
            {"score": "<b>bold</b>"},
            "whole number from 1 to 5, got &#x27;&lt;b&gt;bold&lt;/b&gt;&#x27;",
        ),
        ({"comment": "no score"}, "please choose a score"),
        ({"score": "3", "comment": "x" * 2001}, "longer than 2000"),
    ],
)
def test_bad_answers_get_400_and_record_nothing(
    ws: Workspace, server: web.SurveyServer, fields: dict[str, str], message: str
) -> None:
    status, _, body = post(surveys.survey_url(ws, token(ws)), fields)
    assert status == 400 and message in body
    assert "<b>" not in body and "Traceback" not in body
    assert answers(ws).empty


def test_bad_links_get_a_clear_4xx_page(ws: Workspace, server: web.SurveyServer) -> None:
    good = token(ws)
    version, body, sig = good.split(".")
    expired = token(ws, expires_at=datetime.now(UTC) - timedelta(minutes=1))
    unsubscribe = surveys.unsubscribe_url(ws, "eve@example.com", "nov").rsplit("/", 1)[1]
    cases = {
        f"/survey/{version}.{body}.{sig[::-1]}": (400, "This link is not valid"),
        f"/survey/{version}.{body[:-4]}.{sig}": (400, "This link is not valid"),
        f"/survey/{good[:40]}": (400, "This link is not valid"),
        f"/survey/{unsubscribe}?score=5": (400, "This link is not valid"),
        f"/unsubscribe/{good}": (400, "This link is not valid"),
        f"/survey/{expired}?score=5": (410, "This link has expired"),
        "/survey/%00%0d%0a": (400, "This link is not valid"),
        "/": (404, "Page not found"),
        "/survey/": (404, "Page not found"),
        "/admin/survey": (404, "Page not found"),
    }
    for path, (code, title) in cases.items():
        for method in ("GET", "POST"):
            status, _, page = request(server.url + path, method, "score=5", FORM)
            assert (status, path, method) == (code, path, method)
            assert f"<h1>{title}</h1>" in page and "Traceback" not in page
    assert answers(ws).empty and suppression.list_suppressed(ws).empty


def test_body_size_is_capped(ws: Workspace, server: web.SurveyServer) -> None:
    url = surveys.survey_url(ws, token(ws))
    status, _, _ = request(url, "POST", "score=3&comment=" + "x" * (web.MAX_BODY + 10), FORM)
    assert status == 413
    status, _, _ = request(url, "POST", "score=3", {**FORM, "Content-Length": "nonsense"})
    assert status == 400
    assert answers(ws).empty


def test_access_log_never_shows_a_token(
    ws: Workspace, server: web.SurveyServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sysmail_ops.web.server")
    t = token(ws)
    request(surveys.survey_links(ws, t)[3])
    post(surveys.survey_url(ws, t), {"score": "3"})
    request(f"{server.url}/survey/{t[:-3]}")
    request(f"{server.url}/survey/{t}", "BREW")  # an unsupported method: the stdlib's own error
    url = surveys.unsubscribe_url(ws, "eve@example.com")
    post(url, {"List-Unsubscribe": "One-Click"})
    # The access line is written once the answer is out: the client can read it first.
    deadline = time.monotonic() + 15
    while "/unsubscribe/<token>" not in (text := "\n".join(r.getMessage() for r in caplog.records)):
        assert time.monotonic() < deadline, text
        time.sleep(0.01)
    assert "/survey/<token>" in text
    assert t[10:40] not in text and url.rsplit("/", 1)[1][10:40] not in text
    assert "eve@example.com" not in text


def test_unsubscribe_get_confirms_post_suppresses_then_marketing_skips_it(
    ws: Workspace, server: web.SurveyServer, smtp_server: SMTPTestServer
) -> None:
    url = surveys.unsubscribe_url(ws, "Eve@Example.com", "nov")
    status, _, page = request(url)
    assert status == 200 and 'type="submit">Unsubscribe</button>' in page
    assert "eve@example.com" in page and request(url, "HEAD")[0] == 200
    assert suppression.list_suppressed(ws).empty  # a scanner's GET changes nothing
    # RFC 8058 one-click, as a mail client sends it.
    status, _, page = request(url, "POST", "List-Unsubscribe=One-Click", FORM)
    assert status == 200 and "will get no more" in page
    (entry,) = suppression.list_suppressed(ws).to_dict("records")
    assert (entry["address"], entry["reason"], entry["source"]) == (
        "eve@example.com", "unsubscribe", "campaign:nov",
    )  # fmt: skip
    assert request(url, "POST", "List-Unsubscribe=One-Click", FORM)[0] == 200  # again: fine
    assert "already unsubscribed" in request(url)[2]
    assert len(suppression.list_suppressed(ws)) == 1

    # The next marketing batch skips her and mails the others.
    templates.add_template(
        ws, "offer", object_type="contact", subject="Hi {{ name }}", html="<p>{{ name }}</p>"
    )
    bind(ws, smtp_server, "news", kind="marketing")
    fast = SendOptions(backoff=0.01)
    result = send(ws, "news", "offer", to=["eve@example.com", "ann@example.com"],
                  record={"name": "all"}, use_case="marketing", options=fast)  # fmt: skip
    assert result.counts == {"sent": 1, "suppressed": 1}
    deliveries = [
        Delivery([a], {"name": a}, key=f"nov:{a}", unsubscribe_url=surveys.unsubscribe_url(ws, a))
        for a in ("EVE@example.com", "bob@example.com", "cy@example.com")
    ]
    result = send_deliveries(ws, "news", "offer", deliveries, use_case="marketing", options=fast)
    assert result.counts == {"sent": 2, "suppressed": 1}
    got = sorted(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert got == ["ann@example.com", "bob@example.com", "cy@example.com"]
    log = sendlog.list_logs(ws, status="suppressed", limit=None)
    assert sorted(log["recipient"]) == ["EVE@example.com", "eve@example.com"]


def test_one_click_from_the_delivered_header_with_multipart(
    ws: Workspace, server: web.SurveyServer, smtp_server: SMTPTestServer
) -> None:
    """Follow the List-Unsubscribe header of a delivered survey mail, as a mail client would."""
    templates.add_template(
        ws, "csat", object_type="survey", subject="How did we do?",
        html="{% for n, url in links.items() %}<a href=\"{{ url }}\">{{ n }}</a> {% endfor %}",
    )  # fmt: skip
    bind(ws, smtp_server, "care", kind="customer_service")
    t = token(ws, email="ann@example.com", contact="c-7")
    d = Delivery(
        ["ann@example.com"], {"links": surveys.survey_links(ws, t)}, key="nov:c-7",
        unsubscribe_url=surveys.unsubscribe_url(ws, "ann@example.com", "nov"),
    )  # fmt: skip
    send_deliveries(ws, "care", "csat", [d], use_case="survey", options=SendOptions(backoff=0.01))
    (got,) = smtp_server.messages
    header = got.message["List-Unsubscribe"]
    assert header.startswith(f"<{server.url}/unsubscribe/v1.") and header.endswith(">")
    assert got.message["List-Unsubscribe-Post"] is None  # the test server speaks http, not https
    html = got.message.get_body(("html",)).get_content()
    assert f"{server.url}/survey/{t}?score=4" in html
    # The survey link in the mail works: the person answers 4.
    assert post(f"{server.url}/survey/{t}?score=4", {"score": "4"})[0] == 200
    assert surveys.responded_contacts(ws, "nov") == {"c-7"}
    # A client's one-click POST to the header's URL, multipart/form-data as RFC 8058 prefers.
    body = (
        '--b\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n'
        "--b--\r\n"
    )
    status, _, _ = request(
        header[1:-1], "POST", body, {"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert status == 200
    assert suppression.is_suppressed(ws, ["ann@example.com"]) == {"ann@example.com"}


def test_https_base_url_gives_one_click_headers(ws: Workspace, smtp_server: SMTPTestServer) -> None:
    settings.set_setting(ws, "public_base_url", "https://mail.example.com/sysmail")
    templates.add_template(ws, "offer", object_type="contact", subject="Hi", html="<p>Hi</p>")
    bind(ws, smtp_server, "news", kind="marketing", unsubscribe_mailto="unsub@example.com")
    url = surveys.unsubscribe_url(ws, "eve@example.com", "nov")
    send(ws, "news", "offer", to="eve@example.com", record={}, use_case="marketing",
         unsubscribe_url=url, options=SendOptions(backoff=0.01))  # fmt: skip
    (got,) = smtp_server.messages
    assert got.message["List-Unsubscribe"] == (
        f"<{url}>, <mailto:unsub@example.com?subject=unsubscribe>"
    )
    assert url.startswith("https://mail.example.com/sysmail/unsubscribe/v1.")
    assert got.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_a_path_prefix_from_the_reverse_proxy_is_accepted(
    ws: Workspace, server: web.SurveyServer
) -> None:
    t = token(ws)
    status, _, page = request(f"{server.url}/sysmail/survey/{t}?score=1")
    assert status == 200 and 'value="1" required checked>' in page
    assert post(f"{server.url}/sysmail/survey/{t}", {"score": "1"})[0] == 200
    assert list(answers(ws)["score"]) == [1]


def test_make_server_on_a_busy_port_is_a_clear_error(
    ws: Workspace, server: web.SurveyServer
) -> None:
    port = server.server_address[1]
    with pytest.raises(web.ValidationError, match=f"cannot listen on 127.0.0.1:{port}"):
        web.make_server(ws, "127.0.0.1", port)


def test_urllib_client_round_trip(ws: Workspace, server: web.SurveyServer) -> None:
    """The plain standard-library client a script would use."""
    t = token(ws)
    with urllib.request.urlopen(surveys.survey_links(ws, t)[3], timeout=10) as resp:  # noqa: S310
        assert resp.status == 200
    data = urlencode({"score": "3"}).encode()
    req = urllib.request.Request(surveys.survey_url(ws, t), data)  # noqa: S310 - our server
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        assert resp.status == 200
    assert list(answers(ws)["score"]) == [3]
