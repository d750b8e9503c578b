"""Zero rules switch alarming off, and that is said: a valid but empty rules file (`rules: []`),
hot-reloaded, had resolved every open alarm ("rule removed") with one INFO line
(`rules reloaded: 0 rule(s)`) while /health stayed ok. Now a WARNING says alarming is off and
which files were read, and /health is degraded (not failed) naming "no rules loaded" until rules
are back."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from atalaia.rules.loader import load_rules
from atalaia.rules.stage import RuleFiles
from atalaia.streams.guard import HEALTH
from atalaia.streams.metrics import health_report

RULES = (
    "group: hydro\nrules:\n  - {id: lvl, select: {type: WaterObserved, attribute: height},"
    " severities: [{severity: high, above: 4.0}]}\n"
)
EMPTY = "group: hydro\nrules: []\n"


def _reloaded(files: RuleFiles) -> bool:
    deadline = time.monotonic() + 30
    while (done := files.pending) is None or not done.done():
        files.changed()
        assert time.monotonic() < deadline, "the edit was never looked at"
        time.sleep(0.01)
    return files.changed()


def test_a_reload_to_zero_rules_warns_and_health_says_no_rules_loaded(tmp_path: Path, caplog) -> None:
    rules = tmp_path / "hydro.yaml"
    rules.write_text(RULES)
    files = RuleFiles([tmp_path], load=load_rules)
    try:
        assert health_report({})[0]["status"] == "ok"
        time.sleep(0.02)  # a new mtime
        rules.write_text(EMPTY)
        with caplog.at_level(logging.INFO, logger="atalaia.rules.stage"):
            assert _reloaded(files) is True
        assert files.ruleset.rules == []
        warned = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warned) == 1, caplog.text
        assert "ALARMING IS OFF" in warned[0].getMessage() and str(rules) in warned[0].getMessage()
        assert "there were 1" in warned[0].getMessage()

        body, status = health_report({})
        assert body["status"] == "degraded" and status == 200  # it serves: degraded, not failed
        assert any(p.startswith("no rules loaded") and str(rules) in p for p in body["problems"])

        time.sleep(0.02)
        rules.write_text(RULES)  # rules back: alarming on, /health ok again
        assert _reloaded(files) is True
        body, status = health_report({})
        assert body["status"] == "ok" and status == 200 and "problems" not in body
    finally:
        HEALTH.problems.pop("no-rules", None)


def test_starting_with_zero_rules_warns_and_health_says_no_rules_loaded(tmp_path: Path, caplog) -> None:
    (tmp_path / "hydro.yaml").write_text(EMPTY)
    try:
        with caplog.at_level(logging.WARNING, logger="atalaia.rules.stage"):
            RuleFiles([tmp_path], load=load_rules)
        assert "no rules loaded: ALARMING IS OFF" in caplog.text and "hydro.yaml" in caplog.text
        body, _ = health_report({})
        assert body["status"] == "degraded" and any(p.startswith("no rules loaded") for p in body["problems"])
        (tmp_path / "hydro.yaml").write_text(RULES)
        RuleFiles([tmp_path], load=load_rules)  # a rule set with rules clears it
        assert health_report({})[0]["status"] == "ok"
    finally:
        HEALTH.problems.pop("no-rules", None)
