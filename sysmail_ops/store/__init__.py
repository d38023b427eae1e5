"""The DuckDB store: short-lived connections with lock wait, numbered migrations,
helpers for named objects, and the declared references between tables.

May import: ``errors`` only (DuckDB itself is imported when a store is opened).
"""

from sysmail_ops.store.database import Store, insert_named, update_named, utcnow
from sysmail_ops.store.references import REFERENCES, Reference, users_of

__all__ = ["REFERENCES", "Reference", "Store", "insert_named", "update_named", "users_of", "utcnow"]
