"""Attachment files and addresses from outside: a value, or one documented error line."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sysmail_ops.errors import SysmailError, ValidationError
from sysmail_ops.mail.addresses import check_address
from sysmail_ops.mail.mime import MAX_ATTACHMENT_BYTES, Attachment

PROPS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CAP = f"{MAX_ATTACHMENT_BYTES // 2**20} MiB"


def test_an_attachment_that_never_ends_stops_at_the_cap(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=f"^attachment '/dev/zero' is larger than {CAP}$"):
        Attachment.from_path("/dev/zero")


def test_an_oversized_attachment_is_refused_by_its_size(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as fh:
        fh.truncate(2 * 1024**3)  # sparse: refused before a byte is read
    with pytest.raises(ValidationError, match=f"^attachment '{big}' is larger than {CAP}$"):
        Attachment.from_path(big)
    exact = tmp_path / "exact.bin"
    with exact.open("wb") as fh:
        fh.truncate(MAX_ATTACHMENT_BYTES)
    assert len(Attachment.from_path(exact).data) == MAX_ATTACHMENT_BYTES


def test_unreadable_attachments_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"^cannot read attachment '.*': Is a directory$"):
        Attachment.from_path(tmp_path)
    with pytest.raises(ValidationError, match=r"^cannot read attachment 'a\\x00b': not a file"):
        Attachment.from_path("a\0b")


@PROPS
@given(st.text(max_size=300))
@example("a@" + "b" * 5000 + ".com")
@example("\ud800@example.com")
@example("a@example.com\x00")
@example('"' + "a" * 10_000 + '"@example.com')
def test_any_text_is_an_address_or_one_error(text: str) -> None:
    try:
        normal = check_address(text)
    except SysmailError as exc:
        assert "\n" not in str(exc).replace("\\n", "")
    else:
        assert normal.encode("utf-8")


@PROPS
@given(
    st.from_regex(
        r"[a-zA-Z0-9._%+\-\"\\ ()<>,;:\[\]]{0,70}@[a-zA-Z0-9.\-\[\]:_]{0,80}", fullmatch=True
    )
)
def test_address_like_text_is_an_address_or_one_error(text: str) -> None:
    with contextlib.suppress(ValidationError):
        check_address(text)
