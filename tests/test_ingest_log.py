"""The ingest log (``streams.ingestlog``): records survive a torn tail, a failed write leaves no
half record, trimming never deletes what a stage has not checkpointed, and — over any sequence
of runs, kills and partial checkpoints — putting back the planned events and re-anchoring the
checkpoints gives every stage exactly the accepted events it had not read, once, in order."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atalaia.streams import ingestlog
from atalaia.streams.checkpoints import CLUSTER_KEY, Checkpoints
from atalaia.streams.connect import reanchor_checkpoints
from atalaia.streams.ingestlog import Entry, IngestLog, IngestLogError, read_segment

TOPIC = "atalaia.events"


def entry(p: int, o: int, topic: str = TOPIC) -> Entry:
    return Entry(topic, p, o, f"k{p}".encode(), f"event {p}/{o}".encode(), [("source", b"http")])


def test_records_round_trip_and_a_torn_tail_ends_the_segment(tmp_path: Path) -> None:
    w = IngestLog(ingestlog.new_life(tmp_path, "c1"), tmp_path / "state", [TOPIC])
    written = [entry(i % 2, i // 2) for i in range(10)]
    for e in written:
        w.append(e)
    w.close()
    (seg,) = ingestlog.segments(w.life)
    assert seg.suffix == ".log" and list(read_segment(seg)) == written
    data = seg.read_bytes()
    seg.write_bytes(data[:-3])  # killed in the middle of the last record
    assert list(read_segment(seg)) == written[:-1]
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # corruption in the middle: what follows is not trusted
    seg.write_bytes(bytes(flipped))
    got = list(read_segment(seg))
    assert got == written[: len(got)] and len(got) < len(written)


def test_a_failed_write_leaves_no_half_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = IngestLog(ingestlog.new_life(tmp_path, "c1"), tmp_path / "state", [TOPIC])
    w.append(entry(0, 0))
    real = os.write

    def full(fd: int, data: bytes) -> int:  # the disk fills half-way through the record
        real(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(IngestLogError, match="cannot keep the event"):
        w.append(entry(0, 1))
    monkeypatch.setattr(os, "write", real)
    w.append(entry(0, 2))  # the disk has room again
    w.close()
    assert [e.offset for seg in ingestlog.segments(w.life) for e in read_segment(seg)] == [0, 2]


def test_a_segment_that_cannot_be_closed_is_refused_as_not_kept(tmp_path: Path, monkeypatch) -> None:
    """A read-only data directory: closing the segment (its rename to ``.log``) fails. The
    event is refused as not kept (``IngestLogError``: the endpoint answers 503 and the sender
    sends it again), not a 500; what was kept before stays readable, and writing goes on in a
    new segment once the directory is writable again."""
    w = IngestLog(ingestlog.new_life(tmp_path, "c1"), tmp_path / "state", [TOPIC])
    w.append(entry(0, 0))
    real = os.replace

    def read_only(src, dst, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(src))

    monkeypatch.setattr(ingestlog, "ROLL_S", 0.0)  # every append rolls the segment
    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(IngestLogError, match="cannot close"):
        w.append(entry(0, 1))
    monkeypatch.setattr(os, "replace", real)
    w.append(entry(0, 2))
    w.close()
    assert sorted(e.offset for seg in ingestlog.segments(w.life) for e in read_segment(seg)) == [0, 2]


def test_trim_deletes_only_segments_every_reader_checkpointed_past(tmp_path: Path) -> None:
    state = tmp_path / "state"
    w = IngestLog(ingestlog.new_life(tmp_path, "c1"), state, [TOPIC])
    for k in range(3):  # three closed segments: offsets 0-9, 10-19, 20-29 of both partitions
        for o in range(10 * k, 10 * k + 10):
            w.append(entry(0, o))
            w.append(entry(1, o))
        w.roll()
    assert w.trim() == 0  # no stage known to read the events yet: nothing goes
    Checkpoints(state / "rules").save(0, {TOPIC: 25, CLUSTER_KEY: "c1"}, b"")
    Checkpoints(state / "rules").save(1, {TOPIC: 12, CLUSTER_KEY: "c1"}, b"")
    Checkpoints(state / "other").save(0, {"atalaia.alarms": 999, CLUSTER_KEY: "c1"}, b"")  # reads no events
    assert w.trim() == 1  # 0-9 read on both; 10-19 not yet on partition 1
    Checkpoints(state / "shadow").save(0, {TOPIC: 30, CLUSTER_KEY: "c1"}, b"")  # a second reader,
    Checkpoints(state / "rules").save(1, {TOPIC: 30, CLUSTER_KEY: "c1"}, b"")  # without partition 1
    assert w.trim() == 0
    Checkpoints(state / "shadow").save(1, {TOPIC: 30, CLUSTER_KEY: "old"}, b"")  # another broker's
    assert w.trim() == 0
    Checkpoints(state / "shadow").save(1, {TOPIC: 30, CLUSTER_KEY: "c1"}, b"")
    assert w.trim() == 1
    left = [e.offset for seg in ingestlog.segments(w.life) for e in read_segment(seg)]
    assert sorted(set(left)) == list(range(20, 30))


# -- the model: runs of `atalaia up`, each on a new broker, killed at any point --------------
STAGES = ("ingest-rules", "shadow")

run = st.tuples(
    st.lists(st.integers(0, 1), max_size=12),  # the partitions of the events accepted in the run
    st.fixed_dictionaries(  # how far each stage had checkpointed each partition when it was killed
        {s: st.tuples(st.integers(0, 30), st.integers(0, 30), st.booleans()) for s in STAGES}
        # (partition 1 is checkpointed only when the flag says so: a stage that never got to it)
    ),
    st.integers(0, 3),  # how often the segments roll (several writers, rolls)
    # killed while starting: 1 = once the records were put back, before any checkpoint pointed at
    # them; 2 = when one stage's checkpoints pointed at them and the other's not yet
    st.sampled_from((0, 0, 0, 1, 2)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=st.lists(run, min_size=1, max_size=4))
def test_every_stage_gets_each_accepted_event_exactly_once_over_kills(tmp_path_factory, runs) -> None:
    data = tmp_path_factory.mktemp("data")
    root, state = data / ingestlog.ROOT, data / "state"
    # the broker of the current life: partition -> [event name]; what each stage's checkpointed
    # state holds (the events it processed), in order
    broker: dict[int, list[str]] = {0: [], 1: []}
    seen: dict[str, list[str]] = {s: [] for s in STAGES}
    position = {(s, p): 0 for s in STAGES for p in (0, 1)}  # where each stage reads on the live broker
    accepted: list[str] = []
    home: dict[str, int] = {}
    conf = SimpleNamespace(
        data_dir=data, ingest_log=True, kafka=None, state_store="file", topic_prefix="atalaia", partitions=2
    )
    for n, (parts, ckpt, rolls, killed) in enumerate(runs):
        cluster = f"c{n}"
        broker = {0: [], 1: []}

        def produce(
            records: dict[tuple[str, int], list[Entry]], broker: dict[int, list[str]] = broker
        ) -> dict[tuple[str, int], list[int]]:
            offsets = {}
            for (t, p), items in records.items():
                offsets[(t, p)] = list(range(len(broker[p]), len(broker[p]) + len(items)))
                broker[p] += [e.value.decode() for e in items]
            return offsets

        # start (as `atalaia up`): put back what was not checkpointed, re-anchor, forget earlier lives
        where = ingestlog.replay(conf, "", cluster, produce=produce)
        if killed == 1:
            continue
        if killed == 2:  # the second stage's checkpoints were not rewritten yet
            kept = {f: f.read_bytes() for f in (state / STAGES[1]).glob("p*.ckpt")}
            reanchor_checkpoints(state, cluster, where)
            for f, data_ in kept.items():
                f.write_bytes(data_)
            continue
        reanchor_checkpoints(state, cluster, where)
        position = {
            (s, p): (ingestlog.read_offsets(state / s / f"p{p}.ckpt") or {}).get(TOPIC, 0)
            for s in STAGES
            for p in (0, 1)
        }
        ingestlog.forget_earlier(conf)
        # the run: events accepted (on the broker, then in the log, in segments)
        w = IngestLog(ingestlog.lives(root)[-1], state, [TOPIC])
        for i, p in enumerate(parts):
            name = f"r{n}e{i}"
            accepted.append(name)
            home[name] = p
            w.append(Entry(TOPIC, p, len(broker[p]), None, name.encode(), []))
            broker[p].append(name)
            if rolls and i % (rolls + 1) == rolls:
                w.roll()
        w.close()
        # each stage checkpoints part of what is on the broker (what it read beyond its last
        # checkpoint is lost with the kill: its state is its checkpoint), or nothing at all
        for s in STAGES:
            a, b, checkpointed = ckpt[s]
            for p, upto in ((0, a), (1, b)):
                if checkpointed or p == 0:
                    at = min(len(broker[p]), position[(s, p)] + upto)
                    seen[s] += broker[p][position[(s, p)] : at]
                    Checkpoints(state / s).save(p, {TOPIC: at, CLUSTER_KEY: cluster}, b"")
        w.trim()
    # a last run reads everything to the end
    ingestlog.roll_forward(root, state)
    todo = ingestlog.plan(root, state)
    for s in STAGES:
        for (t, p), items in todo.records.items():
            seen[s] += [e.value.decode() for e in items[todo.starts.get((s, t, p), 0) :]]
    for s in STAGES:
        assert sorted(seen[s]) == sorted(accepted), s  # every accepted event, each once
        for p in (0, 1):  # and each partition's in the order they were accepted
            assert [x for x in seen[s] if home[x] == p] == [x for x in accepted if home[x] == p]


def test_observations_handed_to_another_partition_are_put_back_by_their_own_readers(tmp_path: Path) -> None:
    """A stage checkpoints an event once the observations it handed to another partition are
    acknowledged, not once that partition's stage has checkpointed them: those are logged too,
    and put back where their reader had not checkpointed them, even though the event had been."""
    obs, shared = "atalaia.observations", "atalaia.shared-observations"
    root, state = tmp_path / ingestlog.ROOT, tmp_path / "state"
    w = IngestLog(ingestlog.new_life(root, "c1"), state, [TOPIC, obs, shared])
    w.append_many([entry(0, o) for o in range(10)] + [entry(1, o, obs) for o in range(5)])
    w.append_many([entry(0, o, shared) for o in range(3)])
    w.close()
    rules = Checkpoints(state / "rules")
    rules.save(0, {TOPIC: 10, obs: 0, CLUSTER_KEY: "c1"}, b"")  # read all its events
    rules.save(1, {TOPIC: 0, obs: 2, CLUSTER_KEY: "c1"}, b"")  # had checkpointed 2 handed-over ones
    Checkpoints(state / "rules-shared").save(0, {shared: 3, CLUSTER_KEY: "c1"}, b"")
    assert w.trim() == 0  # observations 2-4 of partition 1 are not read by their reader yet
    todo = ingestlog.plan(root, state)
    rules.save(1, {TOPIC: 0, obs: 5, CLUSTER_KEY: "c1"}, b"")  # (once they are, the segment may go)
    assert w.trim() == 1  # every reader of every record in it has checkpointed past it
    assert {tp: [e.offset for e in v] for tp, v in todo.records.items()} == {(obs, 1): [2, 3, 4]}
    assert todo.starts[("rules", obs, 1)] == 0 and todo.starts[("rules", TOPIC, 0)] == 0
    where = ingestlog.anchors(todo, {(obs, 1): [0, 1, 2]})
    reanchor_checkpoints(state, "c2", where)
    assert ingestlog.read_offsets(state / "rules" / "p1.ckpt")[obs] == 0
    assert ingestlog.read_offsets(state / "rules" / "p0.ckpt")[TOPIC] == 0  # nothing of it put back


def test_commands_are_kept_for_a_reader_that_has_not_checkpointed_yet(tmp_path: Path) -> None:
    """The console's commands have two readers, the incident manager and the warnings stage. When
    the incident manager had checkpointed past them and the warnings stage had no checkpoint yet
    (its first command came moments before a kill -9), nothing was put back: the warnings stage,
    known to the log only by its checkpoints, did not count, and the draft, approval and issue
    were gone; trimming deleted them the same way. A reader without a checkpoint has read nothing."""
    commands = "atalaia.commands"
    root, state = tmp_path / ingestlog.ROOT, tmp_path / "state"
    w = IngestLog(ingestlog.new_life(root, "c1"), state, [commands])
    w.append_many([entry(0, o, commands) for o in range(10)])
    w.close()
    Checkpoints(state / "incidents").save(0, {commands: 10, "atalaia.alarms": 0, CLUSTER_KEY: "c1"}, b"")
    assert w.trim() == 0  # the warnings stage has not read them
    todo = ingestlog.plan(root, state)
    assert [e.offset for e in todo.records[(commands, 0)]] == list(range(10))
    assert todo.starts[("incidents", commands, 0)] == 10 and todo.starts[("warnings", commands, 0)] == 0
    Checkpoints(state / "warnings").save(0, {commands: 4, CLUSTER_KEY: "c1"}, b"")
    todo = ingestlog.plan(root, state)
    assert [e.offset for e in todo.records[(commands, 0)]] == list(range(4, 10))
    Checkpoints(state / "warnings").save(0, {commands: 10, CLUSTER_KEY: "c1"}, b"")
    assert w.trim() == 1 and not len(ingestlog.plan(root, state))


def test_a_dead_writers_open_segment_is_trimmed_like_a_closed_one(tmp_path: Path) -> None:
    """up restarts a worker process that died: the segment it was writing stays `.open`; once
    every reader is past it, it goes like a closed one."""
    state = tmp_path / "state"
    life = ingestlog.new_life(tmp_path, "c1")
    dead = _dead_pid()
    (life / f"{dead}-abc123-000001.open").write_bytes(
        b"".join(ingestlog.encode(entry(0, o)) for o in range(5))
    )
    w = IngestLog(life, state, [TOPIC])
    Checkpoints(state / "rules").save(0, {TOPIC: 5, CLUSTER_KEY: "c1"}, b"")
    assert w.trim() == 1 and not list(life.iterdir())


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_start_up_on_a_full_disk_refuses_and_keeps_every_record(tmp_path: Path, monkeypatch) -> None:
    """The records no stage processed cannot be carried over (the disk is full): `atalaia up`
    stops with one line saying so, and the earlier life keeps them for the next start."""
    import click

    conf = SimpleNamespace(
        data_dir=tmp_path,
        ingest_log=True,
        kafka=None,
        state_store="file",
        topic_prefix="atalaia",
        partitions=2,
    )
    root = tmp_path / ingestlog.ROOT
    w = IngestLog(ingestlog.new_life(root, "c0"), tmp_path / "state", [TOPIC])
    w.append_many([entry(0, o) for o in range(5)])
    w.close()

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ingestlog, "_write_replay", full)
    fake = lambda records: {tp: list(range(len(v))) for tp, v in records.items()}  # noqa: E731
    with pytest.raises(click.ClickException, match=r"5 accepted record.*No space left.*free space"):
        ingestlog.replay(conf, "", "c1", produce=fake)
    assert [life.name for life in ingestlog.lives(root)] == ["000000-c0"]
    monkeypatch.undo()
    assert ingestlog.replay(conf, "", "c2", produce=fake) == {}  # room again: put back (no reader yet)
    assert [e.offset for e in read_segment(ingestlog.lives(root)[-1] / ingestlog.REPLAY)] == list(range(5))
