"""RuleEngine behaviour beyond the replay cases: lateness, bad input, templates, detectors, clocks, reload."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from atalaia.rules.engine import RuleEngine, ScorerMissing
from atalaia.rules.loader import load_texts

E1 = "urn:ngsi-ld:WaterObserved:porto-01"


def rules(text: str):
    return load_texts([("test.yaml", "rules:\n" + text)])


def obs(
    minute: float, value: float, entity: str = E1, attr: str = "height", typ: str = "WaterObserved", **extra
):
    seconds = int(minute * 60)
    return {
        "time": f"2024-03-01T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}Z",
        "entity": entity,
        "type": typ,
        "attributes": {attr: value},
        **extra,
    }


def lines(transitions):
    return [(t.at[11:19], t.rule, t.key, t.state, t.severity) for t in transitions]


HIGH = """
  - id: high
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: high, above: 4.0}]
"""
AVG = """
  - id: avg
    select: {type: WaterObserved, attribute: height}
    aggregate: {function: avg, window: 10m}
    severities: [{severity: high, above: 4.0}]
"""


def test_too_late_is_rejected_with_reason_and_counted() -> None:
    engine = RuleEngine(rules(HIGH), allowed_lateness=300)
    out, rejected = engine.observe_batch([obs(10, 3.0), obs(4, 9.0), obs(5, 9.0)])
    assert [r.reason for r in rejected] == [
        "too late: time 2024-03-01T00:04:00Z is 6m behind the latest event time 2024-03-01T00:10:00Z "
        "(allowed lateness 5m)"
    ]
    assert rejected[0].observation["time"] == "2024-03-01T00:04:00Z"
    assert engine.stats["rejected_late"] == 1
    # 00:05 is within lateness but older than the key's last evaluation: not evaluated, no backwards transition
    assert out == [] and engine.stats["late_not_evaluated"] == 1


def test_late_within_lateness_joins_later_windows() -> None:
    engine = RuleEngine(rules(AVG), allowed_lateness=300)
    engine.observe_batch([obs(0, 3.0), obs(2, 3.0)])
    out, rejected = engine.observe_batch([obs(1, 9.0)])  # late: merged, not evaluated
    assert out == [] and rejected == []
    out, _ = engine.observe_batch([obs(3, 3.0)])  # avg(3, 9, 3, 3) = 4.5
    assert lines(out) == [("00:03:00", "avg", E1, "firing", "high")]
    assert out[0].value == pytest.approx(4.5)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({**obs(0, 1), "time": "yesterday"}, "time 'yesterday' is not RFC 3339 with a UTC offset"),
        (
            {**obs(0, 1), "time": "2024-03-01T00:00:00"},
            "time '2024-03-01T00:00:00' is not RFC 3339 with a UTC offset",
        ),
        ({**obs(0, 1), "time": 123}, "time 123 is not RFC 3339 with a UTC offset"),
        ({**obs(0, 1), "attributes": {"height": "4.5"}}, "attribute 'height' is not a number: '4.5'"),
        ({**obs(0, 1), "attributes": {"height": True}}, "attribute 'height' is not a number: True"),
        (
            {**obs(0, 1), "attributes": {"height": float("nan")}},
            "attribute 'height' is not a finite number: nan",
        ),
    ],
)
def test_bad_observations_are_rejected(bad: dict, reason: str) -> None:
    """What an observation means is the engine's to judge (its shape was checked where it came in)."""
    out, rejected = RuleEngine(rules(HIGH)).observe_batch([bad])
    assert out == [] and [r.reason for r in rejected] == [reason]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (
            {"entity": E1, "type": "WaterObserved", "attributes": {"height": 1}},
            "not an observation: missing 'time'",
        ),
        ({**obs(0, 1), "attributes": [1]}, "'attributes' must be a mapping"),
        ({**obs(0, 1), "type": ["WaterObserved"]}, "'type' and 'entity' must be non-empty text"),
        ({**obs(0, 1), "entity": 7}, "'type' and 'entity' must be non-empty text"),
        ({**obs(0, 1), "entity": ""}, "'type' and 'entity' must be non-empty text"),
        ({**obs(0, 1), "tenant": "a|b"}, "'tenant' must be text without '|'"),
        ({**obs(0, 1), "tenant": 7}, "'tenant' must be text without '|'"),
        ({**obs(0, 1), "labels": ["parish"]}, "'labels' must be a mapping of text"),
        ("not a dict", "not a JSON object"),
        ({**obs(0, 1), "time": [1]}, "time [1] is not RFC 3339 text"),
        ({**obs(0, 1), "time": None}, "time None is not RFC 3339 text"),
    ],
)
def test_replay_refuses_what_is_not_an_observation(bad: dict, reason: str) -> None:
    """A replay file's lines are checked once, where they are read: each is refused with its line."""
    from atalaia.rules.replay import replay

    result = replay(rules(HIGH), [(1, bad), (2, obs(1, 5.0))])
    assert result.rejected == [(1, reason)]
    assert lines(result.transitions) == [("00:01:00", "high", E1, "firing", "high")]


def test_a_refused_line_does_not_move_event_time() -> None:
    """A line refused for its shape is not an observation: it moves neither the watermark nor
    the lateness horizon (an in-time line after it is evaluated)."""
    from atalaia.rules.replay import replay

    result = replay(
        rules(HIGH), [(1, {**obs(60, 1), "attributes": [1]}), (2, obs(1, 5.0))], allowed_lateness=300
    )
    assert result.rejected == [(1, "'attributes' must be a mapping")]
    assert lines(result.transitions) == [("00:01:00", "high", E1, "firing", "high")]


def test_index_skips_rules_that_cannot_match() -> None:
    many = "".join(
        f"""
  - id: r{i}
    select: {{type: T{i % 7}, attribute: a{i}}}
    severities: [{{severity: high, above: 1}}]
"""
        for i in range(200)
    )
    engine = RuleEngine(rules(HIGH + many))
    engine.observe_batch([obs(0, 5.0), obs(1, 5.0, attr="flow")])
    assert engine.stats["evaluations"] == 1


def test_labels_and_annotations_are_rendered_in_a_sandbox() -> None:
    engine = RuleEngine(
        rules("""
  - id: high
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: high, above: 4.0}]
    labels: {team: hydro, where: "{{ labels.parish }}"}
    annotations:
      summary: "{{ entity }} {{ type }} at {{ '%.1f' | format(value) }} m ({{ severity }}, {{ rule }}, {{ key }})"
      raw: "{{ attributes.height }}"
      escape: "{{ ''.__class__.__mro__[1].__subclasses__() }}"
""")
    )
    out, _ = engine.observe_batch([obs(0, 4.25, labels={"parish": "Ribeira"}, location=[-8.61, 41.14])])
    (tr,) = out
    assert tr.labels == {"parish": "Ribeira", "team": "hydro", "where": "Ribeira"}
    assert tr.annotations["summary"] == f"{E1} WaterObserved at 4.2 m (high, high, {E1})"
    assert tr.annotations["raw"] == "4.25"
    assert tr.annotations["escape"].startswith("<template error: ")
    assert tr.location == [-8.61, 41.14] and tr.group == "test" and tr.since == tr.at


def test_detector_rule_uses_the_injected_scorer() -> None:
    text = """
  - id: flow-anomaly
    select: {type: WaterObserved, attribute: flow}
    detector: hst-default
    severities: [{severity: medium, above: 0.9}]
"""
    with pytest.raises(ScorerMissing, match="rule 'flow-anomaly' uses detector 'hst-default'"):
        RuleEngine(rules(text))
    calls = []

    def scorer(detector: str, key: str, attribute: str, time: datetime, value: float) -> float | None:
        calls.append((detector, key, attribute, time, value))
        return None if len(calls) < 3 else value / 100

    engine = RuleEngine(rules(text), scorer=scorer)
    out, _ = engine.observe_batch([obs(i, v, attr="flow") for i, v in enumerate([99.0, 99.0, 95.0, 50.0])])
    assert calls[0] == ("hst-default", E1, "flow", datetime(2024, 3, 1, tzinfo=UTC), 99.0)
    assert lines(out) == [
        ("00:02:00", "flow-anomaly", E1, "firing", "medium"),
        ("00:03:00", "flow-anomaly", E1, "resolved", "medium"),
    ]


def test_absence_on_the_wall_clock_fires_once() -> None:
    engine = RuleEngine(
        rules("""
  - id: silent
    select: {type: WaterObserved}
    absent_for: 15m
    severity: medium
""")
    )
    engine.observe_batch([obs(0, 1.0)])
    assert engine.advance("2024-03-01T00:14:59Z") == []
    fired = engine.advance(datetime(2024, 3, 1, 0, 20, tzinfo=UTC))
    assert lines(fired) == [("00:20:00", "silent", E1, "firing", "medium")]
    assert engine.advance("2024-03-01T00:30:00Z") == []
    out, _ = engine.observe_batch([obs(31, 1.0)])
    assert lines(out) == [("00:31:00", "silent", E1, "resolved", "medium")]


def test_firing_to_a_lower_pending_severity_resolves_then_pends() -> None:
    engine = RuleEngine(
        rules("""
  - id: mixed
    select: {type: WaterObserved, attribute: height}
    severities:
      - {severity: critical, above: 5, for: 5m}
      - {severity: high, below: 1}
""")
    )
    out, _ = engine.observe_batch([obs(0, 0.5), obs(1, 6.0)])
    assert lines(out) == [
        ("00:00:00", "mixed", E1, "firing", "high"),
        ("00:01:00", "mixed", E1, "resolved", "high"),
        ("00:01:00", "mixed", E1, "pending", "critical"),
    ]


def test_reload_keeps_unchanged_rules_and_ends_changed_ones() -> None:
    engine = RuleEngine(rules(HIGH + AVG))
    out, _ = engine.observe_batch([obs(0, 5.0)])
    assert len(out) == 2
    relabelled = HIGH.replace("above: 4.0}]", "above: 4.0}]\n    labels: {team: x}")
    ended = engine.reload(rules(relabelled + AVG.replace("10m", "20m")))
    assert [(t.rule, t.state, t.annotations["reason"]) for t in ended] == [
        ("avg", "resolved", "rule changed")
    ]
    out, _ = engine.observe_batch([obs(1, 5.0)])
    # high kept its firing state (no new line); avg starts again from scratch
    assert lines(out) == [("00:01:00", "avg", E1, "firing", "high")]
    ended = engine.reload(rules(AVG.replace("10m", "20m")))
    assert [(t.rule, t.state, t.annotations["reason"]) for t in ended] == [
        ("high", "resolved", "rule removed")
    ]


LEVELS = """
  - id: levels
    select: {type: WaterObserved, attribute: height}
    severities:
      - {severity: critical, above: 6.0}
      - {severity: high, above: 4.0, for: 5m}
"""


def test_moving_a_threshold_keeps_the_open_alarm_and_reevaluates_it() -> None:
    """An operator lowers a limit during a flood: the alarm stays open, no resolved/firing pair
    (which downstream would page as a new alarm); raised past the value, the alarm ends at once."""
    engine = RuleEngine(rules(LEVELS))
    out, _ = engine.observe_batch([obs(0, 5.0), obs(5, 5.0)])
    assert lines(out) == [
        ("00:00:00", "levels", E1, "pending", "high"),
        ("00:05:00", "levels", E1, "firing", "high"),
    ]
    # limits move, the value (5.0) still breaches 'high': nothing to say
    assert engine.reload(rules(LEVELS.replace("above: 4.0", "above: 3.5"))) == []
    assert [(a["state"], a["severity"]) for a in engine.active_alarms()] == [("firing", "high")]
    # critical lowered below the value: the open alarm moves up at once, at the watermark
    moved = engine.reload(
        rules(LEVELS.replace("above: 6.0", "above: 4.5").replace("above: 4.0", "above: 3.5"))
    )
    assert [(*line, t.annotations["reason"]) for line, t in zip(lines(moved), moved, strict=True)] == [
        ("00:05:00", "levels", E1, "firing", "critical", "rule changed")
    ]
    assert moved[0].since == "2024-03-01T00:00:00Z"  # the same alarm, open since it first held
    # both raised above the value: it ends now, with the reason, as 'resolved'
    ended = engine.reload(
        rules(LEVELS.replace("above: 6.0", "above: 9.0").replace("above: 4.0", "above: 8.0"))
    )
    assert [(t.state, t.severity, t.annotations["reason"]) for t in ended] == [
        ("resolved", "critical", "rule changed")
    ]
    assert engine.active_alarms() == []
    # and the new limits hold for the next observations
    out, _ = engine.observe_batch([obs(6, 8.5)])
    assert lines(out) == [("00:06:00", "levels", E1, "pending", "high")]


def test_a_retune_does_not_make_a_keys_next_reading_late() -> None:
    """Re-evaluation happens at the key's own last time: a reading of that key older than the
    reload but within the allowed lateness is evaluated, not dropped as late for the key."""
    engine = RuleEngine(rules(HIGH), allowed_lateness=300)
    engine.observe_batch([obs(0, 5.0), obs(4, 1.0, entity="urn:other")])  # the watermark: 00:04
    assert engine.reload(rules(HIGH.replace("above: 4.0", "above: 4.5"))) == []  # 5.0 still breaches
    out, _ = engine.observe_batch([obs(2, 4.2)])  # E1's reading of 00:02, 2 min late: allowed
    assert lines(out) == [("00:02:00", "high", E1, "resolved", "high")]
    assert engine.stats["late_not_evaluated"] == 0


def test_a_shorter_for_fires_a_pending_alarm_at_the_reload() -> None:
    engine = RuleEngine(rules(LEVELS))
    out, _ = engine.observe_batch([obs(0, 5.0), obs(2, 5.0)])
    assert [t.state for t in out] == ["pending"]
    fired = engine.reload(rules(LEVELS.replace("for: 5m", "for: 1m")))
    assert [(t.state, t.severity, t.at[11:19]) for t in fired] == [("firing", "high", "00:02:00")]


def test_a_change_beyond_the_limits_still_ends_the_alarm() -> None:
    """Another attribute, severity names, a window or a direction: the state does not mean the same."""
    changes = [
        LEVELS.replace("severity: high", "severity: medium"),
        LEVELS.replace("above: 4.0", "below: 4.0"),
        LEVELS.replace("attribute: height", "attribute: flow"),
        LEVELS.replace("severities:", "aggregate: {function: max, window: 10m}\n    severities:"),
    ]
    for changed in changes:
        engine = RuleEngine(rules(LEVELS))
        engine.observe_batch([obs(0, 7.0)])
        ended = engine.reload(rules(changed))
        assert [(t.state, t.annotations["reason"]) for t in ended] == [("resolved", "rule changed")], changed


def test_restore_with_moved_limits_keeps_the_alarm() -> None:
    engine = RuleEngine(rules(LEVELS))
    engine.observe_batch([obs(0, 7.0)])
    restored = RuleEngine.restore(rules(LEVELS.replace("above: 6.0", "above: 6.5")), engine.snapshot())
    assert restored.advance("2024-03-01T00:00:30Z") == []
    assert [(a["state"], a["severity"]) for a in restored.active_alarms()] == [("firing", "critical")]


def test_restore_with_changed_rules_ends_their_alarms_on_next_call() -> None:
    engine = RuleEngine(rules(HIGH + AVG))
    engine.observe_batch([obs(0, 5.0)])
    restored = RuleEngine.restore(rules(HIGH), engine.snapshot())
    out = restored.advance("2024-03-01T00:00:30Z")
    assert [(t.rule, t.state, t.annotations["reason"]) for t in out] == [("avg", "resolved", "rule removed")]
    assert [a["rule"] for a in restored.active_alarms()] == ["high"]


def test_compact_forgets_only_dead_state() -> None:
    engine = RuleEngine(rules(HIGH + AVG), allowed_lateness=60)
    engine.observe_batch([obs(0, 1.0, entity="a"), obs(0, 5.0, entity="b"), obs(30, 1.0, entity="c")])
    assert engine.state_count() == 6
    assert engine.compact() == 2  # both states of a are dead; b fires on both rules; c is recent
    assert sorted((a["rule"], a["key"]) for a in engine.active_alarms()) == [("avg", "b"), ("high", "b")]


def test_future_guard_needs_a_clock_and_rejects_what_is_too_far_ahead() -> None:
    engine = RuleEngine(rules(HIGH), max_future=300)
    out, rejected = engine.observe_batch([obs(0, 5.0)])  # no clock yet: event time is trusted
    assert len(out) == 1 and rejected == []
    engine.advance("2024-03-01T00:10:00Z")
    out, rejected = engine.observe_batch([obs(16, 5.0), obs(15, 3.0)])
    assert [r.reason for r in rejected] == [
        "time 2024-03-01T00:16:00Z is 6m ahead of the clock (tolerance 5m)"
    ]
    assert lines(out) == [("00:15:00", "high", E1, "resolved", "high")]  # the future one moved nothing
