"""The ingest producer's unconfirmed records (``IngestProducer.confirm`` / ``resend``), as a state
machine against a model: whatever the order of writes, checks that confirm, checks that have
the records written again and writes the broker refuses, a record answered for is kept until a
check confirms a time after its last acknowledgement, and the byte count is that of the kept
records. The live case (a broker restarted empty) is in tests/test_broker_reset.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from atalaia.streams.ingest import http

TOPICS = ("t.events", "t.commands", "t.dlq")


class Clock:
    now = 0.0

    def monotonic(self) -> float:
        return self.now


@dataclass
class Md:
    partition: int
    offset: int


class FakeProducer:
    """aiokafka's producer as ``IngestProducer`` uses it; ``refuse``: values the broker refuses."""

    def __init__(self) -> None:
        self.refuse: set[bytes] = set()
        self.offset = 0
        self.written: list[tuple[str, bytes]] = []

    async def send(self, topic, value, key=None, headers=None):
        fut = asyncio.get_running_loop().create_future()
        if value in self.refuse:
            fut.set_exception(http.KafkaError("refused"))
        else:
            self.offset += 1
            self.written.append((topic, value))
            fut.set_result(Md(0, self.offset))
        return fut

    async def send_and_wait(self, topic, value, key=None, headers=None):
        return await (await self.send(topic, value, key, headers))


class Unconfirmed(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.saved_time, http.time = http.time, self.clock
        self.loop = asyncio.new_event_loop()
        self.p = http.IngestProducer("127.0.0.1:1", loop=self.loop)
        self.fake = FakeProducer()
        self.p.producer = self.fake
        self.n = 0
        self.last_ack: dict[bytes, tuple[str, float]] = {}  # kept values: topic, last acknowledgement

    def teardown(self) -> None:
        http.time = self.saved_time
        self.loop.close()

    @rule(topic=st.sampled_from(TOPICS), refused=st.booleans())
    def publish(self, topic: str, refused: bool) -> None:
        self.n += 1
        value = f"v{self.n}".encode()
        if refused:
            self.fake.refuse.add(value)
        try:
            self.loop.run_until_complete(self.p.publish(topic, value, key=b"k"))
        except http.KafkaError:
            assert refused  # not answered: nothing to keep
            return
        self.last_ack[value] = (topic, self.clock.now)

    @rule(dt=st.floats(0.0, 3.0))
    def tick(self, dt: float) -> None:
        self.clock.now += dt

    @rule(back=st.floats(0.0, 5.0))
    def confirm(self, back: float) -> None:
        before = self.clock.now - back
        self.p.confirm(before)
        self.last_ack = {v: a for v, a in self.last_ack.items() if a[1] >= before}

    @precondition(lambda self: self.last_ack)
    @rule(
        topics=st.none() | st.sets(st.sampled_from(TOPICS), min_size=1),
        refuse=st.sets(st.integers(0, 50), max_size=3),
    )
    def resend(self, topics: set[str] | None, refuse: set[int]) -> None:
        self.fake.refuse = {f"v{i}".encode() for i in refuse}
        due = [v for v, (t, _) in self.last_ack.items() if topics is None or t in topics]
        # (it may keep more than the model requires: what it writes again is what it kept)
        kept = [r[3] for r in self.p.unconfirmed if topics is None or r[1] in topics]
        refused = [v for v in kept if v in self.fake.refuse]
        try:
            n = self.loop.run_until_complete(self.p.resend(topics))
        except http.KafkaError:
            assert refused
        else:
            assert not refused and n == len(kept) >= len(due)
        for v in due:
            if v not in refused:  # acknowledged again now
                self.last_ack[v] = (self.last_ack[v][0], self.clock.now)
        self.fake.refuse = set()

    @invariant()
    def kept_until_confirmed(self) -> None:
        kept = {r[3]: (r[1], r[0]) for r in self.p.unconfirmed}
        assert set(self.last_ack) <= set(kept)
        for v, (topic, at) in self.last_ack.items():
            assert kept[v] == (topic, at), v
        assert self.p.unconfirmed_bytes == sum(len(r[3]) + len(r[2] or b"") for r in self.p.unconfirmed)


TestUnconfirmed = Unconfirmed.TestCase


@pytest.mark.parametrize("fail_at", [0, 2])
def test_a_write_not_handed_to_the_producer_keeps_every_record(fail_at: int) -> None:
    """``send`` itself raising (metadata not there in time, buffer full) in the middle of a
    resend: every record stays kept under its old acknowledgement, none is dropped."""

    class Failing(FakeProducer):
        async def send(self, topic, value, key=None, headers=None):
            if len(self.written) == fail_at:
                raise http.KafkaError("no metadata")
            return await super().send(topic, value, key, headers)

    loop = asyncio.new_event_loop()
    try:
        p = http.IngestProducer("127.0.0.1:1", loop=loop)
        p.producer = FakeProducer()
        for i in range(4):
            loop.run_until_complete(p.publish("t.events", f"v{i}".encode()))
        before = list(p.unconfirmed)
        p.producer = Failing()
        with pytest.raises(http.KafkaError):
            loop.run_until_complete(p.resend(None))
        assert sorted(p.unconfirmed) == sorted(before)
    finally:
        loop.close()
