"""Ingest on notification bodies in the shapes real FIWARE brokers send (tests/data/fiware/).

Each ``NN-name.json`` is a body as Orion-LD (NGSI-LD normalized, concise, simplified, GeoJSON,
x-ngsiv2-normalized cross-notifications) or Orion (NGSI-v2 normalized, keyValues, values, legacy,
simplifiedNormalized/simplifiedKeyValues) sends it, ``NN-name.headers`` the HTTP headers that came
with it, and ``expected.yaml`` what Atalaia must make of it: one observation per entity (per distinct
observation time) with its numeric measurements, the right ``time_source``, text that looks like a
number never coerced, and nothing lost silently: every entity is observed, ignored (nothing numeric)
or refused with a reason. The fast and the general path give identical results on every body.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ingest_fastpath import both_paths

from atalaia.streams.ingest import encode_observation, parse_payload
from atalaia.streams.ingest.observation import Observation

CORPUS = Path(__file__).parent / "data" / "fiware"
EXPECTED = yaml.safe_load((CORPUS / "expected.yaml").read_text())
RECEIVED = datetime(2024, 5, 14, 8, 12, 33, 5000, tzinfo=UTC)


def _headers(name: str) -> dict[str, str]:
    lines = (CORPUS / name).with_suffix(".headers").read_text().splitlines()
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines) if k.strip()}


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _entities(doc) -> list:
    if isinstance(doc, list):
        return doc
    if not isinstance(doc, dict):
        return []
    data = doc.get("data", [doc] if "id" in doc else [])
    if isinstance(data, dict):  # GeoJSON notification
        return [{"id": f.get("id"), **f.get("properties", {})} for f in data.get("features", [])]
    return [e for e in data if isinstance(e, dict)]


def test_the_corpus_is_large_enough_and_each_body_has_headers() -> None:
    bodies = sorted(p.name for p in CORPUS.glob("*.json"))
    assert len(bodies) >= 40
    assert bodies == sorted(EXPECTED)
    for name in bodies:
        assert _headers(name)["Content-Type"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_broker_bodies(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    expect = EXPECTED[name]
    body = (CORPUS / name).read_bytes()
    headers = _headers(name)
    doc = orjson.loads(body)
    notified = _time(doc["notifiedAt"]) if isinstance(doc, dict) and "notifiedAt" in doc else None
    # received two seconds after it was notified, as in life (a notifiedAt well ahead of the
    # reception clock is a broker's fast clock: not what these bodies are about)
    received = max(RECEIVED, notified + timedelta(seconds=2)) if notified else RECEIVED
    both_paths(body, monkeypatch, headers=headers, source="broker", received_at=received)
    r = parse_payload(body, headers=headers, source="broker", received_at=received)
    for rej in r.rejections:
        assert rej.reason and rej.code, rej  # refused only with a reason
    if "refused" in expect:
        assert not r.ok and r.observations == []
        assert [x.code for x in r.rejections if x.scope == "payload"] == [expect["refused"]]
        return
    assert r.ok, r.rejections
    tenant = expect.get("tenant", "porto")
    got = []
    for o in r.observations:
        assert o.tenant == tenant
        assert Observation.from_json(encode_observation(o)) == o
        assert orjson.loads(encode_observation(o))["time_source"] == o.time_source
        got.append(o)
    want = expect.get("observations", [])
    assert [(o.entity, o.time_source, o.attributes) for o in got] == [
        (w["entity"], w["time_source"], {k: float(v) for k, v in w["attributes"].items()}) for w in want
    ]
    for o, w in zip(got, want, strict=True):
        assert all(type(v) is float for v in o.attributes.values())
        if "labels" in w:  # (an entity of states alone: its states are its labels)
            assert o.labels == w["labels"], (o.entity, o.labels)
        expected_time = {"observed": None, "notified": notified, "received": received}[o.time_source]
        assert o.time == (_time(w["time"]) if "time" in w else expected_time), (o.entity, o.time)
        if "type" in w:
            assert o.type == w["type"]
        assert list(o.types or ()) == w.get("types", []), (o.entity, o.types)
        if "units" in w:
            assert o.units == w["units"]
        if "labels" in w:
            assert w["labels"].items() <= o.labels.items()
        if "location" in w:
            if w["location"] is None:
                assert o.location is None
            else:
                assert o.location == pytest.approx(tuple(w["location"]), abs=1e-6)
        sp = headers.get("Fiware-ServicePath")
        assert o.service_path == w.get("service_path", sp)
    assert sorted((x.entity, x.attribute, x.code) for x in r.rejections) == sorted(
        (x["entity"], x.get("attribute"), x["code"]) for x in expect.get("rejections", [])
    )
    for eid in expect.get("ignored", []):
        assert any(i.startswith(eid) for i in r.ignored), (eid, r.ignored)
    # nothing lost silently: each entity is observed, ignored or refused (with a reason)
    accounted = {o.entity for o in got} | {x.entity for x in r.rejections}
    for e in _entities(doc):
        eid = e.get("id")
        assert eid in accounted or any(i.startswith(str(eid)) for i in r.ignored), (name, eid)


def test_orion_service_path_list_that_does_not_match_the_entities_is_kept_and_warned() -> None:
    body = orjson.dumps({"subscriptionId": "s", "data": [{"id": "G:1", "type": "G", "x": 1}]})
    r = parse_payload(
        body, headers={"Fiware-Service": "porto", "Fiware-ServicePath": "/a, /b"}, received_at=RECEIVED
    )
    assert [o.service_path for o in r.observations] == ["/a,/b"]
    assert any(w.startswith("service-path:") for w in r.warnings)
    same = parse_payload(body, headers={"Fiware-ServicePath": "/a,/a"}, received_at=RECEIVED)
    assert [o.service_path for o in same.observations] == ["/a"] and same.warnings == []


# ----------------------------------------------- the shapes fixed here, fast path == general path
_SHAPES = st.sampled_from(
    [
        {
            "location": {
                "value": {"type": "Point", "coordinates": [-8.6, 41.1]},
                "observedAt": "2024-05-14T08:00:00Z",
            }
        },
        {"location": {"type": "GeoProperty", "value": None}},
        {"location": {"type": "geo:json", "value": None, "metadata": {}}},
        {"location": {"type": "geo:box", "value": ["41.1, -8.6", "41.2, -8.5"], "metadata": {}}},
        {"location": {"type": "geo:line", "value": ["41.1, -8.6", "x"], "metadata": {}}},
        {"location": {"type": "geo:polygon", "value": None, "metadata": {}}},
        {"location": "41.15, -8.61"},
        {"location": "4,5"},
        {"location": "Porto"},
        {
            "p": {
                "type": "Property",
                "value": 1.5,
                "metadata": {"unitCode": "MTR", "observedAt": "2024-05-14T08:00:00Z"},
            }
        },
        {"p": {"type": "Property", "value": "13", "metadata": {"observedAt": "2024-05-14T08:00:00Z"}}},
        {"p": {"type": "Property", "value": 2, "metadata": {"observedAt": 5}}},
        {"p": {"type": "Property", "value": 2, "unitCode": "CEL", "metadata": {"unitCode": "MTR"}}},
        {"p": {"value": 3, "metadata": {"TimeInstant": "2024-05-14T08:00:00Z"}}},
        {"r": {"type": "Relationship", "value": "urn:x:1", "metadata": {}}},
        {"r": {"type": "Relationship", "object": None, "value": "urn:x:2"}},
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.tuples(st.lists(_SHAPES, max_size=3), st.sampled_from([1, 2.5, None])), min_size=1, max_size=3
    ),
    st.sampled_from(["ld", "v2"]),
    st.sampled_from([None, "/a", "/a,/b", "/a,/b,/c"]),
)
def test_fast_and_general_paths_agree_on_real_broker_shapes(monkeypatch, entities, envelope, path) -> None:
    data = []
    for i, (shapes, value) in enumerate(entities):
        e = {"id": f"urn:e:{i}", "type": "T", **({"h": value} if value is not None else {})}
        for s in shapes:
            e.update(s)
        data.append(e)
    doc = {"subscriptionId": "s", "data": data}
    if envelope == "ld":
        doc.update(type="Notification", id="urn:n:1", notifiedAt="2024-05-14T08:12:31.482Z")
    headers = {"NGSILD-Tenant": "t"} | ({"Fiware-ServicePath": path} if path else {})
    both_paths(orjson.dumps(doc), monkeypatch, headers=headers, received_at=RECEIVED)
    both_paths(orjson.dumps(data[0]), monkeypatch, headers=headers, received_at=RECEIVED)
