"""Who may open the Admin Console: its login password, kept hashed in the workspace.

``sysmail-ops console --set-password`` stores an argon2 hash made by Jupyter
Server's own ``jupyter_server.auth.passwd``; the console hands that hash to
Jupyter Server's ``PasswordIdentityProvider``, which checks logins. The clear
password is never stored, printed or audited ("password changed" only). It
is kept in the ``settings`` table under a name that is not a user setting
(``settings list`` does not show it, ``settings set`` cannot write it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sysmail_ops.errors import ValidationError
from sysmail_ops.mail.credentials import Secret
from sysmail_ops.store import audit
from sysmail_ops.store.database import utcnow

if TYPE_CHECKING:
    from sysmail_ops.config.workspace import Workspace

__all__ = ["MIN_LENGTH", "clear_password", "password_hash", "set_password", "verify"]

KEY = "console_password_hash"
MIN_LENGTH = 10
MAX_LENGTH = 1024


def password_hash(ws: Workspace) -> str | None:
    """The stored hash (``argon2:...``), or None when no console password is set."""
    with ws.store.connect() as con:
        row = con.execute("SELECT value FROM settings WHERE key = ?", [KEY]).fetchone()
    return str(row[0]) if row and row[0] else None


def _check(password: Secret | str) -> str:
    clear = password.reveal() if isinstance(password, Secret) else str(password)
    if len(clear) < MIN_LENGTH:
        raise ValidationError(f"the console password needs at least {MIN_LENGTH} characters")
    if len(clear) > MAX_LENGTH or any(c in clear for c in "\r\n\0"):
        raise ValidationError(
            f"the console password must be one line of at most {MAX_LENGTH} characters"
        )
    return clear


def set_password(ws: Workspace, password: Secret | str) -> None:
    """Hash (argon2, Jupyter Server's own) and store the console login password."""
    from jupyter_server.auth import passwd

    hashed = passwd(_check(password))
    with ws.store.transaction() as con:
        before = con.execute("SELECT value FROM settings WHERE key = ?", [KEY]).fetchone()
        con.execute(
            "INSERT OR REPLACE INTO settings (key, value, updated_at) VALUES (?, ?, ?)",
            [KEY, hashed, utcnow()],
        )
        audit.record(
            con,
            "console",
            "password",
            "edit" if before else "add",
            {"password_hash": before[0]} if before else None,
            {"password_hash": hashed},
        )


def clear_password(ws: Workspace) -> bool:
    """Forget the console password; returns whether one was set."""
    with ws.store.transaction() as con:
        before = con.execute("SELECT value FROM settings WHERE key = ?", [KEY]).fetchone()
        if not before:
            return False
        con.execute("DELETE FROM settings WHERE key = ?", [KEY])
        audit.record(con, "console", "password", "remove", {"password_hash": before[0]}, None)
    return True


def verify(ws: Workspace, password: Secret | str) -> bool:
    """Whether ``password`` is the console password (False when none is set)."""
    from jupyter_server.auth.security import passwd_check

    hashed = password_hash(ws)
    clear = password.reveal() if isinstance(password, Secret) else str(password)
    return bool(hashed) and bool(passwd_check(hashed, clear))
