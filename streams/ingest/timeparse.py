"""Observation times: RFC 3339 date-times as FIWARE brokers send them, parsed once and cached.

A time without a UTC offset is accepted as UTC with a data-quality warning (never the server's
local zone); an ISO 8601 interval (Smart Data Models ``dateObserved`` of TrafficFlowObserved or
NoiseLevelObserved: ``start/end``, ``start/duration``, ``duration/end``, or ``start/end`` with the
end's date left out) is observed at its end; anything else is refused with a reason.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import NamedTuple

_CLOCK = r"\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?"  # hh:mm[:ss[.fraction]]
_OFFSET = r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?)"
_RFC3339ISH = re.compile(rf"\d{{4}}-\d{{2}}-\d{{2}}[Tt ]{_CLOCK}{_OFFSET}?")
MIN_YEAR = 1900


class ParsedTime(NamedTuple):  # a tuple: built for every new time text, ≈ 3× cheaper than a dataclass
    time: datetime | None  # UTC, None when refused
    zoned: bool = True  # False: no offset was written, UTC assumed
    error: str | None = None


MAX_TIME_CHARS = 80  # an interval of two RFC 3339 times with nanoseconds and offsets fits
_CACHE_MAX = 16384
_cache: dict[str, ParsedTime] = {}  # text -> result; its older half dropped when full (pure function)
# datetime -> its contract text (``format_time``), filled here when the parsed text already is
# that text, so the publishing encoder does not format it again (see encode.py)
formatted: dict[datetime, str] = {}
# What brokers send nearly always: UTC with "Z", seconds, at most microseconds (ASCII digits only).
_fromisoformat = datetime.fromisoformat
_CANONICAL = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z", re.ASCII)


def forget_older_half(cache: dict) -> None:
    """Make room in a full cache by dropping its older half (a dict keeps insertion order).
    Clearing it instead lost, at every clear, the times of the batch being processed, which the
    encoder looks up once the whole batch is parsed: half the lookups missed with 5 000-record
    batches of distinct times."""
    for key in list(islice(cache, len(cache) // 2)):
        del cache[key]


def parse_observation_time(text: str) -> ParsedTime:
    """Parse one time string (cached: the same stamp repeats across attributes and entities)."""
    p = _cache.get(text)
    if p is not None:
        return p
    if len(text) > MAX_TIME_CHARS:
        return ParsedTime(None, error=f"{text[:64]!r}... is not an RFC 3339 date-time (too long)")
    p = _canonical(text) or _parse(text)
    if len(_cache) >= _CACHE_MAX:
        forget_older_half(_cache)
    _cache[text] = p
    return p


def _canonical(text: str) -> ParsedTime | None:
    """``_parse`` for ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` without the general machinery; None when
    the text has another form or is not a plausible date-time (``_parse`` then says why)."""
    if _CANONICAL.fullmatch(text) is None:
        return None
    try:
        t = _fromisoformat(text)  # UTC (the "Z"), the same value _parse computes
    except ValueError:
        return None
    if t.year < MIN_YEAR or t.tzinfo is not UTC:
        return None
    if len(text) == 20 or text[-2] != "0":  # the text is exactly what format_time(t) returns
        if len(formatted) >= _CACHE_MAX:
            forget_older_half(formatted)
        formatted[t] = text
    return _tuple_new(ParsedTime, (t, True, None))


_tuple_new = tuple.__new__


_DURATION = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:[.,]\d+)?)S)?)?")
_ZONE = re.compile(_OFFSET + "$")
_TIME_OF_DAY = re.compile(f"{_CLOCK}{_OFFSET}?")


def _interval_end(text: str, s: str) -> str | ParsedTime:
    """The end of an ISO 8601 interval: ``start/end``, ``duration/end``, ``start/duration`` (the
    start plus the duration: weeks, days, hours, minutes, seconds; not months or years, whose
    length varies) or ``start/end`` with the end's date left out (``…T09:40:00Z/09:45:00Z``)."""
    start, _, end = s.partition("/")
    start, end = start.strip(), end.strip()
    if "/" in end:
        return ParsedTime(None, error=f"{text[:64]!r} is not an ISO 8601 interval (more than one '/')")
    if end[:1] == "P" and _RFC3339ISH.fullmatch(start):
        m = _DURATION.fullmatch(end)
        if m is None or end in ("P", "PT") or end.endswith("T"):
            return ParsedTime(
                None, error=f"{text[:64]!r}: {end[:32]!r} is not a duration in weeks, days or time"
            )
        begun = _parse(start)
        if begun.time is None:
            return begun
        weeks, days, hours, minutes, seconds = (float((g or "0").replace(",", ".")) for g in m.groups())
        try:
            at = begun.time + timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
        except OverflowError:
            return ParsedTime(None, error=f"{text[:64]!r} is out of range")
        return ParsedTime(at, begun.zoned)
    if _TIME_OF_DAY.fullmatch(end) and _RFC3339ISH.fullmatch(start):
        # the end's date (and, if it names none, its zone) are the start's
        zone = "" if end[-1] in "Zz" or "+" in end or "-" in end else _ZONE.search(start[11:])
        return start[:11] + end + (zone.group(0) if zone else "")
    return end


def _parse(text: str) -> ParsedTime:
    s = text.strip()
    if "/" in s:  # ISO 8601 interval: observed at its end
        end = _interval_end(text, s)
        if type(end) is not str:
            return end
        s = end
    if not _RFC3339ISH.fullmatch(s):
        return ParsedTime(None, error=f"{text[:64]!r} is not an RFC 3339 date-time")
    if s[-1] == "z":  # RFC 3339 allows a lower-case z and t (Python reads only upper case)
        s = s[:-1] + "Z"
    if s[10] == "t":
        s = s[:10] + "T" + s[11:]
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


#: what a ``future-time`` warning tells the sender: ingest keeps the reading, the rules engine's
#: clock guard (``max_future``, the same tolerance) puts it on the DLQ
FUTURE = ": the rules will refuse it as ahead of their clock (DLQ)"
