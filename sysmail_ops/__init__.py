"""sysmail-ops: operations toolkit for a company's system emails."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sysmail_ops.errors import SysmailError

if TYPE_CHECKING:
    from sysmail_ops.workspace import Workspace

__all__ = ["SysmailError", "Workspace", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Imported on first use: the compose worker imports this package and needs no database.
    if name == "Workspace":
        from sysmail_ops.workspace import Workspace

        return Workspace
    raise AttributeError(f"module 'sysmail_ops' has no attribute {name!r}")
