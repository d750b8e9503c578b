"""The escalation, incidents and warnings files are read when a process starts. An edit used to
change nothing and say nothing; the edited file took effect at whatever restart came next, and one
edited into a file that does not load was found only then (the ops process then failed to
restart). An edit is said once, with whether the file loads and when it takes effect."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from atalaia.streams.configwatch import ConfigWatch
from atalaia.streams.preflight import part_problems
from atalaia.streams.settings import CONFIG_DIR, Settings


def test_an_edit_is_said_once_with_whether_it_loads(tmp_path: Path, caplog) -> None:
    esc = tmp_path / "escalation.yaml"
    esc.write_text((CONFIG_DIR / "escalation.yaml").read_text())
    settings = Settings(escalation_path=esc, data_dir=tmp_path / "data")
    watch = ConfigWatch([("escalation", esc)], lambda name: part_problems(settings, name))
    caplog.set_level(logging.INFO, logger="atalaia.config")
    assert watch.look() == []  # as read at start: nothing to say

    with esc.open("a") as f:
        f.write("policies:\n  p: [unclosed\n")
    os.utime(esc, ns=(1, 1))  # (another stamp, whatever the clock's resolution)
    assert watch.look() == ["escalation"] and watch.look() == []  # said once
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1 and "takes effect at the next restart" in said[0], said
    assert "does not load" in said[0] and f"{esc}:" in said[0], said

    esc.write_text((CONFIG_DIR / "escalation.yaml").read_text() + "\n# a comment\n")
    assert watch.look() == ["escalation"]
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 2 and "it loads" in said[1], said


def test_a_file_that_loads_has_no_problems_and_one_that_does_not_names_its_line(tmp_path: Path) -> None:
    esc = tmp_path / "escalation.yaml"
    esc.write_text("targets: [\n")
    bad = part_problems(Settings(escalation_path=esc, data_dir=tmp_path), "escalation")
    assert bad and bad[0].startswith(f"{esc}:"), bad
    assert part_problems(Settings(data_dir=tmp_path), "escalation") == []
