"""Hypothesis stateful test: random alarm / command / tick / redelivery / restart sequences never break
the invariants, a manager restored from a snapshot at any point (also one written before one-shot
shelving) behaves exactly like one that never stopped, and a manager rebuilt by replaying the
inputs from the start (the commands log and the alarms) has the same state and wrote the same
outputs. Shelves are for a duration or until their alarms clear (one-shot)."""

from __future__ import annotations

import zlib
from typing import get_args

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import event as statistic
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from atalaia.incidents import snapshot
from atalaia.incidents.config import ActionName, IncidentConfig, RoleName
from atalaia.incidents.events import CommandReply, IncidentEvent
from atalaia.incidents.manager import IncidentManager
from atalaia.incidents.silences import SilenceEvent
from atalaia.incidents.testing import at_s, transition
from atalaia.rules.alarm import severity_rank
from atalaia.rules.matchers import Matcher, matches_all

SEVERITIES = ["low", "medium", "high", "critical"]
NAME, EVIL = "Rio Tinto - Campanhã", "Rio\r\n\u202eTinto  \u2066x"  # entities' names
ALARMS = [  # (rule, key, labels)
    ("river-level-high", "porto-01", {"parish": "Ribeira", "station": "st-1"}),
    ("rain-intense", "rain-01", {"parish": "Ribeira", "station": "st-1"}),
    ("air-no2", "air-01", {"parish": "Campanha", "station": "st-2"}),
    ("river-level-high", "porto-02", {"parish": "Campanha", "station": "st-2"}),
    ("station-power-failure", "st-1", {"parish": "Ribeira", "station": "st-1"}),
    ("station-power-failure", "st-2", {"parish": "Foz", "station": "st-2"}),
    # correlated by entity: titled by the entity's name when every alarm of it says the same one
    ("tinto-level-high", "urn:x:tinto", {"name": NAME, "station": "st-3"}),
    ("tinto-flow-high", "urn:x:tinto", {"name": NAME, "station": "st-3"}),
    ("tinto-level-high", "urn:x:evil", {"name": EVIL, "station": "st-4"}),
    ("tinto-flow-high", "urn:x:evil", {"name": "Rio Tinto (renamed)", "station": "st-4"}),
]
#: the place a title shows for a name
SHOWN = {NAME: NAME, EVIL: "Rio Tinto x", "Rio Tinto (renamed)": "Rio Tinto (renamed)"}
ACTIONS = list(get_args(ActionName))
ROLES = list(get_args(RoleName))
CONFIG = IncidentConfig.model_validate(
    {
        "correlation": {"window": "5m"},
        "closing": {"after": "2m"},
        "chattering": {"auto_shelve": True, "shelve_for": "3m"},
        "flood": {"threshold": 3, "window": "5m"},
        "inhibit": [
            {
                "source_matchers": ['rule="station-power-failure"'],
                "target_matchers": ['rule!="station-power-failure"'],
                "equal": ["station"],
            }
        ],
        "maintenance": [{"name": "m", "matchers": ['rule="air-no2"'], "start": at_s(600), "end": at_s(1500)}],
    }
)


class IncidentMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.mgr = IncidentManager(CONFIG)
        self.state = self.mgr.initial_state()  # restored from snapshots along the way
        self.shadow = self.mgr.initial_state()  # never interrupted
        self.now = 0.0
        self.sent: list[dict] = []
        self.events: list[IncidentEvent] = []
        self.versions: dict[str, int] = {}
        self.closed: set[str] = set()
        self.commands = 0
        self.replies = 0
        self.inputs: list[tuple[object, str]] = []  # what was fed, with its now: the log to replay
        self.outputs: list[dict] = []  # what the uninterrupted manager wrote

    def feed(self, event) -> list:
        now = at_s(self.now)
        self.state, out = self.mgr.step(self.state, event, now)
        self.shadow, shadow_out = self.mgr.step(self.shadow, event, now)
        assert [o.to_dict() for o in out] == [o.to_dict() for o in shadow_out]
        # what the topic carries (to_json) is what the process sees in memory (to_dict): the live
        # storm test compares the two, and a one-shot field written only to one of them broke it
        assert [orjson.loads(o.to_json()) for o in out] == [o.to_dict() for o in out]
        self.inputs.append((event, now))
        self.outputs.extend(o.to_dict() for o in shadow_out)
        for o in out:
            if isinstance(o, CommandReply):
                self.replies += 1
                continue
            if isinstance(o, SilenceEvent):
                continue
            assert o.version == self.versions.get(o.incident, 0) + 1, "versions go up by one per change"
            assert o.incident not in self.closed, "a closed incident never changes again"
            self.versions[o.incident] = o.version
            assert not (o.state == "closed" and o.active), "closed and active"
            if o.state == "closed":
                self.closed.add(o.incident)
            assert o.actor and o.reason and o.at
            if o.change == "unshelved" or o.shelved_until_clear:  # (--hypothesis-show-statistics)
                statistic(f"{o.change}: {o.reason if o.change == 'unshelved' else 'until clear'}")
            self.events.append(o)
        return out

    @rule(
        dt=st.integers(0, 90),
        which=st.integers(0, len(ALARMS) - 1),
        firing=st.booleans(),
        severity=st.sampled_from(SEVERITIES),
    )
    def alarm(self, dt: int, which: int, firing: bool, severity: str) -> None:
        self.now += dt
        rule_, key, labels = ALARMS[which]
        tr = transition(rule_, key, "firing" if firing else "resolved", self.now, severity=severity, **labels)
        self.sent.append(tr)
        self.feed(tr)

    @precondition(lambda self: self.sent)
    @rule(back=st.integers(1, 5))
    def redeliver(self, back: int) -> None:
        before = len(self.events)
        self.feed(self.sent[-min(back, len(self.sent))])
        assert len(self.events) == before, "a redelivered transition changes nothing"

    @rule(
        action=st.sampled_from(["acknowledge"] * 4 + ACTIONS),
        allowed=st.integers(0, 9),
        pick=st.integers(0, 19),
        minutes=st.integers(1, 20),
        reason=st.sampled_from(["checked on site", "checked on site", ""]),
        behind=st.sampled_from([None, None, 0, 1, 2]),  # the version the operator saw: latest - behind
        until=st.sampled_from([None, None, "clear", "clear-unbounded"]),  # a shelve: one-shot?
    )
    def command(self, action: str, allowed: int, pick: int, minutes: int, reason: str, behind, until) -> None:
        roles = CONFIG.permissions[action]
        role = roles[allowed % len(roles)] if allowed else "viewer"  # mostly a role that may
        open_ = sorted(self.state.incidents)
        closed = sorted(self.closed)
        if pick < 17 and open_:
            incident = open_[pick % len(open_)]
        elif pick < 19 and closed:
            incident = closed[pick % len(closed)]
        else:
            incident = "unknown"
        self.commands += 1
        seen = {} if behind is None else {"version": max(1, self.versions.get(incident, 1) - behind)}
        cmd = {
            "id": f"c{self.commands}",
            "incident": incident,
            "action": action,
            "actor": "ana",
            "role": role,
            "reason": reason,
            "duration": minutes * 60,
            **seen,
        }
        if action == "shelve" and until is not None:
            cmd["until"] = "clear"
            if until == "clear-unbounded":  # at most shelving.max
                del cmd["duration"]
        inc = self.state.incidents.get(incident)
        firing = inc is not None and inc.active
        reply = next(o for o in self.feed(cmd) if isinstance(o, CommandReply))
        if "until" in cmd and reply.accepted:
            assert firing, "a one-shot shelve waits for firing alarms: refused when none fires"

    @rule(pick=st.integers(0, 9), minutes=st.sampled_from([None, 5, 20]), dt=st.integers(0, 90))
    def shelve_until_clear(self, pick: int, minutes: int | None, dt: int) -> None:
        """An operator shelves a firing incident until its alarms clear (at most ``minutes``, or
        shelving.max); the random commands above try it on any incident, in any state."""
        self.now += dt
        self.feed(None)  # (time passed: what is due by now happens first, as in the other rules)
        firing = sorted(i.id for i in self.state.incidents.values() if i.active and not i.overlay)
        if not firing:
            return
        self.commands += 1
        bound = {} if minutes is None else {"duration": f"{minutes}m"}
        self.feed(
            {"id": f"c{self.commands}", "incident": firing[pick % len(firing)], "action": "shelve",
             "actor": "ana", "role": "operator", "reason": "crew on site", "until": "clear", **bound}
        )  # fmt: skip

    @rule(pick=st.integers(0, 9), dt=st.integers(0, 90))
    def clear_an_incident(self, pick: int, dt: int) -> None:
        """Every alarm of one open incident returns to normal (one after the other)."""
        self.now += dt
        self.feed(None)  # (time passed: what is due by now happens first, as in the other rules)
        if not self.state.incidents:  # (it closed meanwhile)
            return
        inc = self.state.incidents[sorted(self.state.incidents)[pick % len(self.state.incidents)]]
        for rule_, key, labels in ALARMS:
            rec = inc.alarms.get(f"{rule_}\x1f{key}")
            if rec is not None and rec.firing:
                tr = transition(rule_, key, "resolved", self.now, severity=rec.severity, **labels)
                self.sent.append(tr)
                self.feed(tr)

    @rule(
        parish=st.sampled_from(["Ribeira", "Campanha", "Foz"]),
        rule_=st.sampled_from(['rule=~"river-.*"', 'rule!="air-no2"', 'severity="high"']),
        later=st.integers(0, 600),
        minutes=st.integers(1, 30),
    )
    def silence(self, parish: str, rule_: str, later: int, minutes: int) -> None:
        self.commands += 1
        self.feed(
            {
                "id": f"c{self.commands}",
                "action": "silence",
                "actor": "rui",
                "role": "engineer",
                "matchers": [f'parish="{parish}"', rule_],
                "comment": "works",
                "start": at_s(self.now + later),
                "duration": minutes * 60,
            }
        )

    @rule(pick=st.integers(0, 5))
    def expire_silence(self, pick: int) -> None:
        ids = [*sorted(self.state.silences), "s-unknown"]
        self.commands += 1
        self.feed(
            {
                "id": f"c{self.commands}",
                "action": "expire-silence",
                "silence": ids[pick % len(ids)],
                "actor": "ana",
                "role": "operator",
            }
        )

    @invariant()
    def active_silences_suppress_what_they_match(self) -> None:
        if not hasattr(self, "mgr") or self.state.clock is None:
            return
        for sil in self.state.silences.values():
            if not sil.active_at(self.state.clock):
                continue
            matchers = tuple(Matcher.parse(m) for m in sil.matchers)
            for inc in self.state.incidents.values():
                for a in inc.alarms.values():
                    if matches_all(matchers, a.labels):
                        assert a.suppressed and f"silenced by {sil.id}" in a.suppressed, (sil, a.suppressed)

    @rule(dt=st.integers(1, 900))
    def tick(self, dt: int) -> None:
        self.now += dt
        self.feed(None)

    @rule(old=st.booleans())
    def restart(self, old: bool) -> None:
        blob = self.mgr.snapshot(self.state)
        if old and not any(i.shelve_until_clear for i in self.state.incidents.values()):
            # a checkpoint written before one-shot shelving: no shelve_until_clear at all
            d = orjson.loads(zlib.decompress(blob[len(snapshot.MAGIC) :]))
            for inc in d["incidents"].values():
                del inc["shelve_until_clear"]
            blob = snapshot.MAGIC + zlib.compress(orjson.dumps(d))
        self.state = self.mgr.restore(blob)

    @precondition(lambda self: self.inputs)
    @rule()
    def replay(self) -> None:
        """A new manager fed every input again from the start (the commands log and the alarms,
        each at the now it was taken) is the uninterrupted one: same state, same outputs."""
        mgr = IncidentManager(CONFIG)
        state, outputs = mgr.initial_state(), []
        for event, now in self.inputs:
            state, out = mgr.step(state, event, now)
            outputs.extend(o.to_dict() for o in out)
        assert outputs == self.outputs
        assert mgr.snapshot(state) == self.mgr.snapshot(self.shadow)

    @invariant()
    def a_one_shot_shelve_lasts_only_while_an_alarm_fires(self) -> None:
        if not hasattr(self, "mgr"):
            return
        for inc in self.state.incidents.values():
            if inc.shelve_until_clear:
                assert inc.overlay == "shelved" and inc.active and inc.shelved_until is not None
                assert inc.shelved_until > (self.state.clock or 0)

    @invariant()
    def every_command_has_one_reply(self) -> None:
        if hasattr(self, "mgr"):
            assert self.replies == self.commands

    @invariant()
    def open_incidents_are_consistent(self) -> None:
        if not hasattr(self, "mgr"):
            return
        assert self.mgr.snapshot(self.state) == self.mgr.snapshot(self.shadow), "restored state diverged"
        for inc in self.state.incidents.values():
            assert inc.closed_at is None
            tail = min(inc.version, CONFIG.audit_in_state)
            assert [a.version for a in inc.audit] == list(range(inc.version - tail + 1, inc.version + 1)), (
                "audit"
            )
            assert all(a.actor and a.reason for a in inc.audit)
            annunciated = [
                severity_rank(a.severity) for a in inc.alarms.values() if a.firing and a.suppressed is None
            ]
            firing = [severity_rank(a.severity) for a in inc.alarms.values() if a.firing]
            if annunciated:
                assert severity_rank(inc.severity) == max(annunciated), "severity = max of active alarms"
            elif firing:
                assert severity_rank(inc.severity) == max(firing)
            firing_counts = [0] * len(inc.firing)
            suppressed_counts = [0] * len(inc.firing)
            for a in inc.alarms.values():
                if a.firing:
                    (firing_counts if a.suppressed is None else suppressed_counts)[
                        severity_rank(a.severity) + 1
                    ] += 1
            assert (inc.firing, inc.firing_suppressed) == (firing_counts, suppressed_counts), "running counts"
            assert inc.n_suppressed == sum(a.suppressed is not None for a in inc.alarms.values())
            # the per-rule firing counts behind the title's lead: exactly the alarms' (a rule's
            # zeros may stay), and the title leads with the most severe firing alarm's rule
            per_rule: dict[str, list[int]] = {}
            for a in inc.alarms.values():
                if a.firing:
                    per = per_rule.setdefault(a.rule, [0] * (2 * len(inc.firing)))
                    per[severity_rank(a.severity) + 1 + (0 if a.suppressed is None else len(inc.firing))] += 1
            kept = {r: n for r, n in inc.rule_firing.items() if any(n)}
            assert kept == per_rule, ("per-rule counts", kept, per_rule)
            lead = inc.lead_rule()
            if lead is not None and inc.title:
                assert inc.title.startswith(f"{lead} +") or inc.title.startswith(f"{lead} — "), (
                    inc.title,
                    lead,
                )
            if "entity" in inc.correlation:  # the entity's name where all its alarms say one
                names = {a.labels.get("name") for a in inc.alarms.values()}
                (name,) = names if len(names) == 1 else {None}
                where = SHOWN[name] if name is not None else inc.correlation["entity"]
                assert inc.title.endswith(f" — {where}"), (inc.title, names)
            for ak in inc.alarms:
                assert self.state.alarm_home[ak] == inc.id
            if inc.state in ("unacknowledged", "acknowledged"):
                assert inc.annunciated_active
        assert len(self.state.alarm_home) == sum(len(i.alarms) for i in self.state.incidents.values())


IncidentMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestIncidentMachine = IncidentMachine.TestCase
