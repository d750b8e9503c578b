"""MQTT ingest: subscribe to a topic filter and put every message on ``atalaia.events``.

``ATALAIA_MQTT_URL=mqtt://host:1883/sensors/#`` (user:password@ in the URL if needed). The MQTT
topic becomes the Kafka key (a sensor publishes on its own topic, so its redeliveries land on
one partition) and the source header is ``mqtt:<topic>``. Subscriptions use QoS 1 with a
persistent session, so messages published while the worker is down are delivered on reconnect.
A QoS 1/2 message is acknowledged to the MQTT broker only after Kafka acknowledged its record
(manual acks), so a bridge that dies in between gets it again on reconnect (at least once).

Security: ``mqtts://host:8883/topic/#`` connects with TLS (``ATALAIA_MQTT_CA_FILE``, else the
system's CAs; ``ATALAIA_MQTT_CERT_FILE`` + ``ATALAIA_MQTT_KEY_FILE`` for a client certificate;
the host name is checked unless ``ATALAIA_MQTT_CHECK_HOSTNAME=false``). ``ATALAIA_MQTT_USERNAME``
with ``ATALAIA_MQTT_PASSWORD_FILE`` log in without putting the password in the URL or the
environment. A broker that refuses the credentials is reported at ERROR level on every retry
(``refused`` says why) — never a silent reconnect loop.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from mode import Service

from atalaia.streams.ingest.events import RawEvent, format_time_now

log = logging.getLogger(__name__)


TLS_SCHEMES = ("mqtts", "ssl")


def parse_mqtt_url(url: str) -> tuple[str, int, str, str | None, str | None]:
    u = urlparse(url)
    if u.scheme not in ("mqtt", "tcp", *TLS_SCHEMES):
        raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
    # the topic filter is everything after host:port/ taken literally ('#' is a wildcard here,
    # not a URL fragment)
    rest = url.split("://", 1)[1]
    topic = rest.split("/", 1)[1] if "/" in rest else ""
    topic = topic or "#"
    port = u.port or (8883 if u.scheme in TLS_SCHEMES else 1883)
    return u.hostname or "127.0.0.1", port, topic, u.username, u.password


@dataclass(frozen=True)
class MqttSecurity:
    """Credentials and TLS of the MQTT connection (from ``ATALAIA_MQTT_*``)."""

    username: str | None = None
    password: str | None = None
    tls_context: ssl.SSLContext | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> MqttSecurity:
        from atalaia.streams.kafka_config import read_secret, tls_context

        password = None
        if settings.mqtt_password_file:
            password = read_secret(settings.mqtt_password_file, "ATALAIA_MQTT_PASSWORD_FILE")
            if not settings.mqtt_username:
                raise ValueError("ATALAIA_MQTT_PASSWORD_FILE is set without ATALAIA_MQTT_USERNAME")
        ctx = None
        if urlparse(settings.mqtt_url or "").scheme in TLS_SCHEMES:
            ctx = tls_context(
                settings.mqtt_ca_file,
                settings.mqtt_cert_file,
                settings.mqtt_key_file,
                check_hostname=settings.mqtt_check_hostname,
                prefix="ATALAIA_MQTT",
            )
        elif settings.mqtt_ca_file or settings.mqtt_cert_file:
            raise ValueError("ATALAIA_MQTT_CA_FILE / CERT_FILE need an mqtts:// ATALAIA_MQTT_URL")
        return cls(settings.mqtt_username, password, ctx)


class MqttBridge(Service):
    def __init__(
        self,
        url: str,
        producer: Any,
        events_topic: str,
        client_id: str | None = None,
        security: MqttSecurity | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.host, self.port, self.filter, self.user, self.password = parse_mqtt_url(url)
        security = security or MqttSecurity()
        if urlparse(url).scheme in TLS_SCHEMES and security.tls_context is None:
            from atalaia.streams.kafka_config import tls_context

            security = MqttSecurity(security.username, security.password, tls_context(None, None, None))
        self.tls_context = security.tls_context
        if security.username:  # the settings win over user:password@ in the URL
            self.user, self.password = security.username, security.password
        self.refused: str | None = None  # why the broker refused us (credentials, certificate)
        self.tls_error: str | None = None  # a TLS alert paho saw (TLS 1.3 rejects a client
        # certificate after the handshake: the connect itself only times out)
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
                    tls_context=self.tls_context,
                    logger=_PahoLog(self),
                )
                # aiomqtt (2.x) acknowledges on receipt; its paho client can leave that to us
                paho = client._client
                paho.manual_ack_set(True)
                async with client:
                    await client.subscribe(self.filter, qos=1)
                    self.connected.set()
                    self.refused = None
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
                if (
                    _refused(e) or self.tls_error
                ):  # wrong credentials / not authorised / bad certificate: say it loudly
                    self.refused = self.tls_error or str(e)
                    self.tls_error = None
                    log.error(
                        "MQTT broker %s:%d REFUSED Atalaia (%s): no events are ingested from it. Check "
                        "ATALAIA_MQTT_USERNAME / ATALAIA_MQTT_PASSWORD_FILE and the TLS certificates; "
                        "retrying in 10 s",
                        self.host,
                        self.port,
                        self.refused,
                    )
                    await asyncio.sleep(10)
                    continue
                log.warning("MQTT connection to %s:%d failed (%s); retrying in 2 s", self.host, self.port, e)
                await asyncio.sleep(2)


def _refused(e: Exception) -> bool:
    """The broker said no (CONNACK 4/5, MQTT 5 0x86/0x87) or the TLS handshake failed: retrying
    the same credentials will not help."""
    rc = getattr(e, "rc", None)
    code = getattr(rc, "value", rc)
    if code in (4, 5, 0x86, 0x87):
        return True
    return isinstance(e, ssl.SSLError) or isinstance(e.__cause__ or e.__context__, ssl.SSLError)


class _PahoLog(logging.LoggerAdapter):
    """paho/aiomqtt's logger: notes TLS alerts (a refused client certificate) for the bridge."""

    def __init__(self, bridge: MqttBridge) -> None:
        super().__init__(logging.getLogger("atalaia.streams.ingest.mqtt.client"), {})
        self.bridge = bridge

    def log(self, level: int, msg: Any, *args: Any, **kw: Any) -> None:
        if level >= logging.ERROR:
            text = str(msg) % args if args else str(msg)
            if "SSL" in text or "certificate" in text:
                self.bridge.tls_error = text
        super().log(level, msg, *args, **kw)
