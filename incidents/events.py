"""What the incident manager emits: incident events (``atalaia.incidents``, one per state change)
and command replies (``atalaia.commands.replies``), each encoded by its ``to_json`` and decoded
here (:func:`decode_incident_record`, :func:`decode_reply`)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import orjson

from atalaia.streams.records import Location, Text, Time, record_decoder

if TYPE_CHECKING:
    from atalaia.incidents.silences import SilenceEvent

Change = Literal[  # in order of precedence: an event's primary change is the first it has
    "closed",
    "opened",
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
    "severity-changed",
    "reactivated",
    "returned-to-normal",
    "alarm-added",
    "alarm-suppressed",
    "alarm-unsuppressed",
    "alarm-updated",
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


class AlarmView(msgspec.Struct, frozen=True):
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


class IncidentEvent(msgspec.Struct):
    """One incident change (a msgspec Struct: decoded straight from ``atalaia.incidents``; encoded
    by orjson, field by field, the same bytes as before)."""

    id: str
    incident: Text
    version: int
    at: Time
    change: str
    changes: list[str]
    state: str
    active: bool
    severity: str
    title: str
    correlation: dict[str, str]
    labels: dict[str, str]
    location: Location | None
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
    kind: Literal["incident"] = "incident"
    # the operator overlay (shelved | suppressed | out-of-service) or None: tells an operator's
    # "suppressed" from one whose every alarm is (inhibited, silenced, in maintenance)
    overlay: str | None = None
    # an annunciation waits for acknowledgement (also while every alarm is suppressed, where the
    # state does not say so); None in events written before it existed
    needs_ack: bool | None = None
    # true while a one-shot shelve is on (it ends when no alarm fires; ``shelved_until`` is its
    # bound); None otherwise, and then left out of the record: the records of every other
    # incident are the bytes they were before it existed
    shelved_until_clear: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        d = msgspec.to_builtins(self)
        if self.shelved_until_clear is None:  # as to_json writes it: the key only while it is set
            del d["shelved_until_clear"]
        return d

    def to_json(self) -> bytes:
        # orjson (its float format is the contract's) with each Struct as its fields: ~3x faster
        # than orjson on the former dataclasses
        if self.shelved_until_clear is not None:
            return orjson.dumps(self, default=msgspec.structs.asdict)
        fields = msgspec.structs.asdict(self)  # (without the unset shelved_until_clear)
        del fields["shelved_until_clear"]
        return orjson.dumps(fields, default=msgspec.structs.asdict)


@dataclass(slots=True)
class CommandReply:
    command: str
    incident: str
    action: str
    actor: str
    accepted: bool
    reason: str  # why it was rejected, or what it did
    at: str | None  # None only on the rejected reply to a malformed command
    version: int | None = None  # the incident version it produced
    # a refusal's kind, stable (``nothing-to-acknowledge``, ...: ``incidents/README.md``), and
    # what its text says as values, so the console says it in the operator's language; None on
    # an accepted reply and on replies written before refusals had them
    code: str | None = None
    params: dict[str, str | int] | None = None
    kind: Literal["reply"] = field(default="reply", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return orjson.dumps(self)  # orjson serialises (nested) dataclasses natively and fast


def rejected_reply(value: bytes | None, reason: str) -> tuple[bytes, bytes] | None:
    """The rejected reply (Kafka key, bytes) to a command record the manager cannot take, so the
    console does not wait for it; None when the record is not even a command (no ``action``)."""
    try:
        ev = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(ev, dict) or "action" not in ev:
        return None
    command = str(ev.get("id", ""))
    reply = {
        "kind": "reply",
        "command": command,
        "incident": str(ev.get("incident", "")),
        "action": str(ev.get("action", "")),
        "actor": str(ev.get("actor", "")),
        "accepted": False,
        "reason": reason,
        "at": None,
    }
    return command.encode(), orjson.dumps(reply)


# -- the records of atalaia.incidents: incident events and (for the projection) silence changes --
_event_decoder = msgspec.json.Decoder(IncidentEvent)


@record_decoder
def decode_incident_event(value: bytes) -> IncidentEvent:
    """A record of ``atalaia.incidents`` as an :class:`IncidentEvent`; raises
    ``msgspec.DecodeError`` naming the path otherwise (unknown keys are ignored)."""
    return _event_decoder.decode(value)


@record_decoder
def decode_incident_record(value: bytes) -> IncidentEvent | SilenceEvent:
    """Any record of ``atalaia.incidents``: an incident event, or a runtime silence's change
    (``"kind": "silence"``, :class:`~atalaia.incidents.silences.SilenceEvent`). Incident events
    are decoded in one pass; the rare silence change is tried when that fails."""
    from atalaia.incidents.silences import decode_silence_event

    try:
        return _event_decoder.decode(value)
    except msgspec.DecodeError as e:
        try:
            return decode_silence_event(value)
        except msgspec.DecodeError:
            raise e from None


def incident_event_from_dict(d: dict[str, Any]) -> IncidentEvent:
    """The same check for an event given as a dict."""
    return msgspec.convert(d, IncidentEvent)


_reply_decoder = msgspec.json.Decoder(CommandReply)


@record_decoder
def decode_reply(value: bytes) -> CommandReply:
    """A record of ``atalaia.replies`` as a :class:`CommandReply` (a rejected reply to a
    malformed command carries ``at: null``, so ``at`` may be None here)."""
    return _reply_decoder.decode(value)
