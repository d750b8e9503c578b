"""Where a stage keeps its checkpoints (``streams.stage``): per stage partition, the offsets its
state corresponds to (one per source topic, and the broker's cluster id under ``@cluster``) and
the core's snapshot. One setting chooses the store, ``ATALAIA_STATE_STORE``
(``streams.kafka_config.state_store``):

* ``file`` — :class:`Checkpoints`, ``<data_dir>/state/<stage>/p<partition>.ckpt``, written
  atomically (temporary file, fsync, rename). The default on the embedded broker (Tansu keeps
  topics in memory and does not compact) and for ``atalaia up``: one machine anyway.
* ``kafka`` — :class:`KafkaCheckpoints`, the compacted topic ``<prefix>.state.<stage>``. The
  default on Apache Kafka: a partition that moves to a worker on another machine resumes with
  its state, without a shared volume.

Records of ``<prefix>.state.<stage>`` (stage partition ``p`` is written to state partition
``p mod N``, N = the state topic's partition count, created as the stage's source topics'):

* key ``b"<p>"`` — the checkpoint *head*: ``>I`` length of a JSON header, the header
  ``{"offsets": {topic: offset, ..., "@cluster": id}, "codec": "zlib", "gen": id, "chunks": k}``,
  then, when ``k == 0``, the zlib-compressed snapshot itself.
* key ``b"<p>/<gen>/<i>"`` (``i < k``) — when the compressed snapshot is larger than
  :data:`CHUNK_BYTES` (512 KiB, half of the broker's default ``message.max.bytes``), its
  ``i``-th chunk. Large snapshots are compressed *and* chunked, so no record exceeds the broker's
  maximum message size whatever the state's size.

A checkpoint is written chunks first, then (once they are acknowledged) its head, then
tombstones for the chunks of the generation it replaces: an interrupted write leaves the
previous head and its chunks intact, and the chunks nobody uses are deleted at the next save.
On assignment the stage reads its state partitions to their end and takes the latest record per
key (:func:`latest`, :func:`decode`); compaction keeps exactly those.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
import uuid
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

CLUSTER_KEY = "@cluster"  # in a checkpoint's offsets: the cluster id of the broker they refer to
# in a checkpoint's offsets: re-anchored to a new (empty) embedded broker before the stage started,
# so what was in flight was lost as in a broker reset (the stage announces its open state again)
REANCHORED_KEY = "@reanchored"
CHUNK_BYTES = 512 * 1024
# compacted; segments roll within 10 min so the cleaner can compact them (the active segment is
# never compacted: this bounds what a worker taking partitions over reads beyond the latest heads)
STATE_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": str(10 * 60 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
}

Checkpoint = tuple[dict[str, Any], bytes]  # (offsets, state)
# (partition, offsets, state): the state as bytes (the stage snapshots its cores under its lock,
# then writes without it), or an object whose snapshot() gives them (taken off the loop here)
Save = tuple[int, dict[str, Any], Any]


def _state(state: Any) -> bytes:
    return state if isinstance(state, (bytes, bytearray)) else state.snapshot()


class CheckpointUnavailable(RuntimeError):
    """The store cannot take a checkpoint now (the broker is unreachable or lost the topic, the
    data directory is full or read-only): the stage keeps its state, commits nothing and tries
    again at the next checkpoint."""


def state_topic(prefix: str, stage: str) -> str:
    return f"{prefix}.state.{stage}"


def _pack(header: dict[str, Any], payload: bytes) -> bytes:
    head = orjson.dumps(header)
    return struct.pack(">I", len(head)) + head + payload


def atomic_write(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` or what it held before, whatever happens: a temporary file,
    fsync, rename. Readable by the worker's user only (0600, whatever the umask): a stage's state
    holds operators' names and comments, warning drafts, the commands put back after a crash."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # (a temporary file left by a kill keeps its old mode otherwise)
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk: the part written is given back, the old file stays
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_offsets(path: Path) -> dict[str, Any] | None:
    """A checkpoint file's offsets without its state (the header of :func:`_pack`); None when
    there is none or it cannot be read."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack(">I", f.read(4))
            head = orjson.loads(f.read(n))
    except (FileNotFoundError, struct.error, ValueError):
        return None
    return head if isinstance(head, dict) else None


def _unpack(data: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack(">I", data[:4])
    return orjson.loads(data[4 : 4 + n]), data[4 + n :]


class Checkpoints:
    """Atomic per-partition checkpoint files: ``<dir>/p<partition>.ckpt`` = offsets + state.

    A core may read the same partition number of several topics (incidents read alarms and
    commands), so the checkpoint holds one offset per topic."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.where = str(directory)

    def path(self, partition: int) -> Path:
        return self.dir / f"p{partition}.ckpt"

    def load(self, partition: int) -> Checkpoint | None:
        try:
            data = self.path(partition).read_bytes()
        except FileNotFoundError:
            return None
        return _unpack(data)

    def save(self, partition: int, offsets: dict[str, Any], state: bytes) -> None:
        atomic_write(self.path(partition), _pack(offsets, state))

    # the stage's interface (shared with KafkaCheckpoints): files are read and written off the loop
    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def load_many(self, partitions: list[int]) -> dict[int, Checkpoint]:
        found = await asyncio.to_thread(lambda: {p: self.load(p) for p in partitions})
        return {p: c for p, c in found.items() if c is not None}

    async def save_many(self, saves: list[Save]) -> None:
        """Raises :class:`CheckpointUnavailable` when the files cannot be written (a full or
        read-only disk, permissions): the stage keeps its state and tries again later."""
        try:
            await asyncio.to_thread(lambda: [self.save(p, o, _state(c)) for p, o, c in saves])
        except OSError as e:
            raise CheckpointUnavailable(f"checkpoint files in {self.dir} cannot be written: {e}") from e


# -- the state topic's records (pure: tested without a broker) ---------------------------------
def head_key(partition: int) -> bytes:
    return b"%d" % partition


def chunk_key(partition: int, gen: str, i: int) -> bytes:
    return b"%d/%s/%d" % (partition, gen.encode(), i)


def encode(
    partition: int, offsets: dict[str, Any], state: bytes, gen: str, chunk_bytes: int = CHUNK_BYTES
) -> list[tuple[bytes, bytes]]:
    """The records of one checkpoint in write order: its chunks (if any), then its head."""
    blob = zlib.compress(state, 1)
    header = {"offsets": offsets, "codec": "zlib", "gen": gen}
    if len(blob) <= chunk_bytes:
        return [(head_key(partition), _pack({**header, "chunks": 0}, blob))]
    parts = [blob[i : i + chunk_bytes] for i in range(0, len(blob), chunk_bytes)]
    chunks = [(chunk_key(partition, gen, i), part) for i, part in enumerate(parts)]
    return [*chunks, (head_key(partition), _pack({**header, "chunks": len(parts)}, b""))]


def latest(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[bytes, bytes]:
    """The latest value per key of records in log order (a tombstone deletes its key): what
    compaction keeps."""
    out: dict[bytes, bytes] = {}
    for key, value in records:
        if key is None:
            continue
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def decode(records: dict[bytes, bytes], partition: int) -> tuple[Checkpoint | None, list[bytes]]:
    """The checkpoint of ``partition`` in the latest records per key, and the keys of its chunks
    that no checkpoint uses (an interrupted or superseded write's). Raises ValueError when the
    head's chunks are missing."""
    prefix = b"%d/" % partition
    chunks = [k for k in records if k.startswith(prefix)]
    data = records.get(head_key(partition))
    if data is None:
        return None, chunks
    header, payload = _unpack(data)
    used = [chunk_key(partition, header["gen"], i) for i in range(header["chunks"])]
    if used:
        missing = [k for k in used if k not in records]
        if missing:
            raise ValueError(f"the checkpoint of partition {partition} lacks its chunks {missing}")
        payload = b"".join(records[k] for k in used)
    if header.get("codec") != "zlib":
        raise ValueError(
            f"the checkpoint of partition {partition} has an unknown codec {header.get('codec')!r}"
        )
    return (header["offsets"], zlib.decompress(payload)), sorted(set(chunks) - set(used))


class KafkaCheckpoints:
    """Checkpoints in the compacted topic ``topic`` (see the module docstring). ``producer`` (the
    stage's) is set before the first save."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        sources: list[str],
        *,
        chunk_bytes: int = CHUNK_BYTES,
        timeout_s: float = 10.0,
        replicas: int = 1,
    ) -> None:
        self.bootstrap, self.topic, self.sources = bootstrap, topic, sources
        self.replicas = replicas
        self.chunk_bytes, self.timeout_s = chunk_bytes, timeout_s
        self.where = topic
        self.producer: Any = None
        self.partitions = 1  # of the state topic, known after start()
        self.reader: Any = None
        self.live: dict[int, list[bytes]] = {}  # partition -> chunk keys its latest head uses
        self.stale: dict[int, set[bytes]] = {}  # partition -> chunk keys to delete at the next save
        self.written: dict[int, list[tuple[bytes, bytes]]] = {}  # partition -> its last checkpoint

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        from atalaia.streams.broker import create_topics, topic_partitions
        from atalaia.streams.kafka_config import client_options

        admin = AIOKafkaAdminClient(**client_options(self.bootstrap), request_timeout_ms=5000)
        await admin.start()
        try:
            n = max((await topic_partitions(admin, self.sources)).values(), default=1)
            deadline = time.monotonic() + 3 * self.timeout_s
            while True:
                found = await create_topics(admin, {self.topic: n}, STATE_TOPIC_CONFIG, self.replicas)
                if self.topic in found:
                    break
                if time.monotonic() > deadline:  # created, never visible in the metadata
                    raise RuntimeError(f"{self.topic}: created but not visible")
                await asyncio.sleep(0.2)
            self.partitions = found[self.topic]
        finally:
            await admin.close()
        self.reader = AIOKafkaConsumer(
            **client_options(self.bootstrap),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=4 << 20,
        )
        await self.reader.start()

    async def stop(self) -> None:
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await self.reader.stop()

    def _tp(self, partition: int) -> Any:
        from aiokafka import TopicPartition

        return TopicPartition(self.topic, partition % self.partitions)

    async def load_many(self, partitions: list[int]) -> dict[int, Checkpoint]:
        """Read the state partitions of ``partitions`` to their end; the latest checkpoint of
        each (else the last one this process wrote: the broker lost the topic)."""
        raw = await self._read({self._tp(p) for p in partitions})
        return await asyncio.to_thread(self._restore, raw, partitions)  # decompressing: off the loop

    def _restore(
        self, raw: list[tuple[bytes | None, bytes | None]], partitions: list[int]
    ) -> dict[int, Checkpoint]:
        records = latest(raw)
        out = {}
        for p in partitions:
            ckpt, unused = decode(records, p)
            if ckpt is None and p in self.written:
                ckpt, _ = decode(latest(self.written[p]), p)
            self.stale.setdefault(p, set()).update(unused)
            self.live[p] = [k for k in records if k.startswith(b"%d/" % p) and k not in unused]
            if ckpt is not None:
                out[p] = ckpt
        return out

    async def _read(self, tps: set[Any]) -> list[tuple[bytes | None, bytes | None]]:
        """The records (key, value) of ``tps``, read from their beginning to their end. Tansu
        reports an end as the last batch's base offset + 1: reaching it means that batch was
        fetched whole, so the loop also ends there."""
        reader = self.reader
        reader.assign(sorted(tps))
        await reader.seek_to_beginning(*tps)
        begin, end = await reader.beginning_offsets(list(tps)), await reader.end_offsets(list(tps))
        pending = {tp for tp in tps if end[tp] > begin[tp]}
        out: list[tuple[bytes | None, bytes | None]] = []
        deadline = time.monotonic() + 6 * self.timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.topic}: could not read {sorted(pending)} to their end")
            for records in (await reader.getmany(*pending, timeout_ms=200)).values():
                out.extend((r.key, r.value) for r in records)
            for tp in list(pending):
                if await reader.position(tp) >= end[tp]:
                    pending.discard(tp)
        return out

    async def save_many(self, saves: list[Save]) -> None:
        """Snapshot, compress and chunk off the event loop, then produce: chunks, heads, and the
        tombstones of what the new heads replace. Raises :class:`CheckpointUnavailable`."""
        gen = uuid.uuid4().hex[:12]
        encoded = await asyncio.to_thread(
            lambda: [(p, encode(p, o, _state(c), gen, self.chunk_bytes)) for p, o, c in saves]
        )
        for p, recs in encoded:  # until its head is written, a new chunk is one nobody uses
            self.stale.setdefault(p, set()).update(k for k, _ in recs[:-1])
        size = sum(len(v) for _, recs in encoded for _, v in recs)
        try:
            async with asyncio.timeout(self.timeout_s + size / 1e6):  # and 1 s per MB
                await self._send([(p, k, v) for p, recs in encoded for k, v in recs[:-1]])
                await self._send([(p, *recs[-1]) for p, recs in encoded])
                for p, recs in encoded:
                    new = [k for k, _ in recs[:-1]]
                    self.stale[p] = (self.stale[p] | set(self.live.get(p, ()))) - set(new)
                    self.live[p], self.written[p] = new, recs
                dead = [(p, k, None) for p, _ in encoded for k in sorted(self.stale[p])]
                await self._send(dead)
                for p, _ in encoded:
                    self.stale[p].clear()
        except Exception as e:
            raise CheckpointUnavailable(f"{self.topic}: {type(e).__name__}: {e}") from e

    async def _send(self, records: list[tuple[int, bytes, bytes | None]]) -> None:
        send = self.producer.send
        futures = [await send(self.topic, v, key=k, partition=self._tp(p).partition) for p, k, v in records]
        await asyncio.gather(*futures)
