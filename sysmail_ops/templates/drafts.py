"""Unsaved template sources, checked and rendered as a save and a send would: the live
preview of the template form. Nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sysmail_ops.errors import ValidationError
from sysmail_ops.templates.catalog import (
    CompiledTemplate,
    Rendered,
    Template,
    _build,
    render_budget,
)

if TYPE_CHECKING:
    from sysmail_ops.config.workspace import Workspace

__all__ = ["check_draft", "fields_of", "render_draft"]

DRAFT_NAME = "draft"


def check_draft(
    ws: Workspace,
    *,
    name: str | None,
    object_type: str,
    subject: str,
    html: str,
    text: str | None = None,
    fields: Iterable[str] | str | None = None,
    description: str | None = None,
) -> Template:
    """The version these sources would save as (version 0), or the ``TemplateError`` /
    ``ValidationError`` a save would raise, with part and line."""
    return _build(
        name=(name or "").strip() or DRAFT_NAME,
        version=0,
        object_type=object_type.strip() or "object",
        subject=subject,
        html=html,
        text=text or None,
        fields=fields or None,
        description=description or None,
        builtin=False,
        budget=render_budget(ws),
    )


def render_draft(ws: Workspace, draft: Template, record: Mapping[str, Any]) -> Rendered:
    """``draft`` (from ``check_draft``) rendered for one record under the workspace's budget."""
    if not isinstance(record, Mapping):
        raise ValidationError(
            f"a record must be a mapping of field names to values, got {type(record).__name__}"
        )
    # compiled outside the catalogue's cache: a draft changes with every keystroke
    return CompiledTemplate(draft).render(record, render_budget(ws))


def fields_of(draft: Template) -> list[str]:
    """The top-level record fields a draft reads, sorted (for a sample record skeleton)."""
    return sorted(CompiledTemplate(draft).fields_used)
