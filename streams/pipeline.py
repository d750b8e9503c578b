"""Stage cores: thin adapters between Kafka records and the pure cores of each package.

Each core turns a batch of consumer records into output records (``Out``) and can snapshot its
state; ``streams.stage.BatchStage`` drives them. No I/O here.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from atalaia.streams.events import RawEvent
from atalaia.streams.observation import entity_key, parse_time, partition_key
from atalaia.streams.stage import Out

# A DLQ record keeps the original bytes, base64-encoded; past this size only the first bytes are
# kept (with the full size and SHA-256), so the record fits Kafka's default 1 MB message limit.
DLQ_MAX_BODY = 600 * 1024

log = logging.getLogger(__name__)


def dlq(value: bytes | None, source: str, reason: str) -> Out:
    """A DLQ output for a record a stage cannot use (the original bytes, kept within Kafka's
    default message size)."""
    from atalaia.streams.ingest import to_dlq_record

    return Out("dlq", to_dlq_record(value or b"", source, reason, max_body_bytes=DLQ_MAX_BODY))


def _is_time(v: Any) -> bool:
    from atalaia.streams.observation import parse_time

    if not isinstance(v, str) or len(v) > 40:
        return False
    try:
        t = parse_time(v)
    except (ValueError, OverflowError):
        return False
    return 1970 <= t.year <= 9000


def _is_str_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def observation_problem(o: Any) -> str | None:
    """Why a record on atalaia.observations is not a contract Observation (None if it is)."""
    if not isinstance(o, dict):
        return "not a JSON object"
    for name in ("entity", "type"):
        if not isinstance(o.get(name), str) or not o[name]:
            return f"'{name}' must be a non-empty string"
    if not _is_time(o.get("time")):
        return "'time' must be an RFC 3339 time with a zone"
    attrs = o.get("attributes")
    if not isinstance(attrs, dict) or not all(isinstance(k, str) and _is_number(v) for k, v in attrs.items()):
        return "'attributes' must map names to numbers"
    if "labels" in o and not _is_str_map(o["labels"]):
        return "'labels' must map names to text"
    for name in ("tenant", "service_path"):
        if o.get(name) is not None and (
            not isinstance(o[name], str) or (name == "tenant" and "|" in o[name])
        ):
            return f"'{name}' must be text (a tenant without '|')"
    return None


def alarm_problem(a: Any) -> str | None:
    """Why a record on atalaia.alarms is not an alarm transition (commands are checked by the
    incident manager's Command model)."""
    if not isinstance(a, dict):
        return "not a JSON object"
    if "action" in a:
        return None
    for name in ("rule", "key", "severity"):
        if not isinstance(a.get(name), str) or not a[name]:
            return f"'{name}' must be a non-empty string"
    if a.get("state") not in ("pending", "firing", "resolved", "inactive"):
        return "'state' must be pending, firing, resolved or inactive"
    if not _is_time(a.get("at")) or (a.get("since") is not None and not _is_time(a["since"])):
        return "'at' and 'since' must be RFC 3339 times with a zone"
    if a.get("value") is not None and not _is_number(a["value"]):
        return "'value' must be a number"
    for name in ("labels", "annotations"):
        if name in a and not _is_str_map(a[name]):
            return f"'{name}' must map names to text"
    return None


def incident_event_problem(e: Any) -> str | None:
    if not isinstance(e, dict):
        return "not a JSON object"
    if e.get("kind") == "silence":  # a runtime silence's change (for the projection)
        return None if isinstance(e.get("id"), str) and _is_time(e.get("at")) else "bad silence event"
    if not isinstance(e.get("incident"), str) or not isinstance(e.get("version"), int):
        return "'incident' (text) and 'version' (integer) are required"
    if not _is_time(e.get("at")):
        return "'at' must be an RFC 3339 time with a zone"
    if not isinstance(e.get("state"), str) or not isinstance(e.get("severity"), str):
        return "'state' and 'severity' must be text"
    if not isinstance(e.get("alarms", []), list) or not isinstance(e.get("labels", {}), dict):
        return "'alarms' must be a list and 'labels' an object"
    return None


def _ts(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


_last_received: list = [None, None]  # (received-at text, its time): the last one parsed


def _received_at(ev: RawEvent, record: Any, default: datetime) -> datetime:
    """When Atalaia received the payload: the ``received-at`` header the HTTP/MQTT adapter wrote,
    else the Kafka record's timestamp, else ``default``. Stable across redeliveries of the record,
    so an observation timed by it (``time_source`` ``received``) is deduplicated on replay."""
    text = ev.received_at
    if text:
        if text == _last_received[0]:  # a batch's records mostly share it: parsed once
            return _last_received[1]
        try:
            t = parse_time(text)
        except ValueError:
            pass
        else:
            _last_received[:] = (text, t)
            return t
    ts = getattr(record, "timestamp", None)
    if isinstance(ts, int | float) and not isinstance(ts, bool) and ts > 0:
        return datetime.fromtimestamp(ts / 1000, UTC)
    return default


class IngestCore:
    """``atalaia.events`` → ``atalaia.observations`` (keyed by entity) + ``atalaia.dlq``.

    Redeliveries (same entity, time and values) are dropped by a bounded deduper whose state is
    part of the checkpoint.
    """

    def __init__(self, settings: Any, state: bytes | None = None) -> None:
        from atalaia.streams.ingest import Deduper, IngestOptions

        self.options = IngestOptions.from_settings(settings)
        self.dedup = Deduper.restore(state) if state else Deduper()
        self.duplicates = 0

    def process(self, records: list[Any], now: float) -> list[Out]:
        from atalaia.streams.ingest import encode_observation

        outs, fresh = self.observations(records, now)
        for obs, ts in fresh:
            outs.append(
                Out("observations", encode_observation(obs), key=partition_key(obs.__dict__), timestamp=ts)
            )
        return outs

    def observations(
        self, records: list[Any], now: float, dedup: bool = True
    ) -> tuple[list[Out], list[tuple[Any, int | None]]]:
        """The events of a batch parsed: (DLQ outputs, ``(observation, ts)`` for the Observations
        not seen before, ``ts`` the Kafka timestamp of their event (ms, None if it has none: the
        produce → alarm latency is measured from it); with ``dedup`` off, all of them: the fused
        stage dedups them with the rules' deduper)."""
        from atalaia.streams.ingest import dlq_record_for, parse_payload

        outs: list[Out] = []
        fresh_all: list[Any] = []
        received = _ts(now)
        for r in records:
            ev = RawEvent.from_record(r.value, r.headers)
            res = parse_payload(
                ev.body,
                content_type=ev.content_type,
                link=ev.link,
                headers=ev.extra,
                source=ev.source,
                received_at=_received_at(ev, r, received),
                options=self.options,
            )
            dlq = dlq_record_for(
                res,
                ev.body,
                ev.source,
                content_type=ev.content_type,
                received_at=received,
                max_body_bytes=DLQ_MAX_BODY,
            )
            if dlq is not None:
                outs.append(Out("dlq", dlq))
            fresh = self.dedup.admit(res.observations, now=now) if dedup else res.observations
            self.duplicates += len(res.observations) - len(fresh)
            ts = r.timestamp if isinstance(r.timestamp, int) and r.timestamp > 0 else None  # produce time
            fresh_all.extend((obs, ts) for obs in fresh)
        return outs, fresh_all

    def tick(self, now: float, backlog: bool = False) -> list[Out]:
        return []

    def snapshot(self) -> bytes:
        return self.dedup.snapshot()


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


_RELOADS: Any = None  # one worker thread for rule reloads, shared by every RuleFiles


def _reload_thread() -> Any:
    global _RELOADS
    if _RELOADS is None:
        from concurrent.futures import ThreadPoolExecutor

        _RELOADS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rules-reload")
    return _RELOADS


def _load_isolated(paths: list[Any], limits: Any) -> Any:
    """Runs in the reload thread: the rule files loaded in a child process (config_yaml limits,
    a hard time limit and a memory limit), so a hostile file costs neither the loop nor memory."""
    from atalaia.rules.loader import load_rules
    from atalaia.streams.config_yaml import run_isolated

    return run_isolated(load_rules, paths, limits=limits)


class RuleFiles:
    """The rule set of the configured paths, reloaded when a file changes (checked on ticks).

    The first load runs here, held to the YAML limits (``atalaia.streams.config_yaml``). A reload
    never runs on the event loop: ``changed()`` only compares file stamps and starts
    ``load(paths, limits)`` in a worker thread, which by default parses in a child process with a
    time and memory limit; a later ``changed()`` picks up the result. An invalid or hostile edit
    (a YAML bomb, a 1 GB file) is logged as ``file:line:col`` errors and the running rules stay.
    """

    def __init__(self, paths: list[Any], limits: Any = None, load: Any = _load_isolated) -> None:
        from pathlib import Path

        from atalaia.rules.loader import load_rules
        from atalaia.streams.config_yaml import YamlLimits

        self.paths = [Path(p) for p in paths]
        self.limits = limits or YamlLimits.from_env()
        self.load = load
        self.stamp = self._stamp()
        self.ruleset = load_rules(self.paths, self.limits)
        self.pending: Any = None  # (future, the files it reads) while a reload runs

    def _stamp(self) -> tuple:
        files = []
        for p in self.paths:
            cands = sorted([*p.glob("*.yaml"), *p.glob("*.yml")]) if p.is_dir() else [p]
            for f in cands:
                try:
                    files.append((str(f), f.stat().st_mtime_ns))
                except FileNotFoundError:
                    continue
        return tuple(files)

    def changed(self) -> bool:
        """True when a reload finished with a valid rule set, now in ``ruleset``. Never blocks:
        a change starts a reload in the background; an invalid one is logged and changes nothing."""
        if self.pending is not None:
            future, edited = self.pending
            if not future.done():
                return False
            self.pending = None
            return self._finish(future, edited)
        stamp = self._stamp()
        if stamp == self.stamp:
            return False
        edited = sorted({f for f, _ in set(stamp) - set(self.stamp)}) or [str(p) for p in self.paths]
        self.stamp = stamp
        self.pending = (_reload_thread().submit(self.load, self.paths, self.limits), edited)
        return False

    def _finish(self, future: Any, edited: list[str]) -> bool:
        from atalaia.rules.errors import RuleFileError
        from atalaia.streams.config_yaml import IsolatedLoadError

        try:
            ruleset = future.result()
        except RuleFileError as e:
            log.error("rule files changed but do not load; keeping the running rules:\n%s", e)
            return False
        except (IsolatedLoadError, MemoryError) as e:  # timed out or died: blame the edited files
            what = str(e) or type(e).__name__
            log.error(
                "rule files changed but do not load; keeping the running rules:\n%s",
                "\n".join(f"{f}:1:1: loading refused: {what}" for f in edited),
            )
            return False
        except Exception as e:  # whatever else: never lose the running rules
            log.error("rule files changed but do not load; keeping the running rules:\n%r", e)
            return False
        self.ruleset = ruleset
        log.info("rules reloaded: %d rule(s)", len(self.ruleset.rules))
        return True


def entity_keyed(ruleset: Any) -> Any:
    """The rules whose alarms are per entity: they run in the partitioned rules stage."""
    from atalaia.rules.loader import RuleSet

    return RuleSet([r for r in ruleset.rules if list(r.rule.key) == ["entity"]])


def label_keyed(ruleset: Any) -> Any:
    """Rules keyed by labels (e.g. one alarm per parish): every observation of a key must reach
    one engine, so they run in the ``rules-shared`` stage over the one-partition
    ``shared-observations`` topic that the partitioned stage feeds."""
    from atalaia.rules.loader import RuleSet

    return RuleSet([r for r in ruleset.rules if list(r.rule.key) != ["entity"]])


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
        detectors_config: Any,
        settings: Any,
        state: bytes | None = None,
        part: Any = entity_keyed,
        forward: bool = True,
    ) -> None:
        from atalaia.detectors.bank import DetectorBank
        from atalaia.rules.engine import RuleEngine
        from atalaia.streams.ingest import Deduper

        self.files, self.settings, self.part = rule_files, settings, part
        self.loaded = rule_files.ruleset
        ruleset = part(self.loaded)
        self.forward_types = self._forward_types() if forward else frozenset()
        limits = {"allowed_lateness": settings.allowed_lateness_s, "max_future": settings.future_tolerance_s}
        from atalaia.streams.reorder import Reorder

        slack = (settings.reorder_s, settings.reorder_idle_s, settings.future_tolerance_s)
        if state:
            rules_state, bank_state, dedup_state, *rest = _unframe(state)
            self.bank = DetectorBank.restore(detectors_config, bank_state)
            self.engine = RuleEngine.restore(ruleset, rules_state, scorer=self.bank.score_learn, **limits)
            self.dedup = Deduper.restore(dedup_state)
            self.reorder = Reorder.restore(rest[0], *slack) if rest else None
        else:
            self.bank = DetectorBank(detectors_config)
            self.engine = RuleEngine(ruleset, scorer=self.bank.score_learn, **limits)
            self.dedup = Deduper()
            self.reorder = None if forward else Reorder(*slack)
        self.last_compact = 0.0

    def _forward_types(self) -> frozenset[str]:
        # every type a label-keyed rule reads: its select, and each part of a compound/join rule
        return frozenset(
            t
            for r in label_keyed(self.loaded).rules
            for t in (r.rule.select.type, *(c.type for c in (r.rule.conditions or ()) if c.type))
        )

    def process(self, records: list[Any], now: float) -> list[Out]:
        batch = []
        admit, forward = self.dedup.admit_key, self.forward_types
        observations, raw, outs = _decode(records, observation_problem)
        for r, obs in zip(raw, observations, strict=True):
            oid = obs.get("id")
            if not isinstance(oid, str):
                oid = f"{entity_key(obs.get('tenant'), obs['entity'])}|{obs['time']}|{sorted(obs['attributes'].items())}"
            if admit(hashlib.blake2b(f"{obs['type']}|{oid}".encode(), digest_size=16).digest(), now=now):
                batch.append(obs)
                if obs["type"] in forward:
                    outs.append(
                        Out("shared-observations", r.value, key=partition_key(obs), timestamp=r.timestamp)
                    )
        if self.reorder is not None:
            batch = self.reorder.push(batch, now)
        return outs + self._evaluate(batch)

    def _evaluate(self, batch: list[dict[str, Any]]) -> list[Out]:
        transitions, rejected = self.engine.observe_batch(batch)
        outs = [self._out(t) for t in transitions]
        outs += [dlq(orjson.dumps(rej.observation), "rules", rej.reason) for rej in rejected]
        return outs

    @staticmethod
    def _out(t: Any) -> Out:
        return Out("alarms", t.to_json(), key=f"{t.rule}|{t.key}".encode())

    def tick(self, now: float, backlog: bool = False) -> list[Out]:
        outs = []
        self.files.changed()
        if self.files.ruleset is not self.loaded:
            self.loaded = self.files.ruleset
            if self.forward_types:
                self.forward_types = self._forward_types()
            outs += [self._out(t) for t in self.engine.reload(self.part(self.loaded))]
        if self.reorder is not None:
            outs += self._evaluate(self.reorder.flush_idle(now))
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


def _decode(records: list[Any], problem: Any = None) -> tuple[list[Any], list[Any], list[Out]]:
    """JSON values of a batch: (values, their records, DLQ outputs for what is not JSON or what
    ``problem(value)`` finds wrong)."""
    values, raw, outs = [], [], []
    for r in records:
        try:
            value = orjson.loads(r.value or b"")
        except orjson.JSONDecodeError as e:
            outs.append(dlq(r.value, r.topic, f"not JSON: {e}"))
            continue
        why = problem(value) if problem else None
        if why:
            outs.append(dlq(r.value, r.topic, why))
            continue
        values.append(value)
        raw.append(r)
    return values, raw, outs


class IncidentsCore:
    """``atalaia.alarms`` + ``atalaia.commands`` → ``atalaia.incidents`` + ``atalaia.replies``.

    Alarms and commands each have one partition, so one manager sees every alarm in order; a
    malformed input is answered (commands: a rejected reply) and kept on the DLQ, never ignored.
    """

    def __init__(self, config: Any, state: bytes | None = None) -> None:
        from atalaia.incidents.manager import IncidentManager

        self.manager = IncidentManager(config)
        self.state = self.manager.restore(state) if state else self.manager.initial_state()

    def process(self, records: list[Any], now: float) -> list[Out]:
        events, raw, outs = _decode(records, alarm_problem)
        mine = [i for i, e in enumerate(events) if not (isinstance(e, dict) and e.get("kind") == "warning")]
        if len(mine) < len(events):  # warning commands share the topic: the warnings stage takes them
            events, raw = [events[i] for i in mine], [raw[i] for i in mine]
        errors: list[tuple[int, str]] = []
        self.state, produced = self.manager.step_batch(self.state, events, now, errors)
        for i, message in errors:
            r, ev = raw[i], events[i]
            outs.append(dlq(r.value, r.topic, f"refused by incidents: {message}"))
            if isinstance(ev, dict) and "action" in ev:
                outs.append(
                    Out(
                        "replies",
                        orjson.dumps(
                            {
                                "kind": "reply",
                                "command": str(ev.get("id", "")),
                                "incident": str(ev.get("incident", "")),
                                "action": str(ev.get("action", "")),
                                "actor": str(ev.get("actor", "")),
                                "accepted": False,
                                "reason": f"invalid command: {message}",
                                "at": None,
                            }
                        ),
                        key=str(ev.get("id", "")).encode(),
                    )
                )
        return outs + [self._out(o) for o in produced]

    @staticmethod
    def _out(o: Any) -> Out:
        if getattr(o, "kind", "") == "reply":
            return Out("replies", o.to_json(), key=o.command.encode())
        return Out("incidents", o.to_json(), key=o.incident.encode())

    def tick(self, now: float, backlog: bool = False) -> list[Out]:
        from prometheus_client import REGISTRY

        from atalaia.incidents.kpi import export_kpis

        self.state, produced = self.manager.tick(self.state, now)
        # EEMUA 191 alarm-load KPIs on /metrics (alarm rate, time in flood, chattering, stale)
        export_kpis(REGISTRY, self.manager.kpis(self.state, now))
        return [self._out(o) for o in produced]

    def snapshot(self) -> bytes:
        return self.manager.snapshot(self.state)


class ProjectionCore:
    """``atalaia.incidents`` → the SQL projection (SQLite by default, PostgreSQL in production).
    Applying an event is idempotent (by incident version), so redelivery is harmless; the
    database is the state, the checkpoint only carries the offset."""

    def __init__(self, projection: Any) -> None:
        self.projection = projection

    def process(self, records: list[Any], now: float) -> list[Out]:
        events, raw, outs = _decode(records, incident_event_problem)
        errors: list[tuple[int, str]] = []
        self.projection.apply(events, errors)
        for i, message in errors:
            outs.append(dlq(raw[i].value, raw[i].topic, f"not an incident event: {message}"))
        return outs

    def tick(self, now: float, backlog: bool = False) -> list[Out]:
        return []

    def snapshot(self) -> bytes:
        return b""


class EscalationCore:
    """``atalaia.incidents`` → ``atalaia.notifications``: the escalation policies (steps, waits,
    repeats, until acknowledged) as a pure state machine; timers fire on the stage's tick.
    Notification ids are deterministic (incident, policy, episode, step, repeat, target).

    A ``propose_warning`` step's notification becomes a warning ``draft`` command on
    ``atalaia.commands`` (prefilled from the incident, command id = the notification id, so a
    replay drafts nothing twice): it waits there for approval and publishes nothing by itself."""

    def __init__(self, config: Any, state: bytes | None = None, warnings_config: Any = None) -> None:
        from atalaia.notifiers.engine import EscalationEngine, EscalationState

        self.engine = EscalationEngine(config)
        self.state = EscalationState.restore(state) if state else EscalationState()
        self.warnings_config = warnings_config
        self._catalogue: Any = None

    def process(self, records: list[Any], now: float) -> list[Out]:
        events, _, outs = _decode(records, incident_event_problem)
        self.state, notes = self.engine.step_batch(self.state, events, _ts(now))
        return outs + [self._out(n) for n in notes]

    def _out(self, n: Any) -> Out:
        if n.kind == "propose":
            return Out("commands", orjson.dumps(self.draft_command(n)), key=n.incident.encode())
        return Out("notifications", n.to_json(), key=n.target.encode())

    def draft_command(self, n: Any) -> dict[str, Any]:
        """The ``draft`` command (kind warning) a ``propose_warning`` notification asks for."""
        from dataclasses import asdict
        from datetime import timedelta

        from atalaia.warnings.config import WarningsConfig
        from atalaia.warnings.from_incident import draft_from_incident

        if self._catalogue is None:
            self._catalogue = (self.warnings_config or WarningsConfig()).catalogue()
        ask = n.warning or {}
        incident = asdict(n.snapshot)
        draft = draft_from_incident(
            incident,
            self._catalogue,
            ask.get("sender", "atalaia@localhost"),
            n.due,
            timedelta(seconds=float(ask.get("valid_for_s", 43200))),
        )
        draft["status"] = ask.get("status", "Actual")
        return {
            "kind": "warning",
            "id": n.id,
            "action": "draft",
            "actor": f"escalation:{n.policy}",
            "role": "system",
            "reason": f"propose_warning step {n.step + 1} of policy {n.policy}",
            "incident": n.incident,
            "draft": draft,
            "at": n.due,
        }

    def tick(self, now: float, backlog: bool = False) -> list[Out]:
        from atalaia.notifiers.engine import TICK

        self.state, notes = self.engine.step(self.state, TICK, _ts(now))
        return [self._out(n) for n in notes]

    def snapshot(self) -> bytes:
        return self.state.snapshot()


class WarningNoticesCore:
    """``atalaia.warnings`` → ``atalaia.notifications``: each issued CAP document (``kind: "cap"``)
    becomes one notification per target of the escalation file's ``warnings:`` section (Exercise
    and Test only to the targets marked for exercises). Stateless: ids are deterministic
    (identifier, version, target), so a replayed record is dropped by the delivery log."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def process(self, records: list[Any], now: float) -> list[Out]:
        from atalaia.notifiers.warning import warning_notifications

        outs = []
        for r in records:
            try:
                value = orjson.loads(r.value or b"")
            except orjson.JSONDecodeError:
                continue  # not ours to judge: the warnings stage wrote it
            if not isinstance(value, dict) or value.get("kind") != "cap":
                continue
            try:
                notes = warning_notifications(value, self.config)
            except Exception as e:  # an unreadable document: kept, with the reason
                outs.append(dlq(r.value, r.topic, f"warning not deliverable: {e}"))
                continue
            outs += [Out("notifications", n.to_json(), key=n.target.encode()) for n in notes]
        return outs

    def tick(self, now: float, backlog: bool = False) -> list[Out]:
        return []

    def snapshot(self) -> bytes:
        return b""


class DeliveryCore:
    """``atalaia.notifications`` → people: the notifier's delivery pipeline (dedup against the
    delivery log, durable outbox, per-target lanes with rate limit and retry). ``aprocess``
    returns once the batch is recorded in the outbox, so the offset is committed only for
    notifications that can no longer be lost; delivery goes on in the lanes."""

    def __init__(self, notifier: Any) -> None:
        self.notifier = notifier

    async def aprocess(self, records: list[Any], now: float) -> list[Out]:
        from atalaia.notifiers.model import Notification

        notes, outs = [], []
        for r in records:
            try:
                notes.append(Notification.from_dict(orjson.loads(r.value or b"")))
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                outs.append(dlq(r.value, r.topic, f"not a notification: {e}"))
        if notes:
            await self.notifier.submit(notes)
        return outs

    def process(self, records: list[Any], now: float) -> list[Out]:  # pragma: no cover - async only
        raise TypeError("DeliveryCore is asynchronous: use aprocess")

    def tick(self, now: float, backlog: bool = False) -> list[Out]:
        return []

    def snapshot(self) -> bytes:
        return b""
