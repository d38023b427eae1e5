"""The role directory: who a rule's ``role:finance`` recipient means.

A small table the admin maintains: role, person's name, address. A role may
list several people; a person may hold several roles. Entries are added one
at a time or imported from a DataFrame / CSV (columns ``role``, ``name``,
``address`` or ``email``). Every row is checked before anything is written.
Removing a role's last entry is refused while a notification rule sends to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import InUseError, NotFoundError, ValidationError
from sysmail_ops.inputs import read_records
from sysmail_ops.store import audit
from sysmail_ops.store.database import utcnow

_ROLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
MAX_PROBLEMS = 5


@dataclass(frozen=True)
class Entry:
    """One person in one role."""

    role: str
    name: str
    address: str
    created_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat() + "Z" if self.created_at else None
        return d


def check_role(role: str) -> str:
    role = (role or "").strip()
    if not _ROLE.fullmatch(role):
        raise ValidationError(
            f"role {role!r} must be 1-40 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return role


def _check_name(name: Any, what: str = "name") -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(f"{what} must not be empty")
    name = name.strip()
    if any(c in name for c in "\r\n\0"):
        raise ValidationError(f"{what} must not contain line breaks")
    if len(name) > 200:
        raise ValidationError(f"{what} is longer than 200 characters")
    return name


def _entry(role: Any, name: Any, address: Any, where: str = "") -> Entry:
    prefix = f"{where}: " if where else ""
    try:
        return Entry(
            check_role(str(role or "")),
            _check_name(name, "name"),
            accounts.check_address(str(address or "").strip(), "address"),
        )
    except ValidationError as exc:
        raise ValidationError(f"{prefix}{exc}") from None


def list_entries(ws: Workspace, role: str | None = None) -> list[Entry]:
    """Every entry (of one role), by role then name."""
    where, params = ("WHERE role = ?", [role]) if role else ("", [])
    with ws.store.connect() as con:
        rows = con.execute(
            f"SELECT role, name, address, created_at FROM role_directory {where} "  # noqa: S608
            "ORDER BY role, lower(name), address",
            params,
        ).fetchall()
    return [Entry(*r) for r in rows]


def roles(ws: Workspace) -> dict[str, list[str]]:
    """Role -> its addresses: what notifying resolves ``role:...`` recipients with."""
    with ws.store.connect() as con:
        return fetch_roles(con)


def fetch_roles(con: Any) -> dict[str, list[str]]:
    """``roles`` on an open connection."""
    out: dict[str, list[str]] = {}
    rows = con.execute(
        "SELECT role, address FROM role_directory ORDER BY role, lower(name), address"
    ).fetchall()
    for role, address in rows:
        out.setdefault(role, []).append(address)
    return out


def add_entry(ws: Workspace, role: str, name: str, address: str) -> Entry:
    """Add one person to a role; the same address twice in a role is refused."""
    e = _entry(role, name, address)
    now = utcnow()
    with ws.store.transaction() as con:
        row = con.execute(
            "SELECT name, address FROM role_directory WHERE role = ? AND lower(address) = lower(?)",
            [e.role, e.address],
        ).fetchone()
        if row:
            raise ValidationError(
                f"role {e.role} already lists {row[1]} ({row[0]}): remove it first to rename"
            )
        con.execute(
            "INSERT INTO role_directory VALUES (?, ?, ?, ?)",
            [e.role, e.name, e.address, now],
        )
        audit.record(
            con, "role", e.role, "add member", None, {"name": e.name, "address": e.address}
        )
    return Entry(e.role, e.name, e.address, now)


def _rules_using(con: Any, role: str) -> list[str]:
    rows = con.execute(
        "SELECT name FROM workflow_rules WHERE list_contains(recipients, ?) ORDER BY name",
        [f"role:{role}"],
    ).fetchall()
    return [f"rule {r[0]}" for r in rows]


def remove_entry(ws: Workspace, role: str, address: str | None = None) -> int:
    """Remove one address from a role, or the whole role; returns how many entries went.

    Refused when it would leave a role some notification rule sends to empty.
    """
    role = check_role(role)
    with ws.store.transaction() as con:
        have = [
            r[0]
            for r in con.execute(
                "SELECT address FROM role_directory WHERE role = ?", [role]
            ).fetchall()
        ]
        if not have:
            raise NotFoundError(f"no role named {role!r} in the directory")
        gone = [a for a in have if address is None or a.lower() == address.strip().lower()]
        if not gone:
            raise NotFoundError(f"role {role} does not list {address}")
        if len(gone) == len(have):
            users = _rules_using(con, role)
            if users:
                raise InUseError(
                    f"role {role} would be empty but is still used by {', '.join(users)}"
                )
        con.execute(
            "DELETE FROM role_directory WHERE role = ? AND list_contains(?, address)",
            [role, gone],
        )
        audit.record(con, "role", role, "remove member", {"addresses": gone}, None)
    return len(gone)


@dataclass
class ImportResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0

    def summary(self) -> str:
        return f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged"


def import_entries(ws: Workspace, source: Any) -> ImportResult:
    """Add or update entries from a DataFrame, mappings, or a CSV / JSONL file.

    Columns: ``role``, ``name``, ``address`` (or ``email``). An entry already
    there keeps its place and takes the new name; a row repeated in the source
    counts once; the same role and address with two different names is refused.
    Every row is checked first: any bad row and nothing is written.
    """
    wanted: dict[tuple[str, str], Entry] = {}
    problems: list[str] = []
    for n, rec in enumerate(_rows(source), 1):
        try:
            e = _entry(
                rec.get("role"), rec.get("name"), rec.get("address") or rec.get("email"), f"row {n}"
            )
        except ValidationError as exc:
            problems.append(str(exc))
        else:
            key = (e.role, e.address.lower())
            prior = wanted.get(key)
            if prior is not None and prior.name != e.name:
                problems.append(
                    f"row {n}: {e.address} in role {e.role} is named both {prior.name!r} and"
                    f" {e.name!r}"
                )
            wanted[key] = e
        if len(problems) >= MAX_PROBLEMS:
            break
    if problems:
        more = " (and maybe more)" if len(problems) >= MAX_PROBLEMS else ""
        raise ValidationError("; ".join(problems) + more + "; nothing was imported")
    result = ImportResult()
    now = utcnow()
    with ws.store.transaction() as con:
        have = {
            (r[0], r[2].lower()): r[1]
            for r in con.execute("SELECT role, name, address FROM role_directory").fetchall()
        }
        for key, e in wanted.items():
            if key not in have:
                con.execute(
                    "INSERT INTO role_directory VALUES (?, ?, ?, ?)",
                    [e.role, e.name, e.address, now],
                )
                result.added += 1
            elif have[key] != e.name:
                con.execute(
                    "UPDATE role_directory SET name = ? WHERE role = ? AND lower(address) = ?",
                    [e.name, e.role, key[1]],
                )
                result.updated += 1
            else:
                result.unchanged += 1
        if result.added or result.updated:
            audit.record(con, "role", "*", "import", note=result.summary())
    return result


def _rows(source: Any) -> Iterable[dict[str, Any]]:
    if isinstance(source, str) and not source.lower().endswith((".csv", ".jsonl", ".json")):
        raise ValidationError(f"directory import reads .csv, .jsonl or .json files: {source}")
    rows = list(read_records(source))
    if not rows:
        raise ValidationError("nothing to import: no rows")
    columns = set(rows[0])
    missing = [c for c in ("role", "name") if c not in columns]
    if "address" not in columns and "email" not in columns:
        missing.append("address")
    if missing:
        raise ValidationError(
            f"directory import needs the column(s) {', '.join(missing)} "
            f"(found: {', '.join(sorted(map(str, columns))) or 'none'})"
        )
    return rows
