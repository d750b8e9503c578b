"""The incidents and projection stages on the real (embedded) broker: the Porto storm's alarms go to
``atalaia.alarms``, a shelve to ``atalaia.commands``; the worker is killed with incidents open and the
shelve running. After the restart: the same incidents, the shelve expires at its time, the topic
(deduplicated by event id) equals the pure manager's replay, and the SQL projection matches the topic."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from atalaia.incidents.config import load_config
from atalaia.incidents.manager import IncidentManager
from atalaia.incidents.model import fmt, to_us
from atalaia.incidents.projection import Projection
from atalaia.incidents.scenarios import porto_storm
from tests.conftest import consume_all

pytestmark = pytest.mark.broker

# No event-time timers besides the shelve (wall clock drives timers live): closing at once.
CONFIG = """
correlation: {window: 30m, max_distance_m: 3000}
closing: {after: 0s}
chattering: {auto_shelve: false}
positions: [{name: hydro, matchers: ['group="hydro"']}]
inhibit:
  - source_matchers: ['rule="station-comms-failure"']
    target_matchers: ['rule!="station-comms-failure"']
    equal: [station]
"""
SHELVE_S = 20


async def produce(bootstrap: str, topic: str, items: list[dict]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1)
    await producer.start()
    try:
        for item in items:
            await producer.send(topic, orjson.dumps(item))
        await producer.flush()
    finally:
        await producer.stop()


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def incidents_on_topic(broker: str, prefix: str, idle: float = 1.0) -> list[dict]:
    records = asyncio.run(consume_all(broker, f"{prefix}.incidents", idle=idle, timeout=60))
    return [orjson.loads(r.value) for r in records]


def test_storm_through_the_worker_with_a_kill(broker, topic_prefix, make_worker, tmp_path: Path) -> None:
    cfg_path = tmp_path / "incidents.yaml"
    cfg_path.write_text(CONFIG)
    storm = porto_storm()
    half = len(storm) // 2
    env = {"ATALAIA_INCIDENTS_PATH": str(cfg_path)}

    w1 = make_worker("--stages", "incidents,projection", extra_env=env).start(("incidents", "projection"))
    asyncio.run(produce(broker, f"{topic_prefix}.alarms", storm[:half]))
    wait_for(lambda: w1.health()["stages"]["incidents"]["processed"] >= half, 60, "the first half")
    asyncio.run(produce(broker, f"{topic_prefix}.alarms", storm[half:]))
    wait_for(lambda: w1.health()["stages"]["incidents"]["processed"] >= len(storm), 60, "the second half")

    # the expected run: the pure manager over the same inputs
    mgr = IncidentManager(load_config(cfg_path))
    state = mgr.initial_state()
    expected = []
    for tr in storm:
        state, out = mgr.step(state, tr, tr["at"])
        expected += [o.to_dict() for o in out]
    target = next(e["incident"] for e in expected if e["correlation"].get("parish") == "Bonfim")
    shelve_at = datetime.now(UTC).replace(microsecond=0)
    shelve = {
        "id": "cmd-shelve-1",
        "incident": target,
        "action": "shelve",
        "actor": "ana",
        "role": "operator",
        "reason": "crew on site",
        "duration": SHELVE_S,
        "at": fmt(to_us(shelve_at)),
    }
    state, out = mgr.step(state, shelve, shelve["at"])
    expected += [o.to_dict() for o in out if o.kind == "incident"]
    due = fmt(to_us(shelve_at) + SHELVE_S * 1_000_000)
    state, out = mgr.tick(state, due)
    expected += [o.to_dict() for o in out]
    assert expected[-1]["change"] == "unshelved" and expected[-1]["at"] == due

    asyncio.run(produce(broker, f"{topic_prefix}.commands", [shelve]))
    wait_for(
        lambda: any(e["change"] == "shelved" for e in incidents_on_topic(broker, topic_prefix, 0.5)),
        30,
        "the shelve on the incidents topic",
    )
    time.sleep(3)  # let a checkpoint happen with the shelve running, then kill -9
    w1.kill()
    assert datetime.now(UTC).timestamp() < shelve_at.timestamp() + SHELVE_S, "too slow: the shelve ran out"

    w2 = make_worker("--stages", "incidents,projection", extra_env=env, port=w1.port).start(
        ("incidents", "projection")
    )
    wait_for(
        lambda: any(e["change"] == "unshelved" for e in incidents_on_topic(broker, topic_prefix, 0.5)),
        SHELVE_S + 40,
        "the shelve to expire after the restart",
    )
    got = incidents_on_topic(broker, topic_prefix)
    unique = list({e["id"]: e for e in got}.values())
    key = lambda e: (e["incident"], e["version"])  # noqa: E731
    assert sorted(unique, key=key) == sorted(expected, key=key)
    unshelved = next(e for e in unique if e["change"] == "unshelved")
    assert unshelved["at"] == due and unshelved["actor"] == "timer"

    proj = Projection.connect(f"sqlite:///{Path(w2.env['ATALAIA_DATA_DIR']) / 'atalaia.db'}", migrate=False)
    latest: dict[str, dict] = {}
    for e in sorted(unique, key=key):
        latest[e["incident"]] = e

    def projected() -> bool:
        rows = {r["id"]: (r["version"], r["state"]) for r in proj.incidents(limit=100)}
        return rows == {i: (e["version"], e["state"]) for i, e in latest.items()}

    wait_for(projected, 30, "the projection to catch up")
    assert [h["event_id"] for h in proj.history(target)] == [
        e["id"] for e in sorted(unique, key=key) if e["incident"] == target
    ]
    w2.stop()
