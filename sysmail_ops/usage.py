"""Who still uses a template or a system email: the modules whose objects send mail.

``remove_template`` and ``remove_account`` import these first, so their usage
checks (registered at import) are in place even when the caller never
imported them.
"""

from __future__ import annotations

from importlib import import_module

USER_MODULES = ("sysmail_ops.subscriptions", "sysmail_ops.workflows", "sysmail_ops.campaigns")


def load_user_modules() -> None:
    for name in USER_MODULES:
        try:
            import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
