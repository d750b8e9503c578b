"""The broker check's topic ids (``streams.guard``), against a scripted broker: which answers are
a reset (a topic created again under its name, by another client) and which are not (the first
check, an answer without a topic's id, the check's own re-creation, an older id answered again
by a broker whose metadata lags), and that a failing topic-id request leaves the rest of the
check working; a Kafka Metadata v10 answer read byte by byte; and an aiokafka without the classes
the topic-id request and the retry of refused writes use (``streams.kafka_config``) runs
Atalaia all the same. A live reset is in ``test_broker_reset.py``; these run without a broker."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.streams import guard as guard_mod
from atalaia.streams.broker import designed_partitions

PREFIX = "g"
TOPIC = f"{PREFIX}.alarms"


class ScriptedBroker:
    """Topics with ids, as an admin client and its ``_client`` see them. ``answers`` scripts the
    topic-id answers (``None``: the topic left out of the answer, an id: that id) one per
    request, else the current ids; ``id_error`` makes the topic-id request raise."""

    def __init__(self) -> None:
        self.topics: dict[str, bytes] = {}
        self.answers: list[dict[str, bytes | None]] = []
        self.id_error: Exception | None = None
        self.deleted: list[str] = []
        self._client = self

    def create(self, name: str) -> None:
        self.topics[name] = uuid.uuid4().bytes

    # admin client
    async def describe_cluster(self) -> dict[str, Any]:
        return {"cluster_id": "c1"}

    async def list_topics(self) -> list[str]:
        return list(self.topics)

    async def create_topics(self, new: list[Any]) -> Any:
        for t in new:
            if t.name not in self.topics:
                self.create(t.name)
        return SimpleNamespace(topic_errors=[(t.name, 0) for t in new])

    async def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        designed = designed_partitions(PREFIX, 1)
        return [
            {"topic": t, "error_code": 0, "partitions": [{}] * designed[t]} for t in names if t in self.topics
        ]

    async def delete_topics(self, names: list[str]) -> None:
        self.deleted += names
        for t in names:
            self.topics.pop(t, None)

    # AIOKafkaClient (topic ids, Metadata v10)
    def get_random_node(self) -> int:
        return 1

    async def send(self, node: int, request: Any) -> Any:
        if self.id_error is not None:
            raise self.id_error
        ids: dict[str, bytes | None] = dict(self.topics)
        if self.answers:
            ids.update(self.answers.pop(0))
        return SimpleNamespace(topics=[(0, t, i, False, [], 0, {}) for t, i in ids.items() if i is not None])


class Stage:
    def __init__(self) -> None:
        self.resets: list[set[str]] = []
        self.fail = 0  # the next resets it cannot take

    async def vanished(self, topics: set[str], why: str) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("the stage could not seek")
        self.resets.append(topics)

    async def recheck(self, cid: str) -> None:  # a new cluster id: not scripted here
        raise AssertionError(cid)


@contextlib.contextmanager
def watching() -> Iterator[tuple[ScriptedBroker, Stage, Callable[[], None]]]:
    """(broker, stage, run): ``run()`` is one check of a broker guard watching ``broker``, whose
    stage ``stage`` records the resets it is told."""

    async def nothing_kept(bootstrap: str, topics: dict[str, int]) -> list[str]:
        return []

    broker, stage = ScriptedBroker(), Stage()
    for t in designed_partitions(PREFIX, 1):
        broker.create(t)
    settings_ = SimpleNamespace(topic_prefix=PREFIX, partitions=1, reset_alert_s=60.0, log_interval_s=60.0)
    loop = asyncio.new_event_loop()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(guard_mod, "known_kind", lambda bootstrap: "tansu")
        mp.setattr("atalaia.streams.broker.kept_while_deleted", nothing_kept)

        async def make() -> Any:
            return guard_mod.BrokerGuard("127.0.0.1:1", settings_, {"s": stage})

        g = loop.run_until_complete(make())
        before = dict(guard_mod.HEALTH.problems)
        try:
            yield broker, stage, lambda: loop.run_until_complete(g.check(broker))
        finally:
            loop.close()
            # the resets it told this process's /health: not left for the tests that run after
            guard_mod.HEALTH.problems.clear()
            guard_mod.HEALTH.problems.update(before)


@pytest.fixture
def check() -> Iterator[tuple[ScriptedBroker, Stage, Callable[[], None]]]:
    with watching() as w:
        yield w


def test_a_topic_re_created_by_another_client_between_two_checks_is_one_reset(check) -> None:
    broker, stage, run = check
    run()  # the first check: ids learnt, nothing said
    run()
    assert stage.resets == []
    broker.create(TOPIC)  # deleted and created again by the other process of `atalaia up`
    run()
    run()
    assert stage.resets == [{TOPIC}]


def test_the_checks_own_re_creation_of_a_vanished_topic_is_one_reset(check) -> None:
    broker, stage, run = check
    run()
    del broker.topics[TOPIC]
    run()  # vanished: re-created by this check, said once
    run()
    run()
    assert stage.resets == [{TOPIC}]


def test_the_checks_own_re_creation_left_out_of_its_answer_is_no_second_reset(check) -> None:
    """The ids are asked right after the check created a vanished topic again, and a broker
    whose metadata has not caught up yet (a Kafka cluster) leaves the new topic out: the next
    check found it under another id than the deleted topic's and said a second reset, sending
    every stage reading it back to the new log's beginning (everything read since the first
    reset processed twice: alarms and notifications again)."""
    broker, stage, run = check
    run()
    del broker.topics[TOPIC]
    broker.answers = [{TOPIC: None}]
    run()
    run()
    run()
    assert stage.resets == [{TOPIC}]


def test_a_reset_a_stage_could_not_take_is_told_at_the_next_check(check) -> None:
    broker, stage, run = check
    run()
    broker.create(TOPIC)
    stage.fail = 1
    with pytest.raises(RuntimeError):
        run()
    run()
    run()
    assert stage.resets == [{TOPIC}]


def test_an_answer_without_a_topics_id_is_no_reset(check) -> None:
    broker, stage, run = check
    run()
    broker.answers = [{TOPIC: None}, {TOPIC: bytes(16)}]  # left out, then without an id
    run()
    run()
    run()
    assert stage.resets == []


def test_an_older_id_answered_again_by_a_lagging_broker_is_no_second_reset(check) -> None:
    """On a Kafka cluster each check asks a random broker, and one whose metadata lags can still
    answer a topic's id from before it was created again: read as another re-creation, it sent
    every stage reading the topic back to the new log's beginning (everything read since the
    reset processed twice), and once more when the next broker answered the new id."""
    broker, stage, run = check
    run()
    old = broker.topics[TOPIC]
    broker.create(TOPIC)
    run()  # the new id: the reset
    broker.answers = [{TOPIC: old}]  # a lagging broker
    run()
    run()  # the new id again
    assert stage.resets == [{TOPIC}]


def test_a_failing_topic_id_request_leaves_the_rest_of_the_check_working(check) -> None:
    """The topic ids come from a request Atalaia builds itself (Metadata v10): should it fail
    (a broker that answers it in a way this code cannot read, a connection lost just then), the
    check still re-creates a vanished topic, says the reset and goes on watching, as it did
    before topic ids."""
    broker, stage, run = check
    run()
    broker.id_error = ValueError("Buffer underrun decoding string")
    del broker.topics[TOPIC]
    run()
    assert stage.resets == [{TOPIC}] and TOPIC in broker.topics
    broker.id_error = None
    run()
    run()
    assert stage.resets == [{TOPIC}]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(["check", "re-create", "delete", "omit", "stale"]), max_size=16))
def test_a_reset_is_said_once_per_re_creation_whatever_the_answers(steps: list[str]) -> None:
    """Random sequences of checks, deletions, re-creations by another client and answers that
    leave the topic's id out or give an id it had before (a broker whose metadata lags): a
    reset is said at each check that finds the topic deleted (the check creates it again) and
    at the first check whose answer shows a re-creation by another client, when the check knew
    the topic's id before; never for an answer alone."""
    with watching() as (broker, stage, run):
        run()
        first = broker.topics[TOPIC]
        expected = 0
        known, changed = True, False  # the guard holds the topic's id; re-created since it learnt it
        answer = "normal"  # the next check's topic-id answer
        for step in steps:
            if step == "re-create":
                broker.create(TOPIC)
                changed = True
            elif step == "delete":
                broker.topics.pop(TOPIC, None)
            elif step in ("omit", "stale"):
                answer = step
            else:
                gone = TOPIC not in broker.topics
                if gone or broker.topics[TOPIC] != first:
                    broker.answers = [{"omit": {TOPIC: None}, "stale": {TOPIC: first}, "normal": {}}[answer]]
                else:
                    answer = "normal"  # the first id is the current one: not stale
                run()
                if gone:  # vanished: re-created by this check
                    expected += 1
                    known, changed = answer == "normal", False
                elif answer == "normal":
                    expected += known and changed
                    known, changed = True, False
                answer = "normal"
        assert len(stage.resets) == expected, (steps, stage.resets)
        assert all(r == {TOPIC} for r in stage.resets)


def _compact(s: str | None) -> bytes:
    return b"\x00" if s is None else bytes([len(s) + 1]) + s.encode()


def _i32(*v: int) -> bytes:
    return b"".join(x.to_bytes(4, "big", signed=True) for x in v)


TOPIC_ID = bytes(range(1, 17))
# A Metadata v10 response body as Apache Kafka (2.8+) writes it, byte by byte from the protocol's
# grammar: a broker without a rack and one with a rack and a tagged field, no cluster id, a topic
# with its id and one that failed (no id).
KAFKA_V10 = b"".join(
    [
        _i32(0),  # throttle_time_ms
        b"\x03",  # brokers: 2
        _i32(1) + _compact("k1") + _i32(9092) + _compact(None) + b"\x00",
        _i32(2) + _compact("k2") + _i32(9092) + _compact("r1") + b"\x01\x05\x02ab",
        _compact(None),  # cluster_id
        _i32(1),  # controller_id
        b"\x03",  # topics: 2
        b"\x00\x00" + _compact("atalaia.alarms") + TOPIC_ID + b"\x00",
        b"\x02" + b"\x00\x00" + _i32(0, 1, 0) + b"\x03" + _i32(1, 2) + b"\x02" + _i32(1) + b"\x01" + b"\x00",
        _i32(-(2**31)) + b"\x00",
        b"\x00\x03" + _compact("gone") + bytes(16) + b"\x00" + b"\x01" + _i32(-(2**31)) + b"\x00",
        _i32(-(2**31)),  # cluster_authorized_operations (v8-v10)
        b"\x00",
    ]
)


class RawClient:
    """An ``AIOKafkaClient`` whose broker supports Metadata ``versions`` and answers ``body``."""

    def __init__(self, versions: dict[int, tuple[int, int]], body: bytes = b"") -> None:
        self.versions, self.body = versions, body

    def get_random_node(self) -> int:
        return 1

    async def send(self, node: int, request: Any) -> Any:
        import io

        struct = request.prepare(self.versions)  # as the connection does
        return struct.RESPONSE_TYPE.decode(io.BytesIO(self.body))


def test_topic_ids_read_a_kafka_metadata_v10_answer() -> None:
    from atalaia.streams.broker import topic_ids

    assert asyncio.run(topic_ids(RawClient({3: (0, 12)}, KAFKA_V10))) == {"atalaia.alarms": TOPIC_ID}


@pytest.mark.parametrize("versions", [{3: (0, 9)}, {}], ids=["kafka-2.7", "no-metadata-versions"])
def test_a_broker_without_topic_ids_gives_none(versions: dict[int, tuple[int, int]]) -> None:
    from atalaia.streams.broker import topic_ids

    assert asyncio.run(topic_ids(RawClient(versions))) == {}


def test_an_aiokafka_without_the_classes_of_the_topic_id_request_still_runs_atalaia() -> None:
    """The Metadata v10 request is built from aiokafka's protocol classes (0.14): an aiokafka
    without them made ``import atalaia.streams.broker`` fail, so every command (``atalaia up``,
    ``worker``, ``send``) died at start for a check that can do without topic ids; now only the
    topic-id request fails, and the broker check goes on without it (test above)."""
    import subprocess
    import sys

    code = (
        "import asyncio, aiokafka.protocol.api as api\n"
        "del api.RequestStruct\n"
        "from atalaia.streams import broker, guard\n"
        "class C:\n"
        "    def get_random_node(self): return 1\n"
        "    async def send(self, node, request): raise AssertionError(request)\n"
        "try:\n"
        "    asyncio.run(broker.topic_ids(C()))\n"
        "except ImportError:\n"
        "    print('topic ids: ImportError')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "topic ids: ImportError\n", out.stderr[-3000:]


@pytest.mark.parametrize("missing", ["SendProduceReqHandler", "_sender"])
def test_an_aiokafka_without_the_produce_handler_still_starts_producers_on_tansu(
    monkeypatch, caplog, missing: str
) -> None:
    """The retry of refused writes replaces aiokafka's produce handler (0.14's
    ``aiokafka.producer.sender.SendProduceReqHandler``, reached through the producer's
    ``_sender``): in an aiokafka without them every stage, the HTTP ingest and ``atalaia send``
    failed to start on the embedded broker (AttributeError). Now the producer is used as it is,
    with one WARNING."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.producer import sender

    from atalaia.streams.kafka_config import TANSU, retry_refused_writes

    async def make() -> Any:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
        if missing == "_sender":
            monkeypatch.delattr(producer, "_sender")
        else:
            monkeypatch.delattr(sender, missing)
        try:
            return producer, retry_refused_writes(producer, TANSU)
        finally:
            monkeypatch.undo()
            await producer.stop()

    producer, returned = asyncio.run(make())
    assert returned is producer
    assert "has no produce handler Atalaia can extend" in caplog.text
