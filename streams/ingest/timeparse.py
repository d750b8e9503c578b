"""Observation times: RFC 3339 date-times as FIWARE brokers send them, parsed once and cached.

A time without a UTC offset is accepted as UTC with a data-quality warning (never the server's
local zone); an ISO 8601 interval ``start/end`` (Smart Data Models ``dateObserved`` of
TrafficFlowObserved) is observed at its end; anything else is refused with a reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

_RFC3339ISH = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?"
)
MIN_YEAR = 1900


@dataclass(frozen=True, slots=True)
class ParsedTime:
    time: datetime | None  # UTC, None when refused
    zoned: bool = True  # False: no offset was written, UTC assumed
    error: str | None = None


MAX_TIME_CHARS = 80  # an interval of two RFC 3339 times with nanoseconds and offsets fits


def parse_observation_time(text: str) -> ParsedTime:
    """Parse one time string (cached: the same stamp repeats across attributes and entities)."""
    if len(text) > MAX_TIME_CHARS:
        return ParsedTime(None, error=f"{text[:64]!r}... is not an RFC 3339 date-time (too long)")
    return _parse(text)


@lru_cache(maxsize=8192)
def _parse(text: str) -> ParsedTime:
    s = text.strip()
    if "/" in s:  # ISO 8601 interval: observed at its end
        s = s.rsplit("/", 1)[1].strip()
    if not _RFC3339ISH.fullmatch(s):
        return ParsedTime(None, error=f"{text[:64]!r} is not an RFC 3339 date-time")
    try:
        t = datetime.fromisoformat(s.replace(",", "."))
    except ValueError as exc:
        return ParsedTime(None, error=f"{text[:64]!r} is not a valid date-time ({exc})")
    zoned = t.tzinfo is not None
    try:
        t = t.astimezone(UTC) if zoned else t.replace(tzinfo=UTC)
    except (OverflowError, ValueError):
        return ParsedTime(None, error=f"{text[:64]!r} is out of range")
    if t.year < MIN_YEAR:
        return ParsedTime(None, error=f"{text[:64]!r} is before {MIN_YEAR}, not a plausible observation time")
    return ParsedTime(t, zoned)
