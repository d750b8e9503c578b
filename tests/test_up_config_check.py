"""`atalaia up` with a configuration file that does not load (escalation, incidents, warnings,
console users) stops before it starts anything: the file:line:col error, exit status 1, no
"Atalaia is up." banner, no embedded broker, no worker process (it had printed the error, then
the banner, started the broker and both workers, and exited 1 two seconds later)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ATALAIA

BROKEN = "timezone: Europe/Lisbon\nsomething:\n  - [unclosed\n  other: 1\n"


@pytest.mark.parametrize(
    "setting",
    ["ATALAIA_ESCALATION_PATH", "ATALAIA_INCIDENTS_PATH", "ATALAIA_WARNINGS_PATH", "ATALAIA_CONSOLE_USERS"],
)
def test_up_with_a_broken_file_stops_before_starting_anything(tmp_path: Path, setting: str) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    env = {
        **os.environ,
        "ATALAIA_DATA_DIR": str(tmp_path / "data"),
        "ATALAIA_HTTP_PORT": "8293",
        setting: str(broken),
    }
    env.pop("ATALAIA_KAFKA", None)
    proc = subprocess.Popen(
        [ATALAIA, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    both = out + err
    assert proc.returncode == 1, both[-4000:]
    assert re.search(rf"{re.escape(str(broken))}:\d+:\d+: ", err), err[-4000:]
    assert "Atalaia is up" not in both
    assert "started process" not in both and "embedded broker" not in both, both[-4000:]
    assert "the configuration does not load" in err.splitlines()[-1], err[-2000:]
    assert not (tmp_path / "data" / "broker").exists()
