"""The escalation engine on a fake clock: steps, waits, repeats, acknowledgement, schedules,
snapshots; the delivery records that result; hypothesis properties of the state machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atalaia.notifiers.channels.base import Channel, ChannelContext
from atalaia.notifiers.config import load_config_text
from atalaia.notifiers.engine import TICK, EscalationEngine, EscalationState
from atalaia.notifiers.log import SQLiteDeliveryLog
from atalaia.notifiers.model import DeliveryResult, Notification
from atalaia.notifiers.service import Notifier
from atalaia.notifiers.testing import incident_event
from atalaia.streams.clock import format_time

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday, 10:00 in Lisbon (WET = UTC)

CONFIG = """
timezone: Europe/Lisbon
targets:
  pgu: {channel: ngsi-ld, url: "http://127.0.0.1:9/"}
  ana-sms: {channel: sms, url: "smseagle://t@127.0.0.1:9/+351912000001"}
  rui-sms: {channel: sms, url: "smseagle://t@127.0.0.1:9/+351912000002"}
  chefe-sms: {channel: sms, url: "smseagle://t@127.0.0.1:9/+351912000003"}
  sala-email: {channel: email, url: "mailto://127.0.0.1:9?mode=insecure&from=a@b.pt&to=sala@cm-porto.pt"}
  piquete-email: {channel: email, url: "mailto://127.0.0.1:9?mode=insecure&from=a@b.pt&to=piquete@cm-porto.pt"}
schedules:
  expediente:
    type: hours
    windows: [{days: [mon, tue, wed, thu, fri], from: "09:00", to: "18:00"}]
    holidays: [2026-04-25]
  hydro-oncall: {type: rotation, members: [ana-sms, rui-sms], start: "2026-03-02T09:00", shift: 7d}
routes:
  - {match: {severity: [critical], labels: {team: hydro}}, policy: hydro-critical}
  - {match: {min_severity: medium}, policy: default}
policies:
  default:
    steps:
      - targets: [pgu, hydro-oncall]
        wait: 5m
      - targets: [chefe-sms, {target: sala-email, during: expediente}, {target: piquete-email, outside: expediente}]
        wait: 10m
        repeat: 2
  hydro-critical:
    steps:
      - {targets: [pgu, hydro-oncall, chefe-sms], wait: 2m, repeat: 1}
"""


@pytest.fixture
def engine() -> EscalationEngine:
    return EscalationEngine(load_config_text(CONFIG, "escalation.yaml"))


def ev(
    t: datetime,
    version: int,
    state: str = "unacknowledged",
    change: str = "opened",
    severity: str = "high",
    active: bool = True,
    incident: str = "inc-1",
    **kw,
) -> dict:
    return incident_event(
        incident=incident,
        version=version,
        at=format_time(t),
        change=change,
        state=state,
        active=active,
        severity=severity,
        **kw,
    )


def names(notes: list[Notification]) -> list[tuple[str, int, int, str]]:
    return [(n.target, n.step, n.repeat, n.kind) for n in notes]


def test_unacknowledged_goes_to_step_two_repeats_stop_at_n_and_close_tells_everyone(engine):
    s = EscalationState()
    s, out = engine.step(s, ev(T0, 1), T0)
    assert names(out) == [("pgu", 0, 0, "escalation"), ("ana-sms", 0, 0, "escalation")]
    assert s.next_wakeup() == T0 + timedelta(minutes=5)
    assert engine.step(s, TICK, T0 + timedelta(minutes=4, seconds=59))[1] == []
    _, out = engine.step(s, TICK, T0 + timedelta(minutes=5))
    assert names(out) == [("chefe-sms", 1, 0, "escalation"), ("sala-email", 1, 0, "escalation")]
    assert out[0].due == "2026-03-02T10:05:00Z"
    seen = []
    for minute in range(6, 120):
        seen += names(engine.step(s, TICK, T0 + timedelta(minutes=minute))[1])
    assert seen == [
        ("chefe-sms", 1, 1, "escalation"),
        ("sala-email", 1, 1, "escalation"),
        ("chefe-sms", 1, 2, "escalation"),
        ("sala-email", 1, 2, "escalation"),
    ]  # repeat: 2, then stop
    assert s.escalations["inc-1"].status == "exhausted" and s.next_wakeup() is None
    _, out = engine.step(s, ev(T0 + timedelta(hours=3), 2, state="closed", change="closed", active=False), T0)
    assert names(out) == [(t, -1, 0, "resolved") for t in ("pgu", "ana-sms", "chefe-sms", "sala-email")]


def test_acknowledgement_stops_the_escalation_and_a_new_episode_restarts_it(engine):
    s = EscalationState()
    engine.step(s, ev(T0, 1), T0)
    engine.step(s, TICK, T0 + timedelta(minutes=5))  # step 2 sent
    _, out = engine.step(
        s,
        ev(T0 + timedelta(minutes=7), 2, "acknowledged", "acknowledged", acknowledged_by="operador.sala"),
        T0 + timedelta(minutes=7),
    )
    assert out == []
    for minute in range(8, 200, 7):
        assert engine.step(s, TICK, T0 + timedelta(minutes=minute))[1] == []
    # the alarm clears and re-fires: ISA-18.2 makes it unacknowledged again → episode 1 from step 0
    t = T0 + timedelta(hours=4)
    _, out = engine.step(s, ev(t, 3, "unacknowledged", "alarm-updated"), t)
    assert names(out) == [("pgu", 0, 0, "escalation"), ("ana-sms", 0, 0, "escalation")]
    assert {n.episode for n in out} == {1}
    first = engine.step(EscalationState(), ev(T0, 1), T0)[1]
    assert {n.id for n in out}.isdisjoint({n.id for n in first})


def test_replayed_events_and_late_ticks(engine):
    s = EscalationState()
    a = engine.step(s, ev(T0, 1), T0)[1]
    assert engine.step(s, ev(T0, 1), T0)[1] == []  # the same event again (at-least-once)
    assert a
    # worker down for an hour: the step-2 first message and only the latest repeat are sent, once
    _, out = engine.step(s, TICK, T0 + timedelta(hours=1))
    assert names(out) == [
        ("chefe-sms", 1, 0, "escalation"),
        ("sala-email", 1, 0, "escalation"),
        ("chefe-sms", 1, 2, "escalation"),
        ("sala-email", 1, 2, "escalation"),
    ]
    assert [n.due for n in out][::2] == ["2026-03-02T10:05:00Z", "2026-03-02T10:25:00Z"]


def test_event_time_orders_an_ack_before_a_timer_that_the_clock_has_passed(engine):
    s = EscalationState()
    engine.step(s, ev(T0, 1), T0)
    # the ack happened at 10:04 but reaches us at 10:06 (lag): step 2 (due 10:05) must not fire
    _, out = engine.step(
        s, ev(T0 + timedelta(minutes=4), 2, "acknowledged", "acknowledged"), T0 + timedelta(minutes=6)
    )
    assert out == []
    assert engine.step(s, TICK, T0 + timedelta(minutes=6))[1] == []


def test_schedules_business_hours_holidays_and_rotation_in_lisbon_time(engine):
    pol = engine.config.policies["default"]
    # Monday 10:00 Lisbon: in hours → sala-email; 18:30 → piquete-email
    assert engine.resolve_targets(pol, 1, T0) == ["chefe-sms", "sala-email"]
    assert engine.resolve_targets(pol, 1, T0.replace(hour=18, minute=30)) == ["chefe-sms", "piquete-email"]
    # summer time: 08:30 UTC on 2026-04-01 is 09:30 WEST → in hours (it would not be in UTC)
    assert engine.resolve_targets(pol, 1, datetime(2026, 4, 1, 8, 30, tzinfo=UTC))[1] == "sala-email"
    assert engine.resolve_targets(pol, 1, datetime(2026, 4, 1, 7, 30, tzinfo=UTC))[1] == "piquete-email"
    # 25 de Abril is a holiday (a Saturday in 2026 anyway), Saturday is out of hours
    assert engine.resolve_targets(pol, 1, datetime(2026, 4, 25, 11, 0, tzinfo=UTC))[1] == "piquete-email"
    # rotation: ana from Monday 2 March 09:00 local, rui from Monday 9 March 09:00
    assert engine.resolve_targets(pol, 0, datetime(2026, 3, 9, 8, 59, tzinfo=UTC)) == ["pgu", "ana-sms"]
    assert engine.resolve_targets(pol, 0, datetime(2026, 3, 9, 9, 0, tzinfo=UTC)) == ["pgu", "rui-sms"]
    assert engine.resolve_targets(pol, 0, datetime(2026, 3, 16, 9, 0, tzinfo=UTC)) == ["pgu", "ana-sms"]


def test_routes_by_label_and_a_severity_rise_switches_policy(engine):
    s = EscalationState()
    _, out = engine.step(s, ev(T0, 1, severity="low"), T0)
    assert out == [] and "inc-1" not in s.escalations  # no route for low
    _, out = engine.step(s, ev(T0 + timedelta(minutes=1), 2, severity="high", change="severity-changed"), T0)
    assert {n.policy for n in out} == {"default"}
    t = T0 + timedelta(minutes=3)
    _, out = engine.step(s, ev(t, 3, severity="critical", change="severity-changed"), t)
    assert names(out) == [
        ("pgu", 0, 0, "escalation"),
        ("ana-sms", 0, 0, "escalation"),
        ("chefe-sms", 0, 0, "escalation"),
    ]
    assert {(n.policy, n.episode) for n in out} == {("hydro-critical", 1)}
    # critical without team=hydro stays on the default policy
    _, out = engine.step(EscalationState(), ev(T0, 1, severity="critical", labels={"team": "air"}), T0)
    assert {n.policy for n in out} == {"default"}


def test_snapshot_restore_mid_escalation_continues_identically(engine):
    s = EscalationState()
    engine.step(s, ev(T0, 1), T0)
    engine.step(s, ev(T0, 1, incident="inc-2"), T0)
    engine.step(s, TICK, T0 + timedelta(minutes=6))
    blob = s.snapshot()
    r = EscalationState.restore(blob)
    assert r.snapshot() == blob
    later = [T0 + timedelta(minutes=m) for m in (10, 16, 26, 40)]
    a = [n.to_dict() for t in later for n in engine.step(s, TICK, t)[1]]
    b = [n.to_dict() for t in later for n in engine.step(r, TICK, t)[1]]
    assert a == b and len(a) == 8


class Recorder(Channel):
    """An in-memory channel: the escalation scenario checks engine + pipeline + log together."""

    kind = "test"

    def __init__(self, name: str, sent: list[tuple[str, str]], fail: int = 0):
        super().__init__(name, ChannelContext())
        self.sent, self.fail = sent, fail

    async def send(self, n: Notification) -> DeliveryResult:
        if self.fail:
            self.fail -= 1
            return DeliveryResult("retryable", error="HTTP 503")
        self.sent.append((self.name, n.id))
        return DeliveryResult("delivered")


async def test_escalation_scenario_delivery_records(engine, tmp_path):
    clock = {"t": T0.timestamp()}

    async def fake_sleep(seconds: float) -> None:
        clock["t"] += seconds

    sent: list[tuple[str, str]] = []
    channels = {
        name: Recorder(name, sent, fail=1 if name == "chefe-sms" else 0) for name in engine.config.targets
    }
    log = SQLiteDeliveryLog(tmp_path / "d.sqlite")
    notifier = Notifier(engine.config, log, channels=channels, clock=lambda: clock["t"], sleep=fake_sleep)
    await notifier.start()
    s = EscalationState()
    timeline = [(T0, ev(T0, 1))] + [(T0 + timedelta(minutes=m), TICK) for m in range(1, 30)]
    timeline.insert(
        17,
        (
            T0 + timedelta(minutes=16, seconds=30),
            ev(T0 + timedelta(minutes=16, seconds=30), 2, "acknowledged", "acknowledged"),
        ),
    )
    for t, item in timeline:
        clock["t"] = max(clock["t"], t.timestamp())
        _, out = engine.step(s, item, t)
        await notifier.deliver(out)
    await notifier.aclose()
    rows = [(d.target, d.step, d.repeat, d.status, d.attempts) for d in log.deliveries("inc-1")]
    assert rows == [
        ("pgu", 0, 0, "delivered", 1),
        ("ana-sms", 0, 0, "delivered", 1),
        ("chefe-sms", 1, 0, "delivered", 2),
        ("sala-email", 1, 0, "delivered", 1),  # chefe: 503, then OK
        ("chefe-sms", 1, 1, "delivered", 1),
        ("sala-email", 1, 1, "delivered", 1),
        # acknowledged at 10:16:30: the 10:25 repeat is never sent
    ]
    assert len(sent) == 6 and len(set(sent)) == 6
    first = [
        a
        for a in log.attempts("inc-1")
        if a.target == "chefe-sms" and a.attempt == 1 and a.status == "retryable"
    ]
    assert first and first[0].error == "HTTP 503"


# --- properties -----------------------------------------------------------------------------

STATES = ["unacknowledged", "acknowledged", "returned-unacknowledged", "shelved", "suppressed", "closed"]
event_st = st.tuples(
    st.integers(0, 40),  # minutes since the previous input
    st.sampled_from(["tick", "event"]),
    st.sampled_from(STATES),
    st.sampled_from(["low", "medium", "high", "critical"]),
    st.booleans(),  # active
    st.sampled_from(["inc-a", "inc-b"]),
)


def run(engine: EscalationEngine, script, tick_every: int | None, snap_at: int | None = None):
    s, t, versions, out, last_state = EscalationState(), T0, {"inc-a": 0, "inc-b": 0}, [], {}
    for i, (dm, what, state, sev, active, inc) in enumerate(script):
        if snap_at == i:
            s = EscalationState.restore(s.snapshot())
        nt = t + timedelta(minutes=dm)
        if tick_every:
            k = t + timedelta(minutes=tick_every)
            while k < nt:
                out += engine.step(s, TICK, k)[1]
                k += timedelta(minutes=tick_every)
        t = nt
        if what == "tick":
            out += engine.step(s, TICK, t)[1]
        else:
            versions[inc] += 1
            notes = engine.step(s, ev(t, versions[inc], state, "x", sev, active, incident=inc), t)[1]
            out += notes
            last_state[inc] = (state, active)
    out += engine.step(s, TICK, t + timedelta(days=1))[1]
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(event_st, max_size=25), st.integers(0, 25))
def test_property_no_duplicates_bounded_repeats_and_deterministic(engine, script, snap_at):
    out = run(engine, script, tick_every=1)
    ids = [n.id for n in out]
    assert len(ids) == len(set(ids))  # a notification id is never emitted twice
    for n in out:
        if n.kind == "escalation":
            pol = engine.config.policies[n.policy]
            assert 0 <= n.step < len(pol.steps) and n.repeat <= pol.steps[n.step].repeat
    # restoring from a snapshot at any point changes nothing
    assert [n.to_dict() for n in run(engine, script, 1, snap_at)] == [n.to_dict() for n in out]
    # coarser timers may collapse repeats, never invent or lose a step's first message
    coarse = run(engine, script, tick_every=None)
    assert {n.id for n in coarse} <= set(ids)
    firsts = {n.id for n in out if n.repeat == 0}
    assert {n.id for n in coarse if n.repeat == 0} == firsts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(event_st, max_size=25))
def test_property_nothing_escalates_while_stopped(engine, script):
    """After an event that stops the escalation (ack, shelve, inactive...), no escalation
    message for that incident until an event makes it active and unacknowledged again."""
    s, t, versions, stopped = EscalationState(), T0, {"inc-a": 0, "inc-b": 0}, {"inc-a": True, "inc-b": True}
    for dm, what, state, sev, active, inc in script:
        t = t + timedelta(minutes=dm)
        if what == "tick":
            out = engine.step(s, TICK, t)[1]
        else:
            versions[inc] += 1
            out = engine.step(s, ev(t, versions[inc], state, "x", sev, active, incident=inc), t)[1]
            before = dict(stopped)
            stopped[inc] = not (active and state == "unacknowledged")
            # timers that fell due before this event fired first, under the previous state
            fired, out = (
                [n for n in out if n.due < format_time(t)],
                [n for n in out if n.due >= format_time(t)],
            )
            assert all(not before[n.incident] for n in fired if n.kind == "escalation")
        for n in out:
            if n.kind == "escalation":
                assert not stopped[n.incident], (n, state)
            else:
                assert n.snapshot.state == "closed"


def test_a_policy_can_keep_reminding_after_acknowledgement_until_closed():
    cfg = load_config_text(
        CONFIG.replace(
            "  hydro-critical:\n", "  hydro-critical:\n    stop_on: [shelved, suppressed, closed]\n"
        ),
        "escalation.yaml",
    )
    engine, s = EscalationEngine(cfg), EscalationState()
    engine.step(s, ev(T0, 1, severity="critical"), T0)
    t = T0 + timedelta(minutes=1)
    engine.step(s, ev(t, 2, "acknowledged", "acknowledged", severity="critical"), t)
    _, out = engine.step(s, TICK, T0 + timedelta(minutes=2))
    assert [(n.target, n.repeat) for n in out] == [("pgu", 1), ("ana-sms", 1), ("chefe-sms", 1)]
    with pytest.raises(Exception, match="stop_on cannot contain unacknowledged"):
        load_config_text(
            CONFIG.replace("  hydro-critical:\n", "  hydro-critical:\n    stop_on: [unacknowledged]\n")
        )


def test_restoring_a_snapshot_under_a_changed_configuration(engine):
    s = EscalationState()
    engine.step(s, ev(T0, 1), T0)  # running on "default"
    blob = s.snapshot()
    # "default" renamed to "geral" and reduced to one step: the timer finds no policy and stops
    changed = EscalationEngine(
        load_config_text(
            CONFIG.replace("policy: default", "policy: geral").replace("  default:\n", "  geral:\n")
        )
    )
    r = EscalationState.restore(blob)
    assert changed.step(r, TICK, T0 + timedelta(minutes=5))[1] == []
    assert r.escalations["inc-1"].status == "stopped"
    # the next event re-routes it to the policy that now matches, as a new episode
    t = T0 + timedelta(minutes=6)
    _, out = changed.step(r, ev(t, 2, change="alarm-updated"), t)
    assert {(n.policy, n.episode, n.step) for n in out} == {("geral", 1, 0)}


def test_notifications_round_trip_through_json_for_the_notifications_topic(engine):
    import orjson

    _, out = engine.step(EscalationState(), ev(T0, 1), T0)
    for n in out:
        back = Notification.from_dict(orjson.loads(n.to_json()))
        assert back == n and back.id == n.id
