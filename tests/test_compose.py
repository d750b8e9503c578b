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


def test_atalaia_services_are_healthy_while_they_serve_as_readyz_says(tmp_path):
    """Each Atalaia service's healthcheck asks its own ``/readyz`` (open, on the worker's metrics
    port or the console's HTTP port) and passes on 200 only: a process ``degraded`` after an
    incident it recovered from stays healthy, one ``starting`` or ``failed`` (503) does not."""
    import http.server
    import os
    import sys
    import threading

    cmd = compose_cmd()
    r = subprocess.run(
        [*cmd, "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr
    services = YAML(typ="safe").load(r.stdout)["services"]
    answer = {"code": 200}
    asked: list[str] = []

    class Readyz(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(answer["code"])
            self.end_headers()
            self.wfile.write(b'{"status": "ready"}' if answer["code"] == 200 else b'{"status": "failed"}')

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Readyz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for name in ("worker", "notifier", "console"):
            service = services[name]
            test = service["healthcheck"]["test"]
            assert test[:3] == ["CMD", "python", "-c"], test
            env = {k: str(v) for k, v in service["environment"].items()}
            port = env.get("ATALAIA_METRICS_PORT") or env.get("ATALAIA_HTTP_PORT")
            assert port in ("9464", "8080"), (name, env)  # the port the service serves /readyz on
            for key in ("ATALAIA_METRICS_PORT", "ATALAIA_HTTP_PORT"):
                if key in env:
                    env[key] = str(server.server_port)
            for code, healthy in ((200, True), (503, False)):
                answer["code"] = code
                ran = subprocess.run(
                    [sys.executable, "-c", test[3]],
                    env={**{k: v for k, v in os.environ.items() if not k.startswith("ATALAIA_")}, **env},
                    capture_output=True,
                    timeout=20,
                )
                assert (ran.returncode == 0) == healthy, (name, code, ran.stderr)
        assert set(asked) == {"/readyz"}
    finally:
        server.shutdown()
