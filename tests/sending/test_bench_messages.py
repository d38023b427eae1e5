"""The benchmark's messages, built by the pipeline's own path, read back by the stdlib.

Correctness does not bend for speed: every message the benchmark sends is
parsed with ``email`` (policy.default) and compared with what was meant.
"""

from __future__ import annotations

import sys
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.mail.mime import compose
from sysmail_ops.templates import catalog as templates

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import bench_send


def ended(body: str) -> str:
    body = body.replace("\r\n", "\n")
    return body if body.endswith("\n") else body + "\n"


@pytest.mark.parametrize("n", [600])
def test_every_benchmark_message_parses_back_as_meant(ws: Workspace, n: int) -> None:
    t = templates.add_template(
        ws, "shipped", object_type="order", subject=bench_send.SUBJECT, html=bench_send.HTML,
        text=bench_send.TEXT,
    )  # fmt: skip
    compiled = templates.compile_template(t)
    for rec in bench_send.Records(n):
        r = compiled.render(rec)
        c = compose(from_addr="shop@example.com", from_name="Example Shop", to=[rec["email"]],
                    subject=r.subject, text=r.text, html=r.html)  # fmt: skip
        for line in c.data.split(b"\r\n"):
            assert len(line) <= 998 and b"\n" not in line and b"\r" not in line
        msg = message_from_bytes(c.data, policy=policy.default)
        assert not msg.defects
        assert str(msg["Subject"]) == f"Your order {rec['order_id']} has shipped, {rec['name']}"
        assert msg["To"].addresses[0].addr_spec == rec["email"]
        assert msg["From"].addresses[0].display_name == "Example Shop"
        assert msg["Message-ID"] == c.message_id
        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        assert text is not None and html is not None
        # CRLF on the wire; a body always ends with a line break
        assert text.get_content().replace("\r\n", "\n") == ended(r.text)
        assert html.get_content().replace("\r\n", "\n") == ended(r.html)
        assert html["Content-Transfer-Encoding"] in ("quoted-printable", "base64", "7bit")
        assert rec["city"] in html.get_content()
