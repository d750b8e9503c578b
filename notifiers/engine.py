"""The escalation engine: a pure state machine over incident events and timer ticks.

    engine = EscalationEngine(load_config("config/escalation.yaml"))
    state = EscalationState()
    state, notes = engine.step(state, incident_event, now)      # an incident event (dict)
    state, notes = engine.step(state, TICK, now)                 # the timer
    state, notes = engine.step_batch(state, events, now)         # a batch, then a tick at now
    blob = state.snapshot(); state = EscalationState.restore(blob)

Semantics (see README): an active, unacknowledged incident that matches a route starts its
policy at step 0 (episode 0). Each step notifies its targets, then after ``wait`` it is repeated
up to ``repeat`` times, then the next step starts; after the last step the escalation is
*exhausted*. A state in the policy's ``stop_on`` (default: every state but unacknowledged) or an
inactive incident stops it; if the incident later becomes active and unacknowledged again a new
episode starts at step 0. A severity rise that routes to another
policy switches to it (new episode). On ``closed`` every target notified so far gets a
"resolved" notice (``notify_resolved``). Timers fire at their due (event) time; after an outage
every step's first message is sent, but missed repeats collapse into the latest one due before
the next message, and it goes only to the targets that message does not reach (at most one
overdue repeat per target).

An ``escalated`` change (the operator command ``escalate``, "escalate now") pages the next step at
once: step 0 if nothing was paged yet, else the step after the current one (after the last step,
the last step again, as a further repeat). If the escalation runs it continues from that step with
that step's ``wait``; if it is stopped (the incident is acknowledged, say) that step is paged once
and it stays stopped. The incident manager refuses the command while an overlay (shelved,
suppressed, out of service) is set.

``step`` mutates ``state`` in place and returns it (cheap on the hot path); snapshot first if
you need the old one. No I/O and no wall clock: ``now`` is passed in.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson

from atalaia.incidents.events import IncidentEvent
from atalaia.incidents.silences import SilenceEvent
from atalaia.notifiers.config import EscalationConfig, HoursSchedule, Policy, RotationSchedule, Route
from atalaia.notifiers.model import DIGEST_LISTED, IncidentSnapshot, Notification, digest_id
from atalaia.notifiers.schedule import in_hours, on_call
from atalaia.rules.alarm import severity_rank
from atalaia.rules.matchers import matches_all
from atalaia.streams.clock import format_time, parse_time

Status = Literal["running", "exhausted", "stopped", "closed"]
CLOSED_RETENTION = timedelta(days=2)


class Tick:
    """The timer input: fire every escalation step that is due at ``now``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TICK"


TICK = Tick()


@dataclass(slots=True)
class Escalation:
    incident: str
    policy: str
    episode: int
    step: int
    repeat: int
    status: Status
    next_due: float | None  # epoch seconds (UTC) of the next repeat/step, None when not running
    version: int
    snapshot: IncidentSnapshot
    notified: list[str] = field(default_factory=list)  # targets reached in any episode (ordered)
    closed_at: float | None = None
    last_paged: float | None = None  # when the latest escalation message was due (repage_interval)
    paged_rank: int = -1  # highest severity rank paged since the interval started
    deferred: bool = False  # a (re)start held back by repage_interval: its step 0 is due at next_due
    digested: list[str] = field(default_factory=list)  # targets its latest page went to in a digest


@dataclass(slots=True)
class Digest:
    """A target's storm state: when it was last sent messages, and what is held for its digest."""

    sent: list[float] = field(default_factory=list)  # due times of messages sent (within the window)
    held: list[Notification] = field(default_factory=list)
    due: float | None = None  # when the held ones go out as one digest
    last: Notification | None = None  # the latest digest sent (said again after a broker reset)


DIGEST_TIMER = "\x00digest:"  # timer key prefix (incident ids never start with NUL)


@dataclass(slots=True)
class EscalationState:
    escalations: dict[str, Escalation] = field(default_factory=dict)
    timers: list[tuple[float, str]] = field(default_factory=list)  # heap, lazily invalidated
    digests: dict[str, Digest] = field(default_factory=dict)  # per target (storm digests)

    def snapshot(self) -> bytes:
        # orjson serialises the (slotted) dataclasses natively: ~10× faster than asdict()
        blob: dict[str, Any] = {"v": 1, "escalations": list(self.escalations.values())}
        if self.digests:
            blob["digests"] = self.digests
        return orjson.dumps(blob)

    @classmethod
    def restore(cls, blob: bytes) -> EscalationState:
        data = orjson.loads(blob)
        if data.get("v") != 1:
            raise ValueError(f"unknown escalation snapshot version {data.get('v')!r}")
        state = cls()
        for d in data["escalations"]:
            d["snapshot"] = IncidentSnapshot(**d["snapshot"])
            esc = Escalation(**d)
            state.escalations[esc.incident] = esc
            if esc.next_due is not None:
                state.timers.append((esc.next_due, esc.incident))
        for target, d in (data.get("digests") or {}).items():
            held = [Notification.from_dict(n) for n in d["held"]]
            last = Notification.from_dict(d["last"]) if d.get("last") else None
            state.digests[target] = Digest(list(d["sent"]), held, d["due"], last)
            if d["due"] is not None:
                state.timers.append((d["due"], DIGEST_TIMER + target))
        heapq.heapify(state.timers)
        return state

    def next_wakeup(self) -> datetime | None:
        """When the next timer is due (for the agent's sleep); None if nothing is running."""
        while self.timers:
            due, inc = self.timers[0]
            esc = self.escalations.get(inc)
            if esc is not None and esc.next_due == due:
                return datetime.fromtimestamp(due, UTC)
            dig = self.digests.get(inc[len(DIGEST_TIMER) :]) if inc.startswith(DIGEST_TIMER) else None
            if dig is not None and dig.due == due:
                return datetime.fromtimestamp(due, UTC)
            heapq.heappop(self.timers)
        return None


def _ts(dt: datetime) -> float:
    return dt.timestamp()


class EscalationEngine:
    def __init__(self, config: EscalationConfig):
        self.config = config
        self.tz = ZoneInfo(config.timezone)
        self._released: list[Notification] = []  # digests flushed during the current step

    # --- public API ----------------------------------------------------------------------

    def step(
        self,
        state: EscalationState,
        item: IncidentEvent | SilenceEvent | dict[str, Any] | Tick,
        now: datetime,
    ) -> tuple[EscalationState, list[Notification]]:
        """One input: an incident event (as the stage decodes it, or as a dict: replay, tests), or
        the timer ``TICK``."""
        out: list[Notification] = []
        if isinstance(item, SilenceEvent) or (
            isinstance(item, dict) and item.get("kind", "incident") != "incident"
        ):
            return state, out  # a silence's change: silences act through the incident's state
        if isinstance(item, Tick):
            self._fire(state, _ts(now), out)
            self._prune(state, _ts(now))
        else:
            at = parse_time(item["at"] if isinstance(item, dict) else item.at)
            # timers due strictly before the event's time fire first (an ack at 10:05:00 wins
            # over a step due at 10:05:00); later ones wait for the tick
            self._fire(state, min(_ts(at) - 1e-6, _ts(now)), out)
            self._apply(state, item, at, out)
        if self.config.storm is not None and (out or self._released):
            out = self._gate(state, out) + self._released  # released digests are not gated again
            self._released = []
        return state, out

    def step_batch(
        self,
        state: EscalationState,
        events: list[IncidentEvent | SilenceEvent | dict[str, Any]],
        now: datetime,
    ) -> tuple[EscalationState, list[Notification]]:
        out: list[Notification] = []
        for ev in events:
            _, notes = self.step(state, ev, now)
            out.extend(notes)
        _, notes = self.step(state, TICK, now)
        out.extend(notes)
        return state, out

    def route(self, snap: IncidentSnapshot) -> str | None:
        """The policy of the first route whose match holds, or None."""
        for r in self.config.routes:
            if _matches(r, snap):
                return r.policy
        return None

    # --- events --------------------------------------------------------------------------

    def _apply(
        self,
        state: EscalationState,
        ev: IncidentEvent | dict[str, Any],
        at: datetime,
        out: list[Notification],
    ) -> None:
        snap = IncidentSnapshot.from_event(ev)
        esc = state.escalations.get(snap.incident)
        wants = snap.active and snap.state == "unacknowledged"
        t = _ts(at)
        changes = (ev.get("changes") or [ev.get("change")]) if isinstance(ev, dict) else ev.changes
        escalated = "escalated" in changes
        if esc is None:
            if escalated and not wants:  # nothing was paged yet: escalating now pages step 0 once
                policy = self.route(snap)
                if policy is None:
                    return
                esc = Escalation(snap.incident, policy, 0, 0, 0, "stopped", None, snap.version, snap)
                state.escalations[snap.incident] = esc
                self._escalate(state, esc, t, out, first=True)
                return
            if not wants:
                return
            policy = self.route(snap)
            if policy is None:
                return
            esc = Escalation(snap.incident, policy, 0, 0, 0, "running", None, snap.version, snap)
            state.escalations[snap.incident] = esc
            self._start(state, esc, t, out)
            return
        if snap.version and snap.version <= esc.version:
            return  # a replayed or out-of-order event: already applied
        esc.version, esc.snapshot = snap.version, snap
        if esc.status == "closed":
            return
        policy = self.config.policies.get(esc.policy)
        if policy is None:  # the policy was removed from the configuration since the snapshot
            esc.policy = self.route(snap) or esc.policy
            policy = self.config.policies.get(esc.policy)
            if policy is None:
                esc.status, esc.next_due = "stopped", None
                return
            esc.status = "stopped"  # restart below on the policy that now routes it
        if snap.state == "closed":
            esc.status, esc.next_due, esc.closed_at = "closed", None, t
            if policy.notify_resolved:
                for target in esc.notified:
                    out.append(
                        Notification(
                            esc.incident,
                            esc.policy,
                            esc.episode,
                            -1,
                            0,
                            target,
                            "resolved",
                            format_time(at),
                            snap,
                        )
                    )
            return
        if escalated:
            running = snap.active and snap.state not in policy.stop_on
            if not running:
                esc.status, esc.next_due = "stopped", None
            elif esc.status == "stopped":  # it would run again: a new episode, paged from step 0
                esc.episode += 1
                esc.status = "running"
                self._escalate(state, esc, t, out, first=True)
                return
            self._escalate(state, esc, t, out)
            return
        if snap.state in policy.stop_on or not snap.active:
            esc.status, esc.next_due = "stopped", None
            return
        new_policy = self.route(snap)
        if esc.status == "stopped" and wants:
            esc.policy = new_policy or esc.policy
            esc.episode += 1
            self._start(state, esc, t, out)
        elif new_policy is not None and new_policy != esc.policy and wants:
            esc.policy, esc.episode = new_policy, esc.episode + 1
            self._start(state, esc, t, out)

    def _repage_interval(self, esc: Escalation) -> float:
        policy = self.config.policies.get(esc.policy)
        td = policy.repage_interval if policy is not None and policy.repage_interval is not None else None
        return (td or self.config.repage_interval).total_seconds()

    def _start(self, state: EscalationState, esc: Escalation, t: float, out: list[Notification]) -> None:
        esc.step, esc.repeat, esc.status, esc.deferred = 0, 0, "running", False
        interval = self._repage_interval(esc)
        if esc.last_paged is not None and interval > 0 and t < esc.last_paged + interval:
            rise = self.config.repage_on_rise and severity_rank(esc.snapshot.severity) > esc.paged_rank
            if not rise:  # flapping: page once at the end of the interval, if it is still due then
                esc.deferred = True
                esc.next_due = esc.last_paged + interval
                heapq.heappush(state.timers, (esc.next_due, esc.incident))
                return
        self._notify(esc, t, out)
        self._schedule(state, esc, t)

    def _escalate(
        self, state: EscalationState, esc: Escalation, t: float, out: list[Notification], first: bool = False
    ) -> None:
        """Escalate now: page the next step at once (see the module docstring)."""
        policy = self.config.policies[esc.policy]
        last = len(policy.steps) - 1
        if first:
            esc.step, esc.repeat = 0, 0
        elif esc.step < last:
            esc.step, esc.repeat = esc.step + 1, 0
        else:  # the last step again, as a further repeat (a new message id)
            esc.step, esc.repeat = last, esc.repeat + 1
        esc.deferred = False
        esc.last_paged = None  # an operator's decision is not held back by repage_interval
        self._notify(esc, t, out)
        if esc.status == "stopped":
            esc.next_due = None
            return
        esc.status = "running"
        self._schedule(state, esc, t)

    # --- timers --------------------------------------------------------------------------

    def _fire(self, state: EscalationState, until: float, out: list[Notification]) -> None:
        """Fire the timers due up to ``until``. Catching up after an outage (several timers of one
        escalation overdue at once), each step's first message is sent (it may reach people no
        earlier step did), and at most one overdue repeat per target, not the last repeat of every
        step that came due. A repeat whose successor is also overdue is held, not dropped: the
        latest one held goes to those of its targets the next message sent does not reach (a
        rotation's new person on call, a target of its hours, a step's target the next step does
        not have)."""
        timers = state.timers
        held: dict[str, list[Notification]] = {}  # incident → its latest overdue repeat's pages
        new: dict[str, set[str]] = {}  # incident → targets only its held pages have notified
        while timers and timers[0][0] <= until:
            due, inc = heapq.heappop(timers)
            if inc.startswith(DIGEST_TIMER):
                self._flush(state, inc[len(DIGEST_TIMER) :], due, out)
                continue
            esc = state.escalations.get(inc)
            if esc is None or esc.status != "running" or esc.next_due != due:
                continue  # stale timer
            policy = self.config.policies.get(esc.policy)
            if policy is None or esc.step >= len(policy.steps):  # configuration changed under a snapshot
                esc.status, esc.next_due = ("stopped" if policy is None else "exhausted"), None
                continue
            if esc.deferred:  # a start held back by repage_interval: its step 0 now
                esc.deferred = False
                self._notify(esc, due, out)
                self._schedule(state, esc, due)
                continue
            step = policy.steps[esc.step]
            if esc.repeat < step.repeat:
                esc.repeat += 1
            elif esc.step + 1 < len(policy.steps):
                esc.step, esc.repeat = esc.step + 1, 0
            else:
                esc.status, esc.next_due = "exhausted", None
                continue
            self._schedule(state, esc, due)
            # after an outage, a repeat whose successor (a repeat, or the next step's first
            # message) is also overdue is held: sent only to the targets that message misses
            overdue = esc.next_due is not None and esc.next_due <= until
            page: list[Notification] = []
            known = set(esc.notified)
            self._notify(esc, due, page)
            if esc.repeat > 0 and overdue:  # held; a later repeat supersedes it (the latest counts)
                for n in held.get(inc, []):  # a target only that one reached was not notified
                    if n.target in new.get(inc, ()) and n.target not in {m.target for m in page}:
                        esc.notified.remove(n.target)
                new[inc] = (new.get(inc, set()) | (set(esc.notified) - known)) & {n.target for n in page}
                held[inc] = page
                continue
            new.pop(inc, None)
            reached = {n.target for n in page if n.kind == "escalation"}
            out.extend(n for n in held.pop(inc, []) if n.target not in reached)
            out.extend(page)
        for pages in held.values():  # (a successor that did not fire: its targets still hear)
            out.extend(pages)

    # --- storm digests --------------------------------------------------------------------

    def _gate(self, state: EscalationState, notes: list[Notification]) -> list[Notification]:
        """Hold escalation messages to people beyond the storm threshold for the target's digest."""
        storm = self.config.storm
        assert storm is not None
        window = storm.window.total_seconds()
        out = []
        for n in notes:
            target = self.config.targets.get(n.target)
            if n.kind != "escalation" or target is None or target.channel not in storm.channels:
                out.append(n)
                continue
            t = _ts(parse_time(n.due))
            d = state.digests.setdefault(n.target, Digest())
            d.sent = [x for x in d.sent if x > t - window]
            if d.held or len(d.sent) >= storm.threshold:
                d.held.append(n)
                esc = state.escalations.get(n.incident)
                if esc is not None and n.target not in esc.digested:
                    esc.digested.append(n.target)  # its page to this target is the digest's now
                if d.due is None:
                    d.due = t + storm.wait.total_seconds()
                    heapq.heappush(state.timers, (d.due, DIGEST_TIMER + n.target))
            else:
                d.sent.append(t)
                out.append(n)
        return out

    def _flush(self, state: EscalationState, target: str, due: float, out: list[Notification]) -> None:
        """The held messages of ``target`` as one digest (those still wanted: an incident
        acknowledged or closed meanwhile drops out); a single one goes as it was."""
        d = state.digests.get(target)
        if d is None or d.due != due:
            return
        held, d.held, d.due = d.held, [], None
        keep = []
        for n in held:
            esc = state.escalations.get(n.incident)
            if esc is not None and esc.status in ("running", "exhausted") and esc.episode == n.episode:
                keep.append(n)
        if not keep:
            return
        d.sent.append(due)
        if len(keep) == 1:  # it goes as itself: a broker reset says it again as itself
            self._released.append(keep[0])
            esc = state.escalations[keep[0].incident]
            if target in esc.digested:
                esc.digested.remove(target)
            return
        keep.sort(key=lambda n: (-severity_rank(n.snapshot.severity), n.snapshot.opened_at or "", n.incident))
        lead = keep[0]
        snaps = [state.escalations[n.incident].snapshot for n in keep[:DIGEST_LISTED]]
        more: dict[str, int] = {}
        for n in keep[DIGEST_LISTED:]:
            sev = state.escalations[n.incident].snapshot.severity
            more[sev] = more.get(sev, 0) + 1
        d.last = Notification(
            lead.incident,
            lead.policy,
            lead.episode,
            lead.step,
            lead.repeat,
            target,
            "digest",
            format_time(datetime.fromtimestamp(due, UTC)),
            snaps[0],
            digest_id(target, [n.id for n in keep]),
            digest=snaps,
            digest_more=more,
        )
        self._released.append(d.last)

    def _schedule(self, state: EscalationState, esc: Escalation, t: float) -> None:
        policy = self.config.policies[esc.policy]
        step = policy.steps[esc.step]
        if esc.repeat < step.repeat or esc.step + 1 < len(policy.steps):
            esc.next_due = t + step.wait.total_seconds()
            heapq.heappush(state.timers, (esc.next_due, esc.incident))
        else:  # the last message of the last step was just sent: nothing more is due
            esc.next_due = None
            esc.status = "exhausted"

    def _prune(self, state: EscalationState, now: float) -> None:
        horizon = now - CLOSED_RETENTION.total_seconds()
        stale = [k for k, e in state.escalations.items() if e.closed_at is not None and e.closed_at < horizon]
        for k in stale:
            del state.escalations[k]

    # --- targets -------------------------------------------------------------------------

    def announce(self, state: EscalationState) -> list[Notification]:
        """The latest page of every escalation that is running or has run its course (a
        stopped one was acknowledged) again (same ids: incident, policy,
        episode, step, repeat, target), after a broker reset (``streams.stage``): the delivery
        stage sends what it never received and skips, by its log, what it had."""
        out: list[Notification] = []
        for esc in state.escalations.values():
            policy = self.config.policies.get(esc.policy)
            if esc.status not in ("running", "exhausted") or esc.deferred or esc.last_paged is None:
                continue
            if policy is None or esc.step >= len(policy.steps):
                continue  # (its policy removed since: nothing to say what it paged)
            pages = self._pages(esc, policy, datetime.fromtimestamp(esc.last_paged, UTC))
            # a page that went (or is held) in a storm digest is said again as that digest, never on
            # its own: after a restart each incident of a storm was paged once more, one by one
            out += [n for n in pages if n.target not in esc.digested]
        # the latest digest of each target again (the same id: the delivery log refuses a second
        # send); what is still held goes out when its timer fires (held messages are in the state)
        out += [d.last for d in state.digests.values() if d.last is not None]
        return out

    def _pages(self, esc: Escalation, policy: Policy, when: datetime) -> list[Notification]:
        """The escalation messages of ``esc``'s current step and repeat, due ``when``."""
        due = format_time(when)
        return [
            Notification(
                esc.incident,
                esc.policy,
                esc.episode,
                esc.step,
                esc.repeat,
                target,
                "escalation",
                due,
                esc.snapshot,
            )
            for target in self.resolve_targets(policy, esc.step, when)
        ]

    def _notify(self, esc: Escalation, t: float, out: list[Notification]) -> None:
        policy: Policy = self.config.policies[esc.policy]
        when = datetime.fromtimestamp(t, UTC)
        due = format_time(when)
        rank = severity_rank(esc.snapshot.severity)
        if esc.last_paged is None or t >= esc.last_paged + self._repage_interval(esc):
            esc.paged_rank = rank
        else:
            esc.paged_rank = max(esc.paged_rank, rank)
        esc.last_paged = t
        esc.digested = []  # a new page: the storm gate decides again where it goes
        for n in self._pages(esc, policy, when):
            out.append(n)
            if n.target not in esc.notified:
                esc.notified.append(n.target)
        propose = policy.steps[esc.step].propose_warning
        if propose is not None and esc.repeat == 0:  # a draft for a person to approve, once per step
            ask = {
                "sender": propose.sender,
                "valid_for_s": propose.valid_for.total_seconds(),
                "status": propose.status,
            }
            out.append(
                Notification(
                    esc.incident,
                    esc.policy,
                    esc.episode,
                    esc.step,
                    0,
                    "propose_warning",
                    "propose",
                    due,
                    esc.snapshot,
                    warning=ask,
                )
            )

    def resolve_targets(self, policy: Policy, step: int, when: datetime) -> list[str]:
        """Target names of ``step`` at ``when``: hours filters applied, rotations resolved."""
        names: list[str] = []
        schedules = self.config.schedules
        for st in policy.steps[step].targets:
            if st.during is not None and not in_hours(_hours(schedules[st.during]), when, self.tz):
                continue
            if st.outside is not None and in_hours(_hours(schedules[st.outside]), when, self.tz):
                continue
            sch = schedules.get(st.target)
            name = on_call(sch, when, self.tz) if isinstance(sch, RotationSchedule) else st.target
            if name not in names:
                names.append(name)
        return names


def _hours(s: Any) -> HoursSchedule:
    assert isinstance(s, HoursSchedule)
    return s


def _matches(route: Route, snap: IncidentSnapshot) -> bool:
    m = route.match
    if m.severity is not None and snap.severity not in m.severity:
        return False
    if m.min_severity is not None and severity_rank(snap.severity) < severity_rank(m.min_severity):
        return False
    if m.tenant is not None:
        tenant = snap.tenant or snap.correlation.get("tenant")
        if tenant not in ([m.tenant] if isinstance(m.tenant, str) else m.tenant):
            return False
    if m.labels:
        have = {k: str(v) for k, v in snap.correlation.items() if isinstance(v, str | int | float)}
        have.update(snap.labels)
        return matches_all(m.label_matchers, have)
    return True
