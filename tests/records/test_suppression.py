"""The suppression list, and the pipeline honouring it against the real SMTP server."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import HeaderInjectionError, NotFoundError, ValidationError
from sysmail_ops.records import sendlog, suppression
from sysmail_ops.sending.batch import Delivery, SendOptions, send, send_batch, send_deliveries
from sysmail_ops.templates import catalog as templates

FAST = SendOptions(backoff=0.01)


@pytest.fixture
def news(ws: Workspace, smtp_server: SMTPTestServer) -> object:
    templates.add_template(
        ws, "offer", object_type="contact", subject="Hi {{ name }}", html="<p>{{ name }}</p>"
    )
    return bind(ws, smtp_server, "news", kind="marketing")


def log_rows(ws: Workspace) -> pd.DataFrame:
    return sendlog.list_logs(ws, limit=None).sort_values("id").reset_index(drop=True)


# -- the list ------------------------------------------------------------------------------


def test_add_normalises_and_keeps_the_first_entry(ws: Workspace) -> None:
    entry, new = suppression.add(ws, "  Eve@Example.COM ", reason="unsubscribe", source="web")
    assert new and entry.address == "eve@example.com" and entry.reason == "unsubscribe"
    again, new = suppression.add(ws, "EVE@example.com", reason="manual")
    assert not new and again == entry  # the first request's reason and date stay
    df = suppression.list_suppressed(ws)
    assert df.to_dict("records")[0]["address"] == "eve@example.com" and len(df) == 1


def test_international_domain_is_kept_in_idna_form(ws: Workspace) -> None:
    entry, _ = suppression.add(ws, "Jörg@Bücher.example")
    assert entry.address == "jörg@xn--bcher-kva.example"
    assert suppression.is_suppressed(ws, ["jörg@bücher.example", "JÖRG@XN--BCHER-KVA.example"]) == {
        "jörg@bücher.example",
        "JÖRG@XN--BCHER-KVA.example",
    }


def test_is_suppressed_answers_for_the_given_strings(ws: Workspace) -> None:
    suppression.add(ws, "a@example.com")
    suppression.add(ws, "b@example.com", reason="bounce")
    asked = ["A@example.com", "c@example.com", "not an address", "b@example.com"]
    assert suppression.is_suppressed(ws, asked) == {"A@example.com", "b@example.com"}
    assert suppression.is_suppressed(ws, []) == set()
    assert list(suppression.list_suppressed(ws, reason="bounce")["address"]) == ["b@example.com"]


def test_remove_and_unknown(ws: Workspace) -> None:
    suppression.add(ws, "a@example.com")
    assert suppression.remove(ws, "A@EXAMPLE.com").address == "a@example.com"
    assert suppression.is_suppressed(ws, ["a@example.com"]) == set()
    with pytest.raises(NotFoundError, match=r"a@example\.com is not on the suppression list"):
        suppression.remove(ws, "a@example.com")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"address": "nope"}, "is not valid"),
        ({"address": "a@example.com\r\nBcc: x@example.com"}, "line breaks"),
        ({"address": "a@example.com", "reason": "annoyed"}, "unknown reason 'annoyed'"),
        ({"address": "a@example.com", "source": "x\ny"}, "one line"),
    ],
)
def test_bad_input_writes_nothing(ws: Workspace, kwargs: dict[str, str], message: str) -> None:
    address = kwargs.pop("address")
    with pytest.raises(ValidationError, match=message):
        suppression.add(ws, address, **kwargs)
    assert suppression.list_suppressed(ws).empty


# -- the pipeline --------------------------------------------------------------------------


def test_marketing_batch_skips_suppressed_and_delivers_the_rest(
    ws: Workspace, smtp_server: SMTPTestServer, news: object
) -> None:
    suppression.add(ws, "b@example.com", reason="unsubscribe")
    deliveries = [
        Delivery([addr], {"name": n}, key=f"offer:{n}")
        for n, addr in (("A", "a@example.com"), ("B", "B@Example.com"), ("C", "c@example.com"))
    ]
    result = send_deliveries(ws, "news", "offer", deliveries, use_case="marketing", options=FAST)
    assert result.counts == {"sent": 2, "suppressed": 1}
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == ["a@example.com", "c@example.com"]
    rows = log_rows(ws)
    (skipped,) = rows[rows.status == "suppressed"].itertuples()
    assert skipped.recipient == "B@example.com" and skipped.delivery_key == "offer:B"
    assert skipped.smtp_reply == "on the suppression list" and pd.isna(skipped.smtp_code)
    assert list(sendlog.list_logs(ws, status="suppressed")["recipient"]) == ["B@example.com"]
    summary = sendlog.summary(ws)
    assert dict(zip(summary.status, summary.last_24h, strict=True)) == {"sent": 2, "suppressed": 1}
    # Taken off the list, the same key is not a duplicate: a suppressed row was no delivery.
    suppression.remove(ws, "b@example.com")
    again = send_deliveries(ws, "news", "offer", deliveries, use_case="marketing", options=FAST)
    assert again.counts == {"skipped_duplicate": 2, "sent": 1}


def test_one_message_to_two_mails_only_the_one_not_suppressed(
    ws: Workspace, smtp_server: SMTPTestServer, news: object
) -> None:
    suppression.add(ws, "b@example.com")
    result = send(
        ws, "news", "offer", to=["a@example.com", "b@example.com"], record={"name": "X"},
        use_case="survey", options=FAST,
    )  # fmt: skip
    assert result.counts == {"sent": 1, "suppressed": 1}
    (got,) = smtp_server.messages
    assert got.rcpt_tos == ("a@example.com",)


def test_all_suppressed_sends_nothing(
    ws: Workspace, smtp_server: SMTPTestServer, news: object, tmp_path: object
) -> None:
    suppression.add(ws, "a@example.com")
    records = [{"email": "a@example.com", "name": "A", "id": 1}]
    result = send_batch(
        ws, "news", "offer", records, key_column="id", use_case="follow_up", options=FAST
    )
    assert result.counts == {"suppressed": 1} and result.messages == 1
    assert smtp_server.messages == []


@pytest.mark.parametrize("use_case", ["manual", "workflow", "approval_flow", "system"])
def test_other_use_cases_still_mail_a_suppressed_address(
    ws: Workspace, smtp_server: SMTPTestServer, news: object, use_case: str
) -> None:
    suppression.add(ws, "a@example.com")
    result = send(
        ws, "news", "offer", to="a@example.com", record={"name": "A"}, use_case=use_case,
        options=FAST,
    )  # fmt: skip
    assert result.counts == {"sent": 1}
    assert len(smtp_server.messages) == 1


def test_dry_run_reports_suppressed_too(
    ws: Workspace, smtp_server: SMTPTestServer, news: object
) -> None:
    suppression.add(ws, "a@example.com")
    opts = SendOptions(dry_run=True)
    result = send(
        ws, "news", "offer", to=["a@example.com", "b@example.com"], record={"name": "A"},
        use_case="marketing", options=opts,
    )  # fmt: skip
    assert result.counts == {"suppressed": 1, "dry_run": 1}
    assert smtp_server.messages == []


# -- personal List-Unsubscribe -------------------------------------------------------------


def test_personal_https_link_with_the_accounts_mailto_and_one_click(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    templates.add_template(ws, "offer", object_type="contact", subject="Hi", html="<p>Hi</p>")
    bind(
        ws, smtp_server, "news", kind="marketing", unsubscribe_mailto="unsub@example.com",
        unsubscribe_url="https://example.com/everyone",
    )  # fmt: skip
    url = "https://mail.example.com/unsubscribe/v1.abc.def"
    send(ws, "news", "offer", to="a@example.com", record={}, use_case="marketing",
         unsubscribe_url=url, options=FAST)  # fmt: skip
    send(ws, "news", "offer", to="b@example.com", record={}, use_case="marketing", options=FAST)
    personal, shared = smtp_server.messages
    assert personal.message["List-Unsubscribe"] == (
        f"<{url}>, <mailto:unsub@example.com?subject=unsubscribe>"
    )
    assert personal.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert personal.raw.count(b"List-Unsubscribe:") == 1
    # No per-delivery link: the account's own, as before.
    assert "https://example.com/everyone" in shared.message["List-Unsubscribe"]
    assert shared.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_http_link_gets_no_one_click_header_and_extra_headers_pass(
    ws: Workspace, smtp_server: SMTPTestServer, news: object
) -> None:
    url = "http://127.0.0.1:8025/unsubscribe/v1.abc.def"
    send_deliveries(
        ws, "news", "offer",
        [Delivery(["a@example.com"], {"name": "A"}, unsubscribe_url=url,
                  headers={"X-Campaign": "nov"})],
        use_case="survey", options=FAST,
    )  # fmt: skip
    (got,) = smtp_server.messages
    assert got.message["List-Unsubscribe"] == f"<{url}>"
    assert got.message["List-Unsubscribe-Post"] is None  # RFC 8058: https only
    assert got.message["X-Campaign"] == "nov"


@pytest.mark.parametrize(
    ("delivery", "error", "message"),
    [
        ({"headers": {"X-Evil": "a\r\nBcc: x@example.com"}}, HeaderInjectionError, "line break"),
        ({"headers": {"Subject": "other"}}, ValidationError, "set by compose"),
        ({"unsubscribe_url": "javascript:alert(1)"}, ValidationError, "http\\(s\\) URL"),
        ({"unsubscribe_url": "https://x.example/a b"}, ValidationError, "spaces"),
        ({"unsubscribe_url": "https://x.example/a>, <mailto:x"}, ValidationError, "commas"),
        (
            {"unsubscribe_url": "https://x.example/u", "headers": {"list-unsubscribe": "<x>"}},
            ValidationError,
            "either",
        ),
    ],
)
def test_bad_headers_send_nothing_and_write_nothing(
    ws: Workspace,
    smtp_server: SMTPTestServer,
    news: object,
    delivery: dict[str, object],
    error: type[Exception],
    message: str,
) -> None:
    d = Delivery(["a@example.com"], {"name": "A"}, **delivery)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        send_deliveries(ws, "news", "offer", [d], use_case="marketing", options=FAST)
    assert smtp_server.messages == [] and log_rows(ws).empty


def test_batch_with_personal_unsubscribe_links(
    ws: Workspace, smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    from sysmail_ops.campaigns import surveys
    from sysmail_ops.cli import main
    from sysmail_ops.config import settings

    settings.set_setting(ws, "public_base_url", "https://mail.example.com")
    templates.add_template(
        ws, "news", object_type="contact", subject="News for {{ name }}",
        html='<p>{{ name }}</p><a href="{{ unsubscribe_url }}">unsubscribe</a>',
    )  # fmt: skip
    bind(ws, smtp_server, "news", kind="marketing")
    records = [{"email": f"{n}@example.com", "name": n, "id": i} for i, n in enumerate("abc")]
    suppression.add(ws, "c@example.com")
    result = send_batch(ws, "news", "news", records, key_column="id", use_case="marketing",
                        unsubscribe_links=True, options=FAST)  # fmt: skip
    assert result.counts == {"sent": 2, "suppressed": 1}
    for got in smtp_server.messages:
        (addr,) = got.rcpt_tos
        header = got.message["List-Unsubscribe"]
        url = header[1:-1]
        assert url.startswith("https://mail.example.com/unsubscribe/v1.")
        assert got.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert f'href="{url}"' in got.message.get_body(("html",)).get_content()
        claims = surveys.verify_token(ws, url.rsplit("/", 1)[1], "unsubscribe")
        assert claims.email == addr
    assert records[0] == {"email": "a@example.com", "name": "a", "id": 0}  # caller's data kept
    # The same through the CLI flag; without it the template lacks its field: nothing is sent.
    path = tmp_path / "c.csv"
    path.write_text("email,id,name\nd@example.com,7,D\n")
    base = ["--home", str(ws.home), "send-batch", "news", "--template", "news",
            "--records", str(path), "--key-column", "id", "--use-case", "marketing",
            "--no-progress"]  # fmt: skip
    assert main(base) == 2
    assert main([*base, "--unsubscribe-links"]) == 0
    assert smtp_server.messages[-1].rcpt_tos == ("d@example.com",)
    assert "/unsubscribe/v1." in smtp_server.messages[-1].message["List-Unsubscribe"]


def test_an_address_unsubscribed_while_its_mail_waits_in_the_queue_is_not_mailed(
    ws: Workspace, smtp_server: SMTPTestServer, news: object
) -> None:
    from sysmail_ops.sending import retry as deferred
    from sysmail_ops.store.database import utcnow

    smtp_server.fail_data_times = 100
    for to in ("a@example.com", "b@example.com"):
        send(ws, "news", "offer", to=to, record={"name": "A"}, use_case="marketing",
             key=f"k-{to}", options=FAST)  # fmt: skip
    assert len(deferred.list_deferred(ws)) == 2
    suppression.add(ws, "A@Example.com", reason="unsubscribe")
    smtp_server.fail_data_times = 0
    later = utcnow() + deferred.FIRST_RETRY * 2
    assert deferred.retry_deferred(ws, now=later).counts == {"sent": 1, "suppressed": 1}
    assert [m.rcpt_tos for m in smtp_server.messages] == [("b@example.com",)]
    assert deferred.list_deferred(ws) == []
    last = log_rows(ws).set_index("recipient").groupby(level=0).last()
    assert last.loc["a@example.com", "status"] == "suppressed"
