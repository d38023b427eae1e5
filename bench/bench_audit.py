"""What the audit row costs a configuration change: ``edit_account`` with and without it.

    .venv/bin/python bench/bench_audit.py [--edits 40] [--runs 5]

Each run times ``--edits`` edits of one system email (each one store transaction)
with ``store.audit.record`` as shipped, then with it replaced by a no-op, in the
same process on the same workspace, and prints both and their ratio. A
configuration change is interactive (a form's Save, one CLI command), so what
matters is that the audit row stays small beside opening the store.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

from sysmail_ops.config import accounts
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.store import audit


def per_edit_ms(ws: Workspace, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        accounts.edit_account(ws, "bench", smtp_port=2001 + i % 50)
    return (time.perf_counter() - start) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=40)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ws, _ = Workspace.init(tempfile.mkdtemp(prefix="bench-audit-") + "/ws")
    accounts.add_account(ws, "bench", from_address="b@example.com", smtp_host="smtp.example.com")
    shipped = audit.record

    def no_audit(*_a: Any, **_k: Any) -> bool:
        return True

    ratios = []
    for run in range(1, args.runs + 1):
        audit.record = shipped
        with_ms = per_edit_ms(ws, args.edits)
        audit.record = no_audit  # type: ignore[assignment]
        without_ms = per_edit_ms(ws, args.edits)
        ratios.append(with_ms / without_ms)
        print(
            f"run {run}: with audit {with_ms:.1f} ms/edit, without {without_ms:.1f} ms/edit,"
            f" ratio {with_ms / without_ms:.2f}"
        )
    audit.record = shipped
    print(f"median ratio over {args.runs} runs: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
