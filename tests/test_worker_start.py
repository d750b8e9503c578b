"""A worker's start: its own services (the pipeline stages, the ingest producer, the console's
feeds) start before Faust's web server and consumer, so the stages' group joins overlap Faust's
own (on the embedded broker each join waits half the session timeout) and no page answers before
what it uses is up. An integration client that sends from the moment the port opens gets 200 or
503 with Retry-After, never a 500, and every event accepted reaches the pipeline."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter

import httpx
import orjson
import pytest

from tests.conftest import ATALAIA, consume_all, water_notification

pytestmark = pytest.mark.broker


def test_own_services_start_before_fausts_web_server_and_consumer(tmp_path, monkeypatch) -> None:
    from atalaia.streams.app import create_app
    from atalaia.streams.settings import Settings
    from atalaia.streams.stage import BatchStage

    monkeypatch.setenv("ATALAIA_DATA_DIR", str(tmp_path / "data"))
    app = create_app(Settings(), "127.0.0.1:9", stages=("ingest", "rules", "incidents"), http=True)
    order = list(app.on_init_dependencies())
    names = [type(s).__name__ for s in order]
    stages = [i for i, s in enumerate(order) if isinstance(s, BatchStage)]
    assert stages, names
    web = order.index(app.web)
    consumer = order.index(app.consumer)
    assert max(stages) < consumer, f"a stage starts after Faust's consumer has joined: {names}"
    assert names.index("IngestProducer") < web, f"the ingest endpoint answers before its producer: {names}"
    assert names.index("IncidentFeed") < web, names
    assert not app._extra_services, "nothing is left to start after Faust's consumer joined"


def test_ingest_sent_from_the_first_moment_gets_200_or_503_never_a_500(make_worker, topic_prefix, broker):
    w = make_worker()
    with open(w.log, "ab") as out:
        w.proc = subprocess.Popen([ATALAIA, *w.args], env=w.env, stdout=out, stderr=out)
    answers: Counter = Counter()
    accepted: list[str] = []
    ready_at = None
    deadline = time.monotonic() + 90
    k = 0
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline and (ready_at is None or time.monotonic() < ready_at + 2):
            assert w.proc.poll() is None, w.log.read_text()[-4000:]
            entity = f"start-{k}"
            k += 1
            try:
                r = client.post(
                    f"{w.url}/ngsi-ld/notify",
                    content=water_notification(entity, 1.0),
                    headers={"Content-Type": "application/json"},
                )
            except httpx.TransportError:  # not listening yet
                time.sleep(0.02)
                continue
            answers[r.status_code] += 1
            if r.status_code == 200:
                accepted.append(entity)
            elif r.status_code == 503:
                assert r.headers.get("Retry-After"), r.headers
                assert r.headers["content-type"].startswith("application/problem+json")
            if ready_at is None:
                try:
                    h = client.get(f"{w.url}/health").json()
                    if h["stages"].get("ingest", {}).get("partitions"):
                        ready_at = time.monotonic()
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
            time.sleep(0.02)
    assert ready_at is not None, w.log.read_text()[-4000:]
    assert set(answers) <= {200, 503}, (answers, w.log.read_text()[-4000:])
    assert accepted, answers
    assert "Error handling request" not in w.log.read_text()
    records = asyncio.run(consume_all(broker, f"{topic_prefix}.events", expect=len(accepted), timeout=60))
    sent = {orjson.loads(r.value)["data"][0]["id"].rsplit(":", 1)[-1] for r in records}
    assert set(accepted) <= sent, sorted(set(accepted) - sent)[:5]
