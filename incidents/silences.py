"""Runtime silences, as in Alertmanager: label matchers with an author, a comment, a start and an end.

A silence is created and expired by commands on ``atalaia.commands`` and kept in the incident
manager's state (so it survives restarts with the snapshot). While it is active, every alarm whose
labels it matches is *suppressed* with the reason ``silenced by <id>: <comment>``: the alarm is still
recorded (incidents open and update, the timeline says why), but it is not annunciated, so an
incident whose alarms are all silenced is ``suppressed`` and the escalation does not page for it.
Static maintenance windows of ``incidents.yaml`` are the same objects (``source: config``).

Commands (dicts on ``atalaia.commands``)::

    {"action": "silence", "id": "<command id>", "actor": "ana", "role": "supervisor",
     "matchers": ["parish=\\"Ribeira\\"", "rule=~\\"river-.*\\""], "comment": "gauge swap",
     "start": "2026-01-01T10:00:00Z", "end": "2026-01-01T12:00:00Z"}     # or "duration": "2h"
    {"action": "expire-silence", "silence": "<silence id>", "actor": ..., "role": ...}

The silence id is derived from the command id (deterministic: a redelivered command makes the same
silence). One matcher implementation: :mod:`atalaia.rules.matchers`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import msgspec
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from atalaia.incidents.config import MAX_DURATION_S, RoleName, parse_duration
from atalaia.rules.matchers import Matcher
from atalaia.streams.records import Time, record_decoder

SILENCE_ACTIONS = ("silence", "expire-silence")
MAX_MATCHERS = 20
MAX_SPAN = timedelta(seconds=MAX_DURATION_S)  # a silence's end - start, as for its duration
#: how the refusal of matchers that would silence every alarm begins (the console names it a code)
EVERY_ALARM = "the matchers would silence every alarm"


def silence_id(command_id: str) -> str:
    return "s-" + hashlib.blake2b(f"silence|{command_id}".encode(), digest_size=8).hexdigest()


def config_silence_id(name: str) -> str:
    return "maintenance-" + hashlib.blake2b(f"maintenance|{name}".encode(), digest_size=6).hexdigest()


def parse_matchers(v: Any) -> tuple[Matcher, ...]:
    """Matchers from a list of ``name="v"`` texts (or a ``{name: value}`` map of equalities);
    raises ValueError naming the bad one."""
    if isinstance(v, str):
        v = [v]
    if isinstance(v, dict):
        v = [f'{k}="{val}"' for k, val in v.items()]
    if not isinstance(v, list | tuple) or not v:
        raise ValueError('at least one matcher is needed, like ["parish=\\"Ribeira\\""]')
    if len(v) > MAX_MATCHERS:
        raise ValueError(f"at most {MAX_MATCHERS} matchers")
    out = []
    for i, m in enumerate(v):
        if isinstance(m, Matcher):
            out.append(m)
            continue
        if not isinstance(m, str) or len(m) > 1000:
            raise ValueError(f'matcher {i}: must be text like name="value" (at most 1000 characters)')
        try:
            out.append(Matcher.parse(m))
        except ValueError as e:
            raise ValueError(f"matcher {i}: {e}") from None
    if all(_matches_empty(m) for m in out):
        raise ValueError(f"{EVERY_ALARM}: add one that needs a label value")
    return tuple(out)


def _matches_empty(m: Matcher) -> bool:
    return m.matches({})


#: labels every alarm carries, never empty (the incident manager sets them from the transition)
#: and values to try them with: a matcher that accepts all of them accepts any alarm
_ALWAYS = {
    "rule": ("a", "Z", "0", "river-level-high", "air:no2 ção", "x" * 200, "-"),
    "key": ("a", "Z", "0", "urn:ngsi-ld:WaterObserved:porto-01", "ção", "x" * 200, "-"),
    "severity": ("informational", "low", "medium", "high", "critical"),
}


def matches_every_alarm(matchers: tuple[Matcher, ...]) -> bool:
    """Whether these matchers would silence every alarm though each one names a label value:
    each accepts every alarm (an empty label set, or any value of a label every alarm carries:
    ``rule=~".+"``, ``severity!=""``, ``rule!~"^$"``). ``parse_matchers`` refuses only the
    first kind (as Alertmanager does); the console refuses both when a silence is made (a
    silence restored from a snapshot or read from the commands log keeps working as before)."""
    return all(_accepts_any_alarm(m) for m in matchers)


def _accepts_any_alarm(m: Matcher) -> bool:
    if m.matches({}):
        return True
    probes = _ALWAYS.get(m.name)
    return probes is not None and all(m.accepts(v) for v in probes)


def _aware(v: Any) -> Any:
    from atalaia.incidents.commands import command_time

    return None if v is None else command_time(v)


class SilenceCommand(BaseModel):
    """Create (``silence``) or expire (``expire-silence``) a silence; validated at the edge and again
    by the manager."""

    model_config = ConfigDict(frozen=True, extra="ignore", arbitrary_types_allowed=True)

    id: str = ""
    action: Literal["silence", "expire-silence"]
    actor: str = Field(min_length=1, max_length=200)
    role: RoleName
    matchers: tuple[Matcher, ...] = ()
    comment: str = Field("", max_length=2000)
    start: datetime | None = None
    end: datetime | None = None
    duration: float | None = Field(None, description="seconds (or '2h') from start, instead of end")
    silence: str = Field("", max_length=100, description="expire-silence: the silence id")
    at: datetime | None = None

    @field_validator("matchers", mode="before")
    @classmethod
    def _matchers(cls, v: Any) -> tuple[Matcher, ...]:
        return () if v is None or (isinstance(v, list | tuple) and not v) else parse_matchers(v)

    @field_serializer("matchers")
    def _text(self, v: tuple[Matcher, ...]) -> list[str]:
        return [str(m) for m in v]

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float | None:
        return None if v is None else parse_duration(v)

    @field_validator("start", "end", "at", mode="before")
    @classmethod
    def _times(cls, v: Any) -> Any:
        return _aware(v)

    @model_validator(mode="after")
    def _check(self) -> SilenceCommand:
        if self.action == "silence":
            if not self.matchers:
                raise ValueError("matchers: at least one matcher is needed")
            if not self.comment.strip():
                raise ValueError("comment: say why (a silence needs a comment)")
            if self.end is None and not self.duration:
                raise ValueError("end: give an end time or a positive duration")
            if self.end is not None and self.start is not None and self.end <= self.start:
                raise ValueError("end: must be after start")
            # the limit on duration holds for an end too (measured from the start, else from
            # when it was issued; the manager checks it again against its own clock)
            begin = self.start or self.at
            if self.end is not None and begin is not None and self.end - begin > MAX_SPAN:
                raise ValueError(f"end: at most {MAX_DURATION_S / 86400:g}d after the start")
        elif not self.silence:
            raise ValueError("silence: the id of the silence to expire is needed")
        if not self.id:
            raw = orjson.dumps(
                [
                    self.action,
                    self.actor,
                    [str(m) for m in self.matchers],
                    self.comment,
                    self.silence,
                    self.start.isoformat() if self.start else None,
                    self.end.isoformat() if self.end else None,
                    self.duration,
                    self.at.isoformat() if self.at else None,
                ]
            )
            object.__setattr__(self, "id", hashlib.blake2b(raw, digest_size=12).hexdigest())
        return self


@dataclass(slots=True)
class Silence:
    """One silence in the manager's state; times are epoch microseconds."""

    id: str
    matchers: list[str]
    author: str
    comment: str
    start: int
    end: int
    created_at: int
    source: str = "api"  # api | config (a maintenance window of incidents.yaml)
    expired_by: str | None = None
    expired_at: int | None = None
    command: str | None = None
    name: str | None = None  # a maintenance window's name (source config)

    def active_at(self, t: int) -> bool:
        return self.start <= t < self.end


def config_silence(m: Any) -> Silence:
    """A maintenance window of ``incidents.yaml`` (``config.Maintenance``) as a silence."""
    from atalaia.incidents.model import to_us

    return Silence(
        config_silence_id(m.name),
        [str(x) for x in m.matchers],
        "incidents.yaml",
        m.reason,
        to_us(m.start),
        to_us(m.end),
        to_us(m.start),
        source="config",
        name=m.name,
    )


def silence_tenant(matchers: Any) -> str | None:
    """The tenant a silence is scoped to: the value of its ``tenant="X"`` matcher (alarms carry
    their tenant as the ``tenant`` label), or None (it may match alarms of any tenant)."""
    for m in matchers:
        if not isinstance(m, Matcher):
            try:
                m = Matcher.parse(str(m))
            except ValueError:
                continue
        if m.name == "tenant" and m.op == "=" and m.value:
            return m.value
    return None


def silence_reason(sil: Silence) -> str:
    """Why an alarm it matches is suppressed (the timeline's text)."""
    from atalaia.incidents import reasons

    if sil.source == "config":
        return reasons.maintenance(sil.name, sil.comment)
    return reasons.silenced(sil.id, sil.comment)


def silence_view(sil: Silence, now: int) -> dict[str, Any]:
    """A silence as the console lists it (``GET /api/silences``)."""
    from atalaia.incidents.model import fmt

    status = "pending" if now < sil.start else "active" if now < sil.end else "expired"
    return {
        "id": sil.id,
        "matchers": list(sil.matchers),
        "author": sil.author,
        "comment": sil.comment,
        "starts_at": fmt(sil.start),
        "ends_at": fmt(sil.end),
        "created_at": fmt(sil.created_at),
        "source": sil.source,
        "name": sil.name,
        "status": status,
        "expired_by": sil.expired_by,
    }


@dataclass(slots=True)
class SilenceEvent:
    """A silence's change on ``atalaia.incidents`` (``kind: "silence"``, key = silence id), for the
    console's projection; the escalation and the live board ignore it."""

    id: str
    change: str  # created | started | expired
    at: Time
    matchers: list[str]
    author: str
    comment: str
    starts_at: str
    ends_at: str
    created_at: str
    source: str
    expired_by: str | None
    command: str | None
    silenced: int = 0  # alarms it silenced when it was created or started
    kind: Literal["silence"] = field(default="silence", init=False)

    @property
    def incident(self) -> str:  # the key the stage publishes it under
        return self.id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return orjson.dumps(self)


_silence_decoder = msgspec.json.Decoder(SilenceEvent)


@record_decoder
def decode_silence_event(value: bytes) -> SilenceEvent:
    """A silence's change on ``atalaia.incidents`` (:func:`atalaia.incidents.events.decode_incident_record`
    reads both record kinds of the topic)."""
    return _silence_decoder.decode(value)
