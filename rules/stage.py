"""The rules stage core: ``atalaia.observations`` → ``atalaia.alarms``, and the rule files it
runs (reloaded on change, off the event loop). One rule engine and one detector bank per
partition; the fused ingest + rules core (``rules.fused``) wraps it. No I/O on the loop.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from atalaia.streams.ingest.observation import decode_observation, entity_key, partition_key
from atalaia.streams.records import decode, dlq, received_time
from atalaia.streams.stage import Out

if TYPE_CHECKING:
    from atalaia.detectors.config import DetectorsConfig
    from atalaia.rules.alarm import AlarmTransition
    from atalaia.rules.loader import RuleSet
    from atalaia.streams.config_yaml import YamlLimits
    from atalaia.streams.settings import Settings

    Load = Callable[[list[Path], YamlLimits], RuleSet]

log = logging.getLogger(__name__)
# a reload is one per edit (never a retry loop): its refusal is always written, also the same
# refusal again within the log filter's interval (an edit fixed and broken again the same way was
# silent: the last line read "rules reloaded" while the latest edit was refused)
ONCE_PER_EDIT = {"ratelimit": False}


def _frame(*parts: bytes) -> bytes:
    import struct

    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _unframe(data: bytes) -> list[bytes]:
    import struct

    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack_from(">I", data, i)
        out.append(data[i + 4 : i + 4 + n])
        i += 4 + n
    return out


_RELOADS: ThreadPoolExecutor | None = None  # one worker thread for rule reloads, shared by every RuleFiles


def _reload_thread() -> ThreadPoolExecutor:
    global _RELOADS
    if _RELOADS is None:
        _RELOADS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rules-reload")
    return _RELOADS


def _load_isolated(paths: list[Path], limits: YamlLimits, detectors: frozenset[str] | None = None) -> RuleSet:
    """Runs in the reload thread: the rule files loaded in a child process (config_yaml limits,
    a hard time limit and a memory limit), so a hostile file costs neither the loop nor memory."""
    from atalaia.rules.loader import load_rules
    from atalaia.streams.config_yaml import run_isolated

    return run_isolated(load_rules, paths, limits=limits, detectors=detectors)


def reload_changes(old: Any, new: Any, limit: int = 10) -> str:
    """What a reload changed, by rule id and file (at most ``limit`` of each kind named):
    ``"; added: a (f.yaml); removed: b (g.yaml); changed: c"``, or ``""``."""
    was = {r.rule.id: r for r in old.rules}
    now = {r.rule.id: r for r in new.rules}

    def named(ids: list[str], rules: dict[str, Any]) -> str:
        shown = ", ".join(f"{i} ({Path(rules[i].file).name})" for i in ids[:limit])
        return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")

    added = sorted(now.keys() - was.keys())
    removed = sorted(was.keys() - now.keys())
    changed = sorted(i for i in now.keys() & was.keys() if now[i].rule != was[i].rule)
    parts = [
        f"{kind}: {named(ids, rules)}"
        for kind, ids, rules in (("added", added, now), ("removed", removed, was), ("changed", changed, now))
        if ids
    ]
    return "; " + "; ".join(parts) if parts else ""


class RuleFiles:
    """The rule set of the configured paths, reloaded when a file changes (checked on ticks).

    The first load runs here, held to the YAML limits (``atalaia.streams.config_yaml``). Neither
    the check nor a reload runs on the event loop: ``changed()`` only starts a check in the
    reload thread, which compares the files' stamps (a glob and a stat of each) and, when they
    changed, runs ``load(paths, limits)`` (by default parsing in a child process with a time and
    memory limit); a later ``changed()`` picks up the result. One check runs at a time for all
    the partitions' cores sharing the instance. An invalid or hostile edit (a YAML bomb, a 1 GB
    file, a rule naming a detector the detectors configuration lacks) is logged as
    ``file:line:col`` errors and the running rules stay.

    ``detectors``: the detector names the worker's detectors configuration knows
    (``DetectorsConfig.known``); a rule's ``detector:`` must be one of them.
    """

    def __init__(
        self,
        paths: list[str | Path],
        limits: YamlLimits | None = None,
        load: Load = _load_isolated,
        detectors: Collection[str] | None = None,
    ) -> None:
        from atalaia.rules.loader import load_rules
        from atalaia.streams.config_yaml import YamlLimits

        self.paths = [Path(p) for p in paths]
        self.limits = limits or YamlLimits.from_env()
        known = None if detectors is None else frozenset(detectors)
        self.load = load if known is None else functools.partial(load, detectors=known)
        self.stamp = self._stamp()  # read and written by the reload thread from now on
        self.ruleset = load_rules(self.paths, self.limits, known)
        self._no_rules()
        self.templates: list[Any] = []
        # the check (and reload) running in the reload thread: None, or (files edited, the rule
        # set or why it did not load) when files changed
        self.pending: Future[tuple[list[str], Any] | None] | None = None
        # called in the reload thread after a reload was accepted (streams.lastgood keeps the files)
        self.on_reload: Callable[[], Any] | None = None

    def _stamp(self) -> tuple:
        from atalaia.rules.loader import file_stamps

        return file_stamps(self.paths)

    def changed(self) -> bool:
        """True when a reload finished with a valid rule set, now in ``ruleset``. Never blocks and
        touches no file: it starts a check in the reload thread, or picks up the last one's result;
        an invalid rule set is logged and changes nothing."""
        future = self.pending
        if future is None:
            self.pending = _reload_thread().submit(self._check)
            return False
        if not future.done():
            return False
        self.pending = None
        return self._finish(future)

    def _check(self) -> tuple[list[str], Any] | None:
        """In the reload thread: None when no file changed, else (the files edited, the rule set
        loaded or the exception that stopped it)."""
        stamp = self._stamp()
        if stamp == self.stamp:
            return None
        edited = sorted({f for f, _ in set(stamp) - set(self.stamp)}) or [str(p) for p in self.paths]
        self.stamp = stamp
        try:
            ruleset = self.load(self.paths, self.limits)
        except Exception as e:  # judged on the loop (_finish)
            return edited, e
        return edited, (ruleset, _compile_templates(ruleset))

    def _finish(self, future: Future[tuple[list[str], Any] | None]) -> bool:
        from atalaia.rules.errors import RuleFileError
        from atalaia.streams.config_yaml import IsolatedLoadError

        try:
            result = future.result()
        except Exception as e:  # the files could not be looked at: try again on the next tick
            log.error("cannot check the rule files for changes; keeping the running rules: %r", e)
            return False
        if result is None:
            return False
        edited, loaded = result
        try:
            if isinstance(loaded, BaseException):
                raise loaded
            ruleset, templates = loaded
        except RuleFileError as e:
            log.error(
                "rule files changed but do not load; keeping the running rules:\n%s", e, extra=ONCE_PER_EDIT
            )
            return False
        except (IsolatedLoadError, MemoryError) as e:  # timed out or died: blame the edited files
            what = str(e) or type(e).__name__
            log.error(
                "rule files changed but do not load; keeping the running rules:\n%s",
                "\n".join(f"{f}:1:1: loading refused: {what}" for f in edited),
                extra=ONCE_PER_EDIT,
            )
            return False
        except Exception as e:  # whatever else: never lose the running rules
            log.error(
                "rule files changed but do not load; keeping the running rules:\n%r", e, extra=ONCE_PER_EDIT
            )
            return False
        before = len(self.ruleset.rules)
        what = reload_changes(self.ruleset, ruleset)
        self.ruleset = ruleset
        self.templates = templates  # held while these rules run: the engines' reloads share them
        if ruleset.rules:
            log.info("rules reloaded: %d rule(s)%s", len(ruleset.rules), what)
        self._no_rules(before)
        if self.on_reload is not None:
            _reload_thread().submit(self.on_reload)  # off the loop: copies and checks the files
        return True

    def _files_read(self) -> str:
        return (
            ", ".join(f for f, _ in self.stamp)
            or "none (no .yaml file in " + ", ".join(str(p) for p in self.paths) + ")"
        )

    def _no_rules(self, before: int | None = None) -> None:
        """Zero rules switch alarming off: said in a WARNING (which files were read) and named on
        ``/health`` (``degraded``: "no rules loaded") for as long as it lasts. A valid but empty
        rules file, hot-reloaded, had resolved every open alarm ("rule removed") with one INFO
        line."""
        from atalaia.streams.guard import HEALTH

        if self.ruleset.rules:
            HEALTH.condition("no-rules", None)
            return
        files = self._files_read()
        if before is None:
            log.warning(
                "no rules loaded: ALARMING IS OFF (no rule evaluates observations); files read: %s", files
            )
        else:
            log.warning(
                "rules reloaded: 0 rule(s)%s: ALARMING IS OFF (no rule evaluates observations; open "
                "alarms resolve as 'rule removed'); files read: %s",
                f" (there were {before})" if before else "",
                files,
            )
        HEALTH.condition("no-rules", f"no rules loaded: alarming is off (rule files read: {files})")


def _compile_templates(ruleset: RuleSet) -> list[Any]:
    """In the reload thread: every label and annotation template of ``ruleset`` compiled into the
    shared cache (``templates.template``), so that the engines' reloads on the event loop find them
    compiled (about 1 ms a template: a minute of a stalled loop for 5 000 rules with their own
    texts, before)."""
    from atalaia.rules.templates import template

    return [
        template(text)
        for lr in ruleset.rules
        for text in (*lr.rule.labels.values(), *lr.rule.annotations.values())
    ]


def entity_keyed(ruleset: RuleSet) -> RuleSet:
    """The rules whose alarms are per entity: they run in the partitioned rules stage."""
    from atalaia.rules.loader import RuleSet

    return RuleSet([r for r in ruleset.rules if list(r.rule.key) == ["entity"]])


def label_keyed(ruleset: RuleSet) -> RuleSet:
    """Rules keyed by labels (e.g. one alarm per parish): every observation of a key must reach
    one engine, so they run in the ``rules-shared`` stage over the one-partition
    ``shared-observations`` topic that the partitioned stage feeds."""
    from atalaia.rules.loader import RuleSet

    return RuleSet([r for r in ruleset.rules if list(r.rule.key) != ["entity"]])


def _identity(obs: dict[str, Any]) -> str:
    """An observation's identity: its type and id (or, without an id, what makes one)."""
    oid = obs.get("id")
    if not isinstance(oid, str):
        oid = f"{entity_key(obs.get('tenant'), obs['entity'])}|{obs['time']}|{sorted(obs['attributes'].items())}"
    return f"{obs['type']}|{oid}"


#: header on a forwarded observation the partitioned stage refused by its time (its DLQ record
#: written): the label-keyed stage, refusing it too, writes no second record
REFUSED = "atalaia-refused"


class RulesCore:
    """``atalaia.observations`` → ``atalaia.alarms`` (+ late observations to ``atalaia.dlq``).

    One rule engine and one detector bank per partition (observations are keyed by entity, so an
    entity's whole history is on one partition). Observations that label-keyed rules select are
    forwarded to ``shared-observations`` (``part=entity_keyed``, ``forward=True``); the
    ``rules-shared`` stage runs those rules (``part=label_keyed``). Redelivered observations (same
    id) are dropped before evaluation, so at-least-once delivery never double-counts a window.
    """

    def __init__(
        self,
        rule_files: RuleFiles,
        detectors_config: DetectorsConfig,
        settings: Settings,
        state: bytes | None = None,
        part: Callable[[RuleSet], RuleSet] = entity_keyed,
        forward: bool = True,
    ) -> None:
        from atalaia.detectors.bank import WORKER, DetectorBank
        from atalaia.rules.engine import RuleEngine
        from atalaia.rules.reorder import Reorder
        from atalaia.streams.ingest import Deduper

        self.files, self.settings, self.part = rule_files, settings, part
        self.detectors_config = detectors_config
        self.loaded = rule_files.ruleset
        self.ruleset = part(self.loaded)
        self.forwarding = forward  # the partitioned stage, which forwards to the label-keyed one
        self.forward_types = self._forward_types() if forward else frozenset()
        # the DLQ record's source: the stage that refused the observation
        self.source = "rules" if forward else "rules-shared"
        self.limits = {
            "allowed_lateness": settings.allowed_lateness_s,
            "max_future": settings.future_tolerance_s,
        }
        if forward:  # (the partitioned, entity-keyed engines: a worker's together, per tenant)
            from atalaia.rules.engine import WORKER_ENTITIES

            self.limits.update(max_entities=settings.rules_max_entities or None, pool=WORKER_ENTITIES)
        self.slack = (settings.reorder_s, settings.reorder_idle_s, settings.future_tolerance_s)
        # every partition's bank counts against the worker's limits (max_entities, ...)
        self.bank = DetectorBank(detectors_config, pool=WORKER)
        self.engine = RuleEngine(self.ruleset, scorer=self.bank.score_learn, **self.limits)
        self.dedup = Deduper()
        self.reorder = None if forward else Reorder(*self.slack)
        # forwarded observations the partitioned stage refused by their time (and wrote to the
        # DLQ), by identity (type and id), until they are evaluated here (after the reorder buffer,
        # which hands out copies); not in checkpoints: after a restart at most a second record
        self._refused: set[str] = set()
        if state:
            self.restore(state)
        self.last_compact = 0.0

    def restore(self, state: bytes) -> None:
        """Take a checkpoint's state (``snapshot()``'s bytes): rule state, detector bank, deduper
        and, for the label-keyed stage, the reorder buffer."""
        from atalaia.detectors.bank import WORKER, DetectorBank
        from atalaia.rules.engine import RuleEngine
        from atalaia.rules.reorder import Reorder
        from atalaia.streams.ingest import Deduper

        rules_state, bank_state, dedup_state, *rest = _unframe(state)
        self.bank = DetectorBank.restore(self.detectors_config, bank_state, pool=WORKER)
        self.engine.pool.engines.discard(self.engine)  # (the replaced engine's entities count no more)
        self.engine = RuleEngine.restore(
            self.ruleset, rules_state, scorer=self.bank.score_learn, **self.limits
        )
        self.dedup = Deduper.restore(dedup_state)
        self.reorder = Reorder.restore(rest[0], *self.slack) if rest else self.reorder

    def _forward_types(self) -> frozenset[str]:
        # every type a label-keyed rule reads: its select, and each part of a compound/join rule
        return frozenset(
            t
            for r in label_keyed(self.loaded).rules
            for t in (r.rule.select.type, *(c.type for c in (r.rule.conditions or ()) if c.type))
        )

    def process(self, records: list[Any], now: float) -> list[Out]:
        batch = []
        stamps = []  # each observation's record timestamp: its event's reception (a DLQ record's)
        admit, forward = self.dedup.admit_key, self.forward_types
        observations, raw, outs = decode(records, decode_observation)
        forwards = []
        refused = self._refused
        for r, obs in zip(raw, observations, strict=True):
            ident = _identity(obs)
            if r.headers and (REFUSED, b"1") in r.headers:  # the partitioned stage has its DLQ record
                if len(refused) >= 100_000:  # never evaluated here (cannot happen): bounded anyway
                    refused.clear()
                refused.add(ident)
            if admit(hashlib.blake2b(ident.encode(), digest_size=16).digest(), now=now):
                batch.append(obs)
                stamps.append(r.timestamp)
                if obs["type"] in forward or ("types" in obs and not forward.isdisjoint(obs["types"])):
                    out = Out("shared-observations", r.value, key=partition_key(obs), timestamp=r.timestamp)
                    forwards.append((obs, out))
        if self.reorder is not None:
            released = self.reorder.push_stamped(batch, stamps, now)
            batch, stamps = [o for o, _ in released], [s for _, s in released]
        return outs + self._evaluate(batch, forwards, now, stamps)

    def _evaluate(
        self,
        batch: list[dict[str, Any]],
        forwards: list[tuple[Any, Out]] | None = None,
        now: float | None = None,
        stamps: list[Any] | None = None,
    ) -> list[Out]:
        """Evaluate ``batch``; ``forwards``: (observation, its record for the label-keyed stage);
        ``stamps``: each observation's record timestamp (ms, in ``batch``'s order), when its event
        was received, the ``received_at`` of its DLQ record if it is refused.

        An observation refused by its time (too late, too far ahead, unreadable) has one DLQ
        record: the first stage that refuses it writes it. The partitioned stage still forwards
        it (the label-keyed stage has its own clock, and may evaluate it), marked ``REFUSED``, and
        the label-keyed stage, refusing it too, writes no second record. ``now``: the stage's
        wall clock, which the engine judges times by between its ticks (``RuleEngine.set_clock``)."""
        if now is not None:
            self.engine.set_clock(now)
        transitions, rejected = self.engine.observe_batch(batch)
        outs = []
        if forwards:
            untimely = {id(rej.observation) for rej in rejected if rej.untimely}
            outs += [
                replace(out, headers=[*out.headers, (REFUSED, b"1")]) if id(obs) in untimely else out
                for obs, out in forwards
            ]
        outs += [self._out(t) for t in transitions]
        refused = self._refused
        if rejected:
            stamp_of = {id(o): s for o, s in zip(batch, stamps, strict=True)} if stamps else {}
            outs += [
                dlq(
                    orjson.dumps(rej.observation),
                    self.source,
                    rej.reason,
                    received_time(stamp_of.get(id(rej.observation))),
                )
                for rej in rejected
                if not (refused and rej.untimely and _identity(rej.observation) in refused)
            ]
        if refused:
            for obs in batch:
                refused.discard(_identity(obs))
        return outs

    @staticmethod
    def _out(t: AlarmTransition) -> Out:
        return Out("alarms", t.to_json(), key=f"{t.rule}|{t.key}".encode(), counted=(t.rule, t.state))

    def announce(self, now: float) -> list[Out]:
        """After a broker reset (``streams.stage``): every open alarm again, so that none stays
        open here while the incident manager never heard of it (``RuleEngine.announce``)."""
        return [self._out(t) for t in self.engine.announce()]

    def tick(self, now: float, backlog: bool = False) -> list[Out]:
        outs = []
        self.files.changed()
        if self.files.ruleset is not self.loaded:
            self.loaded = self.files.ruleset
            if self.forwarding:  # (also when no label-keyed rule was loaded before: one may be now)
                self.forward_types = self._forward_types()
            self.ruleset = self.part(self.loaded)
            outs += [self._out(t) for t in self.engine.reload(self.ruleset)]
        if self.reorder is not None:
            released = self.reorder.flush_idle_stamped(now)
            outs += self._evaluate([o for o, _ in released], now=now, stamps=[s for _, s in released])
        if not backlog:  # absence runs on the wall clock only once the backlog is read: after an
            # outage, stations are not "silent" merely because their observations are still queued
            outs += [self._out(t) for t in self.engine.advance(now)]
        if now - self.last_compact > 60:
            self.engine.compact()
            self.last_compact = now
        return outs

    def snapshot(self) -> bytes:
        parts = [self.engine.snapshot(), self.bank.snapshot(), self.dedup.snapshot()]
        if self.reorder is not None:
            parts.append(self.reorder.snapshot())
        return _frame(*parts)
