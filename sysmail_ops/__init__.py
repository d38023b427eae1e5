"""sysmail-ops: operations toolkit for a company's system emails.

The floors, from the top (an import only goes down; ``|`` = independent):

    faces        cli | web | sink | demo
    use cases    subscriptions | flows | campaigns
                 sending | analytics
                 templates | records
                 config
                 mail | store | inputs
                 errors

``import-linter`` holds them (contracts in ``pyproject.toml``). Everything a
notebook or a user needs is importable from here, loaded on first use so
that the CLI and the compose worker start quickly::

    from sysmail_ops import Workspace, accounts, sending, templates
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from sysmail_ops.errors import SysmailError

if TYPE_CHECKING:
    from sysmail_ops import analytics, campaigns, flows, sending, subscriptions, templates
    from sysmail_ops import flows as workflows
    from sysmail_ops.analytics import charts
    from sysmail_ops.campaigns import surveys
    from sysmail_ops.config import accounts, directory, settings
    from sysmail_ops.config.workspace import Workspace
    from sysmail_ops.demo import sales
    from sysmail_ops.records import archive, sendlog, suppression
    from sysmail_ops.sending import connection_test as conntest
    from sysmail_ops.subscriptions import kit as reportkit
    from sysmail_ops.subscriptions import notebooks as reports

__version__ = "0.1.0"

# name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "Workspace": ("sysmail_ops.config.workspace", "Workspace"),
    # the sub-packages users work with
    "analytics": ("sysmail_ops.analytics", None),
    "campaigns": ("sysmail_ops.campaigns", None),
    "flows": ("sysmail_ops.flows", None),
    "sending": ("sysmail_ops.sending", None),
    "subscriptions": ("sysmail_ops.subscriptions", None),
    "templates": ("sysmail_ops.templates", None),
    # short names for the modules notebooks, reports and the README use
    "accounts": ("sysmail_ops.config.accounts", None),
    "archive": ("sysmail_ops.records.archive", None),
    "charts": ("sysmail_ops.analytics.charts", None),
    "conntest": ("sysmail_ops.sending.connection_test", None),
    "directory": ("sysmail_ops.config.directory", None),
    "reportkit": ("sysmail_ops.subscriptions.kit", None),
    "reports": ("sysmail_ops.subscriptions.notebooks", None),
    "sales": ("sysmail_ops.demo.sales", None),
    "sendlog": ("sysmail_ops.records.sendlog", None),
    "settings": ("sysmail_ops.config.settings", None),
    "suppression": ("sysmail_ops.records.suppression", None),
    "surveys": ("sysmail_ops.campaigns.surveys", None),
    "workflows": ("sysmail_ops.flows", None),
}

__all__ = [
    "SysmailError",
    "Workspace",
    "__version__",
    "accounts",
    "analytics",
    "archive",
    "campaigns",
    "charts",
    "conntest",
    "directory",
    "flows",
    "reportkit",
    "reports",
    "sales",
    "sending",
    "sendlog",
    "settings",
    "subscriptions",
    "suppression",
    "surveys",
    "templates",
    "workflows",
]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'sysmail_ops' has no attribute {name!r}") from None
    found = import_module(module)
    value = getattr(found, attr) if attr else found
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
