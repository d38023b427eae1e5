"""`sysmail-ops prune`: retention for everything a workspace keeps that grows without end.

One date for all of it: the send log, the email archive (sent and received, its
``.eml`` files with it), the flow events, the HTTP intake's rows of events done
(``serve``: queued ones stay), the executed report notebooks and their outputs
(``runs/``) and the dry-run previews (``preview/``). The run history rows
(``subscriptions runs``) stay: only their files go. Each part is the library's
own prune (``logs prune``, ``archive prune``, ``events prune``,
``flows.intake.prune``); the run and preview files are dropped by age (last
written before the date).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import datetime, timedelta

from sysmail_ops import flows
from sysmail_ops.cli.common import open_workspace
from sysmail_ops.cli.output import print_json, print_table
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import ValidationError
from sysmail_ops.flows import intake
from sysmail_ops.records import archive, sendlog
from sysmail_ops.store import files
from sysmail_ops.store.database import utcnow

# What a dry run counts: the rows each library prune deletes (the same conditions).
_ROWS = {
    "log": "SELECT count(*) FROM send_log WHERE queued_at < ?",
    "archive": "SELECT count(*) FROM archive WHERE date < ?",
    "events": "SELECT count(*) FROM workflow_events WHERE received_at < ? AND status != 'sending'",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "prune",
        help="retention: drop the log, archive, events, report runs and previews older than a date",
        description="Delete what is older than a date: send log rows, archived messages "
        "(sent and received, with their .eml files), flow events, the HTTP intake's rows of "
        "events done (queued ones stay; a pruned event's id, posted again, is accepted as "
        "new), executed report notebooks and their outputs (runs/) and dry-run previews "
        "(preview/). Report run history rows are kept; their files go. Says what was freed. "
        "For cron: see `sysmail-ops cron`.",
    )
    p.add_argument(
        "--before",
        required=True,
        metavar="DATE",
        help="an ISO date (2026-01-01, UTC) or an age in days (365d)",
    )
    p.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_prune)


def before_date(value: str, now: datetime | None = None) -> datetime:
    """``--before``: an ISO date or datetime (naive: UTC), or ``N`` days ago as ``Nd``."""
    now = now or utcnow()
    text = value.strip()
    if text.endswith("d") and text[:-1].isdigit():
        when = now - timedelta(days=int(text[:-1]))
    else:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(
                f"--before takes an ISO date (2026-01-01) or days (365d), got {value!r}"
            ) from None
        when = parsed.replace(tzinfo=None) - (parsed.utcoffset() or timedelta())
    if when > now:
        raise ValidationError(f"--before {value} is in the future: that would delete everything")
    return when


@dataclass
class Part:
    """What pruning one part of the workspace deleted: rows, files and their bytes."""

    what: str
    rows: int | None = None
    freed: files.Freed | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "part": self.what,
            "rows": self.rows,
            "files": self.freed.files if self.freed else None,
            "bytes": self.freed.bytes if self.freed else None,
        }


def prune(ws: Workspace, before: datetime, *, dry_run: bool = False) -> list[Part]:
    """Prune every part (or, with ``dry_run``, count what would go)."""
    archived: files.Freed | None = None
    if dry_run:
        with ws.store.connect() as con:
            rows = {}
            for part, sql in _ROWS.items():
                found = con.execute(sql, [before]).fetchone()
                rows[part] = int(found[0]) if found else 0
    else:
        kept = files.usage(ws.archive_dir)
        rows = {
            "log": sendlog.prune(ws, before),
            "archive": archive.prune(ws, before),
            "events": flows.prune_events(ws, before),
        }
        left = files.usage(ws.archive_dir)
        archived = files.Freed(kept.files - left.files, kept.bytes - left.bytes)
    return [
        Part("send log", rows["log"]),
        Part("archive", rows["archive"], archived),
        Part("flow events", rows["events"]),
        Part("event intake (serve)", intake.prune(ws, before, dry_run=dry_run)),
        Part("report runs (runs/)", None, files.prune_files(ws.runs_dir, before, dry_run=dry_run)),
        Part(
            "previews (preview/)", None, files.prune_files(ws.preview_dir, before, dry_run=dry_run)
        ),
    ]


def cmd_prune(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    before = before_date(args.before)
    parts = prune(ws, before, dry_run=args.dry_run)
    if args.json:
        print_json(
            {"before": before, "dry_run": args.dry_run, "parts": [p.to_dict() for p in parts]}
        )
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} what is older than {before:%Y-%m-%d %H:%M} UTC:")
    print_table(
        (
            [
                p.what,
                "" if p.rows is None else f"{p.rows:,}",
                "" if p.freed is None else f"{p.freed.files:,}",
                "" if p.freed is None else files.size_text(p.freed.bytes),
            ]
            for p in parts
        ),
        ["PART", "ROWS", "FILES", "SIZE"],
    )
    total = sum((p.freed for p in parts if p.freed), files.Freed())
    rows = sum(p.rows or 0 for p in parts)
    said = "would free" if args.dry_run else "freed"
    print(f"{said} {total}; {rows:,} row(s)")
    if not args.dry_run:
        print("report run history is kept (subscriptions runs); its notebooks went with runs/")
    return 0
