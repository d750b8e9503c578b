"""Rules about what sensors do not say: ``absent_for`` (nothing observed) and ``stuck_for`` (the same
value over and over)."""

from __future__ import annotations

import heapq
from typing import Any

from atalaia.rules.alarm import AlarmTransition
from atalaia.rules.base import NEG_INF, CompiledRule, Scorer, obs_context
from atalaia.rules.loader import LoadedRule


class StuckState:
    __slots__ = ("firing", "obs", "same_since", "t", "value")

    def __init__(self) -> None:
        self.t = NEG_INF
        self.value: float | None = None
        self.same_since = NEG_INF
        self.firing = False
        self.obs: dict[str, Any] | None = None

    def dump(self) -> list[Any]:
        return [self.t, self.value, self.same_since, self.firing, obs_context(self.obs)]

    @classmethod
    def load(cls, d: list[Any]) -> StuckState:
        s = cls()
        s.t, s.value, s.same_since, s.firing, s.obs = d
        return s


class StuckRule(CompiledRule):
    """Fires when the value has been exactly the same since a time >= ``stuck_for`` ago."""

    kind = "stuck"
    can_purge = False

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
                at, None, key, "resolved", self.severity, st.value, st.same_since, obs_context(st.obs)
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


class AbsentState:
    __slots__ = ("fired_at", "firing", "last_seen", "obs")

    def __init__(self) -> None:
        self.last_seen = NEG_INF
        self.firing = False
        self.fired_at = NEG_INF
        self.obs: dict[str, Any] | None = None

    def dump(self) -> list[Any]:
        return [self.last_seen, self.firing, self.fired_at, obs_context(self.obs)]

    @classmethod
    def load(cls, d: list[Any]) -> AbsentState:
        s = cls()
        s.last_seen, s.firing, s.fired_at, s.obs = d
        return s


class AbsentRule(CompiledRule):
    """Fires when a key seen before has not been observed for ``absent_for``. Evaluated by the engine's
    absence clock (every event time, and ``advance(now)``); an observation of the key resolves it."""

    kind = "absent"
    can_purge = False

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
            tr = self.transition(now, None, key, "firing", self.severity, None, now, obs_context(st.obs))
            out.append(tr)
        else:
            heapq.heappush(deadlines, (deadline, self.id, key))

    def end(self, key: str, at: float, reason: str, out: list[AlarmTransition]) -> None:
        st = self.states.get(key)
        if st is not None and st.firing:
            tr = self.transition(
                at, None, key, "resolved", self.severity, None, st.fired_at, obs_context(st.obs)
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
