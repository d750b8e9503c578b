"""The records that cross the escalation → delivery boundary.

A :class:`Notification` is what the escalation engine emits (one per target) and what travels on
``atalaia.notifications``; a :class:`DeliveryResult` is what a channel answers for one send.
Notification ids are deterministic (incident, policy, episode, step, repeat, target), so a replay
of the same incident events yields the same ids and the delivery log can refuse to send twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import orjson

from atalaia.streams.records import record_decoder

if TYPE_CHECKING:
    from atalaia.incidents.events import IncidentEvent

Kind = Literal["escalation", "resolved", "warning", "propose", "digest"]
Status = Literal["delivered", "retryable", "permanent"]


def notification_id(
    incident: str, policy: str, episode: int, step: int | str, repeat: int, target: str
) -> str:
    raw = f"{incident}|{policy}|{episode}|{step}|{repeat}|{target}"
    return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()


@dataclass(slots=True)
class IncidentSnapshot:
    """What a message needs to say about the incident at the time of the notification."""

    incident: str
    version: int
    at: str
    change: str
    state: str
    active: bool
    severity: str
    title: str
    labels: dict[str, str] = field(default_factory=dict)
    correlation: dict[str, Any] = field(default_factory=dict)
    location: list[float] | None = None
    opened_at: str | None = None
    acknowledged_by: str | None = None
    alarms: list[dict[str, Any]] = field(default_factory=list)
    tenant: str | None = None  # the incident's tenant (None: single tenant)

    @classmethod
    def from_event(cls, ev: IncidentEvent | dict[str, Any]) -> IncidentSnapshot:
        """The snapshot of an incident event: decoded from ``atalaia.incidents`` (typed), or a dict
        (the escalation engine's direct callers: replay, tests), read leniently."""
        if not isinstance(ev, dict):
            return cls(
                ev.incident,
                ev.version,
                ev.at,
                ev.change,
                ev.state,
                ev.active,
                ev.severity,
                ev.title or ev.incident,
                ev.labels,
                ev.correlation,
                ev.location,
                ev.opened_at,
                ev.acknowledged_by,
                msgspec.to_builtins(ev.alarms[:50]),
                ev.tenant or ev.correlation.get("tenant"),
            )
        return cls(
            incident=str(ev["incident"]),
            version=int(ev.get("version", 0)),
            at=str(ev["at"]),
            change=str(ev.get("change", "")),
            state=str(ev.get("state", "")),
            active=bool(ev.get("active", True)),
            severity=str(ev.get("severity", "medium")),
            title=str(ev.get("title") or ev["incident"]),
            labels={str(k): str(v) for k, v in (ev.get("labels") or {}).items()},
            correlation=dict(ev.get("correlation") or {}),
            location=list(ev["location"]) if ev.get("location") else None,
            opened_at=ev.get("opened_at"),
            acknowledged_by=ev.get("acknowledged_by"),
            alarms=[dict(a) for a in (ev.get("alarms") or [])][:50],
            tenant=ev.get("tenant") or (ev.get("correlation") or {}).get("tenant"),
        )


@dataclass(slots=True)
class Notification:
    """One message to one target, due at ``due`` (RFC 3339 Z, the escalation's event time).

    ``kind``: ``escalation`` / ``resolved`` (an incident), ``warning`` (an issued population
    warning, see :mod:`atalaia.notifiers.warning`), ``propose`` (a ``propose_warning`` step: turned
    into a draft command on ``atalaia.commands``, never delivered), ``digest`` (several incidents
    to one person in a storm, listed in ``digest``)."""

    incident: str
    policy: str
    episode: int
    step: int  # index in the policy's steps; -1 for a "resolved" notice
    repeat: int
    target: str
    kind: Kind
    due: str
    snapshot: IncidentSnapshot
    id: str = ""
    # kind "warning": the CAP document parsed by atalaia.notifiers.warning (identifier, status,
    # msgType, infos, xml); kind "propose": the draft a propose_warning step asks for
    warning: dict[str, Any] | None = None
    # kind digest: the incidents it sums up, most severe first, at most DIGEST_LISTED of them, and
    # how many more there were, by severity (a storm's digest stays one readable, sendable record)
    digest: list[IncidentSnapshot] = field(default_factory=list)
    digest_more: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id:
            step: int | str = "resolved" if self.kind == "resolved" else self.step
            self.id = notification_id(
                self.incident, self.policy, self.episode, step, self.repeat, self.target
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return orjson.dumps(self)  # orjson serialises (slotted) dataclasses natively, ~10× asdict

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Notification:
        """A notification given as a dict (the delivery log's rows), checked like the record."""
        return msgspec.convert(d, cls)


@dataclass(slots=True)
class DeliveryResult:
    """A channel's answer for one send. ``retryable`` failures are retried with backoff;
    ``permanent`` ones (4xx, a malformed target) are not."""

    status: Status
    error: str | None = None
    detail: str | None = None  # e.g. HTTP status, SMTP answer, number of SMS segments
    # retryable: the target asked to wait this many seconds before trying again (HTTP Retry-After
    # on a 429/503); the scheduler honours it, bounded (retry.RETRY_AFTER_MAX)
    retry_after: float | None = None
    # an email to several recipients, not delivered to all yet: whom the channel reached or was
    # refused by for good so far (``AppriseChannel.restore``'s format). The delivery log keeps it,
    # so the next attempt, also after a restart, sends only to the others
    progress: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "delivered"


#: the incidents a storm digest lists one by one; the rest are counted by severity. 10 000
#: incidents held in one storm made a 7 MB record that no producer would send: the escalation
#: stage crashed at every restart and nobody was paged
DIGEST_LISTED = 50


def digest_id(target: str, ids: list[str]) -> str:
    """A storm digest's id: the target and the notifications it replaces (deterministic)."""
    raw = "digest|" + target + "|" + "|".join(sorted(ids))
    return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()


# -- the record of atalaia.notifications: encoded by ``Notification.to_json``, decoded here -------
_decoder = msgspec.json.Decoder(Notification)


@record_decoder
def decode_notification(value: bytes) -> Notification:
    """A record of ``atalaia.notifications`` as a :class:`Notification` (with its snapshot and
    digest); raises ``msgspec.DecodeError`` naming the path otherwise."""
    return _decoder.decode(value)
