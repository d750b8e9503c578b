"""A multi-typed NGSI-LD entity (``"type": ["Device", "WeatherObserved"]``): rules on any of its
types read it. Before, only its first type was kept, so a ``WeatherObserved`` rule never saw a
station that Scorpio or Stellio notify as a Device first."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.rules.engine import RuleEngine
from atalaia.rules.loader import load_texts
from atalaia.streams.ingest import parse_payload
from atalaia.streams.ingest.observation import decode_observation, encode_observation

RULES = """rules:
  - id: hot
    select: {type: WeatherObserved, attribute: temperature}
    severities:
      - {severity: high, above: 30}
  - id: device-hot
    select: {type: Device, attribute: temperature}
    severities:
      - {severity: low, above: 35}
  - id: other
    select: {type: AirQualityObserved, attribute: temperature}
    severities:
      - {severity: low, above: 0}
"""


def notification(*types: object, temperature: float = 36.0, at: str = "2026-12-06T10:00:00Z") -> bytes:
    return orjson.dumps(
        {
            "id": "urn:ngsi-ld:Notification:1",
            "type": "Notification",
            "subscriptionId": "urn:s",
            "notifiedAt": at,
            "data": [
                {
                    "id": "urn:ngsi-ld:Thing:dual-1",
                    "type": list(types),
                    "temperature": {"type": "Property", "value": temperature, "observedAt": at},
                }
            ],
        }
    )


def records(body: bytes) -> list[dict]:
    """What the rules stage reads: the observations through the topic's encoding."""
    r = parse_payload(body)
    assert r.ok, r.rejections
    return [dict(decode_observation(encode_observation(o))) for o in r.observations]


def test_each_type_of_the_entity_is_kept_and_every_rule_of_them_fires() -> None:
    (obs,) = records(notification("Device", "https://uri.fiware.org/ns/data-models#WeatherObserved"))
    assert obs["type"] == "Device" and obs["types"] == ["Device", "WeatherObserved"]
    engine = RuleEngine(load_texts([("r.yaml", RULES)]))
    fired, rejected = engine.observe_batch([obs])
    assert not rejected
    assert sorted((t.rule, t.type, t.state) for t in fired) == [
        ("device-hot", "Device", "firing"),
        ("hot", "WeatherObserved", "firing"),
    ]


def test_one_type_has_no_types_key_and_a_repeated_type_is_one() -> None:
    (one,) = records(notification("WeatherObserved"))
    (twice,) = records(notification("WeatherObserved", "WeatherObserved"))
    assert "types" not in one and one == twice


@pytest.mark.parametrize(
    ("types", "reason"),
    [
        (["Device", 7], "not a type name"),
        (["Device", "Weather\u202eObserved"], "Weather"),
        ([f"T{i}" for i in range(9)], "9 types (at most 8)"),
    ],
)
def test_a_type_list_that_cannot_be_read_is_refused_with_its_reason(types: list, reason: str) -> None:
    r = parse_payload(notification(*types))
    assert not r.observations and [x.code for x in r.rejections] == ["bad-type"]
    assert reason in str(r.rejections[0])


def test_a_late_multi_typed_reading_is_refused_once_not_once_per_type() -> None:
    engine = RuleEngine(load_texts([("r.yaml", RULES)]))
    engine.observe_batch(records(notification("Device", "WeatherObserved", at="2026-12-06T12:00:00Z")))
    fired, rejected = engine.observe_batch(records(notification("Device", "WeatherObserved")))
    assert not fired and len(rejected) == 1 and "too late" in rejected[0].reason


@settings(deadline=None, max_examples=50)
@given(st.lists(st.floats(20, 40, allow_nan=False), min_size=1, max_size=20))
def test_a_multi_typed_entity_alarms_as_each_of_its_types_would_alone(readings: list[float]) -> None:
    """The model: the same readings sent once as a WeatherObserved and once as a Device give the
    transitions that the multi-typed entity gives, rule by rule."""

    def run(*types: str) -> list[tuple]:
        engine = RuleEngine(load_texts([("r.yaml", RULES)]))
        out = []
        for i, v in enumerate(readings):
            at = f"2026-12-06T10:{i:02d}:00Z"
            fired, _ = engine.observe_batch(records(notification(*types, temperature=v, at=at)))
            out += [(t.rule, t.type, t.state, t.at) for t in fired]
        return out

    assert sorted(run("Device", "WeatherObserved")) == sorted(run("Device") + run("WeatherObserved"))


def test_the_rules_stage_forwards_it_to_a_join_on_any_of_its_types(tmp_path) -> None:
    """A label-keyed join reads WeatherObserved: the partitioned stage hands the Device-first
    station's readings over to it (before, only the first type was looked up)."""
    from types import SimpleNamespace

    from atalaia.detectors.config import load_config
    from atalaia.rules.stage import RuleFiles, RulesCore
    from atalaia.streams.settings import CONFIG_DIR, Settings
    from tests.test_rules_tenant_time import JOIN_RULE

    (tmp_path / "join.yaml").write_text(JOIN_RULE)
    core = RulesCore(RuleFiles([tmp_path]), load_config(CONFIG_DIR / "detectors.yaml"), Settings())
    body = notification("Device", "WeatherObserved").replace(b'"temperature"', b'"precipitation"')
    (obs,) = records(body)
    record = SimpleNamespace(
        value=orjson.dumps(obs), topic="t.observations", offset=0, headers=[], timestamp=1_765_015_200_000
    )
    outs = core.process([record], now=1_765_015_200.0)
    assert [orjson.loads(o.value)["types"] for o in outs if o.topic == "shared-observations"] == [
        ["Device", "WeatherObserved"]
    ]
