"""MQTT over TLS with a client certificate and a username/password from a secret file, against a
Mosquitto started by the test (TLS listener, password file made with ``mosquitto_passwd``);
messages flow into ``<prefix>.events``; a wrong password is refused loudly."""

from __future__ import annotations

import asyncio
import getpass
import logging
import shutil
import subprocess
import uuid

import pytest

from atalaia.streams.broker import free_port, wait_for_port
from atalaia.streams.ingest.http import IngestProducer
from atalaia.streams.ingest.mqtt import MqttBridge, MqttSecurity, parse_mqtt_url
from atalaia.streams.settings import Settings
from tests.conftest import consume_all
from tests.tlskit import make_pki


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory):
    if not shutil.which("mosquitto") or not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto and mosquitto_passwd are not installed")
    d = tmp_path_factory.mktemp("mosquitto")
    pki = make_pki(d / "pki")
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(d / "passwd"), "atalaia", "right horse"], check=True)
    port = free_port()
    conf = d / "mosquitto.conf"
    conf.write_text(
        f"""user {getpass.getuser()}
persistence false
log_dest stderr
listener {port} 127.0.0.1
cafile {pki.ca_pem}
certfile {pki.server_pem}
keyfile {pki.server_key}
require_certificate true
password_file {d / "passwd"}
allow_anonymous false
"""
    )
    log = open(d / "mosquitto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log, stderr=log)
    try:
        wait_for_port("127.0.0.1", port, 10)
        yield {"port": port, "pki": pki, "dir": d}
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def bridge_settings(m, password: str, **kw) -> Settings:
    pw = m["dir"] / f"pw-{uuid.uuid4().hex[:6]}"
    pw.write_text(password + "\n")
    pki = m["pki"]
    return Settings(
        mqtt_url=f"mqtts://127.0.0.1:{m['port']}/city/{uuid.uuid4().hex[:6]}/#",
        mqtt_username="atalaia",
        mqtt_password_file=pw,
        mqtt_ca_file=pki.ca_pem,
        mqtt_cert_file=kw.get("cert", pki.client_pem),
        mqtt_key_file=kw.get("key", pki.client_key),
    )


async def publish(m, topic: str, payload: bytes) -> None:
    import aiomqtt

    from atalaia.streams.kafka_config import tls_context

    pki = m["pki"]
    ctx = tls_context(pki.ca_pem, pki.client_pem, pki.client_key)
    async with aiomqtt.Client(
        "127.0.0.1", m["port"], username="atalaia", password="right horse", tls_context=ctx
    ) as c:
        await c.publish(topic, payload, qos=1)


def test_mqtts_url_defaults_to_port_8883():
    assert parse_mqtt_url("mqtts://broker.city/sensors/#")[:3] == ("broker.city", 8883, "sensors/#")
    assert parse_mqtt_url("mqtt://broker.city/sensors/#")[1] == 1883


def test_a_password_file_without_a_username_or_tls_files_on_plain_mqtt_are_refused(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("x")
    with pytest.raises(ValueError, match="ATALAIA_MQTT_USERNAME"):
        MqttSecurity.from_settings(Settings(mqtt_url="mqtt://h/#", mqtt_password_file=pw))
    with pytest.raises(ValueError, match="mqtts://"):
        MqttSecurity.from_settings(Settings(mqtt_url="mqtt://h/#", mqtt_ca_file=pw))


async def test_messages_flow_over_tls_with_client_certificate_and_password_file(
    mosquitto, broker, topic_prefix
):
    s = bridge_settings(mosquitto, "right horse")
    root = s.mqtt_url.split("/", 3)[3].rstrip("#")
    producer = IngestProducer(broker)
    await producer.start()
    bridge = MqttBridge(
        s.mqtt_url, producer, f"{topic_prefix}.events", security=MqttSecurity.from_settings(s)
    )
    await bridge.start()
    try:
        await asyncio.wait_for(bridge.connected.wait(), 15)
        payload = b'{"id": "urn:ngsi-ld:WaterObserved:mqtts-1", "type": "WaterObserved", "height": 2.5}'
        await publish(mosquitto, f"{root}gauge-1", payload)
        records = await consume_all(broker, f"{topic_prefix}.events", expect=1, timeout=30)
        assert [r.value for r in records] == [payload]
        assert dict(records[0].headers)["source"] == f"mqtt:{root}gauge-1".encode()
    finally:
        await bridge.stop()
        await producer.stop()


@pytest.mark.parametrize("what", ["password", "certificate"])
async def test_wrong_credentials_are_refused_loudly(mosquitto, caplog, what):
    pki = mosquitto["pki"]
    if what == "password":
        s = bridge_settings(mosquitto, "wrong horse")
    else:  # a certificate from a CA the broker does not trust
        s = bridge_settings(mosquitto, "right horse", cert=pki.rogue_pem, key=pki.rogue_key)

    class Nothing:
        async def publish(self, *a, **kw) -> None:
            raise AssertionError("nothing may be published")

    caplog.set_level(logging.ERROR, "atalaia.streams.ingest.mqtt")
    bridge = MqttBridge(s.mqtt_url, Nothing(), "events", security=MqttSecurity.from_settings(s))
    await bridge.start()
    try:
        for _ in range(250):  # TLS 1.3: a refused certificate shows when the connect times out
            if bridge.refused:
                break
            await asyncio.sleep(0.1)
        assert bridge.refused and not bridge.connected.is_set()
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("REFUSED" in e and "ATALAIA_MQTT_PASSWORD_FILE" in e for e in errors), errors
    finally:
        await bridge.stop()
