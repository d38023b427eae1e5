"""An unsaved subscription, checked as a save would check it: what the form previews and
test-sends before (or instead of) saving. Nothing is written."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sysmail_ops.store.database import utcnow
from sysmail_ops.subscriptions.model import (
    DEFAULT_LOCALE,
    DEFAULT_TEMPLATE,
    Recipient,
    Subscription,
    _validate,
)

if TYPE_CHECKING:
    from sysmail_ops.config.workspace import Workspace

__all__ = ["DRAFT_NAME", "check_draft"]

DRAFT_NAME = "draft"  # the name of a draft not named yet (its preview folder)


def check_draft(
    ws: Workspace,
    name: str | None,
    *,
    notebook: str,
    recipients: Iterable[Recipient | str | Mapping[str, Any]],
    cron: str,
    timezone: str,
    account: str,
    owner: str,
    template: str = DEFAULT_TEMPLATE,
    parameters: Mapping[str, Any] | None = None,
    formats: Sequence[str] = ("html_body",),
    tables: Sequence[str] | None = None,
    skip_if_empty: bool = False,
    timeout: float = 600.0,
    description: str | None = None,
    locale: str = DEFAULT_LOCALE,
) -> Subscription:
    """The subscription these values make, checked exactly as ``add_subscription`` checks it
    (report, parameters, recipients, schedule, account, template, formats, owner)."""
    now = utcnow()
    return _validate(
        ws,
        Subscription(
            name=(name or "").strip() or DRAFT_NAME,
            notebook=notebook,
            recipients=tuple(recipients),  # type: ignore[arg-type]
            cron=cron,
            timezone=timezone,
            account=account,
            template=template,
            owner=owner,
            parameters=parameters or {},
            formats=tuple(formats),
            tables=tuple(tables) if tables is not None else None,
            skip_if_empty=skip_if_empty,
            timeout=timeout,
            description=description,
            locale=locale,
            created_at=now,
            updated_at=now,
        ),
    )
