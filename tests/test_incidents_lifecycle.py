"""Every cell of the lifecycle table in incidents/README.md: state x event -> new state (or rejection)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from atalaia.incidents.config import IncidentConfig
from atalaia.incidents.events import CommandReply, IncidentEvent
from atalaia.incidents.testing import Driver

HOLD = 300  # closing hold time, so "normal" is observable


def driver(hold: float = HOLD, **cfg) -> Driver:
    return Driver(IncidentConfig.model_validate({"closing": {"after": hold}, **cfg}))


def unack(d: Driver) -> None:
    d.fire("river-level-high", "porto-01", at=0, parish="Ribeira")


def ack(d: Driver) -> None:
    unack(d)
    d.command("acknowledge", at=10)


def rtn_unack(d: Driver) -> None:
    unack(d)
    d.resolve("river-level-high", "porto-01", at=20, parish="Ribeira")


def normal(d: Driver) -> None:
    ack(d)
    d.resolve("river-level-high", "porto-01", at=20, parish="Ribeira")


def shelved(d: Driver) -> None:
    unack(d)
    d.command("shelve", at=10, reason="known works on the quay", duration="10m")


def suppressed(d: Driver) -> None:
    unack(d)
    d.command("suppress", at=10, role="supervisor", reason="gauge under recalibration")


def out_of_service(d: Driver) -> None:
    unack(d)
    d.command("out-of-service", at=10, role="engineer", reason="sensor replaced")


SETUPS: dict[str, Callable[[Driver], None]] = {
    "unacknowledged": unack,
    "acknowledged": ack,
    "returned-unacknowledged": rtn_unack,
    "normal": normal,
    "shelved": shelved,
    "suppressed": suppressed,
    "out-of-service": out_of_service,
}


def fire_again(d: Driver):  # the same alarm re-activates
    return d.fire("river-level-high", "porto-01", at=100, parish="Ribeira")


def new_alarm(d: Driver):  # another alarm joins (same parish, inside the window)
    return d.fire("rain-intense", "porto-rain-02", at=100, parish="Ribeira")


def clear(d: Driver):
    return d.resolve("river-level-high", "porto-01", at=100, parish="Ribeira")


def escalate(d: Driver):  # the alarm's severity goes up while firing
    return d.fire("river-level-high", "porto-01", at=100, parish="Ribeira", severity="critical")


def cmd(action: str, role: str = "supervisor", **kw) -> Callable[[Driver], object]:
    defaults = {
        "shelve": {"duration": "10m", "reason": "r"},
        "suppress": {"reason": "r"},
        "out-of-service": {"reason": "r"},
        "comment": {"reason": "called the fire brigade"},
        "close": {"reason": "done"},
        "assign": {"assignee": "rui"},
    }
    return lambda d: d.command(action, at=100, role=role, **{**defaults.get(action, {}), **kw})


def expire(d: Driver):  # time passes past the shelve and the closing hold time
    out = d.tick(10_000)
    return out[-1] if out else None


# (from state, event name, expected new state, or "rejected: <text>"); "same" = no state change
TABLE: list[tuple[str, str, str]] = [
    # unacknowledged
    ("unacknowledged", "fire_again", "unacknowledged"),
    ("unacknowledged", "new_alarm", "unacknowledged"),
    ("unacknowledged", "clear", "returned-unacknowledged"),
    ("unacknowledged", "acknowledge", "acknowledged"),
    ("unacknowledged", "shelve", "shelved"),
    ("unacknowledged", "unshelve", "rejected: not shelved"),
    ("unacknowledged", "suppress", "suppressed"),
    ("unacknowledged", "out-of-service", "out-of-service"),
    ("unacknowledged", "close", "rejected: firing alarms"),
    ("unacknowledged", "comment", "unacknowledged"),
    ("unacknowledged", "assign", "unacknowledged"),
    # acknowledged
    ("acknowledged", "new_alarm", "unacknowledged"),
    ("acknowledged", "escalate", "unacknowledged"),
    ("acknowledged", "fire_again", "acknowledged"),  # same severity, same episode: nothing new to annunciate
    ("acknowledged", "clear", "normal"),
    ("acknowledged", "acknowledge", "rejected: nothing to acknowledge"),
    ("acknowledged", "shelve", "shelved"),
    ("acknowledged", "suppress", "suppressed"),
    ("acknowledged", "out-of-service", "out-of-service"),
    ("acknowledged", "close", "rejected: firing alarms"),
    ("acknowledged", "return-to-service", "rejected: not out-of-service"),
    # returned-to-normal unacknowledged
    ("returned-unacknowledged", "acknowledge", "normal"),
    ("returned-unacknowledged", "fire_again", "unacknowledged"),
    ("returned-unacknowledged", "new_alarm", "unacknowledged"),
    ("returned-unacknowledged", "close", "closed"),
    ("returned-unacknowledged", "shelve", "shelved"),
    ("returned-unacknowledged", "expire", "returned-unacknowledged"),  # never closes unacknowledged
    # normal (acknowledged and clear, within the closing hold time)
    ("normal", "expire", "closed"),
    ("normal", "fire_again", "unacknowledged"),
    ("normal", "acknowledge", "rejected: nothing to acknowledge"),
    ("normal", "close", "closed"),
    ("normal", "comment", "normal"),
    # shelved
    ("shelved", "expire", "unacknowledged"),  # shelve expires; the alarm was never acknowledged
    ("shelved", "unshelve", "unacknowledged"),
    ("shelved", "acknowledge", "rejected: nothing to acknowledge"),
    ("shelved", "shelve", "rejected: already shelved"),
    ("shelved", "suppress", "rejected: already shelved"),
    ("shelved", "new_alarm", "shelved"),
    ("shelved", "clear", "shelved"),
    ("shelved", "close", "rejected: firing alarms"),
    ("shelved", "comment", "shelved"),
    # suppressed by design (operator)
    ("suppressed", "unsuppress", "unacknowledged"),
    ("suppressed", "new_alarm", "suppressed"),
    ("suppressed", "clear", "suppressed"),
    ("suppressed", "acknowledge", "rejected: nothing to acknowledge"),
    ("suppressed", "out-of-service", "rejected: already suppressed"),
    ("suppressed", "unshelve", "rejected: not shelved"),
    # out of service
    ("out-of-service", "return-to-service", "unacknowledged"),
    ("out-of-service", "new_alarm", "out-of-service"),
    ("out-of-service", "clear", "out-of-service"),
    ("out-of-service", "shelve", "rejected: already out-of-service"),
    ("out-of-service", "unsuppress", "rejected: not suppressed"),
    ("out-of-service", "expire", "out-of-service"),
]

EVENTS: dict[str, Callable[[Driver], object]] = {
    "fire_again": fire_again,
    "new_alarm": new_alarm,
    "clear": clear,
    "escalate": escalate,
    "expire": expire,
    "acknowledge": cmd("acknowledge", role="operator"),
    "shelve": cmd("shelve", role="operator"),
    "unshelve": cmd("unshelve", role="operator"),
    "suppress": cmd("suppress"),
    "unsuppress": cmd("unsuppress"),
    "out-of-service": cmd("out-of-service", role="engineer"),
    "return-to-service": cmd("return-to-service", role="engineer"),
    "close": cmd("close"),
    "comment": cmd("comment", role="operator"),
    "assign": cmd("assign", role="operator"),
}


@pytest.mark.parametrize(("start", "event", "expected"), TABLE, ids=[f"{s}--{e}" for s, e, _ in TABLE])
def test_lifecycle_table(start: str, event: str, expected: str) -> None:
    d = driver()
    SETUPS[start](d)
    incident = d.last_incident()
    assert d.current(incident).state == start
    before = d.current(incident).version
    result = EVENTS[event](d)
    if expected.startswith("rejected: "):
        assert isinstance(result, CommandReply) and not result.accepted
        assert expected.removeprefix("rejected: ") in result.reason
        assert d.current(incident).version == before, "a rejected command changes nothing"
        return
    assert d.current(incident).state == expected
    if not isinstance(result, IncidentEvent) and result is not None:
        assert result.accepted
    if event in ("new_alarm", "clear", "escalate") or expected != start:
        assert d.current(incident).version > before, "every change is an incident event"


def test_every_state_and_event_of_the_table_is_covered() -> None:
    states = {s for s, _, _ in TABLE} | {
        e.split(": ")[0] for _, _, e in TABLE if not e.startswith("rejected")
    }
    assert states >= {
        "unacknowledged",
        "acknowledged",
        "returned-unacknowledged",
        "normal",
        "shelved",
        "suppressed",
        "out-of-service",
        "closed",
    }
    assert {e for _, e, _ in TABLE} == set(EVENTS)


def test_auto_close_at_once_when_hold_time_is_zero() -> None:
    d = driver(hold=0)
    normal(d)
    assert d.current().state == "closed"
    assert [e.change for e in d.events()][-2:] == ["returned-to-normal", "closed"]


def test_closing_without_acknowledgement_when_configured() -> None:
    d = driver(hold=0, closing={"require_acknowledged": False})
    rtn_unack(d)
    assert d.current().state == "closed"


def test_commands_on_closed_and_unknown_incidents_are_rejected() -> None:
    d = driver(hold=0)
    normal(d)
    closed = d.last_incident()
    r = d.command("comment", at=200, incident=closed, reason="late note")
    assert isinstance(r, CommandReply) and not r.accepted and "closed" in r.reason
    r = d.command("acknowledge", at=200, incident="no-such-incident")
    assert isinstance(r, CommandReply) and not r.accepted and "unknown incident" in r.reason


@pytest.mark.parametrize(
    ("action", "role"),
    [
        ("acknowledge", "viewer"),
        ("acknowledge", "engineer"),
        ("close", "operator"),
        ("suppress", "operator"),
        ("out-of-service", "operator"),
        ("comment", "viewer"),
    ],
)
def test_roles_that_may_not(action: str, role: str) -> None:
    d = driver()
    unack(d)
    r = d.command(action, at=10, role=role, reason="x", duration="5m")
    assert isinstance(r, CommandReply) and not r.accepted
    assert f"role {role} may not {action}" in r.reason


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"duration": None, "reason": "x"}, "positive duration"),
        ({"duration": "9h", "reason": "x"}, "at most"),
        ({"duration": "5m", "reason": ""}, "needs a reason"),
    ],
)
def test_invalid_shelve(kw: dict, why: str) -> None:
    d = driver()
    unack(d)
    r = d.command("shelve", at=10, **kw)
    assert isinstance(r, CommandReply) and not r.accepted and why in r.reason


def test_accepted_command_reply_names_the_version_it_produced() -> None:
    d = driver()
    unack(d)
    d.command("acknowledge", at=10)
    reply = d.replies()[-1]
    assert reply.accepted and reply.version == d.current().version == 2


def test_redelivered_command_is_answered_once() -> None:
    d = driver()
    unack(d)
    cmd_ = {
        "id": "c-1",
        "incident": d.last_incident(),
        "action": "acknowledge",
        "actor": "ana",
        "role": "operator",
    }
    first = d.step(cmd_, 10)
    again = d.step(cmd_, 11)
    assert len(first) == 2 and again == []


def test_shelve_expires_at_its_time_and_activation_during_shelve_is_annunciated_after() -> None:
    d = driver()
    ack(d)
    d.command("shelve", at=100, duration="10m", reason="storm drains works")
    d.fire("rain-intense", "porto-rain-02", at=200, parish="Ribeira")
    assert d.current().state == "shelved"
    assert d.tick(699) == []
    out = d.tick(5000)
    ev = next(o for o in out if isinstance(o, IncidentEvent))
    assert (ev.change, ev.at, ev.state, ev.actor) == (
        "unshelved",
        "2026-01-01T00:11:40Z",
        "unacknowledged",
        "timer",
    )


def test_audit_trail_has_actor_time_reason_for_every_change() -> None:
    d = driver()
    shelved(d)
    d.command("unshelve", at=50, reason="works done")
    d.command("acknowledge", at=60, actor="rui")
    audit = d.state.incidents[d.last_incident()].audit
    assert [a.version for a in audit] == list(range(1, len(audit) + 1))
    assert [(a.change, a.actor) for a in audit] == [
        ("opened", "alarm:river-level-high"),
        ("shelved", "ana"),
        ("unshelved", "ana"),
        ("acknowledged", "rui"),
    ]
    assert all(a.reason for a in audit)


@pytest.mark.parametrize(
    ("overlay", "role", "end"),
    [
        ("shelve", "operator", "unshelve"),
        ("suppress", "supervisor", "unsuppress"),
        ("out-of-service", "engineer", "return-to-service"),
    ],
)
def test_an_acknowledged_alarm_that_clears_under_an_overlay_comes_back_normal(
    overlay: str, role: str, end: str
) -> None:
    d = driver()
    ack(d)
    d.command(overlay, at=30, role=role, reason="r", duration="10m")
    d.resolve("river-level-high", "porto-01", at=40, parish="Ribeira")
    assert d.command(end, at=50, role=role).state == "normal"
    d.tick(50 + HOLD)
    assert d.current().state == "closed"


def test_an_unacknowledged_alarm_that_clears_under_an_overlay_comes_back_returned_unacknowledged() -> None:
    d = driver()
    shelved(d)
    d.resolve("river-level-high", "porto-01", at=40, parish="Ribeira")
    assert d.command("unshelve", at=50).state == "returned-unacknowledged"


def test_close_an_overlaid_incident_once_nothing_fires() -> None:
    d = driver()
    shelved(d)
    d.resolve("river-level-high", "porto-01", at=40, parish="Ribeira")
    ev = d.command("close", at=50, role="supervisor", reason="false alarm, gauge fouled")
    assert isinstance(ev, IncidentEvent) and ev.state == "closed" and ev.actor == "ana"


def rose_during(d: Driver, overlay: str, role: str) -> None:
    """Acknowledged at high; an overlay set; the alarm rises to critical while it lasts."""
    d.fire("river-level-high", "porto-01", at=0, parish="Ribeira", severity="high")
    d.command("acknowledge", at=10, actor="ana")
    d.command(overlay, at=20, role=role, reason="crew on the quay", duration="10m")
    d.fire("river-level-high", "porto-01", at=30, parish="Ribeira", severity="critical")


@pytest.mark.parametrize(
    ("overlay", "role", "end"),
    [
        ("shelve", "operator", "unshelve"),
        ("shelve", "operator", "expiry"),
        ("suppress", "supervisor", "unsuppress"),
        ("out-of-service", "engineer", "return-to-service"),
    ],
)
def test_a_severity_that_rose_during_an_overlay_asks_for_acknowledgement_when_it_ends(overlay, role, end):
    """With reacknowledge_on_escalation (default) a higher severity needs acknowledgement. One that
    rose while the incident was shelved, suppressed or out of service came back 'acknowledged' at
    critical, by the operator who had acknowledged it at high: nobody was asked (nor paged)."""
    d = driver()
    rose_during(d, overlay, role)
    ev = d.tick(10_000)[0] if end == "expiry" else d.command(end, at=40, role=role, reason="done")
    assert (ev.state, ev.severity, ev.acknowledged_by, ev.needs_ack) == (
        "unacknowledged",
        "critical",
        None,
        True,
    )
    d.command("acknowledge", at=20_000, actor="rui")
    assert (d.current().state, d.current().acknowledged_by) == ("acknowledged", "rui")


def test_an_overlay_that_ends_with_the_severity_it_began_with_stays_acknowledged() -> None:
    d = driver()
    d.fire("river-level-high", "porto-01", at=0, parish="Ribeira", severity="high")
    d.command("acknowledge", at=10, actor="ana")
    d.command("shelve", at=20, reason="crew on the quay", duration="10m")
    d.fire("river-level-high", "porto-01", at=30, parish="Ribeira", severity="medium")
    d.fire("river-level-high", "porto-01", at=31, parish="Ribeira", severity="high")
    ev = d.command("unshelve", at=40, reason="done")
    assert (ev.state, ev.acknowledged_by) == ("acknowledged", "ana")


# -- one-shot shelving ("shelve until it clears", ISA-18.2): shelved while its alarms fire, unshelved
# when the last returns to normal, at most ``duration`` (default shelving.max)
def one_shot(d: Driver, at: float = 10, **kw) -> IncidentEvent | CommandReply:
    return d.command("shelve", at=at, reason="crew on the quay", until="clear", **kw)


def one_shot_unack(d: Driver) -> None:
    unack(d)
    one_shot(d)


def one_shot_ack(d: Driver, **kw) -> None:
    ack(d)
    one_shot(d, at=20, **kw)


def second_clear(d: Driver):  # the other alarm of a two-alarm incident clears too
    return d.resolve("rain-intense", "porto-rain-02", at=150, parish="Ribeira")


ONE_SHOT_SETUPS: dict[str, Callable[[Driver], None]] = {
    "shelved until clear, unacknowledged": one_shot_unack,
    "shelved until clear, acknowledged": one_shot_ack,
}
ONE_SHOT_EVENTS: dict[str, Callable[[Driver], object]] = {
    **EVENTS,
    "one-shot": lambda d: one_shot(d, at=100),
    "new_alarm, clear, clear": lambda d: (new_alarm(d), clear(d), second_clear(d))[-1],
    "shelving.max passes": lambda d: d.tick(40_000),
}
# (from state, event name, expected new state, or "rejected: <text>")
ONE_SHOT_TABLE: list[tuple[str, str, str]] = [
    # the one-shot shelve itself (from the base states: only while something fires)
    ("unacknowledged", "one-shot", "shelved"),
    ("acknowledged", "one-shot", "shelved"),
    ("returned-unacknowledged", "one-shot", "rejected: nothing to wait for"),
    ("normal", "one-shot", "rejected: nothing to wait for"),
    ("shelved", "one-shot", "rejected: already shelved"),
    ("suppressed", "one-shot", "rejected: already suppressed"),
    ("out-of-service", "one-shot", "rejected: already out-of-service"),
    # while it lasts
    ("shelved until clear, unacknowledged", "clear", "returned-unacknowledged"),  # footnote 1
    ("shelved until clear, acknowledged", "clear", "normal"),
    ("shelved until clear, acknowledged", "new_alarm", "shelved"),
    ("shelved until clear, acknowledged", "fire_again", "shelved"),
    ("shelved until clear, acknowledged", "escalate", "shelved"),
    # an alarm that activated during it and cleared is not annunciated (footnote 1: "still fires")
    ("shelved until clear, acknowledged", "new_alarm, clear, clear", "normal"),
    ("shelved until clear, acknowledged", "expire", "shelved"),  # (10 000 s: within shelving.max)
    ("shelved until clear, acknowledged", "shelving.max passes", "acknowledged"),  # still firing
    ("shelved until clear, unacknowledged", "shelving.max passes", "unacknowledged"),
    ("shelved until clear, unacknowledged", "unshelve", "unacknowledged"),
    ("shelved until clear, acknowledged", "acknowledge", "rejected: nothing to acknowledge"),
    ("shelved until clear, acknowledged", "shelve", "rejected: already shelved"),
    ("shelved until clear, acknowledged", "close", "rejected: firing alarms"),
    ("shelved until clear, acknowledged", "comment", "shelved"),
]


@pytest.mark.parametrize(
    ("start", "event", "expected"), ONE_SHOT_TABLE, ids=[f"{s}--{e}" for s, e, _ in ONE_SHOT_TABLE]
)
def test_one_shot_shelve_table(start: str, event: str, expected: str) -> None:
    d = driver()
    (ONE_SHOT_SETUPS.get(start) or SETUPS[start])(d)
    incident = d.last_incident()
    assert d.current(incident).state == ("shelved" if start.startswith("shelved until") else start)
    before = d.current(incident).version
    result = ONE_SHOT_EVENTS[event](d)
    if expected.startswith("rejected: "):
        assert isinstance(result, CommandReply) and not result.accepted
        assert expected.removeprefix("rejected: ") in result.reason, result.reason
        assert d.current(incident).version == before, "a rejected command changes nothing"
        return
    assert d.current(incident).state == expected


def test_one_shot_shelve_ends_when_the_last_alarm_returns_to_normal() -> None:
    """Shelved until it clears: the incident stays shelved while any of its alarms fires (a new
    one, one firing again, a higher severity are recorded, not annunciated); when the last one
    returns to normal it is unshelved by itself, its timeline says why, and it comes back as the
    state table says once an overlay ends with nothing firing (here: normal, as it was
    acknowledged), so it then closes after its hold time like any other."""
    d = driver()
    ack(d)
    ev = one_shot(d, at=20)
    assert (ev.state, ev.overlay, ev.shelved_until, ev.shelved_until_clear) == (
        "shelved",
        "shelved",
        "2026-01-01T08:00:20Z",  # no duration: bounded by shelving.max (8 h)
        True,
    )
    new_alarm(d)
    d.fire("rain-intense", "porto-rain-02", at=110, parish="Ribeira", severity="critical")
    clear(d)
    assert (d.current().state, d.current().shelved_until_clear) == ("shelved", True), "one still fires"
    out = d.step(
        {"at": "2026-01-01T00:02:30Z", "rule": "rain-intense", "key": "porto-rain-02", "state": "resolved",
         "severity": "critical", "value": 1.0, "entity": "porto-rain-02", "labels": {"parish": "Ribeira"}},
        150,
    )  # fmt: skip
    alarm_event, unshelved = (o for o in out if isinstance(o, IncidentEvent))
    assert (alarm_event.changes, alarm_event.state) == (["returned-to-normal", "alarm-updated"], "shelved")
    assert (unshelved.change, unshelved.state, unshelved.at, unshelved.actor, unshelved.reason) == (
        "unshelved",
        "normal",
        "2026-01-01T00:02:30Z",
        "policy:shelving",
        "unshelved: its alarms returned to normal",
    )
    assert unshelved.version == alarm_event.version + 1
    assert (unshelved.overlay, unshelved.shelved_until, unshelved.shelved_until_clear) == (None, None, None)
    assert b"shelved_until_clear" not in unshelved.to_json(), "the field is left out when no one-shot is on"
    # a NEW activation after it is annunciated as usual (the incident is not shelved any more)
    ev = d.fire("river-level-high", "porto-01", at=200, parish="Ribeira")
    assert (ev.state, ev.needs_ack) == ("unacknowledged", True)


def test_a_one_shot_shelve_of_an_unacknowledged_incident_leaves_it_to_acknowledge() -> None:
    d = driver()
    one_shot_unack(d)
    clear(d)
    assert d.current().state == "returned-unacknowledged"
    assert d.command("acknowledge", at=200).state == "normal"
    d.tick(200 + HOLD)
    assert d.current().state == "closed"


def test_a_one_shot_shelve_of_an_acknowledged_incident_closes_at_once_without_a_hold() -> None:
    d = driver(hold=0)
    one_shot_ack(d)
    clear(d)
    assert [(e.change, e.state) for e in d.events()][-3:] == [
        ("returned-to-normal", "shelved"),
        ("unshelved", "normal"),
        ("closed", "closed"),
    ]


def test_a_one_shot_shelve_whose_alarms_never_clear_expires_at_its_bound_and_says_so() -> None:
    d = driver()
    one_shot_ack(d)
    d.fire("river-level-high", "porto-01", at=30, parish="Ribeira", severity="critical")
    assert d.tick(20 + 8 * 3600 - 1) == []
    ev = next(o for o in d.tick(10 * 3600) if isinstance(o, IncidentEvent))
    assert (ev.change, ev.at, ev.actor, ev.reason, ev.state, ev.needs_ack) == (
        "unshelved",
        "2026-01-01T08:00:20Z",
        "timer",
        "shelve expired before its alarms returned to normal",
        "unacknowledged",  # the severity rose while it was shelved: asked again, as after a timed one
        True,
    )
    assert ev.shelved_until_clear is None


def test_a_one_shot_shelve_with_a_duration_is_bounded_by_it() -> None:
    d = driver()
    one_shot_ack(d, duration="30m")
    assert d.current().shelved_until == "2026-01-01T00:30:20Z"
    ev = next(o for o in d.tick(3600) if isinstance(o, IncidentEvent))
    assert (ev.change, ev.at, ev.reason) == (
        "unshelved",
        "2026-01-01T00:30:20Z",
        "shelve expired before its alarms returned to normal",
    )


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"duration": "9h"}, "at most 8h"),
        ({"duration": 0}, "positive duration"),
        ({"reason": ""}, "needs a reason"),
    ],
)
def test_invalid_one_shot_shelve(kw: dict, why: str) -> None:
    d = driver()
    unack(d)
    r = d.command("shelve", at=10, **{"reason": "x", "until": "clear", **kw})
    assert isinstance(r, CommandReply) and not r.accepted and why in r.reason, r.reason


def test_a_one_shot_shelve_of_an_incident_with_nothing_firing_is_refused_saying_why() -> None:
    d = driver()
    normal(d)
    r = one_shot(d, at=30)
    assert isinstance(r, CommandReply) and not r.accepted
    assert r.reason == (
        "nothing to wait for: no alarm of this incident is firing (it is normal); "
        "shelve it for a duration instead"
    )


def test_a_one_shot_shelve_ends_when_the_manager_learns_of_a_late_clear_not_before_it_began() -> None:
    """A resolved transition whose event time is before the shelve (a late delivery) unshelves
    the incident at the manager's clock: the timeline never goes back before the shelve."""
    d = driver()
    one_shot_ack(d)  # at 20
    out = d.step(
        {"at": "2026-01-01T00:00:15Z", "rule": "river-level-high", "key": "porto-01", "state": "resolved",
         "severity": "high", "value": 1.0, "entity": "porto-01", "labels": {"parish": "Ribeira"}},
        60,
    )  # fmt: skip
    unshelved = [o for o in out if isinstance(o, IncidentEvent)][-1]
    assert (unshelved.change, unshelved.at, unshelved.state) == (
        "unshelved",
        "2026-01-01T00:01:00Z",
        "normal",
    )


def test_until_is_only_for_shelve() -> None:
    d = driver()
    unack(d)
    with pytest.raises(
        ValueError, match=r"until\n.*only a shelve waits until its alarms clear, not acknowledge"
    ):
        d.command("acknowledge", at=10, until="clear")
    with pytest.raises(ValueError, match="until"):
        d.command("shelve", at=10, reason="x", until="tomorrow")
