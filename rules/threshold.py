"""Rules with ``severities``: on the observed value, an aggregate of the key's window, or a detector's
score. Each severity behaves like its own Prometheus alert (``for``, ``keep_firing_for``,
hysteresis); the alarm shows the highest firing severity, else the highest pending one."""

from __future__ import annotations

import math
from bisect import bisect_right
from datetime import UTC, datetime
from typing import Any

from atalaia.rules.aggregates import AGGREGATES, EXTREMES, Extreme
from atalaia.rules.alarm import AlarmTransition
from atalaia.rules.base import (
    FIRING,
    INACTIVE,
    NEG_INF,
    PENDING,
    STATE_NAMES,
    CompiledRule,
    Scorer,
    obs_context,
)
from atalaia.rules.loader import LoadedRule
from atalaia.rules.schema import Level, ThresholdRef


class CompiledLevel:
    __slots__ = ("above", "clear", "for_", "hyst", "ref", "severity")

    def __init__(self, level: Level) -> None:
        self.severity = level.severity
        self.above = level.above is not None
        self.for_ = level.for_
        self.ref = level.above if self.above else level.below
        # hysteresis when the rule writes a clear level, also one equal to the threshold
        # (``above: 2, clear_below: 2``: a firing severity stays at 2, as PromQL's
        # ``x > 2 or (x >= 2 and ALERTS{alertstate="firing"})`` and as a compound part)
        self.hyst = (level.clear_below if self.above else level.clear_above) is not None
        if not isinstance(self.ref, ThresholdRef):
            self.ref = None
        else:  # per entity: the limit is looked up at each evaluation (NaN = missing: never holds)
            self.clear = (math.nan, math.nan)
            self.hyst = False
            return
        if self.above:
            self.clear = (level.above, level.clear_below if level.clear_below is not None else level.above)
        else:
            assert level.below is not None
            self.clear = (level.below, level.clear_above if level.clear_above is not None else level.below)

    def holds(self, v: float, firing: bool) -> bool:
        """Strict threshold; a firing level with hysteresis holds until the value passes the clear level."""
        limit, clear = self.clear
        if self.above:
            return v > limit or (firing and self.hyst and v >= clear)
        return v < limit or (firing and self.hyst and v <= clear)


class AlarmState:
    """State of one (threshold rule, key). ``levels[i]`` = None or [active_since, fired, keep_firing_since]."""

    __slots__ = ("extreme", "levels", "obs", "sev", "since", "state", "t", "value", "window")

    def __init__(self) -> None:
        self.t = NEG_INF  # last evaluation time
        self.levels: list[list[Any] | None] | None = None
        self.state = INACTIVE
        self.sev = -1
        self.since = NEG_INF
        self.value: float | None = None
        self.window: tuple[list[float], list[float]] | None = None  # (times, values) sorted by time
        self.obs: dict[str, Any] | None = None  # last observation (context for keep_firing_for/reload lines)
        self.extreme: Extreme | None = None  # min/max of the window, derived (not in snapshots)

    def dump(self) -> list[Any]:
        return [
            self.t,
            self.levels,
            self.state,
            self.sev,
            self.since,
            self.value,
            self.window or None,  # (times, values): serialised at once, no copy needed
            obs_context(self.obs),
        ]

    @classmethod
    def load(cls, d: list[Any]) -> AlarmState:
        s = cls()
        s.t, s.levels, s.state, s.sev, s.since, s.value, window, s.obs = d
        s.window = (window[0], window[1]) if window else None
        return s


class ThresholdRule(CompiledRule):
    """``severities`` on the value, an aggregate of the window, or a detector's score."""

    kind = "threshold"

    def __init__(self, loaded: LoadedRule, position: int) -> None:
        super().__init__(loaded, position)
        rule = loaded.rule
        self.levels = [CompiledLevel(lv) for lv in rule.severities or [] if not lv.is_state]
        # the levels as plain tuples for the hot loop: (above?, limit, clear, has hysteresis, for)
        self._levels = tuple((lv.above, *lv.clear, lv.hyst, lv.for_) for lv in self.levels)
        self.keep_firing_for = rule.keep_firing_for
        self.window = rule.aggregate.window if rule.aggregate else None
        self.aggregate = AGGREGATES[rule.aggregate.function] if rule.aggregate else None
        function = rule.aggregate.function if rule.aggregate else None
        self.extreme_is_max = function == "max" if function in EXTREMES else None  # kept incrementally
        self.detector = rule.detector
        # quick reject for an inactive key: no severity can hold unless value > min_above or < max_below
        aboves = [lv.clear[0] for lv in self.levels if lv.above]
        belows = [lv.clear[0] for lv in self.levels if not lv.above]
        self.min_above = min(aboves) if aboves else math.inf
        self.max_below = max(belows) if belows else -math.inf
        # one specialised evaluator per kind (the engine calls ``observe`` once per observation and rule)
        if self.aggregate is not None:
            self.observe = self._observe_window  # type: ignore[method-assign]
        elif self.detector is None:
            self.observe = self._observe_value  # type: ignore[method-assign]
        # per-entity thresholds: {attribute: ...} (the entity's latest value) or {table, column}
        self.refs = [lv.ref for lv in self.levels if lv.ref is not None]
        self.ref_values: dict[str, dict[str, float]] = {}  # key -> attribute -> latest value (rule's unit)
        # key -> attribute -> why its latest value was not used (a unit code that does not convert)
        self.ref_problems: dict[str, dict[str, str]] = {}
        self.unit = rule.unit
        self.tables: dict[tuple[str, str], dict[str, float]] = {}
        self.missing_warned: dict[str, str] = {}  # key -> what was missing when it was last warned
        self.quality: list[str] | None = None  # the engine's data-quality warnings (set by the engine)
        self.stats: Any = None
        if self.refs:
            self.refresh_tables()
            self._static_levels = self._levels
            self._inner_observe = self.observe
            self.observe = self._observe_per_entity  # type: ignore[method-assign]

    # ------------------------------------------------------------------ per-entity thresholds
    @property
    def ref_attributes(self) -> list[str]:
        return sorted({r.attribute for r in self.refs if r.attribute is not None})

    def refresh_tables(self) -> None:
        """Read the threshold tables again when they changed (a stat each); a table that no longer
        reads keeps its last good content, and says why."""
        from atalaia.rules.tables import TableError, load_table

        for ref in self.refs:
            if ref.table is None or ref.column is None:
                continue
            try:
                self.tables[(ref.table, ref.column)] = load_table(ref.table, ref.column, self.loaded.file)
            except TableError as exc:
                self.tables.setdefault((ref.table, ref.column), {})
                self._warn(f"rule '{self.id}': {exc} (keeping the last table read)")

    def _warn(self, message: str) -> None:
        if self.quality is not None:
            self.quality.append(message)

    def remember(
        self, obs: dict[str, Any], key: str, t: float, t_text: str, v: float, out: Any, scorer: Any
    ) -> bool:
        """An observation of a threshold attribute (``alertLevelHigh``): the entity's latest value."""
        for attr in self.ref_attributes:
            got = (obs.get("attributes") or {}).get(attr)
            if got is not None and got.__class__ in (int, float) and math.isfinite(got):
                self._store_ref(obs, key, attr, got)
        return True

    def _ref_in_unit(self, obs: dict[str, Any], attr: str, got: float) -> float | str:
        """A threshold attribute's value in the rule's ``unit``, converted as readings are
        (:func:`~atalaia.rules.units.value_in_unit`), or the reason it does not convert."""
        if self.unit is None:
            return float(got)
        from atalaia.rules.units import value_in_unit

        return value_in_unit(obs, self.type, attr, got, self.unit)

    def _store_ref(self, obs: dict[str, Any], key: str, attr: str, got: float) -> float | None:
        """Remember the entity's latest threshold (in the rule's unit). One whose unit does not
        convert is not used, and the one remembered before it is forgotten (it is no longer the
        entity's latest): that threshold is missing, with the reason, until a usable one comes."""
        value = self._ref_in_unit(obs, attr, got)
        if value.__class__ is str:
            stored = self.ref_values.get(key)
            if stored is not None:
                stored.pop(attr, None)
            self.ref_problems.setdefault(key, {})[attr] = value  # type: ignore[assignment]
            return None
        self.ref_values.setdefault(key, {})[attr] = value  # type: ignore[assignment]
        problems = self.ref_problems.get(key)
        if problems is not None and problems.pop(attr, None) is not None and not problems:
            del self.ref_problems[key]
        return value  # type: ignore[return-value]

    def limits_for(self, obs: dict[str, Any], key: str) -> tuple[tuple[Any, ...], list[str]]:
        """The levels with this entity's thresholds, and the names of the missing ones."""
        attributes = obs.get("attributes") or {}
        stored = self.ref_values.get(key)
        levels = []
        missing = []
        for lv, spec in zip(self.levels, self._static_levels, strict=True):
            ref = lv.ref
            if ref is None:
                levels.append(spec)
                continue
            if ref.attribute is not None:
                got = attributes.get(ref.attribute)
                if got is not None and got.__class__ in (int, float) and math.isfinite(got):
                    got = self._store_ref(obs, key, ref.attribute, got)
                else:
                    got = stored.get(ref.attribute) if stored else None
                what = f"attribute '{ref.attribute}'"
                if got is None:
                    problem = self.ref_problems.get(key, {}).get(ref.attribute)
                    if problem is not None:
                        what = problem
            else:
                got = self.tables.get((ref.table, ref.column), {}).get(obs.get("entity", ""))  # type: ignore[arg-type]
                what = f"{ref.table} column '{ref.column}'"
            if got is None:
                missing.append(what)
                got = math.nan
            levels.append((spec[0], got, got, False, spec[4]))
        return tuple(levels), missing

    def _observe_per_entity(
        self, obs: dict[str, Any], key: str, t: float, t_text: str, v: float, out: Any, scorer: Any
    ) -> bool:
        levels, missing = self.limits_for(obs, key)
        if missing:
            if self.stats is not None:
                self.stats["threshold_missing"] += 1
            what = ", ".join(missing)
            if self.missing_warned.get(key) != what:  # once per key, and again if the reason changes
                self.missing_warned[key] = what
                self._warn(
                    f"rule '{self.id}': no threshold for {key} ({what}): "
                    "that severity is not evaluated (never a default)"
                )
        elif key in self.missing_warned:
            del self.missing_warned[key]
        self._levels = levels
        aboves = [lim for above, lim, *_ in levels if above and lim == lim]
        belows = [lim for above, lim, *_ in levels if not above and lim == lim]
        self.min_above = min(aboves) if aboves else math.inf
        self.max_below = max(belows) if belows else -math.inf
        return self._inner_observe(obs, key, t, t_text, v, out, scorer)

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
        """Evaluate at an observation; False when the observation is late for this key (not evaluated).
        This is the detector's; value and window rules use the specialised methods below."""
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = AlarmState()
        elif t < st.t:
            return False
        assert scorer is not None
        value = scorer(self.detector, key, self.attribute or "", datetime.fromtimestamp(t, UTC), v)  # type: ignore[arg-type]
        if value is None:  # warming up: time moves on, no evaluation
            st.t = t
            return True
        return self._observe_value(obs, key, t, t_text, value, out, scorer)  # the score is the value

    def _observe_value(
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
            st = self.states[key] = AlarmState()
        elif t < st.t:
            return False
        st.t = t
        st.value = v
        if st.levels is None and not (v > self.min_above or v < self.max_below):
            return True  # inactive and nothing can hold: the common case
        self.evaluate(st, key, t, t_text, v, obs, out)
        return True

    def _observe_window(
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
            st = self.states[key] = AlarmState()
            st.window = times, values = [], []
        else:
            if st.window is None:
                st.window = ([], [])
            times, values = st.window
            if t < st.t:  # late but allowed: not evaluated, but later windows include it
                i = bisect_right(times, t)
                times.insert(i, t)
                values.insert(i, v)
                st.extreme = None  # rebuilt from the window at the next evaluation
                return False
        times.append(t)
        values.append(v)
        cutoff = t - self.window  # type: ignore[operator]
        if times[0] <= cutoff:
            drop = bisect_right(times, cutoff)
            del times[:drop]
            del values[:drop]
        if self.extreme_is_max is None:
            value = self.aggregate(times, values)  # type: ignore[misc]
        elif st.extreme is not None:
            value = st.extreme.push(t, v, cutoff)
        else:  # first evaluation since a late sample or a restore
            st.extreme = Extreme(self.extreme_is_max, times, values)
            value = st.extreme.values[0] if values else None
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
        holding: list[bool] | None = None,
        shown: Any = None,
    ) -> None:
        """Advance the severities at ``t``. ``holding`` (state rules): whether each severity's condition
        holds, instead of comparing ``value``; ``shown`` is then the template's value (the state)."""
        levels = st.levels
        if levels is None:  # the common case: inactive; return at once when nothing holds
            if holding is not None:
                if not any(holding):
                    return
            elif value is None:
                return
            else:
                for above, limit, _clear, _hyst, _for in self._levels:
                    if value > limit if above else value < limit:
                        break
                else:
                    return
            levels = st.levels = [None] * len(self._levels)
        fire = pend = -1
        kff = self.keep_firing_for
        for i, (above, limit, clear, hyst, for_) in enumerate(self._levels):
            ls = levels[i]
            # strict threshold; a firing level with hysteresis holds until the value passes the clear level
            if holding is not None:
                holds = holding[i]
            elif value is None:
                holds = False
            elif above:
                holds = value > limit or (hyst and ls is not None and ls[1] and value >= clear)
            else:
                holds = value < limit or (hyst and ls is not None and ls[1] and value <= clear)
            if holds:
                if ls is None:
                    ls = levels[i] = [t, False, None]
                else:
                    ls[2] = None
                if not ls[1] and t - ls[0] >= for_:
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
        if fire >= 0:
            new_state, new_sev = FIRING, fire
        elif pend >= 0:
            new_state, new_sev = PENDING, pend
        else:
            st.levels = None
            new_state, new_sev = INACTIVE, -1
        old_state, old_sev = st.state, st.sev
        if new_state == old_state and new_sev == old_sev:
            return
        if obs is None:
            obs = st.obs
        if new_state == INACTIVE or (new_state == PENDING and old_state == FIRING):
            ended = "resolved" if old_state == FIRING else "inactive"
            out.append(
                self.transition(
                    t, t_text, key, ended, self.levels[old_sev].severity, value, st.since, obs, shown
                )
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
                    STATE_NAMES[new_state],
                    self.levels[new_sev].severity,
                    value,
                    st.since,
                    obs,
                    shown,
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
            obs_context(st.obs),
        )
        tr.annotations["reason"] = reason
        out.append(tr)

    def reevaluate(self, at: float, reason: str) -> list[AlarmTransition]:
        """After a change of limits (:func:`atalaia.rules.base.shape`): each open alarm evaluated again
        on its last value, at the time of that value (the key's clock does not move: a reading
        between it and the reload, within the allowed lateness, is still evaluated); the
        transitions carry ``reason``. ``at``: for a state of another shape, ended then."""
        out: list[AlarmTransition] = []
        for key in sorted(self.states):
            st = self.states[key]
            if st.levels is None:
                continue
            if len(st.levels) != len(self._levels):  # a snapshot of another shape: never, but safe
                self.end(key, at, reason, out)
                del self.states[key]
                continue
            first = len(out)
            self.evaluate(st, key, st.t, None, st.value, st.obs, out)
            for tr in out[first:]:
                tr.annotations["reason"] = reason
        return out

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
                "state": STATE_NAMES[s.state],
                "severity": self.levels[s.sev].severity,
                "value": s.value,
            }
            for k, s in self.states.items()
            if s.state != INACTIVE
        ]

    load_state = staticmethod(AlarmState.load)
