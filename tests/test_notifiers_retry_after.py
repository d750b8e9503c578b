"""HTTP ``Retry-After`` on a 429/503: the target's next request waits for it (bounded), never
sooner than the usual backoff; against a real local HTTP server, and the pure scheduler."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

from atalaia.notifiers.channels.base import http_result, retry_after_seconds
from atalaia.notifiers.config import load_config_text
from atalaia.notifiers.engine import EscalationEngine, EscalationState
from atalaia.notifiers.log import SQLiteDeliveryLog
from atalaia.notifiers.retry import RETRY_AFTER_MAX, BreakerPolicy, RetryPolicy, TargetScheduler
from atalaia.notifiers.service import Notifier
from atalaia.notifiers.testing import HttpSink, incident_event
from atalaia.streams.clock import parse_time

SECRET = "porto-webhook-secret-0123456789"


def test_retry_after_is_read_as_seconds_or_an_http_date():
    now = 1_800_000_000.0
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds(" 0 ", now) == 0
    assert retry_after_seconds(formatdate(now + 90, usegmt=True), now) == 90
    assert retry_after_seconds(formatdate(now - 90, usegmt=True), now) == 0  # already past
    for bad in (None, "", "soon", "-5", "1.5", "٣"):
        assert retry_after_seconds(bad, now) is None
    assert http_result(429, "slow down", 30).retry_after == 30
    assert "Retry-After 30s" in http_result(503, "maintenance", 30).error
    assert http_result(500, "x", 30).retry_after is None  # only 429 and 503 carry it
    assert http_result(429, "x").retry_after is None


def test_the_scheduler_holds_the_whole_target_until_retry_after_bounded_and_never_sooner():
    pol = RetryPolicy(budget=3600, first_backoff=1, max_backoff=60)
    s = TargetScheduler("gw", BreakerPolicy(open_after=3))
    s.add("a", pol, 0.0)
    s.add("b", pol, 0.0)
    assert s.due(0.0) == ["a"]
    d = s.record("a", "retryable", 1.0, retry_after=30)
    assert d.status == "waiting" and d.next_at == 31.0
    assert s.due(30.9) == []  # b too: the target asked to wait
    assert s.next_wakeup() == 31.0
    assert s.due(31.0) == ["b"]
    # never sooner than the usual backoff: Retry-After 0 or 0.01 changes nothing
    s2 = TargetScheduler("gw2")
    s2.add("c", pol, 0.0)
    s2.due(0.0)
    assert s2.record("c", "retryable", 0.0, retry_after=0.01).next_at >= 0.5
    # bounded: an hour asked is RETRY_AFTER_MAX
    s3 = TargetScheduler("gw3")
    s3.add("e", pol, 0.0)
    s3.due(0.0)
    assert s3.record("e", "retryable", 0.0, retry_after=7200).next_at == RETRY_AFTER_MAX
    # an open breaker's probe waits for it too
    s4 = TargetScheduler("gw4", BreakerPolicy(open_after=1))
    s4.add("f", pol, 0.0)
    s4.due(0.0)
    s4.record("f", "retryable", 0.0, retry_after=45)
    assert s4.open and s4.probe_at >= 45 and s4.due(44.0) == []


async def webhook_answering_429(retry_after: str):
    """A webhook target whose first answer is a 429 with ``Retry-After``, and the first pages of
    two incidents for it: (the sink, the configuration, the two notifications)."""
    http = await HttpSink(secret=SECRET).start()
    http.answers["/hook"] = [(429, {"Retry-After": retry_after})]
    cfg = load_config_text(
        f"""
timezone: Europe/Lisbon
retry: {{first_backoff: 0.1, max_backoff: 0.2}}
targets:
  sala: {{channel: webhook, url: "{http.url}/hook", secret: "{SECRET}"}}
routes: [{{policy: p}}]
policies:
  p: {{steps: [{{targets: [sala], wait: 10m}}]}}
""",
        "ra.yaml",
    )
    engine = EscalationEngine(cfg)
    notes = []
    for k in range(2):
        ev = incident_event(incident=f"inc-{k}")
        notes += engine.step(EscalationState(), ev, parse_time(ev["at"]))[1]
    return http, cfg, notes


async def test_a_429_with_retry_after_holds_the_targets_next_requests(tmp_path):
    http, cfg, notes = await webhook_answering_429("2")
    notifier = Notifier(cfg, SQLiteDeliveryLog(tmp_path / "d.sqlite"))
    await notifier.start()
    try:
        t0 = time.time()
        assert len(await asyncio.wait_for(notifier.deliver(notes), 20)) == 2
    finally:
        await notifier.aclose()
        await http.stop()
    reqs = http.received("/hook")
    assert len(reqs) == 3  # the 429, then both delivered
    first = reqs[0].at
    assert all(r.at - first >= 1.9 for r in reqs[1:]), [r.at - first for r in reqs]  # not after 0.1 s
    assert time.time() - t0 < 10
    refused = [a for a in notifier.log.attempts() if a.status == "retryable"]
    assert len(refused) == 1 and "Retry-After 2s" in refused[0].error
    notifier.log.close()


async def test_a_restart_keeps_the_targets_retry_after(tmp_path):
    # found by the fault probe of `atalaia up` (kill -9 during a Retry-After hold): the hold lived
    # in the lane's memory only, so the restarted worker sent the waiting notification, and every
    # other one for that target, as soon as it was up, whatever the target had asked
    http, cfg, notes = await webhook_answering_429("6")
    db = tmp_path / "d.sqlite"
    try:
        notifier = Notifier(cfg, SQLiteDeliveryLog(db))
        await notifier.start()
        await notifier.submit(notes[:1])
        for _ in range(100):
            await asyncio.sleep(0.05)
            if notifier.log.deliveries()[0].status == "waiting":
                break
        await notifier.aclose()  # the worker stops (as a kill would leave it: the row waiting)
        notifier.log.close()
        asked = http.received("/hook")[0].at
        assert len(http.received("/hook")) == 1

        notifier = Notifier(cfg, SQLiteDeliveryLog(db))  # restarted, during the hold
        assert (await notifier.start()).resent == 1
        try:
            await notifier.submit(notes[1:])  # a new one for that target waits too
            await asyncio.wait_for(notifier.drain(), 20)
        finally:
            await notifier.aclose()
        later = [r.at - asked for r in http.received("/hook")[1:]]
        assert len(later) == 2 and all(t >= 5.9 for t in later), later  # not at the restart
        assert [d.status for d in notifier.log.deliveries()] == ["delivered", "delivered"]
        notifier.log.close()
    finally:
        await http.stop()
