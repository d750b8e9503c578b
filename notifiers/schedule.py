"""Business hours and on-call rotations, evaluated in the configured time zone (Europe/Lisbon).

Pure functions of an aware ``now``: DST changes are handled by ``zoneinfo``; a rotation counts
shifts in local wall-clock time from its ``start``.
"""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

from atalaia.notifiers.config import DAYS, HoursSchedule, RotationSchedule


def in_hours(schedule: HoursSchedule, now: datetime, tz: ZoneInfo) -> bool:
    local = now.astimezone(tz)
    if local.date() in schedule.holidays:
        return False
    day, t = DAYS[local.weekday()], local.time().replace(tzinfo=None)
    for w in schedule.windows:
        if day not in w.days:
            continue
        end = w.end if w.end != time(0) else time.max
        if w.start <= t < end:
            return True
    return False


def on_call(schedule: RotationSchedule, now: datetime, tz: ZoneInfo) -> str:
    """The member on call at ``now``. Before ``start`` the first member is on call."""
    start = datetime.fromisoformat(schedule.start)
    start = start.replace(tzinfo=tz) if start.tzinfo is None else start.astimezone(tz)
    local_naive = now.astimezone(tz).replace(tzinfo=None)
    elapsed = local_naive - start.replace(tzinfo=None)
    shifts = max(0, int(elapsed / schedule.shift))
    return schedule.members[shifts % len(schedule.members)]
