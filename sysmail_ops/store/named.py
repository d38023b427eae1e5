"""Named objects: system emails, templates, rules, subscriptions and campaigns are
each keyed by a short name, checked the same way and stored by these helpers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sysmail_ops.errors import ValidationError

if TYPE_CHECKING:
    import duckdb

__all__ = ["check_name", "insert_named", "update_named"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


def check_name(value: Any, what: str = "name") -> str:
    """A name as stored: stripped, 1-40 letters, digits, '.', '_' or '-', starting with one of
    the first two. ``what`` names it in the error ("rule name")."""
    name = value.strip() if isinstance(value, str) else ""
    if not _NAME.fullmatch(name):
        raise ValidationError(
            f"{what} {name!r} must be 1-40 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return name


def insert_named(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: Sequence[str],
    row: Sequence[Any],
    what: str,
) -> None:
    """Insert a row keyed by its ``name`` column, refusing a name already taken.

    ``table`` and ``columns`` are the caller's own identifiers, never user input.
    """
    name = row[list(columns).index("name")]
    if con.execute(f"SELECT 1 FROM {table} WHERE name = ?", [name]).fetchone():  # noqa: S608
        raise ValidationError(f"a {what} named {name!r} already exists")
    con.execute(
        f"INSERT INTO {table} ({', '.join(columns)})"  # noqa: S608
        f" VALUES ({', '.join('?' for _ in columns)})",
        list(row),
    )


def update_named(
    con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str], row: Sequence[Any]
) -> None:
    """Rewrite every column of the row whose ``name`` is the one in ``row``."""
    values = dict(zip(columns, row, strict=True))
    name = values.pop("name")
    sets = ", ".join(f"{c} = ?" for c in values)
    con.execute(f"UPDATE {table} SET {sets} WHERE name = ?", [*values.values(), name])  # noqa: S608
