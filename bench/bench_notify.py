"""Workflow-notification benchmark: events per second through ``notify_many``.

N approval-flow events, each matching two rules (the applicant, and finance
when the amount is over 1,000: a condition), are notified to Postfix's
``smtp-sink`` in another process: once in one ``notify_many`` call (one
sender per rule per 500 events), once more to measure redelivery (every send
a ``skipped_duplicate``), and a tenth of them one ``notify`` call each, the
way a caller that posts events one by one would. Run:
``python bench/bench_notify.py [-n 2000]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_send import RESULTS, start_sink

from sysmail_ops import flows as workflows
from sysmail_ops.config import accounts, directory
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.templates import catalog as templates


def events(n: int, prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{prefix}{i}",
            "flow_type": "approval_flow",
            "flow_name": "travel",
            "event": "approved",
            "object_type": "approval",
            "object_id": f"AP-{i}",
            "record": {
                "applicant_email": f"person{i}@example.com",
                "request": f"Trip {i}",
                "approver": "Ana",
                "amount": (i * 37) % 2000,
            },
        }
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="events (2000)")
    args = parser.parse_args()
    sink, port = start_sink()
    try:
        with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
            ws, _ = Workspace.init(Path(tmp) / "ws")
            accounts.add_account(
                ws, "workflow", kind="workflow_notification",
                from_address="workflow@example.com", smtp_host="127.0.0.1",
                smtp_port=port, smtp_security="none", password="",
            )  # fmt: skip
            templates.add_template(
                ws, "granted", object_type="approval", subject="Approved: {{ request }}",
                html="<p>{{ approver }} approved <b>{{ request }}</b> ({{ amount }} EUR).</p>",
            )  # fmt: skip
            directory.add_entry(ws, "finance", "Fay", "fay@example.com")
            common = {"flow_type": "approval_flow", "flow_name": "*", "event": "approved",
                      "account": "workflow", "template": "granted"}  # fmt: skip
            workflows.add_rule(ws, "applicant", recipients=["field:applicant_email"], **common)
            workflows.add_rule(
                ws, "finance", recipients=["role:finance"], condition="amount > 1000", **common
            )
            batch = events(args.n, "b-")
            for label, evs, one_by_one in (
                ("notify_many", batch, False),
                ("notify_many again (all skipped)", batch, False),
                ("notify one by one", events(args.n // 10, "s-"), True),
            ):
                t = time.perf_counter()
                if one_by_one:
                    results = [workflows.notify(ws, e) for e in evs]
                else:
                    results = workflows.notify_many(ws, evs)
                secs = time.perf_counter() - t
                sends = sum(len(r.sends) for r in results)
                statuses = sorted({s.status for r in results for s in r.sends})
                print(
                    f"{label:<32} {len(evs):>6} events {sends:>6} sends {secs:7.2f} s"
                    f" {len(evs) / secs:8.1f} events/s  {', '.join(statuses)}"
                )
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
