"""States beside measurements, as IoT Agents and Orion-LD send them: a device's ``deviceState``
next to its ``batteryLevel``, a parking spot's ``status`` next to its ``occupancy``.

Found by a probe with real broker shapes: a state that changed while the measurement's time did
not was dropped as a redelivery (no observation, no DLQ record, no alarm), and a state observed
at 10:00 beside a measurement of 09:00 was given 09:00 and refused as too late."""

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


def test_a_state_that_changes_at_the_same_measurement_time_is_not_a_redelivery(monkeypatch) -> None:
    dedup, engine = Deduper(horizon_s=3600), RuleEngine(load_texts([("r.yaml", RULES)]))
    engine.set_clock(RECEIVED.timestamp())
    ok = records(v2("ok", "2026-12-06T09:59:00Z"), monkeypatch, dedup)
    fault = records(v2("fault", "2026-12-06T09:59:00Z"), monkeypatch, dedup)
    again = records(v2("fault", "2026-12-06T09:59:00Z"), monkeypatch, dedup)
    assert len(ok) == len(fault) == 1 and ok[0]["id"] != fault[0]["id"]
    assert again == []  # a true redelivery still is one
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
    however many states arrive with one unchanged measurement time; a state already sent at that
    time, with nothing else to tell it apart, is a redelivery (the sender gave the state no time
    of its own: ``TimeInstant`` metadata or ``observedAt`` would)."""
    with pytest.MonkeyPatch.context() as mp:
        dedup, engine = Deduper(horizon_s=3600), RuleEngine(load_texts([("r.yaml", RULES)]))
        engine.set_clock(RECEIVED.timestamp())
        got = []
        for s in states:
            fired, _ = engine.observe_batch(records(v2(s, "2026-12-06T09:59:00Z"), mp, dedup))
            got += [t.state for t in fired]
    expected, firing, last = [], False, None
    for s in dict.fromkeys(states):  # each state once: the rest are redeliveries
        if s != last:
            if s == "fault" and not firing:
                expected.append("firing")
                firing = True
            elif s != "fault" and firing:
                expected.append("resolved")
                firing = False
        last = s
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
