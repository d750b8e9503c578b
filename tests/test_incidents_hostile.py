"""Hostile incidents.yaml and silences: numbers that would stop or silently disable the incidents
stage are refused at load with file:line:col, and label regexes are RE2 (linear time): a
catastrophic-backtracking pattern cannot stall the stage, and a pattern RE2 cannot run is refused
where it is written (the file, or a 422 from the silence API, which validates SilenceCommand)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from atalaia.incidents.config import ConfigError, IncidentConfig, load_config
from atalaia.incidents.events import IncidentEvent
from atalaia.incidents.manager import IncidentManager
from atalaia.incidents.silences import Silence, SilenceCommand
from atalaia.incidents.testing import Driver, at_s, transition
from atalaia.rules.matchers import Matcher

HUGE = "100000000000000000000000"


def _load(tmp_path: Path, text: str) -> IncidentConfig:
    p = tmp_path / "incidents.yaml"
    p.write_text(text, encoding="utf-8")
    return load_config(p)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (f"alarms_in_event: {HUGE}\n", r"incidents.yaml:1:1: alarms_in_event: .*less than or equal to"),
        (f"\naudit_in_state: {HUGE}\n", r"incidents.yaml:2:1: audit_in_state: .*less than or equal to"),
        (f"memory: {HUGE}\n", r"incidents.yaml:1:1: memory: .*less than or equal to"),
        (f"chattering:\n  transitions: {HUGE}\n", r"incidents.yaml:2:3: chattering.transitions: "),
        (f"flood:\n  threshold: {HUGE}\n", r"incidents.yaml:2:3: flood.threshold: "),
        ("correlation:\n  max_distance_m: .inf\n", r"incidents.yaml:2:\d+: correlation.max_distance_m: "),
        ("correlation: {window: 0}\n", r"incidents.yaml:1:\d+: correlation.window: must be longer than 0"),
        ("flood: {window: 0s}\n", r"incidents.yaml:1:\d+: flood.window: must be longer than 0"),
        ("chattering: {window: 0}\n", r"incidents.yaml:1:\d+: chattering.window: must be longer than 0"),
        ("chattering: {shelve_for: 0m}\n", r"incidents.yaml:1:\d+: chattering.shelve_for: must be longer"),
        ("shelving: {max: 0}\n", r"incidents.yaml:1:\d+: shelving.max: must be longer than 0"),
        ("stale_after: 0\n", r"incidents.yaml:1:\d+: stale_after: must be longer than 0"),
        ("correlation: {window: -5}\n", r"incidents.yaml:1:\d+: correlation.window: .*negative"),
        ('correlation: {window: "٣٠m"}\n', r"incidents.yaml:1:\d+: correlation.window: bad duration"),
    ],
)
def test_numbers_that_would_disable_the_stage_are_refused_at_load(
    tmp_path: Path, text: str, where: str
) -> None:
    with pytest.raises(ConfigError, match=where):
        _load(tmp_path, text)


def test_closing_after_zero_is_still_allowed_and_the_largest_counts_work(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path, "closing: {after: 0}\nalarms_in_event: 10000\naudit_in_state: 10000\nmemory: 1000000\n"
    )
    mgr = IncidentManager(cfg)
    st = mgr.initial_state()
    errors: list = []
    items = [transition("river-level-high", f"porto-{i}", "firing", i, parish="Ribeira") for i in range(3)]
    st, outs = mgr.step_batch(st, items, at_s(10), errors)
    assert not errors
    assert [o.change for o in outs if isinstance(o, IncidentEvent)] == [
        "opened",
        "alarm-added",
        "alarm-added",
    ]


def test_a_catastrophic_regex_matches_a_long_value_quickly() -> None:
    m = Matcher.parse('rule=~"(a+)+b"')
    long = "a" * 100_000 + "!"
    t0 = time.monotonic()
    assert not m.matches({"rule": long})
    assert Matcher.parse('rule!~"(a|aa)+"').matches({"rule": long})
    assert time.monotonic() - t0 < 1.0


def test_a_catastrophic_regex_in_incidents_yaml_cannot_stall_the_stage(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path,
        "inhibit:\n"
        "  - source_matchers: ['rule=~\"(a|aa)+$\"']\n"
        "    target_matchers: ['rule=~\"(a+)+b\"']\n"
        "    equal: [entity]\n"
        "positions:\n  - {name: p, matchers: ['group=~\"(x+x+)+y\"']}\n",
    )
    d = Driver(cfg)
    t0 = time.monotonic()
    ev = d.fire("a" * 5000 + "!", "urn:x", at=0, group="x" * 5000 + "z", parish="Ribeira")
    assert ev.state == "unacknowledged"
    assert time.monotonic() - t0 < 2.0


def test_matchers_keep_their_meaning() -> None:
    m = Matcher.parse('rule=~"station-(power|comms)-failure"')
    assert m.matches({"rule": "station-power-failure"})
    assert not m.matches({"rule": "station-power-failure-x"}), "fully anchored"
    assert not m.matches({"rule": "x-station-power-failure"}), "fully anchored"
    assert Matcher.parse('team!~"hydro|meteo"').matches({}), "an absent label is the empty string"
    assert Matcher.parse('x=~"a|b"').matches({"x": "b"}) and not Matcher.parse('x=~"a|b"').matches(
        {"x": "ab"}
    )
    assert Matcher.parse('p=~"Ribeira|Sé"').matches({"p": "Sé"})
    assert not Matcher.parse('x=~"a.c"').matches({"x": "a\nc"}), "as before: . is not a newline"
    assert Matcher.parse('x=~"a."').matches({"x": "a\udc80"}) is not None  # never raises
    assert Matcher("x", "=~", "a|b").matches({"x": "a"}), "built directly: compiled"
    assert Matcher.any_of("d", ["1 3", "a-b"]).matches({"d": "a-b"})
    assert str(Matcher.parse('rule=~"river-.*"')) == 'rule=~"river-.*"'


def test_a_backslash_escape_in_a_quoted_value_reads_as_in_alertmanager() -> None:
    """Alertmanager unescapes only \\", \\\\ and \\n in a quoted matcher value and keeps any other
    backslash, so the regex `station-\\d+` written in a silence or incidents.yaml is that regex; the
    backslash was dropped, so it silently became `station-d+` and matched no station."""
    digits = Matcher.parse(r'rule=~"station-\d+"')
    assert digits.value == r"station-\d+"
    assert digits.matches({"rule": "station-12"}) and not digits.matches({"rule": "station-dd"})
    dot = Matcher.parse(r'host=~"gw\.porto"')
    assert dot.matches({"host": "gw.porto"}) and not dot.matches({"host": "gwXporto"})
    assert Matcher.parse(r'x="a\"b"').value == 'a"b'
    assert Matcher.parse(r'x="a\\b"').value == "a\\b"
    assert Matcher.parse(r'x="a\nb"').value == "a\nb"
    for text in (r'rule=~"station-\d+"', r'x="a\\b"', r'x="a\"b"'):
        m = Matcher.parse(text)
        assert Matcher.parse(str(m)) == m, "written back as it reads"


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?=station)station-.*",  # lookahead
        r"(?<!x)y",  # lookbehind
        r"(a)\\1",  # a backreference (the matcher text escapes the backslash)
        r"river\\Z",  # Python's end anchor
        r"a{2000}",  # over RE2's repetition limit
    ],
)
def test_a_regex_re2_cannot_run_is_refused_at_file_line_col(tmp_path: Path, pattern: str) -> None:
    with pytest.raises(ConfigError, match=r"incidents.yaml:3:5: .*bad regular expression"):
        _load(
            tmp_path,
            f"inhibit:\n  - source_matchers: ['rule=\"x\"']\n    target_matchers: ['rule=~\"{pattern}\"']\n",
        )


def test_the_silence_command_refuses_a_regex_re2_cannot_run() -> None:
    base = {"action": "silence", "actor": "rui", "role": "supervisor", "comment": "c", "duration": "1h"}
    with pytest.raises(ValidationError) as e:
        SilenceCommand.model_validate({**base, "matchers": ['rule=~"(?=river)river-.*"']})
    err = e.value.errors()[0]
    assert err["loc"] == ("matchers",) and "bad regular expression" in err["msg"]
    ok = SilenceCommand.model_validate({**base, "matchers": ['rule=~"(a+)+b"']})
    assert ok.matchers[0].matches({"rule": "aab"})


def test_a_restored_silence_re2_cannot_read_silences_nothing_and_stops_nothing() -> None:
    """A snapshot from before RE2 may hold a silence with a lookahead: the stage goes on, the silence
    matches no alarm (they stay annunciated)."""
    d = Driver()
    d.state.silences["s-old"] = Silence(
        "s-old", ['rule=~"(?=river)river-.*"'], "rui", "old", 0, 10**15, 0, command="c0"
    )
    ev = d.fire("river-level-high", "porto-01", at=10, parish="Ribeira")
    assert ev.state == "unacknowledged" and ev.alarms[0].suppressed is None
    errors: list = []
    d.state, outs = d.manager.step_batch(
        d.state,
        [transition("river-level-high", "porto-02", "firing", 20, parish="Ribeira")],
        at_s(20),
        errors,
    )
    assert not errors and outs


def test_a_shelve_beyond_the_maximum_is_refused_in_words_an_operator_reads() -> None:
    """The console showed "shelve for at most 28800s"; it says the limit as the file writes it."""
    d = Driver()
    d.fire("river-level-high", "g1", at=0)
    reply = d.command("shelve", at=1, reason="crew on site", duration=30 * 86400)
    assert not reply.accepted and reply.reason == "shelve for at most 8h (shelving.max)", reply
