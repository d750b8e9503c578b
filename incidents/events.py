"""What the incident manager emits: incident events (``atalaia.incidents``, one per state change)
and command replies (``atalaia.commands.replies``)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

from atalaia.streams.ingest.observation import is_time

Change = Literal[
    "opened",
    "alarm-added",
    "alarm-updated",
    "severity-changed",
    "reactivated",
    "returned-to-normal",
    "alarm-suppressed",
    "alarm-unsuppressed",
    "acknowledged",
    "shelved",
    "unshelved",
    "suppressed",
    "unsuppressed",
    "out-of-service",
    "returned-to-service",
    "commented",
    "assigned",
    "escalated",
    "closed",
]
IncidentState = Literal[
    "unacknowledged",
    "acknowledged",
    "returned-unacknowledged",
    "normal",
    "shelved",
    "suppressed",
    "out-of-service",
    "closed",
]


def event_id(incident: str, version: int) -> str:
    return hashlib.blake2b(f"{incident}|{version}".encode(), digest_size=12).hexdigest()


@dataclass(slots=True, frozen=True)
class AlarmView:
    rule: str
    key: str
    entity: str | None
    state: str  # pending|firing|resolved|inactive (last transition)
    severity: str
    value: float | None
    count: int  # transitions seen (duplicates excluded)
    first_seen: str
    last_seen: str
    suppressed: (
        str | None
    )  # why it is suppressed (inhibited by ..., maintenance ..., shelved: chattering), else None
    chattering: bool = False


@dataclass(slots=True)
class IncidentEvent:
    id: str
    incident: str
    version: int
    at: str
    change: str
    changes: list[str]
    state: str
    active: bool
    severity: str
    title: str
    correlation: dict[str, str]
    labels: dict[str, str]
    location: list[float] | None
    alarms: list[AlarmView]
    alarm_count: int
    actor: str
    reason: str
    opened_at: str
    acknowledged_by: str | None
    shelved_until: str | None
    assignee: str | None = None
    closed_at: str | None = None
    command: str | None = None  # id of the command that caused it
    tenant: str | None = None  # the alarms' tenant (part of the correlation), None: single tenant
    kind: str = field(default="incident", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return orjson.dumps(self)  # orjson serialises (nested) dataclasses natively and fast


@dataclass(slots=True)
class CommandReply:
    command: str
    incident: str
    action: str
    actor: str
    accepted: bool
    reason: str  # why it was rejected, or what it did
    at: str
    version: int | None = None  # the incident version it produced
    kind: str = field(default="reply", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return orjson.dumps(self)  # orjson serialises (nested) dataclasses natively and fast


def incident_event_problem(e: Any) -> str | None:
    """Why a record on atalaia.incidents is not an incident event (None if it is)."""
    if not isinstance(e, dict):
        return "not a JSON object"
    if e.get("kind") == "silence":  # a runtime silence's change (for the projection)
        return None if isinstance(e.get("id"), str) and is_time(e.get("at")) else "bad silence event"
    if not isinstance(e.get("incident"), str) or not isinstance(e.get("version"), int):
        return "'incident' (text) and 'version' (integer) are required"
    if not is_time(e.get("at")):
        return "'at' must be an RFC 3339 time with a zone"
    if not isinstance(e.get("state"), str) or not isinstance(e.get("severity"), str):
        return "'state' and 'severity' must be text"
    if not isinstance(e.get("alarms", []), list) or not isinstance(e.get("labels", {}), dict):
        return "'alarms' must be a list and 'labels' an object"
    return None
