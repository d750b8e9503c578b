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
* ``id``: deterministic id = hash(entity, time, attributes) (and the tenant, when there is one), so
  redeliveries can be deduplicated;
* ``time_source``: where ``time`` comes from: ``observed`` (the attribute's ``observedAt`` or the
  entity's ``dateObserved``/``TimeInstant``...), ``notified`` (the NGSI-LD notification's
  ``notifiedAt``) or ``received`` (when Atalaia received the payload). Always written;
* ``tenant`` / ``service_path``: the ``NGSILD-Tenant`` (else ``Fiware-Service``) and
  ``Fiware-ServicePath`` headers the payload came with; absent when there are none (the default,
  single tenant). Entity identity is (tenant, entity): see :func:`entity_key`;
* ``types``: every type of a multi-typed NGSI-LD entity (``"type": ["Device",
  "WeatherObserved"]``), in the order sent; ``type`` is the first. Absent for one type. Rules
  read the observation as one of each type (a ``WeatherObserved`` rule sees this entity).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import msgspec
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from atalaia.streams.clock import format_time, parse_time
from atalaia.streams.ingest.timeparse import _CACHE_MAX, forget_older_half, formatted
from atalaia.streams.records import Location, Text, Time, record_decoder

TIME_SOURCES = ("observed", "notified", "received")
Tenant = Annotated[str, msgspec.Meta(pattern=r"^[^|]*$")]  # a tenant name never holds "|" (entity_key)


def observation_id(
    entity: str,
    time: str,
    attributes: dict[str, float],
    tenant: str | None = None,
    labels: dict[str, str] | None = None,
    units: dict[str, str] | None = None,
) -> str:
    """The deterministic id of an observation: its entity, time and values, with their unit codes
    when it has any (1.3 in KMH, refused by the rules, and the same reading sent again in MTR are
    two readings: one id made the corrected one a redelivery, dropped unseen); an observation of
    states alone, without attributes, is its labels (a device's two states at one time are two)."""
    parts: list[Any] = [entity, time, attributes] if tenant is None else [tenant, entity, time, attributes]
    if not attributes and labels:
        parts.append(labels)
    elif attributes and units:
        parts.append({"units": units})
    body = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(body, digest_size=12).hexdigest()


def key_part(text: str) -> str:
    """One part of a key joined with ``|`` (:func:`entity_key`, the key of a rule's ``key:``
    labels), with ``|`` and ``\\`` escaped by a backslash, so that no two lists of parts make
    the same key: a tenant-less entity ``porto|x`` is not tenant ``porto``'s entity ``x``.
    Parts holding neither are unchanged (the common case, and the keys of earlier releases)."""
    if "|" not in text and "\\" not in text:
        return text
    return text.replace("\\", "\\\\").replace("|", "\\|")


def entity_key(tenant: str | None, key: str) -> str:
    """The identity of an entity (or an alarm key) across tenants: ``key`` itself without a tenant
    (the single-city default, unchanged), else ``tenant|key``, each part escaped
    (:func:`key_part`), so the tenant is everything before the first unescaped ``|``.

    >>> entity_key("porto", "urn:x"), entity_key(None, "porto|urn:x"), entity_key(None, "urn:x")
    ('porto|urn:x', 'porto\\\\|urn:x', 'urn:x')
    """
    return key_part(key) if not tenant else f"{key_part(tenant)}|{key_part(key)}"


def partition_key(d: dict[str, Any]) -> bytes:
    """Kafka key of an observation (an ``Observation.__dict__`` or a decoded record): the entity
    identity, so one entity of one tenant stays on one partition."""
    return entity_key(d.get("tenant"), d["entity"]).encode()


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
    time_source: Literal["observed", "notified", "received"] = "observed"
    tenant: str | None = None
    service_path: str | None = None
    types: tuple[str, ...] | None = None  # a multi-typed entity's types, ``type`` the first

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
        return observation_id(
            self.entity, format_time(self.time), self.attributes, self.tenant, self.labels, self.units
        )

    def to_dict(self) -> dict[str, Any]:
        """The record of ``atalaia.observations`` as a dict (:func:`observation_dict`)."""
        return observation_dict(self)

    def to_json(self) -> bytes:
        """The record's bytes on ``atalaia.observations`` (:func:`encode_observation`)."""
        return _dumps(observation_dict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Observation:
        return cls.model_validate(orjson.loads(raw))


# -- the one encoder of the record ---------------------------------------------------------------
# ``Observation.to_json`` and the publishing agents (ingest, the fused ingest+rules stage) all go
# through ``observation_dict``: it reads the model's ``__dict__`` directly (several times faster
# than ``model_dump``, which matters at thousands of Observations a second).
_dumps = orjson.dumps


def time_text(t: datetime) -> str:
    """``format_time(t)``, cached (times parsed by ingest are usually there already)."""
    s = formatted.get(t)
    if s is None:
        s = format_time(t)
        if len(formatted) >= _CACHE_MAX:
            forget_older_half(formatted)
        formatted[t] = s
    return s


def observation_dict(o: Observation) -> dict[str, Any]:
    """The contract dict of ``o``: what decoding ``encode_observation(o)`` gives back (the fused
    ingest+rules stage evaluates it without a round trip through JSON). Its ``attributes``,
    ``units``, ``labels`` and ``quality`` are the model's own: read them, do not change them."""
    d = o.__dict__
    time = time_text(d["time"])
    loc = d["location"]
    entity = d["entity"]
    attributes = d["attributes"]
    tenant = d["tenant"]
    out = {
        "time": time,
        "entity": entity,
        "type": d["type"],
        "attributes": attributes,
        "location": [loc[0], loc[1]] if loc else None,
        "source": d["source"],
        "units": d["units"],
        "labels": d["labels"],
        "quality": d["quality"],
        "time_source": d["time_source"],
    }
    types = d.get("types")
    if tenant is not None or d["service_path"] is not None:  # absent without: the single-city shape
        if tenant is not None:
            out["tenant"] = tenant
        if d["service_path"] is not None:
            out["service_path"] = d["service_path"]
        if types:  # absent for one type
            out["types"] = list(types)
        out["id"] = observation_id(entity, time, attributes, tenant, d["labels"], d["units"])
    else:
        if types:
            out["types"] = list(types)
        out["id"] = observation_id(entity, time, attributes, None, d["labels"], d["units"])
    return out


def encode_observation(o: Observation) -> bytes:
    """The record's bytes on ``atalaia.observations``."""
    return _dumps(observation_dict(o))


# -- the record of atalaia.observations as its consumers read it ---------------------------------
# Ingest builds :class:`Observation` (pydantic, at the edge) and encodes it with the one encoder
# above (``encode_observation``, which ``to_json`` is). The rule engine reads plain dicts, so a
# consumer (the separate rules stage, the console) decodes a record straight into this TypedDict:
# msgspec checks every type in the one JSON pass and hands back a dict. Its keys are the model's
# fields plus ``id`` (a test keeps the two in step).
class ObservationRecord(TypedDict):
    time: Time
    entity: Text
    type: Text
    attributes: dict[str, float]
    location: NotRequired[Location | None]
    source: NotRequired[str]
    units: NotRequired[dict[str, str]]
    labels: NotRequired[dict[str, str]]
    quality: NotRequired[list[str]]
    time_source: NotRequired[Literal["observed", "notified", "received"]]
    tenant: NotRequired[Tenant | None]
    service_path: NotRequired[str | None]
    types: NotRequired[list[Text]]
    id: NotRequired[str]


_decoder = msgspec.json.Decoder(ObservationRecord)


@record_decoder
def decode_observation(value: bytes) -> ObservationRecord:
    """A record of ``atalaia.observations`` as a dict of the contract's shape (numbers as float),
    checked against :class:`ObservationRecord`; raises ``msgspec.DecodeError`` naming the path
    otherwise (``Expected `float`, got `str` - at `$.attributes[...]```)."""
    return _decoder.decode(value)
