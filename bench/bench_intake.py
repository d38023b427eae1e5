"""HTTP event intake benchmark: ``serve``'s ``POST /events`` against one ``notify`` call per event.

A real ``sysmail-ops serve`` process takes N approval events from 50 concurrent posters
(one event per POST, a new connection each), two rules per event (the applicant and the
approver: two mails), and mails them into Postfix's ``smtp-sink`` in another process.
For each event, the latency from the start of its POST to the server's 250 for the last
of its two mails is read from the send log (``sent_at`` is journalled as the reply
arrives; same machine, same clock). Sustained events/s is N over the time from the first
POST to the last 250. In the same run, M events go through one ``sysmail-ops notify``
CLI call each (the way a webhook relay without the intake would call it); the ratio is
intake events/s over that. ``--rate R`` paces the posters to R events/s in all (an open
loop): the latency at a load below the ceiling, rather than with the queue filling up.
``--load K`` keeps K busy-looping processes running beside it all (a machine with other
work on it: this one's slow hours, on demand).
Run: ``python bench/bench_intake.py [-n 3000] [-m 20] [--runs 3] [--rate 0] [--load 0]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_send import RESULTS, start_sink

from sysmail_ops import flows as workflows
from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.flows import intake
from sysmail_ops.templates import catalog as templates

POSTERS = 50
CLI = [sys.executable, "-m", "sysmail_ops"]


def event(i: int, prefix: str) -> dict[str, Any]:
    return {
        "id": f"{prefix}{i}",
        "flow_type": "approval_flow",
        "flow_name": "travel",
        "event": "approved",
        "object_type": "approval",
        "object_id": f"AP-{i}",
        "record": {
            "applicant_email": f"person{i}@example.com",
            "approver_email": f"approver{i % 7}@example.com",
            "request": f"Trip {i}",
            "approver": "Ana",
            "amount": (i * 37) % 2000,
        },
    }


def setup(home: Path, port: int) -> Workspace:
    ws, _ = Workspace.init(home)
    accounts.add_account(
        ws, "workflow", kind="workflow_notification", from_address="workflow@example.com",
        smtp_host="127.0.0.1", smtp_port=port, smtp_security="none", password="",
    )  # fmt: skip
    templates.add_template(
        ws, "granted", object_type="approval", subject="Approved: {{ request }}",
        html="<p>{{ approver }} approved <b>{{ request }}</b> ({{ amount }} EUR).</p>",
    )  # fmt: skip
    common = {"flow_type": "approval_flow", "flow_name": "*", "event": "approved",
              "account": "workflow", "template": "granted"}  # fmt: skip
    workflows.add_rule(ws, "applicant", recipients=["field:applicant_email"], **common)
    workflows.add_rule(ws, "approver", recipients=["field:approver_email"], **common)
    return ws


def serve(home: Path, limit: int, variant: Variant) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if variant.tree:  # that tree's sysmail_ops, ahead of the installed one
        env["PYTHONPATH"] = os.pathsep.join([variant.tree, env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [*CLI, "--home", str(home), "serve", "--port", "0", "--queue-limit", str(limit),
         "--max-connections", str(POSTERS * 2), *variant.args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        cwd=variant.tree or None,  # `python -m` looks in its working folder first
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()
    return proc, int(first.split("http://127.0.0.1:")[1].split()[0])


def call(port: int, token: str, method: str, path: str, body: str | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body, {"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status in (429, 503):  # backpressure (a 503 over the connection limit is
            return 0 if method == "GET" else resp.status  # an HTML page): asked again
        data = json.loads(raw or b"null")
        if method == "GET":
            return 1 if data.get("status") != "queued" else 0
        return resp.status
    finally:
        conn.close()


@dataclass(frozen=True)
class Variant:
    """One way of running ``serve``: a label, a source tree (``""``: this one), its flags."""

    label: str
    tree: str = ""
    args: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``LABEL=[TREE][:FLAG ...]``, e.g. ``now=``, ``one=:--one-process``, ``old=/tmp/t``."""
        label, _, rest = text.partition("=")
        tree, _, flags = rest.partition(":")
        return cls(label, tree, tuple(flags.split()))


def intake_run(
    home: Path, n: int, rate: float = 0, variant: Variant = Variant("now")
) -> dict[str, float]:
    ws = Workspace.open(home)
    token = intake.add_source(ws, "bench")
    proc, port = serve(home, limit=max(10_000, n), variant=variant)
    started: dict[str, datetime] = {}
    codes: dict[str, int] = {}
    answered: list[float] = []  # ms from the start of an accepted POST to its 202
    lock = threading.Lock()

    def poster(first: int) -> None:
        for i in range(first, n, POSTERS):
            if rate:  # an open loop: event i is due at i / rate seconds
                time.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
            ev = event(i, "h-")
            body = json.dumps(ev)
            while True:
                t = datetime.now(UTC).replace(tzinfo=None)
                t_post = time.perf_counter()
                try:
                    code = call(port, token, "POST", "/events", body)
                except OSError:  # refused over the connection limit mid-body (a 503 not
                    code = 503  # read): again; a repeat of a recorded event gets 200
                if code not in (429, 503):
                    break
                time.sleep(0.05)  # the bench's own Retry-After
            with lock:
                started[ev["id"]], codes[ev["id"]] = t, code
                answered.append((time.perf_counter() - t_post) * 1000)

    t0 = time.perf_counter()
    try:
        threads = [threading.Thread(target=poster, args=(k,)) for k in range(POSTERS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        post_secs = time.perf_counter() - t0
        for i in reversed(range(n)):  # the worker goes in id order: the last done, all done
            while not call(port, token, "GET", f"/events/h-{i}"):
                time.sleep(0.02)
            break
        time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait()
    bad = {c for c in codes.values() if c not in (200, 202)}
    assert not bad, f"answers other than 202: {bad}"
    with ws.store.connect() as con:
        rows = con.execute(
            "SELECT delivery_key, sent_at FROM send_log WHERE status = 'sent'"
        ).fetchall()
        queued = con.execute("SELECT count(*) FROM event_intake WHERE state = 'queued'").fetchone()
    assert queued is not None and queued[0] == 0, f"{queued[0]} still queued"
    assert len(rows) == 2 * n, f"{len(rows)} sends for {n} events"
    last: dict[str, datetime] = {}
    for key, sent_at in rows:
        eid = key.split(":")[1].split("/", 1)[1]
        last[eid] = max(sent_at, last.get(eid, sent_at))
    lat = sorted((last[e] - started[e]).total_seconds() * 1000 for e in started)
    span = (max(last.values()) - min(started.values())).total_seconds()
    answered.sort()
    return {
        "post_p50": statistics.median(answered),
        "post_p99": answered[min(len(answered) - 1, int(len(answered) * 0.99))],
        "p50": statistics.median(lat),
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "max": lat[-1],
        "events_s": n / span,
        "post_s": n / post_secs,
    }


def cli_run(home: Path, m: int) -> float:
    t = time.perf_counter()
    for i in range(m):
        subprocess.run(
            [*CLI, "--home", str(home), "notify", "--events", "-"],
            input=json.dumps(event(i, "c-")), text=True, check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return m / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3000, help="events posted to serve (3000)")
    parser.add_argument("-m", type=int, default=20, help="events, one notify call each (20)")
    parser.add_argument("--runs", type=int, default=3, help="runs (3)")
    parser.add_argument("--rate", type=float, default=0, help="events/s offered; 0: flat out")
    parser.add_argument(
        "--load", type=int, default=0, help="busy-looping processes beside the runs (0)"
    )
    parser.add_argument(
        "--variant", action="append", type=Variant.parse, metavar="LABEL=[TREE][:FLAGS]",
        help="a way to run serve, alternated with the others in each run: its source tree "
        "(made with `git archive C sysmail_ops | tar -x -C DIR`) and flags, e.g. "
        "`one=:--one-process`, `before=/tmp/t/old` (default: this tree as it is)",
    )  # fmt: skip
    args = parser.parse_args()
    variants = args.variant or [Variant("now")]
    sink, port = start_sink()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    print(
        f"{'run':>3} {'serve':>8} {'intake p50 ms':>13} {'p99 ms':>8} {'max ms':>8} "
        f"{'events/s':>9} {'POST/s':>7} {'notify CLI ev/s':>15} {'ratio':>7} {'202 p50/p99 ms':>15}"
    )
    try:
        for r in range(1, args.runs + 1):
            order = variants if r % 2 else variants[::-1]  # alternated: no variant always first
            for variant in order:
                with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
                    home = Path(tmp) / "ws"
                    setup(home, port)
                    got = intake_run(home, args.n, args.rate, variant)
                    one = cli_run(home, args.m) if args.m else float("nan")
                    print(
                        f"{r:>3} {variant.label:>8} {got['p50']:>13.1f} {got['p99']:>8.1f} "
                        f"{got['max']:>8.1f} {got['events_s']:>9.1f} {got['post_s']:>7.1f} "
                        f"{one:>15.2f} {got['events_s'] / one:>6.0f}x "
                        f"{got['post_p50']:>7.1f}/{got['post_p99']:<7.1f}",
                        flush=True,
                    )
    finally:
        for p in [sink, *hogs]:
            p.terminate()
            p.wait()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
