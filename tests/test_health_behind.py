"""A stage far behind shows on ``/health``: consumer lag was only on ``/metrics``, so in a storm
an operator reading ``/health`` could not tell the alarm path was minutes behind. Each stage now
shows its records behind (``lag``) and how long the oldest of them has waited (``behind_s``),
sampled from what the lag metric reads (no broker request), and ``/health`` is ``degraded``
while a stage's oldest record has waited longer than ``ATALAIA_HEALTH_MAX_BEHIND_S``: sustained
lag, not a storm worked through in seconds, nor a stage that is always a fetch behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.streams import metrics
from atalaia.streams.guard import BrokerHealth
from atalaia.streams.metrics import Behind, health_report

EVENTS, OBS = TopicPartition("a.events", 0), TopicPartition("a.observations", 0)


@dataclass
class Consumer:
    ends: dict

    def assignment(self) -> set:
        return set(self.ends)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.ends[tp]


@dataclass
class Stage:
    consumer: Consumer
    positions: dict
    _consumer_started: bool = True
    topic_stages: dict = field(default_factory=dict)
    cores: dict = field(default_factory=lambda: {0: None})
    processed: int = 0


class Run:
    """One stage on one partition, a clock, a health of its own, sampled once a second."""

    def __init__(self, max_behind_s: float = 120.0, tp: TopicPartition = OBS) -> None:
        self.now, self.tp = 0.0, tp
        self.health = BrokerHealth(clock=lambda: self.now)
        self.behind = Behind(max_behind_s, clock=lambda: self.now, health=self.health)
        self.stage = Stage(Consumer({tp: 0}), {tp: 0})

    def second(self, appended: int, processed: int) -> dict[str, Any]:
        """One second: ``appended`` records reach the partition, the stage processes up to
        ``processed`` of those waiting; then the sample."""
        self.now += 1
        end = self.stage.consumer.ends[self.tp] + appended
        self.stage.consumer.ends[self.tp] = end
        self.stage.positions[self.tp] = min(end, self.stage.positions[self.tp] + processed)
        self.behind.sample({"rules": self.stage})
        return self.behind.of("rules")


def test_a_storm_worked_through_in_seconds_does_not_degrade_health() -> None:
    run = Run(max_behind_s=10)
    seen = [run.second(8000 if s == 0 else 0, 2000) for s in range(10)]
    assert seen[0] == {"lag": 6000, "behind_s": 0.0}  # (the storm's first second: just arrived)
    assert max(s["behind_s"] for s in seen) <= 4 and seen[-1] == {"lag": 0, "behind_s": 0.0}
    assert run.health.status() == ("ok", [])


def test_a_stage_always_a_fetch_behind_is_not_behind() -> None:
    """A busy stage that keeps up always has records waiting (those of the fetch in flight):
    ten minutes of it never degrade /health."""
    run = Run(max_behind_s=120)
    for _ in range(600):
        row = run.second(1000, 1000 if run.now else 700)
        assert row["lag"] == 300 and row["behind_s"] <= 1.0
    assert run.health.status() == ("ok", [])


def test_a_stage_behind_for_longer_than_the_setting_degrades_health_until_it_catches_up() -> None:
    run = Run(max_behind_s=120)
    for _ in range(120):  # 100 records a second arrive, 50 are processed: behind, and growing
        row = run.second(100, 50)
    assert row == {"lag": 6000, "behind_s": 59.0}  # the oldest waiting arrived in the 61st second
    assert run.health.status() == ("ok", [])  # not yet: the oldest has waited 59 s
    for _ in range(125):
        row = run.second(100, 50)
    assert row["behind_s"] > 120
    status, problems = run.health.status()
    assert status == "degraded" and len(problems) == 1, problems
    assert problems[0].startswith(f"stage rules is behind: {row['lag']} record(s) waiting, the oldest for ")
    assert "ATALAIA_HEALTH_MAX_BEHIND_S, 120 s" in problems[0]
    while row["lag"]:  # the storm ends: the stage catches up, /health is ok again
        row = run.second(0, 5000)
    assert row == {"lag": 0, "behind_s": 0.0} and run.health.status() == ("ok", [])


def test_zero_never_degrades_health() -> None:
    run = Run(max_behind_s=0)
    for _ in range(300):
        run.second(100, 10)
    assert run.behind.of("rules")["behind_s"] > 200 and run.health.status() == ("ok", [])


def test_health_shows_each_stage_lag_the_fused_one_per_topic() -> None:
    """The fused ingest + rules stage: ingest's lag is the events', rules' the observations'."""
    fused = Stage(Consumer({EVENTS: 50, OBS: 10}), {EVENTS: 20, OBS: 10})
    fused.topic_stages = {"a.events": "ingest", "a.observations": "rules"}
    unfetched = Stage(Consumer({TopicPartition("a.alarms", 0): None}), {TopicPartition("a.alarms", 0): 0})
    behind = Behind(clock=lambda: 5.0, health=BrokerHealth())
    behind.sample({"rules": fused, "incidents": unfetched})
    assert behind.of("ingest") == {"lag": 30, "behind_s": 0.0}  # (first seen just now)
    assert behind.of("rules") == {"lag": 0, "behind_s": 0.0}
    assert behind.of("incidents") == {"lag": None, "behind_s": None}  # before its first fetch
    old, metrics.BEHIND = metrics.BEHIND, behind
    try:
        body, _ = health_report({"rules": fused, "incidents": unfetched})
    finally:
        metrics.BEHIND = old
    assert body["stages"]["rules"] == {"processed": 0, "partitions": [0], "lag": 0, "behind_s": 0.0}
    assert body["stages"]["incidents"]["lag"] is None


# each second: records appended, records processed (at most those waiting)
seconds = st.lists(st.tuples(st.integers(0, 50), st.integers(0, 60)), min_size=1, max_size=200)


@given(seconds)
@settings(max_examples=200, deadline=None)
def test_behind_is_how_long_the_oldest_waiting_record_has_waited(steps: list[tuple[int, int]]) -> None:
    """Sampled each second, ``behind_s`` is exactly the seconds since the sample that first saw
    the oldest unprocessed record (it arrived within the second before): never more than it
    waited, at most a second less."""
    run = Run()
    arrived: list[float] = []  # the second each record arrived in, by offset
    for appended, processed in steps:
        arrived += [run.now + 1] * appended
        row = run.second(appended, processed)
        position = run.stage.positions[run.tp]
        expected = run.now - arrived[position] if position < len(arrived) else 0.0
        assert row == {"lag": len(arrived) - position, "behind_s": expected}


@given(seconds)
@settings(max_examples=100, deadline=None)
def test_a_long_backlog_keeps_few_marks_and_never_overstates_the_wait(steps: list[tuple[int, int]]) -> None:
    old, metrics.MAX_MARKS = metrics.MAX_MARKS, 4
    try:
        run = Run()
        arrived: list[float] = []
        for appended, processed in steps:
            arrived += [run.now + 1] * appended
            row = run.second(appended, processed)
            position = run.stage.positions[run.tp]
            assert len(run.behind.marks.get(("rules", run.tp), ())) <= 5
            if position < len(arrived):
                assert 0.0 <= row["behind_s"] <= run.now - arrived[position]
            else:
                assert row["behind_s"] == 0.0
    finally:
        metrics.MAX_MARKS = old


class Fetched(Consumer):
    """A consumer that also knows where its next fetch starts (aiokafka's fetch position): past
    every record it handed over, and past what it skipped without handing it over."""

    def __init__(self, ends: dict, fetched: dict) -> None:
        super().__init__(ends)
        self.fetched = fetched
        self._subscription = self  # (aiokafka's consumer._subscription.subscription.assignment)
        self.subscription = self.assignment_state = self

    @property
    def assignment(self) -> Any:  # (both consumer.assignment() and subscription.assignment)
        return self

    def __call__(self) -> set:
        return set(self.ends)

    def state_value(self, tp: TopicPartition) -> Any:
        position = self.fetched.get(tp)
        return type("State", (), {"has_valid_position": position is not None, "position": position})()


def test_an_idle_stage_past_records_it_is_never_handed_is_not_behind() -> None:
    """On Kafka a partition's high watermark can lie past the last record a stage is handed: a
    transaction's commit marker written by a transactional producer (Kafka Connect, Flink), a
    batch whose last records were compacted away, or a log emptied by retention read by a stage
    without a checkpoint (its position 0). The consumer skips them and its next fetch starts at
    the high watermark, but the stage's position (the last record it applied + 1) stays below:
    /health said `lag` 1 and a `behind_s` that grew for as long as no record came, and was
    degraded, naming the stage, on an idle, caught-up system."""
    marker, emptied = TopicPartition("a.events", 1), TopicPartition("a.events", 2)
    stage = Stage(
        Fetched({marker: 101, emptied: 5000}, {marker: 101, emptied: 5000}), {marker: 100, emptied: 0}
    )
    now = [0.0]
    health = BrokerHealth(clock=lambda: now[0])
    behind = Behind(120, clock=lambda: now[0], health=health)
    for _ in range(600):  # ten idle minutes
        now[0] += 1
        behind.sample({"ingest": stage})
    assert behind.of("ingest") == {"lag": 0, "behind_s": 0.0}
    assert health.status() == ("ok", [])


def test_a_batch_being_applied_still_counts_as_waiting() -> None:
    """The consumer's fetch position is past a batch the stage was handed and is still applying
    (its lock held): those records wait until applied, and a stage stuck on them is behind."""
    import asyncio

    tp = TopicPartition("a.observations", 0)
    stage = Stage(Fetched({tp: 500}, {tp: 500}), {tp: 0})
    stage._lock = asyncio.Lock()
    now = [0.0]
    health = BrokerHealth(clock=lambda: now[0])
    behind = Behind(120, clock=lambda: now[0], health=health)

    async def stuck() -> None:
        async with stage._lock:  # the stage's loop, applying the batch (say, waiting for acks)
            for _ in range(200):
                now[0] += 1
                behind.sample({"rules": stage})

    asyncio.run(stuck())
    assert behind.of("rules") == {"lag": 500, "behind_s": 199.0}
    assert health.status()[0] == "degraded"
    now[0] += 1
    stage.positions[tp] = 500  # applied, the lock released: caught up
    behind.sample({"rules": stage})
    assert behind.of("rules") == {"lag": 0, "behind_s": 0.0} and health.status() == ("ok", [])
