"""MQTT acknowledges after the Kafka ack: a bridge that dies while its produce is unacknowledged
gets the message again from Mosquitto (127.0.0.1:1883) when it reconnects."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest

from atalaia.streams.ingest.mqtt import MqttBridge

pytestmark = pytest.mark.mqtt


def _mosquitto() -> None:
    try:
        socket.create_connection(("127.0.0.1", 1883), timeout=1).close()
    except OSError as e:
        pytest.skip(f"no MQTT broker at 127.0.0.1:1883: {e}")


class NeverAcked:
    """A producer whose Kafka ack never comes (the bridge dies waiting)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def publish(self, topic, value, key=None, headers=None) -> None:
        self.started.set()
        await asyncio.Event().wait()


class Recording:
    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.arrived = asyncio.Event()

    async def publish(self, topic, value, key=None, headers=None) -> None:
        self.got.append(value)
        self.arrived.set()


async def _publish(topic: str, payload: bytes) -> None:
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"pub-{uuid.uuid4().hex[:8]}") as c:
        await c.publish(topic, payload, qos=1)


async def _bridge(url: str, producer, client_id: str) -> MqttBridge:
    b = MqttBridge(url, producer, "events", client_id=client_id)
    await b.start()
    await asyncio.wait_for(b.connected.wait(), 10)
    return b


async def test_a_message_unacknowledged_by_kafka_is_redelivered_after_a_crash():
    _mosquitto()
    root = f"atalaia-test/ack-{uuid.uuid4().hex[:8]}"
    url, client_id = f"mqtt://127.0.0.1:1883/{root}/#", f"atalaia-ack-{uuid.uuid4().hex[:8]}"
    payload = b'{"id": "urn:x:1", "type": "T", "dateObserved": "2026-01-28T10:00:00Z", "v": 1}'

    stuck = NeverAcked()
    bridge = await _bridge(url, stuck, client_id)
    await _publish(f"{root}/gauge", payload)
    await asyncio.wait_for(stuck.started.wait(), 10)  # received, its Kafka produce pending
    await bridge.stop()  # the bridge dies before the Kafka ack

    recording = Recording()
    bridge = await _bridge(url, recording, client_id)  # same persistent session
    try:
        await asyncio.wait_for(recording.arrived.wait(), 15)
        assert recording.got == [payload]
        # once Kafka acked it, it is acknowledged: a third session gets nothing again
    finally:
        await bridge.stop()
    again = Recording()
    bridge = await _bridge(url, again, client_id)
    try:
        await asyncio.sleep(2)
        assert again.got == []
    finally:
        await bridge.stop()
        # end the persistent session on the broker
        import aiomqtt

        async with aiomqtt.Client("127.0.0.1", 1883, identifier=client_id, clean_session=True):
            pass
