"""The records of the population-warning workflow, each encoded by its ``to_json`` and decoded here.

* ``atalaia.warnings`` (what the warnings stage produces; the field ``kind`` says which):
  :class:`WarningEvent` (``"warning"``, one per change of a warning), :class:`CapRecord`
  (``"cap"``, an issued CAP document to publish) and :class:`WarningReply` (``"reply"``, the answer
  to a command). :func:`decode_warning_record` reads any of them (the warning notices stage),
  :func:`decode_warning_reply` only the replies (the console waiting for its command's answer).
* ``atalaia.commands`` (records with ``"kind": "warning"``): :class:`WarningCommand`, built by the
  console and by the escalation's ``propose_warning`` steps, read by the warnings stage with
  :func:`decode_warning_command` (the incident manager's
  :func:`~atalaia.incidents.commands.decode_command` leaves them alone).

The records of ``atalaia.warnings`` are the bytes the workflow wrote as dicts before: the same
keys in the same order, ``null`` where a value is missing, and no ``warning`` key on the reply to a
malformed command. They carry no float, so msgspec writes them (the same bytes as orjson would;
the two differ only on floats from 1e16 up). A command is written without the fields left at
their default, as its producers wrote it.

>>> reply = WarningReply(command="c1", ok=False, error="a rejection needs a reason", warning="W-1")
>>> reply.to_json()
b'{"kind":"reply","command":"c1","ok":false,"error":"a rejection needs a reason","warning":"W-1"}'
>>> decode_warning_record(reply.to_json()) == reply
True
>>> WarningReply(command=None, ok=False, error="action: bad").to_json()  # malformed: no warning key
b'{"kind":"reply","command":null,"ok":false,"error":"action: bad"}'
>>> decode_warning_command(b'{"incident": "i", "action": "acknowledge"}') is None  # not ours
True
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, ClassVar, Literal

import msgspec
import orjson

from atalaia.streams.records import Text, Time, record_decoder
from atalaia.warnings.draft import cap_time

Action = Literal["draft", "edit", "submit", "approve", "reject", "issue", "update", "cancel"]
ACTIONS: tuple[str, ...] = ("draft", "edit", "submit", "approve", "reject", "issue", "update", "cancel")
WarningState = Literal[
    "draft", "submitted", "approved", "issued", "updated", "cancelled", "expired", "rejected"
]
CapStatus = Literal["Actual", "Exercise", "System", "Test", "Draft"]  # CAP 1.2 <status>
CapMsgType = Literal["Alert", "Update", "Cancel", "Ack", "Error"]  # CAP 1.2 <msgType>

_encoder = msgspec.json.Encoder()


class WarningEvent(msgspec.Struct, tag_field="kind", tag="warning"):
    """One change of a warning (``kind: "warning"``): its new state and version, who did it, and
    ``change`` (drafted, edited, submitted, approved, rejected, issued, updated, cancelled,
    expired, refused: a refusal audited on the warning it concerns, at the same version)."""

    kind: ClassVar[Literal["warning"]] = "warning"  # the tag (written first), readable as an attribute
    warning: Text
    version: int
    state: WarningState
    change: Text
    at: Time
    actor: str
    role: str
    reason: str
    command: str | None  # the command that caused it; None for an expiry
    identifier: str | None  # the CAP identifier, once issued
    status: str  # the draft's CAP status and msgType, as it wrote them
    msgType: str
    supersedes: str | None
    incident: str | None
    tenant: str | None

    def to_json(self) -> bytes:
        return _encoder.encode(self)


class CapRecord(msgspec.Struct, tag_field="kind", tag="cap"):
    """An issued CAP 1.2 document to publish (``kind: "cap"``): the warning notices stage turns
    it into notifications (SMS, email, PGU). ``tenant`` is not part of the document."""

    kind: ClassVar[Literal["cap"]] = "cap"  # the tag (written first), readable as an attribute
    warning: Text
    version: int
    identifier: Text
    status: CapStatus
    msgType: CapMsgType
    sent: Time
    expires: Time | None
    references: list[str]  # "sender,identifier,sent" of the documents it updates or cancels
    tenant: str | None
    xml: Text

    def to_json(self) -> bytes:
        return _encoder.encode(self)


class WarningReply(msgspec.Struct, tag_field="kind", tag="reply"):
    """The answer to one command (``kind: "reply"``): ``ok``, or the ``error`` that refused it.
    ``warning`` is the warning it concerns (None when it names none); the reply to a malformed
    command has ``command: null`` and no ``warning`` key at all (UNSET)."""

    kind: ClassVar[Literal["reply"]] = "reply"  # the tag (written first), readable as an attribute
    command: str | None
    ok: bool
    error: str | None
    warning: str | msgspec.UnsetType | None = msgspec.UNSET

    def to_json(self) -> bytes:
        return _encoder.encode(self)


WarningRecord = WarningEvent | CapRecord | WarningReply


def refused_reply(error: str, command: str | None = None) -> WarningReply:
    """The reply to a command that could not be read: it names the command's ``id`` when the
    record had one (so the console that sent it shows the refusal at once), None otherwise."""
    return WarningReply(command=command, ok=False, error=error)


def command_id(value: bytes | None) -> str | None:
    """The ``id`` a command record carries, read without trusting the rest of it."""
    try:
        ev = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    cid = ev.get("id") if isinstance(ev, dict) else None
    # an id no sender would make (longer than 200 characters) is not repeated in the reply
    return cid if isinstance(cid, str) and 0 < len(cid) <= 200 else None


class WarningCommand(msgspec.Struct, tag_field="kind", tag="warning", omit_defaults=True):
    """One warning command on ``atalaia.commands`` (``kind: "warning"``). ``id`` is the console's
    idempotency key (derived from the content and time when absent: :meth:`identity`); ``at``
    when it was issued (default: the step's now). Encoded without the fields left at their
    default, as the console and the escalation wrote them."""

    kind: ClassVar[Literal["warning"]] = "warning"  # the tag (written first), readable as an attribute
    action: Action
    actor: Text
    role: Text
    id: str = ""
    warning: str | None = None  # absent for 'draft' (a new warning)
    reason: str = ""
    draft: dict[str, Any] | None = None  # draft/edit/update/cancel: the draft fields
    incident: str | None = None  # draft: the incident it comes from
    tenant: str | None = None  # draft: the tenant it belongs to (default: none, or the draft's own)
    at: Time | None = None
    version: int | None = None  # approve: the version the approver saw (another is refused)

    def __post_init__(self) -> None:
        """What the schema cannot say, checked on decode and on ``msgspec.convert`` alike (a
        ``ValueError`` here is msgspec's ``ValidationError``): ``at`` is a real time as the
        workflow reads it (no 30 February), and the draft is JSON the command's identity can hash
        (nested less than 255 deep, integers within 64 bits)."""
        if self.at is not None:
            try:
                cap_time(self.at)
            except ValueError:
                raise ValueError(f"{self.at!r} is not a date and time - at `$.at`") from None
        if self.draft is not None:
            try:
                orjson.dumps(self.draft)
            except TypeError as e:
                raise ValueError(f"the draft cannot be read ({e}) - at `$.draft`") from None

    def to_json(self) -> bytes:
        return _encoder.encode(self)

    def identity(self, at: datetime) -> str:
        """Its ``id``, or (when it has none) a hash of its content and ``at`` (the command's time):
        a redelivered command without an id is still the same command."""
        if self.id:
            return self.id
        content = {
            "action": self.action,
            "warning": self.warning,
            "actor": self.actor,
            "role": self.role,
            "reason": self.reason,
            "draft": self.draft,
            "incident": self.incident,
            "tenant": self.tenant,
        }
        if self.version is not None:  # (absent: the same id as before the field existed)
            content["version"] = self.version
        raw = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
        return hashlib.blake2b(raw + at.isoformat().encode(), digest_size=12).hexdigest()


# -- the records of atalaia.warnings: encoded by their ``to_json``, decoded here ----------------
_record_decoder = msgspec.json.Decoder(WarningRecord)
_reply_decoder = msgspec.json.Decoder(WarningReply)


@record_decoder
def decode_warning_record(value: bytes) -> WarningEvent | CapRecord | WarningReply:
    """A record of ``atalaia.warnings`` as a :class:`WarningEvent`, :class:`CapRecord` or
    :class:`WarningReply` (by its ``kind``); raises ``msgspec.DecodeError`` naming the path
    otherwise. Unknown keys are ignored."""
    return _record_decoder.decode(value)


@record_decoder
def decode_warning_reply(value: bytes) -> WarningReply:
    """A reply on ``atalaia.warnings``; any other record (a warning event, a CAP record) raises
    ``msgspec.DecodeError`` (at ``$.kind``)."""
    return _reply_decoder.decode(value)


# -- the warning commands of atalaia.commands: encoded by ``WarningCommand.to_json`` ------------
class _Kind(msgspec.Struct):
    kind: Any = None


_command_decoder = msgspec.json.Decoder(WarningCommand)
_kind_decoder = msgspec.json.Decoder(_Kind)


@record_decoder
def decode_warning_command(value: bytes) -> WarningCommand | None:
    """A record of ``atalaia.commands`` as a :class:`WarningCommand`; ``None`` for any record
    that is not a JSON object with ``"kind": "warning"`` (an operator's incident command, or bytes
    that are not a command at all: the incident manager's ``decode_command`` reads those and keeps
    the malformed ones on the DLQ). A warning command that does not decode raises
    ``msgspec.DecodeError`` naming the path (``... - at `$.action```)."""
    try:  # the tag first: msgspec takes a lone tagged Struct's tag as optional
        kind = _kind_decoder.decode(value).kind
    except msgspec.DecodeError:
        return None  # not a JSON object
    if kind != "warning":
        return None
    return _command_decoder.decode(value)


def warning_command_from_dict(d: dict[str, Any]) -> WarningCommand:
    """The same check for a command given as a dict (the workflow's direct callers: the CLI,
    tests), where ``kind`` may be left out and ``at`` may be a ``datetime``; raises
    ``msgspec.ValidationError`` naming the path."""
    d = {**d, "kind": "warning"}
    if isinstance(d.get("at"), datetime):
        d["at"] = d["at"].isoformat()
    return msgspec.convert(d, WarningCommand)
