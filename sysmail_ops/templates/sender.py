"""``sender``: the system email a message goes out through, as every template sees it.

``{{ sender.name }}``, ``{{ sender.address }}`` and ``{{ sender.signature }}``:
the signature is the account's HTML signature in the HTML part (as markup,
not escaped: the admin wrote it) and its text signature in the text part and
the subject. A record field named ``sender`` wins over it (templates written
before it existed keep their meaning). Where a template does not place the
signature, ``append_signature`` adds it at the end of each part.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import nodes

NAME = "sender"  # the template variable; provided by sending, never by a record
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Sender:
    """Plain values of the sending account that templates may show."""

    name: str
    address: str
    signature_html: str | None = None
    signature_text: str | None = None

    @classmethod
    def example(cls) -> Sender:
        """What a preview without an account shows."""
        return cls(
            "Customer Service",
            "service@example.com",
            "<p>Customer Service<br>Example Ltd.</p>",
            "Customer Service\nExample Ltd.",
        )

    def view(self, part: str) -> dict[str, Any]:
        """``sender`` as the ``part`` (subject, html, text) sees it."""
        from markupsafe import Markup

        if part == "html":
            # The admin's own HTML (like a template's), not data from a record.
            html = self.signature_html or _html_from_text(self.signature_text)
            signature: Any = Markup(html)  # noqa: S704
        else:
            signature = self.signature_text or ""
        return {"name": self.name, "address": self.address, "signature": signature}

    def completed(self) -> Sender:
        """Both signature parts filled (the text one derived from the HTML once, if missing)."""
        if self.signature_text or not self.signature_html:
            return self
        from sysmail_ops.templates.render import html_to_text

        text = html_to_text(self.signature_html).strip() or None
        return Sender(self.name, self.address, self.signature_html, text)

    @property
    def has_signature(self) -> bool:
        return bool(self.signature_html or self.signature_text)


def _html_from_text(text: str | None) -> str:
    from markupsafe import escape

    if not text:
        return ""
    return "<p>" + "<br>\n".join(str(escape(line)) for line in text.splitlines()) + "</p>"


def places_signature(asts: Iterable[nodes.Template]) -> bool:
    """Whether a template shows ``sender.signature`` (or ``sender['signature']``) itself."""
    from jinja2 import nodes

    for ast in asts:
        for attr in ast.find_all(nodes.Getattr):
            if _is_sender(attr.node) and attr.attr == "signature":
                return True
        for item in ast.find_all(nodes.Getitem):
            arg = item.arg
            if _is_sender(item.node) and isinstance(arg, nodes.Const) and arg.value == "signature":
                return True
    return False


def _is_sender(node: nodes.Node) -> bool:
    from jinja2 import nodes

    return isinstance(node, nodes.Name) and node.name == NAME


def append_signature(html: str, text: str, sender: Sender) -> tuple[str, str]:
    """The HTML and text bodies with the signature added at their end.

    HTML: before ``</body>`` when there is one, else at the end; text: after
    the usual "-- " separator line (RFC 3676 4.3), which readers recognise.
    """
    sig_html = sender.signature_html or _html_from_text(sender.signature_text)
    if sig_html:
        block = f'\n<div class="signature">{sig_html}</div>\n'
        ends = list(_BODY_END.finditer(html))
        if ends:
            at = ends[-1].start()
            html = html[:at] + block + html[at:]
        else:
            html = html + block
    sig_text = sender.signature_text
    if not sig_text and sender.signature_html:
        from sysmail_ops.templates.render import html_to_text

        sig_text = html_to_text(sender.signature_html).strip()
    if sig_text:
        text = text.rstrip("\n") + "\n\n-- \n" + sig_text.strip("\n") + "\n"
    return html, text
