"""`sysmail-ops send`, `send-batch` and `retry-deferred`."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from sysmail_ops.cli.common import open_workspace
from sysmail_ops.cli.output import print_json, safe, safe_lines
from sysmail_ops.errors import BadRecordsError, ValidationError
from sysmail_ops.inputs import FIELD_TYPES, read_json
from sysmail_ops.mail.mime import Attachment
from sysmail_ops.records import sendlog
from sysmail_ops.sending import batch as sending
from sysmail_ops.sending import retry as deferred


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("send", help="send one templated message through a system email")
    s.add_argument("account", help="system email name")
    s.add_argument("--template", required=True, help="object email template name")
    s.add_argument("--to", action="append", required=True, metavar="ADDR", help="repeatable")
    s.add_argument("--cc", action="append", default=[], metavar="ADDR", help="repeatable")
    s.add_argument("--bcc", action="append", default=[], metavar="ADDR", help="repeatable")
    s.add_argument("--reply-to", metavar="ADDR")
    s.add_argument("--record", metavar="FILE.json", help="the record the template renders")
    s.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a record field (repeatable; adds to --record)",
    )
    s.add_argument("--attach", action="append", default=[], metavar="FILE", help="repeatable")
    s.add_argument("--key", help="delivery key: a key already delivered is not sent again")
    _common(s)
    s.set_defaults(handler=cmd_send)

    b = sub.add_parser(
        "send-batch",
        help="send a template to every record of a CSV/JSONL file",
        description="Send a template to every record of a CSV, JSONL or JSON file, one "
        "message each. Every record is checked and rendered before the first message goes "
        "out: if any record cannot be sent (no or a bad address, a missing field, a value "
        "that is not of its --types type, a render error), nothing is sent, each bad "
        "record is one line on stderr (record number, file line, field, reason) and the "
        "exit status is 2. Otherwise the exit status is 0 when every message was sent, "
        "and 1 when some failed or were deferred at the server (see `logs list`).",
    )
    b.add_argument("account", help="system email name")
    b.add_argument("--template", required=True, help="object email template name")
    b.add_argument("--records", required=True, metavar="FILE", help=".csv, .jsonl or .json")
    b.add_argument(
        "--types",
        metavar="NAME=TYPE,...",
        help="read these columns as typed values, e.g. amount=float,count=int (types: "
        f"{', '.join(FIELD_TYPES)}); CSV values are text otherwise, JSON keeps its types",
    )
    b.add_argument("--to-column", default="email", help="column with the address (email)")
    b.add_argument("--key-column", help="column whose value makes each delivery key")
    b.add_argument("--key-prefix", default="", help="prefix for the delivery keys")
    b.add_argument("--related-column", help="column with the related object's id")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.add_argument(
        "--unsubscribe-links",
        action="store_true",
        help="give each mail its recipient's own unsubscribe link (List-Unsubscribe and "
        "the template field unsubscribe_url; see `sysmail-ops serve`)",
    )
    _common(b)
    b.set_defaults(handler=cmd_send_batch)

    r = sub.add_parser(
        "retry-deferred", help="re-send deferred mail whose next attempt is due (for cron)"
    )
    r.add_argument(
        "--lifetime-hours",
        type=float,
        default=48.0,
        help="give up on mail deferred for longer (48)",
    )
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(handler=cmd_retry)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--use-case", default="manual", choices=sendlog.USE_CASES)
    p.add_argument("--related", metavar="TYPE:ID", help="the object the mail is about")
    p.add_argument("--related-type", metavar="TYPE", help="object type (with --related-column)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="render and compose, write .eml files to the preview folder, send nothing",
    )
    p.add_argument("--json", action="store_true", help="print JSON")


def _options(args: argparse.Namespace) -> sending.SendOptions:
    return sending.SendOptions(
        dry_run=args.dry_run, progress=not getattr(args, "no_progress", True) and not args.json
    )


def _record(args: argparse.Namespace) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if args.record:
        # At most inputs.MAX_DOCUMENT_BYTES of UTF-8 JSON; any other content is one line.
        data = read_json(args.record, "record file")
        if not isinstance(data, dict):
            raise ValidationError(f"record file {args.record} must hold one JSON object")
        record.update(data)
    for item in args.field:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValidationError(f"--field takes NAME=VALUE, got {item!r}")
        record[name] = value
    return record


def _related(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    obj_type, sep, obj_id = value.partition(":")
    if not sep or not obj_type or not obj_id:
        raise ValidationError(f"--related takes TYPE:ID, got {value!r}")
    return obj_type, obj_id


def _report(args: argparse.Namespace, result: sending.SendResult) -> int:
    if args.json:
        print_json(
            {
                "batch_id": result.batch_id,
                "messages": result.messages,
                "counts": dict(result.counts),
                "errors": result.errors,
                "preview_dir": result.preview_dir,
            }
        )
    else:
        print(safe_lines(result.summary()))
        for err in result.errors:
            print(f"  error: {safe(err)}")
        if result.preview_dir:
            print(f"  previews: {result.preview_dir}")
    return 1 if result.counts.get("failed") or result.counts.get("deferred") else 0


def cmd_send(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    # An unreadable file is a ValidationError from ``from_path`` (it never raises OSError).
    attachments = [Attachment.from_path(Path(f)) for f in args.attach]
    result = sending.send(
        ws,
        args.account,
        args.template,
        to=args.to,
        cc=args.cc,
        bcc=args.bcc,
        reply_to=args.reply_to,
        record=_record(args),
        attachments=attachments,
        use_case=args.use_case,
        related=_related(args.related),
        key=args.key,
        options=_options(args),
    )
    return _report(args, result)


def cmd_send_batch(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    try:
        result = sending.send_batch(
            ws,
            args.account,
            args.template,
            args.records,
            to_column=args.to_column,
            key_column=args.key_column,
            key_prefix=args.key_prefix,
            use_case=args.use_case,
            related_type=args.related_type,
            related_column=args.related_column,
            options=_options(args),
            unsubscribe_links=args.unsubscribe_links,
            types=args.types,
        )
    except BadRecordsError as exc:  # one line per bad record, then what it means
        for line in exc.problems:
            print(f"sysmail-ops: error: {safe(line)}", file=sys.stderr)
        unlisted = exc.bad - len(exc.problems)
        more = f" ({unlisted:,} not listed)" if unlisted > 0 else ""
        print(
            f"sysmail-ops: error: {exc.bad:,} bad record(s) in {safe(args.records)}{more}: "
            "nothing was sent",
            file=sys.stderr,
        )
        return 2
    return _report(args, result)


def cmd_retry(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    result = deferred.retry_deferred(ws, lifetime=timedelta(hours=args.lifetime_hours))
    if args.json:
        print_json(
            {"batch_id": result.batch_id, "counts": dict(result.counts), "waiting": result.waiting}
        )
    else:
        print(safe_lines(result.summary()))
    return 0
