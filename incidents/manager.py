"""The incident manager: a pure state machine ``step(state, event, now) -> (state, outputs)``.

Inputs are alarm transitions (:class:`~atalaia.rules.alarm.AlarmTransition` as the stage decodes
them, or their ``to_dict()`` shape, checked the same way), operator :class:`Command` s and timer
ticks (``event=None``). Outputs are :class:`IncidentEvent` (one per incident state change) and
:class:`CommandReply`. The state is updated in place and returned; ``snapshot``/``restore`` turn it
into bytes and back. No I/O, no wall clock: ``now`` is given by the caller.

>>> from datetime import datetime, UTC
>>> mgr = IncidentManager()
>>> st = mgr.initial_state()
>>> alarm = {"at": "2026-01-01T00:00:00Z", "rule": "river-level-high", "key": "porto-01", "state": "firing",
...          "severity": "high", "value": 3.7, "labels": {"parish": "Ribeira"}}
>>> st, out = mgr.step(st, alarm, datetime(2026, 1, 1, tzinfo=UTC))
>>> out[0].change, out[0].state, out[0].correlation
('opened', 'unacknowledged', {'parish': 'Ribeira'})
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from atalaia.incidents import operator, snapshot
from atalaia.incidents import reasons as why
from atalaia.incidents.commands import Command
from atalaia.incidents.config import MAX_DURATION_S, IncidentConfig
from atalaia.incidents.emit import Changes, Output, build_event, current_event, retitle, severity_of
from atalaia.incidents.events import CommandReply, IncidentEvent
from atalaia.incidents.kpi import ALL, KpiSnapshot, PositionKpi
from atalaia.incidents.model import (
    AlarmRecord,
    Incident,
    ManagerState,
    alarm_key,
    fmt,
    in_range,
    seconds_us,
    to_us,
)
from atalaia.incidents.silences import (
    SILENCE_ACTIONS,
    Silence,
    SilenceCommand,
    SilenceEvent,
    config_silence,
    silence_id,
    silence_reason,
)
from atalaia.rules.alarm import AlarmTransition, alarm_from_dict, severity_rank, transition_id
from atalaia.rules.matchers import Matcher, matches_all

_log = logging.getLogger(__name__)
#: the matchers of a silence that cannot be read: they match no alarm
_NEVER = (Matcher("__never__", "=", "", None, frozenset()),)

_SYNTHETIC = ("rule", "group", "entity", "type", "key", "severity", "tenant", "service_path")


def shown(value: object) -> str:
    """A reading as people read it in the audit trail: 0.192, not the float arithmetic's
    0.19199999999999973 (12 significant digits; the event keeps the exact value)."""
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return repr(float(f"{value:.12g}"))
    return str(value)


class IncidentManager:
    def __init__(self, config: IncidentConfig | None = None) -> None:
        self.config = c = config or IncidentConfig()
        self.window = seconds_us(c.correlation.window)
        self.close_after = seconds_us(c.closing.after)
        self.flood_window = seconds_us(c.flood.window)
        self.chatter_window = seconds_us(c.chattering.window)
        self.chatter_shelve = seconds_us(c.chattering.shelve_for)
        self.max_shelve = seconds_us(c.shelving.max)
        self.stale_after = seconds_us(c.stale_after)
        # static maintenance windows are silences too (source "config"; the file is their store)
        self.maintenance = [config_silence(m) for m in c.maintenance]
        self._silence_matchers: dict[str, tuple[Any, ...]] = {}  # silence id -> compiled matchers

    # ---------------------------------------------------------------- public API
    def initial_state(self) -> ManagerState:
        return ManagerState()

    def step(
        self, state: ManagerState, event: Any, now: datetime | int | float | str
    ) -> tuple[ManagerState, list[Output]]:
        """Apply one input: an alarm transition (dict or ``AlarmTransition``), a :class:`Command` (or its
        dict), or ``None`` for a timer tick. Timers due at or before ``now`` fire first."""
        return self.step_batch(state, [] if event is None else [event], now)

    def step_batch(
        self,
        state: ManagerState,
        events: Iterable[Any],
        now: datetime | int | float | str,
        errors: list[tuple[int, str]] | None = None,
    ) -> tuple[ManagerState, list[Output]]:
        """Apply many inputs at one ``now`` (what a batching agent calls); outputs in input order.

        A malformed input raises ``ValueError`` (the inputs before it are applied) unless ``errors``
        is given: then it is skipped and ``(index, message)`` appended there."""
        out: list[Output] = []
        now_us = self._advance(state, _now(now), out)
        for i, ev in enumerate(events):
            mark, undo = len(out), None
            try:
                if isinstance(ev, AlarmTransition):  # as the stage decoded it
                    self._on_alarm(state, ev, out)
                elif isinstance(ev, dict) and "action" not in ev:  # a transition as a dict (replay,
                    self._on_alarm(state, alarm_from_dict(ev), out)  # tests): checked as the record
                elif isinstance(ev, SilenceCommand) or (
                    isinstance(ev, dict) and ev.get("action") in SILENCE_ACTIONS
                ):
                    cmd = ev if isinstance(ev, SilenceCommand) else SilenceCommand.model_validate(ev)
                    undo = _Savepoint(state, None)  # a silence may touch every incident
                    self._on_silence(state, cmd, now_us, out)
                elif isinstance(ev, Command) or (isinstance(ev, dict) and "action" in ev):
                    op = ev if isinstance(ev, Command) else Command.model_validate(ev)
                    undo = _Savepoint(state, op.incident)  # a command changes its incident only
                    operator.apply(self, state, op, now_us, out)
                else:
                    raise ValueError(f"not an alarm transition or a command: {ev!r:.200}")
            except (ValueError, ArithmeticError) as e:  # pydantic's and msgspec's ValidationError
                # are ValueErrors; an overflow (a time out of range) refuses the input, never the stage
                if undo is not None:  # a refused command leaves the state exactly as it was
                    undo.restore(state)
                    self._silence_matchers = {
                        k: v for k, v in self._silence_matchers.items() if k in state.silences
                    }
                    del out[mark:]
                if errors is None:
                    raise
                errors.append((i, str(e) or type(e).__name__))
        return state, out

    def tick(
        self, state: ManagerState, now: datetime | int | float | str
    ) -> tuple[ManagerState, list[Output]]:
        return self.step_batch(state, [], now)

    def snapshot(self, state: ManagerState) -> bytes:
        return snapshot.dump(state)

    def restore(self, data: bytes) -> ManagerState:
        state = snapshot.load(data)
        self._upgrade(state)
        return state

    def _upgrade(self, state: ManagerState) -> None:
        """Fill what a snapshot of an earlier version lacks, so that what it restores behaves as
        this version does: an overlay set before the severity at its start was kept takes the
        severity it is restored with (a rise from then on asks for acknowledgement when it ends;
        a rise before is not known), and a chattering flag set before its end was kept ends when
        its window holds fewer than N changes again (it stayed flagged until the next change)."""
        c = self.config.chattering
        for inc in state.incidents.values():
            if inc.overlay is not None and inc.overlay_severity is None:
                inc.overlay_severity = inc.severity
            for rec in inc.alarms.values():
                if rec.chattering and rec.chatter_until is None and len(rec.flaps) >= c.transitions:
                    rec.chatter_until = rec.flaps[-c.transitions] + self.chatter_window

    def kpis(self, state: ManagerState, now: datetime | int | float | str | None = None) -> KpiSnapshot:
        """The alarm-load KPIs as of ``now`` (default: the state's clock). Does not change the state."""
        c = self.config
        t = state.clock if now is None else max(_now(now), state.clock or 0)
        t = t or 0
        positions = []
        for name, meter in state.kpi.meters.items():
            m = snapshot.copy_meter(meter)
            m.advance(t, self.flood_window, c.flood.threshold)
            positions.append(
                PositionKpi(
                    name,
                    len(m.times),
                    m.peak,
                    m.in_flood(c.flood.threshold),
                    m.flood_ratio(),
                    m.total,
                    m.average(self.flood_window),
                )
            )
        positions.sort(key=lambda p: (p.position != ALL, p.position))
        by_state: dict[str, int] = {}
        chattering = stale = suppressed = 0
        for inc in state.incidents.values():
            by_state[inc.state] = by_state.get(inc.state, 0) + 1
            for a in inc.alarms.values():
                chattering += a.chattering and (a.chatter_until is None or t < a.chatter_until)
                suppressed += a.suppressed is not None
                stale += a.active_since is not None and t - a.active_since > self.stale_after
        return KpiSnapshot(
            fmt(t),
            c.flood.window,
            c.flood.threshold,
            tuple(positions),
            chattering,
            state.kpi.chattering_flagged,
            state.kpi.auto_shelved,
            stale,
            by_state,
            suppressed,
            dict(state.stats),
            tuple(sorted(state.kpi.by_rule.items(), key=lambda kv: (-kv[1], kv[0]))[:10]),
        )

    # ---------------------------------------------------------------- alarms
    def _on_alarm(self, st: ManagerState, tr: AlarmTransition, out: list[Output]) -> None:
        # ``tr`` was checked when it was decoded (rules.alarm.decode_alarm): no re-checks here
        rule, key, state, severity, value = tr.rule, tr.key, tr.state, tr.severity, tr.value
        at = to_us(tr.at)
        loc = tr.location  # (a dict from a replay file is not checked by the record's decoder)
        if loc is not None and not (math.isfinite(loc[0]) and math.isfinite(loc[1])):
            raise ValueError("location: not a finite [lon, lat]")
        ak = alarm_key(rule, key)
        tid = tr.id or transition_id(rule, key, state, tr.at, severity)
        clock = st.alarm_clock.get(ak)
        if clock is not None and (at < clock[0] or (at == clock[0] and tid in clock[1])):
            st.stats["duplicates"] += 1
            return
        if clock is None or at > clock[0]:
            st.alarm_clock[ak] = [at, [tid]]
        else:
            clock[1].append(tid)
        st.stats["transitions"] += 1
        changes = Changes()
        actor = f"alarm:{rule}"
        reason = f"{rule} {key} {state} {severity}" + (f" value={shown(value)}" if value is not None else "")
        home = st.alarm_home.get(ak)
        if home is None:
            if state != "firing":
                st.stats["ignored"] += 1  # a pending/resolved of an alarm no open incident holds
                return
            rec = self._new_record(tr, rule, key, at)
            inc = self._correlate(st, rec, at)
            if inc is None:
                inc = self._open(st, rec, at, tid)
                changes.touch(inc, "opened", at, actor, reason)
            else:
                changes.touch(inc, "alarm-added", at, actor, reason)
                inc.labels = {k: v for k, v in inc.labels.items() if rec.labels.get(k) == v}
                if inc.location is None and rec.location:
                    inc.location = rec.location
            inc.alarms[ak] = rec
            inc.account(rec, +1)
            if rec.rule not in inc.rules:
                inc.rules.append(rec.rule)
                retitle(inc)
            st.alarm_home[ak] = inc.id
            self._index_targets(st, rec, ak, add=True)
            prev_state = "inactive"
        else:
            inc = st.incidents[home]
            rec = inc.alarms.pop(ak)
            inc.alarms[ak] = rec  # most recently changed last
            changes.touch(inc, "alarm-updated", at, actor, reason)
            prev_state = rec.state
            inc.account(rec, -1)
            rec.state, rec.severity, rec.value = state, severity, value
            inc.account(rec, +1)
            rec.count += 1
            rec.last_seen = max(rec.last_seen, at)
            rec.labels["severity"] = severity
        inc.last_activity = max(inc.last_activity, at)
        rec.cached_view = None
        was_firing = prev_state == "firing"
        if (state == "firing") != was_firing:
            rec.active_since = at if state == "firing" else None
            rec.annunciated = False
            self._chatter(st, rec, at, changes, inc)
        if rec.sources and (state == "firing") != was_firing:
            self._source_changed(st, rec, ak, at, changes)
        self._refresh(st, inc, rec, ak, at, changes, actor)
        self._settle(st, inc, [rec], at)
        self._finish(st, changes, out)

    def _new_record(self, tr: AlarmTransition, rule: str, key: str, at: int) -> AlarmRecord:
        labels = dict(tr.labels)
        for name in _SYNTHETIC:
            # these come from the transition's own fields only: a label of the same name (an
            # entity's attribute "tenant": "porto" sent with a token of no tenant) is dropped, so
            # the tenant of an incident is always the authenticated one of its alarms
            v = getattr(tr, name)
            if v is not None:
                labels[name] = str(v)
            else:
                labels.pop(name, None)
        c = self.config
        position = next((p.name for p in c.positions if matches_all(p.matchers, labels)), c.default_position)
        loc = tr.location
        rec = AlarmRecord(
            rule,
            key,
            tr.entity,
            tr.type,
            tr.group,
            labels,
            [float(loc[0]), float(loc[1])] if loc else None,
            position,
            "firing",
            tr.severity,
            tr.value,
            1,
            at,
            at,
        )
        # an inhibition needs every one of its `equal` labels on both alarms: a label neither has
        # (empty on both, equal in Alertmanager) would let one source hide every target
        usable = [(i, r) for i, r in enumerate(c.inhibit) if all(labels.get(n) for n in r.equal)]
        rec.sources = [i for i, r in usable if matches_all(r.source_matchers, labels)]
        rec.targets = [i for i, r in usable if matches_all(r.target_matchers, labels)]
        return rec

    def correlation_of(self, labels: dict[str, str]) -> dict[str, str]:
        """The correlation key of an alarm: its rule's ``correlation`` label (comma-separated label
        names), else the first configured default label it carries (parish, area), else its entity.
        Alarms of different tenants never correlate: the tenant, when there is one, is part of it."""
        tenant = labels.get("tenant")
        names_text = labels.get("correlation")
        if names_text:
            names = [n.strip() for n in names_text.split(",") if n.strip()]
            corr = {n: labels.get(n, "") for n in names}
        else:
            corr = next(
                ({n: labels[n]} for n in self.config.correlation.default_labels if labels.get(n)),
                {"entity": labels.get("entity") or labels.get("key", "")},
            )
        return {"tenant": tenant, **corr} if tenant else corr

    def _correlate(self, st: ManagerState, rec: AlarmRecord, at: int) -> Incident | None:
        corr = self.correlation_of(rec.labels)
        key = _key_text(corr)
        ids = st.by_key.get(key)
        if not ids:
            return None
        limit = self.config.correlation.max_distance_m
        for iid in reversed(ids):
            inc = st.incidents[iid]
            if abs(at - inc.last_activity) > self.window:
                continue
            if limit and rec.location and inc.location and _distance_m(rec.location, inc.location) > limit:
                continue
            return inc
        return None

    def _open(self, st: ManagerState, rec: AlarmRecord, at: int, tid: str) -> Incident:
        corr = self.correlation_of(rec.labels)
        key = _key_text(corr)
        # the id is the correlation key and the opening time, not which alarm opened it: alarms of
        # one reading time (a network sampled on the quarter hour, one notification of many
        # sensors) reach the manager in another order when a crash replays them from the ingest
        # log, and an id of the first one opened a second incident beside the one projected and
        # paged before the crash. (An incident of that key opened at that very time before: the
        # opening transition's id tells them apart.)
        iid = hashlib.blake2b(f"{key}|{at}".encode(), digest_size=12).hexdigest()
        if iid in st.incidents or iid in st.closed:
            iid = hashlib.blake2b(f"{key}|{tid}".encode(), digest_size=12).hexdigest()
        labels = {k: v for k, v in rec.labels.items() if k not in ("key", "severity", "entity", "rule")}
        inc = Incident(iid, key, corr, labels, rec.location, at, at, rec.severity)
        st.incidents[iid] = inc
        st.by_key.setdefault(key, {})[iid] = None
        return inc

    # ---------------------------------------------------------------- chattering, inhibition, suppression
    def _chatter(self, st: ManagerState, rec: AlarmRecord, at: int, changes: Changes, inc: Incident) -> None:
        c = self.config.chattering
        rec.flaps = [t for t in rec.flaps if t > at - self.chatter_window]
        rec.flaps.append(at)
        chattering = len(rec.flaps) >= c.transitions
        if chattering and not rec.chattering:
            st.kpi.chattering_flagged += 1
            if c.auto_shelve and rec.shelved_until is None:
                rec.shelved_until = at + self.chatter_shelve
                st.kpi.auto_shelved += 1
                self._arm(st, rec.shelved_until)
        if chattering != rec.chattering:
            rec.chattering = chattering
            rec.cached_view = None
        # EEMUA 191 counts chattering over a window: the flag ends when the window holds fewer
        # than N changes again, also if the alarm changes no more (shown so from then on)
        rec.chatter_until = rec.flaps[-c.transitions] + self.chatter_window if chattering else None

    def _equal_key(self, i: int, labels: dict[str, str]) -> str:
        return f"{i}|" + "\x1f".join(labels.get(n, "") for n in self.config.inhibit[i].equal)

    def _index_targets(self, st: ManagerState, rec: AlarmRecord, ak: str, add: bool) -> None:
        for i in rec.targets:
            k = self._equal_key(i, rec.labels)
            if add:
                st.targets.setdefault(k, {})[ak] = None
            else:
                bucket = st.targets.get(k)
                if bucket is not None:
                    bucket.pop(ak, None)
                    if not bucket:
                        del st.targets[k]

    def _source_changed(self, st: ManagerState, rec: AlarmRecord, ak: str, at: int, changes: Changes) -> None:
        # every target is refreshed before any incident settles: settled one alarm at a time, an
        # incident whose lower alarm came first dipped in severity and "rose" again with the next,
        # asking for acknowledgement again at the severity it already had
        touched: dict[str, list[AlarmRecord]] = {}
        for i in rec.sources:
            k = self._equal_key(i, rec.labels)
            if rec.state == "firing":
                st.sources.setdefault(k, {})[ak] = None
            else:
                bucket = st.sources.get(k)
                if bucket is not None:
                    bucket.pop(ak, None)
                    if not bucket:
                        del st.sources[k]
            for target in list(st.targets.get(k, ())):
                if target == ak:
                    continue
                inc = st.incidents[st.alarm_home[target]]
                trec = inc.alarms[target]
                actor = f"inhibition:{rec.rule}"
                if self._refresh(st, inc, trec, target, at, changes, actor):
                    touched.setdefault(inc.id, []).append(trec)
        for iid, recs in touched.items():
            self._settle(st, st.incidents[iid], recs, at)

    def _refresh(
        self,
        st: ManagerState,
        inc: Incident,
        rec: AlarmRecord,
        ak: str,
        at: int,
        changes: Changes,
        actor: str,
    ) -> bool:
        """Recompute why ``rec`` is suppressed at ``at``; record the change on its incident."""
        reasons = []
        if rec.shelved_until is not None:
            if at < rec.shelved_until:
                reasons.append(why.chattering(fmt(rec.shelved_until)))
            else:
                rec.shelved_until = None
        for i in rec.targets:
            bucket = st.sources.get(self._equal_key(i, rec.labels))
            source = next((s for s in bucket if s != ak), None) if bucket else None
            if source is not None:
                rule, _, key = source.partition("\x1f")
                reasons.append(why.inhibited(rule, key))
        for sil in self.maintenance:
            if sil.active_at(at) and matches_all(self._compiled(sil), rec.labels):
                reasons.append(silence_reason(sil))
        if st.silences:  # runtime silences act from when they are known: on the manager's clock
            t = max(at, st.clock or at)
            for sil in st.silences.values():
                if sil.active_at(t) and matches_all(self._compiled(sil), rec.labels):
                    reasons.append(silence_reason(sil))
        suppressed = "; ".join(reasons) or None
        if suppressed == rec.suppressed:
            return False
        change = "alarm-unsuppressed" if suppressed is None else "alarm-suppressed"
        if rec.suppressed is not None and suppressed is not None:
            change = "alarm-updated"
        inc.account(rec, -1)
        rec.suppressed = suppressed
        inc.account(rec, +1)
        rec.cached_view = None
        touch = changes.touch(inc, change, at, actor, suppressed or why.unsuppressed(rec.rule, rec.key))
        if suppressed and suppressed not in touch.reason:  # e.g. opened already silenced: say by what
            touch.reason += f" — {suppressed}"
        return True

    # ---------------------------------------------------------------- lifecycle
    def _settle(self, st: ManagerState, inc: Incident, recs: Iterable[AlarmRecord], at: int) -> None:
        """After alarms changed: annunciate new activations, recompute severity, re-arm closing."""
        before = inc.severity
        self.annunciate(st, inc, recs, at)
        inc.severity = severity_of(inc)
        if inc.overlay is None:
            self._ask_again_if_rose(inc, before)
        self.arm_close(st, inc, at)

    def _ask_again_if_rose(self, inc: Incident, before: str | None) -> None:
        """``reacknowledge_on_escalation``: an active incident whose severity rose above ``before``
        asks for acknowledgement again."""
        if (
            self.config.reacknowledge_on_escalation
            and before is not None
            and inc.annunciated_active
            and _rank(inc.severity) > _rank(before)
        ):
            inc.ask_ack()

    def annunciate(self, st: ManagerState, inc: Incident, recs: Iterable[AlarmRecord], at: int) -> None:
        if inc.overlay is not None:
            return
        c = self.config.flood
        for rec in recs:
            if rec.state == "firing" and rec.suppressed is None and not rec.annunciated:
                rec.annunciated = True
                inc.ask_ack()
                st.kpi.annunciate(rec.position, at, self.flood_window, c.threshold, rec.rule)

    def end_overlay(self, st: ManagerState, inc: Incident, at: int) -> None:
        """An operator overlay ends (unshelve, shelve expiry, unsuppress, return to service): what
        activated during it is annunciated, and a severity that rose during it asks for
        acknowledgement again (``reacknowledge_on_escalation``), as it would have without it."""
        before = inc.overlay_severity
        inc.overlay = inc.shelved_until = inc.overlay_severity = None
        inc.shelve_until_clear = False
        self.annunciate(st, inc, list(inc.alarms.values()), at)
        self._ask_again_if_rose(inc, before)

    def arm_close(self, st: ManagerState, inc: Incident, at: int) -> None:
        ready = (
            inc.closed_at is None
            and inc.overlay is None
            and not inc.active
            and (inc.acked or not self.config.closing.require_acknowledged)
        )
        if not ready:
            inc.close_due = None
        elif inc.close_due is None:
            inc.close_due = at + self.close_after
            self._arm(st, inc.close_due)

    def close(
        self,
        st: ManagerState,
        inc: Incident,
        at: int,
        changes: Changes,
        actor: str,
        reason: str,
        command: str | None = None,
    ) -> None:
        inc.closed_at = at
        inc.close_due = None
        changes.touch(inc, "closed", at, actor, reason, command)

    def _forget(self, st: ManagerState, inc: Incident) -> None:
        del st.incidents[inc.id]
        ids = st.by_key.get(inc.key)
        if ids is not None:
            ids.pop(inc.id, None)
            if not ids:
                del st.by_key[inc.key]
        for ak, rec in inc.alarms.items():
            st.alarm_home.pop(ak, None)
            self._index_targets(st, rec, ak, add=False)
        st.closed[inc.id] = inc.closed_at or 0
        while len(st.closed) > self.config.memory:
            del st.closed[next(iter(st.closed))]

    def _finish(self, st: ManagerState, changes: Changes, out: list[Output]) -> None:
        limit = self.config.alarms_in_event
        for touch in changes.touched.values():
            inc = touch.incident
            out.append(build_event(inc, touch, limit, self.config.audit_in_state))
            last = touch.at
            if (
                inc.shelve_until_clear
                and inc.overlay == "shelved"
                and not inc.active
                and inc.closed_at is None
            ):
                last = self._cleared(st, inc, touch.at, out)
            if inc.closed_at is None and inc.close_due is not None and inc.close_due <= last:
                follow = Changes()
                self.close(st, inc, inc.close_due, follow, "policy:closing", _close_reason(self.config))
                out.append(build_event(inc, follow.touched[inc.id], limit, self.config.audit_in_state))
            if inc.closed_at is not None:
                self._forget(st, inc)
                self._ended(st, out[-1])

    def _cleared(self, st: ManagerState, inc: Incident, at: int, out: list[Output]) -> int:
        """A one-shot shelve ends: the last alarm of its incident returned to normal. Its own event
        (the next version, after the one of the alarm's change), at the alarm's time, or at the
        manager's clock when that alarm's time is older (a late transition: the incident stayed
        shelved until the manager knew); then the incident is what the state table says (footnote
        1: nothing fires, so normal, or returned-unacknowledged if it was unacknowledged)."""
        at = max(at, st.clock or at)
        follow = Changes()
        follow.touch(inc, "unshelved", at, why.SHELVE_POLICY, why.SHELVE_CLEARED)
        self.end_overlay(st, inc, at)
        self._settle(st, inc, list(inc.alarms.values()), at)
        out.append(
            build_event(inc, follow.touched[inc.id], self.config.alarms_in_event, self.config.audit_in_state)
        )
        return at

    def _ended(self, st: ManagerState, event: Any) -> None:
        """Keep a closed incident's last event for an hour (event time), at most ``memory``."""
        if not isinstance(event, IncidentEvent):
            return
        st.ended[event.incident] = event.to_dict()
        horizon = (st.clock or 0) - ENDED_KEPT_US
        while st.ended and (
            len(st.ended) > self.config.memory or to_us(next(iter(st.ended.values()))["at"]) < horizon
        ):
            del st.ended[next(iter(st.ended))]

    def announce(self, st: ManagerState) -> list[IncidentEvent]:
        """The current event of every open incident again (no new version), and the last event of
        each incident closed in the last hour: after a broker reset the projection and the
        escalation may have missed the latest (``streams.stage``), a lost "closed" included."""
        horizon = (st.clock or 0) - ENDED_KEPT_US
        closed = [msgspec.convert(e, IncidentEvent) for e in st.ended.values() if to_us(e["at"]) >= horizon]
        return closed + [current_event(inc, self.config.alarms_in_event) for inc in st.incidents.values()]

    def finish(self, st: ManagerState, changes: Changes, out: list[Output]) -> None:
        self._finish(st, changes, out)

    # ---------------------------------------------------------------- timers
    def _arm(self, st: ManagerState, due: int) -> None:
        if st.next_due is None or due < st.next_due:
            st.next_due = due

    def _advance(self, st: ManagerState, now: int, out: list[Output]) -> int:
        if st.clock is not None and now < st.clock:
            now = st.clock  # time never runs backwards for timers
        self._maintenance(st, now, out)
        if st.next_due is not None and st.next_due <= now:
            self._expire(st, now, out)
        st.kpi.advance(now, self.flood_window, self.config.flood.threshold)
        st.clock = now
        return now

    def _expire(self, st: ManagerState, now: int, out: list[Output]) -> None:
        timers = []  # (due, order, incident id, what, alarm key)
        for inc in st.incidents.values():
            if inc.shelved_until is not None and inc.shelved_until <= now:
                timers.append((inc.shelved_until, 0, inc.id, "unshelve", ""))
            for ak, rec in inc.alarms.items():
                if rec.shelved_until is not None and rec.shelved_until <= now:
                    timers.append((rec.shelved_until, 1, inc.id, "alarm", ak))
            if inc.close_due is not None and inc.close_due <= now:
                timers.append((inc.close_due, 2, inc.id, "close", ""))
        timers.sort()
        for due, _, iid, what, ak in timers:
            inc = st.incidents.get(iid)
            if inc is None:
                continue
            changes = Changes()
            if what == "unshelve" and inc.shelved_until == due:
                # (a one-shot shelve whose alarms still fire at its bound says so)
                expired = why.ONE_SHOT_EXPIRED if inc.shelve_until_clear else why.SHELVE_EXPIRED
                changes.touch(inc, "unshelved", due, "timer", expired)
                self.end_overlay(st, inc, due)
                self._settle(st, inc, list(inc.alarms.values()), due)
            elif what == "alarm" and ak in inc.alarms and inc.alarms[ak].shelved_until == due:
                rec = inc.alarms[ak]
                if self._refresh(st, inc, rec, ak, due, changes, "timer"):
                    self._settle(st, inc, [rec], due)
                rec.shelved_until = None
            elif what == "close" and inc.close_due == due:
                self.close(st, inc, due, changes, "policy:closing", _close_reason(self.config))
            self._finish(st, changes, out)
        st.next_due = None
        for inc in st.incidents.values():
            for due in (inc.shelved_until, inc.close_due, *(a.shelved_until for a in inc.alarms.values())):
                if due is not None:
                    self._arm(st, due)

    # ---------------------------------------------------------------- runtime silences
    def _compiled(self, sil: Silence) -> tuple[Any, ...]:
        m = self._silence_matchers.get(sil.id)
        if m is None:
            from atalaia.incidents.silences import parse_matchers

            try:
                m = parse_matchers(sil.matchers)
            except ValueError as e:
                # a silence restored from a snapshot taken before matchers used RE2 (a lookaround or a
                # backreference): it silences nothing (alarms stay annunciated) instead of failing
                # every alarm the stage sees
                _log.warning("silence %s matches nothing: %s", sil.id, e)
                m = _NEVER
            self._silence_matchers[sil.id] = m
        return m

    def take_command(self, st: ManagerState, command_id: str) -> bool:
        """Count a command and remember its id (the last ``memory`` ids); False, counted as a duplicate,
        for an id seen before (a redelivered command is applied once)."""
        if command_id in st.commands:
            st.stats["duplicates"] += 1
            return False
        st.commands[command_id] = None
        while len(st.commands) > self.config.memory:
            del st.commands[next(iter(st.commands))]
        st.stats["commands"] += 1
        return True

    def _on_silence(self, st: ManagerState, cmd: SilenceCommand, now: int, out: list[Output]) -> None:
        # every time the command would write is checked before anything changes (ValueError: refused)
        at = in_range(to_us(cmd.at) if cmd.at is not None else now, "at")
        start = max(in_range(to_us(cmd.start), "start"), at) if cmd.start is not None else at
        if cmd.end is not None:
            end = in_range(to_us(cmd.end), "end")
        else:
            duration = cmd.duration or 0
            if not 0 <= duration <= MAX_DURATION_S:
                raise ValueError(f"duration: at most {MAX_DURATION_S / 86400:g}d")
            end = start + seconds_us(duration)
        if not self.take_command(st, cmd.id):
            return
        allowed = self.config.permissions.get("silence", ())
        sid = silence_id(cmd.id) if cmd.action == "silence" else cmd.silence
        problem = None
        if cmd.role not in allowed:
            problem = operator.Refusal(
                f"role {cmd.role} may not {cmd.action} (allowed: {', '.join(allowed) or 'nobody'})",
                "role-not-allowed",
                role=cmd.role,
                action=cmd.action,
                allowed=", ".join(allowed),
            )
        elif cmd.action == "expire-silence" and sid not in st.silences:
            problem = operator.Refusal(
                f"unknown silence {sid} (expired silences are gone)", "unknown-silence", silence=sid
            )
        elif cmd.action == "silence" and end - start > seconds_us(MAX_DURATION_S):
            days = f"{MAX_DURATION_S / 86400:g}"
            problem = operator.Refusal(f"end: at most {days}d after the start", "silence-too-long", days=days)
        elif cmd.action == "silence" and end <= now:
            problem = operator.Refusal("end: already past", "silence-end-past")
        if problem is not None:
            st.stats["rejected"] += 1
            out.append(
                CommandReply(
                    cmd.id,
                    sid,
                    cmd.action,
                    cmd.actor,
                    False,
                    str(problem),
                    fmt(at),
                    code=problem.code,
                    params=problem.params,
                )
            )
            return
        if cmd.action == "silence":
            sil = Silence(
                sid, [str(m) for m in cmd.matchers], cmd.actor, cmd.comment, start, end, at, command=cmd.id
            )
            self._silence_matchers[sid] = cmd.matchers
            st.silences[sid] = sil
            reply = f"silence {sid} until {fmt(end)}"
            out.append(CommandReply(cmd.id, sid, cmd.action, cmd.actor, True, reply, fmt(at)))
            created = _silence_event(sil, "created", at)
            if sil.active_at(now):
                st.maintenance[sid] = True
                created.silenced = self._resweep(st, sil, now, f"silence:{sid}", out)
            out.append(created)
        else:
            sil = st.silences[sid]
            sil.end = max(min(sil.end, now), sil.start)
            sil.expired_by, sil.expired_at = cmd.actor, at
            out.append(
                CommandReply(cmd.id, sid, cmd.action, cmd.actor, True, f"silence {sid} expired", fmt(at))
            )
        self._sweep_silences(st, now, out)

    def _sweep_silences(self, st: ManagerState, now: int, out: list[Output]) -> None:
        """Silences (runtime and maintenance windows) that started or ended by ``now``: (un)suppress
        the alarms they match, in time order (each at its own start/end), then drop the expired."""
        due = []  # (time, order, state key, silence, active)
        for i, sil in enumerate([*self.maintenance, *st.silences.values()]):
            key = (sil.name or sil.id) if sil.source == "config" else sil.id
            active = sil.active_at(now)
            if st.maintenance.get(key, False) != active:
                due.append((sil.start if active else sil.end, i, key, sil, active))
        due.sort(key=lambda d: (d[0], d[1]))
        for at, _, key, sil, active in due:
            st.maintenance[key] = active
            config = sil.source == "config"
            n = self._resweep(st, sil, at, f"maintenance:{sil.name}" if config else f"silence:{sil.id}", out)
            if active and not config:
                out.append(_silence_event(sil, "started", sil.start, n))
        for sid in [sid for sid, sil in st.silences.items() if now >= sil.end]:
            sil = st.silences.pop(sid)
            st.maintenance.pop(sid, None)
            self._silence_matchers.pop(sid, None)
            out.append(_silence_event(sil, "expired", sil.end))

    def _resweep(self, st: ManagerState, sil: Silence, at: int, actor: str, out: list[Output]) -> int:
        changes = Changes()
        touched: dict[str, list[AlarmRecord]] = {}
        matchers = self._compiled(sil)
        for inc in st.incidents.values():
            for ak, rec in inc.alarms.items():
                if matches_all(matchers, rec.labels) and self._refresh(st, inc, rec, ak, at, changes, actor):
                    touched.setdefault(inc.id, []).append(rec)
        for iid, recs in touched.items():
            self._settle(st, st.incidents[iid], recs, at)
        self._finish(st, changes, out)
        return sum(len(r) for r in touched.values())

    def _maintenance(self, st: ManagerState, now: int, out: list[Output]) -> None:
        if st.silences or self.maintenance:
            self._sweep_silences(st, now, out)


class _Savepoint:
    """The manager's state before a command, to put back if the command raises (a refused command
    changes nothing: not its incident, not the timers, not the command ids). An operator command
    changes one incident (and the state's indexes when it closes it): that incident is copied, the
    indexes one level deep. A silence may change any incident: the whole state is kept as a
    snapshot. Commands are rare next to alarms, whose checks all come before any change."""

    __slots__ = ("blob", "fields", "iid", "incident")

    def __init__(self, st: ManagerState, incident_id: str | None) -> None:
        self.blob = self.incident = None
        self.iid = incident_id
        self.fields: dict[str, Any] = {}
        if incident_id is None:
            self.blob = snapshot.dump(st)
            return
        inc = st.incidents.get(incident_id)
        self.incident = copy.deepcopy(inc) if inc is not None else None
        for f in dataclasses.fields(ManagerState):
            v = getattr(st, f.name)
            if f.name == "kpi":
                v = snapshot.copy_kpi(v)
            elif f.name in ("by_key", "sources", "targets"):
                v = {k: dict(b) for k, b in v.items()}
            elif f.name == "silences":
                v = {k: copy.copy(sil) for k, sil in v.items()}
            elif isinstance(v, dict):
                v = dict(v)  # alarm_clock's lists: commands never change them
            self.fields[f.name] = v

    def restore(self, st: ManagerState) -> None:
        if self.blob is not None:
            before = snapshot.load(self.blob)
            for f in dataclasses.fields(ManagerState):
                setattr(st, f.name, getattr(before, f.name))
            return
        for name, v in self.fields.items():
            setattr(st, name, v)
        if self.incident is not None:
            st.incidents[self.incident.id] = self.incident


def _silence_event(sil: Silence, change: str, at: int, silenced: int = 0) -> SilenceEvent:
    return SilenceEvent(
        sil.id,
        change,
        fmt(at),
        list(sil.matchers),
        sil.author,
        sil.comment,
        fmt(sil.start),
        fmt(sil.end),
        fmt(sil.created_at),
        sil.source,
        sil.expired_by,
        sil.command,
        silenced,
    )


def _now(now: datetime | int | float | str) -> int:
    return to_us(now)


def _rank(severity: str) -> int:
    return severity_rank(severity)


ENDED_KEPT_US = 3600 * 1_000_000  # how long a closed incident's last event is kept for ``announce``


def _key_text(corr: dict[str, str]) -> str:
    """``name=value&...``, with ``\\``, ``&`` and ``=`` escaped where a name or value holds them,
    so no two correlations make one key (unchanged where none does)."""
    return "&".join(f"{_esc(k)}={_esc(v)}" for k, v in corr.items())


def _esc(text: str) -> str:
    if "&" not in text and "=" not in text and "\\" not in text:
        return text
    return text.replace("\\", "\\\\").replace("&", "\\&").replace("=", "\\=")


def _close_reason(c: IncidentConfig) -> str:
    need = "normal and acknowledged" if c.closing.require_acknowledged else "normal"
    return f"all alarms {need}" + (f" for {c.closing.after:g}s" if c.closing.after else "")


def _distance_m(a: list[float], b: list[float]) -> float:
    """Great-circle distance in metres between two [lon, lat] points."""
    lon1, lat1, lon2, lat2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6_371_000 * math.asin(min(1.0, math.sqrt(h)))
