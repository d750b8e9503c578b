"""A deleted attribute is not a reading. NGSI-v2's ``actionType`` builtin metadata (only in
notifications, when the subscription's ``metadata`` asks for it) is ``update``, ``append`` or
``delete``; an attribute notified with ``delete`` became an observation of its last value (a
deleted ``temperature`` read as 21.5 °C now). It is now noted in ``IngestResult.ignored`` (counted
as ``ignored``) and is no measurement, state, location or time; fast and general path agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atalaia.streams.ingest import parse_payload
from tests.test_ingest_fastpath import both_paths

RECEIVED = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
NOTE = "attribute {} deleted (actionType delete), not a reading"


def _v2(*entities: dict) -> bytes:
    return orjson.dumps({"subscriptionId": "5f1e", "data": list(entities)})


def _action(kind: str | None, **meta: Any) -> dict:
    if kind is not None:
        meta["actionType"] = {"type": "Text", "value": kind}
    return meta


def _parse(body: bytes, monkeypatch: pytest.MonkeyPatch):
    both_paths(body, monkeypatch, received_at=RECEIVED)
    return parse_payload(body, received_at=RECEIVED)


def test_a_deleted_number_is_no_reading_and_is_noted(monkeypatch) -> None:
    """As Orion writes it (normalized, builtin metadata asked for by the subscription)."""
    entity = {
        "id": "Room1",
        "type": "Room",
        "temperature": {"type": "Number", "value": 21.5, "metadata": _action("delete")},
        "humidity": {"type": "Number", "value": 40, "metadata": _action("update")},
        "pressure": {"type": "Number", "value": 1013, "metadata": _action("append")},
    }
    r = _parse(_v2(entity), monkeypatch)
    [o] = r.observations
    assert o.attributes == {"humidity": 40.0, "pressure": 1013.0}
    assert r.ignored == ["Room1: " + NOTE.format("temperature")]
    assert r.ok and not r.rejections and not r.warnings


def test_an_entity_whose_only_attribute_was_deleted_gives_nothing(monkeypatch) -> None:
    entity = {
        "id": "Room1",
        "type": "Room",
        "temperature": {"type": "Number", "value": 21.5, "metadata": _action("delete")},
    }
    r = _parse(_v2(entity), monkeypatch)
    assert r.ok and r.observations == [] and r.ignored == ["Room1: " + NOTE.format("temperature")]


@pytest.mark.parametrize(
    ("name", "attribute"),
    [
        ("status", {"type": "Text", "value": "on"}),
        ("refDevice", {"type": "Relationship", "value": "urn:ngsi-ld:Device:1"}),
        ("location", {"type": "geo:json", "value": {"type": "Point", "coordinates": [-8.61, 41.14]}}),
        ("position", {"type": "geo:point", "value": "41.14, -8.61"}),
        ("TimeInstant", {"type": "DateTime", "value": "2026-12-07T09:00:00Z"}),
        ("dateObserved", {"type": "DateTime", "value": "2026-12-07T09:00:00Z"}),
    ],
)
def test_a_deleted_state_relationship_location_or_time_is_not_used(name, attribute, monkeypatch) -> None:
    entity = {
        "id": "Room1",
        "type": "Room",
        "temperature": {"type": "Number", "value": 21.5, "metadata": _action("update")},
        name: {**attribute, "metadata": _action("delete")},
    }
    r = _parse(_v2(entity), monkeypatch)
    [o] = r.observations
    assert o.attributes == {"temperature": 21.5}
    assert not o.labels and o.location is None
    assert o.time == RECEIVED and o.time_source == "received"  # not the deleted time
    assert r.ignored == ["Room1: " + NOTE.format(name)]


def test_an_entity_delete_notification_is_still_ignored_whole(monkeypatch) -> None:
    """Orion's entityDelete alteration type (its functional test sub_alteration_type_entity_delete)."""
    entity = {
        "id": "E",
        "type": "T",
        "A": {"metadata": {}, "type": "Number", "value": 2},
        "alterationType": {"metadata": {}, "type": "Text", "value": "entityDelete"},
    }
    r = _parse(_v2(entity), monkeypatch)
    assert r.observations == [] and r.ignored == ["E: entity deleted (alterationType entityDelete)"]


_KINDS = st.sampled_from([None, "update", "append", "delete"])


@st.composite
def _v2_entity(draw) -> tuple[dict, dict[str, float], set[str]]:
    """An Orion entity whose attributes carry (or not) an actionType: the entity, the numbers
    that must be read, the names that must not appear anywhere."""
    entity: dict = {"id": "urn:ngsi-ld:Thing:1", "type": "Thing"}
    numbers: dict[str, float] = {}
    deleted: set[str] = set()
    for name in draw(st.lists(st.sampled_from(["t", "h", "p", "level", "flow"]), max_size=5, unique=True)):
        kind = draw(_KINDS)
        value = draw(st.integers(-100, 100) | st.floats(-1e3, 1e3, allow_nan=False))
        meta = _action(kind)
        if draw(st.booleans()):
            meta["TimeInstant"] = {"type": "DateTime", "value": "2026-12-07T09:59:00Z"}
        if draw(st.booleans()):
            meta["unitCode"] = {"type": "Text", "value": "CEL"}
        entity[name] = {"type": draw(st.sampled_from(["Number", "Text"])), "value": value, "metadata": meta}
        if kind == "delete":
            deleted.add(name)
        else:
            numbers[name] = float(value)
    for name, attribute in draw(
        st.lists(
            st.sampled_from(
                [
                    ("status", {"type": "Text", "value": "on"}),
                    ("refDevice", {"type": "Relationship", "value": "urn:ngsi-ld:Device:1"}),
                    (
                        "location",
                        {"type": "geo:json", "value": {"type": "Point", "coordinates": [-8.6, 41.1]}},
                    ),
                    ("TimeInstant", {"type": "DateTime", "value": "2026-12-07T09:58:00Z"}),
                ]
            ),
            max_size=4,
            unique_by=lambda x: x[0],
        )
    ):
        kind = draw(_KINDS)
        entity[name] = {**attribute, "metadata": _action(kind)}
        if kind == "delete":
            deleted.add(name)
    return entity, numbers, deleted


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(_v2_entity())
def test_deleted_attributes_never_reach_an_observation(monkeypatch, case) -> None:
    entity, numbers, deleted = case
    r = _parse(_v2(entity), monkeypatch)
    assert r.ok and not r.rejections
    got = {k: v for o in r.observations for k, v in o.attributes.items()}
    assert got == numbers
    for o in r.observations:
        assert deleted.isdisjoint(o.labels or {})
        if "location" in deleted:
            assert o.location is None
        if "TimeInstant" in deleted:  # (09:59 is an attribute's own TimeInstant metadata)
            assert o.time != datetime(2026, 12, 7, 9, 58, tzinfo=UTC)
    notes = [n for n in r.ignored if "actionType delete" in n]
    assert sorted(notes) == sorted(f"{entity['id']}: " + NOTE.format(n) for n in deleted)
