"""sysmail-ops: operations toolkit for a company's system emails."""

from sysmail_ops.errors import SysmailError
from sysmail_ops.workspace import Workspace

__all__ = ["SysmailError", "Workspace", "__version__"]
__version__ = "0.1.0"
