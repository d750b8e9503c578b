"""Compound rules: ``all:`` / ``any:`` of conditions on several attributes of one entity, or, with
``join: {on: [parish], within: 10m}``, of entities sharing labels (the alarm key is the ``on`` labels).

Each condition (part) is evaluated at the observations that carry its attribute, with its own
aggregate window, ``for`` and hysteresis, exactly as a one-severity simple rule: it *holds* once its
comparison has been true for ≥ ``for`` (a holding part with ``clear_below``/``clear_above`` keeps
holding until the value passes that level). The rule is evaluated at each observation of its key
that updates a part (once per observation, after every part it carries): it **fires** when all (any)
parts hold, is **pending** while all (any) parts' comparisons are true but some ``for`` has not
elapsed, and ``keep_firing_for`` applies as in a simple rule. With ``join``, a part counts only
when its attribute was observed within ``within`` of the evaluation time, and each entity of the
key has its own part state (window, ``for``, hysteresis): the part holds when one entity's holds. Transitions carry
``value: null`` and ``values: {part: value}`` (each part's latest value; templates see ``values``).
Late samples (older than the key's last evaluation) are not evaluated.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Any

from atalaia.rules.aggregates import AGGREGATES
from atalaia.rules.alarm import AlarmTransition
from atalaia.rules.base import FIRING, INACTIVE, NEG_INF, PENDING, STATE_NAMES, CompiledRule, obs_context
from atalaia.rules.loader import LoadedRule
from atalaia.rules.matchers import from_map
from atalaia.rules.schema import Condition, ThresholdRef
from atalaia.rules.state import BOOLEAN_TEXT, same

NOT_COMPARABLE = object()  # a part's sample that is not a number / not convertible (counted by the engine)


class Part:
    __slots__ = (
        "above",
        "aggregate",
        "attribute",
        "clear",
        "for_",
        "hyst",
        "label",
        "limit",
        "members",
        "ref",
        "type",
        "unit",
        "where",
        "window",
    )

    def __init__(self, c: Condition, rule_type: str) -> None:
        self.type = c.type or rule_type
        self.attribute = c.attribute
        self.label = c.label
        self.where = from_map(c.where)
        self.aggregate = AGGREGATES[c.aggregate.function] if c.aggregate else None
        self.window = c.aggregate.window if c.aggregate else None
        self.for_ = c.for_
        self.unit = c.unit
        self.members: tuple[Any, ...] | None = None
        if c.equals is not None:
            self.members = (c.equals,)
        elif c.in_ is not None:
            self.members = tuple(c.in_)
        self.above = c.above is not None
        bound = c.above if self.above else c.below
        self.ref = bound if isinstance(bound, ThresholdRef) else None
        self.limit = math.nan if self.ref is not None or bound is None else float(bound)  # type: ignore[arg-type]
        clear = c.clear_below if self.above else c.clear_above
        self.clear = self.limit if clear is None else float(clear)
        self.hyst = clear is not None


def _shows(part: Part, s: list[Any], than: list[Any]) -> bool:
    """Whether entity state ``s`` is the one a label-keyed part shows rather than ``than`` (both
    true, both holding or not): the highest value for ``above``, the lowest for ``below`` (max by /
    min by), else the latest reading."""
    a, b = s[1], than[1]
    if part.members is None and a.__class__ in (int, float) and b.__class__ in (int, float):
        return a > b if part.above else a < b
    return s[0] > than[0]


class CompoundState:
    """Per key: each part [last time, value, window times, window values, true since, holds] and the alarm.
    A rule keyed by labels (a join) keeps that list per entity too (``subs``: per part, entity -> list)
    and ``parts`` is their summary at the last evaluation (:meth:`CompoundRule._summarise`)."""

    __slots__ = ("kff", "obs", "parts", "since", "state", "subs", "t", "trues")

    def __init__(self, n: int) -> None:
        self.t = NEG_INF
        self.parts: list[list[Any]] = [[None, None, None, None, None, False] for _ in range(n)]
        self.state = INACTIVE
        self.since = NEG_INF
        self.kff: float | None = None
        self.obs: dict[str, Any] | None = None
        self.subs: list[dict[str, list[Any]]] | None = None
        self.trues: list[dict[str, list[Any]]] | None = None  # per part: the entities now true (not kept)

    def dump(self) -> list[Any]:
        out = [self.t, self.parts, self.state, self.since, self.kff, obs_context(self.obs)]
        if self.subs is not None:
            out.append(self.subs)
        return out

    @classmethod
    def load(cls, d: list[Any]) -> CompoundState:
        s = cls(0)
        s.t, s.parts, s.state, s.since, s.kff, s.obs = d[:6]
        s.subs = d[6] if len(d) > 6 else None  # (snapshots before per-entity parts have none)
        s.trues = None
        return s

    def migrate(self) -> list[dict[str, list[Any]]]:
        """The per-entity part states of a label-keyed rule, made at its first sample. A snapshot
        from before they were kept per entity has one state for the whole key: it carries on as an
        unnamed entity until one reports (:meth:`adopt`)."""
        self.subs = [
            {} if ps[0] is None else {"": [x[:] if isinstance(x, list) else x for x in ps]}
            for ps in self.parts
        ]
        self.trues = None
        return self.subs

    def adopt(self, i: int, entity: str) -> list[Any]:
        """A new entity's state for part ``i``: the key's state of a snapshot from before per-entity
        parts (kept as entity ``""``) goes to the first entity that reports (exact for the usual
        one gauge per parish), else a fresh one."""
        subs = self.subs[i]  # type: ignore[index]
        ps = subs.pop("", None)
        if ps is None:
            ps = [None, None, None, None, None, False]
        elif self.trues is not None and self.trues[i].pop("", None) is not None:
            self.trues[i][entity] = ps
        subs[entity] = ps
        return ps

    def true_entities(self) -> list[dict[str, list[Any]]]:
        """Per part, the entities whose condition is now true (rebuilt after a restore)."""
        if self.trues is None:
            self.trues = [{e: s for e, s in subs.items() if s[4] is not None} for subs in self.subs or ()]
        return self.trues


class CompoundRule(CompiledRule):
    kind = "compound"
    can_purge = False

    def __init__(self, loaded: LoadedRule, position: int) -> None:
        super().__init__(loaded, position)
        rule = loaded.rule
        self.parts = [Part(c, rule.select.type) for c in rule.conditions or []]
        self.all = rule.all_ is not None
        self.severity = rule.severity or "high"
        self.keep_firing_for = rule.keep_firing_for
        self.within = rule.join.within if rule.join else rule.within
        self.simple_key = False
        self.fors = tuple(p.for_ for p in self.parts)
        self.labels_ = tuple(p.label for p in self.parts)

    # ------------------------------------------------------------------ updates
    def _limit(self, part: Part, obs: dict[str, Any]) -> float:
        ref = part.ref
        if ref is None:
            return part.limit
        if ref.attribute is not None:
            got = (obs.get("attributes") or {}).get(ref.attribute)
            if got.__class__ not in (int, float) or not math.isfinite(got):  # type: ignore[arg-type]
                return math.nan
            if part.unit is None:
                return float(got)  # type: ignore[arg-type]
            # in the part's unit, converted as its readings are (450 CMT under a part in m is 4.5);
            # a threshold that does not convert does not hold
            from atalaia.rules.units import value_in_unit

            value = value_in_unit(obs, part.type, ref.attribute, got, part.unit)  # type: ignore[arg-type]
            return math.nan if isinstance(value, str) else value
        from atalaia.rules.tables import TableError, load_table

        try:
            return load_table(ref.table, ref.column, self.loaded.file).get(obs.get("entity", ""), math.nan)  # type: ignore[arg-type]
        except TableError:
            return math.nan

    def stepper(self, typ: str, stats: Any) -> Any:
        """``step(obs, entity, t, t_text, attributes, labels, out)`` for an observation of type
        ``typ``: feed every part of that type the observation carries, then evaluate the rule's key
        once if a part was updated; returns the number of evaluations (0 or 1). Parts that are not
        comparable (not a number, a unit that does not convert) count in
        ``stats["compound_not_comparable"]``."""
        parts = tuple((p.attribute, self.feeder(i)) for i, p in enumerate(self.parts) if p.type == typ)
        # parts on booleans read a label "true"/"false" as one (ingest keeps a boolean property as
        # that label; rules.state does the same)
        booleans = {
            p.attribute
            for p in self.parts
            if p.type == typ and any(m.__class__ is bool for m in p.members or ())
        }
        by_entity = self.key_is_entity and not self.where
        key_of, decide = self.key_of, self._decide
        fors, within, every, n = self.fors, self.within, self.all, len(self.parts)
        per_entity = not self.key_is_entity  # a label key: its parts per entity (``st.subs``, ``st.trues``)
        inf, ninf = math.inf, -math.inf
        win = inf if within is None else within

        def step(
            obs: dict[str, Any],
            entity: str,
            t: float,
            t_text: str,
            attributes: dict[str, Any],
            labels: dict[str, Any] | None,
            out: list,
        ) -> int:
            key = st = None
            for name, feed in parts:
                v = attributes.get(name)
                if v is None and labels:
                    v = labels.get(name)
                    if v in BOOLEAN_TEXT and name in booleans:
                        v = v == "true"
                if v is None:
                    continue
                if key is None:
                    key = entity if by_entity else key_of(obs)
                    if key is None:
                        return 0
                got = feed(obs, key, t, v)
                if got is None:
                    continue
                if got is NOT_COMPARABLE:
                    stats["compound_not_comparable"] += 1
                else:
                    st = got
            if st is None:
                return 0
            # the evaluation (``evaluate_key``), its no-change outcomes inline
            st.t = t
            n_ok = n_raw = 0
            if per_entity:  # a label key: ``_summarise`` and the count in one pass over the true entities
                for for_, ps, now_true in zip(fors, st.parts, st.trues or st.true_entities()):  # noqa: B905
                    if not now_true:  # (the usual case: no entity of the key meets this condition)
                        ps[4] = None
                        ps[5] = False
                        continue
                    last, since = ninf, inf
                    for s in now_true.values():
                        s0 = s[0]
                        if t - s0 > win:
                            continue
                        s4 = s[4]
                        if not s[5] and t - s4 >= for_:  # (an entity that holds keeps holding while true)
                            s[5] = True
                        if s0 > last:
                            last = s0
                        if s4 < since:
                            since = s4
                    if last == ninf:  # no entity true and observed within ``within``
                        ps[4] = None
                        ps[5] = False
                        continue
                    ps[0] = last
                    ps[4] = since
                    n_raw += 1
                    if t - since >= for_:  # (one entity holds: the one true the longest does)
                        ps[5] = True
                        n_ok += 1
                    else:
                        ps[5] = False
            elif within is None:  # a part true since a time has been observed (no staleness)
                for for_, ps in zip(fors, st.parts):  # noqa: B905 - one per part by construction
                    since = ps[4]
                    if since is not None:
                        n_raw += 1
                        if t - since >= for_:
                            ps[5] = True
                            n_ok += 1
            else:
                for for_, ps in zip(fors, st.parts):  # noqa: B905
                    last = ps[0]
                    if last is None or t - last > within:
                        continue
                    since = ps[4]
                    if since is None:
                        continue
                    n_raw += 1
                    if t - since >= for_:
                        ps[5] = True
                        n_ok += 1
            if every:
                ok, raw = n_ok == n, n_raw == n
            else:
                ok, raw = n_ok > 0, n_raw > 0
            old = st.state
            if ok:
                if old == FIRING:
                    st.kff = None
                    return 1
            elif old != FIRING and old == (PENDING if raw else INACTIVE):
                return 1
            decide(st, key, t, t_text, obs, out, ok, raw)
            return 1

        return step

    def feeder(self, i: int) -> Any:
        """``feed(obs, key, t, v)`` for part ``i``: the key's state once the sample updated the part; None when
        the part's ``where`` does not select the observation or the sample is late for the key (not
        evaluated); ``NOT_COMPARABLE`` when the value is not a number (text for a state part) or its
        unit cannot be converted. Everything the part needs is bound once (the hot path)."""
        part = self.parts[i]
        rule, n = self, len(self.parts)
        where, members, unit, attribute = part.where, part.members, part.unit, part.attribute
        aggregate, window = part.aggregate, part.window
        above, hyst, clear = part.above, part.hyst, part.clear
        constant = part.ref is None
        limit = part.limit
        limit_of = self._limit
        per_entity = not self.key_is_entity  # a label key (join): several entities per key
        entity_fed = self._entity_fed
        factors: dict[str, Any] = {}
        new_state = CompoundState
        inf, ninf = math.inf, -math.inf

        if members is None and unit is None and not where and constant and not per_entity:

            def plain(obs: dict[str, Any], key: str, t: float, v: Any) -> Any:
                """The common part: a number against a constant threshold (no unit, no where)."""
                cls = v.__class__
                if cls is not float:
                    if cls is not int:
                        return NOT_COMPARABLE
                    v = float(v)
                if not ninf < v < inf:
                    return NOT_COMPARABLE
                states = rule.states
                st = states.get(key)
                if st is None:
                    st = states[key] = new_state(n)
                if t < st.t:
                    return None
                ps = st.parts[i]
                if aggregate is not None:
                    times = ps[2]
                    if times is None:
                        times, values = ps[2], ps[3] = [], []
                    else:
                        values = ps[3]
                    times.append(t)
                    values.append(v)
                    if times[0] <= t - window:
                        drop = bisect_right(times, t - window)
                        del times[:drop]
                        del values[:drop]
                    v = aggregate(times, values)
                    if v is None:
                        ps[0] = t
                        ps[1] = None
                        ps[4] = None
                        ps[5] = False
                        return st
                ps[0] = t
                ps[1] = v
                if (
                    (v > limit or (hyst and ps[5] and v >= clear))
                    if above
                    else (v < limit or (hyst and ps[5] and v <= clear))
                ):
                    if ps[4] is None:
                        ps[4] = t
                else:
                    ps[4] = None
                    ps[5] = False
                return st

            return plain

        if members is None and unit is None and not where and constant:  # (a label key)

            def plain_joined(obs: dict[str, Any], key: str, t: float, v: Any) -> Any:
                """``plain`` for a label key (a join): each entity's own part state."""
                cls = v.__class__
                if cls is not float:
                    if cls is not int:
                        return NOT_COMPARABLE
                    v = float(v)
                if not ninf < v < inf:
                    return NOT_COMPARABLE
                states = rule.states
                st = states.get(key)
                if st is None:
                    st = states[key] = new_state(n)
                # each entity of a label key on its own readings (its own window)
                ent = obs.get("entity") or ""
                ps = (st.subs or st.migrate())[i].get(ent)
                if ps is None:
                    ps = st.adopt(i, ent)
                if ps[0] is not None and t < ps[0]:
                    return None  # late for its entity: not in the window (as before)
                if aggregate is not None:
                    times = ps[2]
                    if times is None:
                        times, values = ps[2], ps[3] = [], []
                    else:
                        values = ps[3]
                    times.append(t)
                    values.append(v)
                    if times[0] <= t - window:
                        drop = bisect_right(times, t - window)
                        del times[:drop]
                        del values[:drop]
                    v = aggregate(times, values)
                    if v is None:
                        ps[0] = t
                        ps[1] = None
                        ps[4] = None
                        ps[5] = False
                        return entity_fed(st, i, ent, ps, t)
                ps[0] = t
                ps[1] = v
                # (``_entity_fed``, inline: the join's hot path; ``st.trues`` changes only when the
                # entity's condition turns true or false)
                if (
                    (v > limit or (hyst and ps[5] and v >= clear))
                    if above
                    else (v < limit or (hyst and ps[5] and v <= clear))
                ):
                    if ps[4] is None:
                        (st.trues or st.true_entities())[i][ent] = ps
                        ps[4] = t
                else:
                    if ps[4] is not None:
                        trues = (st.trues or st.true_entities())[i]
                        trues.pop(ent, None)
                        ps[4] = None
                        if not trues:  # (no entity true: nothing to summarise)
                            summary = st.parts[i]
                            summary[4] = None
                            summary[5] = False
                    ps[5] = False
                summary = st.parts[i]
                if summary[0] is None or t >= summary[0]:
                    summary[0] = t
                    summary[1] = v
                return None if t < st.t else st

            return plain_joined

        def feed(obs: dict[str, Any], key: str, t: float, v: Any) -> Any:
            if members is not None:
                if not isinstance(v, str | bool | int | float):
                    return NOT_COMPARABLE
            else:
                cls = v.__class__
                if (cls is not float and cls is not int) or not ninf < v < inf:
                    return NOT_COMPARABLE
                if unit is not None:
                    code = (obs.get("units") or {}).get(attribute)
                    if code is not None:
                        conv = factors.get(code)
                        if conv is None:
                            from atalaia.rules.units import converter

                            if len(factors) >= 256:  # unit codes come from the senders: bounded
                                factors.clear()

                            conv = factors[code] = (
                                converter(code, unit, attribute) if code.__class__ is str else "not text"
                            )
                        if isinstance(conv, str):
                            return NOT_COMPARABLE
                        v = conv(v)
                v = float(v)
            if where:
                labels = obs.get("labels") or {}
                for m in where:
                    if not m.accepts(obs.get(m.name) if m.name in ("entity", "type") else labels.get(m.name)):
                        return None
            states = rule.states
            st = states.get(key)
            if st is None:
                st = states[key] = new_state(n)
            if per_entity:
                ent = obs.get("entity") or ""
                ps = (st.subs or st.migrate())[i].get(ent)
                if ps is None:
                    ps = st.adopt(i, ent)
                if ps[0] is not None and t < ps[0]:
                    return None
            elif t < st.t:
                return None
            else:
                ps = st.parts[i]
            if members is not None:
                value = v
                true = any(same(v, m) for m in members)
            else:
                if aggregate is not None:
                    times = ps[2]
                    if times is None:
                        times, values = ps[2], ps[3] = [], []
                    else:
                        values = ps[3]
                    times.append(t)
                    values.append(v)
                    cutoff = t - window
                    if times[0] <= cutoff:
                        drop = bisect_right(times, cutoff)
                        del times[:drop]
                        del values[:drop]
                    value = aggregate(times, values)
                else:
                    value = v
                lim = limit if constant else limit_of(part, obs)
                if value is None:
                    true = False
                elif above:
                    true = value > lim or (hyst and ps[5] and value >= clear)
                else:
                    true = value < lim or (hyst and ps[5] and value <= clear)
            ps[0] = t
            ps[1] = value
            if true:
                if ps[4] is None:
                    ps[4] = t
            else:
                ps[4] = None
                ps[5] = False
            return entity_fed(st, i, ent, ps, t) if per_entity else st

        return feed

    # ------------------------------------------------------------------ evaluation
    def evaluate_key(
        self, key: str, t: float, t_text: str | None, obs: dict[str, Any] | None, out: list
    ) -> None:
        st = self.states[key]
        st.t = t
        if st.subs is not None:
            self._summarise(st, t)
        within = self.within
        n_ok = n_raw = 0
        for for_, ps in zip(self.fors, st.parts, strict=True):
            last = ps[0]
            if last is None or (within is not None and t - last > within):
                continue
            since = ps[4]
            if since is None:
                continue
            n_raw += 1
            if t - since >= for_:
                ps[5] = True
                n_ok += 1
        if self.all:
            n = len(self.fors)
            ok, raw = n_ok == n, n_raw == n
        else:
            ok, raw = n_ok > 0, n_raw > 0
        self._decide(st, key, t, t_text, obs, out, ok, raw)

    def _entity_fed(self, st: CompoundState, i: int, entity: str, ps: list[Any], t: float) -> Any:
        """After an entity's part state ``ps`` took a sample: the key's summary shows the latest value
        and the set of entities whose condition is true is updated; the key is evaluated unless the
        sample is older than its last evaluation (another entity's later reading: never back in time)."""
        summary = st.parts[i]
        if summary[0] is None or t >= summary[0]:
            summary[0], summary[1] = t, ps[1]
        trues = st.trues
        if trues is None:
            trues = st.true_entities()
        if ps[4] is None:
            if trues[i].pop(entity, None) is not None and not trues[i]:
                summary[4], summary[5] = None, False  # (no entity true: nothing to summarise)
        else:
            trues[i][entity] = ps
        return None if t < st.t else st

    def _summarise(self, st: CompoundState, t: float) -> None:
        """A label-keyed rule's parts at ``t`` from its entities' own states: a part is true since the
        earliest time one entity (observed within ``within``) has been true, so it holds when one
        entity's condition holds, as PromQL's ``max by(parish) (x > 4)``. Only the entities whose
        condition is true are looked at (a parish's many quiet gauges cost nothing); the value a
        transition shows is picked when one is made (:meth:`_show`)."""
        within = self.within
        for for_, ps, now_true in zip(self.fors, st.parts, st.true_entities(), strict=True):
            if not now_true:  # (the usual case: no entity of the key meets this condition)
                ps[4] = None
                ps[5] = False
                continue
            last = since = None
            holding = False
            for s in now_true.values():
                s0, s4 = s[0], s[4]
                if within is not None and t - s0 > within:
                    continue
                if t - s4 >= for_:
                    s[5] = holding = True
                if last is None or s0 > last:
                    last = s0
                if since is None or s4 < since:
                    since = s4
            if last is None:
                ps[4] = None
                ps[5] = False
            else:
                ps[0] = last
                ps[4] = since
                ps[5] = holding

    def _show(self, st: CompoundState, t: float) -> None:
        """Each part's value as a label-keyed rule's transition shows it: the deciding entity's (a
        holding one before one only true; the highest for ``above``, lowest for ``below``, as
        ``max by``/``min by``), else the latest reading of the part."""
        within = self.within
        for part, ps, now_true in zip(self.parts, st.parts, st.true_entities(), strict=True):
            shown = None
            for s in now_true.values():
                if within is not None and t - s[0] > within:
                    continue
                if shown is None or (s[5] and not shown[5]) or (s[5] == shown[5] and _shows(part, s, shown)):
                    shown = s
            if shown is not None:
                ps[1] = shown[1]

    def _decide(
        self,
        st: CompoundState,
        key: str,
        t: float,
        t_text: str | None,
        obs: dict[str, Any] | None,
        out: list,
        ok: bool,
        raw: bool,
    ) -> None:
        """The alarm's next state from whether all (any) parts hold (``ok``) or are true (``raw``)."""
        old = st.state
        if ok:
            st.kff = None
            if old == FIRING:
                return
            new = FIRING
        elif old == FIRING and self.keep_firing_for > 0:
            if st.kff is None:
                st.kff = t
            new = FIRING if t - st.kff < self.keep_firing_for else (PENDING if raw else INACTIVE)
            if new == FIRING:
                return
        else:
            new = PENDING if raw else INACTIVE
            if new == old:
                return
        if new != FIRING:
            st.kff = None
        if st.subs is not None:
            self._show(st, t)
        values = {label: ps[1] for label, ps in zip(self.labels_, st.parts, strict=True)}
        obs = obs or st.obs
        if old != INACTIVE and (new == INACTIVE or (old == FIRING and new == PENDING)):
            out.append(
                self._line(t, t_text, key, "resolved" if old == FIRING else "inactive", st.since, obs, values)
            )
            old = INACTIVE
        if new != INACTIVE:
            if old == INACTIVE:
                st.since = t
            out.append(self._line(t, t_text, key, STATE_NAMES[new], st.since, obs, values))
        st.state = new
        st.obs = obs if new != INACTIVE else None

    def _line(
        self, t: float, t_text: str | None, key: str, state: str, since: float, obs: Any, values: dict
    ) -> AlarmTransition:
        tr = self.transition(
            t, t_text, key, state, self.severity, None, since, obs, shown=values, values=values
        )
        tr.values = values
        return tr

    def end(self, key: str, at: float, reason: str, out: list[AlarmTransition]) -> None:
        st = self.states.get(key)
        if st is None or st.state == INACTIVE:
            return
        if st.subs is not None:
            self._show(st, st.t)
        values = {p.label: ps[1] for p, ps in zip(self.parts, st.parts, strict=True)}
        tr = self._line(
            at,
            None,
            key,
            "resolved" if st.state == FIRING else "inactive",
            st.since,
            obs_context(st.obs),
            values,
        )
        tr.annotations["reason"] = reason
        out.append(tr)

    def active(self) -> list[dict[str, Any]]:
        for s in self.states.values():
            if s.state != INACTIVE and s.subs is not None:
                self._show(s, s.t)
        return [
            {
                "rule": self.id,
                "key": k,
                "state": STATE_NAMES[s.state],
                "severity": self.severity,
                "value": None,
                "values": {p.label: ps[1] for p, ps in zip(self.parts, s.parts, strict=True)},
            }
            for k, s in self.states.items()
            if s.state != INACTIVE
        ]

    load_state = staticmethod(CompoundState.load)
