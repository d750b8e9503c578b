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

Hardening: a message over ``max_payload_bytes`` (the HTTP limit, 1 MiB) is not put on the events
topic: a DLQ record ``oversize`` (its size and SHA-256, its beginning) goes to ``<prefix>.dlq``
and the message is acknowledged. A record Kafka refuses for good (too large, invalid) likewise
becomes a DLQ record (``unstorable``) and is acknowledged; only connection-type errors (broker
unreachable, timeouts, credentials or ACLs: ``_retryable``) leave the message unacknowledged, to
come again after the reconnect.
Retained messages the broker replays on (re)subscription (``retain`` set) are acknowledged and
dropped, never ingested: they are old readings, and one without its own time would be taken for
a new one at every restart. ``atalaia_ingest_mqtt_messages_total{outcome}`` counts them all.
The client id ends in a random suffix created once and kept in ``<data_dir>/mqtt-client-id``
(a restart resumes the same persistent session; another client cannot guess the id and take
the session over). ``ATALAIA_MQTT_TENANT`` files every MQTT observation under that tenant,
whatever the body says (the ``auth-tenant`` header an HTTP token bound to a tenant sets). The
topic in the ``source`` header is cut to ``SOURCE_TOPIC_CHARS`` characters. Up to ``WINDOW``
messages are handled at once, acknowledged in arrival order (``MqttBridge._bridge``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mode import Service

from atalaia.streams.ingest.dlq import oversize_record, to_dlq_record
from atalaia.streams.ingest.entity import bad_tenant
from atalaia.streams.ingest.events import RawEvent, format_time_now
from atalaia.streams.ingest.result import Rejection
from atalaia.streams.metrics import MQTT_MESSAGES, MQTT_OUTCOMES
from atalaia.streams.records import DLQ_MAX_BODY

log = logging.getLogger(__name__)


TLS_SCHEMES = ("mqtts", "ssl")
SOURCE_TOPIC_CHARS = 200  # of the MQTT topic in an observation's source (a topic may be 64 KiB)
CLIENT_ID_FILE = "mqtt-client-id"  # in the data directory: the client id's random suffix
_SUFFIX = re.compile(r"^[0-9a-f]{16}$")
DEFAULT_MAX_PAYLOAD = 1024 * 1024  # Settings.max_payload_bytes's default
WINDOW = 64  # messages handled at once (Kafka sends in flight; a broker's own limit may be lower)


def client_id_suffix(data_dir: Path | None) -> str:
    """The random suffix of the bridge's MQTT client id: made once and kept in
    ``data_dir/mqtt-client-id`` (owner-only), so a restart resumes the same persistent session;
    without a data directory, a new one for this process."""
    if data_dir is None:
        return secrets.token_hex(8)
    path = Path(data_dir) / CLIENT_ID_FILE
    try:
        kept = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        kept = ""
    if _SUFFIX.match(kept):
        return kept
    if kept:
        log.warning("MQTT: %s does not hold a client id suffix; making a new one", path)
    suffix = secrets.token_hex(8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{CLIENT_ID_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(suffix + "\n")
    os.replace(tmp, path)
    return suffix


def _retryable(e: BaseException) -> bool:
    """A produce error that is about the connection, not the record (broker unreachable, a
    timeout, a stopped producer, a retriable broker answer, credentials or ACLs): the message
    stays unacknowledged and comes again after the reconnect. Anything else (record too large,
    corrupt or invalid record, ...) would fail the same way forever: the message goes to the DLQ."""
    from aiokafka import errors

    connection = (
        OSError,
        TimeoutError,
        errors.KafkaConnectionError,
        errors.KafkaTimeoutError,
        errors.ProducerClosed,
        errors.NodeNotReadyError,
    )
    if isinstance(e, connection):
        return True
    name = type(e).__name__
    if "Authorization" in name or "Authentication" in name:  # the broker's set-up, not the record
        return True
    return isinstance(e, errors.KafkaError) and bool(getattr(e, "retriable", False))


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
        from atalaia.streams.kafka_config import KafkaConfigError, read_secret, tls_context

        password = None
        if settings.mqtt_password_file:
            password = read_secret(settings.mqtt_password_file, "ATALAIA_MQTT_PASSWORD_FILE")
            if not settings.mqtt_username:
                raise KafkaConfigError("ATALAIA_MQTT_PASSWORD_FILE is set without ATALAIA_MQTT_USERNAME")
        ctx = None
        if urlparse(settings.mqtt_url or "").scheme in TLS_SCHEMES:
            ctx = tls_context(
                settings.mqtt_ca_file,
                settings.mqtt_cert_file,
                settings.mqtt_key_file,
                check_hostname=settings.mqtt_check_hostname,
                names=("ATALAIA_MQTT_CA_FILE", "ATALAIA_MQTT_CERT_FILE", "ATALAIA_MQTT_KEY_FILE"),
            )
        elif settings.mqtt_ca_file or settings.mqtt_cert_file:
            raise KafkaConfigError("ATALAIA_MQTT_CA_FILE / CERT_FILE need an mqtts:// ATALAIA_MQTT_URL")
        return cls(settings.mqtt_username, password, ctx)


class MqttBridge(Service):
    def __init__(
        self,
        url: str,
        producer: Any,
        events_topic: str,
        client_id: str | None = None,
        security: MqttSecurity | None = None,
        *,
        dlq_topic: str | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        tenant: str | None = None,
        data_dir: Path | None = None,
        window: int = WINDOW,
        **kw: Any,
    ) -> None:
        """``dlq_topic`` (default: ``events_topic`` with ``dlq`` for ``events``) takes what is
        refused; ``tenant`` files every observation under it (ATALAIA_MQTT_TENANT); ``data_dir``
        keeps the client id's suffix (none: a new one per process); ``window``: messages handled
        at once (Kafka sends in flight), acknowledged in order (``_bridge``)."""
        super().__init__(**kw)
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window = window
        if bad_tenant(tenant):
            raise ValueError(f"ATALAIA_MQTT_TENANT: {bad_tenant(tenant)}")
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
        # taking each other's session over), its id ending in a random suffix kept in data_dir
        # (a predictable id let another client of an anonymous broker take the session over)
        import socket

        if client_id is None:
            suffix = client_id_suffix(data_dir)
            client_id = f"{f'atalaia-ingest-{socket.gethostname()}-{events_topic}'[:47]}-{suffix}"
        self.client_id = client_id
        self.producer, self.events_topic = producer, events_topic
        if dlq_topic is None:
            base = events_topic.removesuffix("events")
            dlq_topic = f"{base}dlq" if base != events_topic else f"{events_topic}.dlq"
        self.dlq_topic, self.max_payload_bytes, self.tenant = dlq_topic, max_payload_bytes, tenant
        self.received = 0  # messages put on the events topic
        self.counts = dict.fromkeys(MQTT_OUTCOMES, 0)
        self.connected = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: Any, producer: Any, **kw: Any) -> MqttBridge:
        """The bridge ``ATALAIA_MQTT_*`` describe (a bad file or setting: refused here, at start)."""
        return cls(
            settings.mqtt_url,
            producer,
            settings.topic("events"),
            security=MqttSecurity.from_settings(settings),
            dlq_topic=settings.topic("dlq"),
            max_payload_bytes=settings.max_payload_bytes,
            tenant=settings.mqtt_tenant,
            data_dir=settings.data_dir,
            **kw,
        )

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        MQTT_MESSAGES.labels(outcome).inc()

    async def _handle(self, msg: Any) -> None:
        """One message: on the events topic, or the DLQ, or dropped (retained); raises only when
        it must come again (a connection-type error: the caller reconnects, unacknowledged)."""
        if msg.retain:  # replayed by the broker on (re)subscription: an old reading
            self._count("retained")
            return
        payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
        topic = str(msg.topic)
        source = f"mqtt:{topic[:SOURCE_TOPIC_CHARS]}"
        if len(payload) > self.max_payload_bytes:
            record = oversize_record(
                payload,
                source,
                self.max_payload_bytes,
                sha256=hashlib.sha256(payload).hexdigest(),
                content_type="application/json",
                received_at=datetime.now(UTC),
            )
            await self.producer.publish(self.dlq_topic, record, headers=[])
            self._count("oversize")
            log.warning(
                "MQTT: a %d-byte message on %r is over the limit: on the DLQ", len(payload), topic[:200]
            )
            return
        ev = RawEvent(
            body=payload,
            source=source,
            received_at=format_time_now(),
            content_type="application/json",
            extra={"auth-tenant": self.tenant} if self.tenant is not None else None,
        )
        try:
            await self.producer.publish(
                self.events_topic, payload, key=topic.encode(errors="replace"), headers=ev.headers()
            )
        except Exception as e:
            if _retryable(e):
                raise
            reason = f"the record cannot be stored: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
            record = to_dlq_record(
                payload,
                source,
                reason,
                rejections=[Rejection(reason, "payload", "unstorable")],
                content_type="application/json",
                received_at=datetime.now(UTC),
                max_body_bytes=DLQ_MAX_BODY,
            )
            await self.producer.publish(self.dlq_topic, record, headers=[])
            self._count("unstorable")
            log.warning(
                "MQTT: a message on %r cannot be stored (%s): on the DLQ", topic[:200], type(e).__name__
            )
            return
        self._count("accepted")
        self.received += 1

    async def _bridge(self, client: Any, paho: Any) -> None:
        """Up to ``window`` messages are handled at once (their Kafka sends in flight together,
        started in arrival order); each is acknowledged to the broker in arrival order (MQTT
        wants PUBACKs in order) once it and every message before it are on Kafka. A message
        whose send fails for a connection-type reason ends the connection: it and every message
        after it stay unacknowledged and come again (the ones after it possibly twice on Kafka:
        at least once, as before)."""
        window: asyncio.Queue[tuple[Any, asyncio.Task[None]]] = asyncio.Queue(self.window)

        async def ack_in_order() -> None:
            while True:
                msg, task = await window.get()
                await task  # a connection-type error: raised here, ends the connection
                if msg.qos > 0:  # only now: the record (or its DLQ record) is on Kafka
                    paho.ack(msg.mid, msg.qos)

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(ack_in_order())
                async for msg in client.messages:
                    await window.put((msg, asyncio.create_task(self._handle(msg))))
        finally:
            while not window.empty():  # unacknowledged: they come again after the reconnect
                _, task = window.get_nowait()
                if task.done() and not task.cancelled():
                    task.exception()  # (retrieved: no "never retrieved" warning)
                task.cancel()

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
                    await self._bridge(client, paho)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if isinstance(e, ExceptionGroup):  # (from _bridge's task group): the first cause
                    e = e.exceptions[0]
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
