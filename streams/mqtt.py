"""MQTT ingest: subscribe to a topic filter and put every message on ``atalaia.events``.

``ATALAIA_MQTT_URL=mqtt://host:1883/sensors/#`` (user:password@ in the URL if needed). The MQTT
topic becomes the Kafka key (a sensor publishes on its own topic, so its redeliveries land on
one partition) and the source header is ``mqtt:<topic>``. Subscriptions use QoS 1 with a
persistent session, so messages published while the worker is down are delivered on reconnect.
A QoS 1/2 message is acknowledged to the MQTT broker only after Kafka acknowledged its record
(manual acks), so a bridge that dies in between gets it again on reconnect (at least once).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlparse

from mode import Service

from atalaia.streams.events import RawEvent, format_time_now

log = logging.getLogger(__name__)


def parse_mqtt_url(url: str) -> tuple[str, int, str, str | None, str | None]:
    u = urlparse(url)
    if u.scheme not in ("mqtt", "tcp"):
        raise ValueError(f"MQTT URL must start with mqtt://, got {url!r}")
    # the topic filter is everything after host:port/ taken literally ('#' is a wildcard here,
    # not a URL fragment)
    rest = url.split("://", 1)[1]
    topic = rest.split("/", 1)[1] if "/" in rest else ""
    topic = topic or "#"
    return u.hostname or "127.0.0.1", u.port or 1883, topic, u.username, u.password


class MqttBridge(Service):
    def __init__(
        self, url: str, producer: Any, events_topic: str, client_id: str | None = None, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.host, self.port, self.filter, self.user, self.password = parse_mqtt_url(url)
        # one persistent session per bridge instance (two instances with one id would keep
        # taking each other's session over)
        import socket

        self.client_id = client_id or f"atalaia-ingest-{socket.gethostname()}-{events_topic}"[:64]
        self.producer, self.events_topic = producer, events_topic
        self.received = 0
        self.connected = asyncio.Event()

    async def on_start(self) -> None:
        self.add_future(self._run())

    async def _run(self) -> None:
        import aiomqtt

        while not self.should_stop:
            try:
                client = aiomqtt.Client(
                    self.host,
                    self.port,
                    username=self.user,
                    password=self.password,
                    identifier=self.client_id,
                    clean_session=False,
                )
                # aiomqtt (2.x) acknowledges on receipt; its paho client can leave that to us
                paho = client._client
                paho.manual_ack_set(True)
                async with client:
                    await client.subscribe(self.filter, qos=1)
                    self.connected.set()
                    log.info("MQTT: subscribed to %s on %s:%d", self.filter, self.host, self.port)
                    async for msg in client.messages:
                        payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
                        ev = RawEvent(
                            body=payload,
                            source=f"mqtt:{msg.topic}",
                            received_at=format_time_now(),
                            content_type="application/json",
                        )
                        await self.producer.publish(
                            self.events_topic, payload, key=str(msg.topic).encode(), headers=ev.headers()
                        )
                        if msg.qos > 0:  # only now: the record is on Kafka
                            paho.ack(msg.mid, msg.qos)
                        self.received += 1
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.connected.clear()
                log.warning("MQTT connection to %s:%d failed (%s); retrying in 2 s", self.host, self.port, e)
                await asyncio.sleep(2)
