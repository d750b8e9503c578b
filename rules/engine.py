"""The rule engine: one implementation for the live agent, replay, backtests and rule unit tests.

>>> from atalaia.rules.loader import load_texts
>>> rs = load_texts([("demo.yaml", '''
... rules:
...   - id: river-high
...     select: {type: WaterObserved, attribute: height}
...     severities: [{severity: high, above: 4.0}]
... ''')])
>>> engine = RuleEngine(rs)
>>> alarms, rejected = engine.observe_batch([{"time": "2024-03-01T00:00:00Z", "entity": "urn:x",
...     "type": "WaterObserved", "attributes": {"height": 4.2}}])
>>> [(a.at, a.rule, a.key, a.state, a.severity) for a in alarms]
[('2024-03-01T00:00:00Z', 'river-high', 'urn:x', 'firing', 'high')]
>>> restored = RuleEngine.restore(rs, engine.snapshot())
>>> restored.active_alarms()[0]["state"]
'firing'

Time is event time only: ``observe_batch`` evaluates each observation at its own time, and
``advance(now)`` runs the absence clock (pass event time in replays, the wall clock live).
"""

from __future__ import annotations

import heapq
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from atalaia.rules.alarm import AlarmTransition
from atalaia.rules.base import obs_context
from atalaia.rules.compiled import (
    NEG_INF,
    AbsentRule,
    CompiledRule,
    Scorer,
    StateRule,
    ThresholdRule,
    compile_rule,
)
from atalaia.rules.durations import format_duration
from atalaia.rules.loader import LoadedRule, RuleSet
from atalaia.rules.schema import Rule
from atalaia.rules.state import BOOLEAN_TEXT
from atalaia.streams.clock import format_time
from atalaia.streams.ingest.observation import entity_key

log = logging.getLogger(__name__)
SNAPSHOT_FORMAT = 1
DEFAULT_ALLOWED_LATENESS = 300.0


@dataclass(frozen=True, slots=True)
class Rejected:
    """An observation the engine did not evaluate, and why (the agent sends it to the DLQ)."""

    observation: Any
    reason: str
    # refused by its time (unreadable, too late, too far ahead): no rule of this engine evaluated
    # it (another engine, with its own clock, may: the rules stage marks it so when it forwards)
    untimely: bool = False


class ScorerMissing(ValueError):
    pass


class EntityPool:
    """Engines whose entities count against one limit per tenant together (the partitioned
    rules engines of one worker process: ``WORKER_ENTITIES``), as detector banks share
    ``detectors.bank.WORKER``. An engine leaves the pool when it is dropped (a revoked partition's)."""

    def __init__(self) -> None:
        import weakref

        self.engines: weakref.WeakSet[RuleEngine] = weakref.WeakSet()

    def held(self, tenant: str) -> int:
        """Entities of ``tenant`` ("" for none) the pool's engines hold rule state for."""
        return sum(len(e._entities.get(tenant, ())) for e in list(self.engines))


#: the live worker's partitioned rules engines (rules/stage.py): the limit is the process's
WORKER_ENTITIES = EntityPool()


def _key_tenant(key: str) -> str:
    r"""The tenant part of an entity identity (``entity_key``): its text before the first
    unescaped ``|``, unescaped; "" without one (a tenant-less entity).

    >>> _key_tenant("porto|urn:x"), _key_tenant("urn:x"), _key_tenant("a\\|b|urn:x"), _key_tenant("p\\|x")
    ('porto', '', 'a|b', '')
    """
    i = 0
    while i < len(key):
        c = key[i]
        if c == "\\":
            i += 2
            continue
        if c == "|":
            return re.sub(r"\\(.)", r"\1", key[:i], flags=re.DOTALL)
        i += 1
    return ""


def to_epoch(t: datetime | str | float) -> float:
    if isinstance(t, int | float):
        return float(t)
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    if t.tzinfo is None:
        raise ValueError(f"time {t.isoformat()} has no UTC offset")
    return t.timestamp()


def each_type(obs: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(type, observation) for each type of a multi-typed entity's observation (``types``, from
    ingest), with ``type`` set to it: rules on any of its types read it, and their alarms name the
    rule's type."""
    return [(typ, obs if typ == obs["type"] else {**obs, "type": typ}) for typ in obs["types"]]


class RuleEngine:
    """Evaluates a RuleSet over observations (plain dicts in the contract shape)."""

    def __init__(
        self,
        ruleset: RuleSet,
        scorer: Scorer | None = None,
        allowed_lateness: float = DEFAULT_ALLOWED_LATENESS,
        max_future: float | None = None,
        max_entities: int | None = None,
        pool: EntityPool | None = None,
    ) -> None:
        self.scorer = scorer
        # live guard: a new entity of a tenant that already has max_entities entities with rule
        # state (in this engine, or in the engines of ``pool`` together) is refused, so that one
        # sender inventing entity ids cannot grow the rules' memory without bound (every rule keeps
        # state per entity, an absence rule for ever): it fills its own tenant's room, not others'
        self.max_entities = max_entities or None
        self._entities: dict[str, set[str]] = {}  # tenant ("" for none) -> entity identities
        self._entities_full_logged = False
        self.pool = pool if pool is not None else EntityPool()
        self.pool.engines.add(self)
        self.allowed_lateness = float(allowed_lateness)
        # live guard: reject observations more than max_future ahead of the last advance(now)
        self.max_future = max_future
        self.clock = NEG_INF
        self.watermark = NEG_INF  # highest event time accepted
        self.absence_clock = NEG_INF  # last time the absence rules were evaluated
        self.stats: Counter[str] = Counter()
        self._deadlines: list[tuple[float, str, str]] = []  # (deadline, absent rule id, key)
        self._outbox: list[AlarmTransition] = []  # transitions from reload/restore, returned by the next call
        # (rule, key) -> [at text, at, state, severity, value, since] of the last transition emitted for it,
        # open or recently ended: what ``announce`` sends again after a broker reset, verbatim
        self._last: dict[tuple[str, str], list[Any]] = {}
        self._times: dict[str, float] = {}
        # observations a rule with ``unit:`` could not convert (filled by the evaluators, drained per batch)
        self._unit_rejects: list[Rejected] = []
        # data-quality warnings (a per-entity threshold missing, a table that no longer reads): drained by
        # ``drain_quality()``; also logged and counted
        self.quality: list[str] = []
        self._install(ruleset, {})

    # ------------------------------------------------------------------ rules
    def _install(
        self, ruleset: RuleSet, keep: dict[str, CompiledRule], compiled: list[CompiledRule] | None = None
    ) -> None:
        """``compiled``: ``ruleset``'s rules already compiled (fresh, without state), in order."""
        rules: list[CompiledRule] = []
        for pos, loaded in enumerate(ruleset.rules):
            rule = compiled[pos] if compiled is not None else compile_rule(loaded, pos)
            old = keep.get(rule.id)
            if old is not None and (old.fingerprint == rule.fingerprint or _same_shape(old, rule)):
                rule.states = old.states
                rule.faults = old.faults
            if isinstance(rule, ThresholdRule):
                rule.quality, rule.stats = self.quality, self.stats
                if old is not None and old.fingerprint == rule.fingerprint:
                    rule.ref_values = getattr(old, "ref_values", rule.ref_values)
            rules.append(rule)
        detector_rules = [r for r in rules if getattr(r, "detector", None)]
        if detector_rules and self.scorer is None:
            r = detector_rules[0]
            more = f" (and {len(detector_rules) - 1} more detector rules)" if len(detector_rules) > 1 else ""
            raise ScorerMissing(
                f"{r.loaded.where}: rule '{r.id}' uses detector '{r.detector}'{more} but no detectors are "  # type: ignore[attr-defined]
                "configured: pass a scorer (e.g. atalaia.detectors.bank.DetectorBank(...).score_learn)"
            )
        self.ruleset = ruleset
        self.rules = rules
        self.by_id = {r.id: r for r in rules}
        index: dict[tuple[str, str | None], list[CompiledRule]] = {}
        state_dispatch: dict[str, dict[str, list[tuple[Any, Any]]]] = {}
        compound: dict[str, list[Any]] = {}  # type -> the compound rules' steps, in rule order
        for r in rules:
            if r.kind == "compound":  # several (type, attribute) per rule: a path of their own
                for typ in dict.fromkeys(p.type for p in r.parts):  # type: ignore[attr-defined]
                    compound.setdefault(typ, []).append(r.stepper(typ, self.stats))  # type: ignore[attr-defined]
                continue
            if isinstance(r, StateRule):  # text/boolean values: a path of their own (no number check)
                key_of = None if r.simple_key else r.key_of
                if r.require_observed_time:
                    key_of = _observed_only(r.key_of, self.stats)
                state_dispatch.setdefault(r.type, {}).setdefault(r.attribute or "", []).append(
                    (r.observe_state, key_of)
                )
                continue
            index.setdefault((r.type, r.attribute), []).append(r)
        self._state_dispatch = state_dispatch
        self._compound = compound
        self.index = index
        self.any_attribute = {t: rs for (t, a), rs in index.items() if a is None}
        # the hot path's view of the index: type -> attribute -> segments in rule order
        dispatch: dict[str, dict[str | None, tuple[Segment, ...]]] = {}
        for (typ, attr), rs in index.items():
            dispatch.setdefault(typ, {})[attr] = _segments(rs, self.stats, self._unit_rejects)
        for r in rules:  # per-entity thresholds read off their own attribute: remember its latest value
            for attr in getattr(r, "ref_attributes", None) or ():
                by_attr = dispatch.setdefault(r.type, {})
                by_attr[attr] = (*by_attr.get(attr, ()), ((r.remember,), None))  # type: ignore[attr-defined]
        self._dispatch = dispatch
        self._any_attribute = {
            t: tuple(_entry(r, self.stats, self._unit_rejects)[:2] for r in rs)
            for t, rs in self.any_attribute.items()
        }
        # the types some rule of this engine reads: only their entities count against max_entities
        self._read_types = frozenset((*dispatch, *state_dispatch, *(compound or ()), *self._any_attribute))
        self.absent_rules = [r for r in rules if isinstance(r, AbsentRule)]
        self._deadlines = [
            (s.last_seen + r.absent_for, r.id, k)
            for r in self.absent_rules
            for k, s in r.states.items()
            if not s.firing
        ]
        heapq.heapify(self._deadlines)

    def reload(self, ruleset: RuleSet) -> list[AlarmTransition]:
        """Swap in new rules. Rules whose evaluation is unchanged (same id and fingerprint; labels and
        annotations may change) keep their state. A threshold rule whose limits alone changed
        (``above``/``below``, hysteresis, ``for``, ``keep_firing_for``: same :func:`shape`) keeps its
        state too, and its open alarms are evaluated again at once on their last value under the new
        limits (an alarm the new limits no longer hold ends, one that holds a new severity moves to
        it; inactive keys meet the new limits at their next observation). Open alarms of other changed
        or removed rules end now (``resolved``/``inactive`` at the watermark). Every transition the
        reload makes carries the annotation ``reason`` and is returned."""
        new_ids = {lr.rule.id for lr in ruleset.rules}
        old = self.by_id
        compiled = [compile_rule(lr, pos) for pos, lr in enumerate(ruleset.rules)]
        new_rules = {r.id: r for r in compiled}
        out: list[AlarmTransition] = []
        at = self.watermark if self.watermark > NEG_INF else 0.0
        retuned = []
        for rule in self.rules:
            new = new_rules.get(rule.id)
            if new is not None and new.fingerprint == rule.fingerprint:
                continue
            if new is not None and _same_shape(rule, new):
                retuned.append(rule.id)
                continue
            reason = "rule removed" if rule.id not in new_ids else "rule changed"
            for key in sorted(rule.states):
                rule.end(key, at, reason, out)  # type: ignore[attr-defined]
            for key in sorted(rule.faults):
                since, value, ctx, _ = rule.faults[key]
                tr = rule.fault_transition(at, None, key, "resolved", value, since, ctx)
                tr.annotations["reason"] = reason
                out.append(tr)
        self._install(ruleset, old, compiled)
        for rule_id in retuned:
            out += self.by_id[rule_id].reevaluate(at, "rule changed")  # type: ignore[attr-defined]
        self.stats["reloads"] += 1
        self._remember(out)
        return out

    # ------------------------------------------------------------------ hot path
    def _time(self, text: Any) -> float | None:
        t = self._times.get(text)
        if t is not None:
            return t
        if not isinstance(text, str):
            return None
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            return None
        if dt.tzinfo is None:
            return None
        if len(self._times) > 65536:
            self._times.clear()
        t = self._times[text] = dt.timestamp()
        return t

    def observe_batch(
        self, observations: Iterable[dict[str, Any]]
    ) -> tuple[list[AlarmTransition], list[Rejected]]:
        """Evaluate observations in the given order. Returns (transitions, rejected observations).

        Observations are records of the contract whose shape was checked where they came in: the
        rules stage decodes them (``decode_observation``), the fused stage builds them from its own
        normaliser, replay checks each line (``replay.observation_problem``) and rule unit tests
        build them from a validated test file. The engine checks what they mean, not their shape:
        time (RFC 3339 with an offset, not too far ahead, not too late) and attribute values (a
        finite number where a rule reads one)."""
        out: list[AlarmTransition] = self._outbox
        self._outbox = []
        rejected: list[Rejected] = []
        dispatch, any_attr, scorer = self._dispatch, self._any_attribute, self.scorer
        state_dispatch = self._state_dispatch
        deadlines = self._deadlines
        # the entity limit (max_entities): its sets, replaced only by compact and restore
        limited, known, read_types = self.max_entities is not None, self._entities, self._read_types
        parse = self._time
        inf, ninf = math.inf, -math.inf
        watermark, clock = self.watermark, self.clock
        last_text: Any = None  # consecutive observations often share their time text
        last_t = 0.0
        evaluations = late = accepted = 0
        for obs in observations:
            t_text = obs["time"]
            typ = obs["type"]
            attributes = obs["attributes"]
            entity = obs["entity"]
            tenant = obs.get("tenant")
            if tenant or "|" in entity or "\\" in entity:  # identity is (tenant, entity): so are keys
                entity = entity_key(tenant, entity)
            labels = obs.get("labels")
            if t_text == last_text:  # only ever a str that parsed
                t = last_t
            else:
                t = parse(t_text)
                if t is None:
                    rejected.append(
                        Rejected(obs, f"time {t_text!r} is not RFC 3339 with a UTC offset", untimely=True)
                    )
                    continue
                last_text, last_t = t_text, t
            if t > watermark:
                if self.max_future is not None and t > self.clock + self.max_future > NEG_INF:
                    rejected.append(
                        Rejected(
                            obs,
                            (
                                f"time {t_text} is {format_duration(t - self.clock)} ahead of the clock "
                                f"(tolerance {format_duration(self.max_future)})"
                            ),
                            untimely=True,
                        )
                    )
                    continue
                # absence runs up to the latest event time, or live (a wall clock) up to the
                # clock where that is earlier: a sender's fast clock never makes others absent early
                due = watermark if clock == ninf or clock >= watermark else clock
                if deadlines and due > self.absence_clock:
                    if deadlines[0][0] <= due:
                        self._absence(due, out)
                    else:  # nothing due: what _absence would conclude
                        self.absence_clock = due
                self.watermark = watermark = t
            elif t < watermark - self.allowed_lateness and (
                clock == ninf or t < clock - self.allowed_lateness
            ):
                # behind the latest event time AND the clock (live: the wall clock): one sender's
                # fast clock (its times up to max_future ahead) never makes others' readings late
                ref = watermark if clock == ninf or clock >= watermark else clock
                rejected.append(
                    Rejected(
                        obs,
                        (
                            f"too late: time {t_text} is {format_duration(ref - t)} behind the "
                            f"{'latest event time' if ref == watermark else 'clock'} "
                            f"{format_time(datetime.fromtimestamp(ref, UTC))} "
                            f"(allowed lateness {format_duration(self.allowed_lateness)})"
                        ),
                        untimely=True,
                    )
                )
                self.stats["rejected_late"] += 1
                continue
            if (
                limited
                and entity not in known.get(tenant or "", ())  # (the hot path: an entity held already)
                and (typ in read_types or ("types" in obs and not read_types.isdisjoint(obs["types"])))
                and not self._admit(tenant or "", entity)
            ):
                rejected.append(Rejected(obs, self._entity_limit(tenant or "")))
                continue
            for typ, obs in ((typ, obs),) if "types" not in obs else each_type(obs):  # noqa: B020
                by_attribute = dispatch.get(typ)
                if by_attribute is not None:
                    for name, v in attributes.items():
                        entries = by_attribute.get(name)
                        if entries is None:
                            continue
                        cls = v.__class__
                        if cls is not float:
                            if cls is not int:  # bool is not a number here
                                rejected.append(Rejected(obs, f"attribute {name!r} is not a number: {v!r}"))
                                continue
                        elif not ninf < v < inf:  # nan, inf, -inf
                            rejected.append(
                                Rejected(obs, f"attribute {name!r} is not a finite number: {v!r}")
                            )
                            continue
                        for evaluators, entry in entries:
                            if evaluators is not None:  # keyed by entity, no filter: nothing to decide
                                evaluations += len(evaluators)
                                for fn in evaluators:
                                    if not fn(obs, entity, t, t_text, v, out, scorer):
                                        late += 1
                                continue
                            fn, key_of, absent = entry
                            key = entity if key_of is None else key_of(obs)
                            if key is None:
                                continue
                            if absent:
                                fn(obs, key, t, t_text, out, deadlines)
                                continue
                            evaluations += 1
                            if not fn(obs, key, t, t_text, v, out, scorer):
                                late += 1
                if state_dispatch:
                    by_state = state_dispatch.get(typ)
                    if by_state is not None:
                        evaluations += self._states(
                            obs, typ, entity, t, t_text, attributes, labels, by_state, out
                        )
                if self._compound:
                    steps = self._compound.get(typ)
                    if steps is not None:  # rule order; a compound rule evaluates one key per observation
                        for step in steps:
                            evaluations += step(obs, entity, t, t_text, attributes, labels, out)
                seen = any_attr.get(typ)
                if seen:
                    for fn, key_of in seen:
                        key = entity if key_of is None else key_of(obs)
                        if key is not None:
                            fn(obs, key, t, t_text, out, deadlines)
            accepted += 1
        if self._unit_rejects:
            rejected += self._unit_rejects
            self._unit_rejects.clear()
        self.stats["observations"] += accepted
        self.stats["evaluations"] += evaluations
        self.stats["late_not_evaluated"] += late
        self.stats["rejected"] += len(rejected)
        self._remember(out)
        return out, rejected

    def _admit(self, tenant: str, entity: str) -> bool:
        """Whether ``entity`` of ``tenant`` may hold rule state: one it holds already, or a new
        one while the tenant has fewer than ``max_entities`` (this engine's pool together)."""
        held = self._entities.get(tenant)
        if held is None:
            held = self._entities[tenant] = set()
        elif entity in held:
            return True
        assert self.max_entities is not None
        if self.pool.held(tenant) >= self.max_entities:
            self.stats["rejected_entity_limit"] += 1
            return False
        held.add(entity)
        return True

    def _entity_limit(self, tenant: str) -> str:
        """The DLQ reason of a new entity refused at the limit (and one WARNING per engine)."""
        who = f"tenant {tenant!r}" if tenant else "senders without a tenant"
        reason = (
            f"entity limit: {who} already has {self.max_entities} entities with rule state "
            "(ATALAIA_RULES_MAX_ENTITIES); a new entity is refused until some stop reporting"
        )
        if not self._entities_full_logged:
            self._entities_full_logged = True
            log.warning("%s (counted on the DLQ)", reason)
        return reason

    def _held_entities(self) -> None:
        """The entities each tenant holds rule state for, from the states (after a restore or a
        compact): an entity whose every entity-keyed state is gone frees its place."""
        if self.max_entities is None:
            return
        held: dict[str, set[str]] = {}
        for rule in self.rules:
            if rule.key_is_entity:
                for key in rule.states:
                    held.setdefault(_key_tenant(key), set()).add(key)
        self._entities = held
        self._entities_full_logged = False

    def _states(
        self,
        obs: dict[str, Any],
        typ: str,
        entity: str,
        t: float,
        t_text: str,
        attributes: dict[str, Any],
        labels: dict[str, Any] | None,
        by_state: dict[str, list[tuple[Any, Any]]],
        out: list[AlarmTransition],
    ) -> int:
        """State rules of this type: the attribute's text/boolean (or number) value, from the
        attributes or else the labels (where ingest keeps text properties)."""
        n = 0
        for name, entries in by_state.items():
            v = attributes.get(name)
            label = v is None and labels is not None
            if label:
                v = labels.get(name)  # type: ignore[union-attr]
            if v is None or not isinstance(v, str | bool | int | float):
                continue
            boolean = label and v in BOOLEAN_TEXT  # (a boolean property, kept as a label)
            for fn, key_of in entries:
                key = entity if key_of is None else key_of(obs)
                if key is not None:
                    n += 1
                    arg = (v == "true") if boolean and fn.__self__.reads_booleans else v
                    if not fn(obs, key, t, t_text, arg, out):
                        self.stats["late_not_evaluated"] += 1
        return n

    def drain_quality(self, log_them: bool = True) -> list[str]:
        """Data-quality warnings since the last call (each counted in ``stats``, and logged)."""
        out = self.quality[:]
        self.quality.clear()
        self.stats["quality_warnings"] += len(out)
        for message in out if log_them else ():
            log.warning("data quality: %s", message)
        return out

    # ------------------------------------------------------------------ clocks
    def _absence(self, now: float, out: list[AlarmTransition]) -> None:
        deadlines = self._deadlines
        by_id = self.by_id
        fired: list[AlarmTransition] = []
        while deadlines and deadlines[0][0] <= now:
            _, rule_id, key = heapq.heappop(deadlines)
            rule = by_id.get(rule_id)
            if isinstance(rule, AbsentRule):
                rule.due(key, now, fired, deadlines)
        if fired:  # same time: rule order, then key (independent of the heap's history)
            fired.sort(key=lambda tr: (by_id[tr.rule].position, tr.key))
            out += fired
        self.absence_clock = now

    def set_clock(self, now: datetime | str | float) -> None:
        """Live: the wall clock as a batch arrives. Times are judged against it (lateness, the
        future tolerance) and absence falls due no later than it, between the ticks of
        :meth:`advance`, which alone runs absence on the clock (not during a backlog: the stages
        skip it while catching up, and absence then follows event time, as in replays)."""
        t = to_epoch(now)
        if t > self.clock:
            self.clock = t

    def advance(self, now: datetime | str | float) -> list[AlarmTransition]:
        """Run the absence clock up to ``now`` (event time in replays, the wall clock live).
        Absence is never evaluated twice for the same or an earlier time."""
        out, self._outbox = self._outbox, []
        t = to_epoch(now)
        self.set_clock(t)
        for rule in self.rules:  # threshold tables changed on disk are read again (a stat per table)
            if getattr(rule, "tables", None):
                rule.refresh_tables()  # type: ignore[attr-defined]
        if t > self.absence_clock:
            self._absence(t, out)
        self._remember(out)
        return out

    def finish(self) -> list[AlarmTransition]:
        """End of a replay: evaluate absence at the last event time."""
        return self.advance(self.watermark) if self.watermark > NEG_INF else self.advance(NEG_INF)

    def late_horizon(self) -> float:
        """The earliest event time still accepted: the allowed lateness behind the latest event
        time, or behind the clock where that is earlier (live, ``advance(now)`` sets it to the
        wall clock: times ahead of it, up to ``max_future``, do not make others late)."""
        latest = self.watermark if self.clock == NEG_INF else min(self.watermark, self.clock)
        return latest - self.allowed_lateness

    def compact(self) -> int:
        """Forget per-key state that can no longer change any output (inactive keys whose windows hold
        nothing an accepted observation could need). Returns how many states were dropped."""
        horizon = self.late_horizon()
        ended = self.watermark - max(ENDED_KEPT_S, self.allowed_lateness)
        for k in [k for k, v in self._last.items() if v[2] in ("resolved", "inactive") and v[1] < ended]:
            del self._last[k]
        dropped = 0
        for rule in self.rules:
            if not rule.can_purge:
                continue
            states = rule.states
            dead = [k for k, s in states.items() if rule.purgeable(s, horizon)]  # type: ignore[attr-defined]
            for k in dead:
                del states[k]
            dropped += len(dead)
        self._held_entities()
        return dropped

    # ------------------------------------------------------------------ introspection
    def _remember(self, out: list[AlarmTransition]) -> None:
        last, rules = self._last, self.by_id
        for tr in out:
            if tr.rule in rules:  # (a rule's sensor-fault alarm: nothing to tell it again with)
                last[(tr.rule, tr.key)] = [tr.at, to_epoch(tr.at), tr.state, tr.severity, tr.value, tr.since]

    def announce(self) -> list[AlarmTransition]:
        """The last transition of every alarm that is open or ended lately, again, verbatim (same
        time, state and severity: the same deterministic id), in time order: sent after the broker
        lost records in flight (``streams.stage``: a broker reset), so that no alarm stays open
        here while the incident manager never heard of it, nor open there after it ended here
        (a lost ``resolved``), nor at another severity. Where it was heard, the manager counts a
        duplicate."""
        found: list[tuple[float, int, str, AlarmTransition]] = []
        for (rid, key), (at_text, at, state, severity, value, since_text) in self._last.items():
            rule = self.by_id.get(rid)
            if rule is None:
                continue  # (a rule removed: its end was announced then)
            st = rule.states.get(key)
            since = to_epoch(since_text) if since_text else at
            obs = getattr(st, "obs", None)
            if rule.kind == "compound" and st is not None:  # its parts' values, as it tells them
                values = {p.label: ps[1] for p, ps in zip(rule.parts, st.parts, strict=True)}  # type: ignore[attr-defined]
                tr = rule._line(at, at_text, key, state, since, obs, values)  # type: ignore[attr-defined]
            else:
                shown = st.prev if rule.kind == "state" and st is not None else None  # type: ignore[union-attr]
                tr = rule.transition(at, at_text, key, state, severity, value, since, obs, shown)
            found.append((at, rule.position, key, tr))
        found.sort(key=lambda f: (f[0], f[1], f[2]))
        return [f[3] for f in found]

    def active_alarms(self) -> list[dict[str, Any]]:
        """Open alarms (pending or firing) in rule order, then key."""
        out: list[dict[str, Any]] = []
        for rule in self.rules:
            out += sorted(rule.active(), key=lambda a: a["key"])
            out += [
                {
                    "rule": f"{rule.id}:sensor-fault",
                    "key": k,
                    "state": "firing",
                    "severity": "low",
                    "value": f[1],
                }
                for k, f in sorted(rule.faults.items())
            ]
        return out

    def state_count(self) -> int:
        return sum(len(r.states) for r in self.rules)

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> bytes:
        """Everything needed to continue exactly: per (rule, key) state, clocks, counters."""
        body = {
            "format": SNAPSHOT_FORMAT,
            "watermark": _finite(self.watermark),
            "absence_clock": _finite(self.absence_clock),
            "allowed_lateness": self.allowed_lateness,
            "stats": dict(self.stats),
            "outbox": [tr.to_dict() for tr in self._outbox],
            "last": [[rid, key, *v] for (rid, key), v in self._last.items()],
            "rules": [
                {
                    "rule": _rule_document(r.loaded.rule),
                    "group": r.group,
                    "file": r.loaded.file,
                    "line": r.loaded.line,
                    "states": {k: _dump(s) for k, s in r.states.items()},
                    **({"faults": r.faults} if r.faults else {}),
                    **({"ref_values": r.ref_values} if getattr(r, "ref_values", None) else {}),
                }
                for r in self.rules
            ],
        }
        return orjson.dumps(body)

    @classmethod
    def restore(
        cls,
        ruleset: RuleSet,
        data: bytes,
        scorer: Scorer | None = None,
        allowed_lateness: float | None = None,
        max_future: float | None = None,
        max_entities: int | None = None,
        pool: EntityPool | None = None,
    ) -> RuleEngine:
        """Rebuild an engine from :meth:`snapshot`, then :meth:`reload` ``ruleset``: state of unchanged
        rules continues exactly; open alarms of rules changed or removed since the snapshot end, and those
        transitions are returned by the next ``observe_batch``/``advance``."""
        body = orjson.loads(data)
        if body.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unknown rule-engine snapshot format {body.get('format')!r}")
        saved_rules = RuleSet(
            [
                LoadedRule(Rule.model_validate(r["rule"]), r["group"], r["file"], r["line"])
                for r in body["rules"]
            ]
        )
        lateness = body["allowed_lateness"] if allowed_lateness is None else allowed_lateness
        engine = cls(
            saved_rules,
            scorer=scorer,
            allowed_lateness=lateness,
            max_future=max_future,
            max_entities=max_entities,
            pool=pool,
        )
        engine.watermark = _infinite(body["watermark"])
        engine.absence_clock = _infinite(body["absence_clock"])
        engine.stats.update(body["stats"])
        for rule, saved in zip(engine.rules, body["rules"], strict=True):
            load = rule.load_state  # type: ignore[attr-defined]
            rule.states = {k: load(_undump(v)) for k, v in saved["states"].items()}
            rule.faults = saved.get("faults", {})
            if "ref_values" in saved:
                rule.ref_values = saved["ref_values"]  # type: ignore[attr-defined]
        engine._install(saved_rules, engine.by_id)  # rebuild the absence deadlines from the states
        engine._last = {(r[0], r[1]): r[2:] for r in body.get("last", ())}  # (earlier releases: none)
        outbox = [AlarmTransition.from_dict(d) for d in body["outbox"]]
        outbox += engine.reload(ruleset)
        engine._outbox = outbox
        engine._held_entities()  # (the entities the snapshot's states hold)
        engine.stats["reloads"] -= 1  # restoring is not a reload
        if not engine.stats["reloads"]:
            del engine.stats["reloads"]  # so a restored engine's snapshot is the one it came from
        return engine


#: how long (event time) an ended alarm's last transition is kept for ``announce``
ENDED_KEPT_S = 3600.0


def _same_shape(old: CompiledRule, new: CompiledRule) -> bool:
    """The two versions of a rule differ in their limits alone: the state per key carries over."""
    return old.shape is not None and old.shape == new.shape and type(old) is type(new)


Entry = tuple[Any, Any, bool]
Segment = tuple[tuple[Any, ...] | None, Entry | None]


def _segments(rules: list[CompiledRule], stats: Counter[str], sink: list[Rejected]) -> tuple[Segment, ...]:
    """Rules of one (type, attribute) in order, as segments: (evaluators, None) for a run of evaluators
    keyed by entity without filter (called back to back), or (None, entry) for any other rule."""
    out: list[Segment] = []
    for rule in rules:
        fn, key_of, absent = entry = _entry(rule, stats, sink)
        if key_of is None and not absent:
            if out and out[-1][0] is not None:
                out[-1] = ((*out[-1][0], fn), None)  # type: ignore[misc]
            else:
                out.append(((fn,), None))
        else:
            out.append((None, entry))
    return tuple(out)


def _entry(rule: CompiledRule, stats: Counter[str], sink: list[Rejected]) -> Entry:
    """(bound evaluator, key function or None when the key is the entity, is an absence rule)."""
    key_of = None if rule.simple_key else rule.key_of
    if rule.require_observed_time:
        key_of = _observed_only(rule.key_of, stats)
    if rule.__class__ is AbsentRule:
        return rule.seen, key_of, True  # type: ignore[attr-defined]
    fn = rule.observe  # type: ignore[attr-defined]
    if rule.loaded.rule.range is not None:
        fn = _ranged(fn, rule, stats)
    unit = rule.loaded.rule.unit
    if unit is not None and rule.attribute is not None:
        return _converting(fn, rule, unit, stats, sink), key_of, False
    return fn, key_of, False


def _ranged(fn: Any, rule: CompiledRule, stats: Counter[str]) -> Any:
    """The evaluator of a rule with ``range: [min, max]``: a value outside (a physically impossible
    reading) raises the ``<rule>:sensor-fault`` alarm and is not evaluated (never in the hazard rule's
    window); the next possible value of the key resolves the fault and is evaluated as usual."""
    low, high = rule.loaded.rule.range  # type: ignore[misc]
    faults = rule.faults

    def observe(
        obs: dict[str, Any], key: str, t: float, t_text: str, v: float, out: Any, scorer: Any
    ) -> bool:
        if low <= v <= high:
            fault = faults.get(key)
            if fault is not None and t >= fault[3]:
                del faults[key]
                out.append(rule.fault_transition(t, t_text, key, "resolved", v, fault[0], obs))
            return fn(obs, key, t, t_text, v, out, scorer)
        stats["sensor_fault"] += 1
        fault = faults.get(key)
        if fault is None:
            faults[key] = [t, v, obs_context(obs), t]
            out.append(rule.fault_transition(t, t_text, key, "firing", v, t, obs))
        elif t > fault[3]:
            fault[1], fault[3] = v, t
        return True

    return observe


def _converting(fn: Any, rule: CompiledRule, unit: str, stats: Counter[str], sink: list[Rejected]) -> Any:
    """The evaluator of a rule with ``unit:``: the value is converted from the observation's unit code
    for the attribute (``units``; without one, the unit the Smart Data Models type documents, else the
    rule's own, counted in ``stats["unit_assumed"]``). A code that cannot be converted is a data-quality
    rejection with the reason (``stats["rejected_unit"]``), never a comparison."""
    from atalaia.rules.sdm import documented_unit
    from atalaia.rules.units import converter

    attribute = rule.attribute
    assumed = documented_unit(rule.type, attribute or "")
    factors: dict[str, Any] = {}

    def observe(
        obs: dict[str, Any], key: str, t: float, t_text: str, v: float, out: Any, scorer: Any
    ) -> bool:
        units = obs.get("units")
        code = units.get(attribute) if units else None
        if code is None:
            code = assumed
            if code is None:
                stats["unit_assumed"] += 1
                return fn(obs, key, t, t_text, v, out, scorer)
        conv = factors.get(code)
        if conv is None:
            if len(factors) >= 256:  # unit codes come from the senders: bounded
                factors.clear()
            conv = factors[code] = converter(code, unit, attribute) if code.__class__ is str else "not text"
        if conv.__class__ is str:
            reason = f"rule '{rule.id}': attribute {attribute!r} in {code!r}: {conv}"
            if not (sink and sink[-1].observation is obs and sink[-1].reason == reason):
                sink.append(Rejected(obs, reason))
            stats["rejected_unit"] += 1
            return True
        return fn(obs, key, t, t_text, conv(v), out, scorer)

    return observe


def _observed_only(key_of: Any, stats: Counter[str]) -> Any:
    """``key_of`` for a rule with ``require_observed_time``: an observation timed by the notification
    or the reception (``time_source`` notified/received) is skipped and counted, never evaluated."""

    def observed_key_of(obs: dict[str, Any]) -> str | None:
        source = obs.get("time_source")
        if source is not None and source != "observed":
            stats["skipped_unobserved_time"] += 1
            return None
        return key_of(obs)

    return observed_key_of


_RULE_DOCS: dict[int, tuple[Rule, orjson.Fragment]] = {}  # id(rule) -> (rule, its JSON)


def _rule_document(rule: Rule) -> orjson.Fragment:
    """A rule's definition in a snapshot, serialised once per rule (rules are frozen models; with
    1 000 rules, dumping them again at every checkpoint cost more than all the per-key state)."""
    hit = _RULE_DOCS.get(id(rule))
    if hit is not None and hit[0] is rule:
        return hit[1]
    doc = orjson.Fragment(orjson.dumps(rule.model_dump(mode="json", by_alias=True, exclude_unset=True)))
    if len(_RULE_DOCS) >= 100_000:
        _RULE_DOCS.clear()
    _RULE_DOCS[id(rule)] = (rule, doc)
    return doc


def _finite(x: float) -> float | None:
    return None if x == NEG_INF else x


def _infinite(x: float | None) -> float:
    return NEG_INF if x is None else x


def _dump(state: Any) -> list[Any]:
    return ["-inf" if x == NEG_INF else x for x in state.dump()]


def _undump(d: list[Any]) -> list[Any]:
    return [NEG_INF if x == "-inf" else x for x in d]
