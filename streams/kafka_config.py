"""How every Kafka client of this process connects: TLS and SASL, built once from the settings.

Every aiokafka client (producers, consumers, admin clients: the stages, the ingest producer, the
console's live feed and reply watcher, the broker guard, ``atalaia send`` / ``tail``) is made
with ``**client_options(bootstrap)``, and Faust gets the same as ``broker_credentials``
(:func:`faust_credentials`), so one setting secures all of them::

    ATALAIA_KAFKA=kafka-1:9093,kafka-2:9093
    ATALAIA_KAFKA_SECURITY_PROTOCOL=SASL_SSL          # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    ATALAIA_KAFKA_SASL_MECHANISM=SCRAM-SHA-512        # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    ATALAIA_KAFKA_SASL_USERNAME=atalaia
    ATALAIA_KAFKA_SASL_PASSWORD_FILE=/run/secrets/kafka_password
    ATALAIA_KAFKA_SSL_CAFILE=/etc/atalaia/kafka-ca.pem      # unset: the system's trust store
    ATALAIA_KAFKA_SSL_CERTFILE=/etc/atalaia/client.pem      # client certificate (mutual TLS)
    ATALAIA_KAFKA_SSL_KEYFILE=/etc/atalaia/client.key
    ATALAIA_KAFKA_SSL_CHECK_HOSTNAME=true

Security applies to the external Kafka of ``ATALAIA_KAFKA`` only: the embedded broker listens on
loopback in plain text. A setting that cannot work (a SASL protocol without a username or
password file, a certificate without its key, an unreadable file) raises
:class:`KafkaConfigError` with the setting's name at start-up, never at the first send.

What the broker can do is asked once per bootstrap (:func:`broker_kind`): a broker that grants an
idempotent producer id (Apache Kafka) is ``"kafka"``, one that does not (Tansu, the embedded
broker) is ``"tansu"``. Producers follow it (:func:`producer_options`: ``acks=all`` and
idempotence on Kafka, where ``acks=1`` loses acknowledged records on a leader change; ``acks=1``
on Tansu, which has no idempotent producer), and so does the default stage state store
(:func:`state_store`: the compacted ``<prefix>.state.<stage>`` topics on Kafka, the data
directory on Tansu, which keeps topics in memory and does not compact).
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaConfigError(ValueError):
    """Kafka security settings that cannot work; the message names the ATALAIA_* setting."""


def read_secret(path: Path | str, setting: str) -> str:
    """The content of a secret file without its trailing newline (how Docker/Kubernetes secrets and
    ``echo pw > file`` leave it)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise KafkaConfigError(f"{setting}={path}: cannot read the secret file: {e.strerror or e}") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise KafkaConfigError(f"{setting}={path}: the secret file is empty")
    return secret


def tls_context(
    cafile: Path | str | None,
    certfile: Path | str | None,
    keyfile: Path | str | None,
    *,
    check_hostname: bool = True,
    key_password: str | None = None,
    prefix: str = "ATALAIA_KAFKA_SSL",
    names: tuple[str, str, str] | None = None,
) -> ssl.SSLContext:
    """A client TLS context: verify the server against ``cafile`` (else the system trust store),
    present ``certfile``/``keyfile`` when given (mutual TLS), check the host name unless told not to.
    Errors name the settings: ``names`` (CA, certificate, key), else ``<prefix>_CAFILE`` ..."""
    ca_name, cert_name, key_name = names or (f"{prefix}_CAFILE", f"{prefix}_CERTFILE", f"{prefix}_KEYFILE")
    if keyfile and not certfile:
        raise KafkaConfigError(f"{key_name} is set without {cert_name}")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None)
    except (OSError, ssl.SSLError) as e:
        raise KafkaConfigError(f"{ca_name}={cafile}: not a readable PEM CA bundle: {e}") from None
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED  # never turned off: without a CA file, the system's CAs
    if certfile:
        try:
            ctx.load_cert_chain(str(certfile), str(keyfile) if keyfile else None, password=key_password)
        except (OSError, ssl.SSLError) as e:
            raise KafkaConfigError(
                f"{cert_name}={certfile} / {key_name}={keyfile}: cannot load the client "
                f"certificate and key (a certificate without {key_name} must hold its key): {e}"
            ) from None
    return ctx


@dataclass(frozen=True)
class KafkaSecurity:
    """The security half of a Kafka client's configuration (the other half is the bootstrap)."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = None
    ssl_context: ssl.SSLContext | None = None

    @property
    def secure(self) -> bool:
        return self.protocol != "PLAINTEXT"

    @classmethod
    def from_settings(cls, settings: Any) -> KafkaSecurity:
        protocol = (settings.kafka_security_protocol or "PLAINTEXT").upper()
        if protocol not in PROTOCOLS:
            raise KafkaConfigError(
                f"ATALAIA_KAFKA_SECURITY_PROTOCOL={protocol!r}: use one of {', '.join(PROTOCOLS)}"
            )
        if protocol == "PLAINTEXT":
            return cls()
        mechanism = username = password = None
        if protocol.startswith("SASL_"):
            mechanism = (settings.kafka_sasl_mechanism or "PLAIN").upper()
            if mechanism not in MECHANISMS:
                raise KafkaConfigError(
                    f"ATALAIA_KAFKA_SASL_MECHANISM={mechanism!r}: use one of {', '.join(MECHANISMS)}"
                )
            username = settings.kafka_sasl_username
            if not username:
                raise KafkaConfigError(f"{protocol} needs ATALAIA_KAFKA_SASL_USERNAME")
            if not settings.kafka_sasl_password_file:
                raise KafkaConfigError(
                    f"{protocol} needs ATALAIA_KAFKA_SASL_PASSWORD_FILE (a file holding the password)"
                )
            password = read_secret(settings.kafka_sasl_password_file, "ATALAIA_KAFKA_SASL_PASSWORD_FILE")
        ctx = None
        if protocol.endswith("SSL"):
            key_password = None
            if settings.kafka_ssl_key_password_file:
                key_password = read_secret(
                    settings.kafka_ssl_key_password_file, "ATALAIA_KAFKA_SSL_KEY_PASSWORD_FILE"
                )
            ctx = tls_context(
                settings.kafka_ssl_cafile,
                settings.kafka_ssl_certfile,
                settings.kafka_ssl_keyfile,
                check_hostname=settings.kafka_ssl_check_hostname,
                key_password=key_password,
            )
        elif settings.kafka_ssl_cafile or settings.kafka_ssl_certfile:
            log.warning(
                "ATALAIA_KAFKA_SSL_* is set but ATALAIA_KAFKA_SECURITY_PROTOCOL=%s has no TLS: "
                "use SSL or SASL_SSL",
                protocol,
            )
        return cls(protocol, mechanism, username, password, ctx)

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient."""
        if not self.secure:
            return {}
        out: dict[str, Any] = {"security_protocol": self.protocol}
        if self.ssl_context is not None:
            out["ssl_context"] = self.ssl_context
        if self.mechanism:
            out.update(
                sasl_mechanism=self.mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        return out

    def faust_credentials(self) -> Any:
        """Faust's ``broker_credentials`` (None: plain text)."""
        if not self.secure:
            return None
        import faust

        if self.mechanism:
            creds = faust.SASLCredentials(
                username=self.username,
                password=self.password,
                ssl_context=self.ssl_context,
                mechanism=self.mechanism,
            )
            return creds
        return faust.SSLCredentials(self.ssl_context)

    def __repr__(self) -> str:  # never the password
        return f"KafkaSecurity({self.protocol}, mechanism={self.mechanism}, user={self.username})"


PLAINTEXT = KafkaSecurity()
_by_bootstrap: dict[str, KafkaSecurity] = {}


def configure(settings: Any, bootstrap: str) -> KafkaSecurity:
    """Decide (once per bootstrap) how this process's clients reach ``bootstrap``: the settings'
    security for the external Kafka (``settings.kafka``), plain text for an embedded broker."""
    if settings.kafka and bootstrap == settings.kafka:
        sec = KafkaSecurity.from_settings(settings)
    else:
        sec = PLAINTEXT
        if (settings.kafka_security_protocol or "PLAINTEXT").upper() != "PLAINTEXT":
            log.warning(
                "ATALAIA_KAFKA_SECURITY_PROTOCOL=%s applies to ATALAIA_KAFKA only; the embedded "
                "broker on %s is plain text on loopback",
                settings.kafka_security_protocol,
                bootstrap,
            )
    _by_bootstrap[bootstrap] = sec
    return sec


def security(bootstrap: str) -> KafkaSecurity:
    """The security configured for ``bootstrap``; not configured yet: from the process settings."""
    sec = _by_bootstrap.get(bootstrap)
    if sec is None:
        from atalaia.streams.settings import get_settings

        sec = configure(get_settings(), bootstrap)
    return sec


def client_options(bootstrap: str) -> dict[str, Any]:
    """``bootstrap_servers`` plus the security keyword arguments of an aiokafka client."""
    return {"bootstrap_servers": bootstrap, **security(bootstrap).aiokafka()}


KAFKA, TANSU = "kafka", "tansu"
_kinds: dict[str, str] = {}


async def probe_kind(client: Any) -> str:
    """``"kafka"`` if the broker grants an idempotent producer id (InitProducerId without a
    transactional id: what every idempotent producer asks first), else ``"tansu"``.

    ``client`` is an ``aiokafka.AIOKafkaClient`` (public, exported by aiokafka) and the request
    is sent raw with its ``send``: aiokafka has no public call that asks a broker for a producer
    id without starting an idempotent producer, and starting one is what must not fail here (a
    Tansu broker refuses it). ``AIOKafkaClient.send`` and the protocol classes are the layer
    aiokafka's own producers and admin client are built on."""
    from aiokafka.protocol.transaction import InitProducerIdRequest

    node = client.get_random_node()
    try:
        resp = await client.send(node, InitProducerIdRequest(None, 2**31 - 1))
    except Exception as e:  # an unsupported or failing request: no idempotent producer here
        log.info("the broker grants no idempotent producer (%s: %s)", type(e).__name__, e)
        return TANSU
    if resp.error_code in (31, 53):  # CLUSTER_/TRANSACTIONAL_ID_AUTHORIZATION_FAILED: a Kafka
        log.warning(
            "the broker refused this user an idempotent producer id (error %d): producing with "
            "acks=1 and, unless ATALAIA_STATE_STORE says otherwise, stage state in the data "
            "directory; grant the IdempotentWrite (or a topic Write) ACL",
            resp.error_code,
        )
    return KAFKA if resp.error_code == 0 else TANSU


def remember_kind(bootstrap: str, kind: str) -> str:
    if _kinds.get(bootstrap) != kind:
        log.info(
            "broker %s: %s",
            bootstrap,
            "idempotent producer: produce with acks=all, idempotence"
            if kind == KAFKA
            else "no idempotent producer (Tansu): produce with acks=1",
        )
    _kinds[bootstrap] = kind
    return kind


def known_kind(bootstrap: str) -> str | None:
    """The kind :func:`broker_kind` found for ``bootstrap`` in this process, if it asked."""
    return _kinds.get(bootstrap)


async def broker_kind(bootstrap: str) -> str:
    """``"kafka"`` or ``"tansu"`` (see the module docstring), asked once per bootstrap."""
    kind = _kinds.get(bootstrap)
    if kind is None:
        from aiokafka.client import AIOKafkaClient

        client = AIOKafkaClient(**client_options(bootstrap))
        await client.bootstrap()
        try:
            kind = remember_kind(bootstrap, await probe_kind(client))
        finally:
            await client.close()
    return kind


def producer_options(kind: str | None) -> dict[str, Any]:
    """The durability options of a producer on a broker of ``kind``: on Kafka every in-sync
    replica acknowledges and retries cannot duplicate or reorder; on Tansu (no idempotent
    producer) and when the kind is not known, the leader acknowledges."""
    if kind == KAFKA:
        return {"acks": "all", "enable_idempotence": True}
    return {"acks": 1}


def retry_refused_writes(producer: Any, kind: str | None) -> Any:
    """On Tansu, ``producer`` writes again what the broker refused with ``UnknownError``, in order
    (as it does any retriable error), until its request timeout; ``producer`` is returned.

    Tansu (0.6, memory storage) keeps taking records for a topic deleted under running producers
    (their metadata still names it), and a topic re-created under that name starts its offsets at
    0 with those records still there: each write whose first offset is one of theirs is refused
    with ``UnknownError`` (Kafka error -1, not retriable for aiokafka) and moves the broker's next
    offset on past it. A stage failed on the first such write, and restarted, on the next one.
    Written again, each write lands once the offsets pass those records; the records themselves
    stay at the new log's first offsets (readers see them: they were written in the gap), unless
    the broker check re-created the topic itself (it drops them first: ``streams.guard``).

    aiokafka has no setting for which errors a producer retries: its produce handler
    (``aiokafka.producer.sender.SendProduceReqHandler._can_retry``) is replaced once per process
    by a subclass that also retries ``UnknownError`` for the producers marked here, so a retry
    keeps the producer's order (one request in flight, the batch put back at its partition's
    head). Other producers (Kafka, where the error means something else) are unchanged. An
    aiokafka without that handler leaves ``producer`` as it is, with one WARNING: such a write then
    fails the stage, as before, rather than every producer failing to start."""
    if kind == KAFKA:
        return producer
    import aiokafka
    from aiokafka.errors import UnknownError
    from aiokafka.producer import sender

    handler = getattr(sender, "SendProduceReqHandler", None)
    if not hasattr(handler, "_can_retry") or not hasattr(producer, "_sender"):
        log.warning(
            "aiokafka %s has no produce handler Atalaia can extend: a write the embedded broker "
            "refuses with UnknownError (a topic deleted and re-created while written to) fails the "
            "stage writing it",
            aiokafka.__version__,
        )
        return producer
    if not getattr(sender.SendProduceReqHandler, "_atalaia", False):

        class RetryRefused(sender.SendProduceReqHandler):  # type: ignore[misc,name-defined]
            _atalaia = True

            def _can_retry(self, error: Any, batch: Any) -> bool:
                if isinstance(error, UnknownError) and getattr(self._sender, "_atalaia_retry", False):
                    if batch.expired():
                        return False
                    log.warning(
                        "the broker refused a write to %s with UnknownError: writing it again (on "
                        "the embedded broker: a topic deleted and re-created while it was written "
                        "to, whose new log starts with records written in between)",
                        batch.tp,
                    )
                    return True
                return super()._can_retry(error, batch)

        sender.SendProduceReqHandler = RetryRefused
    producer._sender._atalaia_retry = True
    return producer


def state_store(setting: str, kind: str | None) -> str:
    """Where stages keep their checkpoints: ``ATALAIA_STATE_STORE`` (``file`` | ``kafka``), or
    for ``auto`` the broker kind's default: the compacted state topics on Kafka, the data
    directory on Tansu (topics in memory, no compaction)."""
    if setting in ("file", "kafka"):
        return setting
    return "kafka" if kind == KAFKA else "file"


def faust_credentials(bootstrap: str) -> dict[str, Any]:
    """The Faust settings that secure its clients the same way (``{}`` for plain text)."""
    creds = security(bootstrap).faust_credentials()
    return {"broker_credentials": creds} if creds is not None else {}
