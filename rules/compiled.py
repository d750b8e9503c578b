"""Compiled rules: one evaluator per rule kind, holding that rule's state per alarm key.

Every method is pure with respect to the outside world: event times come in as arguments (float
seconds since the epoch), transitions go out by appending to ``out``. Per (rule, key) state is a
small slotted object that :meth:`dump`/``load`` turn into JSON-able lists for snapshots.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from atalaia.rules.aggregates import AGGREGATES
from atalaia.rules.alarm import AlarmTransition
from atalaia.rules.loader import LoadedRule
from atalaia.rules.schema import Level
from atalaia.rules.templates import Template
from atalaia.streams.observation import format_time

Scorer = Callable[[str, str, str, datetime, float], float | None]
NEG_INF = float("-inf")
INACTIVE, PENDING, FIRING = 0, 1, 2
_STATE_NAMES = ("inactive", "pending", "firing")


def fingerprint(loaded: LoadedRule) -> str:
    """What decides evaluation (not labels, annotations, description): equal = state can be kept."""
    body = loaded.rule.model_dump(
        mode="json", by_alias=True, exclude={"labels", "annotations", "description"}
    )
    return hashlib.blake2b(orjson.dumps(body, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()


class CompiledLevel:
    __slots__ = ("above", "clear", "for_", "severity")

    def __init__(self, level: Level) -> None:
        self.severity = level.severity
        self.above = level.above is not None
        self.for_ = level.for_
        if self.above:
            self.clear = (level.above, level.clear_below if level.clear_below is not None else level.above)
        else:
            assert level.below is not None
            self.clear = (level.below, level.clear_above if level.clear_above is not None else level.below)

    def holds(self, v: float, firing: bool) -> bool:
        """Strict threshold; a firing level with hysteresis holds until the value passes the clear level."""
        limit, clear = self.clear
        if self.above:
            return v > limit or (firing and v >= clear and clear != limit)
        return v < limit or (firing and v <= clear and clear != limit)


class CompiledRule:
    """What every kind shares: selection, key, templates, state per key."""

    kind = "base"

    def __init__(self, loaded: LoadedRule, position: int) -> None:
        rule = loaded.rule
        self.loaded = loaded
        self.id = rule.id
        self.group = loaded.group
        self.position = position
        self.fingerprint = fingerprint(loaded)
        self.type = rule.select.type
        self.attribute = rule.select.attribute
        self.where = tuple(
            (name, frozenset([allowed] if isinstance(allowed, str) else allowed))
            for name, allowed in rule.select.where.items()
        )
        self.key_fields = tuple(rule.key)
        self.key_is_entity = self.key_fields == ("entity",)
        self.simple_key = self.key_is_entity and not self.where  # key = entity, no filter: no call needed
        self.labels = {k: Template(v) for k, v in rule.labels.items()}
        self.annotations = {k: Template(v) for k, v in rule.annotations.items()}
        self.states: dict[str, Any] = {}

    # ------------------------------------------------------------------ selection
    def key_of(self, obs: dict[str, Any]) -> str | None:
        """The alarm key of an observation this rule selects, or None when the where filter fails or a key
        label is missing."""
        labels = obs.get("labels") or {}
        for name, allowed in self.where:
            got = obs.get(name) if name in ("entity", "type") else labels.get(name)
            if got not in allowed:
                return None
        if self.key_is_entity:
            return obs["entity"]
        parts = []
        for name in self.key_fields:
            got = obs.get(name) if name in ("entity", "type") else labels.get(name)
            if got is None:
                return None
            parts.append(str(got))
        return parts[0] if len(parts) == 1 else "|".join(parts)

    # ------------------------------------------------------------------ output
    def transition(
        self,
        at: float,
        at_text: str | None,
        key: str,
        state: str,
        severity: str,
        value: float | None,
        since: float,
        obs: dict[str, Any] | None,
    ) -> AlarmTransition:
        obs = obs or {}
        obs_labels = obs.get("labels") or {}
        entity = obs.get("entity") or (key if self.key_is_entity else None)
        variables = {
            "entity": entity,
            "key": key,
            "value": value,
            "severity": severity,
            "labels": obs_labels,
            "rule": self.id,
            "type": obs.get("type", self.type),
            "attributes": obs.get("attributes") or {},
            "state": state,
        }
        labels = dict(obs_labels)
        labels.update({k: t.render(variables) for k, t in self.labels.items()})
        return AlarmTransition(
            at=at_text or format_time(datetime.fromtimestamp(at, UTC)),
            rule=self.id,
            key=key,
            state=state,  # type: ignore[arg-type]
            severity=severity,
            value=value,
            group=self.group,
            entity=entity,
            type=obs.get("type", self.type),
            since=format_time(datetime.fromtimestamp(since, UTC)),
            labels=labels,
            annotations={k: t.render(variables) for k, t in self.annotations.items()},
            location=obs.get("location"),
        )

    def active(self) -> list[dict[str, Any]]:  # pragma: no cover - overridden
        raise NotImplementedError


# ====================================================================== thresholds and detectors
class AlarmState:
    """State of one (threshold rule, key). ``levels[i]`` = None or [active_since, fired, keep_firing_since]."""

    __slots__ = ("levels", "obs", "sev", "since", "state", "t", "value", "window")

    def __init__(self) -> None:
        self.t = NEG_INF  # last evaluation time
        self.levels: list[list[Any] | None] | None = None
        self.state = INACTIVE
        self.sev = -1
        self.since = NEG_INF
        self.value: float | None = None
        self.window: tuple[list[float], list[float]] | None = None  # (times, values) sorted by time
        self.obs: dict[str, Any] | None = None  # last observation (context for keep_firing_for/reload lines)

    def dump(self) -> list[Any]:
        return [
            self.t,
            self.levels,
            self.state,
            self.sev,
            self.since,
            self.value,
            [list(x) for x in self.window] if self.window else None,
            _obs_context(self.obs),
        ]

    @classmethod
    def load(cls, d: list[Any]) -> AlarmState:
        s = cls()
        s.t, s.levels, s.state, s.sev, s.since, s.value, window, s.obs = d
        s.window = (window[0], window[1]) if window else None
        return s


def _obs_context(obs: dict[str, Any] | None) -> dict[str, Any] | None:
    if not obs:
        return None
    return {k: obs[k] for k in ("entity", "type", "labels", "location") if obs.get(k) is not None}


class ThresholdRule(CompiledRule):
    """``severities`` on the value, an aggregate of the window, or a detector's score."""

    kind = "threshold"

    def __init__(self, loaded: LoadedRule, position: int) -> None:
        super().__init__(loaded, position)
        rule = loaded.rule
        self.levels = [CompiledLevel(lv) for lv in rule.severities or []]
        self.keep_firing_for = rule.keep_firing_for
        self.window = rule.aggregate.window if rule.aggregate else None
        self.aggregate = AGGREGATES[rule.aggregate.function] if rule.aggregate else None
        self.detector = rule.detector
        # quick reject for an inactive key: no severity can hold unless value > min_above or < max_below
        aboves = [lv.clear[0] for lv in self.levels if lv.above]
        belows = [lv.clear[0] for lv in self.levels if not lv.above]
        self.min_above = min(aboves) if aboves else math.inf
        self.max_below = max(belows) if belows else -math.inf

    def observe(
        self,
        obs: dict[str, Any],
        key: str,
        t: float,
        t_text: str,
        v: float,
        out: list[AlarmTransition],
        scorer: Scorer | None,
    ) -> bool:
        """Evaluate at an observation; False when the observation is late for this key (not evaluated)."""
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = AlarmState()
        if t < st.t:
            if self.window is not None:  # late but allowed: later windows include it
                if st.window is None:
                    st.window = ([], [])
                times, values = st.window
                i = bisect.bisect_right(times, t)
                times.insert(i, t)
                values.insert(i, v)
            return False
        if self.aggregate is not None:
            if st.window is None:
                st.window = ([], [])
            times, values = st.window
            times.append(t)
            values.append(v)
            if times[0] <= t - self.window:  # type: ignore[operator]
                drop = bisect.bisect_right(times, t - self.window)  # type: ignore[operator]
                del times[:drop]
                del values[:drop]
            value = self.aggregate(times, values)
        elif self.detector is not None:
            assert scorer is not None
            attr = self.attribute or ""
            value = scorer(self.detector, key, attr, datetime.fromtimestamp(t, UTC), v)
            if value is None:  # warming up: no evaluation
                st.t = t
                return True
        else:
            value = v
        st.t = t
        st.value = value
        if st.levels is None and (value is None or not (value > self.min_above or value < self.max_below)):
            return True  # inactive and nothing can hold: the common case
        self.evaluate(st, key, t, t_text, value, obs, out)
        return True

    def evaluate(
        self,
        st: AlarmState,
        key: str,
        t: float,
        t_text: str | None,
        value: float | None,
        obs: dict[str, Any] | None,
        out: list[AlarmTransition],
    ) -> None:
        levels = st.levels
        if levels is None:  # the common case: inactive; return at once when nothing holds
            if value is None:
                return
            for lv in self.levels:
                if lv.holds(value, False):
                    break
            else:
                return
            levels = st.levels = [None] * len(self.levels)
        fire = pend = -1
        kff = self.keep_firing_for
        for i, lv in enumerate(self.levels):
            ls = levels[i]
            if value is not None and lv.holds(value, ls is not None and ls[1]):
                if ls is None:
                    ls = levels[i] = [t, False, None]
                else:
                    ls[2] = None
                if not ls[1] and t - ls[0] >= lv.for_:
                    ls[1] = True
            elif ls is not None:
                if ls[1] and kff > 0:
                    if ls[2] is None:
                        ls[2] = t
                    if t - ls[2] >= kff:
                        ls = levels[i] = None
                else:
                    ls = levels[i] = None
            if ls is not None:
                if ls[1]:
                    if fire < 0:
                        fire = i
                elif pend < 0:
                    pend = i
        if fire < 0 and pend < 0:
            st.levels = None
        new_state, new_sev = (FIRING, fire) if fire >= 0 else (PENDING, pend) if pend >= 0 else (INACTIVE, -1)
        old_state, old_sev = st.state, st.sev
        if new_state == old_state and new_sev == old_sev:
            return
        if obs is None:
            obs = st.obs
        if new_state == INACTIVE or (new_state == PENDING and old_state == FIRING):
            ended = "resolved" if old_state == FIRING else "inactive"
            out.append(
                self.transition(t, t_text, key, ended, self.levels[old_sev].severity, value, st.since, obs)
            )
            old_state = INACTIVE
        if new_state != INACTIVE:
            if old_state == INACTIVE:
                st.since = t
            out.append(
                self.transition(
                    t,
                    t_text,
                    key,
                    _STATE_NAMES[new_state],
                    self.levels[new_sev].severity,
                    value,
                    st.since,
                    obs,
                )
            )
        st.state, st.sev = new_state, new_sev
        st.obs = obs if new_state != INACTIVE else None

    def end(self, key: str, at: float, reason: str, out: list[AlarmTransition]) -> None:
        """End an open alarm (the rule was changed or removed)."""
        st = self.states.get(key)
        if st is None or st.state == INACTIVE:
            return
        tr = self.transition(
            at,
            None,
            key,
            "resolved" if st.state == FIRING else "inactive",
            self.levels[st.sev].severity,
            st.value,
            st.since,
            _obs_context(st.obs),
        )
        tr.annotations["reason"] = reason
        out.append(tr)

    def purgeable(self, st: AlarmState, horizon: float) -> bool:
        """True when the state can be forgotten without changing any future output: inactive, and every
        observation still accepted (time >= horizon) comes after it and needs none of its window."""
        if st.state != INACTIVE or st.levels is not None or st.t >= horizon:
            return False
        return not st.window or not st.window[0] or st.window[0][-1] <= horizon - (self.window or 0.0)

    def active(self) -> list[dict[str, Any]]:
        return [
            {
                "rule": self.id,
                "key": k,
                "state": _STATE_NAMES[s.state],
                "severity": self.levels[s.sev].severity,
                "value": s.value,
            }
            for k, s in self.states.items()
            if s.state != INACTIVE
        ]

    load_state = staticmethod(AlarmState.load)


# ====================================================================== stuck sensors
class StuckState:
    __slots__ = ("firing", "obs", "same_since", "t", "value")

    def __init__(self) -> None:
        self.t = NEG_INF
        self.value: float | None = None
        self.same_since = NEG_INF
        self.firing = False
        self.obs: dict[str, Any] | None = None

    def dump(self) -> list[Any]:
        return [self.t, self.value, self.same_since, self.firing, _obs_context(self.obs)]

    @classmethod
    def load(cls, d: list[Any]) -> StuckState:
        s = cls()
        s.t, s.value, s.same_since, s.firing, s.obs = d
        return s


class StuckRule(CompiledRule):
    """Fires when the value has been exactly the same since a time >= ``stuck_for`` ago."""

    kind = "stuck"

    def __init__(self, loaded: LoadedRule, position: int) -> None:
        super().__init__(loaded, position)
        self.stuck_for = loaded.rule.stuck_for or 0.0
        self.severity = loaded.rule.severity or "low"

    def observe(
        self,
        obs: dict[str, Any],
        key: str,
        t: float,
        t_text: str,
        v: float,
        out: list[AlarmTransition],
        scorer: Scorer | None,
    ) -> bool:
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = StuckState()
        if t < st.t:
            return False  # a late sample cannot re-open the run of equal values that later samples judged
        st.t = t
        if v != st.value:
            st.value, st.same_since = v, t
        stuck = t - st.same_since >= self.stuck_for
        if stuck and not st.firing:
            st.firing, st.obs = True, obs
            out.append(self.transition(t, t_text, key, "firing", self.severity, v, st.same_since, obs))
        elif st.firing and not stuck:
            st.firing = False
            out.append(self.transition(t, t_text, key, "resolved", self.severity, v, st.same_since, obs))
            st.obs = None
        return True

    def end(self, key: str, at: float, reason: str, out: list[AlarmTransition]) -> None:
        st = self.states.get(key)
        if st is not None and st.firing:
            tr = self.transition(
                at, None, key, "resolved", self.severity, st.value, st.same_since, _obs_context(st.obs)
            )
            tr.annotations["reason"] = reason
            out.append(tr)

    def purgeable(self, st: StuckState, horizon: float) -> bool:
        return False

    def active(self) -> list[dict[str, Any]]:
        return [
            {"rule": self.id, "key": k, "state": "firing", "severity": self.severity, "value": s.value}
            for k, s in self.states.items()
            if s.firing
        ]

    load_state = staticmethod(StuckState.load)


# ====================================================================== absence
class AbsentState:
    __slots__ = ("fired_at", "firing", "last_seen", "obs")

    def __init__(self) -> None:
        self.last_seen = NEG_INF
        self.firing = False
        self.fired_at = NEG_INF
        self.obs: dict[str, Any] | None = None

    def dump(self) -> list[Any]:
        return [self.last_seen, self.firing, self.fired_at, _obs_context(self.obs)]

    @classmethod
    def load(cls, d: list[Any]) -> AbsentState:
        s = cls()
        s.last_seen, s.firing, s.fired_at, s.obs = d
        return s


class AbsentRule(CompiledRule):
    """Fires when a key seen before has not been observed for ``absent_for``. Evaluated by the engine's
    absence clock (every event time, and ``advance(now)``); an observation of the key resolves it."""

    kind = "absent"

    def __init__(self, loaded: LoadedRule, position: int) -> None:
        super().__init__(loaded, position)
        self.absent_for = loaded.rule.absent_for or 0.0
        self.severity = loaded.rule.severity or "medium"

    def seen(
        self,
        obs: dict[str, Any],
        key: str,
        t: float,
        t_text: str,
        out: list[AlarmTransition],
        deadlines: list[tuple[float, str, str]],
    ) -> None:
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = AbsentState()
            heapq.heappush(deadlines, (t + self.absent_for, self.id, key))
        if t >= st.last_seen:
            st.last_seen, st.obs = t, obs
        if st.firing:
            st.firing = False
            at = max(t, st.fired_at)
            out.append(
                self.transition(
                    at, t_text if at == t else None, key, "resolved", self.severity, None, st.fired_at, obs
                )
            )
            heapq.heappush(deadlines, (st.last_seen + self.absent_for, self.id, key))

    def due(
        self, key: str, now: float, out: list[AlarmTransition], deadlines: list[tuple[float, str, str]]
    ) -> None:
        """A deadline popped at absence-evaluation time ``now``: fire, or re-arm if the key was seen since."""
        st = self.states.get(key)
        if st is None or st.firing:
            return
        deadline = st.last_seen + self.absent_for
        if deadline <= now:
            st.firing, st.fired_at = True, now
            tr = self.transition(now, None, key, "firing", self.severity, None, now, _obs_context(st.obs))
            out.append(tr)
        else:
            heapq.heappush(deadlines, (deadline, self.id, key))

    def end(self, key: str, at: float, reason: str, out: list[AlarmTransition]) -> None:
        st = self.states.get(key)
        if st is not None and st.firing:
            tr = self.transition(
                at, None, key, "resolved", self.severity, None, st.fired_at, _obs_context(st.obs)
            )
            tr.annotations["reason"] = reason
            out.append(tr)

    def purgeable(self, st: AbsentState, horizon: float) -> bool:
        return False

    def active(self) -> list[dict[str, Any]]:
        return [
            {"rule": self.id, "key": k, "state": "firing", "severity": self.severity, "value": None}
            for k, s in self.states.items()
            if s.firing
        ]

    load_state = staticmethod(AbsentState.load)


def compile_rule(loaded: LoadedRule, position: int) -> CompiledRule:
    rule = loaded.rule
    if rule.absent_for is not None:
        return AbsentRule(loaded, position)
    if rule.stuck_for is not None:
        return StuckRule(loaded, position)
    return ThresholdRule(loaded, position)
