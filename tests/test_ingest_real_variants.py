"""Shapes real brokers and IoT Agents send that the fixtures did not hold (found by probing the
mapping with realistic variants): each gives the same result on the fast and the general path."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from atalaia.streams.ingest import parse_payload
from tests.test_ingest_fastpath import both_paths
from tests.test_ingest_shapes import ld

RECEIVED = datetime(2026, 1, 28, 10, 0, 5, tzinfo=UTC)


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


def test_one_instance_with_a_dataset_id_is_never_the_default_instance(monkeypatch) -> None:
    """NGSI-LD §4.5.5: an instance with a datasetId is not the default one, also when it is the
    only instance and sent as an object; dataset ids that end alike stay apart."""
    t = "2026-01-28T09:00:00Z"
    entity = {
        "id": "urn:ngsi-ld:WeatherObserved:w",
        "type": "WeatherObserved",
        "temperature": {
            "type": "Property",
            "value": 99.0,
            "observedAt": t,
            "datasetId": "urn:ngsi-ld:Dataset:raw",
        },
    }
    assert run(ld(entity), monkeypatch).observations[0].attributes == {"temperature:raw": 99.0}
    entity["temperature"] = [
        {"type": "Property", "value": 14.0, "observedAt": t},
        {"type": "Property", "value": 10.0, "observedAt": t, "datasetId": "urn:ngsi-ld:Dataset:sensor-1:raw"},
        {"type": "Property", "value": 20.0, "observedAt": t, "datasetId": "urn:ngsi-ld:Dataset:sensor-2:raw"},
    ]
    assert run(ld(entity), monkeypatch).observations[0].attributes == {
        "temperature": 14.0,
        "temperature:sensor-1:raw": 10.0,
        "temperature:sensor-2:raw": 20.0,
    }


@pytest.mark.parametrize("first", ["compact", "expanded"])
def test_a_compact_and_an_expanded_name_that_collide_keep_the_first_and_refuse_the_second(
    first, monkeypatch
) -> None:
    """Two producers, one with the SDM context and one without any: `temperature` and the
    default context's `.../temperature` are two NGSI-LD attributes with one short name. The
    second no longer silently replaces the first (value and unit): it is refused, so it reaches
    the DLQ."""
    t = "2026-01-28T09:00:00Z"
    compact = ("temperature", {"type": "Property", "value": 14.2, "observedAt": t, "unitCode": "CEL"})
    expanded = (
        "https://uri.etsi.org/ngsi-ld/default-context/temperature",
        {"type": "Property", "value": 57.6, "observedAt": t, "unitCode": "FAH"},
    )
    pair = [compact, expanded] if first == "compact" else [expanded, compact]
    entity = {"id": "urn:ngsi-ld:WeatherObserved:porto-1", "type": "WeatherObserved", **dict(pair)}
    r = run(ld(entity), monkeypatch)
    kept = pair[0][1]
    o = r.observations[0]
    assert o.attributes == {"temperature": kept["value"]} and o.units == {"temperature": kept["unitCode"]}
    assert [x.code for x in r.rejections] == ["duplicate-attribute"]


def test_a_lone_location_with_a_dataset_id_is_still_the_location(monkeypatch) -> None:
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:a",
        "type": "WaterObserved",
        "height": {"type": "Property", "value": 3.2, "observedAt": "2026-01-28T09:45:00Z"},
        "location": {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": [-8.6, 41.1]},
            "datasetId": "urn:ngsi-ld:Dataset:gps",
        },
    }
    assert run(ld(entity), monkeypatch).observations[0].location == (-8.6, 41.1)


def test_a_location_deleted_as_ngsi_ld_null_is_no_location_not_a_bad_one(monkeypatch) -> None:
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:a",
        "type": "WaterObserved",
        "height": {"type": "Property", "value": 3.2, "observedAt": "2026-01-28T09:45:00Z"},
        "location": {"type": "GeoProperty", "value": "urn:ngsi-ld:null"},
    }
    r = run(ld(entity), monkeypatch)
    assert r.ok and not r.rejections and r.observations[0].location is None


def test_a_v2_unit_written_as_a_symbol_in_metadata_is_the_readings_unit(monkeypatch) -> None:
    """NGSI-v2 providers that write ``metadata.unit`` ("cm") rather than ``unitCode``: the reading
    carries it, so a rule in metres converts it (it was read as metres: 250 cm was 250 m)."""
    from atalaia.rules.units import convert_factor

    entity = {
        "id": "urn:ngsi-ld:WaterObserved:a",
        "type": "WaterObserved",
        "height": {"type": "Number", "value": 250, "metadata": {"unit": {"type": "Text", "value": "cm"}}},
        "flow": {"type": "Number", "value": 2, "metadata": {"unitCode": {"value": "MQS"}, "unit": "l/s"}},
        "dateObserved": {"type": "DateTime", "value": "2026-01-28T09:40:00Z"},
    }
    r = run(v2(entity), monkeypatch)
    assert r.ok and r.observations[0].units == {"height": "cm", "flow": "MQS"}  # unitCode first
    assert convert_factor("cm", "m") == (0.01, 0.0)


@pytest.mark.parametrize(
    "interval",
    [
        "2026-01-28T09:40:00Z/2026-01-28T09:45:00Z",  # start/end
        "2026-01-28T09:40:00Z/PT5M",  # start/duration
        "PT5M/2026-01-28T09:45:00Z",  # duration/end
        "2026-01-28T09:40:00Z/09:45:00Z",  # start/end with the end's date left out
        "2026-01-28T10:40:00+01:00/09:45:00Z",  # ... in another zone than the start's
        "2026-01-28T10:40:00+01:00/10:45",  # ... in the start's zone
        "2026-01-28T09:44:59.5Z/PT0.5S",
    ],
)
def test_a_date_observed_interval_is_observed_at_its_end(interval, monkeypatch) -> None:
    """Smart Data Models' TrafficFlowObserved and NoiseLevelObserved time a reading by an ISO 8601
    interval; every form of one is the reading at its end (start/duration was refused as a bad
    time and the reading timed by the notification instead)."""
    entity = {
        "id": "urn:ngsi-ld:TrafficFlowObserved:a",
        "type": "TrafficFlowObserved",
        "intensity": {"type": "Property", "value": 120},
        "dateObserved": {"type": "Property", "value": interval},
    }
    r = run(ld(entity), monkeypatch)
    assert r.ok and len(r.observations) == 1, r.rejections
    o = r.observations[0]
    assert (o.time, o.time_source) == (datetime(2026, 1, 28, 9, 45, tzinfo=UTC), "observed")


@pytest.mark.parametrize(
    "interval", ["2026-01-28T09:40:00Z/P1M", "2026-01-28T09:40:00Z/PT", "2026-01-28T09:40:00Z/P1D/x"]
)
def test_an_interval_whose_end_cannot_be_known_is_refused_as_a_bad_time(interval) -> None:
    from atalaia.streams.ingest.timeparse import parse_observation_time as parse_time

    assert parse_time(interval).time is None and parse_time(interval).error


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(0, 3),
    st.integers(0, 40),
    st.integers(0, 200),
    st.integers(0, 5000),
)
def test_start_plus_duration_is_the_end(start, days, hours, minutes, seconds) -> None:
    from datetime import timedelta

    from atalaia.streams.ingest.timeparse import parse_observation_time as parse_time

    text = f"{start.strftime('%Y-%m-%dT%H:%M:%S')}Z/P{days}DT{hours}H{minutes}M{seconds}S"
    got = parse_time(text).time
    want = start.replace(microsecond=0, tzinfo=UTC) + timedelta(
        days=days, hours=hours, minutes=minutes, seconds=seconds
    )
    assert got == want


@pytest.mark.parametrize("keyvalues", [False, True])
def test_an_orion_alteration_type_is_no_state_and_a_deleted_entity_no_reading(keyvalues, monkeypatch) -> None:
    """A subscription that asks for Orion v2's ``alterationType`` gets it as a Text attribute: it
    made every update a state change (``alterationType=entityUpdate``) and a deleted entity's last
    values a new reading at the reception time."""

    def entity(kind: str, **attrs) -> dict:
        body = {"id": "urn:ngsi-ld:WaterObserved:a", "type": "WaterObserved"}
        if keyvalues:
            return body | {"alterationType": kind} | attrs
        return (
            body
            | {"alterationType": {"type": "Text", "value": kind}}
            | {k: {"type": "Number" if type(v) is float else "Text", "value": v} for k, v in attrs.items()}
        )

    r = run(v2(entity("entityUpdate", height=3.2)), monkeypatch)
    assert [(o.attributes, o.labels) for o in r.observations] == [({"height": 3.2}, {})]
    r = run(v2(entity("entityChange", name="Ribeira")), monkeypatch)
    assert r.ok and r.observations == []  # a descriptive change alone: nothing observed
    r = run(v2(entity("entityDelete", height=3.2)), monkeypatch)
    assert r.observations == [] and not r.rejections
    assert r.ignored == ["urn:ngsi-ld:WaterObserved:a: entity deleted (alterationType entityDelete)"]


def test_concise_instances_of_every_kind_are_all_read(monkeypatch) -> None:
    """Orion-LD's concise form: an instance without "value" (a vocab, a languageMap) stopped the
    reading of the instances after it, and a concise languageMap name was no label."""
    entity = {
        "id": "urn:ngsi-ld:Device:a",
        "type": "Device",
        "observedAt": "2026-01-28T09:45:00Z",
        "name": {"languageMap": {"pt": "Ribeira", "en": "Riverside"}},
        "deviceState": [{"vocab": "ok"}, {"vocab": "fault", "datasetId": "urn:ngsi-ld:Dataset:b"}],
        "temperature": [
            {"value": 1.0},
            {"languageMap": {"pt": "x"}, "datasetId": "urn:ngsi-ld:Dataset:l"},
            {"value": 3.0, "datasetId": "urn:ngsi-ld:Dataset:c"},
        ],
    }
    r = run(ld(entity), monkeypatch)
    assert r.ok, r.rejections
    attributes = {k: v for o in r.observations for k, v in o.attributes.items()}
    labels = {k: v for o in r.observations for k, v in o.labels.items()}
    assert attributes == {"temperature": 1.0, "temperature:c": 3.0}
    assert labels["deviceState"] == "ok" and labels["deviceState:b"] == "fault"
    assert labels["name"] in ("Ribeira", "Riverside")


@pytest.mark.parametrize("kind", ["Text", "String"])
def test_an_iot_agent_reading_typed_text_is_refused_as_a_number_written_as_text(kind, monkeypatch) -> None:
    """An unprovisioned UL attribute reaches Orion as the IoT Agent's default type, Text: the
    reading "21.5" became a state label, silently; a number written as text is refused with the
    reason wherever else it appears. An integer code ("2") and a firmware version stay labels."""
    meta = {"TimeInstant": {"type": "DateTime", "value": "2026-01-28T09:45:00.000Z"}}
    entity = {
        "id": "urn:ngsi-ld:Device:a",
        "type": "Device",
        "temperature": {"type": kind, "value": "21.5", "metadata": meta},
        "mode": {"type": kind, "value": "2", "metadata": meta},
        "firmwareVersion": {"type": kind, "value": "1.0", "metadata": meta},
        "battery": {"type": "Number", "value": 87, "metadata": meta},
    }
    r = run(v2(entity), monkeypatch)
    assert [(o.attributes, o.labels) for o in r.observations] == [
        ({"battery": 87}, {"mode": "2", "firmwareVersion": "1.0"})
    ]
    said = repr(r.rejections) + repr([o.quality for o in r.observations])
    assert "number-as-text" in said and "temperature" in said, said


def test_the_simplified_multi_attribute_form_gives_each_instance(monkeypatch) -> None:
    """NGSI-LD 1.7's simplified (keyValues) form of a multi-attribute, as Stellio sends it: the
    entity was ignored ("no numeric attribute or state")."""
    entity = {
        "id": "urn:ngsi-ld:Device:a",
        "type": "Device",
        "temperature": {"dataset": {"@none": 20.1, "urn:ngsi-ld:Dataset:raw": 20.5}},
        "deviceState": {"dataset": {"urn:ngsi-ld:Dataset:b": "fault"}},
    }
    body = orjson.dumps(
        {
            "id": "urn:ngsi-ld:Notification:1",
            "type": "Notification",
            "notifiedAt": "2026-01-28T09:45:00Z",
            "data": [entity],
        }
    )
    r = run(body, monkeypatch)
    assert r.ok and len(r.observations) == 1, (r.rejections, r.ignored)
    o = r.observations[0]
    assert o.attributes == {"temperature": 20.1, "temperature:raw": 20.5}
    assert o.labels == {"deviceState:b": "fault"}


def test_a_colon_in_an_ngsi_v2_name_is_part_of_the_name(monkeypatch) -> None:
    """NGSI-v2 has no @context: Orion allows ``power:L1`` as an attribute name and a type with a
    colon. They were read as JSON-LD compact IRIs (``L1``, ``Temperature``), so ``power:L1`` and
    ``energy:L1`` collided and a rule naming ``power:L1`` never matched. In NGSI-LD a compact IRI
    is still its term."""
    entity = {
        "id": "meter-1",
        "type": "Sensor:Meter",
        "power:L1": {"type": "Number", "value": 1.5},
        "energy:L1": {"type": "Number", "value": 7.0},
        "https://smartdatamodels.org/dataModel.Energy/voltage": {"type": "Number", "value": 230.0},
        "TimeInstant": {"type": "DateTime", "value": "2026-01-28T09:45:00Z"},
    }
    r = run(v2(entity), monkeypatch)
    assert r.ok and len(r.observations) == 1, r.rejections
    o = r.observations[0]
    assert o.type == "Sensor:Meter"
    assert o.attributes == {"power:L1": 1.5, "energy:L1": 7.0, "voltage": 230.0}
    ld_entity = {
        "id": "urn:ngsi-ld:WaterObserved:a",
        "type": "sdm:WaterObserved",
        "sdm:height": {"type": "Property", "value": 3.2, "observedAt": "2026-01-28T09:45:00Z"},
    }
    r = run(ld(ld_entity), monkeypatch)
    assert [(o.type, o.attributes) for o in r.observations] == [("WaterObserved", {"height": 3.2})]


@pytest.mark.parametrize("kind", ["Temperature", "Quantity", "text", "string"])
def test_a_decimal_written_as_text_under_a_type_of_the_users_is_refused(kind, monkeypatch) -> None:
    """NGSI-v2 types are the user's: "Temperature": "21.5" is a number written as text as much as
    Text "21.5" is. It became a label, silently; it is refused with the reason. An integer code
    of such a type stays a label (TimeInstant or not: an IoT Agent times every attribute)."""
    meta = {"TimeInstant": {"type": "DateTime", "value": "2026-01-28T09:45:00.000Z"}}
    entity = {
        "id": "urn:ngsi-ld:Thermometer:a",
        "type": "Thermometer",
        "temperature": {"type": kind, "value": "21.5", "metadata": meta},
        "mode": {"type": kind, "value": "2", "metadata": meta},
        "battery": {"type": "Number", "value": 87, "metadata": meta},
    }
    r = run(v2(entity), monkeypatch)
    assert [(o.attributes, o.labels) for o in r.observations] == [({"battery": 87}, {"mode": "2"})]
    assert [(x.attribute, x.code) for x in r.rejections] == [("temperature", "number-as-text")]


def test_an_ngsi_ld_notification_without_its_type_is_read_as_ngsi_ld(monkeypatch) -> None:
    """A broker that leaves "type": "Notification" out: NGSI-LD attribute types (Property) make it
    NGSI-LD, so "sdm:height" is the term height of WaterObserved, not an NGSI-v2 attribute named
    "sdm:height" that no rule names. And a true NGSI-LD Notification is NGSI-LD even when it
    arrives with an Ngsiv2-AttrsFormat header (a broker once put it on every notification)."""
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:1",
        "type": "sdm:WaterObserved",
        "sdm:height": {"type": "Property", "value": 2.0, "observedAt": "2026-01-28T09:45:00Z"},
    }
    untyped = orjson.dumps(
        {"subscriptionId": "urn:s", "notifiedAt": "2026-01-28T09:45:02Z", "data": [entity]}
    )
    for body, headers in (
        (untyped, {"Content-Type": "application/ld+json"}),
        (untyped, {"Content-Type": "application/json"}),
        (ld(entity), {"Content-Type": "application/json", "Ngsiv2-AttrsFormat": "normalized"}),
    ):
        both_paths(body, monkeypatch, received_at=RECEIVED, headers=headers)
        r = parse_payload(body, received_at=RECEIVED, headers=headers)
        assert r.format == "ngsi-ld/notification", headers
        assert [(o.type, o.attributes) for o in r.observations] == [("WaterObserved", {"height": 2.0})]
    # an NGSI-v2 body stays NGSI-v2 whatever content type it is posted with
    body = v2({"id": "W1", "type": "WaterObserved", "height": {"type": "Number", "value": 2.0}})
    r = parse_payload(body, received_at=RECEIVED, content_type="application/ld+json")
    assert r.format == "ngsi-v2/notification" and [o.attributes for o in r.observations] == [{"height": 2.0}]
