"""The normalised Observation: the public contract on ``atalaia.observations`` (DESIGN.md).

```json
{"time": "2026-01-01T00:00:00Z", "entity": "urn:ngsi-ld:WaterObserved:porto-01",
 "type": "WaterObserved", "attributes": {"height": 3.2}, "location": [-8.61, 41.14],
 "source": "orion-ld"}
```

Atalaia adds optional keys (consumers must ignore keys they do not know):

* ``units``: attribute -> unit code as sent (UN/CEFACT ``unitCode`` such as ``MTR``), when present;
* ``labels``: the entity's scalar text properties (``district``, ``parish``, ``name``,
  ``areaServed`` ...), used by rule ``where`` filters and incident correlation;
* ``quality``: data-quality warnings attached at ingest (time without zone, clock skew, location
  outside the area of interest ...);
* ``id``: deterministic id = hash(entity, time, attributes), so redeliveries can be deduplicated.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator


def format_time(t: datetime) -> str:
    """RFC 3339 UTC with ``Z`` and no superfluous fraction (the contract's time format)."""
    t = t.astimezone(UTC)
    if t.microsecond:
        return t.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0") + "Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str) -> datetime:
    """Parse an RFC 3339 time that carries a zone; raises ValueError otherwise."""
    t = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"time {s!r} has no UTC offset")
    return t.astimezone(UTC)


def observation_id(entity: str, time: str, attributes: dict[str, float]) -> str:
    body = orjson.dumps([entity, time, attributes], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(body, digest_size=12).hexdigest()


class Observation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    time: datetime
    entity: str = Field(min_length=1)
    type: str = Field(min_length=1)
    attributes: dict[str, float]
    location: tuple[float, float] | None = None  # [lon, lat]
    source: str = "unknown"
    units: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    quality: list[str] = Field(default_factory=list)

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, v: Any) -> datetime:
        if isinstance(v, str):
            return parse_time(v)
        if isinstance(v, datetime):
            if v.tzinfo is None:
                raise ValueError("time has no UTC offset")
            return v.astimezone(UTC)
        raise ValueError("time must be an RFC 3339 string")

    @field_serializer("time")
    def _ser_time(self, t: datetime) -> str:
        return format_time(t)

    @property
    def id(self) -> str:
        return observation_id(self.entity, format_time(self.time), self.attributes)

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        d["location"] = list(self.location) if self.location else None
        d["id"] = self.id
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes | str) -> Observation:
        return cls.model_validate(orjson.loads(raw))
