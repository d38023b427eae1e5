"""What a keyed Message-ID costs: ``compose`` with a random id vs one derived from a key.

    .venv/bin/python bench/bench_message_ids.py [--messages 20000] [--runs 3]

Both sides build the same messages (one recipient each, a text and an HTML part)
in one process, alternating within each run; the keyed side also does the
``Composer.message_key`` HMAC per message, as a send does. Reports messages/s
for each and the same-run ratio keyed/random.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import time

from sysmail_ops.mail.mime import compose

SECRET = os.urandom(32)
TEXT = "Your request was approved. " * 20


def build(n: int, keyed: bool) -> float:
    started = time.perf_counter()
    for i in range(n):
        to = f"u{i}@example.com"
        key = None
        if keyed:
            identity = f"workflow\0event:erp/ev-{i}:rule:applicant:{to}".encode()
            key = hmac.new(SECRET, identity, hashlib.sha256).digest()
        compose(
            from_addr="service@example.com",
            to=[to],
            subject="Approved",
            text=TEXT,
            html=f"<p>{TEXT}</p>",
            message_key=key,
        )
    return n / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    build(1000, False)  # warm the caches (addresses, headers) both sides share
    print(f"load average {os.getloadavg()[0]:.2f}")
    for run in range(1, args.runs + 1):
        random_rate = build(args.messages, False)
        keyed_rate = build(args.messages, True)
        print(
            f"run {run}: random {random_rate:,.0f} msg/s, keyed {keyed_rate:,.0f} msg/s, "
            f"keyed/random {keyed_rate / random_rate:.3f}, "
            f"+{(1 / keyed_rate - 1 / random_rate) * 1e6:.1f} us/message"
        )


if __name__ == "__main__":
    main()
