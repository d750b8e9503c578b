"""Compound rules: all/any on one entity, join across entities sharing a label, and their errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.rules.engine import RuleEngine
from atalaia.rules.errors import RuleFileError
from atalaia.rules.loader import load_texts

ONE = """
rules:
  - id: flood-risk
    select: {type: WaterObserved}
    {combine}:
      - {attribute: height, above: 4.0, clear_below: 3.8, for: 2m}
      - {attribute: flow, above: 3000}
    severity: high
    annotations: {summary: "{{ entity }} h={{ values.height }}"}
"""


def _obs(
    minute: int, entity: str = "g1", typ: str = "WaterObserved", parish: str = "Sé", **attrs: float
) -> dict:
    return {
        "time": f"2024-03-01T00:{minute:02d}:00Z",
        "entity": entity,
        "type": typ,
        "attributes": attrs,
        "labels": {"parish": parish},
    }


def _run(rules: str, obs: list[dict]) -> list:
    engine = RuleEngine(load_texts([("r.yaml", rules)]))
    out, rejected = engine.observe_batch(obs)
    assert not rejected
    return out


def test_all_on_one_entity_carries_each_value() -> None:
    out = _run(
        ONE.replace("{combine}", "all"),
        [
            _obs(0, height=4.2, flow=2000),
            _obs(1, height=4.3, flow=3500),
            _obs(2, height=4.4, flow=3500),
            _obs(3, height=3.9, flow=3500),  # hysteresis: still holds
            _obs(4, height=3.7, flow=3500),
        ],
    )
    assert [(t.at[14:16], t.state) for t in out] == [("01", "pending"), ("02", "firing"), ("04", "resolved")]
    assert out[1].values == {"height": 4.4, "flow": 3500.0} and out[1].value is None
    assert out[1].annotations["summary"] == "g1 h=4.4"
    assert out[1].replay_line()["values"] == {"height": 4.4, "flow": 3500.0}


def test_any_fires_on_one_part() -> None:
    out = _run(
        ONE.replace("{combine}", "any"), [_obs(0, height=1.0, flow=3500), _obs(1, height=1.0, flow=100)]
    )
    assert [(t.state, t.values) for t in out] == [
        ("firing", {"height": 1.0, "flow": 3500.0}),
        ("resolved", {"height": 1.0, "flow": 100.0}),
    ]


def test_one_observation_with_both_parts_is_one_evaluation() -> None:
    out = _run(ONE.replace("{combine}", "all").replace(", for: 2m", ""), [_obs(0, height=4.5, flow=3500)])
    assert [t.state for t in out] == ["firing"]


JOIN = """
rules:
  - id: parish-flood
    select: {type: WaterObserved}
    join: {on: [parish], within: 10m}
    all:
      - {type: WeatherObserved, attribute: precipitation, name: rain, aggregate: {function: sum, window: 1h}, above: 10}
      - {attribute: height, name: level, above: 4.0}
    severity: high
"""


def test_join_on_parish_within() -> None:
    out = _run(
        JOIN,
        [
            _obs(0, "r1", "WeatherObserved", precipitation=12),
            _obs(1, "g1", height=4.5),  # Sé: rain 12 > 10 and level: fires
            _obs(1, "g2", parish="Bonfim", height=4.5),  # no rain in Bonfim
            _obs(12, "g1", height=4.6),  # the rain reading is 12 minutes old: no longer joined
        ],
    )
    assert [(t.at[14:16], t.key, t.state, t.values) for t in out] == [
        ("01", "Sé", "firing", {"rain": 12.0, "level": 4.5}),
        ("12", "Sé", "resolved", {"rain": 12.0, "level": 4.6}),
    ]


def test_join_rules_are_label_keyed() -> None:
    (rule,) = load_texts([("r.yaml", JOIN)]).rules
    assert rule.rule.key == ["parish"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 8), st.floats(0, 6000)), min_size=1, max_size=30))
def test_all_without_for_is_the_and_of_two_simple_rules(samples: list[tuple[float, float]]) -> None:
    """Property: `all` of two for-less conditions fires exactly when both one-condition rules are firing."""
    rules = ONE.replace("{combine}", "all").replace(", clear_below: 3.8, for: 2m", "")
    simple = """
rules:
  - {id: h, select: {type: WaterObserved, attribute: height}, severities: [{severity: high, above: 4.0}]}
  - {id: f, select: {type: WaterObserved, attribute: flow}, severities: [{severity: high, above: 3000}]}
"""
    obs = [_obs(i, height=h, flow=f) for i, (h, f) in enumerate(samples)]
    both = RuleEngine(load_texts([("s.yaml", simple)]))
    comp = RuleEngine(load_texts([("r.yaml", rules)]))
    for o in obs:
        comp.observe_batch([o])
        both.observe_batch([o])
        firing = {a["rule"] for a in both.active_alarms() if a["state"] == "firing"}
        assert bool(comp.active_alarms()) == (firing == {"h", "f"})


def test_snapshot_restore_continues() -> None:
    rules = load_texts([("r.yaml", ONE.replace("{combine}", "all"))])
    engine = RuleEngine(rules)
    engine.observe_batch([_obs(0, height=4.2, flow=3500), _obs(1, height=4.3, flow=3500)])
    restored = RuleEngine.restore(rules, engine.snapshot())
    out, _ = restored.observe_batch([_obs(2, height=4.4, flow=3500)])
    assert [t.state for t in out] == ["firing"]


@pytest.mark.parametrize(
    ("rule", "where", "message"),
    [
        (
            "select: {type: WaterObserved}\n    join: {on: [parishh], within: 10m}\n    all: [{attribute: height, above: 1}]",
            "r.yaml:4:",
            "join on label 'parishh': WaterObserved does not carry it",
        ),
        (
            "select: {type: WaterObserved}\n    join: {on: [height], within: 10m}\n    all: [{attribute: flow, above: 1}]",
            "r.yaml:4:",
            "in WaterObserved it is a number, not a text label",
        ),
        (
            "select: {type: Device}\n    all: [{attribute: deviceState, equals: fault, aggregate: {function: avg, window: 5m}}]",
            "r.yaml:4:51:",
            "a text or boolean condition (equals, in) cannot have a numeric aggregate",
        ),
        (
            "select: {type: WaterObserved}\n    all: [{type: WeatherObserved, attribute: precipitation, above: 1}]",
            "r.yaml:4:",
            "need 'join: {on: [label], within: …}'",
        ),
        (
            "select: {type: WaterObserved}\n    all: [{attribute: height, above: 1}]\n    aggregate: {function: avg, window: 5m}",
            "r.yaml:5:5:",
            "'aggregate' does not apply to a compound rule",
        ),
        (
            "select: {type: WaterObserved}\n    all: [{attribute: height, above: 1}]\n    within: 0s",
            "r.yaml:5:",
            "'within' must be longer than 0",
        ),
        (
            "select: {type: WaterObserved}\n    join: {on: [parish], within: 10m}\n    all: [{attribute: height, above: 1}]\n    within: 5m",
            "r.yaml:6:5:",
            "a join says its 'within' under 'join:'",
        ),
        (
            "select: {type: WaterObserved, attribute: height}\n    severities: [{severity: high, above: 1}]\n    within: 5m",
            "r.yaml:5:5:",
            "'within' applies to a compound rule",
        ),
    ],
)
def test_compound_errors_point_at_the_key(rule: str, where: str, message: str) -> None:
    text = f"rules:\n  - id: x\n    {rule}\n    severity: high\n"
    with pytest.raises(RuleFileError) as exc:
        load_texts([("r.yaml", text)])
    got = str(exc.value)
    assert message in got and where in got, got


def test_a_parts_per_entity_threshold_is_converted_into_the_parts_unit() -> None:
    """A compound part in metres with its threshold read off the gauge's alertLevelHigh, sent in
    centimetres: the height 5.0 m was compared with a raw 450 and the rule never fired."""
    rules = """
rules:
  - id: flood-risk
    select: {type: WaterObserved}
    all:
      - {attribute: height, unit: m, above: {attribute: alertLevelHigh}}
      - {attribute: flow, above: 3000}
    severity: high
"""
    reading = {**_obs(0, height=5.0, flow=3500.0, alertLevelHigh=450.0), "units": {"alertLevelHigh": "CMT"}}
    assert [(t.state, t.key) for t in _run(rules, [reading])] == [("firing", "g1")]
    at_level = {**_obs(1, height=4.5, flow=3500.0, alertLevelHigh=450.0), "units": {"alertLevelHigh": "CMT"}}
    assert [t.state for t in _run(rules, [at_level])] == []  # 4.5 m is not above 450 cm
    unconvertible = {
        **_obs(2, height=5.0, flow=3500.0, alertLevelHigh=450.0),
        "units": {"alertLevelHigh": "KEL"},
    }
    assert _run(rules, [unconvertible]) == []  # a threshold that does not convert does not hold


RISE = """
rules:
  - id: parish-flood
    select: {type: WaterObserved}
    join: {on: [parish], within: 10m}
    all:
      - {type: WeatherObserved, attribute: precipitation, name: rain, above: 10}
      - {attribute: height, name: rise, aggregate: {function: delta, window: 15m}, above: 0.2}
    severity: high
"""


def test_join_judges_each_gauge_of_a_parish_on_its_own_readings() -> None:
    """Two river gauges in one parish, both flat: no flood. Before, their readings shared one window,
    so 'delta' read 5.0 - 2.0 = 3 m of rise and the alarm fired and resolved at every reading."""
    flat = [_obs(0, "r1", "WeatherObserved", precipitation=20)]
    for minute in range(1, 8):
        flat += [_obs(minute, "gA", height=2.0), _obs(minute, "gB", height=5.0)]
    assert _run(RISE, flat) == []
    # gauge A rises while gauge B stays flat: one alarm, firing from A's rise, kept while A rises
    rising = [_obs(0, "r1", "WeatherObserved", precipitation=20)]
    for minute in range(1, 8):
        rising += [_obs(minute, "gA", height=2.0 + 0.1 * minute), _obs(minute, "gB", height=5.0)]
    out = _run(RISE, rising)
    assert [(t.at[14:16], t.state) for t in out] == [("04", "firing")]
    assert round(out[0].values["rise"], 6) == 0.3


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["r1", "r2", "gA", "gB"]), st.integers(0, 6), st.integers(0, 3)),
        min_size=1,
        max_size=40,
    )
)
def test_join_is_any_entity_of_each_part_as_in_promql(steps: list[tuple[str, int, int]]) -> None:
    """Property: a join holds when some rain gauge of the parish (observed within 10m) reads > 10
    and some river gauge (observed within 10m) reads > 4, each judged on its own latest reading:
    PromQL's ``max by(parish) (precipitation > 10) and on(parish) max by(parish) (height > 4)``."""
    rules = JOIN.replace(", aggregate: {function: sum, window: 1h}", "")
    engine = RuleEngine(load_texts([("r.yaml", rules)]))
    latest: dict[str, tuple[int, float]] = {}
    minute = 0
    for entity, level, gap in steps:
        minute += gap
        rain = entity.startswith("r")
        value = float(level * 4 if rain else level)  # rain 0..24 around 10; heights 0..6 around 4
        o = (
            _obs(minute, entity, "WeatherObserved", precipitation=value)
            if rain
            else _obs(minute, entity, height=value)
        )
        o["time"] = f"2024-03-01T{minute // 60:02d}:{minute % 60:02d}:00Z"
        _, rejected = engine.observe_batch([o])
        assert not rejected
        latest[entity] = (minute, value)

        fresh = [(e, v) for e, (at, v) in latest.items() if minute - at <= 10]
        rain_holds = any(e.startswith("r") and v > 10 for e, v in fresh)
        level_holds = any(e.startswith("g") and v > 4 for e, v in fresh)
        assert bool(engine.active_alarms()) == (rain_holds and level_holds), (steps, latest)


def test_join_keeps_a_reading_older_than_another_entitys() -> None:
    """Sensors of one parish report with their own delays: a rain reading 30 s older than the river
    gauge's last one is in the rain window at the next evaluation. Before, it was dropped as late for
    the key (never counted), and the flood alarm never fired; a snapshot keeps each entity's part."""
    rules = load_texts([("r.yaml", JOIN)])
    engine = RuleEngine(rules)

    def at(text: str, entity: str, typ: str, **attrs: float) -> dict:
        return {**_obs(0, entity, typ, **attrs), "time": f"2024-03-01T00:{text}Z"}

    out, rejected = engine.observe_batch(
        [
            at("00:00", "g1", "WaterObserved", height=4.5),
            at("01:00", "g1", "WaterObserved", height=4.5),
            at("00:30", "r1", "WeatherObserved", precipitation=12),  # late for the key, not for r1
        ]
    )
    assert out == [] and not rejected  # never evaluated back in time
    out, _ = engine.observe_batch([at("02:00", "g1", "WaterObserved", height=4.5)])
    assert [(t.state, t.values) for t in out] == [("firing", {"rain": 12.0, "level": 4.5})]
    engine = RuleEngine.restore(rules, engine.snapshot())
    out, _ = engine.observe_batch([at("03:00", "g2", "WaterObserved", height=3.0)])  # another gauge, low
    assert out == []  # g1 (4.5, observed 1 minute ago) still holds the level part
    out, _ = engine.observe_batch([at("04:00", "g1", "WaterObserved", height=3.0)])
    assert [(t.state, t.values) for t in out] == [("resolved", {"rain": 12.0, "level": 3.0})]


def test_a_join_state_snapshotted_before_per_entity_parts_carries_on() -> None:
    """A snapshot written before join parts were kept per entity (one state per parish, made by the
    parent commit): the first entity that reports takes it over, so the rain already in the window
    still counts (6 + 6 > 10) after an upgrade."""
    import orjson

    rules = load_texts([("r.yaml", JOIN)])
    old = orjson.loads(RuleEngine(rules).snapshot())
    old["watermark"] = 1709251260.0
    old["rules"][0]["states"] = {
        "Sé": [
            1709251260.0,
            [
                [1709251200.0, 6.0, [1709251200.0], [6.0], None, False],
                [1709251260.0, 4.5, None, None, 1709251260.0, True],
            ],
            0,
            "-inf",
            None,
            None,
        ]
    }
    engine = RuleEngine.restore(rules, orjson.dumps(old))
    out, _ = engine.observe_batch([_obs(2, "r1", "WeatherObserved", precipitation=6)])
    assert [(t.state, t.values) for t in out] == [("firing", {"rain": 12.0, "level": 4.5})]
    out, _ = engine.observe_batch([_obs(3, "g1", height=3.0)])
    assert [(t.state, t.values) for t in out] == [("resolved", {"rain": 12.0, "level": 3.0})]


def test_a_join_restored_from_a_snapshot_resolves_when_its_gauge_falls() -> None:
    """A restart between a parish's alarm and the reading that ends it: the alarm resolves as it
    would have without the restart. Before, the restored state still held the part (its entity's
    condition was no longer true, but the key's summary kept the old 'true since') and the alarm
    stayed firing until some gauge of the parish rose and fell again."""
    rules = load_texts(
        [
            (
                "r.yaml",
                """
rules:
  - id: parish-high
    select: {type: WaterObserved}
    join: {on: [parish], within: 10m}
    any:
      - {attribute: height, name: level, above: 4.0}
      - {type: WeatherObserved, attribute: precipitation, name: rain, above: 10}
    severity: high
""",
            )
        ]
    )
    for restart in (False, True):
        engine = RuleEngine(rules)
        out, _ = engine.observe_batch([_obs(0, "g1", height=4.5)])
        assert [t.state for t in out] == ["firing"]
        if restart:
            engine = RuleEngine.restore(rules, engine.snapshot())
        out, _ = engine.observe_batch([_obs(1, "g1", height=3.0)])
        assert [(t.state, t.values) for t in out] == [("resolved", {"level": 3.0, "rain": None})], restart
        assert engine.active_alarms() == []
