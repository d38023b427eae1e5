"""Running report subscriptions: due slots, claims, papermill runs, delivery, history.

``run_due`` is what cron calls every few minutes. For each enabled
subscription it takes the latest slot at or before now (after downtime the
latest missed slot runs once, not every missed one), claims it in the store
so a second scheduler started at the same moment leaves it alone, runs the
report notebook once per distinct parameter set (up to ``workers`` kernels at
once), and mails each recipient through the sending pipeline with the key
``subscription:NAME:SLOT:ADDRESS``: a rerun of the slot (``run``, or
``run_due`` after a crash) mails only those not yet mailed. A failing
notebook is recorded with its cell and error, and the owner gets one notice
per slot.

``run_due`` runs a slot once. A recipient whose server put the mail off (4xx,
a dropped connection) waits in the retry queue, and every ``run_due`` re-sends
the subscription mail there whose next attempt is due (the same bytes, so
nobody gets it twice); a recipient refused for good (5xx) is mailed again only
by an explicit ``run`` of the slot.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sysmail_ops.config.settings import DEFINITIONS, get_setting
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import SysmailError, ValidationError
from sysmail_ops.mail.mime import Attachment
from sysmail_ops.sending import batch as sending
from sysmail_ops.sending import retry
from sysmail_ops.store.database import utcnow
from sysmail_ops.subscriptions import attachments as fitting
from sysmail_ops.subscriptions import cluster as dask_cluster
from sysmail_ops.subscriptions import notebooks as reports
from sysmail_ops.subscriptions import schedule
from sysmail_ops.subscriptions.model import (
    Subscription,
    canonical,
    get_subscription,
    list_subscriptions,
)
from sysmail_ops.subscriptions.notebooks import ReportOutput, ReportRun
from sysmail_ops.subscriptions.render import page_head

if TYPE_CHECKING:
    import pandas as pd

RUN_STATUSES = ("running", "succeeded", "failed", "skipped_empty")
KEY_PREFIX = "subscription:"  # every delivery key of a subscription starts so
HTML_ATTACHMENT_NOTE = "The report is also attached as report.html, to open in a browser."
FOREIGN_CLAIM_LEASE = timedelta(hours=12)  # a claim from another host is stale after this
_HOST = socket.gethostname()


@dataclass
class GroupResult:
    """One notebook run of a slot: its parameter set and what became of its recipients."""

    run_id: str
    parameters: dict[str, Any]
    recipients: list[str]
    status: str = "running"
    error: str | None = None
    output_path: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    oversize: list[str] = field(default_factory=list)  # mails sent without big attachments


@dataclass
class SlotResult:
    subscription: str
    slot: datetime  # naive UTC
    groups: list[GroupResult] = field(default_factory=list)
    owner_notified: bool = False
    skipped: str | None = None  # why nothing ran ("claimed by ...")

    def summary(self) -> str:
        if self.skipped:
            return f"{self.subscription} {self.slot:%Y-%m-%d %H:%M}Z: {self.skipped}"
        by: dict[str, int] = {}
        for g in self.groups:
            by[g.status] = by.get(g.status, 0) + 1
        runs = ", ".join(f"{n} {s}" for s, n in sorted(by.items()))
        sent = sum(g.counts.get("sent", 0) for g in self.groups)
        dup = sum(g.counts.get("skipped_duplicate", 0) for g in self.groups)
        bad = sum(g.counts.get("failed", 0) + g.counts.get("deferred", 0) for g in self.groups)
        tail = " (owner notified)" if self.owner_notified else ""
        return (
            f"{self.subscription} {self.slot:%Y-%m-%d %H:%M}Z: {len(self.groups)} run(s)"
            f" [{runs}], {sent} sent, {dup} already delivered, {bad} not delivered{tail}"
        )


class DueResults(list[SlotResult]):
    """What ``run_due`` did: the slots it ran, and its retry of deferred subscription mail."""

    retried: retry.RetryResult | None = None


def not_delivered(results: list[SlotResult]) -> bool:
    """True when a run failed or a recipient was not delivered (refused or deferred), in
    the slots or in ``run_due``'s retry: the CLI's exit code 1, as ``notify`` has it."""
    for r in results:
        for g in r.groups:
            if g.status == "failed" or g.counts.get("failed") or g.counts.get("deferred"):
                return True
    retried = getattr(results, "retried", None)
    return bool(retried and (retried.counts.get("failed") or retried.counts.get("deferred")))


# --- claims -------------------------------------------------------------------------------


def _me() -> str:
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _claim_is_live(claimed_by: str, claimed_at: datetime, now: datetime) -> bool:
    host, _, rest = claimed_by.partition(":")
    if host != _HOST:
        return now - claimed_at < FOREIGN_CLAIM_LEASE
    pid = int(rest.partition(":")[0] or 0)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it runs, as another user
    return True


def _claim(ws: Workspace, name: str, slot: datetime, me: str, *, rerun: bool) -> str | None:
    """Take the slot for this process. Returns None, or why it cannot be taken."""
    import duckdb

    now = utcnow()
    try:
        with ws.store.transaction() as con:
            row = con.execute(
                "SELECT claimed_at, claimed_by, finished_at FROM subscription_claims"
                " WHERE subscription = ? AND slot = ?",
                [name, slot],
            ).fetchone()
            if row is None:
                con.execute(
                    "INSERT INTO subscription_claims VALUES (?, ?, ?, ?, NULL)",
                    [name, slot, now, me],
                )
                return None
            claimed_at, claimed_by, finished_at = row
            if finished_at is None and _claim_is_live(claimed_by, claimed_at, now):
                return f"being run by {claimed_by.rsplit(':', 1)[0]} since {claimed_at:%H:%M:%S}Z"
            if finished_at is not None and not rerun:
                return "already run"
            con.execute(
                "UPDATE subscription_claims SET claimed_at = ?, claimed_by = ?, finished_at = NULL"
                " WHERE subscription = ? AND slot = ?",
                [now, me, name, slot],
            )
            return None
    except (duckdb.ConstraintException, duckdb.TransactionException):
        return "claimed by another scheduler at the same moment"


def _finish_claim(ws: Workspace, name: str, slot: datetime, me: str) -> None:
    with ws.store.transaction() as con:
        con.execute(
            "UPDATE subscription_claims SET finished_at = ?"
            " WHERE subscription = ? AND slot = ? AND claimed_by = ?",
            [utcnow(), name, slot, me],
        )


# --- what is due --------------------------------------------------------------------------


def due_slot(ws: Workspace, s: Subscription, now: datetime) -> datetime | None:
    """The slot ``s`` should run now, if any: the latest one, when not yet claimed."""
    slot = schedule.latest_slot(s.cron, schedule.check_timezone(s.timezone), now)
    if s.created_at is not None and slot < s.created_at:
        return None  # slots before the subscription existed are not owed
    with ws.store.connect() as con:
        row = con.execute(
            "SELECT claimed_at, claimed_by, finished_at FROM subscription_claims"
            " WHERE subscription = ? AND slot = ?",
            [s.name, slot],
        ).fetchone()
    if row is None:
        return slot
    claimed_at, claimed_by, finished_at = row
    if finished_at is None and not _claim_is_live(claimed_by, claimed_at, now):
        return slot  # its scheduler died mid-slot: run it again (delivered keys are skipped)
    return None


def run_due(
    ws: Workspace,
    *,
    now: datetime | None = None,
    workers: int = 2,
    out: Callable[[str], object] | None = None,
    cluster: str | None = None,
    fallback: str | None = None,
) -> DueResults:
    """Run every enabled subscription's due slot, then re-send the deferred subscription mail
    whose next attempt is due (past slots' too). Safe to call from cron every few minutes.

    A recipient refused for good (5xx) is not retried here: ``run_now`` mails the slot's
    missed recipients again.

    ``cluster`` (a Dask scheduler address; default: the ``report_cluster`` setting, "local"
    for the local pool) runs the notebooks there (``subscriptions.cluster``). A scheduler
    that cannot be reached is one line to ``out`` and fails the due slots' runs (the owner
    is told), or, with ``fallback="local"``, runs them in the local pool.
    """
    if fallback not in (None, "local"):
        raise ValidationError(f"fallback must be 'local' or none, got {fallback!r}")
    now = now or utcnow()
    results = DueResults()
    due = [(s, slot) for s in list_subscriptions(ws, enabled_only=True)
           if (slot := due_slot(ws, s, now)) is not None]  # fmt: skip
    address = get_setting(ws, "report_cluster") if cluster is None else cluster.strip()
    if address and address != "local":
        address = DEFINITIONS["report_cluster"].check(address)  # a typo: one line, exit 2
    executor: dask_cluster.Cluster | dask_cluster.ClusterError | None = None
    if due and address and address != "local":
        try:
            executor = dask_cluster.connect(address)
        except dask_cluster.ClusterError as exc:
            tail = "running the reports locally" if fallback == "local" else "the runs fail"
            if out:
                out(f"{exc}: {tail}")
            executor = None if fallback == "local" else exc
    try:
        for s, slot in due:
            result = run_slot(ws, s, slot, workers=workers, trigger="schedule", executor=executor)
            if out:
                out(result.summary())
            results.append(result)
    finally:
        if isinstance(executor, dask_cluster.Cluster):
            executor.close()
    retried = retry.retry_deferred(ws, now=now, key_prefix=KEY_PREFIX)
    if retried.counts or retried.busy:
        results.retried = retried
        if out:
            out(_retry_summary(retried))
    return results


def _retry_summary(r: retry.RetryResult) -> str:
    if r.busy:
        return "deferred subscription mail: left to the retry-deferred running now"
    done = ", ".join(f"{n} {s}" for s, n in sorted(r.counts.items()))
    return f"deferred subscription mail: {done}; {r.waiting} still waiting"


def run_now(
    ws: Workspace, name: str, *, now: datetime | None = None, workers: int = 2
) -> SlotResult:
    """Run (or rerun) a subscription's current slot now; already-mailed recipients are skipped."""
    s = get_subscription(ws, name)
    slot = schedule.latest_slot(s.cron, schedule.check_timezone(s.timezone), now or utcnow())
    return run_slot(ws, s, slot, workers=workers, trigger="manual", rerun=True)


# --- one slot -----------------------------------------------------------------------------


def _run_dir(ws: Workspace, s: Subscription, slot: datetime, n: int, params_key: str) -> Path:
    digest = hashlib.sha256(params_key.encode()).hexdigest()[:8]
    return ws.runs_dir / s.name / f"{slot:%Y%m%dT%H%MZ}" / f"{n:02d}-{digest}"


def run_slot(
    ws: Workspace,
    s: Subscription,
    slot: datetime,
    *,
    workers: int = 2,
    trigger: str = "schedule",
    rerun: bool = False,
    executor: dask_cluster.Cluster | dask_cluster.ClusterError | None = None,
) -> SlotResult:
    """Claim ``slot``, run one notebook per parameter set, mail, record, tell the owner.

    ``executor``: None runs the notebooks in a local pool of ``workers``; a ``Cluster`` runs
    them there; a ``ClusterError`` (the scheduler could not be reached) fails each run with it.
    """
    if workers < 1:
        raise ValidationError(f"workers must be at least 1, got {workers}")
    me = _me()
    result = SlotResult(s.name, slot)
    why = _claim(ws, s.name, slot, me, rerun=rerun)
    if why:
        result.skipped = why
        return result
    sets = list(s.parameter_sets().items())
    for n, (key, (params, addrs)) in enumerate(sets, 1):
        g = GroupResult(uuid.uuid4().hex[:12], params, addrs)
        g.output_path = str(_run_dir(ws, s, slot, n, key))
        result.groups.append(g)
        _record_start(ws, s, slot, g, trigger)
    if executor is not None:
        _run_elsewhere(ws, s, slot, result.groups, executor)
    else:
        _run_here(ws, s, slot, result.groups, workers)
    failed = [g for g in result.groups if g.status == "failed"]
    if failed:
        result.owner_notified = _notify_owner(ws, s, slot, failed)
    oversize = [line for g in result.groups for line in g.oversize]
    if oversize:
        told = _notify_owner_sizes(ws, s, slot, oversize)
        result.owner_notified = result.owner_notified or told
    _finish_claim(ws, s.name, slot, me)
    return result


def _run_elsewhere(
    ws: Workspace,
    s: Subscription,
    slot: datetime,
    groups: list[GroupResult],
    executor: dask_cluster.Cluster | dask_cluster.ClusterError,
) -> None:
    """The notebooks on the cluster; delivery here, in the order of the parameter sets."""
    if isinstance(executor, dask_cluster.ClusterError):
        for g in groups:
            _deliver_group(ws, s, slot, g, ReportRun(False, None, error=str(executor)))
        return
    try:
        tasks = dask_cluster.submit(
            executor, ws, s.notebook, [(g.run_id, g.parameters) for g in groups],
            timeout=s.timeout, defaults=dict(s.report_defaults()),
        )  # fmt: skip
    except SysmailError as exc:
        for g in groups:
            _deliver_group(ws, s, slot, g, ReportRun(False, None, error=str(exc)))
        return
    for g, task in zip(groups, tasks, strict=True):
        run = dask_cluster.collect(task, g.output_path or "", g.parameters)
        _deliver_group(ws, s, slot, g, run)


def _run_here(
    ws: Workspace, s: Subscription, slot: datetime, groups: list[GroupResult], workers: int
) -> None:
    """The notebooks in a local pool of ``workers`` kernels; delivery in this thread."""
    with ThreadPoolExecutor(max_workers=min(workers, len(groups)) or 1) as pool:
        futures: list[Future[ReportRun]] = [
            pool.submit(  # execute_report closes the event loop papermill opens in the thread
                reports.execute_report,
                s.notebook,
                Path(g.output_path or ""),
                g.parameters,
                home=ws.home,
                timeout=s.timeout,
                defaults=s.report_defaults(),
            )
            for g in groups
        ]
        # Deliver in the order of the parameter sets, as each run completes, in this thread.
        for g, fut in zip(groups, futures, strict=True):
            run = fut.result()
            _deliver_group(ws, s, slot, g, run)


def report_record(
    s: Subscription, slot: datetime, output: ReportOutput, recipient: str, *, html_body: bool
) -> dict[str, Any]:
    """The fields a ``report`` template gets."""
    from markupsafe import Markup

    tz = schedule.check_timezone(s.timezone)
    return {
        "subscription": s.name,
        "report": Path(s.notebook).stem.replace("_", " ").title(),  # "Sales Pipeline"
        "slot": schedule.local_label(slot, tz),
        "summary": output.summary or "",
        "report_html": Markup(output.html) if html_body else Markup(""),  # noqa: S704 - ours
        "report_text": output.text if html_body else "",
        "html_attachment_note": HTML_ATTACHMENT_NOTE if "html_attachment" in s.formats else "",
        "lang": s.locale.split("_")[0],
        "recipient": recipient,
        "parameters": s.parameters_for(recipient),
        "row_count": output.row_count,
    }


def _attachments(s: Subscription, output: ReportOutput) -> list[Attachment]:
    out = []
    if "html_attachment" in s.formats:
        out.append(Attachment("report.html", standalone_html(output), "text/html"))
    tables: dict[str, pd.DataFrame] = output.tables
    chosen = tables if s.tables is None else {k: tables[k] for k in s.tables if k in tables}
    for name, df in chosen.items():
        for fmt in ("csv", "xlsx"):
            if fmt in s.formats:
                out.append(Attachment.from_dataframe(df, f"{name}.{fmt}"))
    return out


def standalone_html(output: ReportOutput) -> bytes:
    """The report as a page of its own: ``cid:`` images (which only resolve inside the mail)
    embedded as ``data:`` URIs, which browsers opening an attachment do show."""
    html = output.html
    for img in output.images:
        uri = f"data:image/{img.subtype};base64,{base64.b64encode(img.data).decode()}"
        html = html.replace(f'"cid:{img.cid}"', f'"{uri}"')
    page = f"{page_head('Report')}\n{html}\n</div></body></html>\n"
    return page.encode()


def build_deliveries(
    s: Subscription, slot: datetime, output: ReportOutput, addrs: list[str], *, keyed: bool = True
) -> list[sending.Delivery]:
    html_body = "html_body" in s.formats
    attachments = _attachments(s, output)
    images = output.images if html_body else []
    return [
        sending.Delivery(
            [addr],
            report_record(s, slot, output, addr, html_body=html_body),
            key=f"{KEY_PREFIX}{s.name}:{slot:%Y-%m-%dT%H:%MZ}:{addr.lower()}" if keyed else None,
            related=("subscription", s.name),
            attachments=attachments,
            inline_images=images,
        )
        for addr in addrs
    ]


def _deliver_group(
    ws: Workspace, s: Subscription, slot: datetime, g: GroupResult, run: ReportRun
) -> None:
    fields: dict[str, Any] = {
        "kernel_seconds": run.kernel_seconds,
        "execute_seconds": run.execute_seconds,
        "output_path": str(run.output_notebook) if run.output_notebook else g.output_path,
    }
    g.output_path = fields["output_path"]
    output = run.output
    if not run.ok or output is None:
        g.status, g.error = "failed", run.error or "the report produced no output"
        fields["failing_cell"] = _cell_index(run.failing_cell)
    elif s.skip_if_empty and output.row_count == 0:
        g.status = "skipped_empty"
        fields["row_count"] = 0
    else:
        fields["row_count"] = output.row_count
        try:
            deliveries = build_deliveries(s, slot, output, g.recipients)
            sent = sending.send_deliveries(
                ws, s.account, s.template, deliveries, use_case="report_subscription"
            )
            counts = dict(sent.counts)
            if sent.too_big:  # over the size limit: again without the largest attachments
                refit = fitting.resend_without_big_attachments(
                    ws, s.account, s.template, deliveries, sent, use_case="report_subscription"
                )
                counts, g.oversize = dict(refit.counts), refit.owner_lines
        except SysmailError as exc:
            g.status, g.error = "failed", f"delivery: {exc}"
        else:
            g.counts = counts
            g.status = "succeeded"
    delivered = g.counts.get("sent", 0) + g.counts.get("skipped_duplicate", 0)
    _record_end(
        ws,
        g,
        status=g.status,
        error=g.error,
        delivered=delivered,
        deferred=g.counts.get("deferred", 0),
        failed=g.counts.get("failed", 0),
        **fields,
    )


def _cell_index(cell: Any) -> int | None:
    if cell is None:
        return None
    if isinstance(cell, int):
        return cell
    index = getattr(cell, "index", None)
    return int(index) if index is not None else None


def _notify_owner(
    ws: Workspace, s: Subscription, slot: datetime, failed: list[GroupResult]
) -> bool:
    """Mail the owner once per slot (the key makes a rerun's notice a duplicate)."""
    lines = [f"parameters {g.parameters}: {g.error}" for g in failed]
    return _mail_owner(ws, s, slot, "\n".join(lines), failed[0].output_path or "", "failure")


def _notify_owner_sizes(ws: Workspace, s: Subscription, slot: datetime, lines: list[str]) -> bool:
    """Tell the owner which recipients got the report without attachments, with the sizes."""
    error = "over the mail size limit:\n" + "\n".join(lines)
    return _mail_owner(ws, s, slot, error, "", "size")


def _mail_owner(
    ws: Workspace, s: Subscription, slot: datetime, error: str, output_path: str, kind: str
) -> bool:
    """The ``subscription-failure`` notice to the owner, once per slot and kind (its key)."""
    tz = schedule.check_timezone(s.timezone)
    record = {
        "subscription": s.name,
        "slot": schedule.local_label(slot, tz),
        "error": error,
        "output_path": output_path,
    }
    try:
        res = sending.send(
            ws,
            s.account,
            "subscription-failure",
            to=s.owner,
            record=record,
            use_case="system",
            related=("subscription", s.name),
            key=f"subscription:{s.name}:{slot:%Y-%m-%dT%H:%MZ}:{kind}-notice",
        )
    except SysmailError:
        return False
    return res.counts.get("sent", 0) > 0


# --- run history --------------------------------------------------------------------------


def _record_start(
    ws: Workspace, s: Subscription, slot: datetime, g: GroupResult, trigger: str
) -> None:
    with ws.store.transaction() as con:
        con.execute(
            "INSERT INTO subscription_runs (id, subscription, slot, parameters, status,"
            " started_at, output_path, recipients, trigger)"
            " VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?)",
            [g.run_id, s.name, slot, canonical(g.parameters), utcnow(), g.output_path,
             len(g.recipients), trigger],
        )  # fmt: skip


def _record_end(ws: Workspace, g: GroupResult, **values: Any) -> None:
    values["finished_at"] = utcnow()
    sets = ", ".join(f"{k} = ?" for k in values)
    with ws.store.transaction() as con:
        con.execute(
            f"UPDATE subscription_runs SET {sets} WHERE id = ?",  # noqa: S608 - our column names
            [*values.values(), g.run_id],
        )


def list_runs(ws: Workspace, name: str | None = None, *, limit: int = 50) -> pd.DataFrame:
    """Run history, newest first: one row per slot and parameter set."""
    where, params = ("WHERE subscription = ?", [name]) if name else ("", [])
    sql = (
        "SELECT subscription, slot, parameters, status, started_at, finished_at,"  # noqa: S608
        " kernel_seconds, execute_seconds, recipients, delivered, deferred, failed,"
        " row_count, error, failing_cell, output_path, trigger, id FROM subscription_runs"
        f" {where} ORDER BY started_at DESC, parameters LIMIT ?"
    )
    with ws.store.connect() as con:
        return con.execute(sql, [*params, limit]).df()


# --- preview and test-send ----------------------------------------------------------------


def _run_once(ws: Workspace, s: Subscription, params: dict[str, Any], kind: str) -> ReportRun:
    folder = ws.runs_dir / s.name / f"{kind}-{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    run = reports.execute_report(
        s.notebook, folder, params, home=ws.home, timeout=s.timeout, defaults=s.report_defaults()
    )
    if not run.ok or run.output is None:
        raise ValidationError(
            f"the report failed: {run.error} (notebook kept at {run.output_notebook})"
        )
    return run


def preview(
    ws: Workspace, name: str | Subscription, recipient: str | None = None
) -> sending.SendResult:
    """Run the report for one recipient now and compose the mail; nothing is sent.

    ``name`` may be an unsaved subscription (``subscriptions.drafts.check_draft``): the
    form previews what is typed. The ``.eml`` lands in the workspace's preview folder
    (``SendResult.preview_dir``).
    """
    s = name if isinstance(name, Subscription) else get_subscription(ws, name)
    addr = recipient or s.recipients[0].address
    run = _run_once(ws, s, s.parameters_for(addr), "preview")
    assert run.output is not None
    slot = schedule.latest_slot(s.cron, schedule.check_timezone(s.timezone), utcnow())
    deliveries = build_deliveries(s, slot, run.output, [addr], keyed=False)
    return sending.send_deliveries(
        ws, s.account, s.template, deliveries, use_case="report_subscription",
        options=sending.SendOptions(dry_run=True),
    )  # fmt: skip


def test_send(
    ws: Workspace, name: str | Subscription, to: str, *, as_recipient: str | None = None
) -> sending.SendResult:
    """Run the report now and mail it to ``to`` only (with ``as_recipient``'s parameters);
    ``name`` may be an unsaved subscription, as for ``preview``."""
    s = name if isinstance(name, Subscription) else get_subscription(ws, name)
    run = _run_once(ws, s, s.parameters_for(as_recipient or to), "test-send")
    assert run.output is not None
    slot = schedule.latest_slot(s.cron, schedule.check_timezone(s.timezone), utcnow())
    deliveries = build_deliveries(s, slot, run.output, [to], keyed=False)
    return sending.send_deliveries(
        ws, s.account, s.template, deliveries, use_case="report_subscription"
    )
