"""The one time representation of the frame.

Inside a stage, time is the stage clock's epoch seconds (a ``float``: ``Core.process(records,
now)``, ``Core.tick(now)``); on the wire (every topic's record, the API) it is RFC 3339 UTC text
with ``Z`` and no superfluous fraction (``utc_second``: to the second, for ``/health`` and logs). These functions convert between them, and every
package uses them (there is no second ``format_time``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["format_time", "parse_time", "utc", "utc_second"]


def format_time(t: datetime) -> str:
    """RFC 3339 UTC with ``Z`` and no superfluous fraction (the contract's time format), e.g.
    ``2026-03-01T10:00:00Z``, ``2026-03-01T10:00:00.25Z``; the year has four digits.

    >>> format_time(datetime(2026, 3, 1, 10, 0, 0, 250000, tzinfo=UTC))
    '2026-03-01T10:00:00.25Z'
    """
    if t.tzinfo is not UTC:
        t = t.astimezone(UTC)
    s = t.isoformat()  # 'YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00': faster than strftime
    return s[:26].rstrip("0") + "Z" if t.microsecond else s[:19] + "Z"


def parse_time(s: str) -> datetime:
    """Parse an RFC 3339 time that carries a zone; raises ValueError otherwise."""
    t = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"time {s!r} has no UTC offset")
    return t.astimezone(UTC)


def utc(now: float) -> datetime:
    """The stage clock (epoch seconds) as an aware UTC datetime."""
    return datetime.fromtimestamp(now, UTC)


def utc_second(t: float) -> str:
    """An epoch time as ``/health`` and the logs write it: ``2026-12-07T20:27:03Z`` (to the second).

    >>> utc_second(0.0)
    '1970-01-01T00:00:00Z'
    """
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
