"""Severity flapping does not re-page within ``repage_interval`` (Alertmanager's group_interval):
an incident that moves medium ↔ high (and is re-acknowledged, or switches policy) pages a target
at most once per interval, plus at once for a severity higher than any paged in it; a held-back page
is sent at the end of the interval if it is still due, never lost. Explicit sequences (the 71 s of
issue 13) and a hypothesis property, on the pure engine with an injected clock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.notifiers.config import load_config_text
from atalaia.notifiers.engine import TICK, EscalationEngine, EscalationState
from atalaia.notifiers.testing import incident_event
from atalaia.streams.clock import format_time

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def engine(extra: str = "") -> EscalationEngine:
    return EscalationEngine(
        load_config_text(
            f"""
timezone: Europe/Lisbon
{extra}
targets:
  ana-sms: {{channel: sms, url: "smseagle://t@127.0.0.1:9/+351912000001"}}
routes:
  - {{match: {{severity: [high, critical]}}, policy: urgent}}
  - {{match: {{min_severity: medium}}, policy: default}}
policies:
  default: {{steps: [{{targets: [ana-sms], wait: 10m}}]}}
  urgent: {{steps: [{{targets: [ana-sms], wait: 10m}}]}}
""",
            "escalation.yaml",
        )
    )


def ev(
    s: float, version: int, severity: str, state: str = "unacknowledged", change: str = "severity-changed"
):
    return incident_event(
        incident="inc-1",
        version=version,
        at=format_time(T0 + timedelta(seconds=s)),
        change=change,
        state=state,
        severity=severity,
    )


def run(e: EscalationEngine, script: list[tuple[float, str, str]], until: float) -> list:
    """Feed (seconds, severity, state) events, ticking every second; the notifications sent."""
    s, out, v, i = EscalationState(), [], 0, 0
    for sec in range(int(until) + 1):
        now = T0 + timedelta(seconds=sec)
        while i < len(script) and script[i][0] <= sec:
            v += 1
            out += e.step(s, ev(script[i][0], v, script[i][1], script[i][2]), now)[1]
            i += 1
        out += e.step(s, TICK, now)[1]
    return out


# issue 13: one target got 3 SMS in 71 s while one incident moved between medium and high
FLAP = [
    (0, "medium", "unacknowledged"),
    (20, "high", "unacknowledged"),  # routes to another policy: a rise, paged at once
    (40, "medium", "unacknowledged"),  # back to the default policy: held back
    (71, "high", "unacknowledged"),  # flapping again: held back
]


def test_the_71_seconds_of_issue_13_page_twice_not_three_times_then_once_more_if_still_due():
    sent = run(engine(), FLAP, 400)
    times = [(n.due, n.policy, n.snapshot.severity) for n in sent]
    assert times[:2] == [
        ("2026-03-02T10:00:00Z", "default", "medium"),
        ("2026-03-02T10:00:20Z", "urgent", "high"),  # a rise pages at once
    ]
    # nothing more within 5 minutes of the last page; then the held-back page, once, as it is now
    assert times[2:] == [("2026-03-02T10:05:20Z", "urgent", "high")]
    assert len({n.id for n in sent}) == len(sent)


def test_without_repage_on_rise_one_page_per_interval_and_off_restores_the_old_behaviour():
    strict = run(engine("repage_on_rise: false"), FLAP, 400)
    assert [n.due for n in strict] == ["2026-03-02T10:00:00Z", "2026-03-02T10:05:00Z"]
    assert strict[-1].snapshot.severity == "high"
    off = run(engine("repage_interval: 0s"), FLAP, 100)
    assert len(off) == 4  # every switch paged, as before the setting


def test_an_acknowledgement_during_the_interval_cancels_the_held_back_page():
    script = [*FLAP, (80, "high", "acknowledged")]
    sent = run(engine(), script, 600)
    assert len(sent) == 2


def test_reacknowledgement_flapping_with_one_policy():
    e = engine()
    script = [
        (0, "medium", "unacknowledged"),
        (10, "medium", "acknowledged"),
        (20, "high", "unacknowledged"),  # severity rose: acknowledgement required again → rise, paged
        (30, "high", "acknowledged"),
        (40, "medium", "acknowledged"),
        (50, "high", "unacknowledged"),  # not a new high: held back
        (60, "high", "acknowledged"),
    ]
    assert len(run(e, script, 600)) == 2


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 120),
            st.sampled_from(["medium", "high"]),
            st.sampled_from(["unacknowledged", "unacknowledged", "acknowledged"]),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_property_pages_at_least_an_interval_apart_and_none_lost(steps):
    script, t = [], 0
    for dt, sev, state in steps:
        t += dt
        script.append((t, sev, state))
    e = engine("repage_on_rise: false")
    sent = run(e, script, t + 400)
    dues = [datetime.fromisoformat(n.due.replace("Z", "+00:00")) for n in sent]
    for a, b in itertools.pairwise(dues):
        assert (b - a) >= timedelta(minutes=5), (a, b)
    if script[-1][2] == "unacknowledged":  # still waiting for someone: a page covers the last state
        assert sent and dues[-1] >= T0 + timedelta(seconds=script[-1][0]) - timedelta(minutes=10)
        assert sent[-1].snapshot.version >= 1
