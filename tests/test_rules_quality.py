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


def test_a_table_resaved_in_another_encoding_keeps_the_running_rule(tmp_path: Path) -> None:
    """The table re-saved by a spreadsheet as Windows-1252 while the rules run: the last good
    content stays, with a warning. Before, UnicodeDecodeError escaped from the engine."""
    f = _table_rules(tmp_path, "entity,high\ng1,4.0\n")
    engine = RuleEngine(load_rules([f]))
    assert [t.state for t in engine.observe_batch([_obs(0, 4.5, "g1")])[0]] == ["firing"]
    (tmp_path / "gauges.csv").write_bytes("entity,high\ng1,5.0\nSé,5.0\n".encode("cp1252"))
    st_ = (tmp_path / "gauges.csv").stat()
    os.utime(tmp_path / "gauges.csv", ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))
    engine.advance(time.time())
    out, rejected = engine.observe_batch([_obs(1, 4.4, "g1")])
    assert out == [] and not rejected  # still firing on the last good table (4.0)
    assert any("not UTF-8" in w for w in engine.drain_quality())


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        (None, "gauges.csv:1: threshold table not readable"),
        ("entity,high\ng1,4.0\ng2,lots\n", "gauges.csv:3: 'high' is not a number: 'lots'"),
        ("entity,low\ng1,4.0\n", "gauges.csv:1: no column 'high'"),
        ("entity,high\ng1,4.0,7\n", "gauges.csv:2: 3 cells, the header has 2"),
        # (before: tracebacks out of 'rules check') a table saved by a spreadsheet in Windows-1252,
        # a directory where the table should be
        (b"entity,high\ng1,4.0\nS\xe9,5.0\n", "gauges.csv:3: threshold table not UTF-8 text"),
        ("dir", "gauges.csv:1: threshold table is not a regular file"),
        # a cell over the csv module's field limit is on the line that has it (it read one further)
        (
            f"entity,high\ng1,4.0\ng2,{'9' * 140_000}\ng3,5.0\n",
            "gauges.csv:3: threshold table not CSV: field larger",
        ),
    ],
)
def test_bad_table_is_an_error_at_file_line(tmp_path: Path, csv: str | bytes | None, message: str) -> None:
    f = _table_rules(tmp_path, csv if isinstance(csv, str) and csv != "dir" else "")
    if csv is None or csv == "dir":
        (tmp_path / "gauges.csv").unlink()
    if csv == "dir":
        (tmp_path / "gauges.csv").mkdir()
    if isinstance(csv, bytes):
        (tmp_path / "gauges.csv").write_bytes(csv)
    with pytest.raises(RuleFileError) as exc:
        load_rules([f])
    text = str(exc.value)
    assert text.startswith(f"{f}:4:"), text
    assert message in text


PER_ENTITY_M = PER_ENTITY.replace("    severities:", "    unit: m\n    severities:")


def _with_units(obs: dict, **units: str) -> dict:
    return {**obs, "units": units}


@pytest.mark.parametrize("height_unit", [{"height": "MTR"}, {}])
def test_threshold_attribute_is_converted_from_its_own_unit(height_unit: dict) -> None:
    """A gauge reporting its level in metres and its alert level in centimetres (450 cm = 4.5 m):
    a height of 5.0 m is above it (critical), not below a raw 450."""
    engine = RuleEngine(load_texts([("r.yaml", PER_ENTITY_M)]))
    obs = _with_units(_obs(0, 5.0, "g1", alertLevelHigh=450.0), alertLevelHigh="CMT", **height_unit)
    out, rejected = engine.observe_batch([obs])
    assert not rejected
    assert [(t.key, t.state, t.severity, t.value) for t in out] == [("g1", "firing", "critical", 5.0)]
    # remembered in metres too: a later height alone compares with 4.5 m
    engine = RuleEngine(load_texts([("r.yaml", PER_ENTITY_M)]))
    level_only = {
        **_obs(0, 0, "g1"),
        "attributes": {"alertLevelHigh": 450.0},
        "units": {"alertLevelHigh": "CMT"},
    }
    out, _ = engine.observe_batch([level_only, _with_units(_obs(1, 4.6, "g1"), **height_unit)])
    assert [(t.state, t.severity) for t in out] == [("firing", "critical")]
    assert not engine.drain_quality(log_them=False)


@settings(max_examples=80, deadline=None)
@given(
    height_m=st.floats(0, 20, allow_nan=False),
    level_cm=st.floats(1, 2000, allow_nan=False),
    remembered=st.booleans(),
)
def test_threshold_in_centimetres_is_the_same_as_in_metres(
    height_m: float, level_cm: float, remembered: bool
) -> None:
    """Property: a threshold sent in CMT gives the severities the same threshold sent in metres gives
    (the conversion is the one readings get: x 0.01)."""

    def run(level: float, code: str) -> list[tuple]:
        engine = RuleEngine(load_texts([("r.yaml", PER_ENTITY_M)]))
        if remembered:
            first = {
                **_obs(0, 0, "g1"),
                "attributes": {"alertLevelHigh": level},
                "units": {"alertLevelHigh": code},
            }
            batch = [first, _obs(1, height_m, "g1")]
        else:
            batch = [_with_units(_obs(1, height_m, "g1", alertLevelHigh=level), alertLevelHigh=code)]
        out, _ = engine.observe_batch(batch)
        return [(t.state, t.severity) for t in out]

    assert run(level_cm, "CMT") == run(round(level_cm * 0.01, 12), "MTR")


def test_threshold_in_a_unit_that_does_not_convert_is_not_used() -> None:
    """An alert level in kelvin for a rule in metres: that severity is missing (never compared with
    the raw number), with a data-quality warning naming the unit; a usable level later restores it."""
    engine = RuleEngine(load_texts([("r.yaml", PER_ENTITY_M)]))
    good = _with_units(_obs(0, 1.0, "g1", alertLevelHigh=4.0), alertLevelHigh="MTR")
    engine.observe_batch([good])
    bad = _with_units(_obs(1, 5.0, "g1", alertLevelHigh=2.0), alertLevelHigh="KEL")
    out, rejected = engine.observe_batch([bad])
    assert not rejected  # the height itself is fine: evaluated, without that threshold
    assert [(t.state, t.severity) for t in out] == [("firing", "high")]  # not critical on 2.0 nor on 4.0
    assert engine.stats["threshold_missing"] == 1
    (warning,) = engine.drain_quality(log_them=False)
    assert "no threshold for g1" in warning and "'alertLevelHigh' in 'KEL'" in warning
    assert "cannot be converted to m" in warning
    out, _ = engine.observe_batch(
        [_with_units(_obs(2, 5.0, "g1", alertLevelHigh=450.0), alertLevelHigh="CMT")]
    )
    assert [(t.state, t.severity) for t in out] == [("firing", "critical")]


def test_threshold_without_a_rule_unit_is_compared_as_sent() -> None:
    """No `unit:` on the rule: nothing is converted (as for readings)."""
    engine = RuleEngine(load_texts([("r.yaml", PER_ENTITY)]))
    obs = _with_units(_obs(0, 5.0, "g1", alertLevelHigh=450.0), alertLevelHigh="CMT")
    out, _ = engine.observe_batch([obs])
    assert [(t.state, t.severity) for t in out] == [("firing", "high")]
