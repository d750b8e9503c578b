"""State conditions (equals, in, changed_to) on text and boolean attributes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.rules.engine import RuleEngine
from atalaia.rules.errors import RuleFileError
from atalaia.rules.loader import load_texts

RULE = """rules:
  - id: dev
    select: {type: Device, attribute: deviceState}
    severities:
      - {severity: high, changed_to: fault}
"""


def _obs(i: int, v: object) -> dict:
    return {
        "time": f"2024-03-01T00:{i // 60:02d}:{i % 60:02d}Z",
        "entity": "d1",
        "type": "Device",
        "attributes": {},
        "labels": {"deviceState": v},
    }


def _errors(text: str) -> list[str]:
    with pytest.raises(RuleFileError) as exc:
        load_texts([("r.yaml", text)])
    return [str(e) for e in exc.value.errors]


@settings(deadline=None, max_examples=60)
@given(st.lists(st.sampled_from(["ok", "fault", "offline"]), min_size=1, max_size=30), st.integers(1, 29))
def test_changed_to_fires_exactly_on_changes_and_survives_a_snapshot(states: list[str], cut: int) -> None:
    rs = load_texts([("r.yaml", RULE)])
    whole = RuleEngine(rs)
    got_whole, _ = whole.observe_batch([_obs(i, v) for i, v in enumerate(states)])
    first = RuleEngine(rs)
    a, _ = first.observe_batch([_obs(i, v) for i, v in enumerate(states[:cut])])
    second = RuleEngine.restore(rs, first.snapshot())
    b, _ = second.observe_batch([_obs(i + cut, v) for i, v in enumerate(states[cut:])])
    assert [t.to_dict() for t in a + b] == [t.to_dict() for t in got_whole]
    # the model: firing from a change to fault until the state leaves fault
    expected, firing = [], False
    for i, v in enumerate(states):
        if v == "fault" and i and states[i - 1] != "fault" and not firing:
            expected.append((i, "firing"))
            firing = True
        elif v != "fault" and firing:
            expected.append((i, "resolved"))
            firing = False
    assert [(int(t.at[14:16]) * 60 + int(t.at[17:19]), t.state) for t in got_whole] == expected


def test_state_and_number_in_one_rule_is_refused() -> None:
    text = RULE + "      - {severity: low, above: 3}\n"
    assert _errors(text) == [
        "r.yaml:6:25: a rule with state conditions (equals, in, changed_to) cannot also compare numbers "
        "(above, below): write two rules"
    ]


def test_text_condition_with_a_numeric_aggregate_is_refused() -> None:
    text = RULE.replace("    severities:", "    aggregate: {function: avg, window: 10m}\n    severities:")
    assert _errors(text) == [
        "r.yaml:4:5: 'aggregate' cannot be used with state conditions: a text or boolean state has no "
        "numeric aggregate"
    ]


def test_booleans_are_not_numbers_or_text() -> None:
    text = "rules:\n  - id: t\n    select: {type: Device, attribute: tampered}\n    severities: [{severity: low, equals: true}]\n"
    engine = RuleEngine(load_texts([("r.yaml", text)]))
    obs = [
        {"time": f"2024-03-01T00:00:0{i}Z", "entity": "d", "type": "Device", "attributes": {"tampered": v}}
        for i, v in enumerate([1, "true", True])
    ]
    out, rejected = engine.observe_batch(obs)
    assert not rejected
    assert [(t.at, t.state) for t in out] == [("2024-03-01T00:00:02Z", "firing")]


def test_states_of_real_notifications_reach_state_rules() -> None:
    """A Device telling only its deviceState, a TrafficFlowObserved that it is congested (a
    boolean) and a keyValues ParkingSpot's status: ingest dropped the first and third (no numeric
    attribute) without a trace and every boolean, so the README's device-fault rule and any
    `equals: true` rule could never fire from a real notification. Each is now an observation:
    states alone have no attributes, a boolean is the label "true"/"false", which a rule whose
    conditions are booleans reads as one (a text rule still reads the text)."""
    import orjson

    from atalaia.streams.ingest import parse_payload

    rules = """rules:
  - id: device-fault
    select: {type: Device, attribute: deviceState}
    severities: [{severity: high, equals: fault}]
  - id: congested
    select: {type: TrafficFlowObserved, attribute: congested}
    severities: [{severity: medium, equals: true}]
  - id: congested-text
    select: {type: TrafficFlowObserved, attribute: congested}
    severities: [{severity: low, equals: "true"}]
  - id: spot-taken
    select: {type: ParkingSpot, attribute: status}
    severities: [{severity: low, changed_to: occupied}]
"""
    at = "2026-12-06T16:59:00Z"
    body = {
        "id": "urn:n",
        "type": "Notification",
        "notifiedAt": "2026-12-06T17:00:00Z",
        "data": [
            {
                "id": "urn:d",
                "type": "Device",
                "deviceState": {"type": "Property", "value": "fault", "observedAt": at},
            },
            {
                "id": "urn:t",
                "type": "TrafficFlowObserved",
                "congested": {"type": "Property", "value": True, "observedAt": at},
            },
            {"id": "urn:p", "type": "ParkingSpot", "status": "free"},
        ],
    }
    r = parse_payload(orjson.dumps(body))
    assert r.ok and r.rejections == [] and r.ignored == []
    device, traffic, spot = (o.to_dict() for o in r.observations)
    assert (device["time"], device["time_source"], device["labels"]) == (
        at,
        "observed",
        {"deviceState": "fault"},
    )
    assert (traffic["attributes"], traffic["labels"]) == ({}, {"congested": "true"})
    assert spot["time_source"] == "notified" and device["id"] != spot["id"]
    engine = RuleEngine(load_texts([("r.yaml", rules)]))
    out, rejected = engine.observe_batch([device, traffic, spot])
    assert rejected == []
    assert {(t.rule, t.state) for t in out} == {
        ("device-fault", "firing"),
        ("congested", "firing"),
        ("congested-text", "firing"),
    }
    later = {**spot, "time": "2026-12-06T17:01:00Z", "labels": {"status": "occupied"}}
    out, _ = engine.observe_batch([later])
    assert [(t.rule, t.state) for t in out] == [("spot-taken", "firing")]
    # a text "true" in attributes (a replayed record) is still text to a rule on booleans
    out, _ = engine.observe_batch(
        [{**traffic, "entity": "urn:t2", "attributes": {"congested": "true"}, "labels": {}}]
    )
    assert [(t.rule, t.state) for t in out] == [("congested-text", "firing")]


def test_a_compound_rule_on_a_boolean_reads_the_boolean_label() -> None:
    """Review: the compound rules read a boolean property's label "true" as text, so `all:` with
    `equals: true` never held from a real notification."""
    text = """rules:
  - id: jam
    severity: medium
    all:
      - {attribute: congested, equals: true}
      - {attribute: intensity, above: 100}
    select: {type: TrafficFlowObserved}
"""
    engine = RuleEngine(load_texts([("r.yaml", text)]))
    base = {"time": "2026-12-06T10:00:00Z", "entity": "urn:t", "type": "TrafficFlowObserved"}
    out, rejected = engine.observe_batch(
        [{**base, "attributes": {"intensity": 300.0}, "labels": {"congested": "true"}}]
    )
    assert rejected == [] and [(t.rule, t.state) for t in out] == [("jam", "firing")]
