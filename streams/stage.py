"""The batched hot path: a pipeline stage is a raw aiokafka batch loop run as a Faust/mode
``Service`` (DESIGN.md, Broker: a plain Faust agent tops out near 10k ev/s; batches reach
hundreds of thousands).

Each stage consumes one topic in a consumer group, keeps one pure *core* per assigned partition
(rules, detectors, dedup state ...), and for every batch: ``core.process(records)`` → send the
outputs; their acks arrive while the loop fetches and processes the next batches (at most
``max_unacked`` batches unacknowledged; each output partition keeps its order).

State and position move together. Every ``checkpoint_s`` (and on shutdown or when a partition
is revoked) each core's ``snapshot()`` is written atomically with the offset it corresponds to
(to the data directory or to the compacted ``<prefix>.state.<stage>`` topic: ``streams.checkpoints``),
and only then is that offset committed to Kafka: the committed offset never runs ahead of saved
state. Nothing is written before every output sent up to the checkpoint is acknowledged, so a
checkpoint never covers an unacknowledged output. Only the snapshots stop the loop (under the
stage's lock); the write and the commit run while it goes on, one checkpoint at a time, and the
partitions' checkpoints are staggered over the interval, one core's snapshot per pause. On assignment the core is restored from its checkpoint and the consumer seeks to the
checkpoint's offset (without a checkpoint it starts fresh at the committed offset, which then is
where fresh state belongs). A crash therefore re-processes what came after the last checkpoint
(at-least-once) and, as every output carries a deterministic id, consumers drop the copies.

A checkpoint offset is only trusted inside the partition's log. On assignment (and when the
broker turns out to be another cluster) each offset is compared with the log's beginning and end
and with the cluster id saved beside it; one outside (the broker restarted empty, the log was
truncated, another cluster) is a *reset*: the stage keeps its state, starts at the log's
beginning, and says so loudly (``streams.guard``: log, metric, ``/health``) — it never waits in
silence past the end of a log. Tansu reports a partition's end as the last *batch's* base
offset + 1, so an offset past the reported end is checked against the records really there.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from mode import Service
from prometheus_client import Counter, Histogram

from atalaia.streams import metrics
from atalaia.streams.checkpoints import (
    CLUSTER_KEY,
    REANCHORED_KEY,
    Checkpoints,
    CheckpointUnavailable,
    KafkaCheckpoints,
    state_topic,
)
from atalaia.streams.clock import utc_second
from atalaia.streams.ingestlog import Entry
from atalaia.streams.kafka_config import (
    broker_kind,
    client_options,
    producer_options,
    retry_refused_writes,
    state_store,
)
from atalaia.streams.partition import pick
from atalaia.streams.sink import SinkUnavailable

__all__ = ["CLUSTER_KEY", "BatchStage", "Checkpoints", "Core", "CoreFactory", "Out"]

SINK_SLOW_S = 10.0  # a sink's database call this slow is named in /health while it goes on

log = logging.getLogger(__name__)

STAGE_RECORDS = Counter("atalaia_stage_records_total", "records consumed by a pipeline stage", ["stage"])
STAGE_OUTPUTS = Counter(
    "atalaia_stage_outputs_total", "records produced by a pipeline stage", ["stage", "topic"]
)
STAGE_BATCH = Histogram(
    "atalaia_stage_batch_seconds",
    "time to process and commit one batch",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


@dataclass(slots=True)
class Out:
    """One record to produce: topic *suffix* (``"alarms"``), key, value, headers."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int | None = None  # ms; None: now. Ingest passes the event's on (latency metrics)
    # the labels streams.metrics counts it with, from the typed record it was encoded from (an
    # alarm transition: rule, state; an incident change: state), so the metrics never decode it
    counted: tuple[str, ...] | None = None
    # kept in the ingest log (streams.ingestlog) when its topic is: False for a record nobody
    # needs again after a crash (the fused stage's own observations, evaluated where produced)
    journal: bool = True


class Core(Protocol):
    """One partition's pure state machine. ``now`` is the stage clock in epoch seconds (the one
    time type of the frame; ``streams.clock`` converts it for the wire). No I/O: a core whose work
    is a database or a sender runs it as an async sink (``streams.sink``)."""

    def process(self, records: list[Any], now: float) -> list[Out]: ...
    def tick(self, now: float, backlog: bool = False) -> list[Out]: ...  # backlog: still catching up
    def snapshot(self) -> bytes: ...  # the state a checkpoint saves with its offset
    def restore(self, state: bytes) -> None: ...  # take a checkpoint's state (``snapshot()``'s bytes)


CoreFactory = Callable[[int], Core]  # partition -> a fresh core (the runner restores its checkpoint)
# a checkpoint taken, to write: (partition, offsets, state) each, the offsets to commit after, and
# the acks of the outputs sent before it was taken (awaited before anything is written)
Taken = tuple[list[tuple[int, dict[str, Any], bytes]], dict[TopicPartition, int], list["asyncio.Future[Any]"]]


# a checkpoint's snapshots below this CPU time are taken on the event loop (a few ms: cheaper than
# handing them to a thread, whose GIL hand-overs with the loop stretch them several times)
INLINE_SNAPSHOT_S = 0.01


def _snapshots(cores: list[Core]) -> tuple[list[bytes], float]:
    """The cores' snapshots and the CPU seconds they took (of this thread)."""
    t = time.thread_time()
    states = [c.snapshot() for c in cores]
    return states, time.thread_time() - t


class PhaseTimes:
    """Opt-in diagnostics, ``ATALAIA_STAGE_TIMING=<file>``: where each stage loop's time goes.
    Every 5 s a stage appends the percentiles (ms) of its phases to the file: ``fetch`` (one
    ``getmany``), ``age`` (the oldest record of each fetched partition batch, by its Kafka
    timestamp), ``process`` (the cores, one batch), ``send`` (handing the outputs to the
    producer), ``ack`` (a batch's send until the broker acknowledged all of it, while the loop
    goes on), ``take`` (a checkpoint's pause of the loop), ``records`` and ``outputs`` per batch.
    Used by ``benchmarks/latency_bench.py --timing``."""

    def __init__(self, path: str, stage: str) -> None:
        self.path, self.stage, self.since = path, stage, time.monotonic()
        self.data: dict[str, list[float]] = {}

    @classmethod
    def from_env(cls, stage: str) -> PhaseTimes | None:
        path = os.environ.get("ATALAIA_STAGE_TIMING")
        return cls(path, stage) if path else None

    def add(self, phase: str, value: float) -> None:
        self.data.setdefault(phase, []).append(value)

    def flush(self) -> None:
        if time.monotonic() - self.since < 5:
            return
        self.since, data, self.data = time.monotonic(), self.data, {}
        lines = [f"{time.strftime('%H:%M:%S')} {self.stage} pid={os.getpid()}"]
        for phase, xs in sorted(data.items()):
            xs.sort()
            n = len(xs)
            lines.append(
                f"  {phase:8} n={n:5} sum={sum(xs):9.0f} p50={xs[n // 2]:8.1f} p90={xs[int(n * 0.9)]:8.1f} "
                f"p99={xs[min(n - 1, int(n * 0.99))]:8.1f} max={xs[-1]:8.1f}"
            )
        with open(self.path, "a") as f:
            f.write("\n".join(lines) + "\n")


_settled = False
# On in stage processes (``atalaia worker``/``up`` and the benchmarks set it with
# ``settle_heaps()``); off where stages run inside a longer-lived process such as a test run,
# whose garbage at the moment of a freeze would never be collected.
SETTLE_HEAPS = False


def settle_heaps() -> None:
    """This process runs stages: freeze its heap when they start (see ``settle_heap``)."""
    global SETTLE_HEAPS
    SETTLE_HEAPS = True


def settle_heap() -> None:
    """Move what the process holds now (modules, rules, restored state) out of the cyclic
    collector's sight (``gc.freeze``). Without it a stage process spends ≈ 25 % of its CPU in the
    collector, which walks that static heap again and again, and stalls ≈ 0.2 s in each full
    collection (``benchmarks/README.md``). Reference counting still frees frozen objects; only
    cycles among them stay (the first call collects before freezing; later ones, after a
    partition assignment, freeze the restored state without a full collection). The
    collector's thresholds stay CPython's: a larger young generation is re-scanned whole, in
    flight batch included, at every young collection, which costs more than it saves."""
    global _settled
    if not _settled:
        gc.collect()
        _settled = True
    gc.freeze()


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, stage: BatchStage) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.stage._revoke(list(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        try:
            await self.stage._assign(list(assigned))
        except Exception:
            log.exception("%s: could not take over partitions %s", self.stage.name, sorted(assigned))
            raise


#: for this long after a topic vanished, a checkpoint offset on it is one of the lost log's
VANISHED_S = 120.0


class BatchStage(Service):
    """Run ``core.process`` over batches of one topic; see the module docstring.

    Failure rule: if processing, a tick or producing raises, the stage is marked *failed* and
    crashes (taking the worker down, visibly). A failed stage never checkpoints or commits again,
    so the restarted worker resumes from the last consistent checkpoint: an error can cause
    re-processing, never a lost output. Poison records are the cores' business (they validate and
    send what they cannot use to the DLQ); an exception here means a bug.
    """

    def __init__(
        self,
        *,
        name: str,
        bootstrap: str,
        prefix: str,
        source: str | tuple[str, ...],
        group: str,
        make_core: CoreFactory,
        state_dir: Path | None,
        state_store: str = "file",  # file | kafka | auto (streams.kafka_config.state_store)
        replicas: int = 1,  # of the state topic it creates (ATALAIA_REPLICATION_FACTOR)
        producer: AIOKafkaProducer | None = None,
        max_records: int = 5000,
        fetch_wait_ms: int = 50,
        session_timeout_s: float = 10.0,
        heartbeat_s: float = 1.0,
        checkpoint_s: float = 2.0,
        max_unacked: int = 8,  # batches whose outputs may await their acks while the loop goes on
        tick_s: float | None = None,
        clock: Callable[[], float] = time.time,
        health: Any = None,
        journal: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # the ingest log (streams.ingestlog) on atalaia up's embedded broker: outputs to its topics
        # (observations handed to another partition's rules) are kept there once acknowledged
        self.journal = journal
        self._journal_pending: list[Any] = []  # journal records a full disk refused: written first
        self.name, self.bootstrap, self.prefix = name, bootstrap, prefix
        self.sources = [f"{prefix}.{x}" for x in ((source,) if isinstance(source, str) else source)]
        self.group, self.make_core = group, make_core
        self.state_dir, self.state_store, self.replicas = state_dir, state_store, replicas
        self.checkpoints: Checkpoints | KafkaCheckpoints | None = None  # chosen in on_start
        self.max_records, self.fetch_wait_ms = max_records, fetch_wait_ms
        self.session_timeout_s, self.heartbeat_s = session_timeout_s, heartbeat_s
        self.checkpoint_s, self.tick_s, self.clock = checkpoint_s, tick_s, clock
        self.cores: dict[int, Core] = {}
        # until the consumer group's first assignment (possibly empty) is taken: /health "starting"
        self.assigned = False
        self.positions: dict[TopicPartition, int] = {}  # next offset to process
        self.dirty: set[int] = set()  # partitions changed since their last checkpoint
        self.backlog = True  # until a fetch after the last assignment shows we have caught up
        self.failed: BaseException | None = None
        self._own_producer = producer is None
        self.producer = producer
        self.consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._last_ckpt = 0.0
        # outputs sent and not yet acknowledged, oldest first (one future per batch or tick): the
        # loop fetches and processes the next batch meanwhile; every checkpoint waits for them all
        self._unacked: deque[asyncio.Future[Any]] = deque()
        self.max_unacked = max_unacked
        self._writing: asyncio.Future[None] | None = None  # a checkpoint being written, off the lock
        self._checkpointed: dict[int, float] = {}  # partition -> when its last checkpoint was taken
        self._snapshot_cpu = 0.0  # CPU seconds the last checkpoint's snapshots took
        self._consumer_started = False
        # topic -> when the broker check found it vanished (``vanished``): a rebalance that follows
        # restores checkpoint offsets of the lost log, which are no positions in the new one;
        # and the partitions of it this stage has checkpointed since (their checkpoints are
        # positions in the new log: not reset again)
        self._vanished: dict[str, float] = {}
        self._reanchored: dict[str, set[int]] = {}
        self.processed = 0
        self.processed_by_topic: dict[str, int] = {}
        # topic -> the user stage its records count for on /metrics (set for the fused stage)
        self.topic_stages: dict[str, str] = {}
        if health is None:
            from atalaia.streams.guard import HEALTH as health
        self.health = health
        self.cluster: str | None = None  # the broker's cluster id, saved with the checkpoints
        self._partitions: dict[tuple[int, bytes], int] = {}  # (partition count, key) -> partition
        self._admin: Any = None  # an AIOKafkaAdminClient once the cluster id was asked
        self._heap_settled = False
        self.times = PhaseTimes.from_env(name)
        self._unsaved_since: float | None = None  # checkpoints failing (a full disk) since

    # -- lifecycle -------------------------------------------------------------------------
    async def on_start(self) -> None:
        if SETTLE_HEAPS:
            settle_heap()
        kind = await broker_kind(self.bootstrap)
        if self.producer is None:
            self.producer = retry_refused_writes(  # Tansu: a re-created topic's refused writes
                AIOKafkaProducer(
                    **client_options(self.bootstrap),
                    **producer_options(kind),  # acks=all + idempotence on Kafka, acks=1 on Tansu
                    # no linger: a batch's outputs are appended before the sender runs, and the stage
                    # waits for their acks before it fetches again, so lingering only adds latency
                    linger_ms=0,
                    max_batch_size=1 << 20,
                    max_request_size=4 << 20,
                ),
                kind,
            )
            await self.producer.start()
        if state_store(self.state_store, kind) == "kafka":
            self.checkpoints = KafkaCheckpoints(
                self.bootstrap, state_topic(self.prefix, self.name), self.sources, replicas=self.replicas
            )
            self.checkpoints.producer = self.producer
        elif self.state_dir:
            self.checkpoints = Checkpoints(self.state_dir / self.name)
        if self.checkpoints is not None:
            await self.checkpoints.start()
        self.consumer = AIOKafkaConsumer(
            **client_options(self.bootstrap),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_wait_ms,
            session_timeout_ms=int(self.session_timeout_s * 1000),
            heartbeat_interval_ms=int(self.heartbeat_s * 1000),
            max_partition_fetch_bytes=4 << 20,
            # co-partitioned sources (events + observations, alarms + commands): one member gets
            # the same partition numbers of every topic (round robin, aiokafka's default, would
            # split one partition number's topics between members, i.e. one core's state in two)
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        self.consumer.subscribe(self.sources, listener=_Rebalance(self))
        self.add_future(self._guard(self._run()))
        if self.tick_s:
            self.add_future(self._guard(self._ticker()))

    async def _guard(self, work: Any) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            self.failed = e
            log.critical(
                "%s: stage failed, the worker stops without checkpointing (it resumes from "
                "the last consistent checkpoint): %r",
                self.name,
                e,
                exc_info=True,
            )
            await self.crash(e)

    async def on_stop(self) -> None:
        from atalaia.streams.guard import unless_broker_gone

        # each wait on the broker is given up when it cannot be reached (streams.guard): the
        # checkpoint's acks and commit, the consumer's leave, the producer's flush; a checkpoint
        # waits for every ack before it is saved, so one given up saves nothing
        def unless_gone(aw: Any, what: str) -> Any:
            return unless_broker_gone(aw, self.bootstrap, f"{self.name}: {what}")

        if self.consumer is not None and self._consumer_started:
            if self.failed is None:
                async with self._lock:
                    try:
                        await unless_gone(self._checkpoint_all(), "the checkpoint at stop")
                    except Exception as e:  # an output was not acknowledged, a write failed: the
                        # last consistent checkpoint stays (the restart re-processes from there)
                        self.failed = e
                        log.critical("%s: no checkpoint at stop: %r", self.name, e)
            elif self._writing is not None:  # a consistent checkpoint being written: let it end
                with contextlib.suppress(Exception):
                    await unless_gone(self._written(), "the checkpoint being written")
            with contextlib.suppress(Exception):
                await unless_gone(self.consumer.stop(), "the consumer's stop")
        await self._close_admin()
        if self.checkpoints is not None:
            with contextlib.suppress(Exception):
                await unless_gone(self.checkpoints.stop(), "the checkpoint store's stop")
        if self._own_producer and self.producer is not None:
            with contextlib.suppress(Exception):
                await unless_gone(self.producer.stop(), "the producer's flush")
        if self.journal is not None:
            self.journal.close()

    # -- partitions ------------------------------------------------------------------------
    async def _assign(self, tps: list[TopicPartition]) -> None:
        async with self._lock:
            self.backlog = True
            await self._refresh_cluster()
            wanted: dict[TopicPartition, int] = {}
            clusters: dict[TopicPartition, str | None] = {}
            new = [p for p in sorted({tp.partition for tp in tps}) if p not in self.cores]
            reanchored: set[int] = set()
            try:
                ckpts = await self.checkpoints.load_many(new) if self.checkpoints and new else {}
            except Exception as e:  # unreadable or corrupt checkpoints: stop, loudly
                self.failed = e
                log.critical("%s: cannot read the checkpoints of partitions %s: %r", self.name, new, e)
                raise
            for partition in new:
                mine = [tp for tp in tps if tp.partition == partition]
                ckpt = ckpts.get(partition)
                try:
                    core = self.make_core(partition)
                    if ckpt:
                        core.restore(ckpt[1])
                    self.cores[partition] = core
                except Exception as e:  # a corrupt or incompatible checkpoint: stop, loudly
                    self.failed = e
                    log.critical("%s: cannot restore partition %d: %r", self.name, partition, e)
                    raise
                for tp in mine:
                    if ckpt is not None and tp.topic in ckpt[0]:
                        wanted[tp] = ckpt[0][tp.topic]
                        clusters[tp] = ckpt[0].get(CLUSTER_KEY)
                    else:
                        committed = await self.consumer.committed(tp)
                        if committed:
                            log.warning(
                                "%s: %s has no checkpoint in %s: starting with empty state at "
                                "committed offset %d (ATALAIA_STATE_STORE=kafka keeps checkpoints "
                                "in Kafka, for workers on several machines)",
                                self.name,
                                tp,
                                self.checkpoints.where if self.checkpoints else "(none)",
                                committed,
                            )
                        self.positions[tp] = committed or 0
                if ckpt is not None and ckpt[0].get(REANCHORED_KEY):
                    reanchored.add(partition)  # a new embedded broker: what was in flight is gone
                if ckpt is not None:
                    log.info(
                        "%s: partition %d restored from checkpoint in %s at %s",
                        self.name,
                        partition,
                        self.checkpoints.where,
                        ckpt[0],
                    )
            reset = set(reanchored)
            self.dirty.update(reanchored)  # checkpointed soon without the marker: announced once
            for tp, offset in (await self._verify(wanted, clusters)).items():
                self.consumer.seek(tp, offset)
                self.positions[tp] = offset
                if offset != wanted[tp]:
                    self.dirty.add(tp.partition)  # the new anchor is checkpointed soon
                    reset.add(tp.partition)
            await self._announce(reset)
            if SETTLE_HEAPS and not self._heap_settled:  # the state restored at start-up is
                self._heap_settled = True  # long-lived (once: a core revoked later must stay collectable)
                settle_heap()
            self.assigned = True

    async def _announce(self, partitions: set[int]) -> None:
        """After a broker reset of these partitions (the records in flight between stages are
        gone, the state is kept): a core that can (``announce(now)``) sends its open state again,
        e.g. the rules their open alarms, so that no stage downstream stays without it."""
        outs: list[Out] = []
        now = self.clock()
        for p in sorted(partitions):
            announce = getattr(self.cores.get(p), "announce", None)
            if announce is not None:
                outs += announce(now)
        if outs:
            log.warning("%s: broker reset: %d open record(s) of its state sent again", self.name, len(outs))
            await self._produce(outs)

    async def _refresh_cluster(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        from atalaia.streams.broker import cluster_id

        try:
            if self._admin is None:  # one admin client for the stage's life (asked per rebalance)
                self._admin = AIOKafkaAdminClient(**client_options(self.bootstrap), request_timeout_ms=5000)
                await self._admin.start()
            self.cluster = await cluster_id(self._admin) or self.cluster
        except Exception as e:  # not fatal: the offsets are still checked
            log.warning("%s: cannot read the broker's cluster id: %s", self.name, e)
            await self._close_admin()  # a new one next time

    async def _close_admin(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()

    async def _verify(
        self, wanted: dict[TopicPartition, int], clusters: dict[TopicPartition, str | None]
    ) -> dict[TopicPartition, int]:
        """Where each partition starts: its checkpoint offset if that lies in the partition's log
        of the same cluster, else (a reset) the log's beginning, reported loudly."""
        if not wanted:
            return {}
        tps = list(wanted)
        begin = await self.consumer.beginning_offsets(tps)
        end = await self.consumer.end_offsets(tps)
        past = {tp: (begin[tp], end[tp]) for tp, offset in wanted.items() if offset > end[tp]}
        if past:  # maybe only past Tansu's too-low end offset: look at the records
            end = {**end, **(await self._true_ends(past))}
        out, resets = {}, []
        for tp, offset in wanted.items():
            b, e = begin[tp], end[tp]
            old = clusters.get(tp)
            why = None
            if old and self.cluster and old != self.cluster and offset > 0:
                why = f"the broker is another cluster, {self.cluster} (was {old}): a new history"
            elif (
                offset > b
                and time.monotonic() - self._vanished.get(tp.topic, -VANISHED_S) < VANISHED_S
                and tp.partition not in self._reanchored.get(tp.topic, ())
            ):
                why = "the topic vanished from the broker while the worker ran and was re-created empty"
            elif offset < b:
                why = f"records {offset}..{b - 1} were deleted before this stage read them"
            elif offset > e:
                why = "the broker lost records this stage had read: restarted empty or truncated"
            if why:
                resets.append((tp.topic, tp.partition, offset, b, max(e, b), why))
                out[tp] = b
            else:
                out[tp] = offset if not (old and self.cluster and old != self.cluster) else b
        self.health.reset(self.name, resets)
        return out

    async def _true_ends(self, logs: dict[TopicPartition, tuple[int, int]]) -> dict[TopicPartition, int]:
        """The end offsets of partitions (``tp -> (begin, reported end)``) from the records there:
        Tansu reports the last batch's base offset + 1, which can be thousands below the real
        end. One probe consumer reads each partition's last batch."""
        ends = {tp: reported for tp, (_, reported) in logs.items()}
        pending = {tp for tp, (begin, reported) in logs.items() if reported > begin}
        if not pending:
            return ends
        probe = AIOKafkaConsumer(
            **client_options(self.bootstrap), enable_auto_commit=False, fetch_max_wait_ms=100
        )
        await probe.start()
        try:
            probe.assign(sorted(pending))
            for tp in pending:
                probe.seek(tp, ends[tp] - 1)
            deadline = time.monotonic() + 5
            while pending and time.monotonic() < deadline:
                for tp, records in (await probe.getmany(timeout_ms=300)).items():
                    if records:
                        ends[tp] = max(ends[tp], records[-1].offset + 1)
                        pending.discard(tp)
            return ends
        finally:
            await probe.stop()

    async def recheck(self, cluster: str | None = None) -> None:
        """The broker changed under a running stage (a new cluster id): verify every position."""
        async with self._lock:
            if self.consumer is None or not self._consumer_started:
                return
            old, self.cluster = self.cluster, cluster or self.cluster
            assigned = self.consumer.assignment()
            wanted = {tp: o for tp, o in self.positions.items() if tp in assigned}
            reset = set()
            for tp, offset in (await self._verify(wanted, dict.fromkeys(wanted, old))).items():
                if offset != wanted[tp]:
                    self.consumer.seek(tp, offset)
                    self.positions[tp] = offset
                    self.dirty.add(tp.partition)
                    reset.add(tp.partition)
            await self._announce(reset)

    async def vanished(self, topics: set[str], why: str) -> None:
        """Topics vanished from the broker and were re-created empty (``streams.guard``): this
        stage's positions on them start again at the new logs' beginning, reported as a reset,
        and its cores send their open state again (what it had sent to a vanished topic and
        nobody had read is gone with it)."""
        now = time.monotonic()
        self._vanished.update(dict.fromkeys(topics, now))
        for topic in topics:
            self._reanchored[topic] = set()
        async with self._lock:
            if self.consumer is None or not self._consumer_started:
                return
            tps = sorted(tp for tp in self.consumer.assignment() if tp.topic in topics)
            if tps:
                begin = await self.consumer.beginning_offsets(tps)
                end = await self.consumer.end_offsets(tps)
                resets = []
                for tp in tps:
                    old = self.positions.get(tp, begin[tp])
                    self.consumer.seek(tp, begin[tp])
                    self.positions[tp] = begin[tp]
                    self.dirty.add(tp.partition)
                    resets.append((tp.topic, tp.partition, old, begin[tp], max(end[tp], begin[tp]), why))
                self.health.reset(self.name, resets)
            await self._announce(set(self.cores))

    async def _revoke(self, tps: list[TopicPartition]) -> None:
        async with self._lock:
            if self.failed is None:
                try:
                    await self._checkpoint_all(sorted({tp.partition for tp in tps}))
                except Exception as e:  # an output not acknowledged, a checkpoint not written: the
                    self.failed = e  # stage fails (its loop raises it), never checkpoints again
                    log.critical("%s: cannot checkpoint revoked partitions: %r", self.name, e)
            for tp in tps:
                self.cores.pop(tp.partition, None)
                self.positions.pop(tp, None)
                self.dirty.discard(tp.partition)
                self._checkpointed.pop(tp.partition, None)

    async def _checkpoint_all(self, partitions: list[int] | None = None) -> None:
        """Checkpoint now and wait until it is written and committed (revoke, stop): after the
        checkpoint being written in the background, if any."""
        await self._written()
        await self._write(await self._take(partitions))

    async def _written(self) -> None:
        """Wait for the checkpoint being written in the background (its errors are the stage's)."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    async def _take(self, partitions: list[int] | None = None) -> Taken:
        """The checkpoint of the dirty partitions (all, or those of ``partitions``) as of now, taken
        under the stage's lock: each core's snapshot with the offsets it corresponds to, and the
        acks still awaited for the outputs sent so far. Writing it (:meth:`_write`) needs no lock
        and waits for those acks first: a checkpoint never covers an offset whose outputs the
        broker has not acknowledged."""
        commits, saves = {}, []
        for p in list(self.dirty) if partitions is None else [p for p in partitions if p in self.dirty]:
            core = self.cores.get(p)
            pos = {tp: o for tp, o in self.positions.items() if tp.partition == p}
            if core is None or not pos:
                continue
            if self.checkpoints:
                offsets: dict[str, Any] = {tp.topic: o for tp, o in pos.items()}
                if self.cluster:
                    offsets[CLUSTER_KEY] = self.cluster
                saves.append((p, offsets, core))
            commits.update(pos)
            for tp in pos:  # after a topic vanished: this checkpoint holds a position in the new log
                if tp.topic in self._reanchored:
                    self._reanchored[tp.topic].add(p)
        if saves:  # the lock is held, so no batch changes a core meanwhile. A small snapshot is
            # taken on the loop; a large one (its last took ≥ INLINE_SNAPSHOT_S of CPU) in a thread,
            # so the other stages, the HTTP endpoints and the heartbeats go on meanwhile
            cores = [c for _, _, c in saves]
            if self._snapshot_cpu < INLINE_SNAPSHOT_S:
                states, self._snapshot_cpu = _snapshots(cores)
            else:
                states, self._snapshot_cpu = await asyncio.to_thread(_snapshots, cores)
            saves = [(p, o, state) for (p, o, _), state in zip(saves, states, strict=True)]
        self.dirty.difference_update(tp.partition for tp in commits)
        self._last_ckpt = time.monotonic()
        self._checkpointed.update(dict.fromkeys((tp.partition for tp in commits), self._last_ckpt))
        return saves, commits, list(self._unacked)

    async def _write(self, checkpoint: Taken) -> None:
        """Wait for the acks of every output sent before the checkpoint was taken (one that failed
        fails the stage: nothing is saved), then save its state with its offsets, then commit
        those offsets (never the other way round). Not written or not committed: its partitions
        are dirty again."""
        saves, commits, acks = checkpoint
        for ack in acks:
            await ack
        if self.journal is not None:
            await asyncio.sleep(0)  # the acks' callbacks journal what they carried: let them run
            if not self._flush_journal():  # what this checkpoint covers is not all in the log yet
                self.dirty.update(tp.partition for tp in commits if tp.partition in self.cores)
                return
        try:
            if saves:
                await self.checkpoints.save_many(saves)
        except CheckpointUnavailable as e:  # the state is kept; nothing is committed
            log.warning("%s: checkpoint not written, offsets not committed (retried): %s", self.name, e)
            self.dirty.update(tp.partition for tp in commits if tp.partition in self.cores)
            if self._unsaved_since is None:
                self._unsaved_since = time.time()
            self.health.condition(
                f"checkpoint:{self.name}",
                f"stage {self.name}: checkpoints not written since "
                f"{utc_second(self._unsaved_since)} ({e}); "
                "it goes on, and a restart now would redo the work since its last checkpoint",
            )
            return
        if saves and self._unsaved_since is not None:
            log.warning(
                "%s: checkpoints written again after %.0f s", self.name, time.time() - self._unsaved_since
            )
            self._unsaved_since = None
            self.health.condition(f"checkpoint:{self.name}", None)
        if commits:
            try:
                await self.consumer.commit(commits)
            except Exception as e:  # e.g. during a rebalance: the checkpoint files still hold
                log.warning("%s: commit failed: %s", self.name, e)
                self.dirty.update(tp.partition for tp in commits if tp.partition in self.cores)

    # -- the loop --------------------------------------------------------------------------
    async def _run(self) -> None:
        consumer = self.consumer
        await consumer.start()  # here, not in on_start: stages join their groups concurrently
        self._consumer_started = True
        while not self.should_stop:
            if self.failed is not None:  # a rebalance listener found it: crash (see _guard)
                raise self.failed
            if self.health.holding:  # wrong topic layout (see streams.guard): consume nothing
                await asyncio.sleep(0.5)
                continue
            t0 = time.perf_counter()
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=self.max_records)
            except Exception as e:  # broker hiccup: log, back off, keep going
                log.warning("%s: fetch failed: %s", self.name, e)
                await asyncio.sleep(0.5)
                continue
            if self.times:
                self._fetched(batches, t0)
            async with self._lock:
                if batches:
                    await self._process(batches)
                else:
                    self.backlog = False
                due = self._due() if self._writing is None or self._writing.done() else None
                if due:  # one checkpoint written at a time, in order; the loop goes on meanwhile
                    t0 = time.perf_counter()
                    await self._written()
                    self._writing = asyncio.ensure_future(self._write(await self._take(due)))
                    if self.times:
                        self.times.add("take", (time.perf_counter() - t0) * 1000)
            if self.times:
                self.times.flush()

    def _due(self) -> list[int] | None:
        """The partition to checkpoint now, if any. Checkpoints are staggered: each partition is
        checkpointed ``checkpoint_s`` after its last checkpoint, and at most one partition every
        ``checkpoint_s / partitions``, so the loop pauses for one core's snapshot at a time
        (spread over the interval), not for all of them at once."""
        now = time.monotonic()
        if not self.dirty or now - self._last_ckpt < self.checkpoint_s / max(1, len(self.cores)):
            return None
        at = self._checkpointed
        p = min(self.dirty, key=lambda p: at.get(p, 0.0))
        return [p] if now - at.get(p, 0.0) >= self.checkpoint_s else None

    def _fetched(self, batches: dict[TopicPartition, list[Any]], t0: float) -> None:
        times, wall = self.times, time.time() * 1000
        times.add("fetch", (time.perf_counter() - t0) * 1000)
        times.add("records", sum(len(x) for x in batches.values()))
        for records in batches.values():
            if records and isinstance(records[0].timestamp, int) and records[0].timestamp > 0:
                times.add("age", wall - records[0].timestamp)

    async def _process(self, batches: dict[TopicPartition, list[Any]]) -> None:
        t0 = time.perf_counter()
        now = self.clock()
        outs: list[Out] = []
        slices: list[tuple[list[Any], list[Out]]] = []  # (records, their outputs): metrics
        advanced: dict[TopicPartition, int] = {}
        by_topic: dict[str, int] = {}
        n = 0
        assigned = self.consumer.assignment()
        for tp, records in sorted(batches.items(), key=lambda kv: (kv[0].partition, kv[0].topic)):
            if tp not in assigned:  # revoked while this batch was being fetched: not ours
                continue
            core = self.cores.get(tp.partition)
            if core is None:
                raise RuntimeError(f"{self.name}: records for {tp} but no state for it")
            # a fetch that raced a rebalance may hold records already applied: skip them
            expected = self.positions.get(tp, 0)
            records = [r for r in records if r.offset >= expected]
            if not records:
                continue
            aprocess = getattr(core, "aprocess", None)
            if aprocess:
                produced = await self._sink_apply(aprocess, records, now, tp)
                if produced is None:  # stopping while its database is down: these stay unapplied
                    return
            else:
                produced = core.process(records, now)
            outs.extend(produced)
            slices.append((records, produced))
            advanced[tp] = records[-1].offset + 1
            n += len(records)
            self.processed_by_topic[tp.topic] = self.processed_by_topic.get(tp.topic, 0) + len(records)
            by_topic[tp.topic] = by_topic.get(tp.topic, 0) + len(records)
        t1 = time.perf_counter()
        await self._produce(outs, slices)
        if self.times:
            self.times.add("process", (t1 - t0) * 1000)
            self.times.add("send", (time.perf_counter() - t1) * 1000)
            self.times.add("outputs", len(outs))
        # the cores have applied these records: the positions move on (their outputs may still
        # await their acks: a checkpoint waits for those before it saves these positions)
        self.positions.update(advanced)
        self.dirty.update(tp.partition for tp in advanced)
        self.backlog = n >= self.max_records
        self.processed += n
        STAGE_RECORDS.labels(self.name).inc(n)
        for topic, k in by_topic.items():  # the fused stage: ingest's records count for ingest too
            label = self.topic_stages.get(topic)
            if label and label != self.name:
                STAGE_RECORDS.labels(label).inc(k)
        STAGE_BATCH.labels(self.name).observe(time.perf_counter() - t0)

    async def _sink_apply(
        self, aprocess: Callable[..., Any], records: list[Any], now: float, tp: TopicPartition
    ) -> list[Out] | None:
        """``aprocess(records, now)`` of a sink core, tried again while its database cannot be
        reached (``SinkUnavailable``: a PostgreSQL restart, a full disk): the records are held,
        not skipped, and applied once it is back; ``/health`` names the outage meanwhile and the
        process's other stages go on. None if the worker stops first (nothing was applied: a
        sink core has no state but its database, so the checkpoint keeps the records unread)."""
        delay, since = 0.5, None
        while True:
            try:
                produced = await self._sink_call(aprocess, records, now, tp)
                if produced is None:
                    return None
            except SinkUnavailable as e:
                if since is None:
                    since = time.time()
                    log.error(
                        "%s: %s; its records wait on %s and are applied once it is back",
                        self.name,
                        e,
                        tp.topic,
                    )
                self.health.condition(
                    f"sink:{self.name}",
                    f"stage {self.name}: {e} (since "
                    f"{utc_second(since)}); its records wait on "
                    f"{tp.topic} and are applied once it is back",
                )
                await self.sleep(delay)
                if self.should_stop:
                    return None
                delay = min(delay * 2, 5.0)
                continue
            if since is not None:
                log.warning(
                    "%s: its database is back after %.0f s: applying what waited",
                    self.name,
                    time.time() - since,
                )
            self.health.condition(f"sink:{self.name}", None)
            return produced

    async def _sink_call(
        self, aprocess: Callable[..., Any], records: list[Any], now: float, tp: TopicPartition
    ) -> list[Out] | None:
        """One ``aprocess`` call, watched: a database that does not answer within ``SINK_SLOW_S``
        (a server frozen, or unreachable without a word until the connection's own timeouts end
        it) is named in ``/health`` while the call goes on; None if the worker stops first (the
        call is left to its thread: a sink core's writes are idempotent)."""
        call = asyncio.ensure_future(aprocess(records, now))
        stopped = asyncio.ensure_future(self._stopped.wait())
        t0 = time.time()
        try:
            while True:
                done, _ = await asyncio.wait(
                    {call, stopped}, timeout=SINK_SLOW_S, return_when=asyncio.FIRST_COMPLETED
                )
                if call in done:
                    return call.result()
                if stopped in done:
                    call.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved
                    return None
                self.health.condition(
                    f"sink:{self.name}",
                    f"stage {self.name}: its database has not answered for {time.time() - t0:.0f} s (since "
                    f"{utc_second(t0)}); its records wait on {tp.topic}",
                )
        finally:
            stopped.cancel()

    async def _produce(
        self, outs: list[Out], slices: list[tuple[list[Any], list[Out]]] | None = None
    ) -> None:
        """Send ``outs`` without waiting for their acks (a checkpoint waits for them; the loop goes on
        with the next batch meanwhile, at most ``max_unacked`` batches ahead). The producer keeps
        each partition's records in the order sent (one request in flight per broker), so the
        outputs keep their order. Large batches go as per-partition record batches (the
        producer's per-message path costs about twice the CPU); partitions are chosen as the
        producer's default partitioner chooses them for ``send`` (``streams.partition``). ``slices`` (records, their outputs) feed
        the latency metrics once acknowledged."""
        self._reap()
        if not outs:
            if slices:
                metrics.batch_done(self.name, slices)
            return
        counts: dict[str, int] = {}
        for o in outs:
            counts[o.topic] = counts.get(o.topic, 0) + 1
        if len(outs) < 64:
            send = self.producer.send
            futures = [
                await send(
                    f"{self.prefix}.{o.topic}",
                    o.value,
                    key=o.key,
                    headers=o.headers or None,
                    timestamp_ms=o.timestamp,
                )
                for o in outs
            ]
            carried = [[o] for o in outs] if self.journal is not None else None
        else:
            futures, carried = await self._send_batches(outs, counts)
        acked = asyncio.gather(*futures)
        sent = time.perf_counter()
        # (registered before any checkpoint awaits it: journaled before a checkpoint covers them)
        acked.add_done_callback(lambda f: self._on_acked(f, counts, slices, sent, carried))
        self._unacked.append(acked)
        while len(self._unacked) > self.max_unacked:
            await self._unacked[0]
            self._reap()

    def _on_acked(
        self,
        acked: asyncio.Future[Any],
        counts: dict[str, int],
        slices: list[tuple[list[Any], list[Out]]] | None,
        sent: float,
        carried: list[list[Out]] | None = None,
    ) -> None:
        if acked.cancelled() or acked.exception() is not None:
            return  # raised by _reap, or by the checkpoint that awaits it
        if self.journal is not None and carried is not None:
            self._journal(acked.result(), carried)
        if self.times:
            self.times.add("ack", (time.perf_counter() - sent) * 1000)
        for topic, c in counts.items():
            STAGE_OUTPUTS.labels(self.name, topic).inc(c)
        if slices:
            metrics.batch_done(self.name, slices)  # latency, alarms and incidents (streams.metrics)

    def _journal(self, results: list[Any], carried: list[list[Out]]) -> None:
        """Keep the acknowledged outputs to the log's topics in the ingest log (each future's
        records have consecutive offsets from its result's)."""
        topics = self.journal.topics
        entries = [
            Entry(md.topic, md.partition, md.offset + j, o.key, o.value, list(o.headers or ()))
            for md, outs in zip(results, carried, strict=True)
            if md is not None and md.topic in topics
            for j, o in enumerate(outs)
            if o.journal
        ]
        if entries:
            self._journal_pending += entries
            self._flush_journal()

    def _flush_journal(self) -> bool:
        """Write what the journal holds pending; False if it cannot (the disk is full: kept in
        memory, tried again, and no checkpoint is written until they are on disk)."""
        if not self._journal_pending:
            return True
        try:
            self.journal.append_many(self._journal_pending)
        except OSError as e:
            log.error(
                "%s: %d handed-over record(s) not yet kept in the ingest log (no checkpoint until they "
                "are): %s",
                self.name,
                len(self._journal_pending),
                e,
            )
            return False
        self._journal_pending = []
        return True

    def _reap(self) -> None:
        """Forget the oldest sends the broker has acknowledged; one that failed fails the stage."""
        unacked = self._unacked
        while unacked and unacked[0].done():
            unacked.popleft().result()

    async def _send_batches(
        self, outs: list[Out], counts: dict[str, int]
    ) -> tuple[list[Any], list[list[Out]] | None]:
        """The futures of the sends, and (with a journal) the outputs each one carries."""
        producer = self.producer
        groups: dict[tuple[str, int], list[Out]] = {}
        for topic in counts:
            name = f"{self.prefix}.{topic}"
            parts = sorted(await producer.partitions_for(name))
            n, cache = len(parts), self._partitions
            for o in (o for o in outs if o.topic == topic):
                # the default partitioner hashes a key with a pure-Python murmur2 (≈ 1-2 µs):
                # entities repeat, so a key's partition is remembered (keyless: random, as send)
                part = cache.get((n, o.key)) if o.key is not None else None
                if part is None:
                    part = pick(o.key, parts)
                    if o.key is not None:
                        if len(cache) >= 200_000:
                            cache.clear()
                        cache[(n, o.key)] = part
                groups.setdefault((name, part), []).append(o)
        futures = []
        carried: list[list[Out]] = []
        for (name, part), items in groups.items():
            batch = producer.create_batch()
            held: list[Out] = []
            for o in items:
                if batch.append(key=o.key, value=o.value, timestamp=o.timestamp, headers=o.headers) is None:
                    futures.append(await producer.send_batch(batch, name, partition=part))
                    carried.append(held)
                    batch, held = producer.create_batch(), []
                    if (
                        batch.append(key=o.key, value=o.value, timestamp=o.timestamp, headers=o.headers)
                        is None
                    ):
                        # larger than a batch on its own: the per-message path takes it
                        futures.append(
                            await producer.send(
                                name,
                                o.value,
                                key=o.key,
                                partition=part,
                                headers=o.headers or None,
                                timestamp_ms=o.timestamp,
                            )
                        )
                        carried.append([o])
                        continue
                held.append(o)
            if batch.record_count():
                futures.append(await producer.send_batch(batch, name, partition=part))
                carried.append(held)
        return futures, carried if self.journal is not None else None

    async def _ticker(self) -> None:
        while not self.should_stop:
            await asyncio.sleep(self.tick_s)
            async with self._lock:
                now, outs = self.clock(), []
                for p, core in self.cores.items():
                    produced = core.tick(now, backlog=self.backlog)
                    if produced:
                        self.dirty.add(p)
                        outs.extend(produced)
                await self._produce(outs)
                metrics.ticked(self.name, outs)
