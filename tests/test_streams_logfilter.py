"""The log rate limiter (one line per kind of problem per interval, with a count) and the broker
health that /health reports."""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from atalaia.streams.guard import BrokerHealth
from atalaia.streams.logfilter import RateLimit


def record(name: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


@given(
    st.lists(
        st.tuples(
            st.floats(0, 5, allow_nan=False),  # time step
            st.sampled_from(["aiokafka.consumer", "atalaia.streams.stage", "faust.app"]),
            st.sampled_from(["node %d unreachable", "fetch failed: %s", "commit failed: %s"]),
            st.integers(0, 300),
        ),
        max_size=200,
    )
)
def test_at_most_one_line_per_kind_per_interval_and_every_record_counted(events) -> None:
    t = [0.0]
    f = RateLimit(interval=60, clock=lambda: t[0])
    passed: dict[tuple, list[float]] = {}
    suppressed = reported = 0
    for step, name, msg, n in events:
        t[0] += step
        r = record(name, logging.ERROR, msg, n if "%d" in msg else f"#{n}")
        kind = f.kind(r)
        if f.filter(r):
            times = passed.setdefault(kind, [])
            assert not times or t[0] - times[-1] >= 60  # one line per kind per interval
            times.append(t[0])
            text = r.getMessage()
            if "repeated" in text:
                reported += int(text.rsplit("(repeated ", 1)[1].split(" ")[0])
        else:
            suppressed += 1
    still_held = sum(v[1] for v in f.kinds.values())
    assert reported + still_held == suppressed  # the count says how many were dropped


def test_other_loggers_info_and_unlimited_records_pass() -> None:
    f = RateLimit(interval=60, clock=lambda: 0.0)
    assert all(f.filter(record("httpx", logging.ERROR, "x")) for _ in range(5))
    assert all(f.filter(record("aiokafka", logging.INFO, "x")) for _ in range(5))
    loud = record("atalaia.streams.guard", logging.ERROR, "BROKER RESET")
    loud.ratelimit = False
    assert f.filter(loud) and f.filter(loud)
    assert [f.filter(record("aiokafka", logging.WARNING, "node %d", i)) for i in range(3)] == [
        True,
        False,
        False,
    ]


def test_a_long_message_with_varying_numbers_is_one_kind() -> None:
    f = RateLimit(interval=60, clock=lambda: 0.0)
    long = "x" * 290 + " offset %d of partition %d"
    assert f.filter(record("atalaia", logging.ERROR, long, 7, 0))
    assert not f.filter(record("atalaia", logging.ERROR, long, 11, 1))


def test_a_flood_of_distinct_kinds_keeps_the_table_bounded_and_cheap() -> None:
    """Distinct kinds within one interval (a line with a client's IPv6 address: hex letters are
    not blanked): once the table was full, every new kind rebuilt it (quadratic, on the event
    loop's thread, 2 ms a line at 20 000 kinds). The table stays within max_kinds, a full table
    is purged once per quarter of new kinds, and each first line of a kind is still let through."""
    clock = iter(range(100_000)).__next__
    f = RateLimit(interval=1e9, clock=clock, max_kinds=100)
    rebuilt = 0
    for i in range(1_000):
        before = id(f.kinds)
        r = logging.LogRecord(
            "atalaia.http",
            logging.WARNING,
            "",
            0,
            "from 2001:db8::" + "".join("abcdefghij"[int(d)] for d in str(i)),
            (),
            None,
        )
        assert f.filter(r), "the first line of a kind is written"
        assert len(f.kinds) <= 100
        rebuilt += id(f.kinds) != before
    assert rebuilt <= 1_000 // 25 + 1, rebuilt


def test_health_reset_is_degraded_for_a_while_and_layout_fails_until_fixed() -> None:
    now = [1000.0]
    h = BrokerHealth(reset_alert_s=600, clock=lambda: now[0])
    assert h.status() == ("ok", [])
    h.reset("ingest", [("atalaia.events", 0, 120, 0, 3, "restarted empty")])
    status, problems = h.status()
    assert status == "degraded" and "atalaia.events[0] checkpoint offset 120" in problems[0]
    h.layout(["atalaia.alarms has 4 partition(s), designed 1"])
    assert h.status()[0] == "failed" and h.holding
    now[0] += 601
    assert h.status() == ("failed", ["atalaia.alarms has 4 partition(s), designed 1"])
    h.layout([])
    assert h.status() == ("ok", []) and not h.holding


def test_the_repeated_line_formats_through_the_workers_formatter() -> None:
    """The worker logs through mode's formatter, which wraps record.args in a tuple: the
    'repeated N times' line was written as '--- Logging error --- TypeError: not all arguments
    converted' instead of the message."""
    from mode.utils.logging import ExtensionFormatter

    t = [0.0]
    f = RateLimit(interval=60, clock=lambda: t[0])
    first = record("aiokafka", logging.ERROR, "fetch failed: %s", "broker 1 down (100%)")
    assert f.filter(first)
    assert not f.filter(record("aiokafka", logging.ERROR, "fetch failed: %s", "broker 1 down (100%)"))
    t[0] = 61.0
    again = record("aiokafka", logging.ERROR, "fetch failed: %s", "broker 1 down (100%)")
    assert f.filter(again)
    line = ExtensionFormatter(fmt="%(message)s").format(again)
    assert line == "fetch failed: broker 1 down (100%) (repeated 1 times in the last 61 s)"
