"""A face: the Admin Console, ipywidgets forms that notebooks import and display.

One module per form; a form calls the library (``config.accounts``,
``sending.connection_test``, ``templates``, ``subscriptions``) and holds no
business rule of its own. ``common`` has what every form shares: the guarded
callback (an error is one line in the form) and the status line.

May import anything below the faces; no other face. Forms are built on first
use, so ``from sysmail_ops.widgets import common`` pulls in no form::

    from sysmail_ops.widgets import email_management
    email_management()
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# name -> (module, attribute): the form factories the notebooks call
_LAZY: dict[str, tuple[str, str]] = {
    "email_management": ("sysmail_ops.widgets.accounts", "email_management"),
    "template_management": ("sysmail_ops.widgets.templates", "template_management"),
    "report_subscriptions": ("sysmail_ops.widgets.subscriptions", "report_subscriptions"),
}

__all__ = ["email_management", "report_subscriptions", "template_management"]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'sysmail_ops.widgets' has no attribute {name!r}") from None
    value = getattr(import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
