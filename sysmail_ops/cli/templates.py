"""`sysmail-ops templates ...`: write, preview and check object email templates."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sysmail_ops.cli.common import open_workspace
from sysmail_ops.cli.output import print_fields, print_json, print_table, warn
from sysmail_ops.errors import ValidationError
from sysmail_ops.inputs import MAX_DOCUMENT_BYTES, MiB, parse_json, read_text, size_text
from sysmail_ops.templates import catalog as api

# A template part is at most catalog.MAX_SOURCE (1,000,000) characters of up to 4 bytes each.
MAX_TEMPLATE_FILE_BYTES = 4 * MiB


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "templates", help="object email templates: add, edit (versioned), preview, check"
    )
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = acts.add_parser("add", help="add a template (version 1)")
    add.add_argument("name", help="short unique name used on the command line")
    _fields(add, required=True)
    add.set_defaults(handler=cmd_add)

    ls = acts.add_parser("list", help="list the templates (current versions)")
    ls.add_argument("--object", metavar="OBJ", help="only templates of this object type")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=cmd_list)

    show = acts.add_parser("show", help="show a template's settings and sources")
    show.add_argument("name")
    show.add_argument(
        "--version", type=int, metavar="N", help="an older version (default: current)"
    )
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=cmd_show)

    edit = acts.add_parser("edit", help="change a template: saves a new version")
    edit.add_argument("name")
    _fields(edit, required=False)
    edit.set_defaults(handler=cmd_edit)

    pre = acts.add_parser("preview", help="render a template for one record (a JSON object)")
    pre.add_argument("name")
    pre.add_argument(
        "--record", required=True, metavar="FILE.json", help="the record as JSON ('-': stdin)"
    )
    pre.add_argument("--version", type=int, metavar="N", help="an older version (default: current)")
    pre.add_argument("--json", action="store_true", help="print JSON")
    pre.set_defaults(handler=cmd_preview)

    chk = acts.add_parser(
        "check", help="fields used vs declared (exit 1 when a used field is not declared)"
    )
    chk.add_argument("name")
    chk.add_argument("--json", action="store_true", help="print JSON")
    chk.set_defaults(handler=cmd_check)

    rm = acts.add_parser("remove", help="remove a template and all its versions, if unused")
    rm.add_argument("name")
    rm.set_defaults(handler=cmd_remove)


def _fields(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument(
        "--object", required=required, metavar="OBJ", help="object type: lead, case, report, ..."
    )
    p.add_argument("--subject", required=required, help="subject template (one line)")
    p.add_argument("--html-file", required=required, metavar="FILE", help="HTML body template")
    p.add_argument(
        "--text-file",
        metavar="FILE",
        help="text body template (default: derived from the HTML; an empty file derives again)",
    )
    p.add_argument(
        "--fields",
        metavar="a,b",
        help="declared record fields, comma separated; every field used must be declared"
        + ("" if required else " ('' drops the declaration)"),
    )
    p.add_argument("--description", help="optional description")


def _read(path: str | None, option: str, cap: int = MAX_TEMPLATE_FILE_BYTES) -> str | None:
    """A UTF-8 file or stdin (``-``) of at most ``cap`` bytes; never read past the cap."""
    if path is None:
        return None
    if path != "-":
        return read_text(path, option, cap)
    stdin = getattr(sys.stdin, "buffer", None)
    try:
        data = stdin.read(cap + 1) if stdin is not None else sys.stdin.read(cap + 1)
        if len(data) > cap:
            raise ValidationError(f"{option} - is larger than {size_text(cap)}")
        return data.decode("utf-8-sig") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise ValidationError(f"{option} - is not UTF-8 text") from None
    except OSError as exc:
        raise ValidationError(f"cannot read {option} -: {exc.strerror or exc}") from None


def _values(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "object_type": args.object,
        "subject": args.subject,
        "html": _read(args.html_file, "--html-file"),
        "text": _read(args.text_file, "--text-file"),
        "fields": None if args.fields is None else args.fields.split(","),
        "description": args.description,
    }


def _summary(t: api.Template) -> str:
    text = "derived from the HTML" if t.text_derived else "own"
    css = "inlined at save" if t.html_inlined is not None else "inlined per message"
    return f"{t.name} v{t.version} (object {t.object_type}; text body {text}; CSS {css})"


def cmd_add(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    t = api.add_template(ws, args.name, **_values(args))
    print(f"added {_summary(t)}")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    t = api.edit_template(ws, args.name, **_values(args))
    print(f"saved {_summary(t)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    found = api.list_templates(ws, args.object)
    if args.json:
        print_json([t.to_dict() for t in found])
        return 0
    print_table(
        (
            [
                t.name,
                t.object_type,
                t.version,
                ", ".join(t.fields) if t.fields else "(not declared)",
                "built-in" if t.builtin else "",
                t.description,
            ]
            for t in found
        ),
        ["NAME", "OBJECT", "VERSION", "FIELDS", "", "DESCRIPTION"],
    )
    print(f"{len(found)} template{'' if len(found) == 1 else 's'}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    t = api.get_template(ws, args.name, args.version)
    versions = api.list_versions(ws, t.name)
    if args.json:
        print_json({**t.to_dict(), "versions": versions})
        return 0
    print_fields(
        [
            ("name", t.name),
            ("version", f"{t.version} (versions: {', '.join(map(str, versions))})"),
            ("object", t.object_type),
            ("description", t.description),
            ("built-in", t.builtin),
            ("fields", ", ".join(t.fields) if t.fields else "(not declared)"),
            ("text body", "derived from the HTML" if t.text_derived else "own"),
            ("CSS", "inlined at save" if t.html_inlined is not None else "inlined per message"),
            ("saved", t.created_at.isoformat(timespec="seconds") + "Z"),
            ("subject", t.subject),
        ]
    )
    print("\n--- HTML ---")
    print(t.html.rstrip("\n"))
    print("\n--- text ---")
    print(t.text.rstrip("\n"))
    return 0


def _read_record(path: str) -> dict[str, Any]:
    raw = _read(path, "--record", MAX_DOCUMENT_BYTES) or ""
    try:
        record = parse_json(raw)
    except ValidationError as exc:
        raise ValidationError(f"--record {path} is {exc}") from None
    if not isinstance(record, dict):
        raise ValidationError(f"--record {path} must hold one JSON object (field: value)")
    return record


def cmd_preview(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    record = _read_record(args.record)
    rendered = api.preview(ws, args.name, record, args.version)
    if args.json:
        print_json(rendered.to_dict())
        return 0
    print(f"Subject: {rendered.subject}")
    print("\n--- text ---")
    print(rendered.text.rstrip("\n"))
    print("\n--- HTML ---")
    print(rendered.html.rstrip("\n"))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    result = api.check(ws, args.name)
    if args.json:
        print_json(result)
    else:
        declared = result["declared"]
        print_fields(
            [
                ("template", f"{result['name']} v{result['version']}"),
                ("used", ", ".join(result["used"]) or "(none)"),
                ("declared", "(not declared)" if declared is None else ", ".join(declared)),
                ("used, not declared", ", ".join(result["undeclared_used"]) or "none"),
                ("declared, not used", ", ".join(result["declared_unused"]) or "none"),
            ]
        )
        if declared is None:
            warn("declare the fields (--fields) so a misspelt one is caught when saving")
    return 1 if result["undeclared_used"] else 0


def cmd_remove(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    versions = len(api.list_versions(ws, args.name))
    api.remove_template(ws, args.name)
    print(f"removed template {args.name} ({versions} version{'' if versions == 1 else 's'})")
    return 0
