"""`sysmail-ops subscriptions ...` and `sysmail-ops cron`: report subscriptions, their schedule."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sysmail_ops.cli.common import open_workspace
from sysmail_ops.cli.output import print_fields, print_json, print_table, safe_lines
from sysmail_ops.config.workspace import resolve_home
from sysmail_ops.errors import ValidationError
from sysmail_ops.inputs import parse_json, read_records
from sysmail_ops.subscriptions import model as api
from sysmail_ops.subscriptions import runs as subscription_runs
from sysmail_ops.subscriptions import schedule


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "subscriptions", help="report subscriptions: report notebooks mailed on a schedule"
    )
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = acts.add_parser("add", help="subscribe recipients to a report notebook")
    add.add_argument("name", help="short unique name used on the command line")
    _fields(add, required=True)
    add.set_defaults(handler=cmd_add)

    ls = acts.add_parser("list", help="list the subscriptions with their next run")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=cmd_list)

    show = acts.add_parser("show", help="show a subscription and its next five run times")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=cmd_show)

    edit = acts.add_parser("edit", help="change a subscription (options given replace the old)")
    edit.add_argument("name")
    _fields(edit, required=False)
    edit.set_defaults(handler=cmd_edit)

    for verb, helptext, handler in (
        ("pause", "stop running a subscription until resumed", cmd_pause),
        ("resume", "run a paused subscription again from its next slot", cmd_resume),
        ("remove", "delete a subscription (its run history stays)", cmd_remove),
    ):
        a = acts.add_parser(verb, help=helptext)
        a.add_argument("name")
        a.set_defaults(handler=handler)

    pre = acts.add_parser(
        "preview", help="run the report now and compose one recipient's mail; send nothing"
    )
    pre.add_argument("name")
    pre.add_argument("--recipient", metavar="ADDR", help="whose parameters (default: the first)")
    pre.set_defaults(handler=cmd_preview)

    ts = acts.add_parser("test-send", help="run the report now and mail it to one address")
    ts.add_argument("name")
    ts.add_argument("--to", required=True, metavar="ADDR", help="where to send the test")
    ts.add_argument(
        "--as", dest="as_recipient", metavar="ADDR", help="use this recipient's parameters"
    )
    ts.set_defaults(handler=cmd_test_send)

    run = acts.add_parser(
        "run", help="run the current slot now (a rerun mails only those not yet mailed)"
    )
    run.add_argument("name")
    _run_options(run)
    run.set_defaults(handler=cmd_run)

    due = acts.add_parser(
        "run-due",
        help="run every due slot and re-send deferred report mail: what cron calls every few "
        "minutes (exit 1 when a run failed or a recipient was not delivered)",
    )
    _run_options(due)
    due.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run the report notebooks on this Dask scheduler (tcp://HOST:8786; 'local': the "
        "local pool); default: the report_cluster setting",
    )
    due.add_argument(
        "--fallback",
        choices=["local"],
        help="when the scheduler cannot be reached, run the reports locally instead of failing",
    )
    due.set_defaults(handler=cmd_run_due)

    runs = acts.add_parser("runs", help="run history: one row per slot and parameter set")
    runs.add_argument("name", nargs="?", help="only this subscription")
    runs.add_argument("--limit", type=int, default=50, help="at most this many rows (50)")
    runs.add_argument("--json", action="store_true", help="print JSON")
    runs.set_defaults(handler=cmd_runs)

    cron = sub.add_parser(
        "cron", help="print the crontab lines (or systemd units) that run the schedule"
    )
    cron.add_argument(
        "--systemd", action="store_true", help="print a systemd service + timer instead"
    )
    cron.set_defaults(handler=cmd_cron)


def _fields(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument(
        "--notebook",
        required=required,
        metavar="NB",
        help="report notebook: a path, or a name in reports/ (delivery_report)",
    )
    p.add_argument(
        "--schedule",
        required=required,
        metavar="CRON",
        help="five cron fields in the timezone, e.g. '0 8 * * mon' (Mondays 08:00)",
    )
    p.add_argument(
        "--timezone", required=required, metavar="TZ", help="IANA timezone, e.g. Europe/Berlin"
    )
    p.add_argument("--account", required=required, help="the system email that sends it")
    p.add_argument("--owner", required=required, metavar="ADDR", help="gets failure notices")
    p.add_argument(
        "--template",
        help=f"a 'report' template (default {api.DEFAULT_TEMPLATE})" if required else "template",
    )
    p.add_argument(
        "-p",
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="a notebook parameter for everyone (VALUE read as JSON, else text); repeatable",
    )
    p.add_argument(
        "--recipient",
        action="append",
        metavar="'ADDR [NAME=VALUE ...]'",
        help="a recipient with optional own parameters, e.g. 'ana@example.com region=APAC'; "
        "repeatable" + ("" if required else " (the list given replaces the old one)"),
    )
    p.add_argument(
        "--recipients-file",
        metavar="FILE",
        help="CSV/JSONL of recipients: an 'email' column, other columns are their parameters",
    )
    p.add_argument(
        "--format",
        metavar="F,F",
        help=f"delivery formats, comma separated: {', '.join(api.FORMATS)} (default html_body)",
    )
    p.add_argument("--tables", metavar="A,B", help="named tables to attach (default: all)")
    p.add_argument(
        "--skip-if-empty",
        choices=("on", "off"),
        help="send nothing when the report's row count is 0",
    )
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="per notebook run (600)")
    p.add_argument(
        "--locale",
        metavar="LOCALE",
        help="how the reports write numbers and dates: en, de, zh, en_GB... (default en)"
        if required
        else "how the reports write numbers and dates: en, de, zh, en_GB...",
    )
    p.add_argument("--description", help="optional description")


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--now",
        metavar="ISO8601",
        help="pretend it is this time (UTC unless it has an offset), e.g. 2026-11-30T07:05Z",
    )
    p.add_argument("--workers", type=int, default=2, help="notebook runs in parallel per slot (2)")


def _value(raw: str) -> Any:
    """A JSON value, or the text as it is (also when too deep or a number too long)."""
    try:
        return parse_json(raw)
    except ValidationError:
        return raw


def _pairs(items: list[str], what: str) -> dict[str, Any]:
    out = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ValidationError(f"{what} {item!r} must look like NAME=VALUE")
        out[name.strip()] = _value(raw)
    return out


def _recipients(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    if args.recipient is None and args.recipients_file is None:
        return None
    out: list[dict[str, Any]] = []
    for spec in args.recipient or []:
        words = shlex.split(spec)
        if not words:
            raise ValidationError("--recipient is empty")
        out.append({"address": words[0], "parameters": _pairs(words[1:], "recipient parameter")})
    if args.recipients_file:
        for n, rec in enumerate(read_records(args.recipients_file), 1):
            addr = rec.get("email")
            if not isinstance(addr, str) or not addr.strip():
                raise ValidationError(f"{args.recipients_file}: row {n} has no 'email'")
            params = {
                k: _value(v) if isinstance(v, str) else v
                for k, v in rec.items()
                if k != "email" and v not in (None, "")
            }
            out.append({"address": addr.strip(), "parameters": params})
    return out


def _split(raw: str | None) -> list[str] | None:
    return None if raw is None else [x.strip() for x in raw.split(",") if x.strip()]


def _values(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "notebook": args.notebook,
        "cron": args.schedule,
        "timezone": args.timezone,
        "account": args.account,
        "owner": args.owner,
        "template": args.template,
        "parameters": None if args.param is None else _pairs(args.param, "--param"),
        "recipients": _recipients(args),
        "formats": _split(args.format),
        "tables": _split(args.tables),
        "skip_if_empty": None if args.skip_if_empty is None else args.skip_if_empty == "on",
        "timeout": args.timeout,
        "description": args.description,
        "locale": args.locale,
    }


def _describe(s: api.Subscription) -> str:
    sets = len(s.parameter_sets())
    return (
        f"{s.name}: {Path(s.notebook).name} to {len(s.recipients)} recipient(s)"
        f" in {sets} parameter set(s), '{s.cron}' {s.timezone}"
    )


def _next(s: api.Subscription) -> str:
    if not s.enabled:
        return "paused"
    tz = schedule.check_timezone(s.timezone)
    return schedule.local_label(api.next_runs(s, 1)[0], tz)


def cmd_add(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    values = {k: v for k, v in _values(args).items() if v is not None}
    if "recipients" not in values:
        raise ValidationError("give at least one --recipient or a --recipients-file")
    s = api.add_subscription(ws, args.name, **values)
    print(f"added {_describe(s)}")
    print(f"next run: {_next(s)}")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    s = api.edit_subscription(ws, args.name, **_values(args))
    print(f"saved {_describe(s)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    found = api.list_subscriptions(ws)
    if args.json:
        print_json([{**s.to_dict(), "next_run": _next(s)} for s in found])
        return 0
    print_table(
        (
            [
                s.name,
                Path(s.notebook).stem,
                f"{s.cron} {s.timezone}",
                len(s.recipients),
                len(s.parameter_sets()),
                s.account,
                _next(s),
            ]
            for s in found
        ),
        ["NAME", "REPORT", "SCHEDULE", "RECIPIENTS", "RUNS/SLOT", "ACCOUNT", "NEXT RUN"],
    )
    print(f"{len(found)} subscription{'' if len(found) == 1 else 's'}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    s = api.get_subscription(ws, args.name)
    tz = schedule.check_timezone(s.timezone)
    upcoming = [schedule.local_label(t, tz) for t in api.next_runs(s, 5)]
    if args.json:
        print_json({**s.to_dict(), "next_runs": upcoming})
        return 0
    print_fields(
        [
            ("name", s.name),
            ("description", s.description),
            ("notebook", s.notebook),
            ("parameters", json.dumps(dict(s.parameters), ensure_ascii=False)),
            ("schedule", f"{s.cron} ({s.timezone})"),
            ("system email", s.account),
            ("template", s.template),
            ("formats", ", ".join(s.formats)),
            ("locale", s.locale),
            ("tables", "all" if s.tables is None else ", ".join(s.tables)),
            ("skip if empty", s.skip_if_empty),
            ("owner", s.owner),
            ("enabled", s.enabled),
            ("timeout", f"{s.timeout:g} s"),
        ]
    )
    print("recipients:")
    for r in s.recipients:
        extra = " ".join(
            f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in r.parameters.items()
        )
        print(f"  {r.address} {extra}".rstrip())
    print("next runs:" + ("" if s.enabled else " (paused)"))
    for label in upcoming:
        print(f"  {label}")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    api.set_enabled(open_workspace(args), args.name, False)
    print(f"paused {args.name}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    s = api.set_enabled(open_workspace(args), args.name, True)
    print(f"resumed {args.name}; next run {_next(s)}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    api.remove_subscription(open_workspace(args), args.name)
    print(f"removed subscription {args.name}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    result = subscription_runs.preview(ws, args.name, args.recipient)
    print(safe_lines(result.summary()))
    print(f"preview written to {result.preview_dir}")
    return 0


def cmd_test_send(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    result = subscription_runs.test_send(ws, args.name, args.to, as_recipient=args.as_recipient)
    print(safe_lines(result.summary()))
    return 0 if not (result.counts.get("failed") or result.counts.get("deferred")) else 1


def _now(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        t = datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValidationError(f"--now {raw!r} is not an ISO 8601 time") from None
    if t.tzinfo is not None:
        t = t.astimezone(UTC).replace(tzinfo=None)
    return t


def _exit(results: list[subscription_runs.SlotResult]) -> int:
    """1 when a run failed or a recipient was not delivered (refused, or deferred to the
    retry queue), as ``notify`` does; else 0."""
    return 1 if subscription_runs.not_delivered(results) else 0


def cmd_run(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    result = subscription_runs.run_now(ws, args.name, now=_now(args.now), workers=args.workers)
    print(safe_lines(result.summary()))
    return _exit([result])


def cmd_run_due(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    results = subscription_runs.run_due(
        ws,
        now=_now(args.now),
        workers=args.workers,
        out=print,
        cluster=args.cluster,
        fallback=args.fallback,
    )
    if not results and results.retried is None:
        print("nothing due")
    return _exit(results)


def cmd_runs(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    df = subscription_runs.list_runs(ws, args.name, limit=args.limit)
    rows: list[dict[str, Any]] = [
        {str(k): (None if v is None or v != v else v) for k, v in r.items()}  # NaN -> None
        for r in df.to_dict(orient="records")
    ]
    if args.json:
        print_json(rows)
        return 0
    print_table((_run_row(r) for r in rows), _RUN_HEADERS)
    return 0


_RUN_HEADERS = ["SUBSCRIPTION", "SLOT", "PARAMETERS", "STATUS", "KERNEL+RUN", "TO", "DELIVERED",
                "NOT DELIVERED", "ERROR"]  # fmt: skip


def _run_row(r: dict[str, Any]) -> list[Any]:
    seconds = ""
    if r["kernel_seconds"] is not None and r["execute_seconds"] is not None:
        seconds = f"{r['kernel_seconds']:.1f}+{r['execute_seconds']:.1f}s"
    not_delivered = (r["deferred"] or 0) + (r["failed"] or 0)
    return [
        r["subscription"],
        f"{r['slot']:%Y-%m-%d %H:%M}Z",
        r["parameters"],
        r["status"],
        seconds,
        r["recipients"],
        r["delivered"],
        not_delivered if r["status"] == "succeeded" else "",
        str(r["error"] or "").splitlines()[0][:60] if r["error"] else "",
    ]


def cmd_cron(args: argparse.Namespace) -> int:
    home = resolve_home(args.home)
    exe = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "sysmail-ops" else None
    prog = shlex.quote(str(exe)) if exe and exe.exists() else "sysmail-ops"
    base = f"{prog} --home {shlex.quote(str(home))}"
    log = shlex.quote(str(home / "cron.log"))
    jobs = [
        ("*/5 * * * *", "subscriptions run-due", "report subscriptions whose slot is due"),
        ("*/10 * * * *", "retry-deferred", "deferred mail whose next attempt is due"),
        (
            "*/5 * * * *",
            "archive fetch",
            "received mail of the system emails with Received Email Archiving on (IMAP)",
        ),
    ]
    if args.systemd:
        _print_systemd(base, jobs)
        return 0
    print(f"# sysmail-ops schedule for the workspace {home}")
    print("# install: (crontab -l 2>/dev/null; sysmail-ops cron) | crontab -")
    for when, cmd, what in jobs:
        print(f"# {what}")
        print(f"{when} {base} {cmd} >> {log} 2>&1")
    print("# monthly retention (off: remove the leading '# ' to turn it on): the log, the")
    print("# archive, flow events, report run files and previews older than a year")
    print(f"# 30 3 1 * * {base} prune --before 365d >> {log} 2>&1")
    return 0


def _print_systemd(base: str, jobs: list[tuple[str, str, str]]) -> None:
    calendars = {"*/5 * * * *": "*:0/5", "*/10 * * * *": "*:0/10"}
    for when, cmd, what in jobs:
        unit = "sysmail-ops-" + cmd.replace(" ", "-")
        print(f"# ~/.config/systemd/user/{unit}.service")
        print(f"[Unit]\nDescription=sysmail-ops: {what}\n")
        print(f"[Service]\nType=oneshot\nExecStart={base} {cmd}\n")
        print(f"# ~/.config/systemd/user/{unit}.timer")
        print(f"[Unit]\nDescription=sysmail-ops: {what}\n")
        print(f"[Timer]\nOnCalendar={calendars[when]}\nPersistent=true\n")
        print("[Install]\nWantedBy=timers.target\n")
    names = " ".join("sysmail-ops-" + c.replace(" ", "-") + ".timer" for _, c, _ in jobs)
    print(f"# then: systemctl --user daemon-reload && systemctl --user enable --now {names}")
