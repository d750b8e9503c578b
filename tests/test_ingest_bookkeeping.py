"""Bookkeeping attributes are never measurements. A broker or agent that adds a numeric
``entityVersion`` (a revision counter) to every entity made it a reading of every entity; so did a
numeric ``dateModified`` (an epoch), ``serialNumber`` or ``refDevice``. The rule is by name
(``attributes.BOOKKEEPING``: NGSI-v2 builtin attributes, versions and descriptive text, and the
Smart Data Models naming rules ``date<Name>`` / ``ref<Type>``), checked here against the Smart
Data Models schemas in the shared fixtures; fast and general path agree on each case."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atalaia.streams.ingest import parse_payload
from atalaia.streams.ingest.attributes import TIME_FIELDS, bookkeeping
from tests.test_ingest_fastpath import both_paths

RECEIVED = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
SDM = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "sdm"


def _ld(*entities: dict) -> bytes:
    return orjson.dumps(
        {
            "id": "urn:ngsi-ld:Notification:1",
            "type": "Notification",
            "notifiedAt": "2026-12-07T09:59:59Z",
            "data": list(entities),
        }
    )


def _v2(*entities: dict) -> bytes:
    return orjson.dumps({"subscriptionId": "s1", "data": list(entities)})


def _attribute(form: str, value: Any) -> Any:
    return {
        "v2": {"type": "Number", "value": value, "metadata": {}},
        "v2-text-type": {"type": "Text", "value": value},  # (an IoT Agent's default type)
        "ld-normalized": {"type": "Property", "value": value},
        "ld-concise": {"value": value},
        "keyValues": value,
    }[form]


FORMS = ["v2", "v2-text-type", "ld-normalized", "ld-concise", "keyValues"]


def _body(form: str, entity: dict) -> bytes:
    return _v2(entity) if form.startswith("v2") else _ld(entity)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    "name", ["entityVersion", "schemaVersion", "dateModified", "dateCreated", "refDevice", "serialNumber"]
)
def test_a_numeric_bookkeeping_attribute_is_no_measurement(form, name, monkeypatch) -> None:
    entity = {
        "id": "urn:ngsi-ld:Room:1",
        "type": "Room",
        name: _attribute(form, 7),
        "temperature": _attribute(form, 21.5),
    }
    body = _body(form, entity)
    both_paths(body, monkeypatch, received_at=RECEIVED)
    r = parse_payload(body, received_at=RECEIVED)
    [o] = r.observations
    assert o.attributes == {"temperature": 21.5}
    assert not r.rejections and not r.warnings


@pytest.mark.parametrize("form", FORMS)
def test_an_entity_with_only_an_entity_version_has_nothing_to_observe(form, monkeypatch) -> None:
    body = _body(form, {"id": "urn:ngsi-ld:Room:1", "type": "Room", "entityVersion": _attribute(form, 3)})
    both_paths(body, monkeypatch, received_at=RECEIVED)
    r = parse_payload(body, received_at=RECEIVED)
    assert r.ok and r.observations == [] and r.ignored


def test_text_bookkeeping_stays_what_it_was(monkeypatch) -> None:
    """Only numbers are dropped: a relationship target and a text version are labels as before."""
    entity = {
        "id": "urn:ngsi-ld:Room:1",
        "type": "Room",
        "refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:Device:1"},
        "entityVersion": {"type": "Property", "value": "2.0"},
        "temperature": {"type": "Property", "value": 21.5},
    }
    both_paths(_ld(entity), monkeypatch, received_at=RECEIVED)
    [o] = parse_payload(_ld(entity), received_at=RECEIVED).observations
    assert o.attributes == {"temperature": 21.5}
    assert o.labels == {"refDevice": "urn:ngsi-ld:Device:1", "entityVersion": "2.0"}


def _schema_properties() -> dict[str, set[str]]:
    """Every property the shared Smart Data Models schemas declare, with its JSON types (and
    ``date-time`` / ``uri`` formats)."""
    found: dict[str, set[str]] = {}

    def types(schema: Any, into: set[str]) -> None:
        if isinstance(schema, dict):
            t = schema.get("type")
            into.update([t] if isinstance(t, str) else t if isinstance(t, list) else [])
            if isinstance(schema.get("format"), str):
                into.add(schema["format"])
            for key in ("anyOf", "oneOf", "allOf"):
                for sub in schema.get(key, []):
                    types(sub, into)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                for name, schema in props.items():
                    types(schema, found.setdefault(name, set()))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for path in sorted(SDM.glob("*/*schema.json")):
        walk(orjson.loads(path.read_bytes()))
    return found


def test_the_rule_agrees_with_the_smart_data_models_schemas() -> None:
    """Every date-time and every reference the schemas declare is bookkeeping; no property they
    declare a number is."""
    props = _schema_properties()
    assert len(props) > 100, "the shared Smart Data Models schemas were not found"
    dates = {n for n, t in props.items() if {"date-time", "date"} & t}
    refs = {n for n, t in props.items() if n.startswith("ref") and not {"number", "integer"} & t}
    numbers = {n for n, t in props.items() if {"number", "integer"} & t}
    assert {"dateModified", "dateLastCalibration", "refDevice", "refRoadSegment"} <= dates | refs
    wrong = sorted(n for n in dates | refs if not bookkeeping(n) and n not in TIME_FIELDS)
    assert wrong == [], f"declared a date or reference, read as a possible measurement: {wrong}"
    measured = sorted(n for n in numbers if bookkeeping(n))
    assert measured == [], f"declared a number, never read as one: {measured}"


MEASURED = ["temperature", "height", "laneId", "batteryLevel", "dangerLevel", "reference", "dated"]
BOOKKEPT = ["entityVersion", "dateModified", "dateIssued", "refWeatherObserved", "firmwareVersion", "name"]


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from(FORMS),
    st.dictionaries(
        st.sampled_from(MEASURED + BOOKKEPT),
        st.integers(-1000, 1000) | st.floats(-1e6, 1e6, allow_nan=False),
        min_size=1,
        max_size=6,
    ),
)
def test_numbers_are_measurements_unless_their_name_is_bookkeeping(monkeypatch, form, values) -> None:
    entity = {"id": "urn:ngsi-ld:Thing:1", "type": "Thing"}
    entity.update({name: _attribute(form, v) for name, v in values.items()})
    body = _body(form, entity)
    both_paths(body, monkeypatch, received_at=RECEIVED)
    r = parse_payload(body, received_at=RECEIVED)
    got = {k: v for o in r.observations for k, v in o.attributes.items()}
    assert got == {k: float(v) for k, v in values.items() if k in MEASURED}
