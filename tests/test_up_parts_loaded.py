"""``topology.NOT_LOADED`` says which configuration parts each process of ``atalaia up`` does not
load (a part of them that does not load never puts that process on the last good configuration,
``streams.processes.Supervisor``). Checked against the worker itself: with each such file
broken, the process's app is still made (no broker needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from atalaia.streams.topology import NOT_LOADED

SETTING = {
    "incidents": "ATALAIA_INCIDENTS_PATH",
    "escalation": "ATALAIA_ESCALATION_PATH",
    "warnings": "ATALAIA_WARNINGS_PATH",
    "console users": "ATALAIA_CONSOLE_USERS",
    "rules": "ATALAIA_RULES_PATHS",
    "detectors": "ATALAIA_DETECTORS_PATH",
    "ingest tokens": "ATALAIA_INGEST_TOKENS",
}
ROLE = {"alarms": "ingest", "ops": "console"}  # as atalaia up starts them (streams.commands)
PROBE = """
import sys
from atalaia.streams.app import create_app
from atalaia.streams.settings import get_settings
from atalaia.streams.topology import process_groups

create_app(get_settings(), "127.0.0.1:1", stages=process_groups()[sys.argv[1]], http=sys.argv[2])
"""


def made(tmp_path: Path, group: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-P", "-c", PROBE, group, ROLE[group]],
        env={**os.environ, "ATALAIA_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("group", sorted(NOT_LOADED))
def test_a_process_is_made_with_the_parts_it_does_not_load_broken(tmp_path: Path, group: str) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("bad: [\n")
    env = {SETTING[p]: f'["{broken}"]' if p == "rules" else str(broken) for p in NOT_LOADED[group]}
    done = made(tmp_path, group, **env)
    assert done.returncode == 0, done.stderr[-3000:]
    # and the parts it does load are loaded (the probe tells a broken file)
    loaded = next(p for p in SETTING if p not in NOT_LOADED[group] and p != "rules")
    assert made(tmp_path, group, **{SETTING[loaded]: str(broken)}).returncode != 0
