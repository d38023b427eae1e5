"""Generate the demo CRM data the sales pipeline report reads (run once; the CSV is committed).

    .venv/bin/python reports/data/make_crm.py

Deterministic (fixed seed): running it again rewrites the same file.
"""

from __future__ import annotations

import csv
import random
from datetime import date, timedelta
from pathlib import Path

OUT = Path(__file__).with_name("opportunities.csv")
OWNERS = {
    "EMEA": ["Ana Schmidt", "Luc Moreau", "Sofia Rossi"],
    "Americas": ["Maya Johnson", "Diego Alvarez", "Ben Carter"],
    "APAC": ["Kenji Sato", "Priya Nair", "Wei Chen"],
}
STAGES = [  # stage, weight in the mix, win probability the CRM gives it
    ("Prospecting", 30, 0.10),
    ("Qualification", 25, 0.25),
    ("Proposal", 18, 0.50),
    ("Negotiation", 10, 0.75),
    ("Closed Won", 10, 1.00),
    ("Closed Lost", 7, 0.00),
]
COMPANIES = [
    "Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Wonka", "Tyrell", "Cyberdyne",
    "Soylent", "Hooli", "Pied Piper", "Vandelay", "Gringotts", "Oceanic", "Monarch", "Aperture",
    "Massive Dynamic", "Nakatomi", "Dunder Mifflin",
]  # fmt: skip
PRODUCTS = ["Service Cloud", "Mail Suite", "Analytics", "Support Plan", "Onboarding"]


def rows(n: int = 150, seed: int = 4) -> list[dict[str, object]]:
    rng = random.Random(seed)
    start = date(2026, 1, 5)
    out = []
    for i in range(1, n + 1):
        region = rng.choices(list(OWNERS), weights=[45, 35, 20])[0]
        stage, _, prob = rng.choices(STAGES, weights=[s[1] for s in STAGES])[0]
        created = start + timedelta(days=rng.randrange(0, 300))
        out.append(
            {
                "opportunity_id": f"OPP-{i:04d}",
                "account_name": f"{rng.choice(COMPANIES)} {rng.choice(['GmbH', 'Ltd', 'Inc', 'SA', 'KK'])}",
                "product": rng.choice(PRODUCTS),
                "owner": rng.choice(OWNERS[region]),
                "region": region,
                "stage": stage,
                "amount_eur": round(rng.lognormvariate(10.3, 0.7), -2),
                "probability": prob,
                "created_on": created.isoformat(),
                "expected_close": (created + timedelta(days=rng.randrange(30, 180))).isoformat(),
            }
        )
    return out


def main() -> None:
    data = rows()
    with OUT.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(data[0]))
        writer.writeheader()
        writer.writerows(data)
    print(f"wrote {len(data)} opportunities to {OUT}")


if __name__ == "__main__":
    main()
