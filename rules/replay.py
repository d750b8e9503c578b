"""Offline drivers of the engine: replay a JSON-lines file, and backtest (alarm statistics per rule)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from atalaia.rules.alarm import AlarmTransition
from atalaia.rules.compiled import Scorer
from atalaia.rules.engine import DEFAULT_ALLOWED_LATENESS, RuleEngine
from atalaia.rules.loader import RuleSet

BATCH = 5000


def read_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) per non-blank line; an unparsable line yields its error text."""
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield n, RuntimeError(f"invalid JSON: {exc}")


def observation_problem(obj: dict[str, Any]) -> str | None:
    """Why a JSON object read from a replay file is not an observation the engine can take, or None.

    This is replay's boundary, the counterpart of ``decode_observation`` on the live topics: the
    engine trusts the shape of what it is given and checks only its meaning (time, lateness,
    numbers). It is looser than the topic's contract where replay files are: attribute values may
    be text or booleans (state rules read them), labels any mapping, and time any text (the engine
    says why a text is no usable time)."""
    for name in ("time", "type", "attributes", "entity"):
        if name not in obj:
            return f"not an observation: missing {name!r}"
    if obj["time"].__class__ is not str:
        return f"time {obj['time']!r:.80} is not RFC 3339 text"
    entity = obj["entity"]
    if obj["type"].__class__ is not str or entity.__class__ is not str or not entity:
        return "'type' and 'entity' must be non-empty text"
    tenant = obj.get("tenant")
    if tenant is not None and (tenant.__class__ is not str or "|" in tenant):
        return "'tenant' must be text without '|'"
    labels = obj.get("labels")
    if labels is not None and labels.__class__ is not dict:
        return "'labels' must be a mapping of text"
    if obj["attributes"].__class__ is not dict:
        return "'attributes' must be a mapping"
    return None


@dataclass(slots=True)
class ReplayResult:
    transitions: list[AlarmTransition]
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    engine: RuleEngine | None = None
    first_time: float | None = None  # event time of the first observation of the file
    quality: list[str] = field(default_factory=list)  # data-quality warnings (missing thresholds...)


def replay(
    ruleset: RuleSet,
    rows: Iterable[tuple[int, Any]],
    scorer: Scorer | None = None,
    allowed_lateness: float = DEFAULT_ALLOWED_LATENESS,
) -> ReplayResult:
    """Run observations through a fresh engine, in file order, in batches like the live agent; absence
    is evaluated at event time. Transitions come out in the contract order: time, rule position, key."""
    engine = RuleEngine(ruleset, scorer=scorer, allowed_lateness=allowed_lateness)
    out: list[AlarmTransition] = []
    rejected: list[tuple[int, str]] = []
    batch: list[Any] = []
    lines: list[int] = []
    first: list[float] = []

    def flush() -> None:
        got, rej = engine.observe_batch(batch)
        out.extend(got)
        ids = {id(o): n for o, n in zip(batch, lines, strict=True)}
        rejected.extend((ids.get(id(r.observation), 0), r.reason) for r in rej)
        batch.clear()
        lines.clear()

    for n, obj in rows:
        if isinstance(obj, RuntimeError):
            rejected.append((n, str(obj)))
            continue
        if not isinstance(obj, dict):
            rejected.append((n, "not a JSON object"))
            continue
        problem = observation_problem(obj)
        if problem is not None:
            rejected.append((n, problem))
            continue
        if not first and isinstance(obj.get("time"), str):
            with contextlib.suppress(ValueError):
                first.append(datetime.fromisoformat(obj["time"]).timestamp())
        batch.append(obj)
        lines.append(n)
        if len(batch) >= BATCH:
            flush()
    flush()
    out += engine.finish()
    quality = engine.drain_quality(log_them=False)
    return ReplayResult(
        sort_transitions(out, ruleset), rejected, engine, first[0] if first else None, quality
    )


def sort_transitions(transitions: list[AlarmTransition], ruleset: RuleSet) -> list[AlarmTransition]:
    position = {lr.rule.id: i for i, lr in enumerate(ruleset.rules)}
    return sorted(
        transitions,
        key=lambda a: (
            datetime.fromisoformat(a.at),
            position.get(a.rule.removesuffix(":sensor-fault"), -1),
            a.key,
        ),
    )


# ---------------------------------------------------------------------- backtest
@dataclass(slots=True)
class RuleStats:
    rule: str
    alarms: int = 0  # episodes that reached firing
    pending_only: int = 0  # pending episodes that never fired
    firing_seconds: float = 0.0
    transitions: int = 0
    keys: int = 0
    chattering_keys: int = 0  # keys with >= 3 transitions within one minute (EEMUA 191)
    transitions_per_hour: float = 0.0

    def row(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "alarms": self.alarms,
            "pending_only": self.pending_only,
            "firing_hours": round(self.firing_seconds / 3600, 3),
            "transitions": self.transitions,
            "transitions_per_hour": round(self.transitions_per_hour, 3),
            "keys": self.keys,
            "chattering_keys": self.chattering_keys,
        }


def backtest(ruleset: RuleSet, result: ReplayResult) -> list[RuleStats]:
    """Per rule: alarms, time firing (open alarms count until the end of the history), transitions per
    hour of history, keys alarmed, chattering keys."""
    engine = result.engine
    end = engine.watermark if engine is not None else 0.0
    start = result.first_time if result.first_time is not None else end
    span = end - start  # nan when nothing was observed (no watermark): no time, no rate
    hours = span / 3600 if span > 3.6e-6 else 1e-9
    stats = {lr.rule.id: RuleStats(lr.rule.id) for lr in ruleset.rules}
    firing_since: dict[tuple[str, str], float] = {}
    recent: dict[tuple[str, str], list[float]] = {}
    keys: dict[str, set[str]] = {}
    chatter: dict[str, set[str]] = {}
    for tr in result.transitions:
        st = stats[tr.rule]
        at = datetime.fromisoformat(tr.at).timestamp()
        ak = (tr.rule, tr.key)
        st.transitions += 1
        keys.setdefault(tr.rule, set()).add(tr.key)
        times = recent.setdefault(ak, [])
        times.append(at)
        while times and times[0] < at - 60:
            times.pop(0)
        if len(times) >= 3:
            chatter.setdefault(tr.rule, set()).add(tr.key)
        if tr.state == "firing" and ak not in firing_since:
            st.alarms += 1
            firing_since[ak] = at
        elif tr.state == "resolved" and ak in firing_since:
            st.firing_seconds += at - firing_since.pop(ak)
        elif tr.state == "inactive":
            st.pending_only += 1
    for (rule, _), since in firing_since.items():
        stats[rule].firing_seconds += max(end - since, 0.0)
    for rule, st in stats.items():
        st.keys = len(keys.get(rule, ()))
        st.chattering_keys = len(chatter.get(rule, ()))
        st.transitions_per_hour = st.transitions / hours
    return list(stats.values())
