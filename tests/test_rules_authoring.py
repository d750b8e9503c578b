"""Authoring help: attribute names checked against the Smart Data Models schemas, the demo's air
rules fire on its feed, `rules test` asserts labels/annotations, `rules replay --labels`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from click.testing import CliRunner

from atalaia.incidents.cli import incidents
from atalaia.rules.cli import rules
from atalaia.rules.engine import RuleEngine
from atalaia.rules.loader import load_rules, load_texts
from atalaia.rules.sdm import attribute_problem, catalogue

ROOT = Path(__file__).resolve().parents[1]
AIR_TYPO = """group: air
rules:
  - id: no2-high
    select: {type: AirQualityObserved, attribute: NO2}
    severities: [{severity: high, above: 200}]
  - id: pm25-high
    select: {type: AirQualityObserved, attribute: PM2.5}
    severities: [{severity: high, above: 25}]
  - id: own-type
    select: {type: MyGauge, attribute: NO2}
    severities: [{severity: high, above: 25}]
"""


def test_check_warns_on_attribute_names_the_sdm_schema_lacks(tmp_path: Path) -> None:
    f = tmp_path / "air.yaml"
    f.write_text(AIR_TYPO)
    result = CliRunner().invoke(rules, ["check", str(f)])
    assert result.exit_code == 0, result.output  # warnings do not refuse the file
    assert result.stderr.splitlines() == [
        f"{f}:4:51: warning: attribute 'NO2' is not in the Smart Data Models schema of "
        "AirQualityObserved (did you mean 'no2'?)",
        f"{f}:7:51: warning: attribute 'PM2.5' is not in the Smart Data Models schema of "
        "AirQualityObserved (did you mean 'pm25'?)",
    ]
    assert "2 warning(s)" in result.stdout
    strict = CliRunner().invoke(rules, ["check", "--strict", str(f)])
    assert strict.exit_code == 1 and "ok" not in strict.stdout  # (it said ok, then exited 1)
    assert "failed (--strict): 3 rule(s) in 1 file(s), 2 warning(s)" in strict.stderr


def test_shipped_rules_have_no_warnings() -> None:
    result = CliRunner().invoke(rules, ["check", "--strict", str(ROOT / "config" / "rules")])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output


def test_catalogue_covers_the_fixture_types() -> None:
    cat = catalogue()
    assert {"AirQualityObserved", "WaterObserved", "Device", "FloodMonitoring"} <= set(cat)
    assert cat["Device"]["deviceState"]["type"] == ["string"]
    assert attribute_problem("WaterObserved", "heigth") == (
        "attribute 'heigth' is not in the Smart Data Models schema of WaterObserved (did you mean 'height'?)"
    )


def _demo_observations(steps: int) -> list[dict]:
    from atalaia.streams.ingest.demo import DemoScenario
    from atalaia.streams.ingest.encode import encode_observation
    from atalaia.streams.ingest.payload import parse_payload

    scenario = DemoScenario()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for k in range(steps):
        now = start + timedelta(seconds=k)
        for body in scenario.step(now):
            result = parse_payload(body, content_type="application/ld+json", received_at=now)
            out += [orjson.loads(encode_observation(o)) for o in result.observations]
    return out


def test_demo_air_rules_fire_on_the_demo_feed() -> None:
    obs = _demo_observations(30)
    names = {name for o in obs if o["type"] == "AirQualityObserved" for name in o["attributes"]}
    assert names == {"no2", "pm10", "pm25"}
    for name in names:
        assert attribute_problem("AirQualityObserved", name) is None
    engine = RuleEngine(load_rules([ROOT / "config" / "rules" / "air.yaml"]))
    transitions, rejected = engine.observe_batch(obs)
    assert not rejected
    fired = {(t.rule, t.state) for t in transitions}
    assert ("pm25-high", "firing") in fired


RULES = """rules:
  - id: high
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: high, above: 4}]
    labels: {team: hydro}
    annotations: {summary: "{{ entity }} at {{ value }} m"}
"""


def _ruletest(tmp_path: Path, expected: str) -> tuple[int, list[str]]:
    (tmp_path / "r.yaml").write_text(RULES)
    (tmp_path / "t.yaml").write_text(f"""rule_files: [r.yaml]
tests:
  - name: labels
    input_series:
      - {{entity: e1, type: WaterObserved, attribute: height, labels: {{parish: Sé}}, values: "3 4.5"}}
    alarm_tests:
      - eval_time: 1m
        exp_alarms: [{expected}]
""")
    result = CliRunner().invoke(rules, ["test", str(tmp_path / "t.yaml")])
    return result.exit_code, result.stdout.splitlines()


def test_rule_test_asserts_labels_and_annotations(tmp_path: Path) -> None:
    good = (
        "{rule: high, key: e1, severity: high, labels: {parish: Sé, team: hydro}, "
        "annotations: {summary: e1 at 4.5 m}}"
    )
    assert _ruletest(tmp_path, good)[0] == 0
    promtool_names = (
        "{rule: high, key: e1, severity: high, exp_labels: {parish: Sé, team: hydro}, "
        "exp_annotations: {summary: e1 at 4.5 m}}"
    )
    assert _ruletest(tmp_path, promtool_names)[0] == 0
    code, lines = _ruletest(tmp_path, "{rule: high, key: e1, severity: high, labels: {team: flood}}")
    assert code == 1
    assert lines[1:5] == [
        "  labels of high e1 at 1m differ (- expected, + got):",
        "    - team: flood",
        "    + parish: Sé",
        "    + team: hydro",
    ]
    code, lines = _ruletest(tmp_path, "{rule: high, key: e1, severity: high, annotations: {summary: x}}")
    assert code == 1 and "    + summary: e1 at 4.5 m" in lines


def test_replay_labels_feed_incidents_replay(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RULES)
    obs = tmp_path / "obs.jsonl"
    obs.write_text(
        "\n".join(
            json.dumps(
                {
                    "time": f"2024-03-01T00:0{i}:00Z",
                    "entity": e,
                    "type": "WaterObserved",
                    "attributes": {"height": 4.5},
                    "labels": {"parish": "Sé"},
                }
            )
            for i, e in enumerate(["g1", "g2"])
        )
    )
    plain = CliRunner().invoke(rules, ["replay", str(tmp_path / "r.yaml"), str(obs)])
    assert all(
        list(json.loads(x)) == ["at", "rule", "key", "state", "severity", "value"]
        for x in plain.stdout.splitlines()
    )
    result = CliRunner().invoke(rules, ["replay", "--labels", str(tmp_path / "r.yaml"), str(obs)])
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert lines[0]["labels"] == {"parish": "Sé", "team": "hydro"}
    assert lines[0]["annotations"] == {"summary": "g1 at 4.5 m"}
    alarms = tmp_path / "alarms.jsonl"
    alarms.write_text(result.stdout)
    got = CliRunner().invoke(incidents, ["replay", str(alarms)])
    assert got.exit_code == 0, got.output
    events = [json.loads(x) for x in got.stdout.splitlines()]
    # both gauges' alarms land in one incident correlated by their parish label
    assert {e["incident"] for e in events} == {events[0]["incident"]}
    assert events[0]["correlation"] == {"parish": "Sé"}
    assert events[-1]["alarm_count"] == 2


def test_loaded_ruleset_keeps_warnings() -> None:
    rs = load_texts([("air.yaml", AIR_TYPO)])
    assert [w.line for w in rs.warnings] == [4, 7]


def test_replay_labels_carry_what_incidents_replay_correlates_and_routes_on(tmp_path: Path) -> None:
    # `rules replay --labels | incidents replay` is the offline what-if of the live path: the lines
    # must carry the group (positions match `group=~...`), the type, the tenant (part of the
    # correlation key) and the location, as the live transitions on atalaia.alarms do
    (tmp_path / "r.yaml").write_text("group: hydro\n" + RULES)
    obs = tmp_path / "obs.jsonl"
    obs.write_text(
        "\n".join(
            json.dumps(
                {
                    "time": "2024-03-01T00:00:00Z",
                    "entity": "g1",
                    "type": "WaterObserved",
                    "attributes": {"height": 4.5},
                    "labels": {"parish": "Sé"},
                    "location": [-8.61, 41.14],
                    "tenant": tenant,
                }
            )
            for tenant in ("porto", "gaia")
        )
    )
    result = CliRunner().invoke(rules, ["replay", "--labels", str(tmp_path / "r.yaml"), str(obs)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert sorted((x["group"], x["type"], x["tenant"], x["location"]) for x in lines) == [
        ("hydro", "WaterObserved", t, [-8.61, 41.14]) for t in ("gaia", "porto")
    ]
    alarms = tmp_path / "alarms.jsonl"
    alarms.write_text(result.stdout)
    got = CliRunner().invoke(incidents, ["replay", str(alarms)])
    assert got.exit_code == 0, got.output
    events = [json.loads(x) for x in got.stdout.splitlines()]
    # one incident per tenant (the same parish name in two municipalities is two places)
    assert sorted(e["tenant"] for e in events) == ["gaia", "porto"]
    assert len({e["incident"] for e in events}) == 2
    assert all(e["labels"].get("group") == "hydro" for e in events)
