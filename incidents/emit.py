"""Turning the changes one input made into incident events: one event per changed incident, with
version +1, the audit entry, and the primary change first in ``changes``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import islice
from typing import get_args

from atalaia.incidents.events import Change, CommandReply, IncidentEvent, event_id
from atalaia.incidents.model import AuditEntry, Incident, fmt

PRIORITY = get_args(Change)  # the primary change first: ``Change`` lists them in that order
_RANK = {c: i for i, c in enumerate(PRIORITY)}

Output = IncidentEvent | CommandReply


@dataclass(slots=True)
class Touch:
    incident: Incident
    at: int
    actor: str
    reason: str
    changes: list[str]
    before_active: bool
    before_severity: str
    before_acked: bool
    command: str | None = None


@dataclass(slots=True)
class Changes:
    """What one input changed, incident by incident (in the order first touched)."""

    touched: dict[str, Touch] = field(default_factory=dict)

    def touch(
        self, inc: Incident, change: str, at: int, actor: str, reason: str, command: str | None = None
    ) -> Touch:
        t = self.touched.get(inc.id)
        if t is None:
            opened = change == "opened"
            t = self.touched[inc.id] = Touch(
                inc,
                at,
                actor,
                reason,
                [],
                False if opened else inc.active,
                "" if opened else inc.severity,
                True if opened else inc.acked,
                command,
            )
        if change not in t.changes:
            t.changes.append(change)
        t.at = max(t.at, at)
        return t


def retitle(inc: Incident) -> None:
    """Set the rule the incident leads with, the one of its most severe firing alarm
    (``Incident.lead_rule``: on a tie the earliest; when none fires, the one it led with last), and
    its ``title``, so a message's subject says what made it severe."""
    inc.lead = inc.lead_rule() or (inc.lead if inc.lead in inc.rules else None)
    inc.title = title(inc)


def title(inc: Incident) -> str:
    """``<rule> +N more — <place>``, led by ``inc.lead`` (see ``retitle``); changes nothing."""
    head = inc.lead or (inc.rules[0] if inc.rules else "incident")
    if len(inc.rules) > 1:
        head += f" +{len(inc.rules) - 1} more"
    return f"{head} — {place(inc)}"


#: the longest a name (an entity's ``name`` label) and any other value of a title's place may be,
#: in characters; a longer one is cut with an ellipsis: a name at its end, an id in its middle (two
#: URNs differ at their end). Ingest keeps labels of up to 256 characters and ids of up to 1 024.
NAME_MAX = 80
VALUE_MAX = 120

#: characters that would break a line of an SMS or a subject (C0, DEL, C1 controls; the Unicode
#: line and paragraph separators): each run becomes one space
_BREAK_CHARS = "\x00-\x1f\x7f-\x9f\u2028\u2029"
#: invisible characters that change how the text around them reads or renders, dropped: the bidi
#: marks, embeddings, overrides and isolates (an RLO makes "Campanhã" read backwards, or a place
#: read as another), zero-width spaces and joiners' kin, the BOM, interlinear annotations, tag
#: characters, and lone surrogates (no encoding can send them). Listed by code point, not by
#: Unicode category, so that a title is the same text whatever Python (Unicode) version makes it.
_INVISIBLE_CHARS = (
    "\u061c\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\ud800-\udfff\U000e0000-\U000e007f"
)
_BREAKS = re.compile(f"[{_BREAK_CHARS}]+")
_INVISIBLE = re.compile(f"[{_INVISIBLE_CHARS}]+")
_SPACES = re.compile(r"\s{2,}")
#: text that ``clean`` changes (else it is returned as it is, at the cost of one search)
_DIRTY = re.compile(f"[{_BREAK_CHARS}{_INVISIBLE_CHARS}]|\\s\\s|^\\s|\\s$")


def place(inc: Incident) -> str:
    """Where the incident is, as people call it: its correlation values, where the one of an
    entity (its id, often a URN) is the entity's ``name`` when every alarm of the incident carries
    the same one (``inc.labels``: Smart Data Models' ``name``, "Rio Tinto - Campanhã"); a parish or
    an area is its label's value, already a name. The key when no value is set. Only the
    incident's own state is read (no catalogue, no clock), so a replay titles alike; every value
    is made one line without invisible characters and bounded (``clean``)."""
    name = inc.labels.get("name")
    name = clean(name, NAME_MAX) if name else ""
    parts = []
    for label, value in inc.correlation.items():
        shown = name if label == "entity" and name else clean(value or "", VALUE_MAX, middle=True)
        if shown:
            parts.append(shown)
    return ", ".join(parts) or clean(inc.key, VALUE_MAX, middle=True) or "?"


def clean(text: str, limit: int, middle: bool = False) -> str:
    """``text`` as a title shows data: on one line (a run of control characters is one space),
    without invisible characters (``_INVISIBLE``), its spaces collapsed and stripped, at most
    ``limit`` characters (cut at the end, or in the middle, with "…"). Plain text comes back as is."""
    if _DIRTY.search(text):
        text = _SPACES.sub(" ", _INVISIBLE.sub("", _BREAKS.sub(" ", text))).strip()
    if len(text) <= limit:
        return text
    if middle:
        head = (limit - 1) // 3
        return f"{text[:head].rstrip()}…{text[head - limit + 1 :].lstrip()}"
    return text[: limit - 1].rstrip() + "…"


def build_event(inc: Incident, touch: Touch, limit: int, audit_tail: int = 50) -> IncidentEvent:
    """Derive the implicit changes, bump the version, append the audit entry, return the event."""
    changes = touch.changes
    opened = "opened" in changes
    if not opened and inc.severity != touch.before_severity:
        changes.append("severity-changed")
    active = inc.active
    if touch.before_active and not active:
        changes.append("returned-to-normal")
    elif not touch.before_active and active and not opened:
        changes.append("reactivated")
    changes.sort(key=lambda c: _RANK.get(c, len(_RANK)))
    retitle(inc)  # (its lead follows the most severe firing alarm)
    inc.version += 1
    eid = event_id(inc.id, inc.version)
    state = inc.state
    inc.audit.append(AuditEntry(inc.version, touch.at, changes[0], state, touch.actor, touch.reason, eid))
    if len(inc.audit) > audit_tail:  # the full trail is in the events (and the SQL projection)
        del inc.audit[: len(inc.audit) - audit_tail]
    return _event(inc, eid, touch.at, list(changes), touch.actor, touch.reason, touch.command, limit)


def current_event(inc: Incident, limit: int) -> IncidentEvent:
    """The event of the incident's current version again (its id, time, change, actor and reason
    from the audit trail's last entry; no version bump): sent after a broker reset, so the stages
    downstream (projection, escalation) that missed it catch up, and those that had it ignore it
    (both apply an incident's events by version)."""
    last = inc.audit[-1]
    return _event(
        inc, event_id(inc.id, inc.version), last.at, [last.change], last.actor, last.reason, None, limit
    )


def _event(
    inc: Incident,
    eid: str,
    at: int,
    changes: list[str],
    actor: str,
    reason: str,
    command: str | None,
    limit: int,
) -> IncidentEvent:
    alarms = islice(reversed(inc.alarms.values()), limit)  # latest change first
    return IncidentEvent(
        id=eid,
        incident=inc.id,
        version=inc.version,
        at=fmt(at),
        change=changes[0],
        changes=changes,
        state=inc.state,
        active=inc.active,
        severity=inc.severity,
        title=inc.title,
        correlation=dict(inc.correlation),
        labels=dict(inc.labels),
        location=list(inc.location) if inc.location else None,
        alarms=[a.view(at) for a in alarms],
        alarm_count=len(inc.alarms),
        actor=actor,
        reason=reason,
        opened_at=fmt(inc.opened_at),
        acknowledged_by=inc.acknowledged_by,
        shelved_until=fmt(inc.shelved_until) if inc.shelved_until is not None else None,
        assignee=inc.assignee,
        closed_at=fmt(inc.closed_at) if inc.closed_at is not None else None,
        tenant=inc.correlation.get("tenant"),
        overlay=inc.overlay if inc.closed_at is None else None,
        needs_ack=not inc.acked and inc.closed_at is None,
        shelved_until_clear=True if inc.shelve_until_clear and inc.closed_at is None else None,
        command=command,
    )


def severity_of(inc: Incident) -> str:
    """Highest severity of the annunciated firing alarms; else of any firing alarm; else unchanged."""
    highest = inc.highest_firing()
    return inc.severity if highest is None else highest
