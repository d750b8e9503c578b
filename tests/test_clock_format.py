"""The one ``format_time``: every time text on the wire comes from it (the ingest encoder's cached
``time_text`` and the incident manager's ``fmt`` of epoch microseconds derive from it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.incidents.model import fmt, to_us
from atalaia.streams.clock import format_time, parse_time
from atalaia.streams.ingest.encode import time_text


@settings(max_examples=300, deadline=None)
@given(st.datetimes(timezones=st.just(UTC)))
def test_every_time_text_is_format_time_and_reads_back(t: datetime) -> None:
    text = format_time(t)
    assert text.endswith("Z") and text[4] == "-"  # four-digit year, also before 1000 (RFC 3339)
    assert not text.endswith("0Z") or "." not in text  # no superfluous fraction
    assert parse_time(text) == t
    assert time_text(t) == text
    assert fmt(to_us(t)) == text


def test_other_zones_are_written_in_utc() -> None:
    from datetime import timezone

    t = datetime(2026, 3, 1, 10, 0, 0, 120000, tzinfo=timezone(timedelta(hours=1)))
    assert format_time(t) == "2026-03-01T09:00:00.12Z"
    assert format_time(t.replace(microsecond=0)) == "2026-03-01T09:00:00Z"
