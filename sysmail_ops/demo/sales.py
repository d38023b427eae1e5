"""The demo CRM's sales pipeline: what ``reports/sales_pipeline.ipynb`` reports on.

The data is a small CSV of opportunities shipped with the reports
(``reports/data/opportunities.csv``, made once by ``reports/data/make_crm.py``),
standing in for a CRM export. A real deployment points the report's ``data``
parameter at its own export with the same columns.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sysmail_ops.errors import ValidationError
from sysmail_ops.subscriptions.notebooks import bundled_reports_dir

__all__ = ["OPEN_STAGES", "REGIONS", "STAGES", "by_owner", "by_stage", "load_opportunities"]

STAGES = ("Prospecting", "Qualification", "Proposal", "Negotiation", "Closed Won", "Closed Lost")
OPEN_STAGES = STAGES[:4]
REGIONS = ("EMEA", "Americas", "APAC")
COLUMNS = ["opportunity_id", "account_name", "product", "owner", "region", "stage"]
COLUMNS += ["amount_eur", "probability", "created_on", "expected_close"]


def demo_data_path() -> Path:
    """The bundled demo export (``reports/data``, package data beside the bundled reports)."""
    return bundled_reports_dir() / "data" / "opportunities.csv"


def load_opportunities(
    data: str | Path | None = None, *, region: str | None = None, owner: str | None = None
) -> pd.DataFrame:
    """Opportunities of ``region`` and/or ``owner`` (all when None) from a CRM export CSV."""
    path = Path(data) if data else demo_data_path()
    if not path.is_file():
        raise ValidationError(f"no CRM export at {path}")
    df = pd.read_csv(path, parse_dates=["created_on", "expected_close"])
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValidationError(f"{path.name} lacks the column(s) {', '.join(missing)}")
    if region is not None:
        if region not in set(df["region"]):
            known = ", ".join(sorted(set(df["region"])))
            raise ValidationError(f"unknown region {region!r}: the data has {known}")
        df = df[df["region"] == region]
    if owner is not None:
        df = df[df["owner"] == owner]
    df = df.assign(stage=pd.Categorical(df["stage"], categories=list(STAGES), ordered=True))
    return df.sort_values(["stage", "amount_eur"], ascending=[True, False]).reset_index(drop=True)


def by_stage(opps: pd.DataFrame) -> pd.DataFrame:
    """Per stage: count, total and probability-weighted amount (every stage, zeros included)."""
    weighted = opps["amount_eur"] * opps["probability"]
    grouped = opps.assign(weighted_eur=weighted).groupby("stage", observed=False)
    out = grouped.agg(
        opportunities=("opportunity_id", "size"),
        amount_eur=("amount_eur", "sum"),
        weighted_eur=("weighted_eur", "sum"),
    )
    out = out.reindex(list(STAGES), fill_value=0).reset_index()
    out["stage"] = out["stage"].astype(str)
    return out.astype({"amount_eur": "int64", "weighted_eur": "int64"})


def by_owner(opps: pd.DataFrame) -> pd.DataFrame:
    """Open pipeline per owner, largest first: opportunities, amount, weighted amount."""
    open_ = opps[opps["stage"].isin(OPEN_STAGES)]
    out = (
        open_.assign(weighted_eur=open_["amount_eur"] * open_["probability"])
        .groupby("owner")
        .agg(
            open_opportunities=("opportunity_id", "size"),
            amount_eur=("amount_eur", "sum"),
            weighted_eur=("weighted_eur", "sum"),
        )
        .sort_values("amount_eur", ascending=False)
        .reset_index()
    )
    return out.astype({"amount_eur": "int64", "weighted_eur": "int64"})
