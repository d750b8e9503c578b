"""Data-quality rules (`range`) and per-entity thresholds (`{attribute}` / `{table, column}`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.rules.engine import RuleEngine
from atalaia.rules.errors import RuleFileError
from atalaia.rules.loader import load_rules, load_texts

RANGED = """
rules:
  - id: level
    select: {type: WaterObserved, attribute: height}
    range: [0, 20]
    aggregate: {function: max, window: 10m}
    severities: [{severity: high, above: 4.0, for: 1m}]
  - {id: stuck, select: {type: WaterObserved, attribute: height}, stuck_for: 2m, severity: low}
  - {id: silent, select: {type: WaterObserved}, absent_for: 5m, severity: medium}
"""


def _obs(minute: int, height: float, entity: str = "g1", **attrs: float) -> dict:
    return {
        "time": f"2024-03-01T{minute // 60:02d}:{minute % 60:02d}:00Z",
        "entity": entity,
        "type": "WaterObserved",
        "attributes": {"height": height, **attrs},
        "labels": {"parish": "Sé"},
    }


def _lines(rules: str, obs: list[dict]) -> list[tuple]:
    engine = RuleEngine(load_texts([("r.yaml", rules)]))
    out, rejected = engine.observe_batch(obs)
    assert not rejected
    out += engine.finish()
    return [(t.at[11:16], t.rule, t.key, t.state, t.severity, t.value) for t in out]


def test_impossible_value_raises_sensor_fault_not_the_hazard() -> None:
    lines = _lines(RANGED, [_obs(0, 3.0), _obs(1, 250.0), _obs(2, 3.1), _obs(3, 3.1), _obs(4, 3.1)])
    assert ("00:01", "level:sensor-fault", "g1", "firing", "low", 250.0) in lines
    assert ("00:02", "level:sensor-fault", "g1", "resolved", "low", 3.1) in lines
    assert not [x for x in lines if x[1] == "level"]  # 250 never entered the max window
    assert ("00:04", "stuck", "g1", "firing", "low", 3.1) in lines  # stuck keeps working


def test_sensor_fault_labels_are_its_own() -> None:
    engine = RuleEngine(
        load_texts([("r.yaml", RANGED.replace("severities", "labels: {hazard: flood}\n    severities"))])
    )
    out, _ = engine.observe_batch([_obs(0, -5.0)])
    (fault,) = out
    assert fault.rule == "level:sensor-fault"
    assert fault.labels == {"parish": "Sé", "kind": "sensor-fault", "rule": "level"}
    assert "outside the physically possible range [0, 20]" in fault.annotations["summary"]
    assert engine.active_alarms()[0]["rule"] == "level:sensor-fault"
    restored = RuleEngine.restore(engine.ruleset, engine.snapshot())
    out, _ = restored.observe_batch([_obs(1, 1.0)])
    assert [(t.rule, t.state) for t in out] == [("level:sensor-fault", "resolved")]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.floats(0, 8), st.floats(21, 1e6), st.floats(-1e6, -0.01)), min_size=1, max_size=40)
)
def test_range_is_the_hazard_rule_without_the_impossible_values(heights: list[float]) -> None:
    """Property: the hazard rule's transitions with `range` = those without `range` on the stream
    with the impossible values removed (they never reach its window)."""
    obs = [_obs(i, h) for i, h in enumerate(heights)]
    hazard = [x for x in _lines(RANGED, obs) if x[1] == "level"]
    plain = RANGED.replace("    range: [0, 20]\n", "")
    kept = [o for o in obs if 0 <= o["attributes"]["height"] <= 20]
    assert hazard == [x for x in _lines(plain, kept) if x[1] == "level"] if kept else hazard == []


def test_range_errors_point_at_the_key() -> None:
    with pytest.raises(RuleFileError) as exc:
        load_texts(
            [
                (
                    "r.yaml",
                    "rules:\n  - {id: a, select: {type: T, attribute: x}, range: [5, 1], severities: [{severity: high, above: 2}]}\n",
                )
            ]
        )
    assert "r.yaml:2:" in str(exc.value) and "min < max" in str(exc.value)


PER_ENTITY = """
rules:
  - id: level
    select: {type: WaterObserved, attribute: height}
    severities:
      - {severity: critical, above: {attribute: alertLevelHigh}}
      - {severity: high, above: 3.5}
"""


def test_threshold_from_the_entitys_own_attribute() -> None:
    engine = RuleEngine(load_texts([("r.yaml", PER_ENTITY)]))
    out, _ = engine.observe_batch(
        [
            _obs(0, 3.0, "g1", alertLevelHigh=4.0),
            _obs(0, 3.0, "g2", alertLevelHigh=6.0),
            _obs(1, 4.5, "g1"),  # latest own level 4.0: critical
            _obs(1, 4.5, "g2"),  # own level 6.0: only high
            _obs(2, 4.5, "g3"),  # no level: high only, and a data-quality warning
        ]
    )
    got = [(t.key, t.state, t.severity) for t in out]
    assert got == [("g1", "firing", "critical"), ("g2", "firing", "high"), ("g3", "firing", "high")]
    assert engine.stats["threshold_missing"] == 1
    (warning,) = engine.drain_quality(log_them=False)
    assert "no threshold for g3 (attribute 'alertLevelHigh')" in warning
    # the level alone (no height) is remembered too
    out, _ = engine.observe_batch(
        [{**_obs(3, 0, "g3"), "attributes": {"alertLevelHigh": 4.0}}, _obs(4, 4.5, "g3")]
    )
    assert [(t.key, t.state, t.severity) for t in out] == [("g3", "firing", "critical")]


def test_missing_threshold_never_fires_on_a_default() -> None:
    only_ref = PER_ENTITY.replace("      - {severity: high, above: 3.5}\n", "")
    assert _lines(only_ref, [_obs(i, 1000.0) for i in range(3)]) == []


def _table_rules(tmp_path: Path, csv: str) -> Path:
    (tmp_path / "gauges.csv").write_text(csv)
    f = tmp_path / "hydro.yaml"
    f.write_text(
        "rules:\n  - id: level\n    select: {type: WaterObserved, attribute: height}\n"
        "    severities: [{severity: high, above: {table: gauges.csv, column: high}}]\n"
    )
    return f


def test_threshold_from_a_table_reloaded_on_change(tmp_path: Path) -> None:
    f = _table_rules(tmp_path, "entity,high\ng1,4.0\ng2,5.0\n")
    engine = RuleEngine(load_rules([f]))
    out, _ = engine.observe_batch([_obs(0, 4.5, "g1"), _obs(0, 4.5, "g2")])
    assert [(t.key, t.state) for t in out] == [("g1", "firing")]
    (tmp_path / "gauges.csv").write_text("entity,high\ng1,4.0\ng2,4.2\n")
    st_ = (tmp_path / "gauges.csv").stat()
    os.utime(tmp_path / "gauges.csv", ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))
    engine.advance(time.time())
    out, _ = engine.observe_batch([_obs(1, 4.5, "g2")])
    assert [(t.key, t.state) for t in out] == [("g2", "firing")]


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        (None, "gauges.csv:1: threshold table not readable"),
        ("entity,high\ng1,4.0\ng2,lots\n", "gauges.csv:3: 'high' is not a number: 'lots'"),
        ("entity,low\ng1,4.0\n", "gauges.csv:1: no column 'high'"),
        ("entity,high\ng1,4.0,7\n", "gauges.csv:2: 3 cells, the header has 2"),
    ],
)
def test_bad_table_is_an_error_at_file_line(tmp_path: Path, csv: str | None, message: str) -> None:
    f = _table_rules(tmp_path, csv or "")
    if csv is None:
        (tmp_path / "gauges.csv").unlink()
    with pytest.raises(RuleFileError) as exc:
        load_rules([f])
    text = str(exc.value)
    assert text.startswith(f"{f}:4:"), text
    assert message in text
