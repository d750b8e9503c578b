"""The hot path: one well-formed entity -> Observations in a single pass.

``fast_entity`` does what ``entity.normalise_entity`` (reader + ``_emit``) does for the entities
that make up nearly all traffic: NGSI-LD normalized / concise / keyValues attributes, NGSI-v2
normalized / keyValues attributes, a Point location, observation times in any RFC 3339 form. It
reads the entity once, without the intermediate ``Parts``/``Measurement`` objects, and returns
False, having written nothing, as soon as it meets anything that would be refused or needs the
general reader (an attribute refusal, a missing or bad time, multi-attribute instances, expanded
attribute names, non-Point geometries, duplicate keys ...). The general path then handles the entity
from the start, so its rejections and warnings stay the only source of those. ``tests/
test_ingest_fastpath.py`` checks that both paths give the same result on generated payloads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from atalaia.streams.clock import format_time
from atalaia.streams.ingest.attributes import (
    _DATETIME_TEXT,
    _FEATURES,
    DESCRIPTIVE,
    ENTITY_UNITS,
    FEATURE_TYPES,
    GEOMETRY_TYPES,
    LD_TYPES,
    NGSI_LD_NULL,
    RESERVED,
    TIME_FIELDS,
    V2_NUMBER_TYPES,
    _meta_value,
    absent_time,
    action_deleted,
    bookkeeping,
    is_geometry,
    is_label_property,
    meta_time,
    number_like_text,
    time_text,
    v2_number_text,
)
from atalaia.streams.ingest.build import _FAST as _BUILD_FAST
from atalaia.streams.ingest.build import _FIELDS_SET, build_observation
from atalaia.streams.ingest.geo import V2_SHAPES, LocationError, check_point
from atalaia.streams.ingest.observation import Observation
from atalaia.streams.ingest.timeparse import FUTURE, parse_observation_time

if TYPE_CHECKING:
    from datetime import datetime

    from atalaia.streams.ingest.entity import PayloadContext
    from atalaia.streams.ingest.result import IngestResult

ENABLED = True  # tests switch it off to compare with the general path
MAX_ID_CHARS = 1024
_setattr = object.__setattr__
_new = Observation.__new__

# Attribute names repeat across entities and payloads: classify each name once.
_SKIP, _BAIL, _TIME, _PLAIN, _BOOK = 0, 1, 2, 3, 4
_NAMES_MAX = 4096
_names: dict[str, int] = {}


def _classify(name: str) -> int:
    if name in RESERVED:
        k = _SKIP
    elif not name or ":" in name or name.startswith("http"):  # empty, or short_name needed
        k = _BAIL
    elif name in TIME_FIELDS:
        k = _TIME
    elif bookkeeping(name):
        k = _BOOK  # read as any attribute (k > _PLAIN), except that a number there is no measurement
    else:
        k = _PLAIN
    if len(_names) >= _NAMES_MAX:
        _names.clear()
    _names[name] = k
    return k


class _Bail(Exception):
    """Raised inside the reader: this entity needs the general path."""


def _state_time(states: list, name: str, time: Any) -> None:
    """A state's own time (a text property's ``observedAt`` / ``TimeInstant``), kept to compare
    with the measurements': a later one makes an observation of its own (the general reader's).
    A descriptive name's (rare) is the general reader's to weigh."""
    if name in DESCRIPTIVE or type(time) is not str:
        raise _Bail
    states.append(time)


def _label(labels: dict[str, str], name: str, text: str, max_label: int) -> None:
    """``_Reader.label``: text that is not too long, not a date-time, not NGSI-LD's null."""
    if (
        text != NGSI_LD_NULL
        and len(text) <= max_label
        and not text.isspace()
        and text
        and not (len(text) > 10 and text[4] == "-" and _DATETIME_TEXT.match(text))
    ):
        labels[name] = text


def _structured(labels: dict[str, str], name: str, value: dict, max_label: int) -> None:
    if name == "address":
        for k, v in value.items():
            if type(v) is str and k != "type":
                _label(labels, f"address.{k}", v, max_label)


def _value(
    measurements: list,
    labels: dict[str, str],
    name: str,
    v: Any,
    unit: Any,
    time: Any,
    declared: bool,
    max_label: int,
) -> None:
    """``_Reader.measurement_value``; raises _Bail where that would refuse the attribute."""
    tv = type(v)
    if tv is int or (tv is float and v - v == 0.0):
        if time is not None and type(time) is not str:
            raise _Bail  # refused later as a bad time
        measurements.append((name, float(v), unit if type(unit) is str else None, time))
    elif tv is str:
        if number_like_text(v, declared or unit is not None or time is not None):
            raise _Bail
        if not declared:
            _label(labels, name, v, max_label)
        elif v and not v.isspace():
            raise _Bail  # a Number holding text: the general reader refuses it
    elif tv is float or tv is bool or declared:
        raise _Bail  # (a boolean: the general reader keeps it as a label)
    elif tv is dict:
        _structured(labels, name, v, max_label)


def _v2(
    measurements: list, labels: dict[str, str], name: str, kind: str, v: dict, max_label: int, states: list
) -> Any:
    """``_Reader.v2_attribute``; returns the location value when this is the location."""
    if "value" not in v and "metadata" not in v:
        _structured(labels, name, v, max_label)
        return None
    meta = v.get("metadata")
    unit = time = None
    if type(meta) is dict and meta:
        if "actionType" in meta and _meta_value(meta["actionType"]) == "delete":
            raise _Bail  # a deleted attribute: the general reader notes it
        unit = _meta_value(meta.get("unitCode")) or _meta_value(meta.get("unit"))  # ("cm": a symbol)
        m = meta.get("TimeInstant")
        if type(m) is dict and type(t := m.get("value")) is str and "2" <= t[:1] <= "9":
            time = t  # (meta_time's usual case, inlined: an IoT Agent's, on every attribute)
        else:
            time = meta_time(meta)[0]
    val = v.get("value")
    if kind in V2_NUMBER_TYPES:
        _value(measurements, labels, name, val, unit, time, True, max_label)
    elif kind == "geo:json" or kind == "geo:point" or kind in V2_SHAPES:
        if name == "location" and val is not None:
            return _Location(val)  # not a dict Point (geo:point text, geo:box ...): general path
        if val is not None:
            raise _Bail  # a location attribute of another name ("position"): the general reader's
    elif kind == "DateTime":
        return None
    elif kind == "Relationship":
        if type(val) is str:
            _label(labels, name, val, max_label)
    elif type(val) is str:  # Text, String or a type of the user's: a state, timed too
        if v2_number_text(name, val, unit):
            raise _Bail  # a number written as text: the general reader refuses it with the reason
        _label(labels, name, val, max_label)
        if time is not None and name in labels:
            _state_time(states, name, time)
    else:  # (a number as "Text": an IoT Agent's default type, read as any undeclared number)
        tv = type(val)
        if tv is int or (tv is float and val - val == 0.0):
            _value(measurements, labels, name, val, unit, time, False, max_label)
        elif tv is dict:
            if name == "location" and is_geometry(val):
                raise _Bail  # a geometry under another type (StructuredValue): the general reader's
            _structured(labels, name, val, max_label)
        elif tv is bool:
            raise _Bail
    return None


class _Location:
    __slots__ = ("geometry",)

    def __init__(self, geometry: Any) -> None:
        self.geometry = geometry


def fast_entity(raw: dict, ctx: PayloadContext, out: IngestResult) -> bool:
    """Normalise ``raw`` into ``out`` and return True, or return False having touched nothing.

    The caller has checked that ``raw`` is a dict and that the payload has no duplicate keys."""
    if "alterationType" in raw or "deletedAt" in raw:  # (maybe a deleted entity): the general path's
        return False
    eid = raw.get("id")
    if type(eid) is not str or not eid or len(eid) > MAX_ID_CHARS or not eid.isprintable():
        return False  # not printable: maybe a control/bidi character, the general path decides
    etype = raw.get("type")
    if (
        type(etype) is not str
        or not etype
        or ":" in etype
        or etype.startswith("http")
        or not etype.isprintable()
    ):
        return False  # (a compact or full IRI: the general path takes its short name)
    opts = ctx.options
    accepted = opts.accepted_types
    if accepted is not None and etype not in accepted:
        return False
    if etype in ENTITY_UNITS:
        return False  # a reading's unit is a property of the entity: the general reader's
    dialect = ctx.dialect
    if "@context" in raw:
        c = raw["@context"]
        if type(c) is not str and type(c) is not dict:
            if type(c) is not list:
                return False
            for item in c:
                if type(item) is not str and type(item) is not dict:
                    return False
        dialect = "ld"
    max_label = opts.max_label_chars
    measurements: list[tuple[str, float, str | None, str | None]] = []
    append = measurements.append
    labels: dict[str, str] = {}
    states: list[str] = []  # the states' own times
    times: dict[str, Any] | None = None
    geometry: Any = None
    has_location = False
    names = _names
    try:
        for name, v in raw.items():
            k = names.get(name)
            if k is None:
                k = _classify(name)
            if k < _PLAIN:  # (_BOOK is read as _PLAIN is)
                if k == _SKIP:
                    continue
                if k == _BAIL:
                    return False
                if (
                    type(v) is dict
                    and type(m := v.get("metadata")) is dict
                    and "actionType" in m
                    and action_deleted(v)
                ):
                    return False  # a deleted time attribute: no time (the general reader's note)
                if times is None:
                    times = {}
                times[name] = v
                continue
            t = type(v)
            if t is dict:
                if "datasetId" in v:
                    return False  # an instance that is not the default one: its own name
                kind = v.get("type")
                if kind == "Property" or kind is None:
                    if "value" in v:
                        if "metadata" in v:
                            return False  # Orion-LD's x-ngsiv2-normalized: unit/time in metadata
                        val = v["value"]
                        tv = type(val)
                        if (
                            tv is dict
                            and (kind is None or name == "location")
                            and (is_geometry(val) or val.get("type") in _FEATURES)
                        ):
                            return False  # a concise GeoProperty with sub-attributes (or a location
                            # written as a Property): the general reader's
                        if tv is dict and "@value" in val:
                            return False  # a JSON-LD typed value: the general reader's
                        if tv is int or (tv is float and val - val == 0.0):
                            unit = v.get("unitCode")
                            at = v.get("observedAt")
                            if at is not None and type(at) is not str:
                                return False
                            if k != _BOOK:  # (bookkeeping: a numeric entityVersion, dateModified)
                                append((name, float(val), unit if type(unit) is str else None, at))
                        elif tv is str and is_label_property(val, v, max_label) and val != NGSI_LD_NULL:
                            labels[name] = val
                        else:
                            at = v.get("observedAt")
                            _value(measurements, labels, name, val, v.get("unitCode"), at, False, max_label)
                            if at is not None and tv is str and name in labels:
                                _state_time(states, name, at)
                    elif kind is not None:
                        return False  # a Property without value: refused
                    elif "object" in v:
                        obj = v["object"]
                        if type(obj) is str:
                            _label(labels, name, obj, max_label)
                    elif "vocab" in v:
                        return False  # a concise VocabProperty: a state, the general reader's
                    elif "@value" in v:
                        return False  # a keyValues JSON-LD typed value: the general reader's
                    elif name == "address":
                        _structured(labels, name, v, max_label)
                elif kind == "Relationship":
                    if type(m := v.get("metadata")) is dict and "actionType" in m and action_deleted(v):
                        return False  # a deleted (NGSI-v2) relationship: the general reader's note
                    obj = v.get("object", v.get("value"))
                    if (
                        type(obj) is str
                        and len(obj) <= max_label
                        and obj != NGSI_LD_NULL
                        and obj
                        and not obj.isspace()  # (blank: no label, as the general reader has it)
                    ):
                        labels[name] = obj  # as the general reader: a target is a label as is
                elif kind == "GeoProperty":
                    if name == "location":
                        geometry = v.get("value")
                        has_location = geometry is not None and geometry != NGSI_LD_NULL  # null: none now
                elif type(kind) is not str:
                    return False
                elif name == "location" and kind in FEATURE_TYPES:
                    return False  # a GeoJSON Feature as the location: the general reader's
                elif kind in GEOMETRY_TYPES and ("coordinates" in v or kind == "GeometryCollection"):
                    if name == "location":
                        geometry = v
                        has_location = True
                elif kind in LD_TYPES:
                    if kind == "VocabProperty":
                        return False  # a state: the general reader's
                    if kind == "LanguageProperty" and name in DESCRIPTIVE:
                        return False  # a name in several languages: the general reader labels it
                    continue  # JsonProperty, VocabProperty ...: never a measurement or label
                elif dialect == "v2":
                    loc = _v2(measurements, labels, name, kind, v, max_label, states)
                    if k == _BOOK and measurements and measurements[-1][0] == name:
                        measurements.pop()  # (bookkeeping: never a measurement)
                    if loc is not None:
                        geometry = loc.geometry
                        has_location = True
                elif "value" in v or "object" in v:
                    return False  # an NGSI-LD attribute of an unknown type: refused
                elif name == "address":
                    _structured(labels, name, v, max_label)
            elif t is float or t is int:
                if t is float and v - v != 0.0:
                    return False
                if k != _BOOK:  # (bookkeeping: a numeric entityVersion, dateModified)
                    append((name, float(v), None, None))
            elif t is str:
                if v[:1].isalpha():  # neither a number nor a date-time
                    if len(v) <= max_label and v != NGSI_LD_NULL:
                        labels[name] = v
                elif number_like_text(v, False) or name == "location":
                    return False  # refused, or maybe a keyValues geo:point "lat, lon"
                else:
                    _label(labels, name, v, max_label)
            elif t is list and v and type(v[0]) is dict:
                return False  # multi-attribute instances
            elif t is bool:
                return False  # a keyValues boolean: the general reader keeps it as a label
    except _Bail:
        return False

    if not measurements:
        return False  # states only, or nothing: the general reader decides

    quality: list[str] = []
    location = None
    if has_location:
        if type(geometry) is not dict or geometry.get("type") != "Point":
            return False
        coords = geometry.get("coordinates")
        if type(coords) is not list or len(coords) < 2:
            return False
        lon, lat = coords[0], coords[1]
        tx, ty = type(lon), type(lat)
        if not (tx is float or tx is int) or not (ty is float or ty is int):
            return False
        lon, lat = float(lon), float(lat)
        if not (lon - lon == 0.0 and lat - lat == 0.0):
            return False
        location = (lon, lat)
        area = opts.area_of_interest
        if not (
            -180.0 <= lon <= 180.0
            and -90.0 <= lat <= 90.0
            and area[0] <= lon <= area[2]
            and area[1] <= lat <= area[3]
        ):
            try:
                warning = check_point(location, area)
            except LocationError:
                return False
            if warning:
                quality.append(warning)

    entity_text = entity_pt = None
    entity_bad = False  # an entity time is there but unusable: the general path warns about it
    if times:
        for field in TIME_FIELDS:
            if field in times and not absent_time(times[field]):
                tv = times[field]
                entity_text = tv if type(tv) is str else time_text(field, tv)[0]
                entity_bad = entity_text is None
                break
        if entity_text is not None:
            entity_pt = parse_observation_time(entity_text)
            if entity_pt.time is None:
                entity_pt, entity_bad = None, True
    fallback = None if entity_bad else ctx.fallback_time

    # group by observation time (nearly always one group)
    first_t = None
    attrs: dict[str, float] = {}
    units: dict[str, str] = {}
    groups: dict[datetime, tuple[dict[str, float], dict[str, str]]] | None = None
    unzoned: set[str] | None = None
    fb_attrs: dict[str, float] | None = None  # measurements timed by the fallback
    fb_units: dict[str, str] = {}
    for name, value, unit, at in measurements:
        if at is not None:
            pt = parse_observation_time(at)
            if pt.time is None:
                return False
            if not pt.zoned:
                if unzoned is None:
                    unzoned = set()
                unzoned.add(at)
        elif entity_pt is not None:
            pt = entity_pt
            if not pt.zoned:
                if unzoned is None:
                    unzoned = set()
                unzoned.add(entity_text)  # type: ignore[arg-type]
        elif fallback is not None:
            if fb_attrs is None:
                fb_attrs = {}
            fb_attrs[name] = value
            if unit is not None:
                fb_units[name] = unit
            continue
        else:
            return False  # no observation time
        tm = pt.time
        if first_t is None:
            first_t = tm
        elif tm is not first_t and tm != first_t:
            if groups is None:
                groups = {first_t: (attrs, units)}  # type: ignore[dict-item]
            group = groups.get(tm)  # type: ignore[arg-type]
            if group is None:
                group = groups[tm] = ({}, {})  # type: ignore[index]
            group[0][name] = value
            if unit is not None:
                group[1][name] = unit
            continue
        attrs[name] = value
        if unit is not None:
            units[name] = unit

    if states:  # a state observed after every measurement is an observation of its own
        latest = max(groups) if groups is not None else first_t
        if fb_attrs is not None and (latest is None or fallback > latest):  # type: ignore[operator]
            latest = fallback
        for text in states:
            pt = parse_observation_time(text)
            if pt.time is None or latest is None or pt.time > latest:
                return False  # (or a bad time: the general reader says so)
    if unzoned:
        for text in sorted(unzoned):
            quality.append(f"time-without-zone: {text!r} has no UTC offset; UTC assumed")
    warnings = out.warnings
    for q in quality:
        warnings.append(f"{eid}: {q}")
    limit = ctx.future_limit
    source = ctx.source
    tenant = ctx.tenant
    service_path = ctx.service_path
    observations = out.observations
    emit: list[tuple[Any, str, dict[str, float], dict[str, str]]]
    if groups is not None:
        emit = [(tm, "observed", a, u) for tm, (a, u) in groups.items()]
    elif first_t is not None:
        emit = [(first_t, "observed", attrs, units)]
    else:
        emit = []
    if fb_attrs is not None:
        emit.append((fallback, ctx.fallback_source, fb_attrs, fb_units))
    if len(emit) > 1:
        emit.sort(key=lambda e: (e[0], e[1]))  # the general path's order: by time, then source
    for tm, time_source, attrs, units in emit:
        q = quality
        if limit is not None and tm > limit:
            skew = f"future-time: {format_time(tm)} is ahead of the reception clock beyond the tolerance (clock skew?){FUTURE}"
            q = [*quality, skew]
            warnings.append(f"{eid}: {skew}")
        if _BUILD_FAST:
            o = _new(Observation)
            _setattr(
                o,
                "__dict__",
                {
                    "time": tm,
                    "entity": eid,
                    "type": etype,
                    "attributes": attrs,
                    "location": location,
                    "source": source,
                    "units": units,
                    "labels": labels,
                    "quality": q,
                    "time_source": time_source,
                    "tenant": tenant,
                    "service_path": service_path,
                    "types": None,
                },
            )
            _setattr(o, "__pydantic_fields_set__", set(_FIELDS_SET))
            _setattr(o, "__pydantic_extra__", None)
            _setattr(o, "__pydantic_private__", None)
        else:  # pragma: no cover - only if the contract model changes shape
            o = build_observation(
                tm, eid, etype, attrs, location, source, units, labels, q, time_source, tenant, service_path
            )
        observations.append(o)
    return True
