"""`sysmail-ops surveys ...` (answers and links) and `sysmail-ops serve` (the web endpoint)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from dataclasses import asdict
from typing import Any

from sysmail_ops.campaigns import surveys
from sysmail_ops.cli import campaigns as campaigns_cli
from sysmail_ops.cli.common import open_workspace
from sysmail_ops.cli.output import frame_rows, print_fields, print_json, print_table, warn
from sysmail_ops.config import settings
from sysmail_ops.flows import intake
from sysmail_ops.web import front
from sysmail_ops.web import server as web


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("surveys", help="satisfaction-survey answers and personal links")
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    rsp = acts.add_parser(
        "respond", help="record an answer for a survey link's token (a second one updates it)"
    )
    rsp.add_argument("token", help="the token of the survey link (the part after /survey/)")
    rsp.add_argument("--score", required=True, help="1 (very dissatisfied) to 5 (very satisfied)")
    rsp.add_argument("--comment", help="optional free text")
    rsp.add_argument("--json", action="store_true", help="print JSON")
    rsp.set_defaults(handler=cmd_respond)
    ls = acts.add_parser("responses", help="the answers to one campaign, newest first")
    ls.add_argument("campaign")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=cmd_responses)
    st = acts.add_parser(
        "stats", help="a survey campaign's sent, responded, response rate, CSAT, average score"
    )
    st.add_argument("name", metavar="CAMPAIGN")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(handler=campaigns_cli.cmd_stats)  # the same as `campaigns stats`
    lk = acts.add_parser(
        "link", help="make one person's survey and unsubscribe links (to test the endpoint)"
    )
    lk.add_argument("--campaign", help="campaign name the answer counts for")
    lk.add_argument("--contact", help="contact id (default: the address)")
    lk.add_argument("--email", required=True, help="the person's address")
    lk.add_argument("--json", action="store_true", help="print JSON")
    lk.set_defaults(handler=cmd_link)

    s = sub.add_parser(
        "serve", help="the web endpoint of survey and unsubscribe links (RFC 8058 one-click)"
    )
    s.add_argument("--host", default=web.DEFAULT_HOST, help=f"address ({web.DEFAULT_HOST})")
    s.add_argument("--port", type=int, default=web.DEFAULT_PORT, help=f"port ({web.DEFAULT_PORT})")
    s.add_argument(
        "--max-connections", type=int, default=web.MAX_CONNECTIONS,
        help=f"connections handled at once; more get 503 ({web.MAX_CONNECTIONS})",
    )  # fmt: skip
    s.add_argument(
        "--request-timeout", type=float, default=web.REQUEST_TIMEOUT,
        help=f"seconds for a whole request, headers and body ({web.REQUEST_TIMEOUT:g})",
    )  # fmt: skip
    s.add_argument(
        "--queue-limit", type=int,
        help="events queued for the intake worker at most; past it POST /events gets 429 "
        "(default: the intake_queue_limit setting)",
    )  # fmt: skip
    s.add_argument(
        "--one-process", action="store_true",
        help="read HTTP in the process that holds the workspace, not in a front process "
        "of its own (for a machine with one CPU)",
    )  # fmt: skip
    s.set_defaults(handler=cmd_serve)


def cmd_respond(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    got = surveys.record_survey_response(ws, args.token, args.score, args.comment)
    if args.json:
        print_json(asdict(got) | {"updated": got.updated})
        return 0
    what = "updated" if got.updated else "recorded"
    about = f" to {got.campaign}" if got.campaign else ""
    print(f"{what} {got.contact}'s answer{about}: {got.score}")
    return 0


def cmd_responses(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    df = surveys.responses(ws, args.campaign)
    if args.json:
        print_json(frame_rows(df))
        return 0
    rows = [
        [
            r["contact"],
            r["email"],
            r["score"],
            r["answers"],
            r["answered_at"].strftime("%Y-%m-%d %H:%M"),
            (r["comment"] or "").replace("\n", " ")[:40],
        ]
        for r in frame_rows(df)
    ]
    print_table(rows, ["CONTACT", "EMAIL", "SCORE", "TIMES", "ANSWERED (UTC)", "COMMENT"])
    return 0


def cmd_link(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    token = surveys.make_token(
        ws,
        purpose="survey",
        campaign=args.campaign,
        contact=args.contact or args.email,
        email=args.email,
    )
    links = surveys.survey_links(ws, token)
    unsubscribe = surveys.unsubscribe_url(ws, args.email, args.campaign)
    if args.json:
        print_json({"token": token, "survey_links": links, "unsubscribe_url": unsubscribe})
        return 0
    print_fields([*((f"score {n}", url) for n, url in links.items()), ("unsubscribe", unsubscribe)])
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The workspace's process (this one) and, unless ``--one-process``, a front process
    that reads HTTP (``web.front``): each has a CPU, rather than sharing one GIL."""
    ws = open_workspace(args)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr, force=True
    )
    limit = args.queue_limit
    if limit is None:
        limit = settings.get_setting(ws, "intake_queue_limit")
    queue = intake.IntakeQueue(ws, limit=limit)
    limits = {"max_connections": args.max_connections, "request_timeout": args.request_timeout}
    if args.one_process:
        server = web.make_server(ws, args.host, args.port, intake=queue, **limits)
        url, listen = server.url, None
    else:  # the front's socket; this process's own server, for the front's other routes
        listen = front.bind(args.host, args.port)
        try:
            server = web.make_server(ws, "127.0.0.1", 0, quiet=True, **limits)
        except BaseException:
            listen.close()
            raise
        url = web.listen_url(listen.getsockname())
    base = settings.get_setting(ws, "public_base_url")
    queue.start()
    the_front = None
    try:
        if listen is not None:
            threading.Thread(target=server.serve_forever, name="inner", daemon=True).start()
            the_front = front.Front(queue, listen, server, **limits)
            the_front.start()
        print(
            f"serving survey and unsubscribe links on {url} and events at {url}/events"
            " (Ctrl-C stops)",
            flush=True,
        )
        if queue.pending:
            print(f"notifying {queue.pending:,} event(s) accepted before the last stop")
        print(f"links in mail point at {base} (sysmail-ops settings set public_base_url ...)")
        hint = settings.url_hint(str(base))
        if hint:
            warn(hint)
        signal.signal(signal.SIGTERM, _stop)  # systemctl stop: as Ctrl-C
        if the_front is not None:
            the_front.run()
        else:
            server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        if the_front is not None:
            the_front.stop()  # it finishes the requests in hand first
            server.shutdown()
        server.server_close()
        deadline = time.monotonic() + 5  # requests in flight finish (and log) first
        while server.active and time.monotonic() < deadline:
            time.sleep(0.01)
        queue.stop()
        if listen is not None:
            listen.close()
    return 0


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
