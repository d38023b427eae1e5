"""What the admin configures: the workspace (folder, store, key), encrypted
secrets, the system emails (accounts), workspace settings and the role directory.

May import: ``mail``, ``store``, ``errors``.
"""

from sysmail_ops.config import accounts, directory, secrets, settings, workspace
from sysmail_ops.config.workspace import Workspace, resolve_home

__all__ = ["Workspace", "accounts", "directory", "resolve_home", "secrets", "settings", "workspace"]
