"""Property tests: nothing raises out of ingest; every output honours the Observation contract;
the Deduper is exact, bounded and survives snapshot/restore."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atalaia.streams.ingest import Deduper, IngestResult, encode_observation, parse_payload
from atalaia.streams.ingest.jsonparse import decode, duplicates_in
from atalaia.streams.ingest.observation import Observation

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"
RECEIVED = datetime(2026, 1, 28, 10, 0, tzinfo=UTC)
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def model_bytes(o: Observation) -> bytes:
    """The record built from pydantic's own dump of the model: an oracle for the one encoder,
    which reads the model's ``__dict__``."""
    d = o.model_dump(mode="json")
    d["location"] = list(o.location) if o.location else None
    for k in ("tenant", "service_path", "types"):  # absent without a tenant, or for one type
        if d[k] is None:
            del d[k]
    d["id"] = o.id
    return orjson.dumps(d)


def check_invariants(r: IngestResult) -> None:
    assert isinstance(r, IngestResult)
    assert not any(x.code == "internal-error" for x in r.rejections), r.rejections
    if not r.ok:
        assert r.observations == [] and r.http_status in (400, 413)
    for x in r.rejections:
        assert x.reason and x.scope in ("payload", "entity", "attribute")
    for o in r.observations:
        assert o.entity and o.type and (o.attributes or o.labels)  # measurements, or states alone
        assert o.time.tzinfo is not None
        assert all(math.isfinite(v) and type(v) is float for v in o.attributes.values())
        assert set(o.units) <= set(o.attributes)
        assert all(type(v) is str for v in o.labels.values())
        if o.location is not None:
            assert -180 <= o.location[0] <= 180 and -90 <= o.location[1] <= 90
        # what the agent will publish is valid under the strict contract model
        assert encode_observation(o) == o.to_json() == model_bytes(o)  # the encoder is the model's bytes
        again = Observation.model_validate(orjson.loads(o.to_json()))
        assert again.attributes == o.attributes and again.time == o.time


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=12), kids, max_size=6),
    max_leaves=30,
)


@FAST
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(body: bytes) -> None:
    r = parse_payload(body, received_at=RECEIVED)
    check_invariants(r)


@FAST
@given(json_values)
def test_arbitrary_json_never_raises(value) -> None:
    body = orjson.dumps(value)
    r = parse_payload(body, received_at=RECEIVED)
    check_invariants(r)
    if not isinstance(value, dict | list):
        assert not r.ok


attr_names = st.sampled_from(
    [
        "waterLevel",
        "flow",
        "name",
        "dateObserved",
        "TimeInstant",
        "location",
        "address",
        "observedAt",
        "district",
        "@context",
        "https://example.org/ns#height",
    ]
)
attr_values = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                [
                    "Property",
                    "GeoProperty",
                    "Relationship",
                    "Number",
                    "Text",
                    "geo:json",
                    "geo:point",
                    "DateTime",
                    "string",
                ]
            ),
            "value": json_values,
        },
        optional={
            "unitCode": json_values,
            "observedAt": json_values,
            "metadata": json_values,
            "object": json_values,
        },
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["Point", "LineString", "Polygon"]), "coordinates": json_values}
    ),
    st.sampled_from(
        ["2026-01-28T09:45:00Z", "2026-01-28T09:45:00", "3,42", "13", "9999-12-31T23:59:59-05:00"]
    ),
)
entities = st.dictionaries(attr_names, attr_values, max_size=6).flatmap(
    lambda attrs: st.fixed_dictionaries(
        {
            "id": st.one_of(st.text(min_size=1, max_size=20), json_values),
            "type": st.one_of(st.sampled_from(["WaterObserved", "X"]), json_values),
        }
    ).map(lambda head: {**head, **attrs})
)


@FAST
@given(st.lists(entities, max_size=4), st.sampled_from(["ld", "v2", "bare"]))
def test_arbitrary_entities_never_raise(data, envelope) -> None:
    if envelope == "ld":
        doc = {"id": "urn:n:1", "type": "Notification", "notifiedAt": "2026-01-28T09:45:02Z", "data": data}
    elif envelope == "v2":
        doc = {"subscriptionId": "s", "data": data}
    else:
        doc = data
    body = orjson.dumps(doc)
    r = parse_payload(body, received_at=RECEIVED)
    check_invariants(r)
    assert r.ok
    again = parse_payload(body, received_at=RECEIVED)  # pure: the same input, the same output
    assert (again.observations, again.rejections, again.warnings) == (
        r.observations,
        r.rejections,
        r.warnings,
    )
    # every entity is accounted for: observed, refused or noted as having nothing to observe
    assert len(r.observations) + len(r.rejections) + len(r.ignored) >= min(len(data), 1)


def _fixture_docs() -> list[dict]:
    if not FIXTURES.is_dir():
        return []
    paths = sorted(FIXTURES.glob("ngsi-*/*/notification-*"))
    return [orjson.loads(p.read_bytes()) for p in paths]


DOCS = _fixture_docs()


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


@FAST
@given(st.data())
def test_mutated_notifications_never_raise(data) -> None:
    if not DOCS:
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    doc = copy.deepcopy(data.draw(st.sampled_from(DOCS)))
    for _ in range(data.draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        op = data.draw(st.sampled_from(["delete", "replace", "stringify"]))
        if op == "delete":
            del parent[path[-1]]
        elif op == "replace":
            parent[path[-1]] = data.draw(json_values)
        else:
            parent[path[-1]] = str(parent[path[-1]])
    r = parse_payload(orjson.dumps(doc), received_at=RECEIVED)
    check_invariants(r)
    assert r.observations or r.rejections or r.ignored or not r.ok or _no_entities(doc)


@pytest.mark.parametrize("odd", [[], {}, ["Point"], {"type": "Point"}, 7, None])
@pytest.mark.parametrize("fixture", ["notification-concise.json", "notification-normalized.jsonld"])
def test_a_nested_type_that_is_no_text_is_no_geometry_and_no_crash(fixture, odd) -> None:
    """Found by the mutation test above: a structured value (an address) whose own ``type`` is
    a list or an object reached a set lookup of geometry types and raised, so the whole
    notification went to the DLQ as an internal error. It is not a geometry; the rest is read."""
    path = FIXTURES / "ngsi-ld" / "AirQualityObserved" / fixture
    if not path.is_file():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    doc = json.loads(path.read_text())
    entity = doc["data"][0]
    if fixture == "notification-concise.json":
        entity["address"]["value"]["type"] = odd
    else:
        entity["address"]["value"] = {"type": odd, "streetAddress": "Praça de Mouzinho de Albuquerque"}
    r = parse_payload(orjson.dumps(doc), received_at=RECEIVED)
    check_invariants(r)
    assert [o.attributes["no2"] for o in r.observations] == [68.0]


def _no_entities(doc) -> bool:
    return not isinstance(doc, dict) or not isinstance(doc.get("data"), list) or not doc["data"]


@FAST
@given(st.binary(max_size=64), st.integers(0, 2048))
def test_truncated_and_spliced_bodies(noise: bytes, cut: int) -> None:
    if not DOCS:
        pytest.skip("shared fixtures absent")
    body = orjson.dumps(DOCS[0])
    check_invariants(parse_payload(body[:cut] + noise + body[cut:], received_at=RECEIVED))


# ---- duplicate-key detection (the fast colon count must never miss one) ---------------------------

dup_keys = st.sampled_from(["a", "b", ":", "a:b", "\\", '"', "é", "u003a", "\\u003a"])
dup_scalars = st.one_of(st.integers(-5, 5), st.sampled_from(["x", ":", "a:b", "\\u003a", "é:"]), st.none())
dup_trees = st.recursive(
    dup_scalars,
    lambda kids: (
        st.lists(kids, max_size=3).map(lambda xs: ("list", xs))
        | st.lists(st.tuples(dup_keys, kids), max_size=4).map(lambda ps: ("obj", ps))
    ),
    max_leaves=15,
)


def _string(s: str, ascii_only: bool, escape_colons: bool) -> str:
    text = json.dumps(s, ensure_ascii=ascii_only)
    return text.replace(":", "\\u003a") if escape_colons else text


def _render(node, ascii_only: bool, escape_colons: bool) -> str:
    if isinstance(node, tuple) and node[0] == "obj":
        return (
            "{"
            + ", ".join(
                f"{_string(k, ascii_only, escape_colons)} : {_render(v, ascii_only, escape_colons)}"
                for k, v in node[1]
            )
            + "}"
        )
    if isinstance(node, tuple):
        return "[" + ",".join(_render(v, ascii_only, escape_colons) for v in node[1]) + "]"
    if isinstance(node, str):
        return _string(node, ascii_only, escape_colons)
    return json.dumps(node)


def _has_duplicate(node) -> bool:
    if isinstance(node, tuple) and node[0] == "obj":
        keys = [k for k, _ in node[1]]
        return len(keys) != len(set(keys)) or any(_has_duplicate(v) for _, v in node[1])
    if isinstance(node, tuple):
        return any(_has_duplicate(v) for v in node[1])
    return False


@settings(max_examples=150, deadline=None)
@given(dup_trees, st.booleans(), st.booleans())
def test_duplicate_keys_are_always_detected(tree, ascii_only, escape_colons) -> None:
    body = _render(tree, ascii_only, escape_colons).encode()
    value, table = decode(body)
    found = bool(table) and bool(duplicates_in(value, table))
    assert found == _has_duplicate(tree)
    assert value == json.loads(body)  # same value as the standard library (last duplicate wins)


# ---- Deduper -----------------------------------------------------------------------------------

T0 = datetime(2026, 1, 28, tzinfo=UTC)
obs_strategy = st.builds(
    lambda e, ty, dt, v: Observation.model_construct(
        time=T0 + timedelta(seconds=dt),
        entity=e,
        type=ty,
        attributes={"h": v},
        location=None,
        source="t",
        units={},
        labels={},
        quality=[],
    ),
    st.sampled_from(["e1", "e2"]),
    st.sampled_from(["WaterObserved", "Other"]),
    st.integers(0, 3),
    st.sampled_from([1.0, 2.0]),
)
steps = st.lists(st.tuples(st.lists(obs_strategy, max_size=5), st.integers(0, 40)), max_size=25)


def _key(o: Observation) -> tuple:
    return (o.type, o.entity, o.time, tuple(sorted(o.attributes.items())))


@settings(max_examples=100, deadline=None)
@given(steps)
def test_deduper_matches_reference_model(batches) -> None:
    horizon = 30.0
    d = Deduper(horizon_s=horizon)
    last_seen: dict[tuple, float] = {}
    clock = 0.0
    for batch, advance in batches:
        clock += advance
        out = d.admit(batch, now=clock)
        expected = []
        for k in list(last_seen):
            if last_seen[k] < clock - horizon:
                del last_seen[k]
        for o in batch:
            if _key(o) not in last_seen:
                expected.append(o)
            last_seen[_key(o)] = clock
        assert out == expected


@settings(max_examples=100, deadline=None)
@given(steps, st.integers(0, 25))
def test_deduper_snapshot_restore_is_exact(batches, cut) -> None:
    straight = Deduper(horizon_s=30, max_entries=7)
    resumed = Deduper(horizon_s=30, max_entries=7)
    clock = 0.0
    for i, (batch, advance) in enumerate(batches):
        clock += advance
        if i == cut:
            resumed = Deduper.restore(resumed.snapshot())
        assert straight.admit(batch, now=clock) == resumed.admit(batch, now=clock)
        assert len(straight) <= 7
    assert straight.snapshot() == resumed.snapshot()


def test_deduper_forgets_after_horizon_and_is_bounded() -> None:
    (o,) = parse_payload(b'{"id":"e","type":"T","h":1,"dateObserved":"2026-01-28T00:00:00Z"}').observations
    d = Deduper(horizon_s=60, max_entries=2)
    assert d.admit([o], now=0) == [o]
    assert d.admit([o], now=59) == []
    assert d.admit([o], now=200) == [o]  # last seen at 59, forgotten by 200
    assert d.admit([o], now=100) == []  # the clock never goes backwards
    others = [o.model_copy(update={"entity": f"x{i}"}) for i in range(5)]
    d.admit(others, now=201)
    assert len(d) == 2
    for broken in (b'{"v": 99}\n', b"garbage", d.snapshot()[:-3]):
        with pytest.raises(ValueError):
            Deduper.restore(broken)


def test_v2_identity_is_id_plus_type() -> None:
    a = parse_payload(b'{"id":"e","type":"A","h":1,"dateObserved":"2026-01-28T00:00:00Z"}').observations
    b = parse_payload(b'{"id":"e","type":"B","h":1,"dateObserved":"2026-01-28T00:00:00Z"}').observations
    d = Deduper()
    assert d.admit(a, now=0) == a and d.admit(b, now=0) == b


def test_admit_key_for_other_stages_survives_snapshot() -> None:
    d = Deduper(horizon_s=60)
    assert d.admit_key(b"urn:e|2026-01-28T00:00:00Z", now=0) and not d.admit_key(
        b"urn:e|2026-01-28T00:00:00Z", now=1
    )
    d2 = Deduper.restore(d.snapshot())
    assert not d2.admit_key(b"urn:e|2026-01-28T00:00:00Z", now=2) and d2.admit_key(b"other", now=2)


def _full_snapshot(d: Deduper, head: bytes) -> bytes:
    """What a snapshot holds, read from the dict from scratch (the incremental one must equal it)."""
    from array import array

    return b"".join((head, *d._seen.keys(), array("d", d._seen.values()).tobytes()))


ops = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.lists(obs_strategy, max_size=6), st.integers(0, 20)),
        st.tuples(st.just("key"), st.binary(min_size=1, max_size=3), st.integers(0, 20)),
        st.tuples(st.just("snapshot"), st.none(), st.just(0)),
        st.tuples(st.just("restore"), st.none(), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(ops, st.integers(3, 12))
def test_deduper_incremental_snapshot_equals_a_full_one(steps, cap) -> None:
    """Forgetting (horizon, bound), redeliveries (reorder), restores: every snapshot has exactly
    the bytes of one written from scratch, and restoring it continues identically."""
    d = Deduper(horizon_s=25, max_entries=cap)
    clock = 0.0
    for op, arg, advance in steps:
        clock += advance
        if op == "admit":
            d.admit(arg, now=clock)
        elif op == "key":
            d.admit_key(arg, now=clock)
        else:
            snap = d.snapshot()
            head = snap[: snap.index(b"\n") + 1]
            assert snap == _full_snapshot(d, head)
            if op == "restore":
                d = Deduper.restore(snap)
                assert d.snapshot() == snap
