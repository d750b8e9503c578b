"""A broker that stops answering makes ``/health`` ``failed`` (before, every process of `atalaia
up` went on answering 200 ``ok`` while nothing flowed, the clients' retries only in the log), and
an `atalaia up` whose embedded broker died and was replaced says so, ``degraded``, for as long as
a broker reset is shown."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import hypothesis.strategies as st
from aiokafka.errors import KafkaConnectionError
from hypothesis import given

from atalaia.streams import guard
from atalaia.streams.guard import HEALTH, BrokerGuard, BrokerHealth, broker_restarted


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def a_guard(monkeypatch) -> tuple[BrokerGuard, Clock]:
    clock = Clock()
    monkeypatch.setattr(guard.time, "monotonic", clock)
    settings = SimpleNamespace(reset_alert_s=900.0)
    g = BrokerGuard("127.0.0.1:9", settings, {})
    HEALTH.problems.pop("broker-unreachable", None)
    return g, clock


def test_unreachable_for_the_grace_is_failed_and_an_answer_clears_it(monkeypatch, caplog) -> None:
    g, clock = a_guard(monkeypatch)
    try:
        refused = KafkaConnectionError("Connect call failed ('127.0.0.1', 9)")
        for _ in range(4):  # checks every 2 s: 8 s without an answer is not yet a problem
            clock.now += 2
            g.reached(refused)
        assert "broker-unreachable" not in HEALTH.problems
        clock.now += 2
        g.reached(refused)
        status, problems = HEALTH.status()
        assert status == "failed"
        (said,) = [p for p in problems if "has not answered" in p]
        assert said.startswith("the broker at 127.0.0.1:9 has not answered since ")
        assert "KafkaConnectionError" in said and "no event is processed or sent until it does" in said
        assert "KafkaConnectionError: KafkaConnectionError" not in said, said  # its class said once
        assert guard.BROKER_REACHABLE._value.get() == 0
        g.reached(refused)  # one ERROR line, not one per check
        assert len([r for r in caplog.records if "has not answered for" in r.getMessage()]) == 1
        g.reached(None)
        assert "broker-unreachable" not in HEALTH.problems and guard.BROKER_REACHABLE._value.get() == 1
        assert any("answers again" in r.getMessage() for r in caplog.records)
        clock.now += 9  # the grace counts from the last answer
        g.reached(refused)
        assert "broker-unreachable" not in HEALTH.problems
    finally:
        HEALTH.problems.pop("broker-unreachable", None)


def test_a_restart_notice_is_degraded_until_the_reset_alert_ends(monkeypatch) -> None:
    health = BrokerHealth(reset_alert_s=900.0, clock=lambda: now)
    died = 1_765_000_000.0
    now = died + 30
    notice = json.dumps(
        {"at": died, "why": "the embedded broker (Tansu, pid 7) died (signal SIGKILL)", "count": 2}
    )
    broker_restarted(notice, health)
    status, (said,) = health.status()
    assert status == "degraded"
    assert said.startswith("the embedded broker (Tansu, pid 7) died (signal SIGKILL) at ")
    assert "(2 since it started)" in said
    assert guard.EMBEDDED_BROKER_RESTARTS._value.get() == 2
    now = died + 901
    assert health.status() == ("ok", [])


@given(st.text(max_size=80))
def test_a_notice_that_is_not_ups_is_ignored_never_raised(text: str) -> None:
    health = BrokerHealth(clock=time.time)
    broker_restarted(text, health)
    try:
        told = json.loads(text)
        ok = isinstance(told, dict) and {"at", "why", "count"} <= set(told)
    except ValueError:
        ok = False
    assert ok or health.status() == ("ok", [])
