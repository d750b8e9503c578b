"""Stage state in Kafka (``ATALAIA_STATE_STORE=kafka``, ``streams/checkpoints.py``): the
latest-per-key restore of the state topic's records (property), the producer and store choices
per broker kind, and two workers with separate data directories on one broker: kill -9 one, the
other takes its partitions over from ``<prefix>.state.*`` and the alarms equal the replay."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.streams.checkpoints import CheckpointUnavailable, KafkaCheckpoints, latest
from atalaia.streams.kafka_config import KAFKA, TANSU, broker_kind, producer_options, state_store
from tests.conftest import consume_all
from tests.test_streams_rules_live import (
    RULES,
    env_for,
    halves,
    live_alarms,
    make_history,
    per_key,
    replay,
    send,
    shared_partitions,
)


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
        return list(log.records)

    s._read = read
    return s


# incompressible snapshots of 0..400 bytes: 0..7 chunks of 64 bytes
snapshots = st.tuples(st.integers(0, 2**32), st.integers(0, 400)).map(
    lambda t: random.Random(t[0]).randbytes(t[1])
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("save"), snapshots, st.none() | st.integers(0, 8)),
        st.tuples(st.just("restart")),
        st.tuples(st.just("compact")),
    ),
    max_size=12,
)


@settings(max_examples=80, deadline=None)
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
                with contextlib.suppress(CheckpointUnavailable):
                    await s.save_many([(0, {"t.events": offset}, Snap(state))])
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


@pytest.mark.broker
def test_checkpoints_round_trip_through_the_broker(broker, topic_prefix):
    """Chunked checkpoints, their tombstones and the read to the end on the real (Tansu) broker:
    another store, as on another machine, restores the latest of each partition."""
    from aiokafka import AIOKafkaProducer

    from atalaia.streams.checkpoints import state_topic

    sources = [f"{topic_prefix}.events"]
    topic = state_topic(topic_prefix, "rules")

    async def run() -> dict:
        producer = AIOKafkaProducer(bootstrap_servers=broker, **producer_options(TANSU))
        await producer.start()
        a, b = (KafkaCheckpoints(broker, topic, sources, chunk_bytes=1000) for _ in range(2))
        try:
            for s in (a, b):
                s.producer = producer
                await s.start()
            assert a.partitions == 3
            assert await a.load_many([0, 1, 2]) == {}
            big = orjson.dumps([{"entity": f"e{i}", "window": list(range(i % 50))} for i in range(2000)])
            for k in range(3):  # later checkpoints replace earlier ones
                await a.save_many([(p, {"t": 10 * k + p}, Snap(big + b"%d" % k)) for p in (0, 1, 2)])
            await a.save_many([(4, {"t": 99}, Snap(b"small"))])  # partition 4 -> state partition 1
            got = await b.load_many([0, 1, 2, 4])
            assert not b.stale[0], "the replaced generations' chunks were deleted"
            return got
        finally:
            for s in (a, b):
                await s.stop()
            await producer.stop()

    got = asyncio.run(run())
    assert {p: o for p, (o, _) in got.items()} == {0: {"t": 20}, 1: {"t": 21}, 2: {"t": 22}, 4: {"t": 99}}
    assert got[0][1].endswith(b"]2") and got[4][1] == b"small"


@pytest.mark.broker
def test_a_worker_on_another_machine_takes_over_from_the_state_topics(
    broker, topic_prefix, make_worker, tmp_path
):
    """Two workers with separate data directories (two machines, no shared volume) split the
    partitions; after the killed one's checkpoints reached ``<prefix>.state.rules``, kill -9 it:
    the other restores its partitions from there and the alarms equal the replay."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.split("  - id: parish-max")[0])  # entity-keyed: no reorder wait
    history = tmp_path / "history.jsonl"
    n = make_history(history, entities=9, steps=120, seed=11)
    expected = replay(rules, history)
    first, second = halves(history, n)
    env = {**env_for(rules, idle_s=2), "ATALAIA_STATE_STORE": "kafka", "ATALAIA_SESSION_TIMEOUT_S": "6"}
    stages = ("ingest", "rules")
    a, b = (
        make_worker("--stages", "ingest,rules", extra_env={**env, "ATALAIA_DATA_DIR": str(tmp_path / m)})
        for m in ("machine-a", "machine-b")
    )
    with ThreadPoolExecutor(2) as pool:  # both start at once
        list(pool.map(lambda w: w.start(stages), (a, b)))
    _, pb = shared_partitions(a, b)  # the group rebalances so that both own partitions
    deadline = time.monotonic() + 60
    send(a.env, first)
    state = f"{topic_prefix}.state.rules"
    while time.monotonic() < deadline:  # b's partitions are checkpointed in the state topic
        keys = {r.key for r in asyncio.run(consume_all(broker, state, idle=0.5, timeout=5))}
        if {b"%d" % p for p in pb} <= keys:
            break
    else:
        pytest.fail(f"no checkpoint of {pb} in {state}")
    b.kill()
    send(a.env, second)
    assert live_alarms(broker, topic_prefix, per_key(expected), idle=2.0, timeout=90) == per_key(expected)
    assert set(a.health()["stages"]["rules"]["partitions"]) == {0, 1, 2}, "the survivor owns every partition"
    text = a.log.read_text()
    for p in pb:
        assert f"partition {p} restored from checkpoint in {state}" in text, text[-6000:]
    assert not list(tmp_path.glob("machine-*/state/**/*.ckpt")), "no checkpoint files with the kafka store"


def test_the_kind_is_what_the_broker_answers_for_an_idempotent_producer_id():
    from atalaia.streams.app import faust_settings
    from atalaia.streams.kafka_config import probe_kind, remember_kind
    from atalaia.streams.settings import Settings

    class Client:
        def __init__(self, answer):
            self.answer = answer

        def get_random_node(self):
            return 1

        async def send(self, node, request):
            if isinstance(self.answer, Exception):
                raise self.answer
            return type("Resp", (), {"error_code": self.answer})()

    async def kinds() -> list[str]:
        return [await probe_kind(Client(a)) for a in (0, -1, 35, ConnectionError("gone"))]

    assert asyncio.run(kinds()) == [KAFKA, TANSU, TANSU, TANSU]
    for kind, acks in ((KAFKA, -1), (TANSU, 1)):  # Faust's own producer follows too
        remember_kind(f"{kind}:9092", kind)
        s = Settings(kafka=f"{kind}:9092")
        assert faust_settings(s, s.kafka, http=False)["producer_acks"] == acks
