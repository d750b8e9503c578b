"""Entity ids and types carrying NUL, C0/C1 control or bidi-control characters are refused per
entity with a clear reason (and so reach the DLQ), in every payload shape, and the fast path and
the general path agree on them."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_ingest_fastpath import FAST, FORMS, RECEIVED, both_paths, envelope, well_formed_entity

from atalaia.streams.ingest import dlq_record_for, parse_payload, read_dlq_record

UNSAFE = ["\x00", "\x07", "\x1b", "\n", "\x7f", "\x85", "\x9b", "\u061c", "\u200e", "\u200f"]
UNSAFE += [chr(c) for c in range(0x202A, 0x202F)] + [chr(c) for c in range(0x2066, 0x206A)]
UNSAFE += ["\u2028", "\u2029"]
SAFE_UNUSUAL = ["é", "ç", " ", "\u00a0", "\u200b", "ñ", "中", "-", "%00"]


def ld(*entities: dict) -> bytes:
    return orjson.dumps(
        {
            "id": "urn:n:1",
            "type": "Notification",
            "notifiedAt": "2026-01-28T09:45:02Z",
            "data": list(entities),
        }
    )


def entity(eid: str, etype: str = "WaterObserved") -> dict:
    return {"id": eid, "type": etype, "dateObserved": "2026-01-28T09:45:00Z", "height": 2.0}


@pytest.mark.parametrize("ch", UNSAFE, ids=[f"U+{ord(c):04X}" for c in UNSAFE])
def test_unsafe_id_is_refused_per_entity_with_a_reason(ch):
    good = entity("urn:ngsi-ld:WaterObserved:good")
    bad = entity(f"urn:ngsi-ld:WaterObserved:{ch}evil")
    r = parse_payload(ld(good, bad), content_type="application/json", received_at=RECEIVED)
    assert r.ok and [o.entity for o in r.observations] == ["urn:ngsi-ld:WaterObserved:good"]
    (rej,) = r.rejections
    assert rej.scope == "entity" and rej.code == "unsafe-id" and rej.detail == "data[1]"
    assert f"U+{ord(ch):04X}" in rej.reason
    assert ch not in str(rej), "the reason shows the character escaped, never raw"
    record = read_dlq_record(dlq_record_for(r, ld(good, bad), "http"))
    assert record["rejections"][0]["code"] == "unsafe-id"


@pytest.mark.parametrize("ch", ["\x00", "\u202e", "\u2066", "\x9f"])
def test_unsafe_type_is_refused(ch):
    r = parse_payload(ld(entity("urn:x:1", f"Water{ch}Observed")), content_type="application/json")
    assert not r.observations and [x.code for x in r.rejections] == ["unsafe-type"]
    assert r.rejections[0].entity == "urn:x:1"


@pytest.mark.parametrize("ch", SAFE_UNUSUAL)
def test_ordinary_unicode_in_ids_is_kept(ch):
    r = parse_payload(ld(entity(f"urn:x:{ch}1")), content_type="application/json", received_at=RECEIVED)
    assert [o.entity for o in r.observations] == [f"urn:x:{ch}1"] and not r.rejections


def test_every_shape_refuses_them():
    eid = "urn:ngsi-ld:WaterObserved:\u202egnp.exe"
    bodies = [
        ld(
            {
                "id": eid,
                "type": "WaterObserved",
                "height": {"type": "Property", "value": 2.0, "observedAt": "2026-01-28T09:45:00Z"},
            }
        ),
        orjson.dumps(
            {
                "subscriptionId": "s",
                "data": [
                    {
                        "id": eid,
                        "type": "WaterObserved",
                        "dateObserved": {"type": "DateTime", "value": "2026-01-28T09:45:00Z"},
                        "height": {"type": "Number", "value": 2.0},
                    }
                ],
            }
        ),
        orjson.dumps(entity(eid)),  # a bare Smart Data Models entity
        orjson.dumps([entity("urn:ok:1"), entity(eid)]),
        orjson.dumps(
            {
                "type": "FeatureCollection",
                "features": [{"type": "Feature", "geometry": None, "properties": entity(eid)}],
            }
        ),
        orjson.dumps(
            {
                "time": "2026-01-28T09:45:00Z",
                "entity": eid,
                "type": "WaterObserved",
                "attributes": {"height": 2.0},
            }
        ),
        orjson.dumps(
            {
                "time": "2026-01-28T09:45:00Z",
                "entity": "urn:x:1",
                "type": "Water\x00",
                "attributes": {"height": 2.0},
            }
        ),
    ]
    for body in bodies:
        r = parse_payload(body, content_type="application/json", received_at=RECEIVED)
        assert all(o.entity.isprintable() and o.type.isprintable() for o in r.observations), body
        assert any(x.code in ("unsafe-id", "unsafe-type") for x in r.rejections), body


@st.composite
def tainted(draw, form: str) -> dict:
    e = draw(well_formed_entity(form))
    field = draw(st.sampled_from(["id", "type"]))
    text = e[field]
    at = draw(st.integers(0, len(text)))
    ch = draw(st.sampled_from(UNSAFE + SAFE_UNUSUAL))
    e[field] = text[:at] + ch + text[at:]
    return e


@FAST
@given(
    st.sampled_from(FORMS).flatmap(
        lambda f: st.tuples(st.just(f), st.lists(well_formed_entity(f) | tainted(f), min_size=1, max_size=3))
    )
)
def test_fast_path_equals_general_path_on_tainted_ids(monkeypatch, case) -> None:
    form, data = case
    body, kw = envelope(form, data)
    both_paths(body, monkeypatch, received_at=RECEIVED, **kw)
    r = parse_payload(body, received_at=RECEIVED, **kw)
    for o in r.observations:
        assert not any(c in o.entity or c in o.type for c in UNSAFE)
