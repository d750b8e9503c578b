"""The manager's state: plain dataclasses, times as integer microseconds since the epoch (exact
round trips through snapshots). Ordered dicts stand in for sets so iteration is deterministic."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import msgspec

from atalaia.incidents.events import AlarmView
from atalaia.incidents.kpi import KpiState
from atalaia.rules.alarm import SEVERITIES, severity_rank
from atalaia.streams.clock import format_time

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
SECOND = 1_000_000
RANKS = len(SEVERITIES) + 1  # index 0: unknown severity


def to_us(t: str | datetime | int | float) -> int:
    """RFC 3339 text, an aware datetime, or epoch seconds -> epoch microseconds."""
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00").replace("z", "+00:00"))
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise ValueError(f"time {t.isoformat()} has no UTC offset")
        return (t - EPOCH) // _US
    return round(t * SECOND)


#: the times the manager takes (the records' range, years 1970..9000): any of them plus any
#: duration it allows (at most 366 d) can still be written
EARLIEST_US = 0
LATEST_US = (datetime(9000, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - EPOCH) // _US


def in_range(us: int, name: str = "time") -> int:
    """``us`` if it is within the years 1970..9000, else ValueError naming ``name``; checked before
    anything changes, so a command carrying such a time is refused and leaves the state as it was."""
    if not EARLIEST_US <= us <= LATEST_US:
        raise ValueError(f"{name}: out of range (years 1970 to 9000)")
    return us


def seconds_us(s: float) -> int:
    return round(s * SECOND)


@lru_cache(maxsize=1 << 16)
def fmt(us: int) -> str:
    """Epoch microseconds -> the contract's time text, ``format_time`` (memoised: the same times
    recur in events)."""
    return format_time(EPOCH + timedelta(microseconds=us))


def alarm_key(rule: str, key: str) -> str:
    return f"{rule}\x1f{key}"


@dataclass(slots=True)
class AlarmRecord:
    rule: str
    key: str
    entity: str | None
    type: str | None
    group: str
    labels: dict[str, str]  # transition labels plus rule/group/entity/type/key/severity, for matchers
    location: list[float] | None
    position: str
    state: str
    severity: str
    value: float | None
    count: int
    first_seen: int
    last_seen: int
    active_since: int | None = None  # start of the current firing episode (stale KPI)
    annunciated: bool = False  # this firing episode has been shown to the operator
    suppressed: str | None = None  # derived: inhibited / maintenance / chattering shelve
    shelved_until: int | None = None  # chattering auto-shelve
    flaps: list[int] = field(default_factory=list)  # recent state changes (chattering window)
    chattering: bool = False
    # when the chattering flag ends if the alarm changes no more (its N-th latest change leaves the
    # window); None: not flagged, or flagged in a snapshot taken before this was kept
    chatter_until: int | None = None
    targets: list[int] = field(default_factory=list)  # inhibit rules this alarm is a target of
    sources: list[int] = field(default_factory=list)  # inhibit rules this alarm is a source of
    cached_view: AlarmView | None = None  # not persisted; cleared whenever the record changes

    @property
    def firing(self) -> bool:
        return self.state == "firing"

    def view(self, at: int | None = None) -> AlarmView:
        """The alarm as an event shows it at ``at`` (a chattering flag whose window has passed by
        then is shown ended: the alarm stopped chattering even if it has not changed since)."""
        if self.chattering and at is not None and self.chatter_until is not None and at >= self.chatter_until:
            return msgspec.structs.replace(self.view(), chattering=False)
        if self.cached_view is not None:
            return self.cached_view
        self.cached_view = AlarmView(
            self.rule,
            self.key,
            self.entity,
            self.state,
            self.severity,
            self.value,
            self.count,
            fmt(self.first_seen),
            fmt(self.last_seen),
            self.suppressed,
            self.chattering,
        )
        return self.cached_view


@dataclass(slots=True)
class AuditEntry:
    version: int
    at: int
    change: str
    state: str
    actor: str
    reason: str
    event: str  # incident event id


@dataclass(slots=True)
class Incident:
    id: str
    key: str  # correlation key (canonical text)
    correlation: dict[str, str]
    labels: dict[str, str]
    location: list[float] | None
    opened_at: int
    last_activity: int
    severity: str
    version: int = 0
    acked: bool = True  # nothing annunciated is waiting for acknowledgement
    ack_asked: int = 0  # the version whose event last asked for acknowledgement (acked went False)
    acknowledged_by: str | None = None
    overlay: str | None = None  # shelved | suppressed | out-of-service (operator-set, one at a time)
    overlay_severity: str | None = None  # the severity when the overlay was set (a rise asks again)
    shelved_until: int | None = None
    # a one-shot shelve: it ends when no alarm fires any more (``shelved_until`` is its bound,
    # ``shelving.max`` at most); False in snapshots taken before it existed
    shelve_until_clear: bool = False
    assignee: str | None = None
    close_due: int | None = None
    closed_at: int | None = None
    title: str = ""
    lead: str | None = None  # the rule the title leads with: its most severe firing alarm's
    rules: list[str] = field(default_factory=list)  # distinct rules, in order of arrival
    alarms: dict[str, AlarmRecord] = field(default_factory=dict)  # least recently changed first
    audit: list[AuditEntry] = field(
        default_factory=list
    )  # the latest entries (the full trail is in the events)
    # running counts kept by account(): firing alarms by severity rank (+1), unsuppressed / suppressed
    firing: list[int] = field(default_factory=lambda: [0] * RANKS)
    firing_suppressed: list[int] = field(default_factory=lambda: [0] * RANKS)
    n_suppressed: int = 0
    # the firing counts of each rule: unsuppressed by severity rank, then suppressed (the title's
    # lead); derived from the alarms: counted again when a snapshot from before them is loaded
    rule_firing: dict[str, list[int]] = field(default_factory=dict)

    def account(self, rec: AlarmRecord, sign: int) -> None:
        """Add (+1) or remove (-1) ``rec``'s contribution to the running counts; call around every
        change of its state, severity or suppression."""
        if rec.suppressed is not None:
            self.n_suppressed += sign
        if rec.state == "firing":
            counts = self.firing if rec.suppressed is None else self.firing_suppressed
            rank = severity_rank(rec.severity) + 1
            counts[rank] += sign
            self._count_rule(rec, rank, sign)

    def _count_rule(self, rec: AlarmRecord, rank: int, sign: int) -> None:
        per = self.rule_firing.get(rec.rule)
        if per is None:
            per = self.rule_firing[rec.rule] = [0] * (2 * RANKS)
        per[rank + (0 if rec.suppressed is None else RANKS)] += sign

    def recount_rules(self) -> None:
        """``rule_firing`` counted again from the alarms (a loaded snapshot: older ones lack it)."""
        self.rule_firing = {}
        for rec in self.alarms.values():
            if rec.state == "firing":
                self._count_rule(rec, severity_rank(rec.severity) + 1, +1)

    def lead_rule(self) -> str | None:
        """The rule of the most severe firing alarm (unsuppressed ones first, as the incident's
        severity), on a tie the rule that came first; None when no alarm of a known severity fires."""
        for base in (0, RANKS):
            best, best_rank = None, 0
            for rule in self.rules:
                per = self.rule_firing.get(rule)
                if per is None:
                    continue
                for i in range(RANKS - 1, best_rank, -1):  # (index 0: an unknown severity)
                    if per[base + i]:
                        best, best_rank = rule, i
                        break
            if best is not None:
                return best
        return None

    @property
    def active(self) -> bool:
        """Any alarm firing (suppressed ones included: nothing inhibited is lost)."""
        return any(self.firing) or any(self.firing_suppressed)

    def ask_ack(self) -> None:
        """Something asks for acknowledgement (again): nobody has acknowledged what the event this
        input makes (version + 1) shows."""
        self.acked = False
        self.acknowledged_by = None
        self.ack_asked = self.version + 1

    @property
    def annunciated_active(self) -> bool:
        return any(self.firing)

    def highest_firing(self) -> str | None:
        """Highest severity of the unsuppressed firing alarms, else of the suppressed firing ones."""
        for counts in (self.firing, self.firing_suppressed):
            for i in range(RANKS - 1, 0, -1):  # an unknown severity (index 0) never sets the incident's
                if counts[i]:
                    return SEVERITIES[i - 1]
        return None

    @property
    def state(self) -> str:
        if self.closed_at is not None:
            return "closed"
        if self.overlay is not None:
            return self.overlay
        if self.alarms and self.n_suppressed == len(self.alarms):
            return "suppressed"
        if self.annunciated_active:
            return "acknowledged" if self.acked else "unacknowledged"
        return "normal" if self.acked else "returned-unacknowledged"


@dataclass(slots=True)
class ManagerState:
    incidents: dict[str, Incident] = field(default_factory=dict)  # open incidents
    by_key: dict[str, dict[str, None]] = field(default_factory=dict)  # correlation key -> open incident ids
    alarm_home: dict[str, str] = field(default_factory=dict)  # alarm key -> open incident id
    alarm_clock: dict[str, list[Any]] = field(default_factory=dict)  # alarm key -> [last at, [ids at it]]
    closed: dict[str, int] = field(default_factory=dict)  # recently closed incident -> closed at
    # recently closed incident -> its last event (a dict): announced again after a broker reset, so
    # that a lost "closed" does not leave the projection showing it open and the escalation paging
    ended: dict[str, Any] = field(default_factory=dict)
    commands: dict[str, None] = field(default_factory=dict)  # recently seen command ids
    sources: dict[str, dict[str, None]] = field(default_factory=dict)  # "rule|equal" -> firing source alarms
    targets: dict[str, dict[str, None]] = field(default_factory=dict)  # "rule|equal" -> open target alarms
    maintenance: dict[str, bool] = field(
        default_factory=dict
    )  # window name / silence id -> was active at clock
    silences: dict[str, Any] = field(
        default_factory=dict
    )  # runtime silences (incidents.silences.Silence) by id
    clock: int | None = None  # latest now seen (timers fire up to it)
    next_due: int | None = None  # earliest shelve expiry / closing timer (None: nothing armed)
    kpi: KpiState = field(default_factory=KpiState)
    stats: dict[str, int] = field(
        default_factory=lambda: {
            "transitions": 0,
            "duplicates": 0,
            "ignored": 0,
            "commands": 0,
            "rejected": 0,
        }
    )
