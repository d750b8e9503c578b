"""The rule files' change check runs off the event loop: ``RuleFiles.changed()``, called by every
partition core's tick, never globs or stats a file on the caller's thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from atalaia.rules.loader import load_rules
from atalaia.rules.stage import RuleFiles

RULES = (
    "group: hydro\nrules:\n  - {id: lvl, select: {type: WaterObserved, attribute: height},"
    " severities: [{severity: high, above: 4.0}]}\n"
)


def test_changed_looks_at_the_files_in_the_reload_thread_only(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "a.yaml").write_text(RULES)
    files = RuleFiles([tmp_path], load=load_rules)  # in-process load: quick
    stamped: list[str] = []
    stamp = RuleFiles._stamp

    def recording(self: RuleFiles) -> tuple:
        stamped.append(threading.current_thread().name)
        return stamp(self)

    monkeypatch.setattr(RuleFiles, "_stamp", recording)
    caller = threading.current_thread().name
    for _ in range(20):  # unchanged files: checks run and find nothing
        assert files.changed() is False
        time.sleep(0.01)
    (tmp_path / "b.yaml").write_text(RULES.replace("lvl", "lvl2"))
    deadline = time.monotonic() + 30
    while not files.changed():
        assert time.monotonic() < deadline, "the edit was never picked up"
        time.sleep(0.01)
    assert sorted(r.rule.id for r in files.ruleset.rules) == ["lvl", "lvl2"]
    assert stamped and caller not in stamped
    assert all(name.startswith("rules-reload") for name in stamped)
