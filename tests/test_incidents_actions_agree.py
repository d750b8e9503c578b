"""The actions the console offers for an incident (``console.present.allowed_actions`` over its
projected row) are exactly those the incident manager accepts, in every state a random walk of
alarms, inhibitions, maintenance, silences and commands reaches — in particular an incident that is
"suppressed" because every alarm is (inhibited, silenced, in maintenance), which looks like an
operator's suppression but has no overlay to lift and may still wait for acknowledgement."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atalaia.console.live import event_row
from atalaia.console.present import allowed_actions
from atalaia.incidents.config import IncidentConfig
from atalaia.incidents.events import CommandReply
from atalaia.incidents.manager import IncidentManager
from atalaia.incidents.model import fmt
from atalaia.incidents.projection import Projection
from atalaia.incidents.testing import Driver, at_s, transition

CONFIG = IncidentConfig.model_validate(
    {
        "closing": {"after": "2m"},
        "inhibit": [
            {
                "source_matchers": ['rule="station-comms-failure"'],
                "target_matchers": ['rule!="station-comms-failure"'],
                "equal": ["station"],
            }
        ],
        "maintenance": [{"name": "m", "matchers": ['rule="air-no2"'], "start": at_s(600), "end": at_s(1500)}],
    }
)
PERMS = CONFIG.permissions
ACTIONS = [a for a in PERMS if a not in ("silence", "expire-silence")]
ALARMS = [
    ("river-level-high", "p1", {"parish": "Ribeira", "station": "s1"}),
    ("rain-intense", "r1", {"parish": "Ribeira", "station": "s1"}),
    ("station-comms-failure", "s1", {"parish": "Ribeira", "station": "s1"}),
    ("air-no2", "a1", {"parish": "Ribeira"}),
]
COMMAND = {"actor": "ana", "reason": "r", "duration": 60, "assignee": "rui"}


def disagreements(d: Driver) -> list[tuple[str, str, str, bool, str]]:
    """(state, role, action, offered, the manager's answer) wherever the two differ."""
    out = []
    clock = d.state.clock
    for iid, inc in d.state.incidents.items():
        if inc.close_due is not None and inc.close_due <= clock:
            continue  # a closing timer due at this very time: the next tick closes it
        row = event_row(d.current(iid))
        for role in ("operator", "supervisor", "engineer"):
            offered = set(allowed_actions(row, role, PERMS))
            for action in ACTIONS:
                if role not in PERMS[action]:
                    continue
                mgr = IncidentManager(CONFIG)
                copy = mgr.restore(mgr.snapshot(d.state))
                cmd = {"id": f"probe-{iid}-{role}-{action}", "incident": iid, "action": action, "role": role}
                _, outs = mgr.step(copy, {**cmd, **COMMAND}, fmt(clock))
                reply = next(o for o in outs if isinstance(o, CommandReply))
                if reply.accepted != (action in offered):
                    out.append((row["state"], role, action, action in offered, reply.reason))
    return out


step = st.one_of(
    st.tuples(
        st.just("alarm"),
        st.sampled_from(range(len(ALARMS))),
        st.booleans(),
        st.sampled_from(["low", "high", "critical"]),
    ),
    st.tuples(st.just("command"), st.sampled_from(ACTIONS), st.integers(0, 5)),
    st.tuples(st.just("silence"), st.sampled_from(["river-level-high", "rain-intense"]), st.integers(1, 30)),
    st.tuples(st.just("tick")),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.sampled_from([1, 10, 60, 300]), step), min_size=1, max_size=14))
def test_the_console_offers_what_the_manager_accepts(steps) -> None:
    d = Driver(CONFIG)
    t = 0
    for dt, (kind, *args) in steps:
        t += dt
        if kind == "alarm":
            rule, key, labels = ALARMS[args[0]]
            state = "firing" if args[1] else "resolved"
            d.step(transition(rule, key, state, t, severity=args[2], **labels), t)
        elif kind == "command" and d.state.incidents:
            action, pick = args
            ids = list(d.state.incidents)
            role = PERMS[action][0]
            d.step({"incident": ids[pick % len(ids)], "action": action, "role": role, **COMMAND}, t)
        elif kind == "silence":
            rule, minutes = args
            d.step(
                {"action": "silence", "actor": "rui", "role": "supervisor", "comment": "works",
                 "matchers": [f'rule="{rule}"'], "duration": minutes * 60},
                t,
            )  # fmt: skip
        else:
            d.tick(t)
        assert disagreements(d) == []


def inhibited_before_ack(d: Driver) -> str:
    """A river alarm annunciated, then (before anyone acknowledged it) its station's
    communications fail, inhibiting it; then the river returns to normal."""
    d.fire("river-level-high", "p1", at=0, parish="Ribeira", station="s1")
    river = d.last_incident()
    d.fire("station-comms-failure", "s1", at=10, parish="Foz", station="s1")
    d.resolve("river-level-high", "p1", at=20, parish="Ribeira", station="s1")
    return river


def test_an_incident_whose_alarms_are_all_suppressed_offers_no_unsuppress() -> None:
    d = Driver(CONFIG)
    river = inhibited_before_ack(d)
    row = event_row(d.current(river))
    assert row["state"] == "suppressed" and row["overlay"] is None and row["needs_ack"] is True
    sup = allowed_actions(row, "supervisor", PERMS)
    assert "unsuppress" not in sup and {"acknowledge", "shelve", "suppress", "close"} <= set(sup)
    refused = d.command("unsuppress", at=30, incident=river, role="supervisor", reason="r")
    assert isinstance(refused, CommandReply) and not refused.accepted
    assert refused.reason == (
        "incident is not suppressed: no operator suppressed it, its alarms are "
        "(inhibited by station-comms-failure s1)"
    )  # it said 'incident is not suppressed (it is suppressed)'
    # an operator's suppression is lifted as before
    d.command("suppress", at=40, incident=river, role="supervisor", reason="gauge recalibration")
    row = event_row(d.current(river))
    assert (row["state"], row["overlay"]) == ("suppressed", "suppressed")
    assert "unsuppress" in allowed_actions(row, "supervisor", PERMS)


@pytest.mark.parametrize(
    ("action", "role", "overlay"),
    [("unshelve", "operator", "shelved"), ("return-to-service", "engineer", "out-of-service")],
)
def test_lifting_another_overlay_there_says_what_suppresses_it(action, role, overlay) -> None:
    """Unshelve or return to service on an incident suppressed because every alarm is: the reply
    says it is not shelved and why it is suppressed (it read 'no operator suppressed it', an
    answer to a question nobody asked)."""
    d = Driver(CONFIG)
    river = inhibited_before_ack(d)
    refused = d.command(action, at=30, incident=river, role=role, reason="r")
    assert isinstance(refused, CommandReply) and not refused.accepted
    assert refused.reason == (
        f"incident is not {overlay} (it is suppressed: its alarms are (inhibited by station-comms-failure s1))"
    )


def test_an_annunciation_inhibited_before_its_acknowledgement_can_be_acknowledged() -> None:
    d = Driver(CONFIG)
    river = inhibited_before_ack(d)
    # the operator saw it and never acknowledged it: the incident waits for that while its station
    # is down (it was refused as 'nothing to acknowledge: incident is suppressed' and stayed open)
    ev = d.command("acknowledge", at=30, incident=river, actor="ana")
    assert not isinstance(ev, CommandReply), ev.reason
    assert ev.acknowledged_by == "ana" and ev.needs_ack is False
    d.tick(30 + 120)  # the closing hold
    assert d.current(river).state == "closed"


def test_an_incident_opened_already_suppressed_has_nothing_to_acknowledge() -> None:
    d = Driver(CONFIG)
    d.fire("station-comms-failure", "s1", at=0, parish="Foz", station="s1")
    ev = d.fire("river-level-high", "p1", at=10, parish="Ribeira", station="s1")
    assert ev.state == "suppressed" and ev.needs_ack is False
    assert "acknowledge" not in allowed_actions(event_row(ev), "operator", PERMS)
    r = d.command("acknowledge", at=20, incident=ev.incident)
    assert isinstance(r, CommandReply) and not r.accepted and "nothing to acknowledge" in r.reason


def test_the_projection_keeps_overlay_and_needs_ack(tmp_path: Path) -> None:
    d = Driver(CONFIG)
    river = inhibited_before_ack(d)
    proj = Projection.connect(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        proj.apply(d.events())
        row = proj.incident(river)
        assert (row["state"], row["overlay"], row["needs_ack"]) == ("suppressed", None, True)
        assert "unsuppress" not in allowed_actions(row, "supervisor", PERMS)
        assert "acknowledge" in allowed_actions(row, "operator", PERMS)
        d.command("shelve", at=30, incident=river, reason="crew on site", duration="10m")
        proj.apply(d.events())
        row = proj.incident(river)
        assert (row["state"], row["overlay"], row["needs_ack"]) == ("shelved", "shelved", True)
    finally:
        proj.close()


def test_rows_of_older_events_are_read_as_before() -> None:
    """A row from an event without the new fields (needs_ack null): "suppressed" is taken as an
    operator's suppression, as the console always did."""
    row = {"state": "suppressed", "active": True, "overlay": None, "needs_ack": None}
    assert "unsuppress" in allowed_actions(row, "supervisor", PERMS)
