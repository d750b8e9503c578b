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


def test_strict_fails_on_a_variable_nothing_reads(tmp_path: Path) -> None:
    res = _run(["check"], tmp_path, ATALAIA_PARTITONS="4")
    assert res.returncode == 0 and "did you mean ATALAIA_PARTITIONS?" in res.stderr
    res = _run(["check", "--strict"], tmp_path, ATALAIA_PARTITONS="4")
    assert res.returncode == 1 and res.stderr.rstrip().endswith("failed: environment")


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
