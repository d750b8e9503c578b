"""``atalaia check``: every configuration file the running system loads, checked as the worker
loads it, named by the same settings; and ``rules check`` / ``incidents check`` without arguments
check the configured files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ATALAIA = str(Path(sys.executable).parent / "atalaia")


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ATALAIA_")}
    return subprocess.run(
        [ATALAIA, *args],
        env={**base, "ATALAIA_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # the configured files, not the working directory's
    )


def test_the_shipped_configuration_passes(tmp_path: Path) -> None:
    res = _run(["check"], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    parts = [line[3:].split(" (")[0] for line in res.stdout.splitlines() if line.startswith("== ")]
    assert parts == [
        "settings",
        "rules",
        "detectors",
        "incidents",
        "escalation",
        "warnings",
        "console users",
        "ingest tokens",
        "kafka and mqtt security",
        "exposure",
        "environment",
    ]
    assert res.stdout.rstrip().endswith("ok: every part")


def test_each_broken_file_is_named_at_its_line_and_the_run_fails(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yaml").write_text(
        "group: g\nrules:\n  - id: x\n    select: {type: WaterObserved, attribute: height}\n"
        "    severities: [{severity: hgh, above: 1}]\n"
    )
    users = tmp_path / "users.yaml"
    users.write_text("users:\n  - {name: ana, role: operator}\n  - {name: ana, role: viewer}\n")
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens: 3\n")
    res = _run(
        ["check"],
        tmp_path,
        ATALAIA_RULES_PATHS=f'["{rules}"]',
        ATALAIA_CONSOLE_USERS=str(users),
        ATALAIA_INGEST_TOKENS=str(tokens),
    )
    assert res.returncode == 1
    assert f"{rules / 'bad.yaml'}:5:" in res.stderr  # the severity's line
    assert f"{users}:3:" in res.stderr  # the second 'ana'
    assert f"{tokens}:1:" in res.stderr
    assert res.stderr.rstrip().endswith("failed: rules, console users, ingest tokens")
    assert "Traceback" not in res.stderr


def test_bad_settings_stop_the_check_naming_the_variable(tmp_path: Path) -> None:
    res = _run(["check"], tmp_path, ATALAIA_PARTITIONS="0")
    assert res.returncode == 1
    assert "ATALAIA_PARTITIONS='0'" in res.stderr and "failed: settings" in res.stderr


DELIVERY = {  # the shipped escalation file's target variables
    "ATALAIA_PGU_URL": "https://pgu.example/notify",
    "ATALAIA_WEBHOOK_URL": "https://sala.example/hook",
    "ATALAIA_WEBHOOK_SECRET": "s3cret-s3cret-s3cret-s3cret-s3cret",
    "ATALAIA_ALERTMANAGER_WEBHOOK_URL": "https://am.example/api/v2/alerts",
    "ATALAIA_SMS_GATEWAY_URL": "smseagle://token@sms.example",
    "ATALAIA_SMTP_HOST": "smtp.example",
    "ATALAIA_SMTP_PORT": "25",
}


def test_strict_fails_on_warnings(tmp_path: Path) -> None:
    """--strict: a variable nothing reads, or an escalation target whose variables are unset (it
    would fail when it first sends), fails the check."""
    res = _run(["check"], tmp_path, ATALAIA_PARTITONS="4")
    assert res.returncode == 0 and "did you mean ATALAIA_PARTITIONS?" in res.stderr
    assert "ATALAIA_PGU_URL not set" in res.stderr
    res = _run(["check", "--strict"], tmp_path, ATALAIA_PARTITONS="4", **DELIVERY)
    assert res.returncode == 1 and res.stderr.rstrip().endswith("failed: environment"), res.stderr
    res = _run(["check", "--strict"], tmp_path)
    assert res.returncode == 1 and res.stderr.rstrip().endswith("failed: escalation"), res.stderr
    res = _run(["check", "--strict"], tmp_path, **DELIVERY)
    assert res.returncode == 0, res.stderr


def test_a_public_address_without_authentication_fails_the_check(tmp_path: Path) -> None:
    """The check says what `atalaia console` would refuse at start."""
    res = _run(["check"], tmp_path, ATALAIA_HTTP_HOST="0.0.0.0")
    assert res.returncode == 1 and res.stderr.rstrip().endswith("failed: exposure")
    assert "refusing to listen on ATALAIA_HTTP_HOST=0.0.0.0" in res.stderr


def test_rules_and_incidents_check_default_to_the_configured_files(tmp_path: Path) -> None:
    rules = tmp_path / "mine"
    rules.mkdir()
    (rules / "a.yaml").write_text(
        "group: g\nrules:\n  - {id: a, select: {type: WaterObserved, attribute: height},"
        " severities: [{severity: high, above: 4}]}\n"
    )
    res = _run(["rules", "check"], tmp_path, ATALAIA_RULES_PATHS=f'["{rules}"]')
    assert res.returncode == 0 and res.stdout.strip() == "ok: 1 rule(s) in 1 file(s)", res.stderr
    res = _run(["incidents", "check"], tmp_path, ATALAIA_INCIDENTS_PATH=str(tmp_path / "none.yaml"))
    assert res.returncode == 1 and "none.yaml: no such file (ATALAIA_INCIDENTS_PATH names it)" in res.stderr


def test_kafka_and_mqtt_security_that_cannot_work_fail_the_check_and_stop_commands_in_one_line(
    tmp_path: Path,
) -> None:
    """`atalaia check` said "ok: every part" with SASL_SSL and no username, or an MQTT CA file that
    does not exist; `send`, `worker` and `console` then stopped with a traceback, and the MQTT one
    named a variable that does not exist (ATALAIA_MQTT_CAFILE)."""
    sasl = {"ATALAIA_KAFKA": "127.0.0.1:9", "ATALAIA_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    r = _run(["check"], tmp_path, **sasl)
    assert r.returncode == 1, r.stdout
    assert "SASL_SSL needs ATALAIA_KAFKA_SASL_USERNAME" in r.stderr and "Traceback" not in r.stderr, r.stderr
    mqtt = {
        "ATALAIA_MQTT_URL": "mqtts://127.0.0.1:8883/x",
        "ATALAIA_MQTT_CA_FILE": str(tmp_path / "nope.pem"),
    }
    r = _run(["check"], tmp_path, **mqtt)
    assert r.returncode == 1, r.stdout
    assert f"ATALAIA_MQTT_CA_FILE={tmp_path / 'nope.pem'}" in r.stderr, r.stderr
    (tmp_path / "e.json").write_text("{}")
    r = _run(["send", "e.json"], tmp_path, **sasl)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == "Error: SASL_SSL needs ATALAIA_KAFKA_SASL_USERNAME", r.stderr
