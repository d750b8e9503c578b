"""Bad ATALAIA_* settings: one line naming the variable and why, from every command, never a
pydantic traceback; values that would make the system misbehave (no partitions, a NaN lateness,
a negative port) are refused at start."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from atalaia.streams.cli import main
from atalaia.streams.settings import SettingsError, get_settings, load_settings


@pytest.fixture(autouse=True)
def fresh_settings():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("HTTP_PORT", "abc", "valid integer"),
        ("HTTP_PORT", "-5", "greater than or equal to 1"),
        ("HTTP_PORT", "70000", "less than or equal to 65535"),
        ("METRICS_PORT", "0", "greater than or equal to 1"),
        ("PARTITIONS", "0", "greater than or equal to 1"),
        ("MAX_PAYLOAD_BYTES", "-1", "greater than or equal to 1"),
        ("ALLOWED_LATENESS_S", "nan", "finite number"),
        ("FUTURE_TOLERANCE_S", "-1", "greater than or equal to 0"),
        ("HTTP_BODY_TIMEOUT_S", "inf", "finite number"),
        ("HEALTH_MAX_BEHIND_S", "-1", "greater than or equal to 0"),
        ("HEALTH_MAX_BEHIND_S", "2min", "valid number"),
        ("HEARTBEAT_S", "0", "greater than 0"),
        ("LOG_LEVEL", "bogus", "'debug', 'info'"),
        ("TOPIC_PREFIX", "", "should match pattern"),
        ("AREA_OF_INTEREST", "[10,10,-10,-10]", "min < max"),
        ("TRUSTED_PROXIES", '["10.0.0.0/8", "proxy.local"]', "'proxy.local' is not an IP address or network"),
    ],
)
def test_a_bad_setting_is_one_clear_line(monkeypatch, name: str, value: str, why: str) -> None:
    monkeypatch.setenv(f"ATALAIA_{name}", value)
    with pytest.raises(SettingsError, match=why):
        load_settings()
    result = CliRunner().invoke(main, ["notify", "log"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"ATALAIA_{name}={value!r}: " in result.output and why in result.output


def test_good_settings_still_load(monkeypatch) -> None:
    monkeypatch.setenv("ATALAIA_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("ATALAIA_HTTP_PORT", "8181")
    s = load_settings()
    assert s.log_level == "warning" and s.http_port == 8181 and s.partitions == 6


def test_a_settings_file_takes_the_variable_names_and_refuses_unknown_ones(monkeypatch, tmp_path) -> None:
    """ATALAIA_CONFIG: a key the settings do not have was silently ignored (the port stayed 8080)."""
    f = tmp_path / "atalaia.yaml"
    f.write_text("ATALAIA_HTTP_PORT: 8282\nlog-level: warning\n")
    monkeypatch.setenv("ATALAIA_CONFIG", str(f))
    s = load_settings()
    assert s.http_port == 8282 and s.log_level == "warning"
    f.write_text("http_port: 8282\nhtp_port: 9\n")
    with pytest.raises(
        SettingsError, match=r"atalaia.yaml:2:1: unknown setting 'htp_port' \(did you mean http_port\?\)"
    ):
        load_settings()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        # a plain path: crashed every command with a pydantic-settings traceback
        (lambda a, b: str(a), lambda a, b: [a]),
        (lambda a, b: f"{a}{os.pathsep}{b}", lambda a, b: [a, b]),  # os.pathsep, as PATH
        (lambda a, b: json.dumps([str(a), str(b)]), lambda a, b: [a, b]),  # the JSON list still works
        (lambda a, b: f" {a} {os.pathsep} ", lambda a, b: [a]),
    ],
)
def test_rules_paths_takes_a_plain_path_a_pathsep_list_or_json(
    monkeypatch, tmp_path, given, expected
) -> None:
    a, b = tmp_path / "city", tmp_path / "more rules"
    monkeypatch.setenv("ATALAIA_RULES_PATHS", given(a, b))
    assert load_settings().rules_paths == expected(a, b)


def test_check_reads_rules_from_a_plain_rules_path(monkeypatch, tmp_path) -> None:
    """`atalaia check` with ATALAIA_RULES_PATHS=/some/dir checks the rules there."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "city.yaml").write_text(
        "rules:\n  - {id: lvl, select: {type: WaterObserved, attribute: height}, "
        "severities: [{severity: high, above: 3}]}\n"
    )
    monkeypatch.setenv("ATALAIA_RULES_PATHS", str(rules))
    result = CliRunner().invoke(main, ["check"])
    assert "Traceback" not in result.output
    assert f"== rules ({rules})\nok: 1 rule(s) in 1 file(s)" in result.output


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("RULES_PATHS", "", "no path"),
        ("RULES_PATHS", "[config/rules", "not a JSON list of paths"),
        ("HTTP_ALLOWED_HOSTS", "console.example", "not valid JSON"),  # list settings read JSON
        ("AREA_OF_INTEREST", "-9.6,36.8,-6.1,42.2", "not valid JSON"),
        ("PEERS", "ops=http://x", "not valid JSON"),
    ],
)
def test_a_list_setting_that_does_not_parse_is_one_line_too(
    monkeypatch, name: str, value: str, why: str
) -> None:
    """A list or tuple setting whose value is not JSON failed while pydantic-settings read the
    environment (its own SettingsError, not a ValidationError) and escaped as a long traceback."""
    monkeypatch.setenv(f"ATALAIA_{name}", value)
    with pytest.raises(SettingsError, match=why):
        load_settings()
    for command in (["notify", "log"], ["check"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        (line,) = [x for x in result.output.splitlines() if f"ATALAIA_{name}" in x]
        assert line.strip().startswith(f"ATALAIA_{name}={value!r}: ") and why in line
