"""An ingest-token holder inventing entity ids (an attack): every rule keeps state per entity (an
absence rule for ever), so 100 000 made-up AirQualityObserved ids from one tenant's token grew the
alarms process of ``atalaia up`` by 680 MiB and its checkpoints by 68 MiB, without bound, for
every tenant. Now a tenant's new entities beyond ``ATALAIA_RULES_MAX_ENTITIES`` (the worker's
partitioned engines together) are refused to the DLQ with the reason ``entity limit: ...``; its
known entities and every other tenant's go on being evaluated."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from atalaia.rules.engine import EntityPool, RuleEngine, _key_tenant
from atalaia.rules.loader import load_texts
from atalaia.streams.ingest.observation import entity_key

RULES = """
rules:
  - id: pm10-high
    select: {type: AirQualityObserved, attribute: pm10}
    severities: [{severity: high, above: 100}]
  - id: station-silent
    select: {type: AirQualityObserved}
    absent_for: 2h
    severity: medium
"""
WINDOW_ONLY = """
rules:
  - id: pm10-high
    select: {type: AirQualityObserved, attribute: pm10}
    aggregate: {function: avg, window: 10m}
    severities: [{severity: high, above: 100}]
"""


def ruleset(text: str = RULES):
    return load_texts([("air.yaml", text)])


def obs(entity: str, tenant: str | None, pm10: float = 10.0, at: str = "2026-12-07T10:00:00Z") -> dict:
    o = {
        "time": at,
        "entity": f"urn:ngsi-ld:AirQualityObserved:{entity}",
        "type": "AirQualityObserved",
        "attributes": {"pm10": pm10},
    }
    if tenant:
        o["tenant"] = tenant
    return o


def limited(rejected) -> list[str]:
    return [r.observation["entity"] for r in rejected if r.reason.startswith("entity limit")]


def test_a_tenant_inventing_entities_fills_its_own_room_not_the_others():
    engine = RuleEngine(ruleset(), max_entities=3)
    _, rejected = engine.observe_batch([obs(f"fake{i}", "gaia") for i in range(10)])
    assert len(limited(rejected)) == 7
    assert "tenant 'gaia'" in rejected[0].reason and "ATALAIA_RULES_MAX_ENTITIES" in rejected[0].reason
    assert engine.state_count() == 2 * 3  # (two rules, three entities): not 2 * 10
    # another tenant's new sensor, and a tenant-less one, are evaluated and alarm
    alarms, rejected = engine.observe_batch([obs("real", "porto", 150.0), obs("plain", None, 150.0)])
    assert not rejected
    assert {(a.key, a.state) for a in alarms} == {
        (entity_key("porto", "urn:ngsi-ld:AirQualityObserved:real"), "firing"),
        ("urn:ngsi-ld:AirQualityObserved:plain", "firing"),
    }
    # gaia's known entities still alarm; a new one is still refused
    alarms, rejected = engine.observe_batch([obs("fake0", "gaia", 150.0), obs("fake99", "gaia", 150.0)])
    assert [a.key for a in alarms] == [entity_key("gaia", "urn:ngsi-ld:AirQualityObserved:fake0")]
    assert limited(rejected) == ["urn:ngsi-ld:AirQualityObserved:fake99"]


def test_the_limit_holds_after_a_restore_and_for_a_workers_engines_together():
    pool = EntityPool()
    a = RuleEngine(ruleset(), max_entities=4, pool=pool)
    b = RuleEngine(ruleset(), max_entities=4, pool=pool)
    a.observe_batch([obs(f"a{i}", "gaia") for i in range(3)])
    _, rejected = b.observe_batch([obs(f"b{i}", "gaia") for i in range(3)])
    assert len(limited(rejected)) == 2  # one partition's engine took three of the four places
    pool.engines.discard(a)
    restored = RuleEngine.restore(ruleset(), a.snapshot(), max_entities=4, pool=pool)
    _, rejected = restored.observe_batch([obs("a9", "gaia"), obs("a0", "gaia")])
    assert limited(rejected) == ["urn:ngsi-ld:AirQualityObserved:a9"]  # (a0 is one of its own)


def test_an_entity_whose_state_is_gone_frees_its_place():
    engine = RuleEngine(ruleset(WINDOW_ONLY), max_entities=2, allowed_lateness=60)
    engine.observe_batch([obs("x", "gaia"), obs("y", "gaia")])
    _, rejected = engine.observe_batch([obs("z", "gaia")])
    assert limited(rejected)
    # an hour later their windows hold nothing: compact drops the states and the places
    engine.observe_batch([obs("x", "gaia", at="2026-12-07T11:00:00Z")])
    engine.compact()
    _, rejected = engine.observe_batch([obs("z", "gaia", at="2026-12-07T11:00:01Z")])
    assert not rejected


def test_types_no_rule_reads_never_count():
    engine = RuleEngine(ruleset(), max_entities=1)
    parking = [
        {"time": "2026-12-07T10:00:00Z", "entity": f"p{i}", "type": "ParkingSpot", "attributes": {"x": 1.0}}
        for i in range(5)
    ]
    _, rejected = engine.observe_batch([*parking, obs("one", None)])
    assert not rejected


@given(st.text(min_size=1), st.text())
def test_the_tenant_of_an_entity_identity_is_read_back(tenant, entity):
    assert _key_tenant(entity_key(tenant, entity)) == tenant
    assert _key_tenant(entity_key(None, entity)) == ""


@pytest.mark.broker
def test_live_one_tenants_invented_entities_leave_anothers_alarms(
    make_worker, broker, topic_prefix, tmp_path
):
    from atalaia.streams.ingest import read_dlq_record
    from atalaia.streams.ingest.auth import hash_token, new_token
    from tests.conftest import consume_all

    rules = tmp_path / "air.yaml"
    rules.write_text(RULES)
    gaia, porto = new_token(), new_token()
    (tmp_path / "tokens.yaml").write_text(
        "tokens:\n"
        f"  - {{source: orion-gaia, tenant: gaia, token_sha256: {hash_token(gaia)}}}\n"
        f"  - {{source: orion-porto, tenant: porto, token_sha256: {hash_token(porto)}}}\n"
    )
    w = make_worker(
        "--stages",
        "ingest,rules",
        extra_env={
            "ATALAIA_RULES_PATHS": json.dumps([str(rules)]),
            "ATALAIA_INGEST_TOKENS": str(tmp_path / "tokens.yaml"),
            "ATALAIA_RULES_MAX_ENTITIES": "20",
        },
    ).start(("rules",))
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def notify(token: str, tenant: str, entities: list[str], pm10: float) -> None:
        body = {
            "id": f"urn:ngsi-ld:Notification:{uuid.uuid4().hex}",
            "type": "Notification",
            "notifiedAt": now,
            "data": [
                {"id": e, "type": "AirQualityObserved", "dateObserved": now, "pm10": pm10} for e in entities
            ],
        }
        r = httpx.post(
            f"{w.url}/ngsi-ld/notify",
            content=orjson.dumps(body),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {token}",
                "NGSILD-Tenant": tenant,
            },
            timeout=30,
        )
        assert r.status_code == 200, r.text

    for start in range(0, 200, 50):
        notify(
            gaia, "gaia", [f"urn:ngsi-ld:AirQualityObserved:fake{i}" for i in range(start, start + 50)], 10
        )
    notify(porto, "porto", ["urn:ngsi-ld:AirQualityObserved:real"], 150)
    alarms = asyncio.run(consume_all(broker, f"{topic_prefix}.alarms", expect=1, idle=5))
    assert [(a["key"], a["state"]) for a in map(orjson.loads, (r.value for r in alarms))] == [
        ("porto|urn:ngsi-ld:AirQualityObserved:real", "firing")
    ]
    dlq = [read_dlq_record(r.value) for r in asyncio.run(consume_all(broker, f"{topic_prefix}.dlq", idle=3))]
    refused = [d for d in dlq if d["reasons"][0].startswith("entity limit")]
    # 20 places for the worker's engines together (its three partitions), whatever the partition
    assert len(refused) == 180, [d["reasons"] for d in dlq][:5]
