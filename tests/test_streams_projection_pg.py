"""The Porto storm on the real broker: the incidents and projection stages write to PostgreSQL
(127.0.0.1:5432, database ``test``, a schema of its own) and the tables match the
``atalaia.incidents`` topic; the live alarm-load KPIs report the flood."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from atalaia.incidents.projection import Projection
from atalaia.incidents.scenarios import porto_storm
from tests.conftest import consume_all
from tests.test_incidents_live import CONFIG, produce, wait_for
from tests.test_incidents_projection import PG_URL, _pg_available

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


def test_storm_projected_into_postgresql(broker, topic_prefix, make_worker, tmp_path):
    why = _pg_available()
    if why:
        pytest.skip(why)
    import psycopg

    schema = f"atalaia_live_{uuid.uuid4().hex[:10]}"
    cfg = tmp_path / "incidents.yaml"
    cfg.write_text(CONFIG)
    env = {
        "ATALAIA_INCIDENTS_PATH": str(cfg),
        "ATALAIA_DATABASE_URL": PG_URL,
        "ATALAIA_DATABASE_SCHEMA": schema,
    }
    try:
        w = make_worker("--stages", "incidents,projection", extra_env=env).start(("incidents", "projection"))
        storm = porto_storm()
        asyncio.run(produce(broker, f"{topic_prefix}.alarms", storm))
        wait_for(lambda: w.health()["stages"]["projection"]["processed"] > 0, 60, "the projection to start")
        events = []

        def caught_up() -> bool:
            nonlocal events
            events = [
                orjson.loads(r.value)
                for r in asyncio.run(consume_all(broker, f"{topic_prefix}.incidents", idle=1.0, timeout=30))
            ]
            return w.health()["stages"]["projection"]["processed"] >= len(events) > 0 and w.health()[
                "stages"
            ]["incidents"]["processed"] >= len(storm)

        wait_for(caught_up, 60, "the storm to be projected")
        latest: dict[str, dict] = {}
        for e in sorted({e["id"]: e for e in events}.values(), key=lambda e: (e["incident"], e["version"])):
            latest[e["incident"]] = e
        assert 1 < len(latest) < len(storm) / 5, "a storm becomes a handful of incidents"
        import httpx

        # the live EEMUA 191 KPIs (on /metrics) saw the storm flood the operator positions
        metrics = {}
        for line in httpx.get(f"{w.url}/metrics", timeout=5).text.splitlines():
            if line.startswith("atalaia_") and " " in line:
                name, value = line.rsplit(" ", 1)
                metrics[name] = float(value)
        assert metrics['atalaia_alarms_per_window_peak{position="all"}'] > 10, "more than 10 alarms in 10 min"
        assert metrics['atalaia_alarm_flood_time_ratio{position="all"}'] > 0
        assert metrics["atalaia_chattering_flagged_total"] > 0
        proj = Projection.connect(PG_URL, schema=schema, migrate=False)
        try:
            rows = {r["id"]: (r["version"], r["state"], r["severity"]) for r in proj.incidents(limit=1000)}
            assert rows == {i: (e["version"], e["state"], e["severity"]) for i, e in latest.items()}
            for iid, e in latest.items():
                assert [h["version"] for h in proj.history(iid)] == list(range(1, e["version"] + 1))
        finally:
            proj.close()
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
