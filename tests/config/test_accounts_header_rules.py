"""An account's header-bound fields pass, at save, the very checks compose applies at send."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import SysmailError, ValidationError
from sysmail_ops.mail.headers import check_sender
from sysmail_ops.mail.mime import compose
from sysmail_ops.sending.delivery import account_list_unsubscribe

BCC = "Evil\r\nBcc: x@example.com"
B64_BCC = base64.b64encode(BCC.encode()).decode()

BAD = [
    ({"display_name": "=?utf-8?q?Evil=0D=0ABcc:_x@example.com?="}, "encoded line break"),
    ({"display_name": f"=?utf-8?b?{B64_BCC}?="}, "encoded line break"),
    ({"display_name": "Service =?iso-8859-1?q?=0A?= Desk"}, "encoded line break"),
    ({"display_name": "Evil\u2028Bcc: x@example.com"}, "line break"),
    ({"display_name": "Evil\x0bBcc"}, "line break"),
    ({"display_name": "Red \x1b[31m alert"}, "control character"),
    ({"unsubscribe_url": "https://example.com/u/=?utf-8?q?=0D=0A?="}, "encoded line break"),
    ({"unsubscribe_url": "https://example.com/u\u2029x"}, "line break"),
    ({"unsubscribe_url": "https://example.com/a b"}, "spaces"),
    ({"unsubscribe_url": "https://example.com/a>,<mailto:x@evil.example>"}, "commas or <>"),
]


def add(ws: Workspace, name: str = "news", **kw: Any) -> accounts.Account:
    base: dict[str, Any] = {
        "kind": "marketing",
        "from_address": "news@example.com",
        "smtp_host": "smtp.example.com",
    }
    return accounts.add_account(ws, name, **{**base, **kw})


def stored(ws: Workspace) -> list[tuple[object, ...]]:
    with ws.store.connect() as con:
        return con.execute("SELECT * FROM accounts ORDER BY name").fetchall()


def composes(a: accounts.Account) -> None:
    """What every send through ``a`` does with its fields (``sending.delivery.Composer``)."""
    compose(
        from_addr=a.from_address,
        from_name=a.display_name,
        to="a@example.com",
        subject="s",
        text="t",
        extra_headers=account_list_unsubscribe(a),
    )


@pytest.mark.parametrize(("override", "message"), BAD)
def test_add_refuses_what_every_send_would_refuse(
    ws: Workspace, override: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        add(ws, **override)
    assert "\n" not in str(info.value) and "\r" not in str(info.value)
    assert stored(ws) == []


@pytest.mark.parametrize(("override", "message"), BAD)
def test_edit_refuses_it_and_writes_nothing(
    ws: Workspace, override: dict[str, Any], message: str
) -> None:
    add(ws, display_name="Example News", unsubscribe_url="https://example.com/u")
    before = stored(ws)
    with pytest.raises(ValidationError, match=message):
        accounts.edit_account(ws, "news", **override)
    assert stored(ws) == before


def test_good_values_are_kept_and_send(ws: Workspace) -> None:
    a = add(
        ws,
        display_name='Büro für Köln, "News" =? not encoded',
        unsubscribe_url="https://example.com/u?list=news&x=1",
        unsubscribe_mailto="unsubscribe@example.com",
    )
    assert a.display_name == 'Büro für Köln, "News" =? not encoded'
    composes(a)


header_text = st.one_of(
    st.text(max_size=30),
    st.builds(
        "=?{}?{}?{}?=".format,
        st.sampled_from(["utf-8", "iso-8859-1", "x-unknown", ""]),
        st.sampled_from(["q", "Q", "b", "B"]),
        st.text(st.sampled_from("=0ADa_ /+Q9"), max_size=12),
    ),
)


@given(name=st.one_of(st.none(), header_text), url_tail=st.one_of(st.none(), header_text))
def test_check_sender_refuses_exactly_what_compose_refuses(
    name: str | None, url_tail: str | None
) -> None:
    url = None if url_tail is None else f"https://example.com/u/{url_tail}"
    try:
        check_sender("news@example.com", name, unsubscribe_url=url)
    except SysmailError:
        saved = False
    else:
        saved = True
    try:
        compose(
            from_addr="news@example.com",
            from_name=name,
            to="a@example.com",
            subject="s",
            text="t",
            extra_headers=dict([("List-Unsubscribe", f"<{url}>")] if url is not None else []),
        )
    except SysmailError:
        if saved:
            raise
