"""Shapes real brokers and IoT Agents send that the fixtures did not hold (found by probing the
mapping with realistic variants): each gives the same result on the fast and the general path."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from atalaia.streams.ingest import parse_payload
from tests.test_ingest_fastpath import both_paths

RECEIVED = datetime(2026, 1, 28, 10, 0, 5, tzinfo=UTC)


def ld(*entities) -> bytes:
    return orjson.dumps(
        {
            "id": "urn:ngsi-ld:Notification:1",
            "type": "Notification",
            "subscriptionId": "urn:s",
            "notifiedAt": "2026-01-28T09:45:02Z",
            "data": list(entities),
        }
    )


def v2(*entities) -> bytes:
    return orjson.dumps({"subscriptionId": "s1", "data": list(entities)})


def run(body: bytes, monkeypatch: pytest.MonkeyPatch):
    both_paths(body, monkeypatch, received_at=RECEIVED)
    return parse_payload(body, received_at=RECEIVED)


@pytest.mark.parametrize(
    "unset", [None, "", "  ", {"type": "DateTime", "value": None}, {"type": "DateTime", "value": ""}]
)
def test_an_unset_date_observed_falls_through_to_time_instant(unset, monkeypatch) -> None:
    """An IoT Agent entity whose dateObserved is unset (null, blank) is timed by its TimeInstant
    (DESIGN: dateObserved, else TimeInstant), not by the reception time."""
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:a",
        "type": "WaterObserved",
        "height": {"type": "Number", "value": 3.2},
        "dateObserved": unset,
        "TimeInstant": {"type": "DateTime", "value": "2026-01-28T09:40:00.000Z"},
    }
    r = run(v2(entity), monkeypatch)
    assert r.ok and len(r.observations) == 1
    o = r.observations[0]
    assert o.time == datetime(2026, 1, 28, 9, 40, tzinfo=UTC) and o.time_source == "observed"


def test_a_bad_date_observed_is_still_refused_not_skipped(monkeypatch) -> None:
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:a",
        "type": "WaterObserved",
        "height": {"type": "Number", "value": 3.2},
        "dateObserved": {"type": "DateTime", "value": "yesterday"},
        "TimeInstant": {"type": "DateTime", "value": "2026-01-28T09:40:00Z"},
    }
    r = run(v2(entity), monkeypatch)
    assert not r.observations or r.observations[0].time != datetime(2026, 1, 28, 9, 40, tzinfo=UTC)


@pytest.mark.parametrize(
    "form",
    [
        {"type": "Property", "value": "1.0"},  # NGSI-LD normalized
        "1.0",  # keyValues (LD and v2)
        {"value": "1.0"},  # concise
    ],
)
def test_a_device_firmware_version_is_a_label_not_a_number_written_as_text(form, monkeypatch) -> None:
    """Smart Data Models declare firmwareVersion text; "1.0" was refused as a number written as
    text, a DLQ record on every Device notification."""
    entity = {
        "id": "urn:ngsi-ld:Device:d1",
        "type": "Device",
        "batteryLevel": {"type": "Property", "value": 0.75, "observedAt": "2026-01-28T09:45:00Z"},
        "firmwareVersion": form,
    }
    r = run(ld(entity), monkeypatch)
    assert r.ok and not r.rejections, r.rejections
    assert r.observations[0].labels["firmwareVersion"] == "1.0"
    # a measurement still cannot hide as text: a unit declares it one
    entity["batteryLevel"] = {"type": "Property", "value": "0.75", "unitCode": "C62"}
    assert any(x.code == "number-as-text" for x in run(ld(entity), monkeypatch).rejections)


def test_a_geometry_collection_location_is_kept(monkeypatch) -> None:
    """Valid GeoJSON (RFC 7946 §3.1.8) that was refused as bad-location and lost."""
    entity = {
        "id": "urn:ngsi-ld:FloodMonitoring:f",
        "type": "FloodMonitoring",
        "currentLevel": {"type": "Property", "value": 1.5, "observedAt": "2026-01-28T09:45:00Z"},
        "location": {
            "type": "GeoProperty",
            "value": {
                "type": "GeometryCollection",
                "geometries": [
                    {"type": "Point", "coordinates": [-8.61, 41.14]},
                    {"type": "LineString", "coordinates": [[-8.62, 41.15], [-8.60, 41.13]]},
                ],
            },
        },
    }
    r = run(ld(entity), monkeypatch)
    assert r.ok and r.observations[0].location == pytest.approx((-8.61, 41.14))
    entity["location"]["value"]["geometries"] = [{"type": "GeometryCollection", "geometries": []}]
    r = run(ld(entity), monkeypatch)
    assert r.observations and r.observations[0].location is None  # nested: dropped with a warning
    assert any("GeometryCollection" in w for w in r.observations[0].quality)


def test_a_default_context_prefixed_name_is_the_plain_attribute(monkeypatch) -> None:
    """A broker compacts an attribute no @context names as ngsi-ld:default-context/<name>; rules
    select <name>, and a prefixed dateObserved is the observation time."""
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:a",
        "type": "WaterObserved",
        "ngsi-ld:default-context/height": {"type": "Property", "value": 3.2},
        "ngsi-ld:default-context/dateObserved": {"type": "Property", "value": "2026-01-28T09:44:00Z"},
    }
    r = run(ld(entity), monkeypatch)
    o = r.observations[0]
    assert o.attributes == {"height": 3.2} and o.time_source == "observed"
    assert o.time == datetime(2026, 1, 28, 9, 44, tzinfo=UTC)


def test_ngsi_ld_null_is_no_value_and_no_label(monkeypatch) -> None:
    """NGSI-LD 1.8 notifies a deleted attribute as "urn:ngsi-ld:null": it is not a label value."""
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:a",
        "type": "WaterObserved",
        "height": {"type": "Property", "value": 3.2, "observedAt": "2026-01-28T09:45:00Z"},
        "district": {"type": "Property", "value": "urn:ngsi-ld:null"},
        "refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:null"},
        "name": "urn:ngsi-ld:null",
    }
    r = run(ld(entity), monkeypatch)
    assert r.ok and r.observations[0].labels == {}
