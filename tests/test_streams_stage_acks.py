"""The stage runner's ordering of outputs, acks, checkpoints and commits (``streams/stage.py``),
with a fake producer whose acks the test controls, a fake consumer and a fake checkpoint store
(no broker, no timing): the loop goes on while a batch's outputs await their acks, but a
checkpoint (and the offset commit after it) never covers a record whose outputs the broker has
not acknowledged, a failed send fails the stage before anything is saved, outputs keep their
order, and a checkpoint is written off the stage's lock."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from atalaia.streams.stage import BatchStage, Out

TOPIC = "t.in"


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, asyncio.Future[Any]]] = []

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[Any]:
        fut = asyncio.get_running_loop().create_future()
        self.sent.append((topic, value, fut))
        return fut

    def ack(self, n: int | None = None) -> None:
        for _, _, fut in [s for s in self.sent if not s[2].done()][:n]:
            fut.set_result(None)


class Consumer:
    def __init__(self, tps: set[TopicPartition], log: list[Any]) -> None:
        self.tps, self.log = tps, log

    def assignment(self) -> set[TopicPartition]:
        return self.tps

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.log.append(("commit", {tp.partition: o for tp, o in offsets.items()}))


class Store:
    where = "memory"

    def __init__(self, log: list[Any], producer: Producer) -> None:
        self.log, self.producer = log, producer
        self.gate: asyncio.Event | None = None  # set: save_many waits for it

    async def save_many(self, saves: list[Any]) -> None:
        unacked = sum(not f.done() for _, _, f in self.producer.sent)
        if self.gate is not None:
            await self.gate.wait()
        self.log.append(("save", {p: (o, bytes(s)) for p, o, s in saves}, unacked))


class Core:
    """Echoes each record to ``out``; its state is the number of records applied."""

    def __init__(self) -> None:
        self.n = 0

    def process(self, records: list[Any], now: float) -> list[Out]:
        self.n += len(records)
        return [Out("out", r.value) for r in records]

    def tick(self, now: float, backlog: bool = False) -> list[Out]:
        return []

    def snapshot(self) -> bytes:
        return b"%d" % self.n

    def restore(self, state: bytes) -> None:
        self.n = int(state)


def record(partition: int, offset: int) -> Any:
    return SimpleNamespace(
        topic=TOPIC, partition=partition, offset=offset, value=b"%d:%d" % (partition, offset), timestamp=None
    )


def batch(partition: int, first: int, n: int) -> dict[TopicPartition, list[Any]]:
    return {TopicPartition(TOPIC, partition): [record(partition, first + i) for i in range(n)]}


async def make_stage() -> tuple[BatchStage, Producer, list[Any], Store]:
    log: list[Any] = []
    producer = Producer()
    stage = BatchStage(
        name="s",
        bootstrap="127.0.0.1:9",
        prefix="t",
        source="in",
        group="g",
        make_core=lambda p: Core(),
        state_dir=None,
        producer=producer,
    )
    tps = {TopicPartition(TOPIC, p) for p in (0, 1)}
    stage.consumer = Consumer(tps, log)
    store = Store(log, producer)
    stage.checkpoints = store
    stage.cores = {0: Core(), 1: Core()}
    stage.positions = dict.fromkeys(tps, 0)
    return stage, producer, log, store


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_batches_go_on_while_acks_are_pending_and_keep_their_order() -> None:
    async def go() -> None:
        stage, producer, _, _ = await make_stage()
        await stage._process(batch(0, 0, 3))
        await stage._process(batch(0, 3, 2))  # no ack yet: the loop did not wait
        assert [v for _, v, _ in producer.sent] == [b"0:%d" % i for i in range(5)]
        assert all(not f.done() for _, _, f in producer.sent)
        assert len(stage._unacked) == 2
        producer.ack()
        await asyncio.sleep(0)
        stage._reap()
        assert not stage._unacked

    run(go())


def test_a_checkpoint_waits_for_every_ack_before_it_saves_and_commits() -> None:
    async def go() -> None:
        stage, producer, log, _ = await make_stage()
        await stage._process(batch(0, 0, 3))
        await stage._process(batch(1, 0, 4))
        taking = asyncio.ensure_future(stage._checkpoint_all())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not taking.done() and log == []  # nothing saved, nothing committed
        producer.ack(3)  # partition 0's outputs only
        for _ in range(5):
            await asyncio.sleep(0)
        assert not taking.done() and log == []
        producer.ack()
        await taking
        # saved (state + the offsets it corresponds to) with no output unacknowledged, then committed
        assert log == [
            ("save", {0: ({TOPIC: 3}, b"3"), 1: ({TOPIC: 4}, b"4")}, 0),
            ("commit", {0: 3, 1: 4}),
        ]

    run(go())


def test_a_failed_send_fails_the_checkpoint_and_nothing_is_saved() -> None:
    async def go() -> None:
        stage, producer, log, _ = await make_stage()
        await stage._process(batch(0, 0, 2))
        producer.sent[0][2].set_result(None)
        producer.sent[1][2].set_exception(RuntimeError("broker said no"))
        with pytest.raises(RuntimeError, match="broker said no"):
            await stage._checkpoint_all()
        assert log == []
        # and the loop's next send raises it too (the stage fails, resumes from the last checkpoint)
        stage2, producer2, _, _ = await make_stage()
        await stage2._process(batch(0, 0, 1))
        producer2.sent[0][2].set_exception(RuntimeError("lost"))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="lost"):
            await stage2._process(batch(0, 1, 1))

    run(go())


def test_no_more_than_max_unacked_batches_wait_for_acks() -> None:
    async def go() -> None:
        stage, producer, _, _ = await make_stage()
        stage.max_unacked = 2
        await stage._process(batch(0, 0, 1))
        await stage._process(batch(0, 1, 1))
        third = asyncio.ensure_future(stage._process(batch(0, 2, 1)))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not third.done()  # three batches unacknowledged: it waits for the oldest
        producer.sent[0][2].set_result(None)
        await third
        assert len(stage._unacked) == 2

    run(go())


def test_a_checkpoint_is_written_off_the_lock_and_one_at_a_time() -> None:
    async def go() -> None:
        stage, producer, log, store = await make_stage()
        await stage._process(batch(0, 0, 2))
        producer.ack()
        store.gate = asyncio.Event()  # the write hangs (a slow disk, a slow broker)
        async with stage._lock:
            taken = await stage._take()
        stage._writing = asyncio.ensure_future(stage._write(taken))
        # the loop takes the lock and processes on while the checkpoint is being written
        async with stage._lock:
            await stage._process(batch(0, 2, 3))
        assert 0 in stage.dirty and log == []
        # a revoke (or stop) waits for the write in flight, then checkpoints what came since
        producer.ack()
        store.gate.set()
        await stage._checkpoint_all([0])
        assert log == [
            ("save", {0: ({TOPIC: 2}, b"2")}, 0),
            ("commit", {0: 2}),
            ("save", {0: ({TOPIC: 5}, b"5")}, 0),
            ("commit", {0: 5}),
        ]
        assert not stage.dirty

    run(go())


def test_a_checkpoint_taken_while_acks_are_pending_is_written_once_they_arrive() -> None:
    """Taking a checkpoint does not wait for acks (the loop goes on at once); writing it waits for
    the acks of what was sent before it was taken, and only those."""

    async def go() -> None:
        stage, producer, log, _ = await make_stage()
        await stage._process(batch(0, 0, 2))
        async with stage._lock:
            taken = await stage._take()  # returns at once, outputs still unacknowledged
        writing = asyncio.ensure_future(stage._write(taken))
        async with stage._lock:
            await stage._process(batch(0, 2, 1))  # sent after the checkpoint was taken
        for _ in range(5):
            await asyncio.sleep(0)
        assert not writing.done() and log == []
        producer.ack(2)  # the two outputs the checkpoint covers; the third stays unacknowledged
        await writing
        assert log == [("save", {0: ({TOPIC: 2}, b"2")}, 1), ("commit", {0: 2})]

    run(go())


def test_a_revoke_whose_outputs_failed_fails_the_stage() -> None:
    async def go() -> None:
        stage, producer, log, _ = await make_stage()
        await stage._process(batch(0, 0, 1))
        producer.sent[0][2].set_exception(RuntimeError("lost"))
        await stage._revoke([TopicPartition(TOPIC, 0)])
        assert isinstance(stage.failed, RuntimeError) and log == []

    run(go())


def test_checkpoints_are_staggered_one_partition_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every partition is checkpointed once per checkpoint_s, one at a time (the loop pauses for
    one core's snapshot, not all of them), the one checkpointed longest ago first."""
    import atalaia.streams.stage as stage_module

    clock = [1000.0]
    fake = SimpleNamespace(
        monotonic=lambda: clock[0],
        perf_counter=time.perf_counter,
        time=time.time,
        thread_time=time.thread_time,
    )
    monkeypatch.setattr(stage_module, "time", fake)  # the stage's clock only, not the event loop's

    async def go() -> None:
        stage, producer, log, _ = await make_stage()
        await stage._process(batch(0, 0, 1))
        await stage._process(batch(1, 0, 1))
        producer.ack()
        assert stage._due() == [0]  # never checkpointed: due, one partition only
        await stage._write(await stage._take([0]))
        assert stage._due() is None  # not before checkpoint_s / 2 partitions
        clock[0] += 1.0
        assert stage._due() == [1]
        await stage._write(await stage._take([1]))
        await stage._process(batch(0, 1, 1))
        producer.ack()
        clock[0] += 0.9
        assert stage._due() is None  # partition 0 was checkpointed 1.9 s ago
        clock[0] += 0.2
        assert stage._due() == [0]
        assert [e[0] for e in log] == ["save", "commit", "save", "commit"]

    run(go())


def test_large_snapshots_are_taken_in_a_thread_small_ones_on_the_loop() -> None:
    import threading

    async def go() -> None:
        stage, producer, log, _ = await make_stage()
        where = []
        for core in stage.cores.values():
            core.snapshot = lambda c=core: where.append(threading.current_thread().name) or b"%d" % c.n
        await stage._process(batch(0, 0, 1))
        producer.ack()
        await stage._checkpoint_all()
        stage._snapshot_cpu = 1.0  # the last one took a second of CPU
        await stage._process(batch(0, 1, 1))
        producer.ack()
        await stage._checkpoint_all()
        assert where[0] == threading.main_thread().name and where[1] != threading.main_thread().name
        assert [e[1] for e in log if e[0] == "save"] == [{0: ({TOPIC: 1}, b"1")}, {0: ({TOPIC: 2}, b"2")}]

    run(go())


class LogConsumer(Consumer):
    """A consumer over a log whose beginning and end the test sets, remembering each seek."""

    def __init__(self, tps: set[TopicPartition], log: list[Any]) -> None:
        super().__init__(tps, log)
        self.begin, self.end = 0, 0

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, self.begin)

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, self.end)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.log.append(("seek", tp.partition, offset))


def test_after_a_vanished_topic_a_rebalance_keeps_the_positions_already_in_the_new_log() -> None:
    """The topic vanished and was re-created: the stage starts its partitions at the new log's
    beginning once. A rebalance that follows (the consumer group rejoins when the topic comes
    back; a second worker joins) restores the checkpoints taken since, which are positions in
    the new log: they were reset to its beginning again, so every record of the new log was
    processed twice (duplicate incidents, notifications sent twice). A checkpoint of a
    partition this stage has not re-anchored yet (another worker held it) is still reset."""

    async def go() -> None:
        stage, _, log, _ = await make_stage()
        stage.consumer = LogConsumer(stage.consumer.tps, log)
        stage._consumer_started = True
        stage.health = SimpleNamespace(reset=lambda name, resets: log.append(("reset", resets)))
        tp0, tp1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
        stage.consumer.tps = {tp0}  # partition 1 is another worker's when the topic vanishes
        stage.positions = {tp0: 5}
        await stage.vanished({TOPIC}, "vanished")
        assert ("seek", 0, 0) in log and stage.positions[tp0] == 0
        stage.consumer.end = 8
        # not checkpointed yet (a rebalance at once): the store still holds the lost log's offset
        assert await stage._verify({tp0: 5}, {tp0: None}) == {tp0: 0}
        # the new log's 8 records processed and checkpointed; then a rebalance
        stage.positions = {tp0: 0}
        await stage._process(batch(0, 0, 8))
        await stage._take()
        assert await stage._verify({tp0: 8}, {tp0: None}) == {tp0: 8}
        # partition 1's checkpoint is the lost log's: reset; once checkpointed here, kept
        assert await stage._verify({tp1: 5}, {tp1: None}) == {tp1: 0}
        stage.consumer.tps = {tp0, tp1}
        stage.positions[tp1] = 3
        stage.dirty.add(1)
        await stage._take()
        assert await stage._verify({tp1: 3}, {tp1: None}) == {tp1: 3}

    run(go())
