"""A small hand-made send log whose every ops answer is known (see ``handmade_log``).

Rows go straight into the real DuckDB file of a workspace, as the journal fold
would put them; the archived message is a real ``.eml`` file in the workspace.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.store import private

D2, D3 = datetime(2026, 3, 2), datetime(2026, 3, 3)


def at(day: datetime, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return day.replace(hour=hh, minute=mm, second=ss)


def row(mid: str, to: str, status: str, queued: datetime, **kw: Any) -> dict[str, Any]:
    marketing = kw.get("account", "news") == "news"
    base: dict[str, Any] = {
        "batch_id": "b-" + queued.strftime("%d%H"),
        "delivery_key": kw.pop("key", f"k-{mid or to}"),
        "message_id": mid,
        "account": "news" if marketing else "service",
        "template": "promo" if marketing else "note",
        "template_version": 1,
        "use_case": "marketing" if marketing else "workflow",
        "related_type": "case",
        "related_id": "42",
        "recipient": to,
        "role": "to",
        "subject": f"Mail {mid or to}",
        "status": status,
        "smtp_phase": {"sent": "data", "deferred": "rcpt", "failed": "rcpt"}.get(status),
        "smtp_code": None,
        "smtp_reply": None,
        "attempt": 1,
        "queued_at": queued,
        "sent_at": None,
        "duration_ms": 12.5,
        "size_bytes": 2048,
        "next_attempt_at": None,
    }
    base.update(kw)
    return base


# The log, in insertion (id) order. Deliveries and what is known about them:
#  m1 ann@example.com  service  deferred 451, then sent 5 min later: 2 attempts, waited 302 s
#  m2 bob@example.com  service  sent in 1 s
#  m3 cat@example.net  service  failed 550 (a bounce)
#  m4 dan@example.net  news     failed 554 (a bounce)
#  m5 eve@example.org  news     deferred 421, still waiting
#  m6 fay@example.org  news     sent in 3 s
#  -- gus@example.com  news     suppressed (nothing composed: no message id)
#  m8 ann@example.com  news     deferred 451 twice, then failed 451 (gave up): 3 attempts
ROWS = [
    row("m1", "ann@example.com", "deferred", at(D2, 10), account="service", smtp_code=451,
        smtp_reply="4.7.1 try later", next_attempt_at=at(D2, 10, 5)),
    row("m2", "bob@example.com", "sent", at(D2, 10), account="service", smtp_code=250,
        smtp_reply="2.0.0 ok", sent_at=at(D2, 10, 0, 1)),
    row("m1", "ann@example.com", "sent", at(D2, 10, 5), account="service", smtp_code=250,
        smtp_reply="2.0.0 ok", attempt=2, sent_at=at(D2, 10, 5, 2)),
    row("m3", "cat@example.net", "failed", at(D2, 11), account="service", smtp_code=550,
        smtp_reply="5.1.1 no such user"),
    row("m4", "dan@example.net", "failed", at(D2, 11, 30), smtp_code=554,
        smtp_reply="5.7.1 rejected"),
    row("m5", "eve@example.org", "deferred", at(D3, 9), smtp_code=421,
        smtp_reply="4.3.2 busy", next_attempt_at=at(D3, 9, 5)),
    row("m6", "fay@example.org", "sent", at(D3, 9), smtp_code=250, smtp_reply="2.0.0 ok",
        sent_at=at(D3, 9, 0, 3)),
    row("", "gus@example.com", "suppressed", at(D3, 9), smtp_phase=None, duration_ms=None),
    row("m8", "ann@example.com", "deferred", at(D3, 12), smtp_code=451,
        smtp_reply="4.7.1 try later"),
    row("m8", "ann@example.com", "deferred", at(D3, 12, 10), smtp_code=451,
        smtp_reply="4.7.1 try later", attempt=2),
    row("m8", "ann@example.com", "failed", at(D3, 12, 20), smtp_code=451,
        smtp_reply="gave up after 0:20:00: 4.7.1 try later", attempt=3),
]  # fmt: skip
SUPPRESSED = [
    ("cat@example.net", "bounce", "dsn", at(D2, 11, 1)),
    ("gus@example.com", "unsubscribe", "serve", at(D3, 8)),
]
EVIL_HTML = (
    '<html><head><meta http-equiv="refresh" content="0;url=http://127.0.0.1:9/refresh">'
    "</head><body><h1>Hello &amp; welcome</h1>"
    "<script>document.title = 'pwned'; parent.document.title = 'pwned';</script>"
    '<img src="http://127.0.0.1:9/pixel.png" alt="tracker">'
    '<img src="cid:logo@x" alt="logo">'
    '<p style="color:red" onclick="alert(1)">Ann\'s "case" &lt;42&gt;</p></body></html>'
)
LOGO = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


@functools.cache
def message_bytes() -> bytes:
    """m2's mail: text, hostile HTML, an inline cid: image (made once: random boundaries)."""
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "service@example.com"
    msg["To"] = "bob@example.com"
    msg["Subject"] = "Mail m2"
    msg["Message-ID"] = "m2"
    msg.set_content("Hello Bob, plain text.\n")
    msg.add_alternative(EVIL_HTML, subtype="html")
    html_part = msg.get_body(preferencelist=("html",))
    assert html_part is not None
    html_part.add_related(LOGO, "image", "png", cid="<logo@x>")
    return bytes(msg)


def handmade_log(ws: Workspace) -> Workspace:
    """Fill ``ws`` with ``ROWS``, ``SUPPRESSED`` and m2's archived message."""
    cols = list(ROWS[0])
    folder = ws.archive_dir / "sent" / "2026" / "03" / "02"
    private.make_dirs(folder)
    eml = folder / "m2.eml"
    private.write_file(eml, message_bytes())
    with ws.store.transaction() as con:
        for seq, r in enumerate(ROWS, 1):
            values = [seq if c == "seq" else r[c] for c in cols]
            con.execute(
                f"INSERT INTO send_log ({', '.join(cols)}, seq) VALUES "  # noqa: S608
                f"({', '.join('?' * len(cols))}, ?)",
                [*values, seq],
            )
        for entry in SUPPRESSED:
            con.execute("INSERT INTO suppression VALUES (?, ?, ?, ?)", list(entry))
        con.execute(
            "INSERT INTO archive (id, message_id, account, direction, from_addr, to_addrs,"
            " cc_addrs, subject, date, related_type, related_id, size_bytes, attachments,"
            " eml_path, delivery_key, batch_id) VALUES"
            " ('a-m2', 'm2', 'service', 'sent', 'service@example.com', ['bob@example.com'], [],"
            " 'Mail m2', ?, 'case', '42', 100, [], ?, 'k-m2', 'b-0210')",
            [at(D2, 10, 0, 1), str(eml.relative_to(ws.home))],
        )
    return ws
