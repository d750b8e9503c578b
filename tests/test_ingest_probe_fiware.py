"""What probing the ingest with notifications as Orion, IoT Agents, Orion-LD, Scorpio and Stellio
send them found wrong (each case failed before its fix); fast and general path agree on each."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atalaia.streams.ingest import parse_payload
from tests.test_ingest_fastpath import both_paths

RECEIVED = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def v2(*entities) -> bytes:
    return orjson.dumps({"subscriptionId": "s1", "data": list(entities)})


def run(body: bytes, monkeypatch: pytest.MonkeyPatch, **kw):
    both_paths(body, monkeypatch, received_at=RECEIVED, **kw)
    return parse_payload(body, received_at=RECEIVED, **kw)


@pytest.mark.parametrize("blank", [" ", "  ", "\t"])
def test_a_blank_time_instant_metadata_is_no_time_not_a_refused_reading(blank, monkeypatch) -> None:
    """An IoT Agent's unset TimeInstant (" ") on an attribute is absent, as "" and an unset entity
    TimeInstant are: the reading is timed by the entity's time (else its reception), not lost to
    the DLQ as bad-time with every notification."""
    entity = {
        "id": "urn:ngsi-ld:Device:001",
        "type": "Device",
        "TimeInstant": {"type": "DateTime", "value": "2026-12-07T09:59:30.123Z", "metadata": {}},
        "temperature": {
            "type": "Number",
            "value": 21.3,
            "metadata": {"TimeInstant": {"type": "DateTime", "value": blank}},
        },
    }
    r = run(v2(entity), monkeypatch, headers={"Fiware-Service": "openiot", "Fiware-ServicePath": "/"})
    assert r.ok and not r.rejections and not r.warnings
    [o] = r.observations
    assert o.attributes == {"temperature": 21.3} and o.time_source == "observed"
    assert o.time == datetime(2026, 12, 7, 9, 59, 30, 123000, tzinfo=UTC)
    entity.pop("TimeInstant")
    [o] = run(v2(entity), monkeypatch).observations
    assert o.time == RECEIVED and o.time_source == "received"


def test_a_blank_unit_code_metadata_is_no_unit(monkeypatch) -> None:
    entity = {
        "id": "r1",
        "type": "Room",
        "temperature": {
            "type": "Number",
            "value": 21.0,
            "metadata": {"unitCode": {"type": "Text", "value": " "}},
        },
    }
    [o] = run(v2(entity), monkeypatch).observations
    assert o.units == {}


def test_a_bad_time_instant_metadata_is_named_so_in_the_reason(monkeypatch) -> None:
    """NGSI-v2 has no observedAt: the refusal names the TimeInstant metadata the sender wrote."""
    entity = {
        "id": "r1",
        "type": "Room",
        "temperature": {
            "type": "Number",
            "value": 21,
            "metadata": {"TimeInstant": {"type": "DateTime", "value": "yesterday"}},
        },
    }
    r = run(v2(entity), monkeypatch)
    [rej] = r.rejections
    assert rej.code == "bad-time" and rej.attribute == "temperature"
    assert rej.reason.startswith("temperature TimeInstant metadata 'yesterday'"), rej.reason


def ld(*entities) -> bytes:
    return orjson.dumps(
        {
            "id": "urn:ngsi-ld:Notification:1",
            "type": "Notification",
            "subscriptionId": "urn:ngsi-ld:Subscription:1",
            "notifiedAt": "2026-12-07T09:59:59Z",
            "data": list(entities),
        }
    )


def device(**attributes) -> dict:
    return {"id": "urn:ngsi-ld:Device:d1", "type": "Device", **attributes}


@pytest.mark.parametrize(
    ("text", "xsd", "code"),
    [
        ("NaN", "xsd:double", "non-finite-number"),
        ("-INF", "http://www.w3.org/2001/XMLSchema#double", "non-finite-number"),
        ("1e400", "xsd:double", "non-finite-number"),
        ("abc", "xsd:double", "wrong-value-type"),
        ("1_000", "xsd:integer", "wrong-value-type"),  # Python's float() reads it as 1000
        ("١٢", "xsd:integer", "wrong-value-type"),  # Arabic-Indic digits: float() reads 12
        ("2.5", "xsd:integer", "wrong-value-type"),
        ("3,6", "xsd:double", "number-as-text"),
    ],
)
def test_text_typed_as_an_xsd_number_that_is_not_one_is_refused_with_its_reason(
    text, xsd, code, monkeypatch
) -> None:
    """A JSON-LD typed value is read as XSD writes numbers: "NaN" typed xsd:double became the
    state "NaN" (a label, no DLQ record), "1_000" the number 1000, "1e400" a number written as
    text; each is now refused, with what is wrong."""
    r = run(ld(device(a={"type": "Property", "value": {"@value": text, "@type": xsd}}, b=1)), monkeypatch)
    [o] = r.observations
    assert o.attributes == {"b": 1.0} and "a" not in (o.labels or {})
    assert [(x.attribute, x.code) for x in r.rejections] == [("a", code)]
    if code != "number-as-text":
        assert repr(text) in r.rejections[0].reason and "typed" in r.rejections[0].reason


@pytest.mark.parametrize(("text", "number"), [("3.6", 3.6), (" -1.5E2 ", -150.0), ("+7", 7.0), (".5", 0.5)])
def test_xsd_numbers_are_read(text, number, monkeypatch) -> None:
    r = run(ld(device(a={"type": "Property", "value": {"@value": text, "@type": "xsd:double"}})), monkeypatch)
    assert not r.rejections and r.observations[0].attributes == {"a": number}


def test_a_typed_value_in_a_key_values_notification_is_read(monkeypatch) -> None:
    """Orion-LD's simplified (keyValues) form gives a Property whose value is a JSON-LD value
    object as that object: the number in it was dropped without a word (the entity ignored)."""
    body = ld(
        device(
            windSpeed={"@value": "3.6", "@type": "xsd:double"},
            pressure={"@value": 1013, "@type": "http://www.w3.org/2001/XMLSchema#integer"},
            gust={"@value": "NaN", "@type": "xsd:double"},
        )
    )
    r = run(body, monkeypatch)
    [o] = r.observations
    assert o.attributes == {"windSpeed": 3.6, "pressure": 1013.0} and o.time_source == "notified"
    assert [(x.attribute, x.code) for x in r.rejections] == [("gust", "non-finite-number")]


@pytest.mark.parametrize("form", ["ld-keyvalues", "ld-normalized", "v2-normalized"])
def test_a_device_measurement_reading_is_in_the_unit_the_entity_states(form, monkeypatch) -> None:
    """Smart Data Models' DeviceMeasurement gives its reading's unit in the entity's ``unit``
    (a UN/CEFACT code), not as a unitCode: the observation had no unit, so a rule with
    ``unit: degC`` took 212 °F for 212 °C."""
    from atalaia.rules.units import value_in_unit

    kv = {
        "id": "urn:ngsi-ld:DeviceMeasurement:dm1",
        "type": "DeviceMeasurement",
        "dateObserved": "2026-12-07T09:50:00Z",
        "numValue": 212,
        "unit": "FAH",
        "controlledProperty": "temperature",
        "refDevice": "urn:ngsi-ld:Device:1",
    }
    if form == "ld-keyvalues":
        body = ld(kv)
    else:
        kind = {"ld-normalized": "Property", "v2-normalized": "Number"}[form]
        entity = {k: v if k in ("id", "type") else {"type": "Property", "value": v} for k, v in kv.items()}
        entity["numValue"]["type"] = kind
        if form == "v2-normalized":
            entity = {
                k: {**v, "type": "Text"} if type(v) is dict and k != "numValue" else v
                for k, v in entity.items()
            }
            entity["dateObserved"]["type"] = "DateTime"
            entity["refDevice"]["type"] = "Relationship"
        body = ld(entity) if form == "ld-normalized" else v2(entity)
    r = run(body, monkeypatch)
    assert not r.rejections
    [o] = r.observations
    assert o.attributes == {"numValue": 212.0} and o.units == {"numValue": "FAH"}
    assert o.labels["unit"] == "FAH" and o.time_source == "observed"
    assert value_in_unit(o.to_dict(), "DeviceMeasurement", "numValue", 212.0, "degC") == 100.0


def test_a_device_measurement_unit_code_of_its_own_wins(monkeypatch) -> None:
    entity = {
        "id": "urn:ngsi-ld:DeviceMeasurement:dm1",
        "type": "DeviceMeasurement",
        "numValue": {"type": "Property", "value": 20.5, "unitCode": "CEL"},
        "unit": {"type": "Property", "value": "FAH"},
    }
    [o] = run(ld(entity), monkeypatch).observations
    assert o.units == {"numValue": "CEL"}


#: Smart Data Models' own v2 ParkingSpot example (dataModel.Parking, example-normalized.json)
PARKING_SPOT = {
    "id": "santander:daoiz_velarde_1_5:3",
    "type": "ParkingSpot",
    "status": {
        "value": "free",
        "metadata": {
            "timestamp": {"type": "DateTime", "value": "2018-09-21T12:00:00"},
            "parkingPermit": {"type": "text", "value": "yes"},
        },
    },
    "category": {"value": ["onstreet"]},
    "refParkingSite": {"type": "Relationship", "value": "santander:daoiz_velarde_1_5"},
    "name": {"value": "A-13"},
    "location": {
        "type": "geo:json",
        "value": {"type": "Point", "coordinates": [-3.80356167695194, 43.46296641666926]},
    },
}


@pytest.mark.parametrize("enveloped", [True, False])
def test_a_timestamp_metadata_times_the_attribute(enveloped, monkeypatch) -> None:
    """Smart Data Models' v2 parking models time a reading by its ``timestamp`` metadata
    (ParkingSpot ``status``, OffStreetParking ``availableSpotNumber``): the state was timed by its
    reception, years after it was observed."""
    r = run(v2(PARKING_SPOT) if enveloped else orjson.dumps(PARKING_SPOT), monkeypatch)
    [o] = r.observations
    assert o.labels["status"] == "free" and o.time_source == "observed"
    assert o.time == datetime(2018, 9, 21, 12, tzinfo=UTC)
    site = {
        "id": "porto:parking:trindade",
        "type": "OffStreetParking",
        "availableSpotNumber": {
            "type": "Number",
            "value": 121,
            "metadata": {"timestamp": {"type": "DateTime", "value": "2026-12-07T09:58:00Z"}},
        },
        "totalSpotNumber": {"type": "Number", "value": 200},
        "dateModified": {"type": "DateTime", "value": "2026-12-07T09:58:01Z"},
    }
    r = run(v2(site), monkeypatch)
    by_attr = {a: (o.time, o.time_source) for o in r.observations for a in o.attributes}
    assert by_attr == {
        "availableSpotNumber": (datetime(2026, 12, 7, 9, 58, tzinfo=UTC), "observed"),
        "totalSpotNumber": (RECEIVED, "received"),
    }


def test_a_timestamp_metadata_that_is_not_text_is_not_a_time(monkeypatch) -> None:
    entity = {
        "id": "x",
        "type": "T",
        "t": {"type": "Number", "value": 1, "metadata": {"timestamp": 1765101480}},
    }
    r = run(v2(entity), monkeypatch)
    assert not r.rejections and r.observations[0].time_source == "received"


def test_an_untyped_v2_attribute_keeps_its_metadata(monkeypatch) -> None:
    """An attribute written without a type (Smart Data Models' v2 examples, a simplifiedNormalized
    entity) was read as a concise NGSI-LD Property: its TimeInstant and unitCode metadata were
    not read, so the reading was timed by its reception and had no unit."""
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:w1",
        "type": "WaterObserved",
        "height": {
            "value": 3.5,
            "metadata": {
                "TimeInstant": {"type": "DateTime", "value": "2026-12-07T09:40:00Z"},
                "unitCode": {"type": "Text", "value": "MTR"},
            },
        },
    }
    for body in (v2(entity), orjson.dumps(entity)):
        [o] = run(body, monkeypatch).observations
        assert o.attributes == {"height": 3.5} and o.units == {"height": "MTR"}
        assert o.time == datetime(2026, 12, 7, 9, 40, tzinfo=UTC) and o.time_source == "observed"


def test_a_v2_date_time_nested_in_an_ngsi_ld_property_times_the_entity(monkeypatch) -> None:
    """Smart Data Models' NGSI-LD RainFallRadarObserved and PhreaticObserved examples write
    ``dateObserved`` as a Property whose value is ``{"type": "DateTime", "value": ...}``: it was
    "no date-time text" and the readings were timed by their reception."""
    entity = {
        "id": "urn:ngsi-ld:PhreaticObserved:1",
        "type": "PhreaticObserved",
        "dateObserved": {"type": "Property", "value": {"type": "DateTime", "value": "2026-12-07T08:45:00Z"}},
        "waterTable": {"type": "Property", "value": 12.75, "unitCode": "MTR"},
        "@context": ["https://smartdatamodels.org/context.jsonld"],
    }
    [o] = run(ld(entity), monkeypatch).observations
    assert o.time == datetime(2026, 12, 7, 8, 45, tzinfo=UTC) and o.time_source == "observed"
    entity["dateObserved"]["value"]["type"] = "Text"  # only a DateTime says it is one
    r = run(ld(entity), monkeypatch)
    assert r.observations[0].time_source == "notified" and any("bad-time" in w for w in r.warnings)


def test_a_smart_metering_entity_version_is_text(monkeypatch) -> None:
    """SmartMeteringObservation's ``entityVersion`` is text ("2.0", an enum of its schema): each
    of its notifications put a number-as-text record on the DLQ."""
    entity = {
        "id": "urn:ngsi-ld:SmartMeteringObservation:1",
        "type": "SmartMeteringObservation",
        "entityVersion": "2.0",
        "dateObserved": "2026-12-07T09:00:00Z",
        "value": 12.5,
        "unit": "KWH",
    }
    r = run(ld(entity), monkeypatch)
    assert not r.rejections and r.observations[0].attributes == {"value": 12.5}
    assert r.observations[0].labels["entityVersion"] == "2.0"


@pytest.mark.parametrize("concise", [False, True])
def test_a_deleted_ngsi_ld_entity_s_last_values_are_not_a_reading(concise, monkeypatch) -> None:
    """An NGSI-LD 1.8 notification of a deleted entity (``triggerReason`` entityDeleted, the
    entity with ``deletedAt``) that still carries attributes gave their last values as a reading
    at the notification's time, as Orion v2's entityDelete is not (DESIGN: ignored, noted)."""
    height = 4.6 if concise else {"type": "Property", "value": 4.6, "unitCode": "MTR"}
    body = orjson.dumps(
        {
            "id": "urn:ngsi-ld:Notification:d",
            "type": "Notification",
            "subscriptionId": "urn:ngsi-ld:Subscription:1",
            "notifiedAt": "2026-12-07T09:59:59Z",
            "data": [
                {
                    "id": "urn:ngsi-ld:WaterObserved:gone",
                    "type": "WaterObserved",
                    "height": height,
                    "deletedAt": "2026-12-07T09:59:58Z",
                },
                {"id": "urn:ngsi-ld:WaterObserved:here", "type": "WaterObserved", "height": height},
            ],
        }
    )
    r = run(body, monkeypatch)
    assert [o.entity for o in r.observations] == ["urn:ngsi-ld:WaterObserved:here"]
    assert r.ignored == ["urn:ngsi-ld:WaterObserved:gone: entity deleted (deletedAt)"] and not r.rejections


FEATURE = {
    "type": "Feature",
    "geometry": {"type": "Point", "coordinates": [-8.61, 41.14]},
    "properties": {"x": 1},
}


@pytest.mark.parametrize(
    "location",
    [
        {"type": "geo:json", "value": FEATURE},
        {"type": "geo:json", "value": {"type": "FeatureCollection", "features": [FEATURE, FEATURE]}},
        FEATURE,  # keyValues
    ],
)
def test_a_geojson_feature_location_is_its_geometry(location, monkeypatch) -> None:
    """Orion takes a geo:json Feature or FeatureCollection (its first feature's geometry locates
    the entity); a producer posting such an entity sent a bad-location record to the DLQ with
    each reading (normalized) or lost the location without a word (keyValues)."""
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:w",
        "type": "WaterObserved",
        "height": 1.5,
        "location": location,
    }
    for body in (v2(entity), orjson.dumps(entity)):
        r = run(body, monkeypatch)
        assert not r.rejections and not r.warnings
        assert r.observations[0].location == (-8.61, 41.14)


def test_an_unlocated_feature_is_no_location(monkeypatch) -> None:
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:w",
        "type": "WaterObserved",
        "height": 1.5,
        "location": {"type": "geo:json", "value": {"type": "Feature", "geometry": None, "properties": {}}},
    }
    r = run(v2(entity), monkeypatch)
    assert not r.rejections and r.observations[0].location is None


@pytest.mark.parametrize("notified", [1765101599000, {"@value": "2026-12-07T09:59:59Z"}])
def test_a_notified_at_that_is_not_text_is_said(notified, monkeypatch) -> None:
    """A notifiedAt that is not text (an epoch in milliseconds) left the readings timed by their
    reception without a word, where unparseable text is warned about."""
    body = orjson.dumps(
        {
            "id": "urn:ngsi-ld:Notification:1",
            "type": "Notification",
            "subscriptionId": "urn:s",
            "notifiedAt": notified,
            "data": [{"id": "urn:ngsi-ld:WaterObserved:w", "type": "WaterObserved", "height": 1.5}],
        }
    )
    r = run(body, monkeypatch)
    assert r.observations[0].time_source == "received"
    assert any(w.startswith("notifiedAt is a ") for w in r.warnings), r.warnings


def test_a_key_values_notification_without_its_type_is_ngsi_ld_by_its_notified_at(monkeypatch) -> None:
    """A broker that leaves "type": "Notification" out of a keyValues notification: its
    notifiedAt (which NGSI-v2 notifications never have) says NGSI-LD, so names the broker compacted
    with the subscription's prefix are their terms (they were kept, "sdm:height" of type
    "sdm:WaterObserved", which no rule on WaterObserved/height reads)."""
    body = orjson.dumps(
        {
            "id": "urn:ngsi-ld:Notification:1",
            "subscriptionId": "urn:ngsi-ld:Subscription:1",
            "notifiedAt": "2026-12-07T09:59:59Z",
            "data": [{"id": "urn:ngsi-ld:WaterObserved:w", "type": "sdm:WaterObserved", "sdm:height": 3.2}],
        }
    )
    r = run(body, monkeypatch)
    assert r.format == "ngsi-ld/notification"
    [o] = r.observations
    assert (o.type, o.attributes, o.time_source) == ("WaterObserved", {"height": 3.2}, "notified")


@pytest.mark.parametrize(
    ("attribute", "location"),
    [
        ({"type": "geo:point", "value": "41.14, -8.61", "metadata": {}}, (-8.61, 41.14)),
        ({"type": "geo:json", "value": {"type": "Point", "coordinates": [-8.61, 41.14]}}, (-8.61, 41.14)),
    ],
)
def test_an_ngsi_v2_location_attribute_of_another_name_locates_the_entity(
    attribute, location, monkeypatch
) -> None:
    """Orion's location is its geo-typed attribute, whatever its name (an IoT Agent's
    "position"): it was dropped without a word, as a location only counted when named so. An
    attribute named location wins; Orion's ignoreType metadata says it is not the location."""
    entity = {"id": "urn:ngsi-ld:Device:d", "type": "Device", "t": {"type": "Number", "value": 1}}
    [o] = run(v2({**entity, "position": attribute}), monkeypatch).observations
    assert o.location == location
    other = {"type": "geo:json", "value": {"type": "Point", "coordinates": [-8.5, 41.2]}}
    [o] = run(v2({**entity, "position": attribute, "location": other}), monkeypatch).observations
    assert o.location == (-8.5, 41.2)
    ignored = {**attribute, "metadata": {"ignoreType": {"type": "Boolean", "value": True}}}
    [o] = run(v2({**entity, "position": ignored}), monkeypatch).observations
    assert o.location is None


@pytest.mark.parametrize("blank", ["", " ", "\t "])
def test_blank_text_is_no_state(blank, monkeypatch) -> None:
    """An IoT Agent creates a provisioned Text attribute with " " until the device reports it:
    that blank became a state (the label " "), so a freshly provisioned device was an observation
    of state " ", and its first real state a change from it."""
    provisioned = {
        "id": "urn:ngsi-ld:Device:d",
        "type": "Device",
        "TimeInstant": {"type": "DateTime", "value": "1970-01-01T00:00:00.000Z", "metadata": {}},
        "deviceState": {"type": "Text", "value": blank, "metadata": {}},
    }
    r = run(v2(provisioned), monkeypatch)
    assert r.observations == [] and r.ignored and not r.rejections
    reading = {**provisioned, "batteryLevel": {"type": "Number", "value": 0.5}}
    reading["TimeInstant"] = {"type": "DateTime", "value": "2026-12-07T09:00:00Z"}
    [o] = run(v2(reading), monkeypatch).observations
    assert "deviceState" not in (o.labels or {})
    [o] = run(
        ld({"id": "urn:ngsi-ld:Device:d", "type": "Device", "status": blank, "t": 1}), monkeypatch
    ).observations
    assert "status" not in (o.labels or {})


@pytest.mark.parametrize(
    "epoch", ["1970-01-01T00:00:00.000Z", "1970-01-01T00:00:00Z", "1970-01-01T00:00:00+00:00"]
)
def test_an_iot_agent_s_epoch_placeholder_is_no_time(epoch, monkeypatch) -> None:
    """An IoT Agent creates a provisioned DateTime attribute with 1970-01-01T00:00:00.000Z
    (iotagent-node-lib's DATETIME_DEFAULT) until the device sends one: a WaterObserved whose
    dateObserved the device never sends had every reading timed in 1970 (and refused by the rules
    as too late), though its TimeInstant said when it was read."""
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:w",
        "type": "WaterObserved",
        "dateObserved": {"type": "DateTime", "value": epoch, "metadata": {}},
        "TimeInstant": {"type": "DateTime", "value": "2026-12-07T09:40:00.000Z", "metadata": {}},
        "height": {
            "type": "Number",
            "value": 3.2,
            "metadata": {"TimeInstant": {"type": "DateTime", "value": epoch}},
        },
    }
    [o] = run(v2(entity), monkeypatch).observations
    assert o.time == datetime(2026, 12, 7, 9, 40, tzinfo=UTC) and o.time_source == "observed"
    del entity["TimeInstant"]
    [o] = run(v2(entity), monkeypatch).observations
    assert o.time == RECEIVED and o.time_source == "received"


@pytest.mark.parametrize("text", ["N/A", "abc", "NaN", "Infinity", "12 cm", "1.2.3"])
def test_a_number_attribute_holding_other_text_is_refused_not_dropped(text, monkeypatch) -> None:
    """An NGSI-v2 Number (Integer, Float) whose value is text that is no number ("N/A" from a
    gateway) was dropped without a word: no reading, no DLQ record, no warning."""
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:w",
        "type": "WaterObserved",
        "height": {"type": "Number", "value": text},
        "flow": {"type": "Float", "value": 1.5},
    }
    r = run(v2(entity), monkeypatch)
    [o] = r.observations
    assert o.attributes == {"flow": 1.5}
    assert [(x.attribute, x.code) for x in r.rejections] == [("height", "wrong-value-type")]
    assert repr(text) in r.rejections[0].reason and any("wrong-value-type" in w for w in r.warnings)


@pytest.mark.parametrize("blank", ["", " "])
def test_a_blank_number_is_no_reading_yet(blank, monkeypatch) -> None:
    """An IoT Agent creates a provisioned Number with " " until its first reading: as null, no
    reading and no DLQ record with every notification."""
    entity = {
        "id": "d",
        "type": "Device",
        "t": {"type": "Number", "value": blank},
        "u": {"type": "Number", "value": 2},
    }
    r = run(v2(entity), monkeypatch)
    assert not r.rejections and r.observations[0].attributes == {"u": 2.0}


# -- property: a number is never lost ---------------------------------------------------------

_NAMES = st.sampled_from(["temperature", "height", "NO2", "batteryLevel", "numValue", "power:L1"])
_NUMBERS = st.one_of(st.integers(-(10**15), 10**15), st.floats(allow_nan=False, allow_infinity=False))
_TIMES = st.sampled_from([None, "2026-12-07T09:00:00Z", "2026-12-07T09:00:00.5+01:00", " ", "", "yesterday"])
_TEXTS = st.sampled_from(["N/A", "3,5", "12", "", " ", "abc", "1.5"])


@st.composite
def _v2_attribute(draw):
    """(value as sent, attribute): a number, or text under a number type, with metadata."""
    kind = draw(st.sampled_from(["Number", "Float", "Integer", "Text", "Temperature", None]))
    value = draw(_NUMBERS) if kind is None or draw(st.booleans()) else draw(_TEXTS)
    attribute: dict = {"value": value}
    if kind is not None:
        attribute["type"] = kind
    meta = {}
    time = draw(_TIMES)
    if time is not None:
        meta[draw(st.sampled_from(["TimeInstant", "observedAt", "timestamp"]))] = {
            "type": "DateTime",
            "value": time,
        }
    unit = draw(st.sampled_from([None, "CEL", " "]))
    if unit is not None:
        meta["unitCode"] = {"type": "Text", "value": unit}
    if meta or draw(st.booleans()):
        attribute["metadata"] = meta
    return value, attribute


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(_NAMES, _v2_attribute(), min_size=1, max_size=5))
def test_every_ngsi_v2_number_is_observed_as_sent_or_refused_with_a_reason(attributes) -> None:
    """Whatever the attribute type and metadata: a number is observed with exactly its value or
    refused (DLQ, with a reason); text under a number type is refused unless blank (no reading
    yet); a number never becomes a label."""
    entity = {"id": "urn:ngsi-ld:Thing:1", "type": "Thing", **{k: a for k, (v, a) in attributes.items()}}
    r = parse_payload(v2(entity), received_at=RECEIVED)
    assert r.ok
    seen: dict[str, list[float]] = {}
    labels: dict[str, str] = {}
    for o in r.observations:
        for k, v in o.attributes.items():
            seen.setdefault(k, []).append(v)
        labels.update(o.labels or {})
    refused = {x.attribute for x in r.rejections}
    for name, (value, attribute) in attributes.items():
        if type(value) is not str:
            assert seen.get(name) == [float(value)] or name in refused, (name, value, r.rejections)
            assert name not in labels
        elif attribute.get("type") in ("Number", "Float", "Integer") and value.strip():
            assert name in refused and name not in seen and name not in labels, (name, value)


def test_a_location_written_as_a_property_is_the_location(monkeypatch) -> None:
    """Smart Data Models' NGSI-LD DeviceMeasurement, AirQualityMonitoring, BikeLane and
    SeaConditions examples write location as a Property whose value is a GeoJSON geometry: the
    location was dropped without a word."""
    entity = {
        "id": "urn:ngsi-ld:DeviceMeasurement:1",
        "type": "DeviceMeasurement",
        "numValue": {"type": "Property", "value": 55.2},
        "location": {"type": "Property", "value": {"type": "Point", "coordinates": [-8.61, 41.14]}},
        "observationSpace": {"type": "Property", "value": {"type": "Point", "coordinates": [-8.5, 41.2]}},
    }
    r = run(ld(entity), monkeypatch)
    assert not r.rejections and r.observations[0].location == (-8.61, 41.14)


def test_a_geometry_orion_typed_structured_value_is_the_location(monkeypatch) -> None:
    """Orion types an object written without a type StructuredValue: a location created that way
    is notified as {"type": "StructuredValue", "value": {GeoJSON}} and was dropped without a word."""
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:w",
        "type": "WaterObserved",
        "height": {"type": "Number", "value": 1.5, "metadata": {}},
        "location": {
            "type": "StructuredValue",
            "value": {"type": "Point", "coordinates": [-8.61, 41.14]},
            "metadata": {},
        },
    }
    r = run(v2(entity), monkeypatch)
    assert not r.rejections and r.observations[0].location == (-8.61, 41.14)


@pytest.mark.parametrize("unset", ["1970-01-01T00:00:00.000Z", " ", None])
def test_an_iot_agent_ld_unset_typed_time_is_no_time(unset, monkeypatch) -> None:
    """An IoT Agent in NGSI-LD mode writes a DateTime as a typed value, its placeholder too
    ({"@type": "DateTime", "@value": "1970-01-01T00:00:00.000Z"}): it timed the readings in 1970."""
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:w",
        "type": "WaterObserved",
        "dateObserved": {"type": "Property", "value": {"@type": "DateTime", "@value": unset}},
        "TimeInstant": {
            "type": "Property",
            "value": {"@type": "DateTime", "@value": "2026-12-07T09:40:00.000Z"},
        },
        "height": {"type": "Property", "value": 3.2},
    }
    [o] = run(ld(entity), monkeypatch).observations
    assert o.time == datetime(2026, 12, 7, 9, 40, tzinfo=UTC) and o.time_source == "observed"


@st.composite
def _ld_attribute(draw):
    """(number, attribute) in each form NGSI-LD brokers send a number: keyValues, concise,
    normalized, a typed value (normalized or keyValues), one instance in an array."""
    value = draw(_NUMBERS)
    form = draw(st.sampled_from(["keyValues", "concise", "normalized", "typed", "typed-keyValues", "array"]))
    if form == "keyValues":
        return value, value
    typed = {"@value": repr(float(value)) if type(value) is float else str(value), "@type": "xsd:double"}
    if form == "typed-keyValues":
        return value, typed
    attribute: dict = {"value": typed if form == "typed" else value}
    if form != "concise":
        attribute["type"] = "Property"
    if draw(st.booleans()):
        attribute["observedAt"] = draw(
            st.sampled_from(["2026-12-07T09:00:00Z", "2026-12-07T10:00:00.25+01:00"])
        )
    if draw(st.booleans()):
        attribute["unitCode"] = "CEL"
    return value, [attribute] if form == "array" else attribute


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.dictionaries(
        st.sampled_from(["temperature", "height", "NO2", "sdm:flow", "https://w3id.org/x#level"]),
        _ld_attribute(),
        min_size=1,
        max_size=5,
    )
)
def test_every_ngsi_ld_number_is_observed_as_sent(attributes) -> None:
    entity = {"id": "urn:ngsi-ld:Thing:1", "type": "Thing", **{k: a for k, (v, a) in attributes.items()}}
    r = parse_payload(ld(entity), received_at=RECEIVED)
    assert r.ok and not r.rejections, r.rejections
    seen: dict[str, list[float]] = {}
    for o in r.observations:
        for k, v in o.attributes.items():
            seen.setdefault(k, []).append(v)
        assert not set(o.labels or {}) & {"temperature", "height", "NO2", "flow", "level"}
    for name, (value, _) in attributes.items():
        short = name.rsplit("#", 1)[-1].rsplit(":", 1)[-1]
        assert seen.get(short) == [float(value)], (name, value, seen)


def test_an_entity_deleted_notification_gives_no_readings(monkeypatch) -> None:
    """An NGSI-LD 1.8 notification whose triggerReason is entityDeleted, from a broker that does
    not write deletedAt on the entities: their last values were readings at its notifiedAt."""
    body = orjson.dumps(
        {
            "id": "urn:ngsi-ld:Notification:d",
            "type": "Notification",
            "subscriptionId": "urn:ngsi-ld:Subscription:1",
            "notifiedAt": "2026-12-07T09:59:59Z",
            "triggerReason": "entityDeleted",
            "data": [{"id": "urn:ngsi-ld:WaterObserved:gone", "type": "WaterObserved", "height": 4.6}],
        }
    )
    r = run(body, monkeypatch)
    assert r.observations == [] and not r.rejections
    assert r.ignored == ["urn:ngsi-ld:WaterObserved:gone: entity deleted (triggerReason entityDeleted)"]


# -- second reading ---------------------------------------------------------------------------


@pytest.mark.parametrize("blank", ["", " ", "\t"])
@pytest.mark.parametrize("form", ["v2", "ld-normalized", "ld-concise"])
def test_a_blank_relationship_is_no_label(form, blank, monkeypatch) -> None:
    """Blank text is no label, a relationship's target too (an IoT Agent's unset static
    relationship " "): the fast path and the general reader's inlined loop kept the label " "
    (and for NGSI-v2 the two paths disagreed: the general reader did not)."""
    if form == "v2":
        body = v2(
            {
                "id": "d",
                "type": "Device",
                "t": {"type": "Number", "value": 1},
                "refX": {"type": "Relationship", "value": blank},
            }
        )
    elif form == "ld-normalized":
        body = ld(device(t={"type": "Property", "value": 1}, refX={"type": "Relationship", "object": blank}))
    else:
        body = ld(device(t={"value": 1}, refX={"object": blank}))
    [o] = run(body, monkeypatch).observations
    assert "refX" not in (o.labels or {})


@pytest.mark.parametrize("unset", ["1970-01-01T00:00:00.000Z", " ", "", None])
def test_an_unset_v2_date_time_nested_in_a_property_is_no_time(unset, monkeypatch) -> None:
    """The nested form 4414db7 reads ({"type": "Property", "value": {"type": "DateTime", "value":
    ...}}) holding an IoT Agent's placeholder: the epoch timed the readings in 1970, a blank one
    was a bad-time warning, where the same placeholder in any other form is no time and the next
    time field (TimeInstant) is used."""
    entity = {
        "id": "urn:ngsi-ld:PhreaticObserved:1",
        "type": "PhreaticObserved",
        "dateObserved": {"type": "Property", "value": {"type": "DateTime", "value": unset}},
        "TimeInstant": {"type": "Property", "value": "2026-12-07T09:40:00Z"},
        "waterTable": {"type": "Property", "value": 12.75, "unitCode": "MTR"},
    }
    r = run(ld(entity), monkeypatch)
    assert not r.warnings and not r.rejections
    [o] = r.observations
    assert o.time == datetime(2026, 12, 7, 9, 40, tzinfo=UTC) and o.time_source == "observed"


@pytest.mark.parametrize(
    "deleted_at",
    [
        {"type": "DateTime", "value": "2026-12-01T00:00:00Z", "metadata": {}},
        {"type": "DateTime", "value": ""},
    ],
)
def test_an_ngsi_v2_attribute_named_deleted_at_does_not_delete_the_entity(deleted_at, monkeypatch) -> None:
    """deletedAt is NGSI-LD's (1.8, a deleted entity); in NGSI-v2 it is a name like any other
    (a container's soft deletion, an IoT Agent's provisioned DateTime): an entity carrying it
    was ignored as deleted, its readings lost."""
    entity = {
        "id": "urn:ngsi-ld:WasteContainer:1",
        "type": "WasteContainer",
        "fillingLevel": {"type": "Number", "value": 0.4, "metadata": {}},
        "deletedAt": deleted_at,
    }
    for body in (v2(entity), orjson.dumps(entity)):
        r = run(body, monkeypatch)
        assert not r.ignored and [o.attributes for o in r.observations] == [{"fillingLevel": 0.4}]
    kv = {"id": "urn:ngsi-ld:WasteContainer:1", "type": "WasteContainer", "fillingLevel": 0.4}
    r = run(v2({**kv, "deletedAt": "2026-12-01T00:00:00Z"}), monkeypatch)
    assert not r.ignored and [o.attributes for o in r.observations] == [{"fillingLevel": 0.4}]
    # an NGSI-LD entity with deletedAt stays a deleted one, bare or notified
    r = run(
        orjson.dumps({**kv, "deletedAt": "2026-12-07T09:00:00Z"}),
        monkeypatch,
        content_type="application/ld+json",
    )
    assert r.observations == [] and r.ignored


def test_an_entity_deleted_geojson_notification_gives_no_readings(monkeypatch) -> None:
    """The same notification to a subscription that asked for GeoJSON (Accept:
    application/geo+json, data a FeatureCollection): the deleted entities' last values were
    still readings at its notifiedAt."""
    body = orjson.dumps(
        {
            "id": "urn:ngsi-ld:Notification:d",
            "type": "Notification",
            "subscriptionId": "urn:ngsi-ld:Subscription:1",
            "notifiedAt": "2026-12-07T09:59:59Z",
            "triggerReason": "entityDeleted",
            "data": {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "id": "urn:ngsi-ld:WaterObserved:gone",
                        "geometry": {"type": "Point", "coordinates": [-8.61, 41.14]},
                        "properties": {"type": "WaterObserved", "height": {"type": "Property", "value": 4.6}},
                    },
                    "not a feature",
                ],
            },
        }
    )
    r = run(body, monkeypatch)
    assert r.observations == []
    assert r.ignored == ["urn:ngsi-ld:WaterObserved:gone: entity deleted (triggerReason entityDeleted)"]
    # what is no feature is refused as in any GeoJSON notification, not ignored as deleted
    assert [(x.code, x.detail) for x in r.rejections] == [("bad-geojson", "data.features[1]")]
    doc = orjson.loads(body)
    doc["data"] = [doc["data"]["features"][0]["properties"] | {"id": "urn:x:1"}, 7]
    r = run(orjson.dumps(doc), monkeypatch)
    assert r.observations == [] and r.ignored == ["urn:x:1: entity deleted (triggerReason entityDeleted)"]
    assert [(x.code, x.detail) for x in r.rejections] == [("not-an-entity", "data[1]")]


def test_a_notified_at_does_not_make_typed_ngsi_v2_attributes_ngsi_ld(monkeypatch) -> None:
    """0c50d68 reads a notification without "type": "Notification" but with notifiedAt as
    NGSI-LD: one whose attributes are NGSI-v2's (Number, Text, metadata: a relay or custom
    notification that adds the time) had every attribute refused as wrong-attribute-type, where
    it was read before. Attribute types NGSI-LD has not say NGSI-v2; a keyValues body still goes
    by its notifiedAt."""
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:w",
        "type": "WaterObserved",
        "height": {"type": "Number", "value": 3.2, "metadata": {}},
        "name": {"type": "Text", "value": "Ribeira", "metadata": {}},
    }
    body = orjson.dumps({"subscriptionId": "s1", "notifiedAt": "2026-12-07T09:59:59Z", "data": [entity]})
    r = run(body, monkeypatch)
    assert r.format == "ngsi-v2/notification" and not r.rejections
    [o] = r.observations
    assert o.attributes == {"height": 3.2} and o.labels == {"name": "Ribeira"}


UNLOCATED = {"type": "Feature", "geometry": None, "properties": {}}


@pytest.mark.parametrize(
    ("wrap", "location"),
    [
        ("ld", {"type": "GeoProperty", "value": UNLOCATED}),
        ("ld", {"type": "GeoProperty", "value": {"type": "FeatureCollection", "features": [UNLOCATED]}}),
        ("ld", {"type": "FeatureCollection", "features": [UNLOCATED]}),  # keyValues
        ("v2", {"type": "geo:json", "value": {"type": "FeatureCollection", "features": [UNLOCATED]}}),
        ("v2", {"type": "geo:json", "value": UNLOCATED}),
        ("v2", UNLOCATED),
    ],
)
def test_an_unlocated_feature_is_no_location_in_every_form(wrap, location, monkeypatch) -> None:
    """ddc61f8: a Feature with a null geometry is no location. As an NGSI-LD GeoProperty's value,
    or as the first feature of a FeatureCollection, it put a bad-location record ('Feature without
    a geometry') on the DLQ with every reading instead."""
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:w",
        "type": "WaterObserved",
        "height": 1.5,
        "location": location,
    }
    r = run(ld(entity) if wrap == "ld" else v2(entity), monkeypatch)
    assert not r.rejections and not r.warnings
    assert r.observations[0].location is None


@pytest.mark.parametrize(
    "location",
    [
        {"type": "Property", "value": FEATURE},
        {"value": FEATURE},  # concise
        {"value": FEATURE, "observedAt": "2026-12-07T09:00:00Z"},
    ],
)
def test_a_feature_written_as_a_property_or_concise_is_the_location(location, monkeypatch) -> None:
    """00ad32c reads a location written as a Property whose value is a geometry and ddc61f8 a
    GeoProperty whose value is a Feature; a Property or a concise location whose value is a
    Feature was still dropped without a word."""
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:w",
        "type": "WaterObserved",
        "height": 1.5,
        "location": location,
    }
    r = run(ld(entity), monkeypatch)
    assert not r.rejections and r.observations[0].location == (-8.61, 41.14)


@pytest.mark.parametrize(
    "location",
    [
        {"type": "geo:json", "value": {"type": ["Feature"]}},
        {"type": "StructuredValue", "value": {"type": {"a": 1}}},
        {"type": "Property", "value": {"type": ["Feature"]}},
        {"value": {"type": ["Feature"]}},
    ],
)
def test_a_location_whose_type_is_not_text_is_no_crash(location, monkeypatch) -> None:
    """A type that is a list or an object must never reach a set lookup (unhashable)."""
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:w",
        "type": "WaterObserved",
        "height": 1.5,
        "location": location,
    }
    for body in (v2(entity), ld(entity)):
        r = run(body, monkeypatch)
        assert [o.attributes for o in r.observations] == [{"height": 1.5}]


_FEATURE_ATTRS = st.dictionaries(
    st.sampled_from(["height", "flow", "temperature", "no2", "availableSpotNumber"]),
    st.tuples(
        st.one_of(st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6, allow_nan=False)),
        st.sampled_from([None, "2026-12-07T09:58:00Z", "2026-12-07T09:59:30.5Z"]),
        st.booleans(),  # normalized (else keyValues)
    ),
    min_size=1,
    max_size=4,
)


def _feature(n: int, attributes: dict, geometry: dict | None, id_outside: bool) -> dict:
    props: dict = {"type": "WaterObserved"}
    for name, (value, observed, normalized) in attributes.items():
        if normalized or observed:
            props[name] = {"type": "Property", "value": value}
            if observed:
                props[name]["observedAt"] = observed
        else:
            props[name] = value
    eid = f"urn:ngsi-ld:WaterObserved:feature-{n}"
    if not id_outside:
        props["id"] = eid
    feature = {"type": "Feature", "geometry": geometry, "properties": props}
    if id_outside:
        feature["id"] = eid
    return feature


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    _FEATURE_ATTRS,
    st.sampled_from([None, {"type": "Point", "coordinates": [-8.61, 41.14]}]),
    st.booleans(),
    st.sampled_from(["application/geo+json", "application/json"]),
)
def test_a_geojson_feature_alone_or_in_an_array_is_read_as_in_a_feature_collection(
    attributes, geometry, id_outside, content_type
) -> None:
    """One entity in NGSI-LD's GeoJSON representation (what ``GET /entities/{id}`` answers with
    ``Accept: application/geo+json``, forwarded by a platform) was read as an entity of type
    "Feature" with nothing to observe: ignored, answered 200, its readings lost. Alone, in an
    array or in a notification's data array, a Feature gives what it gives in a FeatureCollection."""
    feature = _feature(1, attributes, geometry, id_outside)
    other = _feature(2, attributes, geometry, id_outside)

    def outcome(doc) -> tuple:
        r = parse_payload(orjson.dumps(doc), content_type=content_type, received_at=RECEIVED)
        assert r.ok, r.rejections
        return (
            sorted(
                (o.entity, o.type, o.time, o.time_source, sorted(o.attributes.items()), o.location)
                for o in r.observations
            ),
            [x.code for x in r.rejections],
            r.ignored,
        )

    collection = outcome({"type": "FeatureCollection", "features": [feature]})
    assert collection[0] and not collection[2]  # (the reference: a FeatureCollection is read)
    assert outcome(feature) == collection
    both = outcome({"type": "FeatureCollection", "features": [feature, other]})
    assert outcome([feature, other]) == both
    notified = {"id": "urn:ngsi-ld:Notification:1", "type": "Notification", "subscriptionId": "urn:s"}
    assert outcome({**notified, "data": [feature, other]}) == both


def test_an_entity_of_a_type_named_feature_is_still_an_entity(monkeypatch) -> None:
    entity = {"id": "urn:ngsi-ld:Feature:1", "type": "Feature", "height": 3.2, "properties": {"a": 1}}
    [o] = run(orjson.dumps(entity), monkeypatch).observations
    assert (o.type, o.attributes) == ("Feature", {"height": 3.2})
