"""Bad ATALAIA_* settings: one line naming the variable and why, from every command, never a
pydantic traceback; values that would make the system misbehave (no partitions, a NaN lateness,
a negative port) are refused at start."""

from __future__ import annotations

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
