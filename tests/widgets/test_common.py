"""The shared callback wrapper: any error is one escaped line in the form, passwords masked,
nothing left for the kernel log; display() inside a callback lands in the form's Output."""

from __future__ import annotations

import logging

import ipywidgets as w
import pytest

from sysmail_ops.errors import SMTPError, ValidationError
from sysmail_ops.widgets.common import error_text, guarded, message, status_line


def test_sysmail_error_is_its_message() -> None:
    out, status = w.Output(), status_line()

    @guarded(out, status)
    def save(_b: object) -> None:
        raise ValidationError("the email account 'x' is not an address")

    assert save(None) is None
    assert "the email account &#x27;x&#x27; is not an address" in status.value
    assert "sysmail-error" in status.value and "Traceback" not in status.value
    assert out.outputs == ()  # nothing else was written


def test_any_exception_is_one_line_with_the_password_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out, status = w.Output(), status_line()
    typed = {"value": "hunter2-secret"}

    @guarded(out, status, secrets=lambda: [typed["value"]])
    def run(_b: object) -> None:
        raise RuntimeError("AUTH failed for hunter2-secret\nsecond line <b>bold</b>\x1b[2J")

    with caplog.at_level(logging.DEBUG):
        run(None)
    assert "hunter2-secret" not in status.value and "********" in status.value
    assert "RuntimeError: AUTH failed for ********" in status.value
    assert "second line" not in status.value  # one line
    assert all("hunter2" not in r.getMessage() and not r.exc_info for r in caplog.records)


def test_outside_text_is_escaped_and_one_line() -> None:
    status = status_line()
    message(status, "reply <script>alert(1)</script>\r\n250 ok\u202e", "ok")
    assert "<script>" not in status.value and "&lt;script&gt;" in status.value
    assert "\\r" in status.value and "\\u202e" in status.value and "\n" not in status.value


def test_message_into_an_output_replaces_it() -> None:
    out = w.Output()
    message(out, "first", "info")
    message(out, "second", "error")
    assert len(out.outputs) == 1 and "second" in out.outputs[0]["data"]["text/plain"]


def test_guarded_without_status_writes_into_the_output() -> None:
    out = w.Output()

    @guarded(out)
    def boom() -> int:
        raise SMTPError("535 5.7.8 authentication failed", "auth", 535, "bad creds")

    assert boom() is None
    assert "535 5.7.8 authentication failed" in out.outputs[0]["data"]["text/html"]


def test_return_value_passes_through() -> None:
    out = w.Output()
    assert guarded(out)(lambda x: x * 2)(21) == 42
    assert error_text(ValueError("")) == "ValueError"
