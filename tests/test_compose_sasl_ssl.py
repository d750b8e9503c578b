"""The SASL_SSL variant of the compose stack (docker-compose.sasl-ssl.yml): every Atalaia service
reaches Kafka only over SASL_SSL with the password and CA from secrets; Compose accepts the merge."""

import subprocess
from pathlib import Path

from ruamel.yaml import YAML

from atalaia.streams.kafka_config import MECHANISMS
from atalaia.streams.settings import Settings
from tests.test_compose import compose_cmd

ROOT = Path(__file__).resolve().parents[1]
OVERRIDE = ROOT / "docker-compose.sasl-ssl.yml"


def test_override_secures_every_kafka_client_of_the_stack():
    doc = YAML(typ="safe").load(OVERRIDE.read_text())
    services = doc["services"]
    kafka = services["kafka"]["environment"]
    assert "SASL_SSL://:9094" in kafka["KAFKA_LISTENERS"]
    assert "PLAINTEXT://127.0.0.1:9092" in kafka["KAFKA_LISTENERS"], "plain text only on loopback"
    assert kafka["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    for name in ("worker", "notifier", "console"):
        env = {k.removeprefix("ATALAIA_").lower(): v for k, v in services[name]["environment"].items()}
        assert env["kafka"] == "kafka:9094" and env["kafka_security_protocol"] == "SASL_SSL"
        secrets = {s for s in services[name]["secrets"]}
        assert Path(env["kafka_sasl_password_file"]).name in secrets
        assert Path(env["kafka_ssl_cafile"]).name in secrets
        # names and values that streams.kafka_config understands
        assert env["kafka_sasl_mechanism"] in MECHANISMS and set(env) <= set(Settings.model_fields)
    assert set(doc["secrets"]) == {"kafka_ca.pem", "kafka_server.pem", "kafka_password"}


def test_compose_accepts_the_sasl_ssl_variant():
    cmd = compose_cmd()  # skips without a Compose client
    r = subprocess.run(
        [*cmd, "-f", str(ROOT / "docker-compose.yml"), "-f", str(OVERRIDE), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    services = YAML(typ="safe").load(r.stdout)["services"]
    for name in ("worker", "notifier", "console"):
        assert services[name]["environment"]["ATALAIA_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert services[name]["environment"]["ATALAIA_DATABASE_URL"], "the base environment is kept"
