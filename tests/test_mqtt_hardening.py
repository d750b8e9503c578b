"""MQTT ingest hardening, against the Mosquitto at 127.0.0.1:1883 (a unique topic per test): an
oversize message or one Kafka refuses for good goes to the DLQ and is acknowledged (ingest goes
on); retained messages replayed on (re)subscription are not ingested; the client id has a random
suffix kept in the data directory; the topic in ``source`` is cut; ``ATALAIA_MQTT_TENANT`` files
every observation under its tenant whatever the body says."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import stat
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from prometheus_client import REGISTRY

from atalaia.streams.ingest.dlq import read_dlq_record
from atalaia.streams.ingest.events import RawEvent
from atalaia.streams.ingest.mqtt import MqttBridge
from atalaia.streams.ingest.payload import parse_payload
from atalaia.streams.settings import Settings, SettingsError, load_settings, unknown_variables

pytestmark = pytest.mark.mqtt

OBS = (
    b'{"entity": "urn:x:1", "type": "WaterLevel", "time": "2026-01-28T10:00:00Z", "attributes": {"level": 1}}'
)


@pytest.fixture
def root() -> str:
    """A fresh MQTT topic root (the test skips without a broker)."""
    try:
        socket.create_connection(("127.0.0.1", 1883), timeout=1).close()
    except OSError as e:
        pytest.skip(f"no MQTT broker at 127.0.0.1:1883: {e}")
    return f"atalaia-test/harden-{uuid.uuid4().hex[:8]}"


class Recording:
    """A producer that keeps what it was given: (topic, value, key, headers)."""

    def __init__(self, fail: list[BaseException] | None = None) -> None:
        self.got: list[tuple[str, bytes, bytes | None, dict[str, bytes]]] = []
        self.fail = list(fail or [])
        self.changed = asyncio.Event()

    async def publish(self, topic, value, key=None, headers=None) -> None:
        if self.fail:
            raise self.fail.pop(0)
        self.got.append((topic, value, key, dict(headers or [])))
        self.changed.set()

    def on(self, topic: str) -> list[tuple[str, bytes, bytes | None, dict[str, bytes]]]:
        return [g for g in self.got if g[0] == topic]

    async def until(self, pred, timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                self.changed.clear()
                await self.changed.wait()


async def publish(topic: str, payload: bytes, retain: bool = False) -> None:
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"pub-{uuid.uuid4().hex[:8]}") as c:
        await c.publish(topic, payload, qos=1, retain=retain)


async def started(bridge: MqttBridge) -> MqttBridge:
    await bridge.start()
    await asyncio.wait_for(bridge.connected.wait(), 10)
    return bridge


async def nothing_comes_again(url: str, client_id: str) -> None:
    """The same session, started again, receives nothing: every message was acknowledged."""
    again = Recording()
    bridge = await started(MqttBridge(url, again, "atalaia.events", client_id=client_id))
    try:
        await asyncio.sleep(2)
        assert again.got == []
    finally:
        await bridge.stop()
        await end_session(client_id)


async def end_session(client_id: str) -> None:
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", 1883, identifier=client_id, clean_session=True):
        pass


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("atalaia_ingest_mqtt_messages_total", {"outcome": outcome}) or 0.0


# -- 1. oversize and unstorable messages --------------------------------------------------------
async def test_an_oversize_message_goes_to_the_dlq_is_acknowledged_and_ingest_goes_on(root):
    """A message over max_payload_bytes (1 MiB, as HTTP) is never put on the events topic: a DLQ
    record ``oversize`` with its size and SHA-256, the message acknowledged; the next one flows."""
    url, client_id = f"mqtt://127.0.0.1:1883/{root}/#", f"atalaia-harden-{uuid.uuid4().hex[:8]}"
    big = b'{"pad": "' + b"A" * (2 << 20) + b'"}'
    before = counted("oversize")
    p = Recording()
    bridge = await started(MqttBridge(url, p, "atalaia.events", client_id=client_id))
    try:
        await publish(f"{root}/huge", big)
        await publish(f"{root}/after", OBS)
        await p.until(lambda: p.on("atalaia.events"))
        events = p.on("atalaia.events")
        assert [v for _, v, _, _ in events] == [OBS]  # the 2 MiB message is not on the events topic
        [(_, raw, _, _)] = p.on("atalaia.dlq")
        rec = read_dlq_record(raw, body=False)
        assert rec["rejections"][0]["code"] == "oversize" and rec["source"] == f"mqtt:{root}/huge"
        assert rec["size"] == len(big) and rec["sha256"] == hashlib.sha256(big).hexdigest()
        assert rec["body_truncated"] and rec["reasons"] == [
            f"payload of {len(big)} bytes exceeds the limit of {1 << 20} bytes"
        ]
        assert bridge.counts["oversize"] == 1 and counted("oversize") == before + 1
    finally:
        await bridge.stop()
    await nothing_comes_again(url, client_id)  # both were acknowledged


async def test_a_record_kafka_refuses_for_good_goes_to_the_dlq_and_ingest_goes_on(root, broker, topic_prefix):
    """Through the real producer (8 MiB max_request_size) with the payload limit raised above
    it: aiokafka refuses the 9 MiB record (MessageSizeTooLargeError). It used to be taken for a
    connection failure: never acknowledged, redelivered after every reconnect, ingest stopped."""
    from atalaia.streams.ingest.http import IngestProducer
    from tests.conftest import consume_all

    url, client_id = f"mqtt://127.0.0.1:1883/{root}/#", f"atalaia-harden-{uuid.uuid4().hex[:8]}"
    huge = b'{"pad": "' + b"A" * (9 << 20) + b'"}'
    producer = IngestProducer(broker)
    await producer.start()
    bridge = MqttBridge(
        url,
        producer,
        f"{topic_prefix}.events",
        client_id=client_id,
        dlq_topic=f"{topic_prefix}.dlq",
        max_payload_bytes=16 << 20,
    )
    try:
        await started(bridge)
        await publish(f"{root}/huge", huge)
        await publish(f"{root}/after", OBS)
        events = await consume_all(broker, f"{topic_prefix}.events", expect=1, timeout=30)
        assert [r.value for r in events] == [OBS]
        [dlq] = await consume_all(broker, f"{topic_prefix}.dlq", expect=1, timeout=30)
        rec = read_dlq_record(dlq.value, body=False)
        assert rec["rejections"][0]["code"] == "unstorable"
        assert "MessageSizeTooLargeError" in rec["reasons"][0]
        assert rec["size"] == len(huge) and rec["sha256"] == hashlib.sha256(huge).hexdigest()
        assert bridge.counts["unstorable"] == 1
    finally:
        await bridge.stop()
        await producer.stop()
        await end_session(client_id)


async def test_a_produce_error_about_the_record_is_not_retried_but_kept_on_the_dlq(root):
    """The same, with a producer that refuses one record as aiokafka does: the message goes to the
    DLQ at once (no reconnect, no redelivery) and the next one flows."""
    from aiokafka.errors import MessageSizeTooLargeError

    url, client_id = f"mqtt://127.0.0.1:1883/{root}/#", f"atalaia-harden-{uuid.uuid4().hex[:8]}"
    after = OBS.replace(b'"level": 1', b'"level": 2')
    p = Recording(fail=[MessageSizeTooLargeError("The message is 9437194 bytes when serialized")])
    bridge = await started(MqttBridge(url, p, "atalaia.events", client_id=client_id))
    try:
        await publish(f"{root}/bad", OBS)
        await publish(f"{root}/after", after)
        await p.until(lambda: len(p.got) == 2)
        assert [t for t, _, _, _ in p.got] == ["atalaia.dlq", "atalaia.events"]
        rec = read_dlq_record(p.got[0][1])
        assert rec["body"] == OBS and rec["rejections"][0]["code"] == "unstorable"
        assert p.got[1][1] == after and bridge.counts["unstorable"] == 1
    finally:
        await bridge.stop()
        await end_session(client_id)


async def test_a_connection_error_leaves_the_message_unacknowledged_to_come_again(root):
    """Only connection-type errors are retried: the message is not acknowledged, not put on the
    DLQ, and arrives once the producer works again."""
    from aiokafka.errors import KafkaConnectionError

    url, client_id = f"mqtt://127.0.0.1:1883/{root}/#", f"atalaia-harden-{uuid.uuid4().hex[:8]}"
    p = Recording(fail=[KafkaConnectionError("broker down")])
    bridge = await started(MqttBridge(url, p, "atalaia.events", client_id=client_id))
    try:
        await publish(f"{root}/gauge", OBS)
        await p.until(lambda: p.got, timeout=20)  # after the reconnect (2 s)
        assert [(t, v) for t, v, _, _ in p.got] == [("atalaia.events", OBS)]
    finally:
        await bridge.stop()
        await end_session(client_id)


# -- 2. retained messages -----------------------------------------------------------------------
async def test_retained_messages_are_not_ingested_on_subscription_nor_after_a_restart(root):
    url, client_id = f"mqtt://127.0.0.1:1883/{root}/#", f"atalaia-harden-{uuid.uuid4().hex[:8]}"
    stale = b'{"id": "urn:ngsi-ld:WaterLevel:r1", "type": "WaterLevel", "level": 9.9}'
    await publish(f"{root}/sensor", stale, retain=True)
    before = counted("retained")
    p = Recording()
    try:
        for n in (1, 2):  # the first subscription, then a restart with the same session
            bridge = await started(MqttBridge(url, p, "atalaia.events", client_id=client_id))
            try:
                live = OBS.replace(b'"level": 1', b'"level": %d' % n)
                await publish(f"{root}/live", live)  # (the broker sends retained ones first)
                await p.until(lambda n=n: len(p.got) == n)
                assert [v for _, v, _, _ in p.got][-1] == live
                assert stale not in [v for _, v, _, _ in p.got]
                assert bridge.counts["retained"] == 1
            finally:
                await bridge.stop()
        assert counted("retained") == before + 2
    finally:
        await publish(f"{root}/sensor", b"", retain=True)  # clear it
        await end_session(client_id)


# -- 3. client id, source -----------------------------------------------------------------------
def test_the_client_id_ends_in_a_random_suffix_kept_in_the_data_dir(tmp_path):
    url = "mqtt://127.0.0.1:1883/sensors/#"
    predictable = f"atalaia-ingest-{socket.gethostname()}-atalaia.events"[:64]
    assert MqttBridge(url, None, "atalaia.events").client_id != predictable  # (no data dir: per process)
    a = MqttBridge(url, None, "atalaia.events", data_dir=tmp_path / "a")
    again = MqttBridge(url, None, "atalaia.events", data_dir=tmp_path / "a")
    b = MqttBridge(url, None, "atalaia.events", data_dir=tmp_path / "b")
    assert a.client_id == again.client_id != b.client_id
    assert predictable not in (a.client_id, b.client_id) and len(a.client_id) <= 64
    suffix = (tmp_path / "a" / "mqtt-client-id").read_text().strip()
    assert a.client_id.endswith("-" + suffix) and len(suffix) == 16
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "mqtt-client-id").st_mode) == 0o600
    (tmp_path / "a" / "mqtt-client-id").write_text("garbage\n")  # unusable: a new one
    assert MqttBridge(url, None, "atalaia.events", data_dir=tmp_path / "a").client_id != a.client_id


async def test_a_restart_with_the_same_data_dir_resumes_the_persistent_session(root, tmp_path):
    """Messages published while the bridge is down arrive when it comes back (same suffix)."""
    s = Settings(mqtt_url=f"mqtt://127.0.0.1:1883/{root}/#", data_dir=tmp_path)
    first = await started(MqttBridge.from_settings(s, Recording()))
    await first.stop()
    await publish(f"{root}/gauge", OBS)  # while it is down
    p = Recording()
    second = await started(MqttBridge.from_settings(s, p))
    try:
        assert second.client_id == first.client_id
        await p.until(lambda: p.got)
        assert [(t, v) for t, v, _, _ in p.got] == [(s.topic("events"), OBS)]
    finally:
        await second.stop()
        await end_session(second.client_id)


async def test_the_topic_in_the_source_is_cut_to_200_characters(root):
    url, client_id = f"mqtt://127.0.0.1:1883/{root}/#", f"atalaia-harden-{uuid.uuid4().hex[:8]}"
    topic = f"{root}/" + "L" * 5000
    p = Recording()
    bridge = await started(MqttBridge(url, p, "atalaia.events", client_id=client_id))
    try:
        await publish(topic, OBS)
        await p.until(lambda: p.got)
        [(_, _, key, headers)] = p.got
        assert headers["source"] == f"mqtt:{topic[:200]}".encode()
        assert key == topic.encode()  # the key stays the whole topic (one sensor, one partition)
    finally:
        await bridge.stop()
        await end_session(client_id)


# -- 4. ATALAIA_MQTT_TENANT ---------------------------------------------------------------------
def _tenants(record: tuple[str, bytes, bytes | None, dict[str, bytes]]) -> set[str | None]:
    """The tenants of a produced event's observations, as the ingest stage reads it."""
    _, value, _, headers = record
    ev = RawEvent.from_record(value, list(headers.items()))
    res = parse_payload(
        ev.body,
        content_type=ev.content_type,
        headers=ev.extra,
        source=ev.source,
        received_at=datetime(2026, 1, 28, 10, 0, 5, tzinfo=UTC),
    )
    assert res.ok and res.observations, res.rejections
    return {o.tenant for o in res.observations}


async def test_mqtt_tenant_files_every_observation_under_it_whatever_the_body_says(root, tmp_path):
    body = orjson.dumps(
        {
            "entity": "urn:x:t1",
            "type": "WaterLevel",
            "time": "2026-01-28T10:00:00Z",
            "attributes": {"level": 1},
            "tenant": "lisboa",
        }
    )
    entity = b'{"id": "urn:ngsi-ld:WaterLevel:t2", "type": "WaterLevel", "level": 2}'
    for tenant, expected in (("porto", ["porto", "porto"]), (None, ["lisboa", None])):
        s = Settings(mqtt_url=f"mqtt://127.0.0.1:1883/{root}/#", mqtt_tenant=tenant, data_dir=tmp_path)
        p = Recording()
        bridge = await started(MqttBridge.from_settings(s, p))
        try:
            await publish(f"{root}/a", body)
            await publish(f"{root}/b", entity)
            await p.until(lambda p=p: len(p.got) == 2)
            assert [t for r in p.got for t in _tenants(r)] == expected
        finally:
            await bridge.stop()
            await end_session(bridge.client_id)


def test_mqtt_tenant_is_a_known_setting_and_a_bad_one_is_refused(monkeypatch):
    monkeypatch.setenv("ATALAIA_MQTT_TENANT", "porto")
    s = load_settings()
    assert s.mqtt_tenant == "porto" and "mqtt_tenant" in Settings.model_fields
    assert not [line for line in unknown_variables(os.environ, s) if "ATALAIA_MQTT_TENANT" in line]
    assert Settings.model_fields["mqtt_tenant"].description
    for bad in ("a|b", "a b", "a/b", ""):
        monkeypatch.setenv("ATALAIA_MQTT_TENANT", bad)
        with pytest.raises(SettingsError, match="ATALAIA_MQTT_TENANT"):
            load_settings()


# -- in-flight window ---------------------------------------------------------------------------
class Slow(Recording):
    """A producer whose sends take ``delay`` seconds (``stuck``: values whose send never ends);
    it notes the order sends start in and how many were in flight at once."""

    def __init__(self, delay: float, stuck: tuple[bytes, ...] = ()) -> None:
        super().__init__()
        self.delay, self.stuck = delay, stuck
        self.started: list[bytes] = []
        self.inflight = self.most = 0

    async def publish(self, topic, value, key=None, headers=None) -> None:
        self.started.append(value)
        self.inflight += 1
        self.most = max(self.most, self.inflight)
        try:
            if value in self.stuck:
                await asyncio.Event().wait()
            await asyncio.sleep(self.delay)
        finally:
            self.inflight -= 1
        await super().publish(topic, value, key, headers)


def numbered(n: int) -> list[bytes]:
    return [OBS.replace(b'"level": 1', b'"level": %d' % i) for i in range(n)]


async def publish_all(topic: str, payloads: list[bytes]) -> None:
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"pub-{uuid.uuid4().hex[:8]}") as c:
        for payload in payloads:
            await c.publish(topic, payload, qos=1)


async def test_kafka_sends_overlap_in_arrival_order(root):
    """40 messages whose sends take 0.3 s each: one at a time that was 12 s; with sends in
    flight together (Mosquitto lets 20 QoS 1 messages be unacknowledged) about 1 s."""
    url, client_id = f"mqtt://127.0.0.1:1883/{root}/#", f"atalaia-harden-{uuid.uuid4().hex[:8]}"
    payloads = numbered(40)
    p = Slow(0.3)
    bridge = await started(MqttBridge(url, p, "atalaia.events", client_id=client_id))
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await publish_all(f"{root}/gauge", payloads)
        await p.until(lambda: len(p.got) == len(payloads), timeout=20)
        took = loop.time() - t0
        assert p.started == payloads and [v for _, v, _, _ in p.got] == payloads
        assert p.most > 1 and took < 5, (p.most, took)
    finally:
        await bridge.stop()
        await end_session(client_id)


async def test_a_pending_send_holds_back_the_acknowledgements_of_later_messages(root):
    """Acknowledged in arrival order: the sends after a stuck one finish, but none of them is
    acknowledged before it; the bridge dies; all of them come again to the next session."""
    url, client_id = f"mqtt://127.0.0.1:1883/{root}/#", f"atalaia-harden-{uuid.uuid4().hex[:8]}"
    payloads = numbered(6)
    p = Slow(0, stuck=(payloads[0],))
    bridge = await started(MqttBridge(url, p, "atalaia.events", client_id=client_id))
    await publish_all(f"{root}/gauge", payloads)
    await p.until(lambda: len(p.got) == 5)  # all but the stuck one are on "Kafka"
    await bridge.stop()
    again = Recording()
    bridge = await started(MqttBridge(url, again, "atalaia.events", client_id=client_id))
    try:
        await again.until(lambda: len(again.got) == 6)
        assert [v for _, v, _, _ in again.got] == payloads
    finally:
        await bridge.stop()
        await end_session(client_id)


async def test_a_connection_error_in_the_window_redelivers_it_and_what_follows_only(root):
    """Message 3 of 8 fails with a connection error: 0-2 were acknowledged, 3-7 come again after
    the reconnect; in the end all 8 are on Kafka and acknowledged (a new session gets none)."""
    from aiokafka.errors import KafkaConnectionError

    url, client_id = f"mqtt://127.0.0.1:1883/{root}/#", f"atalaia-harden-{uuid.uuid4().hex[:8]}"
    payloads = numbered(8)

    class FailsOnce(Slow):
        failed = False

        async def publish(self, topic, value, key=None, headers=None) -> None:
            if value == payloads[3] and not self.failed:
                self.failed = True
                await asyncio.sleep(0.2)  # the ones after it are in flight meanwhile
                raise KafkaConnectionError("broker down")
            await super().publish(topic, value, key, headers)

    p = FailsOnce(0.05)
    bridge = await started(MqttBridge(url, p, "atalaia.events", client_id=client_id))
    try:
        await publish_all(f"{root}/gauge", payloads)
        await p.until(lambda: set(payloads) <= {v for _, v, _, _ in p.got}, timeout=20)
        await asyncio.sleep(1)
        got = [v for _, v, _, _ in p.got]
        assert got[:3] == payloads[:3] and all(got.count(v) == 1 for v in payloads[:3])  # acked
        assert got.count(payloads[3]) == 1 and all(got.count(v) in (1, 2) for v in payloads[4:])
    finally:
        await bridge.stop()
    await nothing_comes_again(url, client_id)
