"""Object email templates: the sandboxed renderer (``render``) and the
versioned catalogue in the store (``catalog``), with the built-in templates.

May import: ``config``, ``mail``, ``store``, ``errors``.
"""

from sysmail_ops.templates import catalog, render
from sysmail_ops.templates.catalog import (
    DEFAULT_BUDGET,
    MAX_SOURCE,
    PARTS,
    Budget,
    CompiledTemplate,
    RenderBudgetError,
    Rendered,
    Template,
    add_template,
    builtin_sources,
    check,
    compile_template,
    edit_template,
    ensure_builtin,
    get_template,
    list_templates,
    list_versions,
    preview,
    remove_template,
    render_budget,
)
from sysmail_ops.templates.render import html_to_text

__all__ = [
    "DEFAULT_BUDGET",
    "MAX_SOURCE",
    "PARTS",
    "Budget",
    "CompiledTemplate",
    "RenderBudgetError",
    "Rendered",
    "Template",
    "add_template",
    "builtin_sources",
    "catalog",
    "check",
    "compile_template",
    "edit_template",
    "ensure_builtin",
    "get_template",
    "html_to_text",
    "list_templates",
    "list_versions",
    "preview",
    "remove_template",
    "render",
    "render_budget",
]
