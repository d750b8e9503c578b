"""A real Prometheus scrapes a running worker (no --http: its own metrics port): the events
counter and the produce -> alarm latency histogram come back from PromQL queries, and
`promtool check metrics` accepts the exposition."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.conftest import ATALAIA, WorkerProcess, free_port

pytestmark = pytest.mark.broker


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install prometheus)")
    return path


def _notification(height: float) -> dict:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "id": "urn:ngsi-ld:Notification:obs",
        "type": "Notification",
        "notifiedAt": now,
        "data": [
            {
                "id": "urn:ngsi-ld:WaterObserved:obs-gauge",
                "type": "WaterObserved",
                "dateObserved": now,
                "height": height,
                "parish": "Campanhã",
            }
        ],
    }


def _query(base: str, promql: str) -> list[dict]:
    r = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5)
    r.raise_for_status()
    return r.json()["data"]["result"]


def test_prometheus_scrapes_a_worker(broker: str, topic_prefix: str, tmp_path: Path) -> None:
    prometheus, promtool = _binary("prometheus"), _binary("promtool")
    port = free_port()
    env = {
        **os.environ,
        "ATALAIA_KAFKA": broker,
        "ATALAIA_TOPIC_PREFIX": topic_prefix,
        "ATALAIA_APP_ID": topic_prefix,
        "ATALAIA_DATA_DIR": str(tmp_path / "data"),
        "ATALAIA_PARTITIONS": "3",
        "ATALAIA_METRICS_PORT": str(port),
        "ATALAIA_HTTP_PORT": str(port),  # WorkerProcess polls /health there: the metrics server's
    }
    worker = WorkerProcess(env, ["worker", "--stages", "ingest,rules,incidents"], tmp_path / "worker.log")
    worker.start(("ingest", "rules", "incidents"))
    prom: subprocess.Popen | None = None
    try:
        events = tmp_path / "events.jsonl"
        events.write_text("\n".join(json.dumps(_notification(h)) for h in (4.0, 4.1)) + "\n")
        subprocess.run([ATALAIA, "send", str(events)], env=env, check=True, capture_output=True, timeout=60)

        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            text = httpx.get(f"{worker.url}/metrics", timeout=5).text
            if 'atalaia_alarm_latency_seconds_count{stage="rules"}' in text:
                break
            time.sleep(0.5)
        assert 'atalaia_alarm_latency_seconds_count{stage="rules"}' in text, text[-3000:]
        assert 'atalaia_alarm_transitions_total{rule="river-level-high",state="firing"}' in text
        assert "atalaia_consumer_lag{" in text and 'atalaia_stage_up{stage="rules"} 1.0' in text
        assert 'atalaia_health{status="ok"} 1.0' in text and 'atalaia_health{status="failed"} 0.0' in text

        # the exposition passes Prometheus's own linter
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr

        prom_port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: atalaia-worker\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        )
        with open(tmp_path / "prometheus.log", "wb") as out:
            prom = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                stdout=out,
                stderr=out,
            )
        base = f"http://127.0.0.1:{prom_port}"
        deadline = time.monotonic() + 60
        events_in, latency, up = [], [], []
        while time.monotonic() < deadline:
            assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            try:
                up = _query(base, 'up{job="atalaia-worker"}')
                events_in = _query(base, 'atalaia_stage_records_total{stage="ingest"}')
                latency = _query(
                    base,
                    'histogram_quantile(0.5, sum by (le) (atalaia_alarm_latency_seconds_bucket{stage="rules"}))',
                )
            except httpx.HTTPError:
                pass
            if up and events_in and latency:  # all three: the queries run one after another
                break
            time.sleep(0.5)
        assert up and up[0]["value"][1] == "1", up
        assert events_in and float(events_in[0]["value"][1]) >= 2, events_in
        assert latency, "no latency histogram in Prometheus"
        p50 = float(latency[0]["value"][1])
        assert 0 < p50 < 60, p50  # produce -> alarm of a live event: seconds at most
        lag = _query(base, "atalaia_consumer_lag")
        assert {s["metric"]["stage"] for s in lag} >= {"ingest", "rules"}, lag
    finally:
        if prom is not None and prom.poll() is None:
            prom.terminate()
            prom.wait(20)
        worker.stop()
