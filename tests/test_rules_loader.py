"""Rule files: exact `file:line:col: message` for broken files; the examples in config/ pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from atalaia.rules.cli import rules
from atalaia.rules.durations import format_duration, parse_duration
from atalaia.rules.loader import check_paths, load_rules

CONFIG = Path(__file__).resolve().parents[1] / "config" / "rules"

GOOD = """group: hydro
rules:
  - id: river-level-high
    select: {type: WaterObserved, attribute: height}
    severities:
      - {severity: high, above: 3.5}
"""

BROKEN = {
    "unknown-key": (
        """group: hydro
rules:
  - id: r1
    select: {type: WaterObserved, attribute: height}
    severties:
      - {severity: high, above: 3.5}
""",
        ["5:5: unknown key 'severties' (did you mean 'severities'?)"],
    ),
    "wrong-type": (
        """rules:
  - id: r1
    select: {type: WaterObserved, attribute: height}
    severities:
      - {severity: high, above: lots}
""",
        ["5:33: 'above' must be a number, got 'lots'"],
    ),
    "unknown-severity": (
        """rules:
  - id: r1
    select: {type: WaterObserved, attribute: height}
    severities:
      - severity: hgh
        above: 3
""",
        [
            "5:19: unknown severity 'hgh' (did you mean 'high'?); use one of: informational, low, medium, high, critical"
        ],
    ),
    "duplicate-id": (
        """rules:
  - id: r1
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: high, above: 3}]
  - id: r1
    select: {type: WaterObserved}
    absent_for: 10m
    severity: low
""",
        ["5:9: duplicate rule id 'r1' (first defined at {file}:2:9)"],
    ),
    "bad-duration": (
        """rules:
  - id: r1
    select: {type: WaterObserved, attribute: height}
    aggregate: {function: avg, window: 10x}
    severities: [{severity: high, above: 3}]
""",
        [
            "4:40: 'window': bad duration '10x': use a number and a unit (ms, s, m, h, d, w), e.g. 30s, 10m, 1h30m"
        ],
    ),
    "clear-below-wrong-side": (
        """rules:
  - id: r1
    select: {type: WaterObserved, attribute: height}
    severities:
      - {severity: critical, above: 4.5, clear_below: 4.8}
""",
        [
            "5:55: 'clear_below' (4.8) must not be above 'above' (4.5): a firing alarm clears when the value falls "
            "below it"
        ],
    ),
    "negative-for": (
        """rules:
  - id: r1
    select: {type: WaterObserved, attribute: height}
    severities:
      - {severity: high, above: 3, for: -2m}
""",
        ["5:41: 'for': duration must not be negative (got '-2m')"],
    ),
    "empty": ("", ["1:1: empty rule file: expected 'group:' and 'rules:'"]),
    "yaml-syntax": (
        """rules:
  - id: r1
    select: {type: WaterObserved, attribute: height
""",
        [
            "3:13: YAML syntax error: a '{' here is never closed with '}' (expected ',' or '}', but got '<stream end>')"
        ],
    ),
    "several-errors": (
        """rules:
  - id: r1
    select: {type: WaterObserved, attribute: height}
    severities:
      - {severity: low, above: 3}
      - {severity: high, above: 4}
  - id: r2
    select: {type: WaterObserved}
    stuck_for: 1h
    severity: low
  - id: r3
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: high, below: 1, above: 2}]
    annotations: {summary: "{{ valeu }}"}
""",
        [
            "6:20: severities must be listed highest first: 'high' comes after 'low'",
            "8:13: a stuck_for rule needs 'select.attribute' (the value that must change)",
            "13:35: use either 'above' or 'below' in one severity, not both (write two severities)",
            "14:28: annotation 'summary': unknown template variable 'valeu' (did you mean 'value'?)",
        ],
    ),
    "unknown-filter": (
        """rules:
  - id: r1
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: high, above: 3}]
    annotations: {summary: "{{ '%.2f' | ormat(value) }}"}
""",
        ["5:28: annotation 'summary': template syntax error: No filter named 'ormat'."],
    ),
    "control-character": (
        "rules:\n  - id: a\x07b\n",
        ["2:10: YAML syntax error: character '\\x07' is not allowed"],
    ),
    "missing-key": (
        """rules:
  - id: r1
    severities: [{severity: high, above: 3}]
""",
        ["2:5: missing required key 'select'"],
    ),
    "two-kinds": (
        """rules:
  - id: r1
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: high, above: 3}]
    absent_for: 5m
""",
        ["5:5: 'absent_for' cannot be combined with 'severities' in one rule: write two rules"],
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_rule_file(tmp_path: Path, name: str) -> None:
    text, expected = BROKEN[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    assert [str(e) for e in check_paths([path])] == [
        f"{path}:" + e.replace("{file}", str(path)) for e in expected
    ]


def test_check_cli_prints_all_errors_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(BROKEN["several-errors"][0])
    (tmp_path / "b.yaml").write_text(BROKEN["wrong-type"][0])
    result = CliRunner().invoke(rules, ["check", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.count(str(tmp_path)) == 5
    assert "5 error(s)" in result.stderr


def test_check_cli_refuses_a_detector_the_detectors_configuration_lacks(tmp_path: Path) -> None:
    """`rules check` said ok for a rule naming a detector that does not exist; the rules stage
    then failed on the first observation that rule scored."""
    rule = (
        "group: g\nrules:\n  - id: flow\n    select: {type: WaterObserved, attribute: flow}\n"
        "    detector: record-novelti\n    severities: [{severity: high, above: 0.6}]\n"
    )
    (tmp_path / "a.yaml").write_text(rule)
    detectors = tmp_path / "detectors.yaml"
    detectors.write_text("default: record-novelty\ndetectors:\n  - {name: record-novelty, model: novelty}\n")
    for args in ([], ["--detectors", str(detectors)]):  # the configured file, or the one named
        result = CliRunner().invoke(rules, ["check", str(tmp_path / "a.yaml"), *args])
        assert result.exit_code == 1
        assert (
            f"{tmp_path / 'a.yaml'}:5:15: unknown detector 'record-novelti' (did you mean 'record-novelty'?"
            in (result.stderr)
        )
    (tmp_path / "a.yaml").write_text(rule.replace("novelti", "novelty"))
    result = CliRunner().invoke(rules, ["check", str(tmp_path / "a.yaml"), "--detectors", str(detectors)])
    assert result.exit_code == 0 and result.stdout.startswith("ok: 1 rule(s)")


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD)
    assert [str(e) for e in check_paths([tmp_path])] == [
        f"{tmp_path / 'b.yaml'}:3:9: duplicate rule id 'river-level-high' (first defined at {tmp_path / 'a.yaml'}:3:9)"
    ]


@pytest.mark.parametrize("path", sorted(CONFIG.glob("*.yaml")), ids=lambda p: p.name)
def test_config_examples_pass_check(path: Path) -> None:
    result = CliRunner().invoke(rules, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: ")


def test_config_examples_cover_the_demo() -> None:
    ids = {lr.rule.id for lr in load_rules([CONFIG]).rules}
    assert {
        "river-level-high",
        "station-silent",
        "sensor-stuck",
        "flow-anomaly",
        "no2-high",
        "pm10-high",
        "pm25-high",
        "o3-high",
        "heavy-rain",
    } <= ids


def test_schema_is_json_schema_with_rule_keys() -> None:
    result = CliRunner().invoke(rules, ["schema"])
    schema = json.loads(result.stdout)
    rule = schema["$defs"]["Rule"]["properties"]
    assert {"select", "severities", "absent_for", "stuck_for", "keep_firing_for", "detector"} <= set(rule)
    assert "for" in schema["$defs"]["Level"]["properties"]
    assert schema["$defs"]["Rule"]["additionalProperties"] is False


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("1h30m", 5400), ("0", 0), (0, 0), ("500ms", 0.5), ("2d", 172800)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["10x", "", "m", "5", "1h 30m", "-1m", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("path", sorted(CONFIG.glob("*.yaml")), ids=lambda p: p.name)
def test_json_schema_accepts_the_examples_and_rejects_typos(path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from ruamel.yaml import YAML

    from atalaia.rules.schema import json_schema

    schema = json_schema()
    document = YAML(typ="safe").load(path.read_text())
    jsonschema.validate(document, schema)  # what an editor checks as you type
    document["rules"][0]["severties"] = document["rules"][0].pop("severities", [])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schema)


def _with_editor_litter(d: Path) -> None:
    """What editors and file systems leave beside a rule file being edited."""
    (d / ".#city.yaml").symlink_to("ana@host.12345:1700000000")  # Emacs lock: a dangling link
    (d / "._city.yaml").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")  # AppleDouble
    (d / ".city.yaml.swp").write_bytes(b"b0VIM 9.0\x00")  # vim swap (not *.yaml: never read anyway)
    (d / ".hidden.yml").write_text("rules: [oops")


def test_hidden_files_in_a_rule_directory_are_not_rules(tmp_path: Path) -> None:
    """An Emacs lock or a macOS ._ file matched *.yaml: while it existed `rules check` failed and
    every reload was refused."""
    (tmp_path / "city.yaml").write_text(GOOD)
    _with_editor_litter(tmp_path)
    assert check_paths([tmp_path]) == []
    assert [r.rule.id for r in load_rules([tmp_path]).rules] == ["river-level-high"]
    result = CliRunner().invoke(rules, ["check", str(tmp_path)])
    assert result.exit_code == 0 and result.stdout.startswith("ok: 1 rule(s) in 1 file(s)")


def test_a_directory_of_hidden_files_only_has_no_rule_files(tmp_path: Path) -> None:
    _with_editor_litter(tmp_path)
    assert [str(e) for e in check_paths([tmp_path])] == [
        f"{tmp_path}:1:1: no rule files (*.yaml, *.yml) in this directory"
    ]


def test_a_hidden_file_named_on_its_own_is_read(tmp_path: Path) -> None:
    """Only a directory's scan skips hidden names: a file named explicitly is what was asked for."""
    (tmp_path / ".city.yaml").write_text(GOOD)
    assert [r.rule.id for r in load_rules([tmp_path / ".city.yaml"]).rules] == ["river-level-high"]


def test_a_fifo_or_a_link_to_a_device_named_as_a_rule_file_is_said_so_not_missing(tmp_path) -> None:
    """A rule path that is a FIFO or a link to /dev/zero was refused as "no such file or
    directory", sending its author to look for a file that is there. It is refused, unread, as
    not a regular file; a dangling link is still missing."""
    import os

    import pytest

    from atalaia.rules.errors import RuleFileError
    from atalaia.rules.loader import load_rules

    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "nowhere.yaml")
    for name, says in (
        ("fifo.yaml", "not a regular file"),
        ("zero.yaml", "not a regular file"),
        ("dangling.yaml", "no such file or directory"),
    ):
        with pytest.raises(RuleFileError) as e:
            load_rules([tmp_path / name])
        assert f"{name}:1:1: {says}" in str(e.value), str(e.value)
