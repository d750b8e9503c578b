"""The hot path gives exactly what the general path gives: ``fastpath.fast_entity`` against the
general reader, the canonical time parser against the general one, the observation key and the
time formatting against their reference definitions."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ingest_properties import entities as arbitrary_entities

from atalaia.streams.clock import format_time
from atalaia.streams.ingest import IngestOptions, encode_observation, fastpath, parse_payload
from atalaia.streams.ingest.dedup import observation_key
from atalaia.streams.ingest.encode import time_text
from atalaia.streams.ingest.observation import Observation
from atalaia.streams.ingest.timeparse import _canonical, _parse

RECEIVED = datetime(2026, 1, 28, 10, 0, tzinfo=UTC)
FAST = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))


def _outcome(r) -> tuple:
    obs = [(o.__dict__, o.__pydantic_fields_set__, o.to_json()) for o in r.observations]
    return (obs, r.rejections, r.warnings, r.ignored, r.format, r.notification_id, r.digest)


def both_paths(body: bytes, monkeypatch: pytest.MonkeyPatch, **kw) -> tuple:
    with monkeypatch.context() as m:
        m.setattr(fastpath, "ENABLED", False)
        general = _outcome(parse_payload(body, **kw))
    fast = _outcome(parse_payload(body, **kw))
    assert fast == general
    return fast


times = st.sampled_from(
    [
        "2026-01-28T09:45:00Z",
        "2026-01-28T09:45:00.000Z",
        "2026-01-28T09:45:00.318Z",
        "2026-01-28T09:44:00+00:00",
        "2026-01-28T10:45:00+01:00",
        "2026-01-28T09:45:00",  # no zone
        "2026-01-28T11:45:00Z",  # future for RECEIVED
        "2026-01-28T09:00:00Z/2026-01-28T09:45:00Z",
    ]
)
numbers = st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.integers(-(10**6), 10**6))
texts = st.sampled_from(["Porto", "Douro - Ribeira", "13", "A" * 300, "2026-01-28T09:45:00Z", "urn:x:1", ""])
points = st.tuples(st.floats(-9.5, -6.2), st.floats(36.9, 42.1)) | st.sampled_from(
    [(41.14, -8.61), (2.35, 48.85), (-8, 41)]
)
names = st.sampled_from(["waterLevel", "flow", "temperature", "no2", "pm10"])
label_names = st.sampled_from(["name", "district", "areaServed", "description"])


@st.composite
def well_formed_entity(draw, form: str) -> dict:
    """An entity as brokers send it, in one of the representations, that the fast path takes."""
    e: dict = {"id": f"urn:ngsi-ld:WaterObserved:{draw(st.integers(0, 3))}", "type": "WaterObserved"}
    entity_time = draw(st.none() | times)
    per_attribute_time = draw(st.booleans()) or entity_time is None
    if entity_time is not None:
        t = draw(st.sampled_from(["dateObserved", "TimeInstant", "observationDateTime"]))
        if form == "ld-normalized":
            e[t] = {"type": "Property", "value": {"@type": "DateTime", "@value": entity_time}}
        elif form == "v2-normalized":
            e[t] = {"type": "DateTime", "value": entity_time, "metadata": {}}
        else:
            e[t] = entity_time
    for name in draw(st.lists(names, min_size=1, max_size=4, unique=True)):
        v = draw(numbers)
        unit = draw(st.none() | st.sampled_from(["MTR", "CEL"]))
        at = draw(times) if per_attribute_time else None
        if form == "ld-normalized":
            e[name] = {"type": "Property", "value": v, **({"unitCode": unit} if unit else {})}
            if at:
                e[name]["observedAt"] = at
        elif form == "ld-concise":
            e[name] = {
                "value": v,
                **({"unitCode": unit} if unit else {}),
                **({"observedAt": at} if at else {}),
            }
        elif form == "v2-normalized":
            meta = {}
            if unit:
                meta["unitCode"] = {"type": "Text", "value": unit}
            if at:
                meta["TimeInstant"] = {"type": "DateTime", "value": at}
            e[name] = {"type": "Number", "value": v, "metadata": meta}
        else:  # keyValues: no per-attribute time
            e[name] = v
            if at and entity_time is None:
                e["dateObserved"] = at
    for name in draw(st.lists(label_names, max_size=2, unique=True)):
        text = draw(texts)
        if form == "ld-normalized":
            e[name] = {"type": "Property", "value": text}
        elif form == "v2-normalized":
            e[name] = {"type": "Text", "value": text, "metadata": {}}
        else:
            e[name] = text
    if draw(st.booleans()):
        lon, lat = draw(points)
        point = {"type": "Point", "coordinates": [lon, lat]}
        if form == "ld-normalized":
            e["location"] = {"type": "GeoProperty", "value": point}
        elif form == "v2-normalized":
            e["location"] = {"type": "geo:json", "value": point, "metadata": {}}
        else:
            e["location"] = point
    if draw(st.booleans()):
        rel = "urn:ngsi-ld:Device:radar-1"
        e["refDevice"] = (
            {"type": "Relationship", "object": rel}
            if form == "ld-normalized"
            else {"object": rel}
            if form == "ld-concise"
            else {"type": "Relationship", "value": rel}
            if form == "v2-normalized"
            else rel
        )
    if draw(st.booleans()):
        address = {"addressLocality": "Porto", "streetAddress": "Cais da Ribeira"}
        e["address"] = (
            {"type": "Property", "value": address}
            if form == "ld-normalized"
            else {"value": address}
            if form == "ld-concise"
            else {"type": "PostalAddress", "value": address, "metadata": {}}
            if form == "v2-normalized"
            else address
        )
    return e


FORMS = ["ld-normalized", "ld-concise", "ld-keyValues", "v2-normalized", "v2-keyValues"]


def envelope(form: str, data: list) -> tuple[bytes, dict]:
    if form.startswith("ld"):
        doc = {
            "id": "urn:ngsi-ld:Notification:1",
            "type": "Notification",
            "subscriptionId": "urn:s",
            "notifiedAt": "2026-01-28T09:45:02Z",
            "data": data,
        }
        return orjson.dumps(doc), {"content_type": "application/ld+json"}
    return orjson.dumps({"subscriptionId": "s", "data": data}), {"content_type": "application/json"}


@FAST
@given(
    st.sampled_from(FORMS).flatmap(
        lambda f: st.tuples(st.just(f), st.lists(well_formed_entity(f), max_size=3))
    )
)
def test_fast_path_equals_general_path_on_well_formed_notifications(monkeypatch, case) -> None:
    form, data = case
    body, kw = envelope(form, data)
    both_paths(body, monkeypatch, received_at=RECEIVED, **kw)
    both_paths(body, monkeypatch, **kw)  # notifiedAt as the clock
    options = IngestOptions(max_label_chars=20, area_of_interest=(-10.0, 36.0, 0.0, 45.0))
    both_paths(body, monkeypatch, received_at=RECEIVED, options=options, **kw)


@FAST
@given(st.sampled_from(FORMS).flatmap(lambda f: st.tuples(st.just(f), well_formed_entity(f))))
def test_fast_path_takes_the_common_case(case) -> None:
    """Well-formed entities (whatever their times, labels, location) never need the general path."""
    form, e = case
    from atalaia.streams.ingest.entity import PayloadContext
    from atalaia.streams.ingest.options import DEFAULT_OPTIONS
    from atalaia.streams.ingest.result import IngestResult

    ctx = PayloadContext("ld" if form.startswith("ld") else "v2", "t", DEFAULT_OPTIONS, None, None)
    assert fastpath.fast_entity(e, ctx, IngestResult())


@FAST
@given(st.lists(arbitrary_entities, max_size=4), st.sampled_from(["ld", "v2", "bare", "ldctx"]))
def test_fast_path_equals_general_path_on_arbitrary_entities(monkeypatch, data, env) -> None:
    if env == "ld":
        doc = {"id": "urn:n:1", "type": "Notification", "notifiedAt": "2026-01-28T09:45:02Z", "data": data}
    elif env == "ldctx":
        doc = {"id": "urn:n:1", "type": "Notification", "@context": "x", "data": data}
    elif env == "v2":
        doc = {"subscriptionId": "s", "data": data}
    else:
        doc = data
    both_paths(orjson.dumps(doc), monkeypatch, received_at=RECEIVED)
    if len(data) == 1 and env != "bare":
        both_paths(orjson.dumps(data[0]), monkeypatch, received_at=RECEIVED)  # a bare entity


time_texts = st.builds(
    lambda y, mo, d, h, mi, s, frac, sep, zone: (
        f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{frac}{zone}"
    ),
    st.integers(1800, 9999),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 24),
    st.integers(0, 60),
    st.integers(0, 61),
    st.sampled_from(["", ".0", ".5", ".000", ".318", ".123456", ".1234567", ",5", ".10"]),
    st.sampled_from(["T", "t", " "]),
    st.sampled_from(["Z", "z", "", "+00:00", "+01:00", "-05:30"]),
) | st.text(max_size=30)


@settings(max_examples=300, deadline=None)
@given(time_texts)
def test_canonical_time_parser_equals_the_general_one(text) -> None:
    fast = _canonical(text)
    if fast is not None:
        assert fast == _parse(text)
        assert fast.time.tzinfo is UTC


@settings(max_examples=150, deadline=None)
@given(st.datetimes(min_value=datetime(1000, 1, 1), timezones=st.just(UTC) | st.just(None)))
def test_time_text_equals_format_time(t) -> None:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC) if t.microsecond % 2 else t
    assert time_text(t) == format_time(t)


T0 = datetime(2026, 1, 28, tzinfo=UTC)
keys_text = st.text(max_size=8)


@settings(max_examples=150, deadline=None)
@given(
    keys_text,
    keys_text,
    st.integers(-(10**9), 10**9),
    st.dictionaries(keys_text, st.floats(allow_nan=False) | st.integers(-5, 5), max_size=4),
    st.dictionaries(keys_text, keys_text, max_size=3),
)
def test_observation_key_is_the_documented_digest(ty, entity, dt, attributes, labels) -> None:
    o = Observation.model_construct(
        time=T0 + timedelta(seconds=dt, microseconds=dt % 1000),
        entity=entity,
        type=ty,
        attributes=attributes,
        location=None,
        source="t",
        units={},
        labels=labels,
        quality=[],
    )
    values = sorted(o.attributes.items()) if attributes else [sorted(o.labels.items())]
    reference = repr((o.type, o.entity, o.time.timestamp(), values))
    assert observation_key(o) == hashlib.blake2b(reference.encode(), digest_size=16).digest()
    if all(type(v) is float for v in attributes.values()):  # what ingest builds
        assert encode_observation(o) == o.to_json()


# -- the shapes probing FIWARE brokers found (tests/test_ingest_probe_fiware.py): each in both paths

_T = ["2026-01-28T09:45:00Z", " ", "", "1970-01-01T00:00:00.000Z", "yesterday", None]
_POINT = {"type": "Point", "coordinates": [-8.61, 41.14]}
_FEATURE = {"type": "Feature", "geometry": _POINT, "properties": {}}
_UNLOCATED = {"type": "Feature", "geometry": None, "properties": {}}
_GEOMETRIES = [_POINT, _FEATURE, _UNLOCATED, {"type": "FeatureCollection", "features": [_FEATURE]}]
_BLANKS = ["", " ", "\t", "Porto", "urn:ngsi-ld:Device:1"]


@st.composite
def _v2_probe_attribute(draw) -> tuple[str, object]:
    kind = draw(
        st.sampled_from(["Number", "Text", "Relationship", "geo", "structured", "untyped", "DateTime"])
    )
    meta: dict = {}
    if draw(st.booleans()):
        key = draw(st.sampled_from(["TimeInstant", "observedAt", "timestamp"]))
        meta[key] = {"type": "DateTime", "value": draw(st.sampled_from(_T))}
    if draw(st.booleans()):
        meta["unitCode"] = {"type": "Text", "value": draw(st.sampled_from(["CEL", " "]))}
    if kind == "Number":
        value = draw(st.sampled_from([1.5, 3, " ", "", "N/A", "3.42", None]))
        return draw(st.sampled_from(["t", "numValue"])), {"type": "Number", "value": value, "metadata": meta}
    if kind == "Text":
        return draw(st.sampled_from(["status", "name", "unit"])), {
            "type": "Text",
            "value": draw(st.sampled_from([*_BLANKS, "CEL"])),
            "metadata": meta,
        }
    if kind == "Relationship":
        return "refDevice", {"type": "Relationship", "value": draw(st.sampled_from(_BLANKS))}
    if kind == "geo":
        geo = draw(st.sampled_from(["geo:json", "geo:point"]))
        value = draw(st.sampled_from(_GEOMETRIES)) if geo == "geo:json" else "41.14, -8.61"
        if draw(st.booleans()):
            meta["ignoreType"] = {"type": "Boolean", "value": True}
        return draw(st.sampled_from(["location", "position"])), {
            "type": geo,
            "value": value,
            "metadata": meta,
        }
    if kind == "structured":
        return "location", {
            "type": "StructuredValue",
            "value": draw(st.sampled_from(_GEOMETRIES)),
            "metadata": {},
        }
    if kind == "DateTime":
        return draw(st.sampled_from(["dateObserved", "TimeInstant", "deletedAt"])), {
            "type": "DateTime",
            "value": draw(st.sampled_from(_T)),
            "metadata": {},
        }
    return draw(st.sampled_from(["height", "status"])), {
        "value": draw(st.sampled_from([2.5, "free", " "])),
        "metadata": meta,
    }


@st.composite
def _ld_probe_attribute(draw) -> tuple[str, object]:
    kind = draw(st.sampled_from(["typed", "typed-kv", "location", "relationship", "text", "time", "number"]))
    if kind in ("typed", "typed-kv"):
        typed = {
            "@value": draw(st.sampled_from(["3.6", "NaN", "1_000", "3,6", "abc"])),
            "@type": "xsd:double",
        }
        return "t", typed if kind == "typed-kv" else {"type": "Property", "value": typed}
    if kind == "location":
        g = draw(st.sampled_from(_GEOMETRIES))
        return "location", draw(
            st.sampled_from(
                [{"type": "Property", "value": g}, {"type": "GeoProperty", "value": g}, g, {"value": g}]
            )
        )
    if kind == "relationship":
        target = draw(st.sampled_from(_BLANKS))
        return "refDevice", draw(
            st.sampled_from([{"type": "Relationship", "object": target}, {"object": target}, target])
        )
    if kind == "text":
        text = draw(st.sampled_from([*_BLANKS, "FAH"]))
        return draw(st.sampled_from(["status", "unit", "name"])), draw(
            st.sampled_from([{"type": "Property", "value": text}, text])
        )
    if kind == "time":
        t = draw(st.sampled_from(_T))
        value = draw(
            st.sampled_from([t, {"@type": "DateTime", "@value": t}, {"type": "DateTime", "value": t}])
        )
        return draw(st.sampled_from(["dateObserved", "TimeInstant"])), draw(
            st.sampled_from([value, {"type": "Property", "value": value}])
        )
    value = draw(st.sampled_from([1.5, 7]))
    return draw(st.sampled_from(["numValue", "height"])), draw(
        st.sampled_from([value, {"type": "Property", "value": value}, {"value": value, "unitCode": "CEL"}])
    )


@st.composite
def _probe_notification(draw) -> bytes:
    form = draw(st.sampled_from(["v2", "ld"]))
    attrs = draw(
        st.lists(_v2_probe_attribute() if form == "v2" else _ld_probe_attribute(), min_size=1, max_size=5)
    )
    e: dict = {
        "id": "urn:ngsi-ld:Thing:1",
        "type": draw(st.sampled_from(["WaterObserved", "DeviceMeasurement"])),
    }
    e["height"] = {"type": "Number", "value": 1.0, "metadata": {}} if form == "v2" else 1.0
    for name, value in attrs:
        e[name] = value
    if form == "ld" and draw(st.booleans()):
        e["deletedAt"] = "2026-01-28T09:45:01Z"
    if form == "v2":
        doc: dict = {"subscriptionId": "s", "data": [e]}
        if draw(st.booleans()):
            doc["notifiedAt"] = "2026-01-28T09:45:02Z"
    else:
        doc = {"id": "urn:n:1", "notifiedAt": "2026-01-28T09:45:02Z", "data": [e]}
        if draw(st.booleans()):
            doc["type"] = "Notification"
        if draw(st.booleans()):
            doc["triggerReason"] = draw(st.sampled_from(["entityDeleted", "updated"]))
    return orjson.dumps(doc)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(_probe_notification())
def test_fast_path_equals_general_path_on_probed_broker_shapes(monkeypatch, body) -> None:
    """Blank and epoch placeholders, typed values, Feature and Property locations, geo-typed
    attributes of other names, timestamp metadata, DeviceMeasurement units, deleted entities: what
    the fast path takes it gives as the general path does, what it does not it leaves whole."""
    both_paths(body, monkeypatch, received_at=RECEIVED)
