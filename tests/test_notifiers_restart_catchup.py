"""A restart after downtime: the escalation's timers that came due meanwhile fire at once. Each
step's first message still goes (it may reach people no earlier step did), but at most one
overdue repeat per escalation, not one per step: the ops process down for an hour had paged the
same person five times within a second when it came back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from atalaia.notifiers.config import load_config_text
from atalaia.notifiers.engine import TICK, EscalationEngine, EscalationState
from atalaia.notifiers.testing import incident_event

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
CONFIG = """
timezone: Europe/Lisbon
targets:
  ana-sms: {channel: sms, url: "smseagle://t@127.0.0.1:9/+351912000001"}
  chefe-sms: {channel: sms, url: "smseagle://t@127.0.0.1:9/+351912000003"}
routes: [{policy: p}]
policies:
  p:
    steps:
      - {targets: [ana-sms], wait: 5m, repeat: 2}
      - {targets: [ana-sms, chefe-sms], wait: 5m, repeat: 2}
      - {targets: [ana-sms, chefe-sms], wait: 5m, repeat: 2}
"""


def restarted_after(minutes: float) -> list[tuple[int, int]]:
    """(step, repeat) of what ana-sms gets when the process comes back ``minutes`` after the
    incident opened at T0 (its state restored from the snapshot taken then)."""
    engine = EscalationEngine(load_config_text(CONFIG, "e.yaml"))
    state, first = engine.step(EscalationState(), incident_event(at="2026-03-02T10:00:00Z"), T0)
    assert [(n.step, n.repeat) for n in first if n.target == "ana-sms"] == [(0, 0)]
    state = EscalationState.restore(state.snapshot())  # the restart
    _, notes = engine.step(state, TICK, T0 + timedelta(minutes=minutes))
    return [(n.step, n.repeat) for n in notes if n.target == "ana-sms"]


def test_a_restart_sends_each_due_steps_first_message_and_at_most_one_overdue_repeat():
    # down for an hour: everything came due; the old engine sent s0r2, s1r0, s1r2, s2r0, s2r2
    assert restarted_after(60) == [(1, 0), (2, 0), (2, 2)]
    # down 27 min: step 1's first message (10:15) and its latest repeat (10:25); not s0r2 (10:10)
    assert restarted_after(27) == [(1, 0), (1, 2)]
    # down 12 min, within step 0: its latest repeat only (10:10), not 10:05 as well
    assert restarted_after(12) == [(0, 2)]
    # down 14 min: 10:05 and 10:10 were missed; the latest repeat goes, once
    assert restarted_after(14) == [(0, 2)]


def test_at_most_one_overdue_repeat_per_escalation_whatever_the_downtime():
    for minutes in range(1, 70):
        got = restarted_after(minutes)
        assert sum(1 for _, r in got if r > 0) <= 1, (minutes, got)
        # the first message of every step that came due is sent
        due_steps = {k for k in range(3) if 15 * k <= minutes} - {0}
        assert {s for s, r in got if r == 0} == due_steps, (minutes, got)


ROTATION = """
timezone: UTC
targets:
  ana-sms: {channel: sms, url: "smseagle://t@127.0.0.1:9/+351912000001"}
  rui-sms: {channel: sms, url: "smseagle://t@127.0.0.1:9/+351912000002"}
  chefe-sms: {channel: sms, url: "smseagle://t@127.0.0.1:9/+351912000003"}
  sala-sms: {channel: sms, url: "smseagle://t@127.0.0.1:9/+351912000004"}
schedules:
  piquete: {type: rotation, members: [ana-sms, rui-sms], start: "2026-03-02T00:07", shift: 10h}
routes: [{policy: p}]
policies:
  p:
    steps:
      - {targets: [piquete], wait: 5m, repeat: 2}
      - {targets: [chefe-sms], wait: 5m, repeat: 0}
"""


def test_a_skipped_repeat_still_reaches_a_target_the_next_message_does_not():
    # the shift changes at 10:07: step 0's repeat at 10:10 is rui's first page; step 1 (10:05
    # later) goes to chefe only. Down from 10:00 to 10:16: rui, on call, must still be paged (he
    # was not, the repeat being dropped for the overdue step 1), once; ana, off shift, is not
    # paged again and not listed as notified for a message she never got
    engine = EscalationEngine(load_config_text(ROTATION, "e.yaml"))
    state, first = engine.step(EscalationState(), incident_event(at="2026-03-02T10:00:00Z"), T0)
    assert [(n.step, n.repeat, n.target) for n in first] == [(0, 0, "ana-sms")]
    state = EscalationState.restore(state.snapshot())
    state, notes = engine.step(state, TICK, T0 + timedelta(minutes=16))
    assert [(n.step, n.repeat, n.target) for n in notes] == [(0, 2, "rui-sms"), (1, 0, "chefe-sms")]
    assert sorted(next(iter(state.escalations.values())).notified) == ["ana-sms", "chefe-sms", "rui-sms"]


def test_a_skipped_repeat_covered_by_the_next_message_is_not_sent():
    two = ROTATION.replace("[chefe-sms]", "[piquete, chefe-sms]")
    engine = EscalationEngine(load_config_text(two, "e.yaml"))
    state, _ = engine.step(EscalationState(), incident_event(at="2026-03-02T10:00:00Z"), T0)
    state = EscalationState.restore(state.snapshot())
    _, notes = engine.step(state, TICK, T0 + timedelta(minutes=16))
    assert [(n.step, n.repeat, n.target) for n in notes] == [(1, 0, "rui-sms"), (1, 0, "chefe-sms")]


def test_a_target_only_a_superseded_repeat_had_is_not_counted_as_notified():
    # sala is in step 0 during 10:04-10:08 only: the 10:05 repeat had it, the 10:10 one not; down
    # until 10:16, the latest repeat (ana's) counts, sala is not paged nor listed as notified
    hours = ROTATION.replace(
        "schedules:\n",
        "schedules:\n  sala-h: {type: hours, windows: [{days: [mon], from: '10:04', to: '10:08'}]}\n",
    ).replace("[piquete]", "[ana-sms, {target: sala-sms, during: sala-h}]")
    engine = EscalationEngine(load_config_text(hours, "e.yaml"))
    state, _ = engine.step(EscalationState(), incident_event(at="2026-03-02T10:00:00Z"), T0)
    state = EscalationState.restore(state.snapshot())
    state, notes = engine.step(state, TICK, T0 + timedelta(minutes=16))
    assert [(n.step, n.repeat, n.target) for n in notes] == [(0, 2, "ana-sms"), (1, 0, "chefe-sms")]
    assert sorted(next(iter(state.escalations.values())).notified) == ["ana-sms", "chefe-sms"]
