"""Which tables point at a system email or a template, declared once.

A subscription, a workflow rule or a campaign names the account it sends
through and the template(s) it sends with. Removing an account or a template
that something still names is refused; "is it still used?" is one query per
declared reference. A test compares this list with the schema, so a new
table that points at an account or a template cannot be forgotten here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import duckdb

Target = Literal["accounts", "templates"]


@dataclass(frozen=True)
class Reference:
    """Rows of ``table`` whose ``column`` holds the name of an account or a template."""

    table: str
    column: str
    target: Target
    label: str  # how a user is named in the refusal: "subscription weekly-sales"


REFERENCES: tuple[Reference, ...] = (
    Reference("subscriptions", "account", "accounts", "subscription"),
    Reference("subscriptions", "template", "templates", "subscription"),
    Reference("workflow_rules", "account", "accounts", "rule"),
    Reference("workflow_rules", "template", "templates", "rule"),
    Reference("campaigns", "account", "accounts", "campaign"),
    Reference("campaigns", "template", "templates", "campaign"),
    Reference("campaigns", "reminder_template", "templates", "campaign"),
)


def users_of(con: duckdb.DuckDBPyConnection, target: Target, name: str) -> list[str]:
    """Who still names ``name``: e.g. ``["campaign june-nps", "rule approval-granted"]``."""
    users: set[str] = set()
    for ref in REFERENCES:
        if ref.target != target:
            continue
        rows = con.execute(
            f"SELECT name FROM {ref.table} WHERE {ref.column} = ?",  # noqa: S608 (declared above)
            [name],
        ).fetchall()
        users.update(f"{ref.label} {row[0]}" for row in rows)
    return sorted(users)


# Tables that record what happened (or belong to the account itself): their rows
# keep an account's or a template's name after it is removed, and never block it.
HISTORY: frozenset[str] = frozenset(
    {"send_log", "archive", "deferred", "account_tests", "imap_folders", "imap_status", "bounces"}
)
