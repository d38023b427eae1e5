"""From a delivery to wire bytes: render the template, then compose the message.

A ``Composer`` holds everything building a message needs (the account's
sender and list headers, one template version) and nothing that talks to the
store or the server, so it pickles: ``compose_pool`` runs it in a second
process while the first one sends.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sysmail_ops.config.accounts import Account
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import SecretKeyError, ValidationError
from sysmail_ops.mail import dkim
from sysmail_ops.mail.headers import check_link, list_unsubscribe
from sysmail_ops.mail.mime import Attachment, Composed, InlineImage, compose
from sysmail_ops.templates import catalog as templates
from sysmail_ops.templates.sender import Sender, append_signature


@dataclass
class Delivery:
    """One message of a batch: who gets it and the record its template renders."""

    to: Sequence[str]
    record: Mapping[str, Any]
    cc: Sequence[str] = ()
    bcc: Sequence[str] = ()
    reply_to: str | None = None
    key: str | None = None
    related: tuple[str, str] | None = None
    attachments: Sequence[Attachment] = ()
    inline_images: Sequence[InlineImage] = ()
    headers: Mapping[str, str] = field(default_factory=dict)  # extra headers, checked for CR/LF
    # A personal unsubscribe link (``links.unsubscribe_url``): List-Unsubscribe with it and
    # the account's mailto; List-Unsubscribe-Post (RFC 8058 one-click) when it is https.
    unsubscribe_url: str | None = None
    # The template already rendered for this record (``send_batch`` renders every record
    # before it sends any): composing uses it rather than render again.
    rendered: templates.Rendered | None = None
    # Or the number under which the compose worker that rendered it keeps it (the
    # rendered text stays in that process: ``worker.Kept``); None when not kept there.
    kept: int | None = None


def personal_unsubscribe(url: str, account: Account) -> dict[str, str]:
    """List-Unsubscribe (the link, then the account's mailto) and, for https, one-click POST."""
    if not isinstance(url, str):
        raise ValidationError(f"unsubscribe_url must be text, got {type(url).__name__}")
    url = url.strip()
    if not url.startswith(("https://", "http://")) or len(url) > 2000:
        raise ValidationError(f"unsubscribe_url must be an http(s) URL, got {url[:60]!r}")
    check_link(url, "unsubscribe_url")
    return list_unsubscribe(url, account.unsubscribe_mailto)


def account_list_unsubscribe(a: Account) -> dict[str, str]:
    """A marketing account's List-Unsubscribe headers from its settings (else none)."""
    if a.kind != "marketing":
        return {}
    return list_unsubscribe(a.unsubscribe_url, a.unsubscribe_mailto)


MESSAGE_ID_PURPOSE = b"sysmail-ops message-id"


def message_id_secret(ws: Workspace) -> bytes:
    """The workspace's key for keyed Message-IDs (HKDF of its secret key, for this purpose
    only), so nobody without the workspace can recompute one to confirm a guessed delivery
    key or recipient. Empty when the workspace has no usable key (a relay with no login
    needs none): the Message-IDs are then plain hashes, still stable and opaque."""
    try:
        return ws.secrets.derive_key(MESSAGE_ID_PURPOSE)
    except SecretKeyError:
        return b""


def sender_of(account: Account) -> Sender:
    """What templates see as ``sender``: the account's display name, address, signature."""
    return Sender(
        account.display_name or "",
        account.from_address,
        account.signature_html,
        account.signature_text,
    ).completed()


class Composer:
    """Builds the messages of one batch: one account, one template version, every render
    under ``budget`` (the workspace's ``templates.render_budget``).

    The account's signature is ``{{ sender.signature }}``, and is appended to
    each part when the template does not place it and the account says so
    (``signature_auto``). With ``dkim_keys`` every message is DKIM-signed as
    its last step, so the bytes sent, queued for retry and archived are the
    signed ones.

    A delivery with a key gets a Message-ID derived from the account, the key and the
    recipients (``message_key``), so building it again after a crash gives the copy the
    server may already hold its Message-ID; one without a key gets a random one.
    """

    def __init__(
        self,
        account: Account,
        template: templates.Template,
        budget: templates.Budget = templates.DEFAULT_BUDGET,
        dkim_keys: Sequence[dkim.DkimKey] = (),
        id_secret: bytes = b"",
    ):
        self.account = account
        self.template = template
        self.budget = budget
        self.dkim_keys = tuple(dkim_keys)
        self.id_secret = id_secret
        self.compiled = templates.compile_template(template)
        self.extra_headers = account_list_unsubscribe(account)
        self.sender = sender_of(account)
        self.append_signature = (
            account.signature_auto
            and self.sender.has_signature
            and not self.compiled.places_signature
        )

    def __getstate__(self) -> dict[str, Any]:
        # The compiled Jinja code does not pickle; the other side compiles the source again.
        # The DKIM keys go along: the compose worker is a child fed through a private pipe.
        return {
            "account": self.account,
            "template": self.template,
            "budget": self.budget,
            "dkim_keys": self.dkim_keys,
            "id_secret": self.id_secret,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["account"],
            state["template"],
            state["budget"],
            state.get("dkim_keys", ()),
            state.get("id_secret", b""),
        )

    def check_budget(self, record: Mapping[str, Any]) -> None:
        """Raise ``RenderBudgetError`` if rendering ``record`` goes over the budget; any
        other render error is left for sending to report."""
        self.compiled.check_budget(record, self.budget, self.sender)

    def headers(self, d: Delivery) -> Mapping[str, str]:
        """The account's extra headers, then the delivery's own (which win)."""
        if not d.headers and d.unsubscribe_url is None:
            return self.extra_headers
        merged = {k.lower(): (k, v) for k, v in self.extra_headers.items()}
        for k, v in d.headers.items():
            if not isinstance(k, str):
                raise ValidationError(f"header names must be text, got {type(k).__name__}")
            merged[k.lower()] = (k, v)
        if d.unsubscribe_url is not None:
            if "list-unsubscribe" in {k.lower() for k in d.headers}:
                raise ValidationError("give either unsubscribe_url or a List-Unsubscribe header")
            merged.pop("list-unsubscribe-post", None)
            for k, v in personal_unsubscribe(d.unsubscribe_url, self.account).items():
                merged[k.lower()] = (k, v)
        return dict(merged.values())

    def message_key(self, d: Delivery) -> bytes | None:
        """What a keyed delivery's Message-ID derives from: an HMAC of the account and the
        delivery key (the same key in two accounts is two messages); None without a key."""
        if not d.key:
            return None
        identity = f"{self.account.name}\0{d.key}".encode("utf-8", "surrogatepass")
        return hmac.new(self.id_secret, identity, hashlib.sha256).digest()

    def render(self, d: Delivery) -> templates.Rendered:
        """The template rendered for one delivery's record; raises on bad input."""
        return self.compiled.render(d.record, self.budget, sender=self.sender)

    def prepare(self, d: Delivery) -> tuple[Composed, str]:
        """Render and compose one delivery (message and subject); raises on bad input."""
        rendered = d.rendered if d.rendered is not None else self.render(d)
        html, text = rendered.html, rendered.text
        if self.append_signature:
            signed_html, text = append_signature(html, text, self.sender)
            html = signed_html if html else html  # a text-only template stays text only
        composed = compose(
            from_addr=self.account.from_address,
            from_name=self.account.display_name,
            to=d.to,
            cc=d.cc,
            bcc=d.bcc,
            reply_to=d.reply_to,
            subject=rendered.subject,
            text=text,
            html=html,
            attachments=d.attachments,
            inline_images=d.inline_images,
            message_key=self.message_key(d),
            extra_headers=self.headers(d),
        )
        if self.dkim_keys:
            composed = replace(composed, data=dkim.sign(composed.data, self.dkim_keys))
        return composed, rendered.subject
