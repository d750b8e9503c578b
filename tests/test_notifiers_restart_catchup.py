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
