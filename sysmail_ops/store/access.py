"""Read-only processes: the Admin Console's ``--read-only`` mode, enforced in the library.

The console started with ``--read-only`` gives its kernels ``SYSMAIL_READ_ONLY=1``.
In such a process every audited change (``store.audit.record``: system emails,
templates, subscriptions, rules, campaigns, roles, settings) and every use of a
system email's credential (``config.accounts.password_for``: sending, retries,
connection tests) raises ``ReadOnlyError``, inside the change's transaction, so
nothing is written and no mail leaves, whatever a page or a crafted widget
message asks for. Reading (the log, the archive, analytics, the audit trail) works.
"""

from __future__ import annotations

import os

from sysmail_ops.errors import ReadOnlyError

__all__ = ["ENV_READ_ONLY", "check_writable", "read_only"]

ENV_READ_ONLY = "SYSMAIL_READ_ONLY"


def read_only() -> bool:
    """Whether this process may only read (``SYSMAIL_READ_ONLY`` set to 1/true/yes/on)."""
    return os.environ.get(ENV_READ_ONLY, "").strip().lower() in ("1", "true", "yes", "on")


def check_writable(what: str) -> None:
    """Raise ``ReadOnlyError`` naming ``what`` when this process is read-only."""
    if read_only():
        raise ReadOnlyError(
            f"{what} is not allowed: this console is read-only (started with --read-only)"
        )
