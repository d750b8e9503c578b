"""`atalaia rules test` (promtool-like rule unit tests) and `atalaia rules backtest`."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from atalaia.rules.cli import rules

HERE = Path(__file__).resolve().parent
HYDRO_TESTS = HERE / "data" / "rules_tests" / "hydro_test.yaml"
RULES = """rules:
  - id: high
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: critical, above: 5, for: 2m}, {severity: high, above: 4}]
"""


def test_example_rule_tests_pass() -> None:
    result = CliRunner().invoke(rules, ["test", str(HYDRO_TESTS)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("2 passed, 0 failed")


def test_failing_rule_test_prints_a_readable_diff(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RULES)
    (tmp_path / "t.yaml").write_text("""rule_files: [r.yaml]
tests:
  - name: wrong expectations
    input_series:
      - {entity: e1, type: WaterObserved, attribute: height, values: "3 4.5 5.5x3"}
    alarm_tests:
      - eval_time: 2m
        exp_alarms: [{rule: high, key: e1, severity: critical}]
    exp_transitions:
      - {at: 1m, rule: high, key: e1, state: firing, severity: high}
      - {at: 3m, rule: high, key: e1, state: firing, severity: critical}
""")
    result = CliRunner().invoke(rules, ["test", str(tmp_path / "t.yaml")])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"FAILED {tmp_path / 't.yaml'}: wrong expectations",
        "  alarms at 2m differ (- expected, + got):",
        "    - high e1 firing critical",
        "    + high e1 firing high",
        "  transitions differ (- expected, + got):",
        "    @@ -1,2 +1,2 @@",
        "           1m high e1 firing high",
        "    -      3m high e1 firing critical",
        "    +      4m high e1 firing critical",
        "0 passed, 1 failed",
    ]


def test_a_series_gives_its_readings_unit_code_and_they_convert_as_live(tmp_path: Path) -> None:
    """A gauge in centimetres under a rule in metres could not be tested: 'unit' was an unknown key
    of a series, and readings without a code are taken in the type's documented unit (metres)."""
    (tmp_path / "r.yaml").write_text(RULES.replace("attribute: height}", "attribute: height}\n    unit: m"))
    (tmp_path / "t.yaml").write_text("""rule_files: [r.yaml]
tests:
  - name: a gauge in centimetres
    input_series:
      - {entity: e1, type: WaterObserved, attribute: height, unit: CMT, values: "300 410 390"}
      - {entity: e2, type: WaterObserved, attribute: height, unit: KMH, values: "1"}
    exp_transitions:
      - {at: 1m, rule: high, key: e1, state: firing, severity: high}
      - {at: 2m, rule: high, key: e1, state: resolved, severity: high}
""")
    result = CliRunner().invoke(rules, ["test", str(tmp_path / "t.yaml")])
    assert result.exit_code == 1, result.output  # the km/h reading is refused, and said
    assert "at 0s: observation rejected: rule 'high': attribute 'height' in 'KMH'" in result.stdout
    assert "transitions differ" not in result.stdout, result.stdout


def test_an_expected_alarm_without_a_rule_is_a_file_error(tmp_path: Path) -> None:
    """Neither the alarm test nor the expected alarm names a rule: before, the test could never pass
    and failed with '- ? e1 firing high' / '+ high e1 firing high', not saying why."""
    (tmp_path / "r.yaml").write_text(RULES)
    (tmp_path / "t.yaml").write_text("""rule_files: [r.yaml]
tests:
  - name: no rule
    input_series:
      - {entity: e1, type: WaterObserved, attribute: height, values: "4.5x3"}
    alarm_tests:
      - eval_time: 2m
        exp_alarms: [{key: e1, severity: high}]
""")
    result = CliRunner().invoke(rules, ["test", str(tmp_path / "t.yaml")])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"{tmp_path / 't.yaml'}:7:9: 'alarm_tests': the expected alarm 'e1' names no rule: add 'rule:' to "
        "it or to this alarm test (an alarm test without 'rule' checks the alarms of every rule)"
    )
    fixed = (tmp_path / "t.yaml").read_text().replace("{key: e1,", "{rule: high, key: e1,")
    (tmp_path / "t.yaml").write_text(fixed)
    result = CliRunner().invoke(rules, ["test", str(tmp_path / "t.yaml")])
    assert result.exit_code == 0, result.output


def test_bad_rule_test_file_points_at_the_error(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RULES)
    (tmp_path / "t.yaml").write_text("rule_files: [r.yaml]\ntests:\n  - name: x\n    input_serie: []\n")
    result = CliRunner().invoke(rules, ["test", str(tmp_path / "t.yaml")])
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == f"{tmp_path / 't.yaml'}:4:5: unknown key 'input_serie' (did you mean 'input_series'?)"
    )


def test_a_series_without_an_entity_is_a_file_error(tmp_path: Path) -> None:
    """The observations a rule test builds go to the engine unchecked: the file is checked instead."""
    (tmp_path / "r.yaml").write_text(RULES)
    (tmp_path / "t.yaml").write_text(
        "rule_files: [r.yaml]\ntests:\n  - name: x\n    input_series:\n"
        '      - {entity: "", type: WaterObserved, attribute: height, values: "3"}\n'
    )
    result = CliRunner().invoke(rules, ["test", str(tmp_path / "t.yaml")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{tmp_path / 't.yaml'}:5:") and "entity" in result.stderr


def test_backtest_reports_alarms_time_firing_and_chattiness(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RULES)
    values = [3, 4.5, 3, 4.5, 3, 4.5, 3, 6, 6, 6, 6, 3] + [3] * 48  # one hour, one value a minute
    history = tmp_path / "h.jsonl"
    history.write_text(
        "".join(
            json.dumps(
                {
                    "time": f"2024-03-01T00:{i:02d}:00Z",
                    "entity": "e1",
                    "type": "WaterObserved",
                    "attributes": {"height": v},
                }
            )
            + "\n"
            for i, v in enumerate(values)
        )
    )
    result = CliRunner().invoke(rules, ["backtest", str(tmp_path / "r.yaml"), str(history), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    # fires at 1, 3, 5, 7 (escalates to critical at 9), resolves at 2, 4, 6, 11: 4 alarms, 1+1+1+4 minutes
    assert row == {
        "rule": "high",
        "alarms": 4,
        "pending_only": 0,
        "firing_hours": round(7 / 60, 3),
        "transitions": 9,
        "transitions_per_hour": round(9 / (59 / 60), 3),
        "keys": 1,
        "chattering_keys": 0,
    }
    # three transitions within a minute (15 s apart) is chattering (EEMUA 191)
    history.write_text(
        "".join(
            json.dumps(
                {
                    "time": f"2024-03-01T00:00:{i * 15:02d}Z",
                    "entity": "e1",
                    "type": "WaterObserved",
                    "attributes": {"height": v},
                }
            )
            + "\n"
            for i, v in enumerate([3, 4.5, 3, 4.5])
        )
    )
    result = CliRunner().invoke(rules, ["backtest", str(tmp_path / "r.yaml"), str(history), "--json"])
    assert json.loads(result.stdout)["chattering_keys"] == 1


def test_backtest_of_a_history_with_no_usable_observation_says_zero_not_nan(tmp_path: Path) -> None:
    """A history whose lines are all refused (or an empty file) spans no time: every rule had 0
    transitions an hour, not `nan` in the table and `null` in --json."""
    (tmp_path / "r.yaml").write_text(RULES)
    for text in ("", '{"a": 1}\n'):
        history = tmp_path / "h.jsonl"
        history.write_text(text)
        result = CliRunner().invoke(rules, ["backtest", str(tmp_path / "r.yaml"), str(history), "--json"])
        (row,) = [json.loads(line) for line in result.stdout.splitlines()]
        assert row["transitions_per_hour"] == 0.0 and row["firing_hours"] == 0.0, row
        table = CliRunner().invoke(rules, ["backtest", str(tmp_path / "r.yaml"), str(history)])
        assert "nan" not in table.stdout, table.stdout


def test_replay_and_backtest_with_a_directory_last_say_it_is_the_observations_file(tmp_path: Path) -> None:
    """`rules replay config/rules some-dir` raised IsADirectoryError with a traceback."""
    (tmp_path / "r.yaml").write_text(RULES)
    for command in ("replay", "backtest"):
        r = CliRunner().invoke(rules, [command, str(tmp_path / "r.yaml"), str(tmp_path)])
        assert r.exit_code == 2, r.output
        assert "is a directory: the last argument is the observations file" in r.output, r.output
