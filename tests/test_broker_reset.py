"""Broker resets and topic layout on the real embedded broker.

* The broker restarts empty under a running worker: the stages' checkpoints point past the new
  logs' ends. The reset is logged, counted on /metrics and shown on /health, and the events sent
  after the restart still become observations and alarms (never silence).
* Topics with other than the designed partition counts: the worker refuses to start, loudly.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from atalaia.streams.broker import EmbeddedBroker
from atalaia.streams.ingest.events import RawEvent
from tests.conftest import ATALAIA, consume_all, water_notification

pytestmark = pytest.mark.broker


async def send_events(bootstrap: str, topic: str, names: list[str]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for name in names:
            body = water_notification(name, 4.0, parish="Campanhã")
            headers = RawEvent(body=body, source="test", content_type="application/json").headers()
            futures.append(await producer.send(topic, body, key=name.encode(), headers=headers))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def topics(bootstrap: str) -> dict[str, int]:
    from aiokafka.admin import AIOKafkaAdminClient

    from atalaia.streams.broker import topic_partitions

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    await admin.start()
    try:
        return await topic_partitions(admin, list(await admin.list_topics()))
    finally:
        await admin.close()


def wait_for(pred, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return
        except (httpx.HTTPError, OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}" + (f":\n{log.read_text()[-6000:]}" if log else "")
            )
        time.sleep(0.3)


@pytest.mark.parametrize(
    "same_cluster_id,store",
    [(False, "file"), (True, "kafka")],
    ids=["new-cluster-id", "same-cluster-id-kafka-store"],
)
def test_broker_restarted_empty_under_a_running_worker(
    make_worker, tmp_path: Path, same_cluster_id, store
) -> None:
    """With its own cluster id (the embedded broker), the worker sees a new history at once; with
    the same id (a Kafka restarted empty), the checkpoint offsets past the new logs' ends tell:
    with ``ATALAIA_STATE_STORE=kafka`` too, whose state topics the broker lost with the rest (the
    worker re-creates them, and the checkpoints written at the rebalance carry the offsets)."""
    broker = EmbeddedBroker().start()
    port, cluster = broker.port, broker.cluster_id
    try:
        env = {
            "ATALAIA_KAFKA": broker.bootstrap,
            "ATALAIA_STATE_STORE": store,
            "ATALAIA_BROKER_UNREACHABLE_S": "2",
        }
        w = make_worker("--stages", "ingest,rules", extra_env=env)
        asyncio.run(_ensure(broker.bootstrap, w.env["ATALAIA_TOPIC_PREFIX"]))
        w.start(("ingest", "rules"))
        prefix = w.env["ATALAIA_TOPIC_PREFIX"]
        before = [f"before-{i}" for i in range(30)]
        asyncio.run(send_events(broker.bootstrap, f"{prefix}.events", before))
        wait_for(lambda: w.health()["stages"]["rules"]["processed"] >= 30, 60, "the first events", w.log)
        time.sleep(3)  # checkpoints hold offsets 30 (ingest) and 30 (rules) spread over partitions
        assert w.health()["status"] == "ok"

        broker.stop()  # restarted empty: same address, memory gone

        def unreachable() -> list[str]:
            body = w.health()
            return [
                p
                for p in body.get("problems", [])
                if "has not answered since" in p and body["status"] == "failed"
            ]

        # while it is down, /health says so (it said ok: nothing flowed, only the log told)
        wait_for(unreachable, 20, "/health failed: the broker does not answer", w.log)
        assert httpx.get(f"{w.url}/health", timeout=2).status_code == 503
        assert httpx.get(f"{w.url}/readyz", timeout=2).json() == {"status": "failed"}
        broker = EmbeddedBroker(port=port, cluster_id=cluster if same_cluster_id else "atalaia-new").start()
        # the worker re-creates the topics with their designed counts (no auto-creation)
        wait_for(
            lambda: (
                asyncio.run(topics(broker.bootstrap)).get(f"{prefix}.alarms") == 1
                and asyncio.run(topics(broker.bootstrap)).get(f"{prefix}.events") == 3
            ),
            30,
            "the topics to be re-created",
            w.log,
        )
        if same_cluster_id:  # detected from offsets when the stages rejoin: before new records arrive
            wait_for(lambda: w.log.read_text().count("BROKER RESET") >= 2, 30, "the reset", w.log)
        after = [f"after-{i}" for i in range(20)]
        asyncio.run(send_events(broker.bootstrap, f"{prefix}.events", after))

        observations = asyncio.run(
            consume_all(broker.bootstrap, f"{prefix}.observations", expect=20, timeout=60)
        )
        entities = {orjson.loads(r.value)["entity"].rsplit(":", 1)[1] for r in observations}
        assert entities == set(after), w.log.read_text()[-6000:]
        alarms = asyncio.run(consume_all(broker.bootstrap, f"{prefix}.alarms", expect=50, timeout=60))
        firing = {orjson.loads(r.value)["key"].rsplit(":", 1)[1] for r in alarms}
        assert set(after) <= firing
        # the alarms still open from before the reset are announced again on the new broker (their
        # first transitions were lost with it: the incident manager may never have seen them)
        assert set(before) <= firing, sorted(firing)
        assert "open record(s) of its state sent again" in w.log.read_text()
        assert not unreachable() and f"the broker at {broker.bootstrap} answers again" in w.log.read_text()

        # loud: one ERROR line per stage, the metric, and /health
        text = w.log.read_text()
        resets = [line for line in text.splitlines() if "BROKER RESET" in line]
        # the stage reading the events (ingest, or the fused ingest+rules stage named rules) and
        # the one reading observations
        assert any("stage rules" in line for line in resets), resets
        assert any(f"{prefix}.events" in line for line in resets), resets
        # recovered: degraded, naming the reset for ATALAIA_RESET_ALERT_S, and serving (200; a
        # readiness probe keeps it in service)
        health = httpx.get(f"{w.url}/health", timeout=2)
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert httpx.get(f"{w.url}/readyz", timeout=2).status_code == 200
        assert any("broker reset" in p for p in health.json()["problems"])
        metrics = httpx.get(f"{w.url}/metrics", timeout=2).text
        assert any(
            f'atalaia_broker_resets_total{{stage="{stage}",topic="{prefix}.events"}}' in metrics
            for stage in ("ingest", "rules")  # rules: the fused ingest+rules stage reads the events
        ), metrics
        w.stop()
    finally:
        broker.stop()


async def _ensure(bootstrap: str, prefix: str) -> None:
    from atalaia.streams.broker import ensure_topics

    await ensure_topics(bootstrap, prefix, partitions=3)


def test_wrong_partition_counts_are_refused(broker: str, tmp_path: Path) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    prefix = f"wrong{int(time.time() * 1000) % 10**8}"

    async def create() -> None:  # as a broker's auto-creation would: 4 partitions for alarms
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(f"{prefix}.alarms", 4, 1)])
        finally:
            await admin.close()

    asyncio.run(create())
    env = {
        "PATH": "/usr/bin:/bin",
        "ATALAIA_KAFKA": broker,
        "ATALAIA_TOPIC_PREFIX": prefix,
        "ATALAIA_APP_ID": prefix,
        "ATALAIA_DATA_DIR": str(tmp_path / "data"),
        "ATALAIA_PARTITIONS": "3",
    }
    r = subprocess.run(
        [ATALAIA, "worker", "--stages", "incidents"], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode != 0
    assert f"{prefix}.alarms has 4 partition(s), designed 1" in r.stderr, r.stderr[-3000:]
    assert "does not run on them" in r.stderr


async def produce_alarms(broker: str, topic: str, keys: list[str], now: datetime) -> None:
    """An alarm for each of ``keys`` (its parish the key), in one request: the log gets them at once."""
    from aiokafka import AIOKafkaProducer

    from tests.test_console_board import alarm

    p = AIOKafkaProducer(bootstrap_servers=broker, acks=1, linger_ms=200)
    await p.start()
    try:
        sent = [await p.send(topic, orjson.dumps(alarm(k, now, parish=k))) for k in keys]
        await asyncio.gather(*sent)
    finally:
        await p.stop()


async def delete_topic(broker: str, topic: str, recreate: bool = False) -> None:
    """Delete ``topic`` as an operator would (and with ``recreate`` create it again at once)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.delete_topics([topic])
        if recreate:
            await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()


def incident_keys(broker: str, prefix: str, among: list[str]) -> set[str]:
    """Which of the alarm keys ``among`` some incident event on the incidents topic holds."""
    keys = set()
    for r in asyncio.run(consume_all(broker, f"{prefix}.incidents", idle=1.0, timeout=10)):
        keys.update(a["key"].rsplit(":", 1)[1] for a in orjson.loads(r.value).get("alarms", []))
    return keys & set(among)


def test_a_topic_that_vanished_under_a_running_worker_is_a_reset_and_nothing_on_the_new_log_is_skipped(
    make_worker, broker: str, topic_prefix: str
) -> None:
    """``atalaia.alarms`` deleted under a running incidents stage (an operator's delete, a broker
    that lost it) and re-created by the worker's broker check: the stage went on at its old offset
    in the new log, so the new log's first alarms never became incidents, and ``/health`` said
    ``ok`` with no line in the log. Now the reset is said (ERROR line, ``/health`` degraded) and
    every alarm on the new log reaches the incident manager."""

    w = make_worker("--stages", "incidents").start(("incidents",))
    topic = f"{topic_prefix}.alarms"
    now = datetime.now(UTC).replace(microsecond=0)

    asyncio.run(produce_alarms(broker, topic, [f"before{k}" for k in range(5)], now))
    wait_for(lambda: w.health()["stages"]["incidents"]["processed"] >= 5, 30, "the first alarms", w.log)
    assert w.health()["status"] == "ok"
    asyncio.run(delete_topic(broker, topic))
    wait_for(lambda: topic in asyncio.run(topics(broker)), 30, "the topic re-created by the worker", w.log)
    after = [f"after{k}" for k in range(8)]  # more than the stage's old offset (5)
    asyncio.run(produce_alarms(broker, topic, after, now))

    wait_for(
        lambda: incident_keys(broker, topic_prefix, after) == set(after),
        40,
        "an incident for every new alarm",
        w.log,
    )
    h = w.health()
    assert h["status"] == "degraded" and any("vanished" in p for p in h.get("problems", [])), h
    assert "BROKER RESET" in w.log.read_text() and f"{topic}" in w.log.read_text()


def test_writes_the_embedded_broker_took_for_a_deleted_topic_do_not_crash_the_stage_writing_it_anew(
    make_worker, broker: str, topic_prefix: str
) -> None:
    """The embedded broker (Tansu) keeps taking records for a topic deleted under running
    producers (their metadata still names it), and once the topic is re-created those records
    hold the new log's first offsets: each write there is refused with ``UnknownError`` until the
    broker's next offset passes them. The rules stage failed on the first one, and its process,
    restarted, failed again at its first alarm (``atalaia up`` restarted it every 20-60 s for
    minutes, alarming nothing). Now the refused writes are written again, in order: the process
    stays up, the reset is said once, and the events sent after it become alarms. (A script
    re-creates the topic here: one the worker re-creates itself starts clean, see below.)"""

    w = make_worker("--stages", "ingest,rules").start(("ingest", "rules"))
    prefix, alarms = topic_prefix, f"{topic_prefix}.alarms"
    asyncio.run(send_events(broker, f"{prefix}.events", [f"before-{i}" for i in range(3)]))
    wait_for(lambda: w.health()["stages"]["rules"]["processed"] >= 3, 30, "the first events", w.log)

    async def one_by_one(producer, ghosts: list[bytes]) -> None:  # before a script re-creates it
        for ghost in ghosts:
            await producer.send_and_wait(alarms, ghost, partition=0)

    asyncio.run(delete_under_a_producer(broker, alarms, one_by_one, recreate=True))
    wait_for(lambda: "BROKER RESET" in w.log.read_text(), 20, "the reset", w.log)
    after = [f"after-{i}" for i in range(5)]
    asyncio.run(send_events(broker, f"{prefix}.events", after))

    def alarmed() -> set[str]:
        records = asyncio.run(consume_all(broker, alarms, idle=0.5, timeout=5))
        return {orjson.loads(r.value)["key"].rsplit(":", 1)[1] for r in records}

    wait_for(lambda: set(after) <= alarmed(), 20, "an alarm for every new event", w.log)
    text = w.log.read_text()
    assert w.proc.poll() is None and "stage failed" not in text, text[-6000:]
    assert text.count("BROKER RESET: topic(s)") == 1, text[-6000:]
    h = w.health()
    assert h["status"] == "degraded" and any("vanished" in p for p in h["problems"]), h


def test_a_topic_another_client_re_created_before_the_workers_check_is_a_reset_too(
    make_worker, broker: str, topic_prefix: str
) -> None:
    """Under ``atalaia up`` the two processes check the broker each on its own: when one (or an
    operator's script) re-created a deleted topic before the other's check, the other found the
    topic there and was not told: its stages went on at their old offsets in the new log, so the
    new log's first alarms never became incidents (nor showed on the console), with ``/health``
    ``ok``. The broker's topic ids tell a re-created topic from the old one: the reset is said
    and every alarm on the new log reaches the incident manager."""

    w = make_worker("--stages", "incidents").start(("incidents",))
    topic = f"{topic_prefix}.alarms"
    now = datetime.now(UTC).replace(microsecond=0)

    asyncio.run(produce_alarms(broker, topic, [f"before{k}" for k in range(5)], now))
    wait_for(lambda: w.health()["stages"]["incidents"]["processed"] >= 5, 30, "the first alarms", w.log)
    time.sleep(2.5)  # a check of the worker has seen the topic
    asyncio.run(delete_topic(broker, topic, recreate=True))  # faster than the worker's check (2 s)
    after = [f"after{k}" for k in range(8)]  # more than the stage's old offset (5)
    asyncio.run(produce_alarms(broker, topic, after, now))

    wait_for(
        lambda: incident_keys(broker, topic_prefix, after) == set(after),
        15,
        "an incident for every new alarm",
        w.log,
    )
    h = w.health()
    assert h["status"] == "degraded" and any("vanished" in p for p in h.get("problems", [])), h
    assert "BROKER RESET" in w.log.read_text()


def test_records_the_embedded_broker_kept_for_a_deleted_topic_hide_no_write_to_the_new_log(
    make_worker, broker: str, topic_prefix: str
) -> None:
    """The records the embedded broker took for a deleted topic sit at the re-created log's first
    offsets in batches, and a write landing inside one of those batches was acknowledged but
    never read (a reader takes the batch, then goes on after its last offset): here the open
    alarm the rules stage sends again after the reset, so the incident manager never learnt of
    it. The worker now deletes such a re-created topic once more (the broker then drops those
    records) and creates it again: every write to the new log is read."""

    w = make_worker("--stages", "ingest,rules").start(("ingest", "rules"))
    prefix, alarms = topic_prefix, f"{topic_prefix}.alarms"
    asyncio.run(send_events(broker, f"{prefix}.events", ["before-0"]))  # one open alarm
    wait_for(lambda: w.health()["stages"]["rules"]["processed"] >= 1, 30, "the first event", w.log)

    async def in_one_batch(producer, ghosts: list[bytes]) -> None:  # as a stage writes: offsets 0-2
        batch = producer.create_batch()
        for ghost in ghosts:
            batch.append(key=None, value=ghost, timestamp=None)
        await (await producer.send_batch(batch, alarms, partition=0))

    asyncio.run(delete_under_a_producer(broker, alarms, in_one_batch))
    wait_for(lambda: "open record(s) of its state sent again" in w.log.read_text(), 20, "the reset", w.log)
    after = [f"after-{i}" for i in range(3)]
    asyncio.run(send_events(broker, f"{prefix}.events", after))

    def alarmed() -> set[str]:
        records = asyncio.run(consume_all(broker, alarms, idle=0.5, timeout=5))
        return {orjson.loads(r.value)["key"].rsplit(":", 1)[1] for r in records}

    wait_for(lambda: set(after) <= alarmed(), 20, "an alarm for every new event", w.log)
    assert "before-0" in alarmed(), w.log.read_text()[-6000:]  # sent again after the reset: read
    assert w.proc.poll() is None and "stage failed" not in w.log.read_text()


async def delete_under_a_producer(broker: str, topic: str, write, recreate: bool = False) -> None:
    """``topic`` deleted under a producer whose metadata names it (as a stage's does), which then
    writes three alarms to it with ``write(producer, records)``; with ``recreate`` a script
    creates the topic again (one partition) before the worker's check does."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    ghosts = [
        orjson.dumps({"rule": "river-level-high", "key": f"urn:ngsi-ld:WaterObserved:gap-{i}"})
        for i in range(3)
    ]
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks=1)
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await producer.start()
    await admin.start()
    try:
        await producer.partitions_for(topic)
        await admin.delete_topics([topic])
        await write(producer, ghosts)
        if recreate:
            await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
        await producer.stop()


def test_events_answered_while_an_external_broker_came_back_empty_are_kept(
    make_worker, tmp_path: Path
) -> None:
    """An external memory-only Tansu killed and restarted empty under a worker whose endpoint is
    being sent events. In the second after it came back, the ingest producer (still holding the
    topics' metadata) wrote to topics the broker no longer had: the broker acknowledged them (the
    endpoint answered 200), then the broker check created the topics and, finding those records
    at the new logs' first offsets, deleted and created them again: dozens of answered events
    gone. Now what the producer had acknowledged since the check last found the topics as they
    were is written again once they are created: every answered event is on the new log and
    processed."""
    import threading

    broker = EmbeddedBroker(cluster_id="tansu_cluster").start()  # as a user runs it: the default id
    port = broker.port
    try:
        w = make_worker("--stages", "ingest,rules", extra_env={"ATALAIA_KAFKA": broker.bootstrap})
        w.start(("ingest", "rules"))
        prefix = w.env["ATALAIA_TOPIC_PREFIX"]
        accepted: list[tuple[float, str]] = []
        stop = threading.Event()

        def post(worker: int) -> None:  # several senders: some are waiting while the broker is down
            n = 0
            with httpx.Client(timeout=10) as client:
                while not stop.is_set():
                    n += 1
                    name = f"w{worker}-{n}"
                    try:
                        r = client.post(
                            f"{w.url}/ngsi-ld/notify",
                            content=water_notification(name, 1.0),
                            headers={"Content-Type": "application/json"},
                        )
                    except httpx.HTTPError:
                        continue
                    if r.status_code == 200:
                        accepted.append((time.monotonic(), name))
                    time.sleep(0.02)

        senders = [threading.Thread(target=post, args=(i,), daemon=True) for i in range(4)]
        for s in senders:
            s.start()
        time.sleep(3)
        broker.proc.kill()  # kill -9: its topics were in its memory
        broker.stop()
        time.sleep(1)
        broker = EmbeddedBroker(port=port, cluster_id="tansu_cluster").start()
        back = time.monotonic()
        time.sleep(6)
        stop.set()
        for s in senders:
            s.join(15)
        after = {name for at, name in accepted if at >= back}
        assert len(after) > 50, len(after)
        events = asyncio.run(consume_all(broker.bootstrap, f"{prefix}.events", idle=2.0, timeout=30))
        entities = {orjson.loads(r.value)["data"][0]["id"].rsplit(":", 1)[1] for r in events}
        lost = after - entities
        assert not lost, f"{len(lost)} of {len(after)} answered events not on the broker: {sorted(lost)[:10]}"
        observations = asyncio.run(
            consume_all(broker.bootstrap, f"{prefix}.observations", idle=2.0, timeout=30)
        )
        observed = {orjson.loads(r.value)["entity"].rsplit(":", 1)[1] for r in observations}
        assert after <= observed, f"{len(after - observed)} answered events not processed"
        assert "wrote again the" in w.log.read_text()
        w.stop()
    finally:
        broker.stop()
