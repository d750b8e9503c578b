"""The incident lifecycle against a small reference model of the table in incidents/README.md:
random sequences of alarm activations, severity changes, clears, operator commands (by roles that
may; a shelve for a duration or until its alarms clear), time passing and their station's failure (which inhibits both), on two alarms of one
correlation key; after every input the manager's
incident (or its absence) has the state, severity and acknowledgement the model says, and each
command is accepted exactly when the model accepts it."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from atalaia.incidents.config import IncidentConfig
from atalaia.incidents.events import CommandReply
from atalaia.incidents.testing import Driver, transition
from atalaia.rules.alarm import SEVERITIES

CONFIG = IncidentConfig.model_validate(
    {
        "correlation": {"window": "366d"},
        "closing": {"after": 0},
        "chattering": {"transitions": 1000},
        "inhibit": [
            {
                "source_matchers": ['rule="station-comms-failure"'],
                "target_matchers": ['rule!="station-comms-failure"'],
                "equal": ["station"],
            }
        ],
    }
)
ALARMS = {"river": ("river-level-high", "porto-01"), "rain": ("rain-intense", "rain-01")}
OVERLAYS = {"shelve": "shelved", "suppress": "suppressed", "out-of-service": "out-of-service"}
ENDS = {"unshelve": "shelved", "unsuppress": "suppressed", "return-to-service": "out-of-service"}


def rank(severity: str) -> int:
    return SEVERITIES.index(severity)


@dataclass
class Model:
    """One incident as the README's table has it (closing at once); ``inhibited``: its station's
    failure suppresses both alarms (the derived "suppressed" state)."""

    open: bool = False
    overlay: str | None = None
    shelved_until: float | None = None
    until_clear: bool = False  # a one-shot shelve: ends when no alarm fires (or at shelved_until)
    overlay_severity: str | None = None
    acked: bool = True
    firing: dict[str, str] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)  # alarms of the open incident
    annunciated: set[str] = field(default_factory=set)
    severity: str = ""
    inhibited: bool = False

    @property
    def state(self) -> str:
        if not self.open:
            return "closed"
        if self.overlay:
            return self.overlay
        if self.inhibited and self.known:
            return "suppressed"
        if self.firing:
            return "acknowledged" if self.acked else "unacknowledged"
        return "normal" if self.acked else "returned-unacknowledged"

    def annunciate(self) -> None:
        if self.overlay is None and not self.inhibited:
            for a in self.firing:
                if a not in self.annunciated:
                    self.annunciated.add(a)
                    self.acked = False

    def settle(self, before: str) -> None:
        self.annunciate()
        if self.firing:
            self.severity = max(self.firing.values(), key=rank)
        if self.overlay is None and self.firing and not self.inhibited and rank(self.severity) > rank(before):
            self.acked = False
        self.maybe_close()

    def maybe_close(self) -> None:
        if self.open and self.overlay is None and not self.firing and self.acked:
            inh = self.inhibited
            self.__init__()  # closed: the next activation opens a new incident
            self.inhibited = inh

    def fire(self, alarm: str, severity: str) -> None:
        if not self.open:
            self.open, self.severity = True, severity
        before = self.severity
        self.known.add(alarm)
        if alarm not in self.firing:
            self.annunciated.discard(alarm)
        self.firing[alarm] = severity
        self.settle(before)

    def clear(self, alarm: str) -> None:
        if alarm not in self.known:
            return  # no open incident holds it: ignored
        if alarm in self.firing:
            del self.firing[alarm]
            self.annunciated.discard(alarm)
        self.settle(self.severity)
        if self.until_clear and not self.firing:  # its last alarm returned to normal
            self.end_overlay()

    def end_overlay(self) -> None:
        before = self.overlay_severity
        self.overlay = self.shelved_until = self.overlay_severity = None
        self.until_clear = False
        self.annunciate()
        if self.firing and not self.inhibited and before is not None and rank(self.severity) > rank(before):
            self.acked = False
        self.maybe_close()

    def command(self, action: str, now: float, minutes: int | None) -> bool:
        """Apply ``action``; whether it is accepted (``shelve-until-clear``: a one-shot shelve, for
        at most ``minutes``, or shelving.max (8 h) when None)."""
        if not self.open:
            return False
        if action == ONE_SHOT:
            if self.overlay or not self.firing:  # (an inhibited alarm fires too)
                return False
            self.overlay, self.overlay_severity, self.until_clear = "shelved", self.severity, True
            self.shelved_until = now + (8 * 3600 if minutes is None else minutes * 60)
            return True
        assert minutes is not None
        if action == "acknowledge":
            if self.overlay or self.acked:
                return False
            self.acked = True
            self.maybe_close()
        elif action in OVERLAYS:
            if self.overlay:
                return False
            self.overlay, self.overlay_severity = OVERLAYS[action], self.severity
            if action == "shelve":
                self.shelved_until = now + minutes * 60
        elif action in ENDS:
            if self.overlay != ENDS[action]:
                return False
            self.end_overlay()
        elif action == "close":
            if self.firing:
                return False
            inh = self.inhibited
            self.__init__()
            self.inhibited = inh
        return True  # comment, assign

    def station(self, firing: bool) -> None:
        if firing == self.inhibited:
            return
        self.inhibited = firing
        if self.open and self.known:
            self.settle(self.severity)

    def tick(self, now: float) -> None:
        if self.shelved_until is not None and self.shelved_until <= now:
            self.end_overlay()


ROLE = {a: roles[0] for a, roles in CONFIG.permissions.items()}
ONE_SHOT = "shelve-until-clear"  # shelve with until: "clear"
ROLE[ONE_SHOT] = ROLE["shelve"]
ACTIONS = ["acknowledge", *OVERLAYS, *ENDS, "close", "comment", "assign", ONE_SHOT, ONE_SHOT]


class LifecycleAgainstModel(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.d = Driver(CONFIG)
        self.m = Model()
        self.t = 0.0
        self.incident: str | None = None
        self.n = 0

    def later(self, seconds: int) -> float:
        self.t += seconds
        return self.t

    def feed_alarm(self, alarm: str, state: str, severity: str, dt: int) -> None:
        rule, key = ALARMS[alarm]
        out = self.d.step(
            transition(rule, key, state, self.later(dt), severity=severity, parish="Ribeira", station="s1"),
            self.t,
        )
        for o in out:
            if o.change == "opened":
                self.incident = o.incident

    @rule(alarm=st.sampled_from(list(ALARMS)), severity=st.sampled_from(["medium", "high", "critical"]),
          dt=st.integers(1, 600))  # fmt: skip
    def fire(self, alarm: str, severity: str, dt: int) -> None:
        self.m.tick(self.t + dt)
        self.feed_alarm(alarm, "firing", severity, dt)
        self.m.fire(alarm, severity)

    @rule(alarm=st.sampled_from(list(ALARMS)), dt=st.integers(1, 600))
    def clear(self, alarm: str, dt: int) -> None:
        self.m.tick(self.t + dt)
        self.feed_alarm(alarm, "resolved", "medium", dt)
        self.m.clear(alarm)

    @rule(action=st.sampled_from(ACTIONS), minutes=st.integers(1, 60), bounded=st.booleans(),
          dt=st.integers(1, 600))  # fmt: skip
    def command(self, action: str, minutes: int, bounded: bool, dt: int) -> None:
        now = self.later(dt)
        self.m.tick(now)
        self.n += 1
        cmd = {"id": f"c{self.n}", "incident": self.incident or "none", "action": action, "actor": "ana",
               "role": ROLE[action], "reason": "r", "duration": minutes * 60, "assignee": "rui"}  # fmt: skip
        if action == ONE_SHOT:
            cmd.update(action="shelve", until="clear")
            if not bounded:  # no duration: at most shelving.max
                del cmd["duration"]
        out = self.d.step(cmd, now)
        reply = next(o for o in out if isinstance(o, CommandReply))
        expected = self.m.command(action, now, minutes if action != ONE_SHOT or bounded else None)
        assert reply.accepted == expected, (action, self.m.state, reply.reason)

    @rule(action=st.sampled_from([ONE_SHOT, ONE_SHOT, "acknowledge", "unshelve", "shelve"]),
          minutes=st.integers(1, 60), bounded=st.booleans(), dt=st.integers(1, 120))  # fmt: skip
    def command_the_open_incident(self, action: str, minutes: int, bounded: bool, dt: int) -> None:
        """(The incident is closed most of the time: commands on an open one, one-shot shelves
        first, in the states it is in while it is open; a river alarm opens one if none is.)"""
        if not self.m.open:
            self.fire("river", "high", 1)
        self.command(action, minutes, bounded, dt)

    @rule(firing=st.booleans(), dt=st.integers(1, 600))
    def station(self, firing: bool, dt: int) -> None:
        self.m.tick(self.t + dt)
        now = self.later(dt)
        self.d.step(
            transition(
                "station-comms-failure",
                "s1",
                "firing" if firing else "resolved",
                now,
                parish="Foz",
                station="s1",
            ),
            now,
        )
        self.m.station(firing)

    @rule(dt=st.sampled_from([1, 60, 600, 3600, 8 * 3600]))  # (8 h: shelving.max, a one-shot's bound)
    def wait_long(self, dt: int) -> None:
        self.wait(dt)

    @rule(dt=st.integers(1, 3600))
    def wait(self, dt: int) -> None:
        now = self.later(dt)
        self.m.tick(now)
        self.d.tick(now)

    @invariant()
    def the_incident_is_as_the_model_says(self) -> None:
        open_ = [i for i in self.d.state.incidents.values() if i.correlation.get("parish") == "Ribeira"]
        if not self.m.open:
            assert open_ == [], [i.state for i in open_]
            return
        assert len(open_) == 1
        inc = open_[0]
        assert inc.id == self.incident
        assert inc.state == self.m.state
        assert inc.severity == self.m.severity
        assert inc.acked == self.m.acked
        assert inc.shelve_until_clear == self.m.until_clear
        assert {k.split("\x1f")[0] for k, a in inc.alarms.items() if a.firing} == {
            ALARMS[a][0] for a in self.m.firing
        }


LifecycleAgainstModel.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_lifecycle_against_the_reference_model = LifecycleAgainstModel.TestCase
