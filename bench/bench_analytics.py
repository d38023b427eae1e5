"""Ops analytics over a year of log: DuckDB (analytics.ops) vs pandas; notebook 04; explorer.

    .venv/bin/python bench/bench_analytics.py [--rows 5000000] [--runs 3] [--workspace DIR]
        [--only duckdb|pandas|notebook|explorer ...]

Builds a synthetic workspace (``--rows`` send-log rows over 365 days, 10
accounts, 30 templates, 8 use cases, 500 domains; ~5 % of deliveries deferred
once or twice before going out, 1.5 % refused with 550/554; suppression
entries over the year), written by DuckDB SQL straight into the workspace's
tables. ``--workspace DIR`` reuses (or keeps) it.

Each run then measures, each in a fresh subprocess so that peak memory
(``getrusage`` max RSS) is that side's alone:

- **duckdb**: every ops question (``ops.all_questions`` over the whole log);
- **pandas**: the same questions the pandas way: load the log
  (``queries.load_log``), keep each delivery's latest attempt, ``groupby``;
- **notebook**: ``notebooks/04_sending_log_and_analytics.ipynb`` run by
  papermill over the whole log (``since=None``); wall time, and the peak RSS
  of its kernel (the papermill process's reaped children);
- **explorer**: one page (25 rows, with its count) with each filter, the
  median of 5 calls each, every call opening and closing the store.

The two sides' answers are compared (per-account counts, failure codes,
volume by use case) so the race is between equal results.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "04_sending_log_and_analytics.ipynb"

# Deliveries, then 1-3 rows each by their fate (hash of the delivery number, 0-9999):
# < 9400 sent at once; < 9700 deferred once then sent; < 9800 deferred twice then sent;
# < 9950 failed 550/554; < 9980 suppressed; else skipped as a duplicate.
GENERATE = """
CREATE TEMP TABLE d AS
SELECT i, CAST(hash(i) % 10000 AS BIGINT) AS r,
  TIMESTAMP '{start}' + to_seconds(CAST(i * (365 * 86400.0 / {n}) AS BIGINT)) AS q
FROM range({n}) t(i);
INSERT INTO send_log (batch_id, seq, delivery_key, message_id, account, template,
  template_version, use_case, related_type, related_id, recipient, role, subject, status,
  smtp_phase, smtp_code, smtp_reply, attempt, queued_at, sent_at, duration_ms, size_bytes,
  next_attempt_at)
SELECT 'b' || (i // 500), CAST(i % 500 * 3 + a AS INTEGER), 'k:' || i,
  '<m' || i || '@bench.example.com>',
  'acct' || (hash(i * 7) % 10), 'tpl' || (hash(i * 11) % 30), 1,
  ['manual', 'workflow', 'approval_flow', 'business_flow', 'report_subscription',
   'follow_up', 'survey', 'marketing'][CAST(1 + hash(i * 13) % 8 AS BIGINT)],
  'case', CAST(i % 100000 AS VARCHAR),
  'user' || (hash(i * 17) % 200000) || '@d' || (hash(i * 19) % 500) || '.example.com', 'to',
  'Subject ' || (i % 1000), st,
  CASE WHEN st IN ('sent', 'deferred', 'failed') THEN
    CASE WHEN st = 'sent' THEN 'data' ELSE 'rcpt' END END,
  CASE st WHEN 'sent' THEN 250 WHEN 'deferred' THEN 451
    WHEN 'failed' THEN CASE WHEN r % 3 = 0 THEN 554 ELSE 550 END END,
  CASE st WHEN 'sent' THEN '2.0.0 Ok: queued' WHEN 'deferred' THEN '4.7.1 try again later'
    WHEN 'failed' THEN '5.1.1 no such user' END,
  a, qa, CASE WHEN st = 'sent' THEN qa + to_milliseconds(CAST(200 + r % 3000 AS BIGINT)) END,
  CASE WHEN st IN ('sent', 'deferred', 'failed') THEN 20.0 + r % 400 END, 4000 + r % 3000,
  CASE WHEN st = 'deferred' THEN qa + INTERVAL 5 MINUTE END
FROM (
  SELECT d.*, a,
    CASE
      WHEN r < 9400 THEN 'sent'
      WHEN r < 9700 THEN CASE WHEN a < 2 THEN 'deferred' ELSE 'sent' END
      WHEN r < 9800 THEN CASE WHEN a < 3 THEN 'deferred' ELSE 'sent' END
      WHEN r < 9950 THEN 'failed'
      WHEN r < 9980 THEN 'suppressed'
      ELSE 'skipped_duplicate'
    END AS st,
    q + to_minutes(CAST((a - 1) * 5 AS BIGINT)) AS qa
  FROM d, LATERAL (SELECT unnest(range(1, 1 + CASE WHEN r >= 9400 AND r < 9700 THEN 2
                                          WHEN r >= 9700 AND r < 9800 THEN 3 ELSE 1 END)) AS a)
);
DROP TABLE d;
DELETE FROM send_log WHERE id > {rows};
INSERT INTO suppression
SELECT 'gone' || i || '@d' || (i % 500) || '.example.com',
  ['unsubscribe', 'manual', 'bounce', 'complaint'][CAST(1 + i % 4 AS BIGINT)], 'bench',
  TIMESTAMP '{start}' + to_seconds(CAST(i * 1576.8 AS BIGINT))
FROM range(20000) t(i);
"""


def build(home: Path, rows: int) -> Any:
    from sysmail_ops.config.workspace import Workspace

    if (home / "sysmail.duckdb").exists():
        ws = Workspace.open(home)
        with ws.store.connect() as con:
            (have,) = con.execute("SELECT count(*) FROM send_log").fetchone()  # type: ignore[misc]
        if have == rows:
            print(f"reusing {home} ({have:,} log rows)")
            return ws
        raise SystemExit(f"{home} holds {have:,} log rows, not {rows:,}: give another folder")
    ws, _ = Workspace.init(home)
    began = time.perf_counter()
    deliveries = int(rows / 1.05) + 1000  # 1.05 rows a delivery on average; trimmed to `rows`
    with ws.store.transaction() as con:
        con.execute(GENERATE.format(n=deliveries, rows=rows, start="2025-12-01"))
    with ws.store.connect() as con:
        (have,) = con.execute("SELECT count(*) FROM send_log").fetchone()  # type: ignore[misc]
    print(f"built {home}: {have:,} log rows in {time.perf_counter() - began:.1f} s")
    return ws


# -- the two sides, each run in its own process -----------------------------------------------


def side_duckdb(home: str) -> dict[str, Any]:
    from sysmail_ops.analytics import ops
    from sysmail_ops.config.workspace import Workspace

    ws = Workspace.open(home)
    began = time.perf_counter()
    answers = ops.all_questions(ws)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "check": _check(answers)}


def side_pandas(home: str) -> dict[str, Any]:
    import pandas as pd

    from sysmail_ops.analytics import queries
    from sysmail_ops.config.workspace import Workspace

    ws = Workspace.open(home)
    began = time.perf_counter()
    log = queries.load_log(ws)
    loaded = time.perf_counter() - began
    with ws.store.connect() as con:
        suppressed = con.execute("SELECT reason, created_at FROM suppression").df()
    final = queries.outcomes(log)
    tried = final[final["status"].isin(["sent", "deferred", "failed"])]
    out: dict[str, pd.DataFrame] = {}

    def rates(df: pd.DataFrame, key: Any) -> pd.DataFrame:
        t = pd.crosstab(key, df["status"]).reindex(
            columns=["sent", "deferred", "failed"], fill_value=0
        )
        t.insert(0, "attempted", t.sum(axis=1))
        t["delivery_rate"] = (t["sent"] / t["attempted"]).round(4)
        return t.reset_index()

    out["rate_by_account"] = rates(tried, tried["account"])
    out["rate_by_day"] = rates(tried, tried["queued_at"].dt.date.rename("day"))
    bad = final[final["status"].isin(["failed", "deferred"])]
    code = bad["smtp_code"]
    klass = (
        (code // 100).astype("string").fillna("none").str.replace(r"^(\d)$", r"\1xx", regex=True)
    )
    out["failures_by_code"] = (
        bad.assign(reply_class=klass)
        .groupby(["reply_class", "smtp_code"], dropna=False)
        .agg(
            failed=("status", lambda s: int((s == "failed").sum())),
            deferred=("status", lambda s: int((s == "deferred").sum())),
            deliveries=("id", "size"),
            last_seen=("queued_at", "max"),
        )
        .reset_index()
    )
    domain = tried["recipient"].str.rsplit("@", n=1).str[-1].str.lower()
    by_dom = tried.assign(domain=domain).groupby("domain")["status"]
    dom = pd.DataFrame({
        "attempted": by_dom.size(),
        "failed": by_dom.apply(lambda s: int((s == "failed").sum())),
        "deferred": by_dom.apply(lambda s: int((s == "deferred").sum())),
    })  # fmt: skip
    dom["failure_rate"] = ((dom["failed"] + dom["deferred"]) / dom["attempted"]).round(4)
    out["failures_by_domain"] = (
        dom[dom["failed"] + dom["deferred"] > 0]
        .sort_values(["failed", "domain"], ascending=[False, True])
        .head(20)
        .reset_index()
    )
    firsts = (
        log[(log["attempt"] == 1) & (log["status"] == "deferred")]
        .groupby(["message_id", "recipient"])["queued_at"]
        .min()
        .rename("first_queued_at")
        .reset_index()
    )
    w = tried.merge(firsts, on=["message_id", "recipient"], how="left")
    start = w["first_queued_at"].fillna(w["queued_at"])
    w["wait"] = (w["sent_at"].fillna(w["queued_at"]) - start).dt.total_seconds()
    out["retries"] = (
        w.groupby("attempt")
        .agg(
            deliveries=("id", "size"),
            wait_p50_s=("wait", lambda s: s.quantile(0.5)),
            wait_p95_s=("wait", lambda s: s.quantile(0.95)),
            wait_max_s=("wait", "max"),
        )
        .reset_index()
    )
    for key in ("use_case", "template"):
        v = pd.crosstab(final[key], final["status"])
        v.insert(0, "deliveries", v.sum(axis=1))
        out[f"volume_by_{key}"] = v.sort_values("deliveries", ascending=False).reset_index()
    slots = final["queued_at"].dt.floor("h").value_counts()
    hours = slots.groupby(slots.index.hour)
    out["busiest_hours"] = pd.DataFrame({
        "deliveries": hours.sum(), "busy_days": hours.size(), "peak": hours.max()
    }).reindex(range(24), fill_value=0).reset_index(names="hour")  # fmt: skip
    sent = w[w["status"] == "sent"].copy()
    sent["lat"] = (sent["sent_at"] - start[w["status"] == "sent"]).dt.total_seconds()
    lat = sent.groupby("account")["lat"].quantile([0.5, 0.95]).unstack()
    lat.loc["(all)"] = sent["lat"].quantile([0.5, 0.95]).to_numpy()
    out["latency"] = lat.reset_index()
    bounces = final[(final["status"] == "failed") & (final["smtp_code"] >= 500)]
    b = bounces.groupby(bounces["queued_at"].dt.date).size().rename("bounces")
    s = pd.crosstab(suppressed["created_at"].dt.date, suppressed["reason"])
    out["suppressions_and_bounces"] = pd.concat([b, s], axis=1).fillna(0).reset_index()
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "load_seconds": loaded, "check": _check(out)}


def _check(answers: dict[str, Any]) -> dict[str, Any]:
    """A few figures both sides must agree on."""
    acc = answers["rate_by_account"].set_index("account")
    codes = answers["failures_by_code"]
    use = answers["volume_by_use_case"].set_index("use_case")
    return {
        "sent_per_account": {str(k): int(v) for k, v in acc["sent"].items()},
        "failed_per_account": {str(k): int(v) for k, v in acc["failed"].items()},
        "failures_per_code": {
            str(int(c)): int(n)
            for c, n in zip(codes["smtp_code"], codes["deliveries"], strict=True)
        },
        "deliveries_per_use_case": {str(k): int(v) for k, v in use["deliveries"].items()},
        "days": len(answers["rate_by_day"]),
    }


def side_notebook(home: str) -> dict[str, Any]:
    import papermill as pm

    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        pm.execute_notebook(
            str(NOTEBOOK),
            str(Path(tmp) / "out.ipynb"),
            parameters={"home": home, "since": None},
            kernel_name="python3",
            progress_bar=False,
            cwd=tmp,
        )
        seconds = time.perf_counter() - began
    kernel_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": seconds, "kernel_maxrss_mb": kernel_kb / 1024}


def side_explorer(home: str) -> dict[str, Any]:
    from sysmail_ops.analytics import explore
    from sysmail_ops.config.workspace import Workspace

    ws = Workspace.open(home)
    filters: dict[str, dict[str, Any]] = {
        "(none)": {},
        "since 7d": {"since": "2026-11-23"},
        "account": {"account": "acct3"},
        "status": {"status": "failed"},
        "use case": {"use_case": "survey"},
        "template": {"template": "tpl7"},
        "to (address)": {"to": "user77@d7.example.com"},
        "domain": {"domain": "d7.example.com"},
        "key": {"key": "k:4000"},
        "all of them": {"since": "2026-01-01", "account": "acct3", "status": "sent",
                        "use_case": "survey", "domain": "d7.example.com"},
    }  # fmt: skip
    out: dict[str, Any] = {}
    for name, kwargs in filters.items():
        flt = explore.log_filter(**kwargs)
        times, total = [], 0
        for page in (1, 2, 3, 4, 5):
            began = time.perf_counter()
            result = explore.log_page(ws, flt, page, 25)
            times.append(time.perf_counter() - began)
            total = result.total
        out[name] = {"ms": statistics.median(times) * 1000, "rows": total}
    return out


SIDES = {
    "duckdb": side_duckdb,
    "pandas": side_pandas,
    "notebook": side_notebook,
    "explorer": side_explorer,
}


def child(side: str, home: str) -> None:
    result = SIDES[side](home)
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run_side(side: str, home: Path) -> dict[str, Any]:
    env = {**os.environ, "SYSMAIL_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, __file__, "--child", side, "--workspace", str(home)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workspace", help="build (or reuse) the synthetic workspace here")
    ap.add_argument(
        "--only", nargs="+", choices=list(SIDES), help="run only these parts (default: all)"
    )
    ap.add_argument("--child", choices=list(SIDES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.workspace)
        return
    with tempfile.TemporaryDirectory(prefix="bench-analytics-") as tmp:
        home = Path(args.workspace) if args.workspace else Path(tmp) / "ws"
        build(home, args.rows)
        parts = set(args.only or SIDES)
        runs = []
        for n in range(1, args.runs + 1):
            r = {side: run_side(side, home) for side in SIDES if side in parts}
            runs.append(r)
            print(f"run {n}:")
            report(r)
        if {"duckdb", "pandas", "notebook"} <= parts:
            med = statistics.median
            print(
                f"median of {len(runs)} runs: "
                f"duckdb {med(r['duckdb']['seconds'] for r in runs):.2f} s, "
                f"pandas {med(r['pandas']['seconds'] for r in runs):.2f} s, "
                f"ratio {med(r['pandas']['seconds'] / r['duckdb']['seconds'] for r in runs):.1f}x; "
                f"notebook {med(r['notebook']['seconds'] for r in runs):.1f} s, "
                f"kernel {med(r['notebook']['kernel_maxrss_mb'] for r in runs):,.0f} MB"
            )


def report(r: dict[str, Any]) -> None:
    """Print one run's figures (only the parts that ran)."""
    if "duckdb" in r and "pandas" in r:
        d, p = r["duckdb"], r["pandas"]
        agree = d["check"] == p["check"]
        print(
            f"  all ops questions: duckdb {d['seconds']:.2f} s, "
            f"{d['maxrss_mb']:,.0f} MB peak | pandas {p['seconds']:.2f} s "
            f"(load {p['load_seconds']:.2f} s), {p['maxrss_mb']:,.0f} MB peak | "
            f"pandas/duckdb time {p['seconds'] / d['seconds']:.1f}x, "
            f"memory {p['maxrss_mb'] / d['maxrss_mb']:.1f}x | answers agree: {agree}"
        )
        if not agree:
            print("  duckdb:", json.dumps(d["check"])[:600])
            print("  pandas:", json.dumps(p["check"])[:600])
    elif "duckdb" in r or "pandas" in r:
        for side in ("duckdb", "pandas"):
            if side in r:
                print(
                    f"  all ops questions, {side}: {r[side]['seconds']:.2f} s, "
                    f"{r[side]['maxrss_mb']:,.0f} MB peak"
                )
    if "notebook" in r:
        nb = r["notebook"]
        print(
            f"  notebook 04 over the whole log: {nb['seconds']:.1f} s, "
            f"kernel peak {nb['kernel_maxrss_mb']:,.0f} MB (goal < 20 s, < 1,536 MB)"
        )
    if "explorer" in r:
        pages = r["explorer"]
        worst = max(v["ms"] for k, v in pages.items() if k != "maxrss_mb")
        print(
            "  explorer page (25 rows + count, median of 5): "
            + ", ".join(f"{k} {v['ms']:.0f} ms" for k, v in pages.items() if k != "maxrss_mb")
            + f" | worst {worst:.0f} ms (goal < 300 ms)"
        )


if __name__ == "__main__":
    main()
