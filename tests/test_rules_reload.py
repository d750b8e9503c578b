"""The rule files' change check runs off the event loop: ``RuleFiles.changed()``, called by every
partition core's tick, never globs or stats a file on the caller's thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from atalaia.rules.errors import RuleFileError
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


DETECTING = (
    "group: hydro\nrules:\n  - id: flow\n    select: {type: WaterObserved, attribute: flow}\n"
    "    detector: NAME\n    severities: [{severity: high, above: 0.45}]\n"
)


def _detecting(name: str) -> str:
    return DETECTING.replace("NAME", name)


def _reloaded(files: RuleFiles) -> bool:
    deadline = time.monotonic() + 30
    while (done := files.pending) is None or not done.done():
        files.changed()
        assert time.monotonic() < deadline, "the edit was never looked at"
        time.sleep(0.01)
    return files.changed()


def test_a_rule_naming_a_detector_the_configuration_lacks_is_refused_and_the_running_rules_stay(
    tmp_path: Path, caplog
) -> None:
    """A typo in a rule's detector passed every check and stopped the rules stage on the first
    observation it scored (and `atalaia up` with it). Now it is a file:line:col error when the
    rules load or reload, and the running rules stay."""
    from atalaia.detectors.config import load_config

    known = load_config().known
    (tmp_path / "a.yaml").write_text(_detecting("novelty-evt-mean"))
    files = RuleFiles([tmp_path], load=load_rules, detectors=known)
    assert [r.rule.detector for r in files.ruleset.rules] == ["novelty-evt-mean"]
    time.sleep(0.02)  # a new mtime
    (tmp_path / "a.yaml").write_text(_detecting("novelty-evt-meen"))
    assert _reloaded(files) is False
    assert [r.rule.detector for r in files.ruleset.rules] == ["novelty-evt-mean"]
    assert "a.yaml:5:15: unknown detector 'novelty-evt-meen' (did you mean 'novelty-evt-mean'?" in caplog.text
    # a deprecated alias is a name the configuration knows
    (tmp_path / "a.yaml").write_text(_detecting("hst-default"))
    assert _reloaded(files) is True
    assert [r.rule.detector for r in files.ruleset.rules] == ["hst-default"]
    # and the first load refuses it too
    (tmp_path / "a.yaml").write_text(_detecting("nope"))
    with pytest.raises(RuleFileError, match=r"a.yaml:5:15: unknown detector 'nope'"):
        RuleFiles([tmp_path], load=load_rules, detectors=known)


def test_templates_are_compiled_in_the_reload_thread_and_shared_by_every_partition(
    tmp_path: Path, monkeypatch
) -> None:
    """A reload of thousands of rules stalled the event loop for seconds in every partition: each
    engine compiled each rule's templates again on the loop. The reload thread now compiles the
    new rules' templates once, and every partition's engine uses those objects."""
    from atalaia.rules import templates
    from atalaia.rules.engine import RuleEngine

    text = RULES.replace("above: 4.0}]}", "above: 4.0}], annotations: {summary: 'SUMMARY'}}")
    (tmp_path / "a.yaml").write_text(text.replace("SUMMARY", "{{ entity }} at {{ value }}"))
    files = RuleFiles([tmp_path], load=load_rules)
    engines = [RuleEngine(files.ruleset) for _ in range(3)]
    compiled_on: list[str] = []
    build = templates.Template.__init__

    def recording(self: templates.Template, source: str) -> None:
        compiled_on.append(threading.current_thread().name)
        build(self, source)

    monkeypatch.setattr(templates.Template, "__init__", recording)
    time.sleep(0.02)
    edited = "Estação {{ entity }}: {{ value }} m (edited)"
    (tmp_path / "a.yaml").write_text(text.replace("SUMMARY", edited))
    assert _reloaded(files) is True
    assert compiled_on and all(name.startswith("rules-reload") for name in compiled_on)
    for engine in engines:  # as each partition core's tick does
        engine.reload(files.ruleset)
    assert len(compiled_on) == 1  # once, in the reload thread; never on the loop
    summaries = {id(engine.by_id["lvl"].annotations["summary"]) for engine in engines}
    assert summaries == {id(templates.template(edited))}
    out, _ = engines[0].observe_batch(
        [
            {
                "time": "2024-03-01T00:00:00Z",
                "entity": "e1",
                "type": "WaterObserved",
                "attributes": {"height": 5.0},
            }
        ]
    )
    assert out[0].annotations["summary"] == "Estação e1: 5.0 m (edited)"


def test_a_live_edit_of_a_threshold_keeps_the_stages_open_alarm(tmp_path: Path) -> None:
    """The rules stage as it runs: an operator edits the file during a flood and lowers a limit;
    the open alarm is not resolved and re-fired (which pages again downstream)."""
    from types import SimpleNamespace

    import orjson

    from atalaia.detectors.config import load_config
    from atalaia.rules.stage import RulesCore
    from atalaia.streams.settings import CONFIG_DIR, Settings

    (tmp_path / "a.yaml").write_text(RULES)
    files = RuleFiles([tmp_path], load=load_rules)
    core = RulesCore(files, load_config(CONFIG_DIR / "detectors.yaml"), Settings())
    reading = {
        "time": "2026-01-28T10:00:00Z",
        "entity": "e1",
        "type": "WaterObserved",
        "attributes": {"height": 5.0},
    }
    rec = SimpleNamespace(
        value=orjson.dumps(reading), topic="t.observations", offset=0, headers=[], timestamp=0
    )
    outs = core.process([rec], now=1_769_594_400.0)
    assert [orjson.loads(o.value)["state"] for o in outs if o.topic == "alarms"] == ["firing"]
    time.sleep(0.02)
    (tmp_path / "a.yaml").write_text(RULES.replace("above: 4.0", "above: 3.0"))
    assert _reloaded(files) is True
    assert [o for o in core.tick(1_769_594_401.0) if o.topic == "alarms"] == []  # still firing, no line
    while files.pending is not None:  # the check the tick started: let it finish, find nothing
        if files.pending.done():
            files.changed()
        time.sleep(0.01)
    time.sleep(0.02)
    (tmp_path / "a.yaml").write_text(RULES.replace("above: 4.0", "above: 6.0"))
    assert _reloaded(files) is True
    ended = [orjson.loads(o.value) for o in core.tick(1_769_594_402.0) if o.topic == "alarms"]
    assert [(a["state"], a["annotations"]["reason"]) for a in ended] == [("resolved", "rule changed")]


def test_an_editors_hidden_files_beside_the_rules_do_not_stop_a_reload(tmp_path: Path) -> None:
    """While an Emacs lock (.#a.yaml, dangling) or a macOS ._a.yaml existed, every reload was
    refused: they matched *.yaml and did not load."""
    (tmp_path / "a.yaml").write_text(RULES)
    files = RuleFiles([tmp_path], load=load_rules)
    (tmp_path / ".#a.yaml").symlink_to("ana@host.4242:1700000000")
    (tmp_path / "._a.yaml").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    time.sleep(0.02)  # a new mtime
    (tmp_path / "a.yaml").write_text(RULES.replace("above: 4.0", "above: 4.5"))
    assert _reloaded(files) is True
    assert [r.rule.severities[0].above for r in files.ruleset.rules] == [4.5]


def test_a_reload_says_which_rules_it_added_removed_and_changed(tmp_path: Path, caplog) -> None:
    """A reload logged only "rules reloaded: 3 rule(s)": an operator whose rule file was deleted
    saw its alarms resolve ("rule removed") with no rule named. It names them, by id and file."""
    import logging

    (tmp_path / "a.yaml").write_text(RULES)
    (tmp_path / "b.yaml").write_text(RULES.replace("lvl", "gone"))
    files = RuleFiles([tmp_path], load=load_rules)
    while files.pending is None or not files.pending.done():  # the first look: the files as they are
        files.changed()
        time.sleep(0.01)
    files.changed()
    (tmp_path / "b.yaml").unlink()
    (tmp_path / "a.yaml").write_text(
        RULES.replace("4.0", "4.5") + RULES.split("rules:\n")[1].replace("lvl", "new")
    )
    with caplog.at_level(logging.INFO, logger="atalaia.rules.stage"):
        assert _reloaded(files)
    line = next(r.getMessage() for r in caplog.records if "rules reloaded" in r.getMessage())
    assert line == (
        "rules reloaded: 2 rule(s); added: new (a.yaml); removed: gone (b.yaml); changed: lvl (a.yaml)"
    ), line


def test_the_same_refusal_after_a_good_reload_is_written_again_under_the_log_rate_limit(
    tmp_path: Path,
) -> None:
    """The workers rate-limit their log (one line per kind per minute, ``streams.logfilter``). An
    engineer whose edit was refused, who fixed it ("rules reloaded") and broke it again the same
    way within the minute saw nothing more: the log's last word was "rules reloaded" while the
    latest edit was refused. Each refused edit is written."""
    import logging

    from atalaia.streams.logfilter import RateLimit

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep(level=logging.INFO)
    handler.addFilter(RateLimit(interval=60))
    logger = logging.getLogger("atalaia.rules.stage")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        (tmp_path / "a.yaml").write_text(RULES)
        files = RuleFiles([tmp_path], load=load_rules)
        for content, loads in ((RULES + "  - oops\n", False), (RULES, True), (RULES + "  - oops\n", False)):
            time.sleep(0.02)  # a new mtime
            (tmp_path / "a.yaml").write_text(content)
            assert _reloaded(files) is loads
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    said = [m.split(":")[0] for m in seen]
    assert said == [
        "rule files changed but do not load; keeping the running rules",
        "rules reloaded",
        "rule files changed but do not load; keeping the running rules",
    ], seen
