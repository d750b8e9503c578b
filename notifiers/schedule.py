"""Business hours and on-call rotations, evaluated in the configured time zone (Europe/Lisbon).

Pure functions of an aware ``now``: DST changes are handled by ``zoneinfo``; a rotation counts
shifts in local wall-clock time from its ``start``.
"""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

from atalaia.notifiers.config import DAYS, HoursSchedule, RotationSchedule


def in_hours(schedule: HoursSchedule, now: datetime, tz: ZoneInfo) -> bool:
    """Whether ``now`` (local wall-clock time) falls in a window. A window whose ``to`` is earlier
    than its ``from`` wraps past midnight: it starts on each of its ``days`` and ends the next
    day (``days: [fri], from: "20:00", to: "08:00"`` is Friday 20:00 to Saturday 08:00).
    ``to: "00:00"`` is midnight; ``"00:00"``–``"00:00"`` is the whole day. A holiday is a local
    date never in hours (the part of an overnight window that falls on it too)."""
    local = now.astimezone(tz)
    if local.date() in schedule.holidays:
        return False
    day, t = DAYS[local.weekday()], local.time().replace(tzinfo=None)
    yesterday = DAYS[(local.weekday() - 1) % 7]
    for w in schedule.windows:
        if w.end == time(0) or w.start < w.end:  # within one day (to 00:00 = midnight)
            end = w.end if w.end != time(0) else time.max
            if day in w.days and w.start <= t < end:
                return True
        elif (day in w.days and t >= w.start) or (yesterday in w.days and t < w.end):  # past midnight
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
