"""The declared references between tables match the schema the migrations build."""

from __future__ import annotations

from sysmail_ops.config.workspace import Workspace
from sysmail_ops.store.references import HISTORY, REFERENCES, users_of


def pointing_columns(ws: Workspace) -> set[tuple[str, str]]:
    """Every column whose name says it holds an account's or a template's name."""
    with ws.store.connect() as con:
        rows = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE column_name IN ('account', 'template') OR column_name LIKE '%\\_template' "
            "ESCAPE '\\'"
        ).fetchall()
    return {(str(t), str(c)) for t, c in rows}


def test_every_table_that_names_an_account_or_template_is_declared(ws: Workspace) -> None:
    declared = {(r.table, r.column) for r in REFERENCES}
    found = pointing_columns(ws)
    assert ("campaigns", "reminder_template") in found  # the query sees suffixed names
    undeclared = {(t, c) for t, c in found if t not in HISTORY} - declared
    assert not undeclared, f"add these to store.references.REFERENCES: {sorted(undeclared)}"
    assert declared <= found, f"declared but not in the schema: {sorted(declared - found)}"
    assert not {r.table for r in REFERENCES} & HISTORY


def test_users_of_names_each_user_once_in_order(ws: Workspace) -> None:
    with ws.store.connect() as con:
        assert users_of(con, "accounts", "service") == []
        con.execute(
            "INSERT INTO campaigns (name, kind, account, template, reminder_template, settings,"
            " created_at, updated_at) VALUES ('nps', 'survey', 'service', 'csat', 'csat', '{}',"
            " now(), now())"
        )
        assert users_of(con, "templates", "csat") == ["campaign nps"]  # two columns, one user
        assert users_of(con, "accounts", "service") == ["campaign nps"]
        assert users_of(con, "accounts", "other") == []
