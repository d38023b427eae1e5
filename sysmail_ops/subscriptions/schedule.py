"""Cron schedules in an IANA timezone, with slots stored in UTC.

A schedule is read as wall-clock time in its timezone (``croniter`` over naive
local times), then each slot is placed on the UTC line:

- a local time that does not exist (the spring-forward gap: 02:30 on the day
  Europe/Berlin jumps from 02:00 to 03:00) runs at the first instant after
  the gap (03:00 local);
- a local time that happens twice (the fall-back overlap) runs at its first
  occurrence only.

So a daily 02:30 subscription runs exactly once on both DST days, and slots
that land on the same instant (02:00 and 02:30 both inside a gap) are one slot.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sysmail_ops.errors import ValidationError


def check_timezone(name: str) -> ZoneInfo:
    """The IANA timezone ``name`` (``Europe/Berlin``, ``UTC``), or a clear error."""
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("timezone is empty: give an IANA name such as Europe/Berlin")
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"unknown timezone {name!r}: give an IANA name such as Europe/Berlin or UTC"
        ) from None


def check_cron(expr: str) -> str:
    """A five-field cron expression (``30 8 * * mon``), normalised to single spaces."""
    from croniter import CroniterBadDateError, croniter

    if not isinstance(expr, str) or not expr.strip():
        raise ValidationError("schedule is empty: give a cron expression such as '0 8 * * mon'")
    norm = " ".join(expr.split())
    if len(norm.split(" ")) != 5 or not croniter.is_valid(norm):
        raise ValidationError(
            f"invalid schedule {expr!r}: give five cron fields (minute hour day month weekday),"
            " e.g. '0 8 * * mon' for Mondays 08:00"
        )
    try:
        croniter(norm, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise ValidationError(f"schedule {expr!r} never fires (no such date)") from None
    return norm


def to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """Naive wall-clock ``local`` in ``tz`` -> naive UTC, with the gap/overlap rules above."""
    first = local.replace(tzinfo=tz, fold=0)
    utc = first.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) == local:
        return utc.replace(tzinfo=None)  # exists (and fold=0 is the first of two, if any)
    # In a gap: fold=1 reads it with the offset after the jump (earlier on the UTC line),
    # fold=0 with the one before (later). The jump lies between; find it to the second.
    lo = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    hi = utc
    if lo > hi:
        lo, hi = hi, lo
    before = lo.astimezone(tz).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0).replace(tzinfo=None)


def _local(utc: datetime, tz: ZoneInfo) -> datetime:
    return utc.replace(tzinfo=UTC).astimezone(tz).replace(tzinfo=None)


def slots_after(expr: str, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Slots strictly after naive-UTC ``after``, in order, as naive UTC."""
    from croniter import croniter

    # Start three hours early in local time so a slot moved forward out of a gap is not lost.
    it = croniter(expr, _local(after, tz) - timedelta(hours=3))
    last: datetime | None = None
    while True:
        slot = to_utc(it.get_next(datetime), tz)
        if slot > after and slot != last:
            last = slot
            yield slot


def latest_slot(expr: str, tz: ZoneInfo, now: datetime) -> datetime:
    """The most recent slot at or before naive-UTC ``now``."""
    from croniter import croniter

    # Start three hours late in local time: a slot moved forward out of a gap may still be due.
    it = croniter(expr, _local(now, tz) + timedelta(hours=3))
    while True:
        slot = to_utc(it.get_prev(datetime), tz)
        if slot <= now:
            return slot


def next_slots(expr: str, tz: ZoneInfo, after: datetime, n: int = 5) -> list[datetime]:
    """The next ``n`` slots after naive-UTC ``after`` ("the next five run times")."""
    out = []
    for slot in slots_after(expr, tz, after):
        out.append(slot)
        if len(out) == n:
            break
    return out


def local_label(slot: datetime, tz: ZoneInfo) -> str:
    """A slot as the admin reads it: ``2026-03-30 08:00 CEST``."""
    return slot.replace(tzinfo=UTC).astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")
