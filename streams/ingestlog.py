"""The ingest log: every event the HTTP and MQTT endpoints accepted onto the embedded broker, every
command the console answered for (an acknowledgement, a silence, a warning's approval or issue),
every observation a stage handed to another partition's (or the label-keyed) rules and every
warning draft the escalation stage asked for, kept in the data directory until every stage that
reads it has checkpointed past it.

The embedded broker keeps its topics in memory. Before this log, a ``kill -9`` (or a power cut)
of ``atalaia up`` lost the events it had already answered ``200`` for but whose stage had not
checkpointed them yet: the next run's broker is empty. Downstream stages had sometimes seen the
alarm those events raised, the rules stage had not, so a sensor got a second incident and a
second page when it next reported. Now the next ``atalaia up`` puts the events its stages had not
checkpointed back on the new broker, in their order, before any stage starts
(:func:`replay`), and points each stage's checkpoint at the first of them it had not read: the
stages compute exactly what they would have, with the same deterministic ids, so downstream
takes what it missed and ignores what it had.

Layout (``<data_dir>/ingest-log/``):

* one directory per embedded broker's life, ``<n>-<cluster id>`` (``n`` counts lives; the last
  is the live one);
* in it, segments ``<pid>-<writer>-<k>.open`` being written by one writer, ``.log`` once closed
  (rolled at :data:`SEGMENT_BYTES` or after :data:`ROLL_S`), and ``replay.log``, the records
  carried over from earlier lives, under their offsets on this life's broker (with
  ``anchors.json``, where each stage starts on it: a start-up killed half-way is finished by the
  next, :func:`roll_forward`);
* a record: ``>II`` (payload length, CRC-32 of the payload), then the msgpack payload
  ``[topic, partition, offset, key, value, headers]``. A torn last record (the process was killed in
  the middle of writing it) ends the segment.

A record is written after the broker acknowledged it (its partition and offset are known) and
before the endpoint answers, so an answered event is on disk (in the OS's page cache: a killed
process loses nothing; a power cut may lose the last few seconds, as a broker with
``flush.ms`` unset would). A write that fails (disk full) undoes itself and the endpoint
answers 503: the sender sends again, nothing is answered that is not kept.

Closed segments are deleted once every stage reading the events has checkpointed past all their
records (:func:`safe_offsets`, from the checkpoint files' headers), by the process that writes
them, every :data:`TRIM_S`. Only with the file checkpoint store (the embedded broker's default):
with Apache Kafka the topics themselves are durable and there is no log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import orjson

from atalaia.streams.checkpoints import CLUSTER_KEY, atomic_write, read_offsets

log = logging.getLogger(__name__)

ROOT = "ingest-log"
REPLAY = "replay.log"
SEGMENT_BYTES = 64 << 20
ROLL_S = 20.0  # an open segment older than this is closed at its next write or trim (so it can go)
TRIM_S = 10.0
WARN_BYTES = 1 << 30  # one warning when the kept log grows past this (a stage does not checkpoint)
_HEAD = struct.Struct(">II")
_ENC = msgspec.msgpack.Encoder()


class IngestLogError(OSError):
    """The ingest log could not keep an accepted event (disk full, no permission): the endpoint
    answers 503 and the sender sends it again."""


@dataclass(frozen=True)
class Entry:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


TP = tuple[str, int]  # (topic, partition)


def encode(e: Entry) -> bytes:
    payload = _ENC.encode((e.topic, e.partition, e.offset, e.key, e.value, e.headers))
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def read_segment(path: Path) -> Iterator[Entry]:
    """The records of a segment, up to its first torn or corrupt one (a killed writer's last)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    at = 0
    while at + _HEAD.size <= len(data):
        n, crc = _HEAD.unpack_from(data, at)
        payload = data[at + _HEAD.size : at + _HEAD.size + n]
        if len(payload) < n or zlib.crc32(payload) != crc:
            if at + _HEAD.size + n < len(data):  # not just a torn tail
                log.error("ingest log: %s is corrupt at byte %d: its later records are skipped", path, at)
            return
        try:
            t, p, o, k, v, h = msgspec.msgpack.decode(payload)
            yield Entry(str(t), int(p), int(o), k, v, [(str(a), bytes(b)) for a, b in h or ()])
        except (msgspec.DecodeError, TypeError, ValueError):
            log.error("ingest log: %s holds an unreadable record at byte %d: skipped", path, at)
        at += _HEAD.size + n


def segments(life: Path) -> list[Path]:
    return sorted(p for p in life.glob("*") if p.suffix in (".log", ".open"))


def lives(root: Path) -> list[Path]:
    """The lives' directories, oldest first."""

    def number(p: Path) -> int:
        head = p.name.split("-", 1)[0]
        return int(head) if head.isdigit() else -1

    return sorted((p for p in root.glob("*-*") if p.is_dir() and number(p) >= 0), key=number)


def cluster_of(life: Path) -> str:
    return life.name.split("-", 1)[1]


def _drop_earlier(root: Path) -> None:
    """Remove every life but the last (the live one)."""
    for life in lives(root)[:-1]:
        shutil.rmtree(life, ignore_errors=True)


# -- what the stages have read --------------------------------------------------------------
def declared_readers(topic: str) -> tuple[str, ...]:
    """The stages that read the console's ``commands`` whether or not they have checkpointed yet
    (the incident manager and the warnings stage: one may be far ahead of the other, which has not
    seen a command since it started). The readers of the other logged topics are known by their
    checkpoints only (their stages run fused or apart under other names)."""
    if not topic.endswith(".commands"):
        return ()
    from atalaia.streams.topology import STAGES

    return tuple(s.name for s in STAGES if "commands" in s.sources)


def positions(state_dir: Path, topic: str) -> dict[str, dict[int, tuple[str | None, int]]]:
    """stage -> partition -> (cluster, offset) of ``topic``, for every stage whose checkpoints
    read it. A stage that reads it is known by a checkpoint of one of its partitions, or declared
    (:func:`declared_readers`): one without a checkpoint has read nothing of it (``{}``)."""
    out: dict[str, dict[int, tuple[str | None, int]]] = {s: {} for s in declared_readers(topic)}
    if not state_dir.is_dir():
        return out
    for stage_dir in sorted(p for p in state_dir.iterdir() if p.is_dir()):
        found: dict[int, tuple[str | None, int]] = {}
        for f in stage_dir.glob("p*.ckpt"):
            head = read_offsets(f)
            if head is None or topic not in head or not f.stem[1:].isdigit():
                continue
            found[int(f.stem[1:])] = (head.get(CLUSTER_KEY), int(head[topic]))
        if found or stage_dir.name in out:
            out[stage_dir.name] = found
    return out


def safe_offsets(state_dir: Path, topic: str, cluster: str) -> Callable[[int], int] | None:
    """Per partition of ``topic``, the offset below which every stage reading it has
    checkpointed on the broker ``cluster``; None when no stage is known to read it (nothing of
    it may go)."""
    readers = positions(state_dir, topic)
    if not readers:
        return None

    def safe(p: int) -> int:
        return min(
            (off if cl == cluster else 0) for at in readers.values() for cl, off in [at.get(p, (None, 0))]
        )

    return safe


def enabled(settings: Any) -> bool:
    """Kept on the embedded broker with file checkpoints (``atalaia up``'s), unless switched off."""
    return bool(settings.ingest_log) and not settings.kafka and settings.state_store != "kafka"


# -- the writer (the ingest endpoints' process) -----------------------------------------------
class IngestLog:
    """Appends accepted events of one process to its segments of the live directory, and trims
    closed segments every stage has checkpointed past."""

    def __init__(self, life: Path, state_dir: Path, topics: Iterable[str]) -> None:
        self.life, self.state_dir, self.topics = life, state_dir, frozenset(topics)
        self.cluster = cluster_of(life)
        self.tag = secrets.token_hex(3)  # several writers in one process: their own segments
        self.fd: int | None = None
        self.path: Path | None = None
        self.size = 0
        self.opened = 0.0
        self.n = 0
        self._maxes: dict[str, dict[TP, int]] = {}  # closed segment -> (topic, partition) -> max offset
        self._warned = False

    @classmethod
    def for_broker(cls, settings: Any, bootstrap: str) -> IngestLog | None:
        """The log of the embedded broker ``atalaia up`` runs in this data directory, when that is
        the broker ``bootstrap`` names and stages checkpoint to files; else None."""
        from atalaia.streams.connect import announce_file

        if not enabled(settings):
            return None
        try:
            if announce_file(settings).read_text().strip() != bootstrap:
                return None
        except FileNotFoundError:
            return None
        found = lives(settings.data_dir / ROOT)  # the last is the live one (``replay`` made it)
        if not found:
            return None
        return cls(found[-1], settings.data_dir / "state", logged_topics(settings.topic_prefix))

    def append(self, e: Entry) -> None:
        self.append_bytes(encode(e))

    def append_many(self, entries: Iterable[Entry]) -> None:
        """One write for several records (a stage's acknowledged batch)."""
        data = b"".join(encode(e) for e in entries)
        if data:
            self.append_bytes(data)

    def append_bytes(self, data: bytes) -> None:
        if (
            self.fd is None
            or self.size + len(data) > SEGMENT_BYTES
            or time.monotonic() - self.opened >= ROLL_S  # (closed segments can be trimmed)
        ):
            try:
                self.roll()
            except OSError as err:  # a read-only data directory: the segment stays ``.open``
                # (read back like a closed one), the next record tries a new one
                raise IngestLogError(err.errno, f"the ingest log cannot close {self.path}: {err}") from err
            self._open()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as err:
            try:  # never leave half a record before the next one
                os.ftruncate(self.fd, self.size)
            except OSError:  # (nor write after one: the next record starts a new segment)
                self.roll()
            raise IngestLogError(
                err.errno, f"the ingest log {self.path} cannot keep the event: {err}"
            ) from err
        self.size += len(data)

    def _open(self) -> None:
        self.n += 1
        self.path = self.life / f"{os.getpid()}-{self.tag}-{self.n:06d}.open"
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise IngestLogError(err.errno, f"the ingest log cannot open {self.path}: {err}") from err
        self.size, self.opened = 0, time.monotonic()

    def roll(self) -> None:
        """Close the open segment (it may be trimmed from now on)."""
        fd, self.fd = self.fd, None
        if fd is None:
            return
        os.close(fd)
        if self.path is not None:
            if self.size:
                os.replace(self.path, self.path.with_suffix(".log"))
            else:
                self.path.unlink(missing_ok=True)

    def close(self) -> None:
        self.roll()

    def trim(self) -> int:
        """Close the open segment if it is old enough, then delete the closed segments every
        reader has checkpointed past; return how many."""
        self.roll_if_old()
        return self.trim_closed()

    def roll_if_old(self) -> None:
        if self.fd is not None and self.size and time.monotonic() - self.opened >= ROLL_S:
            self.roll()

    def trim_closed(self) -> int:
        """Delete the closed segments every reader has checkpointed past (only closed ones:
        safe in a thread while the loop appends to the open one)."""
        safe = {t: safe_offsets(self.state_dir, t, self.cluster) for t in self.topics}
        gone, kept = 0, 0
        for seg in segments(self.life):
            if seg.suffix == ".open" and not _writer_alive(seg):  # its process died (restarted by up)
                with contextlib.suppress(FileNotFoundError):
                    seg = seg.rename(seg.with_suffix(".log"))
            if seg.suffix != ".log":
                continue
            maxes = self._maxes.get(seg.name)
            if maxes is None:
                maxes = {}
                for e in read_segment(seg):
                    maxes[(e.topic, e.partition)] = max(maxes.get((e.topic, e.partition), -1), e.offset)
                self._maxes[seg.name] = maxes
            if all((f := safe.get(t)) is not None and o < f(p) for (t, p), o in maxes.items()):
                seg.unlink(missing_ok=True)
                self._maxes.pop(seg.name, None)
                gone += 1
            else:
                with contextlib.suppress(FileNotFoundError):
                    kept += seg.stat().st_size
        if kept > WARN_BYTES and not self._warned:
            self._warned = True
            log.warning(
                "ingest log: %d MiB kept in %s: a stage reading %s has not checkpointed past it",
                kept >> 20,
                self.life,
                ", ".join(sorted(self.topics)),
            )
        return gone

    async def run_trims(self) -> None:
        while True:
            await asyncio.sleep(TRIM_S)
            try:
                self.roll_if_old()  # on the loop, where append runs
                await asyncio.to_thread(self.trim_closed)
            except Exception as e:  # never the endpoint's problem: tried again
                log.warning("ingest log: trimming failed: %r", e)


def _writer_alive(seg: Path) -> bool:
    """Whether the process that writes the open segment ``seg`` (``<pid>-...``) still runs."""
    from atalaia.streams.connect import pid_alive

    head = seg.name.split("-", 1)[0]
    return not head.isdigit() or int(head) == os.getpid() or pid_alive(int(head))


# -- the next run: put back what no stage checkpointed ----------------------------------------


@dataclass
class Plan:
    """What to put back on the new broker: per (topic, partition), the records in order, and for
    each (stage, topic, partition) reading them the index of the first one that stage had not
    read."""

    records: dict[TP, list[Entry]]
    starts: dict[tuple[str, str, int], int]

    def __len__(self) -> int:
        return sum(len(v) for v in self.records.values())


def plan(root: Path, state_dir: Path) -> Plan:
    """The logged records of the earlier lives that some stage reading their topic had not
    checkpointed.

    A stage's checkpoint on the broker of life ``j`` at offset ``o`` of a topic's partition read,
    of life ``i``'s records there: all when ``i < j``, those below ``o`` when ``i == j``, none
    when ``i > j`` or when it names a broker no life here had (older than all of them: it has
    not checkpointed since their records were put back; reading again is safe, the stages drop
    observations they have seen). A stage with no checkpoint read nothing."""
    order = {cluster_of(life): i for i, life in enumerate(lives(root))}
    everything: dict[TP, list[tuple[int, Entry]]] = {}
    for i, life in enumerate(lives(root)):
        seen: set[tuple[str, int, int]] = set()
        for seg in segments(life):
            for e in read_segment(seg):
                if (e.topic, e.partition, e.offset) not in seen:  # (each is written once: belt and braces)
                    seen.add((e.topic, e.partition, e.offset))
                    everything.setdefault((e.topic, e.partition), []).append((i, e))
    readers = {t: positions(state_dir, t) for t in {t for t, _ in everything}}
    strangers = sorted(
        {
            stage
            for at in readers.values()
            for stage, ps in at.items()
            for cl, _ in ps.values()
            if cl not in order
        }
    )
    if strangers and order:
        log.warning(
            "ingest log: the checkpoints of %s name no broker the log knows: everything logged is put "
            "back for them (they drop the observations they have seen)",
            ", ".join(strangers),
        )

    def read(stage: str, t: str, p: int, i: int, offset: int) -> bool:
        cl, o = readers[t][stage].get(p, (None, 0))
        j = order.get(cl, -1)
        return i < j or (i == j and offset < o)

    records: dict[TP, list[Entry]] = {}
    starts: dict[tuple[str, str, int], int] = {}
    for (t, p), items in sorted(everything.items()):
        items.sort(key=lambda ie: (ie[0], ie[1].offset))
        stages = readers[t]
        if stages:
            items = [(i, e) for i, e in items if not all(read(s, t, p, i, e.offset) for s in stages)]
        if items:
            records[(t, p)] = [e for _, e in items]
        for s in stages:  # what a stage had read is a prefix of the (life, offset) order
            starts[(s, t, p)] = sum(1 for i, e in items if read(s, t, p, i, e.offset))
    return Plan(records, starts)


def anchors(todo: Plan, offsets: dict[TP, list[int]]) -> dict[tuple[str, str, int], int]:
    """Where each (stage, topic, partition) starts on the new broker, given the offsets the
    put-back records got there: at the first one it had not read (the smallest offset from
    there on, should the producer ever have reordered them: read again rather than skipped), or
    past them all."""
    where: dict[tuple[str, str, int], int] = {}
    for (stage, t, p), k in todo.starts.items():
        offs = offsets.get((t, p), [])
        where[(stage, t, p)] = min(offs[k:]) if k < len(offs) else (max(offs) + 1 if offs else 0)
    return where


async def _produce(bootstrap: str, records: dict[TP, list[Entry]]) -> dict[TP, list[int]]:
    from aiokafka import AIOKafkaProducer

    from atalaia.streams.kafka_config import client_options

    producer = AIOKafkaProducer(**client_options(bootstrap), linger_ms=5, max_request_size=8 << 20)
    await producer.start()
    try:
        out: dict[TP, list[int]] = {}
        for (t, p), items in records.items():
            offsets: list[int] = []
            for k in range(0, len(items), 2000):
                futures = [
                    await producer.send(t, e.value, key=e.key, partition=p, headers=e.headers or None)
                    for e in items[k : k + 2000]
                ]
                offsets += [(await f).offset for f in futures]
            out[(t, p)] = offsets
        return out
    finally:
        await producer.stop()


def new_life(root: Path, cluster: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    old = lives(root)
    n = int(old[-1].name.split("-", 1)[0]) + 1 if old else 0
    life = root / f"{n:06d}-{cluster}"
    life.mkdir()
    return life


def _write_replay(life: Path, records: dict[TP, list[Entry]], offsets: dict[TP, list[int]]) -> None:
    atomic_write(
        life / REPLAY,
        b"".join(
            encode(Entry(t, p, o, e.key, e.value, e.headers))
            for (t, p), items in records.items()
            for e, o in zip(items, offsets[(t, p)], strict=True)
        ),
    )


ANCHORS = "anchors.json"


def _write_anchors(life: Path, where: dict[tuple[str, str, int], int]) -> None:
    atomic_write(life / ANCHORS, orjson.dumps([[s, t, p, o] for (s, t, p), o in where.items()]))


def roll_forward(root: Path, state_dir: Path) -> None:
    """Finish a start-up that was killed after it put records back (the last life has its
    ``replay.log``) but before every checkpoint pointed at them and the earlier lives were
    removed: the checkpoints still naming an earlier broker are pointed where that start-up
    computed, so the earlier lives' records are not put back a second time."""
    from atalaia.streams.connect import reanchor_checkpoints

    found = lives(root)
    if len(found) < 2 or not (found[-1] / REPLAY).is_file() or not (found[-1] / ANCHORS).is_file():
        return
    last = found[-1]
    cluster = cluster_of(last)
    where = {(s, t, int(p)): int(o) for s, t, p, o in orjson.loads((last / ANCHORS).read_bytes())}
    behind = {
        stage
        for t in {t for _, t, _ in where}
        for stage, at in positions(state_dir, t).items()
        if any(cl != cluster for cl, _ in at.values())
    }
    if behind:
        log.warning(
            "ingest log: the previous start-up was stopped while moving %s to the broker %s: finished now",
            ", ".join(sorted(behind)),
            cluster,
        )
        reanchor_checkpoints(state_dir, cluster, where, only_not=cluster)
    _drop_earlier(root)


def logged_topics(prefix: str) -> tuple[str, ...]:
    """The topics the log keeps: what the endpoints accepted (events; the console's commands,
    answered once the incident manager or the warnings stage applied them), the observations
    the stages that read it hand to another partition's (or the label-keyed) rules (a stage
    checkpoints the event once those are acknowledged, not once their reader has checkpointed
    them), and the warning drafts the escalation stage asks for on ``commands``."""
    return tuple(f"{prefix}.{t}" for t in ("events", "commands", "observations", "shared-observations"))


def replay(
    settings: Any,
    bootstrap: str,
    cluster: str,
    produce: Callable[[dict[TP, list[Entry]]], dict[TP, list[int]]] | None = None,
) -> dict[tuple[str, str, int], int]:
    """On a new embedded broker (``cluster``), before any stage starts: put back what the
    earlier lives' stages had not checkpointed, start this life's log with it, and return where
    each (stage, topic, partition) reading it starts on the new broker (for
    ``connect.reanchor_checkpoints``). The earlier lives' logs are removed by
    :func:`forget_earlier` once the checkpoints point here."""
    root = settings.data_dir / ROOT
    if root.is_dir():
        roll_forward(root, settings.data_dir / "state")
    todo = plan(root, settings.data_dir / "state") if root.is_dir() else Plan({}, {})
    life = new_life(root, cluster)
    if not len(todo):
        return {}
    if produce is None:  # (a test gives its own broker)
        from atalaia.streams.broker import ensure_topics

        asyncio.run(ensure_topics(bootstrap, settings.topic_prefix, settings.partitions, replicas=1))

        def produce(records: dict[TP, list[Entry]]) -> dict[TP, list[int]]:
            return asyncio.run(_produce(bootstrap, records))

    records = {tp: items for tp, items in todo.records.items() if tp[1] < settings.partitions}
    dropped = len(todo) - sum(len(v) for v in records.values())
    if dropped:  # the partition count was lowered between runs: they have no partition to go to
        log.error(
            "ingest log: %d record(s) of partitions beyond ATALAIA_PARTITIONS=%d not put back",
            dropped,
            settings.partitions,
        )
    t0 = time.monotonic()
    offsets = produce(records)
    where = anchors(todo, offsets)
    # where the stages start here, then (the commit point) the records: before the checkpoints
    # point here, so a kill from now on loses nothing and the next start finishes the move
    try:
        _write_anchors(life, where)
        _write_replay(life, records, offsets)
    except OSError as e:  # (a full disk): the earlier lives keep them; nothing is moved
        shutil.rmtree(life, ignore_errors=True)
        import click

        raise click.ClickException(
            f"the ingest log cannot keep the {len(todo)} accepted record(s) no stage has processed yet "
            f"({e.strerror or e}): they stay in {root}; free space there and start again"
        ) from None
    events = sum(len(v) for (t, _), v in records.items() if t.endswith(".events"))
    commands = sum(len(v) for (t, _), v in records.items() if t.endswith(".commands"))
    log.warning(
        "ingest log: %d accepted event(s) and %d handed-over observation(s) no stage had checkpointed "
        "put back on the new broker%s (%.1f s)",
        events,
        sum(len(v) for v in records.values()) - events - commands,
        f", and {commands} command(s)" if commands else "",
        time.monotonic() - t0,
        extra={"ratelimit": False},  # once per broker: a second death within the minute says it too
    )
    return where


def forget_earlier(settings: Any) -> None:
    """The live log is the last one: the earlier lives' are carried over (or were read)."""
    root = settings.data_dir / ROOT
    if not enabled(settings):  # switched off: an old log would be stale by the next run
        shutil.rmtree(root, ignore_errors=True)
        return
    _drop_earlier(root)
