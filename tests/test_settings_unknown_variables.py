"""A misspelt ATALAIA_* variable was silently ignored (the default ran instead); the worker, up and
console now say so at start, with the closest name."""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

import pytest

from atalaia.streams import commands
from atalaia.streams.settings import OTHER_VARIABLES, Settings, unknown_variables

ROOT = Path(__file__).resolve().parents[1]


def test_a_misspelt_setting_is_named_with_the_setting_it_resembles(tmp_path: Path) -> None:
    settings = Settings(escalation_path=tmp_path / "none.yaml", warnings_path=tmp_path / "none.yaml")
    env = {
        "ATALAIA_ALLOWED_LATENESS": "600",  # the setting is ATALAIA_ALLOWED_LATENESS_S
        "ATALAIA_HTTP_PORT": "8080",  # a setting
        "ATALAIA_YAML_MAX_BYTES": "100",  # read by the YAML loader
        "ATALAIA_ZZZ": "1",  # like nothing
        "ATALAIA_http_port": "9123",  # applied: settings names are read without case
        "PATH": "/bin",
    }
    lines = unknown_variables(env, settings)
    assert lines == [
        "ATALAIA_ALLOWED_LATENESS is set but is not an Atalaia setting and no configuration file names it: "
        "ignored; did you mean ATALAIA_ALLOWED_LATENESS_S?",
        "ATALAIA_ZZZ is set but is not an Atalaia setting and no configuration file names it: ignored",
    ]


def test_variables_the_escalation_and_warnings_files_name_are_known(tmp_path: Path) -> None:
    esc = tmp_path / "escalation.yaml"
    esc.write_text("targets:\n  pgu: {url: '${ATALAIA_MY_PGU}'}\n")
    warn = tmp_path / "warnings.yaml"
    warn.write_text("targets:\n  feed: {url: 'https://x/${ATALAIA_FEED_KEY}'}\n")
    settings = Settings(escalation_path=esc, warnings_path=warn)
    env = {"ATALAIA_MY_PGU": "https://pgu", "ATALAIA_FEED_KEY": "k", "ATALAIA_MY_PGUU": "typo"}
    assert [line.split()[0] for line in unknown_variables(env, settings)] == ["ATALAIA_MY_PGUU"]


def test_the_shipped_configuration_and_demo_variables_are_known() -> None:
    settings = Settings()
    env = {
        name: "x"
        for name in (
            "ATALAIA_PGU_URL",
            "ATALAIA_SMTP_HOST",
            "ATALAIA_SMTP_PORT",
            "ATALAIA_SMS_GATEWAY_URL",
            "ATALAIA_WEBHOOK_URL",
            "ATALAIA_WEBHOOK_SECRET",
            "ATALAIA_ALERTMANAGER_WEBHOOK_URL",
        )
    }
    assert unknown_variables(env, settings) == []


def test_every_variable_the_source_reads_is_known() -> None:
    """The list of variables read outside Settings is complete: each ATALAIA_* name in the product's
    source is a setting, in OTHER_VARIABLES, or a ${VAR} of the shipped escalation/warnings files."""
    if not (ROOT / ".git").exists():
        pytest.skip("needs the source tree")
    out = subprocess.run(
        ["git", "grep", "-hoE", "ATALAIA_[A-Z0-9_]*[A-Z0-9]", "--", "*.py", ":!tests/*"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    settings = Settings()
    known_by_files = {
        name
        for path in (settings.escalation_path, settings.warnings_path)
        for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text())
    }
    fields = {f"ATALAIA_{n.upper()}" for n in Settings.model_fields}
    prefixes = ("ATALAIA_KAFKA_SSL", "ATALAIA_MQTT", "ATALAIA_YAML")  # prefix + a field name
    missing = sorted(set(out) - fields - OTHER_VARIABLES - known_by_files - set(prefixes))
    assert missing == []


def test_the_process_the_user_started_warns_once(monkeypatch, caplog) -> None:
    monkeypatch.setenv("ATALAIA_PARTITONS", "4")
    monkeypatch.delenv("ATALAIA_PROCESS_NAME", raising=False)
    with caplog.at_level(logging.WARNING, logger="atalaia.settings"):
        commands._check_environment(Settings())
    assert any("ATALAIA_PARTITONS" in r.message and "ATALAIA_PARTITIONS" in r.message for r in caplog.records)
    caplog.clear()
    monkeypatch.setenv("ATALAIA_PROCESS_NAME", "alarms")  # a process that up started: up said it
    with caplog.at_level(logging.WARNING, logger="atalaia.settings"):
        commands._check_environment(Settings())
    assert caplog.records == []
