"""Issue 15 acceptance, live: the demo feed's scenario through a real worker (ingest + rules
stages) on the embedded broker, with the project's own rules (config/rules).

The scenario is compressed: its notifications are generated on a fixed clock (one step = one
second of event time, as the demo feed does on the wall clock) and sent at once; the rules run on
event time. Three flood waves (30 minutes of event time, 15 600 observations) must raise exactly
one compound `parish-flood` alarm per wave in Campanhã, the one parish where a rain gauge and a
river gauge share the label, once the rule's 10-minute rain window is full (the second and third
waves), and none in any other parish; the air rules fire on the demo's `no2`/`pm10`/`pm25`; and
`atalaia rules replay --labels` of the same observations gives the same transitions."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections import defaultdict
from datetime import UTC, datetime

import orjson
import pytest

from tests.conftest import ATALAIA, ROOT, consume_all
from tests.test_streams_rules_live import env_for, per_key

pytestmark = pytest.mark.broker

START = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
STEPS = 1800  # three flood waves of 600 s
WAVE = 600
RULES = ROOT / "config" / "rules"
DETECTORS = ROOT / "config" / "detectors.yaml"


def demo_observations(events: list[tuple[datetime, bytes]]) -> list[bytes]:
    """What the ingest stage makes of the events (the same normaliser, offline)."""
    from atalaia.streams.ingest import encode_observation, parse_payload

    out = []
    for now, body in events:
        r = parse_payload(body, content_type="application/ld+json", received_at=now)
        assert r.ok and not r.rejections, r.rejections
        out += [encode_observation(o) for o in r.observations]
    return out


async def produce_in_order(bootstrap: str, topic: str, events: list[tuple[datetime, bytes]]) -> None:
    """The events on one partition, in step order: the demo feed posts one step per second, so
    its order is the time order; sent at once, one partition keeps it (the HTTP endpoint keys
    events by body, which only the one-second pacing makes harmless)."""
    from aiokafka import AIOKafkaProducer

    from atalaia.streams.clock import format_time
    from atalaia.streams.ingest.events import RawEvent

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=8 << 20)
    await producer.start()
    try:
        futures = []
        for now, body in events:
            ev = RawEvent(body, "demo", content_type="application/ld+json", received_at=format_time(now))
            futures.append(await producer.send(topic, body, key=b"demo", headers=ev.headers()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def absence_rules() -> set[str]:
    from atalaia.rules.loader import load_rules

    return {r.rule.id for r in load_rules([RULES]).rules if r.rule.absent_for is not None}


def test_demo_scenario_raises_one_parish_flood_per_wave_and_the_air_rules(
    broker, topic_prefix, make_worker, tmp_path
):
    from atalaia.streams.ingest.demo import recorded

    events = recorded(STEPS, START)
    observations = demo_observations(events)
    history = tmp_path / "demo-observations.jsonl"
    history.write_bytes(b"\n".join(observations) + b"\n")

    r = subprocess.run(
        [ATALAIA, "rules", "replay", "--labels", "--detectors", str(DETECTORS), str(RULES), str(history)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "rejected" not in r.stderr, r.stderr[:2000]
    expected = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    env = env_for(RULES, idle_s=3)
    env["ATALAIA_DETECTORS_PATH"] = str(DETECTORS)
    w = make_worker("--stages", "ingest,rules", extra_env=env).start(("ingest", "rules", "rules-shared"))
    asyncio.run(produce_in_order(broker, f"{topic_prefix}.events", events))

    # absence runs on the wall clock live (the scenario's clock is in the past) and on event time
    # in a replay: those rules are compared nowhere here (rules/README.md, "Absence on the wall clock")
    ignore = absence_rules()
    want = per_key([t for t in expected if t["rule"] not in ignore])
    deadline = time.monotonic() + 60
    while True:
        got = [
            orjson.loads(rec.value)
            for rec in asyncio.run(consume_all(broker, f"{topic_prefix}.alarms", idle=4.0, timeout=30))
        ]
        unique = list({t["id"]: t for t in got}.values())
        live = per_key([t for t in unique if t["rule"] not in ignore])
        if live == want or time.monotonic() > deadline:
            break
    diff = {k: (live.get(k), want.get(k)) for k in set(live) | set(want) if live.get(k) != want.get(k)}
    assert not diff, "\n".join(f"{k}:\n  live   {a}\n  replay {b}" for k, (a, b) in sorted(diff.items()))

    # the compound flood alarm: one firing per flood wave in Campanhã, none elsewhere
    floods = [t for t in unique if t["rule"] == "parish-flood"]
    assert {t["key"] for t in floods} == {"Campanhã"}, floods
    waves: dict[int, list[str]] = defaultdict(list)
    for t in floods:
        step = int((datetime.fromisoformat(t["at"]) - START).total_seconds())
        waves[step // WAVE].append(t["state"])
    assert dict(waves) == {1: ["firing", "resolved"], 2: ["firing", "resolved"]}, floods
    firing = [t for t in floods if t["state"] == "firing"]
    assert all(t["labels"]["parish"] == "Campanhã" and t["labels"]["hazard"] == "flood" for t in firing)
    assert all(t["values"]["rain"] > 2000 and t["values"]["rise"] > 0.3 for t in firing), firing

    # the air rules fire on the demo's Smart Data Models names
    air = {t["rule"] for t in unique if t["labels"].get("team") == "environment" and t["state"] == "firing"}
    assert "pm25-high" in air, sorted({t["rule"] for t in unique})
    pm25 = {t["key"] for t in unique if t["rule"] == "pm25-high" and t["state"] == "firing"}
    assert len(pm25) == 3, pm25  # every air station

    # the worker saw exactly the observations the replay read, and refused none
    topic = asyncio.run(consume_all(broker, f"{topic_prefix}.observations", idle=2.0))
    assert sorted(orjson.loads(x.value)["id"] for x in topic) == sorted(
        orjson.loads(o)["id"] for o in observations
    )
    assert asyncio.run(consume_all(broker, f"{topic_prefix}.dlq", idle=1.0)) == []
    assert w.health()["stages"]["rules-shared"]["processed"] > 0
