"""States beside measurements, as IoT Agents and Orion-LD send them: a device's ``deviceState``
next to its ``batteryLevel``, a parking spot's ``status`` next to its ``occupancy``.

Found by a probe with real broker shapes: a state observed at 10:00 beside a measurement of 09:00
was given 09:00 and refused as too late (or, at an unchanged measurement time, dropped with it as
a redelivery)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ingest_fastpath import both_paths

from atalaia.rules.engine import RuleEngine
from atalaia.rules.loader import load_texts
from atalaia.streams.ingest import Deduper, parse_payload

RULES = """rules:
  - id: device-fault
    select: {type: Device, attribute: deviceState}
    severities:
      - {severity: high, in: [fault]}
"""
RECEIVED = datetime(2026, 12, 6, 10, 0, 5, tzinfo=UTC)


def v2(state: str, battery_at: str, state_at: str | None = None, **extra) -> bytes:
    meta = {"TimeInstant": {"type": "DateTime", "value": state_at}} if state_at else {}
    entity = {
        "id": "Device:dd-1",
        "type": "Device",
        "batteryLevel": {
            "type": "Number",
            "value": 0.8,
            "metadata": {"TimeInstant": {"type": "DateTime", "value": battery_at}},
        },
        "deviceState": {"type": "Text", "value": state, "metadata": meta},
        **extra,
    }
    return orjson.dumps({"subscriptionId": "s", "data": [entity]})


def records(body: bytes, monkeypatch: pytest.MonkeyPatch, deduper: Deduper | None = None) -> list[dict]:
    both_paths(body, monkeypatch, received_at=RECEIVED)
    r = parse_payload(body, received_at=RECEIVED)
    assert r.ok, r.rejections
    kept = deduper.admit(r.observations, now=0.0) if deduper is not None else r.observations
    return [o.to_dict() for o in kept]


def test_a_state_that_changes_with_its_own_time_beside_an_unchanged_measurement_alarms(monkeypatch) -> None:
    """An IoT Agent's deviceState (its own TimeInstant) turns from ok to fault while the battery
    level's time stays: the fault is an observation of its own, not a redelivery of the battery
    level (which is, and is not evaluated twice)."""
    dedup, engine = Deduper(horizon_s=3600), RuleEngine(load_texts([("r.yaml", RULES)]))
    engine.set_clock(RECEIVED.timestamp())
    ok = records(v2("ok", "2026-12-06T09:59:00Z", state_at="2026-12-06T09:59:30Z"), monkeypatch, dedup)
    fault = records(v2("fault", "2026-12-06T09:59:00Z", state_at="2026-12-06T10:00:00Z"), monkeypatch, dedup)
    assert [o["attributes"] for o in fault] == [{}]  # the battery level: a redelivery, dropped
    fired, rejected = engine.observe_batch(ok + fault)
    assert not rejected and [(t.rule, t.state) for t in fired] == [("device-fault", "firing")]


def test_a_state_observed_after_the_measurement_is_an_observation_at_its_own_time(monkeypatch) -> None:
    obs = records(v2("fault", "2026-12-06T09:00:00Z", state_at="2026-12-06T10:00:00Z"), monkeypatch)
    assert [(o["time"], o["attributes"], o["labels"]) for o in obs] == [
        ("2026-12-06T09:00:00Z", {"batteryLevel": 0.8}, {"deviceState": "fault"}),
        ("2026-12-06T10:00:00Z", {}, {"deviceState": "fault"}),
    ]
    engine = RuleEngine(load_texts([("r.yaml", RULES)]))
    engine.set_clock(RECEIVED.timestamp())
    other = {"time": "2026-12-06T10:00:00Z", "entity": "d2", "type": "Device", "attributes": {"x": 1.0}}
    engine.observe_batch([other])  # the city's other sensors are at 10:00
    fired, rejected = engine.observe_batch(obs)
    # the battery level of an hour ago is late (the DLQ keeps it); the state of now alarms
    assert [r.observation["time"] for r in rejected] == ["2026-12-06T09:00:00Z"]
    assert [(t.rule, t.state, t.at) for t in fired] == [("device-fault", "firing", "2026-12-06T10:00:00Z")]


def test_an_ngsi_ld_state_with_its_own_observed_at_is_timed_by_it(monkeypatch) -> None:
    body = orjson.dumps(
        {
            "id": "urn:n",
            "type": "Notification",
            "notifiedAt": "2026-12-06T10:00:01Z",
            "data": [
                {
                    "id": "urn:ngsi-ld:ParkingSpot:1",
                    "type": "ParkingSpot",
                    "occupancy": {"type": "Property", "value": 1, "observedAt": "2026-12-06T09:00:00Z"},
                    "status": {"type": "Property", "value": "occupied", "observedAt": "2026-12-06T10:00:00Z"},
                }
            ],
        }
    )
    obs = records(body, monkeypatch)
    assert [(o["time"], o["attributes"]) for o in obs] == [
        ("2026-12-06T09:00:00Z", {"occupancy": 1.0}),
        ("2026-12-06T10:00:00Z", {}),
    ]


def test_a_state_at_the_measurements_time_or_before_is_one_observation(monkeypatch) -> None:
    same = records(v2("fault", "2026-12-06T10:00:00Z", state_at="2026-12-06T10:00:00Z"), monkeypatch)
    older = records(v2("fault", "2026-12-06T10:00:00Z", state_at="2026-12-06T09:00:00Z"), monkeypatch)
    assert len(same) == len(older) == 1 and same[0]["labels"] == {"deviceState": "fault"}


def test_a_number_sent_as_ngsi_v2_text_is_a_measurement(monkeypatch) -> None:
    """An IoT Agent gives an unprovisioned measure the type "Text": its number was dropped
    without a trace (not observed, not refused, not listed)."""
    height = {
        "type": "Text",
        "value": 4.6,
        "metadata": {"TimeInstant": {"type": "DateTime", "value": "2026-12-06T10:00:00Z"}},
    }
    body = orjson.dumps(
        {"subscriptionId": "s", "data": [{"id": "urn:W:t", "type": "WaterObserved", "height": height}]}
    )
    assert [o["attributes"] for o in records(body, monkeypatch)] == [{"height": 4.6}]


@settings(deadline=None, max_examples=40)
@given(st.lists(st.sampled_from(["ok", "fault", "offline"]), min_size=1, max_size=12))
def test_every_state_change_reaches_the_rules_whatever_the_measurement_time(states: list[str]) -> None:
    """The model: the alarm fires on each change into fault and resolves on each change out,
    however many states (each with its own time) arrive beside one unchanged measurement."""
    with pytest.MonkeyPatch.context() as mp:
        dedup, engine = Deduper(horizon_s=3600), RuleEngine(load_texts([("r.yaml", RULES)]))
        engine.set_clock(RECEIVED.timestamp())
        got = []
        for i, s in enumerate(states):
            at = f"2026-12-06T09:59:{10 + i:02d}Z"
            fired, _ = engine.observe_batch(records(v2(s, "2026-12-06T09:59:00Z", state_at=at), mp, dedup))
            got += [t.state for t in fired]
    expected, firing = [], False
    for s in states:
        if s == "fault" and not firing:
            expected.append("firing")
            firing = True
        elif s != "fault" and firing:
            expected.append("resolved")
            firing = False
    assert got == expected


@pytest.mark.parametrize(
    "state",
    [
        {"type": "VocabProperty", "vocab": "fault", "observedAt": "2026-12-06T10:00:00Z"},
        {"vocab": "https://uri.fiware.org/ns/dataModels#fault"},  # concise, an expanded term
        {"type": "VocabProperty", "vocab": ["fault"]},
    ],
)
def test_an_ngsi_ld_vocab_property_is_a_state(state: dict, monkeypatch) -> None:
    """NGSI-LD 1.8's VocabProperty is made for enumerated states; it was ignored (the entity
    listed as having nothing to observe), so a state rule never fired on it."""
    body = orjson.dumps(
        {
            "id": "urn:n",
            "type": "Notification",
            "notifiedAt": "2026-12-06T10:00:01Z",
            "data": [{"id": "urn:ngsi-ld:Device:1", "type": "Device", "deviceState": state}],
        }
    )
    obs = records(body, monkeypatch)
    assert [o["labels"] for o in obs] == [{"deviceState": "fault"}]
    engine = RuleEngine(load_texts([("r.yaml", RULES)]))
    engine.set_clock(RECEIVED.timestamp())
    fired, _ = engine.observe_batch(obs)
    assert [(t.rule, t.state) for t in fired] == [("device-fault", "firing")]


def test_an_entity_whose_measurements_all_have_bad_times_costs_only_itself(monkeypatch) -> None:
    """Every measurement's observedAt unreadable, its state's fine: max() of no measurement
    group raised, and the whole notification's other entities were lost as an internal error."""
    good = {
        "id": "urn:P:2",
        "type": "ParkingSpot",
        "occupancy": {"type": "Property", "value": 0, "observedAt": "2026-12-06T10:00:00Z"},
    }
    bad = {
        "id": "urn:P:1",
        "type": "ParkingSpot",
        "occupancy": {"type": "Property", "value": 1, "observedAt": "2026-13-06T09:00:00Z"},
        "status": {"type": "Property", "value": "occupied", "observedAt": "2026-12-06T10:00:00Z"},
    }
    body = orjson.dumps(
        {"id": "urn:n", "type": "Notification", "notifiedAt": "2026-12-06T10:00:01Z", "data": [good, bad]}
    )
    both_paths(body, monkeypatch, received_at=RECEIVED)
    r = parse_payload(body, received_at=RECEIVED)
    assert "urn:P:2" in {o.entity for o in r.observations}
    assert "internal-error" not in {x.code for x in r.rejections}


def test_a_v2_state_of_another_type_is_timed_by_its_own_time_on_both_paths(monkeypatch) -> None:
    body = v2("fault", "2026-12-06T09:00:00Z").replace(b'"Text"', b'"Enum"')
    timed = orjson.loads(body)
    timed["data"][0]["deviceState"]["metadata"] = {
        "TimeInstant": {"type": "DateTime", "value": "2026-12-06T10:00:00Z"}
    }
    obs = records(orjson.dumps(timed), monkeypatch)  # (records checks both paths agree)
    assert [o["time"] for o in obs] == ["2026-12-06T09:00:00Z", "2026-12-06T10:00:00Z"]
