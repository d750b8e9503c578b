"""Stage state in Kafka (``ATALAIA_STATE_STORE=kafka``, ``streams/checkpoints.py``): the
latest-per-key restore of the state topic's records (property), the producer and store choices
per broker kind, and two workers with separate data directories on one broker: kill -9 one, the
other takes its partitions over from ``<prefix>.state.*`` and the alarms equal the replay."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.streams.checkpoints import CheckpointUnavailable, KafkaCheckpoints, latest
from atalaia.streams.kafka_config import KAFKA, TANSU, broker_kind, producer_options, state_store
from tests.conftest import consume_all
from tests.test_streams_rules_live import RULES, env_for, halves, make_history, per_key, replay, send


def test_producer_and_store_follow_the_broker_kind():
    from aiokafka import AIOKafkaProducer

    assert producer_options(KAFKA) == {"acks": "all", "enable_idempotence": True}
    assert producer_options(TANSU) == producer_options(None) == {"acks": 1}

    async def accepted() -> None:
        for kind in (KAFKA, TANSU):
            AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", **producer_options(kind))

    asyncio.run(accepted())
    assert state_store("auto", KAFKA) == "kafka"
    assert state_store("auto", TANSU) == state_store("auto", None) == "file"
    assert state_store("kafka", TANSU) == "kafka" and state_store("file", KAFKA) == "file"


@pytest.mark.broker
def test_the_embedded_broker_is_tansu(broker):
    assert asyncio.run(broker_kind(broker)) == TANSU  # it grants no idempotent producer id


# -- the restore, property-tested against an in-memory log ----------------------------------
class Log:
    """A state topic partition in memory: ``send`` appends, and fails after ``budget`` records
    (a crash in the middle of a checkpoint)."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []
        self.budget: int | None = None

    async def send(self, topic, value, key=None, partition=None):
        if self.budget is not None:
            if self.budget == 0:
                raise ConnectionError("broker gone")
            self.budget -= 1
        self.records.append((key, value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def compact(self) -> None:
        self.records = list(latest(self.records).items())


class Snap:
    def __init__(self, state: bytes) -> None:
        self.state = state

    def snapshot(self) -> bytes:
        return self.state


def store(log: Log) -> KafkaCheckpoints:
    s = KafkaCheckpoints("-", "t.state.rules", [], chunk_bytes=64)
    s.producer = log

    async def read(tps):
        return latest(log.records)

    s._read = read
    return s


ops = st.lists(
    st.one_of(
        st.tuples(st.just("save"), st.binary(max_size=400), st.none() | st.integers(0, 8)),
        st.tuples(st.just("restart")),
        st.tuples(st.just("compact")),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_restore_is_the_last_complete_checkpoint(ops):
    """Whatever interrupts a write (after some chunks, after the head) and whenever the log is
    compacted, a restore finds the last checkpoint whose head was written, and once a save
    completes no chunk outlives the checkpoint that uses it."""

    async def run() -> None:
        log, want, offset = Log(), None, 0
        s = store(log)
        await s.load_many([0])
        for op in ops:
            if op[0] == "save":
                _, state, budget = op
                offset += 1
                log.budget = budget
                n = len(log.records)
                try:
                    await s.save_many([(0, {"t.events": offset}, Snap(state))])
                except CheckpointUnavailable:
                    pass
                log.budget = None
                heads = [r for r in log.records[n:] if r[0] == b"0"]
                if heads:
                    want = ({"t.events": offset}, state)
                if budget is None:  # a complete save leaves only the live checkpoint's chunks
                    s2 = store(log)
                    assert (await s2.load_many([0])).get(0) == want
                    assert not s2.stale[0]
            elif op[0] == "restart":
                s = store(log)
                assert (await s.load_many([0])).get(0) == want
            else:
                log.compact()
        assert (await store(log).load_many([0])).get(0) == want

    asyncio.run(run())
