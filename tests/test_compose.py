"""docker-compose.yml is accepted by the Compose client (no engine is needed for `config`)."""

import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]


def compose_cmd() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("no Compose client installed (`docker compose` plugin or `docker-compose`)")


def test_compose_file_is_valid_and_has_the_production_stack():
    cmd = compose_cmd()
    r = subprocess.run(
        [*cmd, "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr
    config = YAML(typ="safe").load(r.stdout)
    services = config["services"]
    assert {"kafka", "worker", "notifier", "console", "postgres", "prometheus", "grafana", "mailpit"} <= set(
        services
    )
    assert services["kafka"]["image"].startswith("apache/kafka")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    for name in ("worker", "console"):
        assert services[name]["environment"]["ATALAIA_KAFKA"] == "kafka:9092"
    assert "ports" not in services["worker"], "workers must be scalable (no fixed host port)"
    stages = {s for name in ("worker", "notifier") for s in services[name]["command"][-1].split(",")}
    assert stages == {"ingest", "rules", "incidents", "projection", "escalation", "delivery"}, (
        "every stage runs"
    )
    # stage state lives in Kafka: no volume shared between replicas or services
    assert services["worker"]["environment"]["ATALAIA_STATE_STORE"] == "kafka"
    assert not services["worker"].get("volumes"), "worker replicas keep no state on a volume"
    mounts = [
        v["source"] if isinstance(v, dict) else v.split(":")[0]
        for name in ("worker", "notifier", "console")
        for v in services[name].get("volumes", [])
    ]
    assert len(mounts) == len(set(mounts)), f"a volume shared between services: {mounts}"
