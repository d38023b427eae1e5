"""The DuckDB store: short-lived connections with lock wait, numbered migrations,
helpers for named objects, and the declared references between tables.

May import: ``errors`` only (DuckDB itself is imported when a store is opened).
"""

from sysmail_ops.store.database import Store, utcnow
from sysmail_ops.store.named import check_name, insert_named, update_named
from sysmail_ops.store.references import REFERENCES, Reference, users_of

__all__ = [
    "REFERENCES",
    "Reference",
    "Store",
    "check_name",
    "insert_named",
    "update_named",
    "users_of",
    "utcnow",
]
