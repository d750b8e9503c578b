"""The payload shapes real brokers send, mapping rules, DLQ record and the CLI."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from atalaia.streams.cli import main
from atalaia.streams.ingest import IngestOptions, parse_payload, read_dlq_record, to_dlq_record
from atalaia.streams.settings import Settings

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"
T = datetime(2026, 1, 28, 9, 45, tzinfo=UTC)
CTX = "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld"


def ld(*entities, **extra) -> bytes:
    return orjson.dumps(
        {
            "id": "urn:ngsi-ld:Notification:1",
            "type": "Notification",
            "subscriptionId": "urn:s",
            "notifiedAt": "2026-01-28T09:45:02Z",
            "data": list(entities),
            **extra,
        }
    )


def prop(value, **kw) -> dict:
    return {"type": "Property", "value": value, **kw}


def water(eid="urn:ngsi-ld:WaterObserved:a", **attrs) -> dict:
    return {"id": eid, "type": "WaterObserved", **attrs}


def test_context_on_the_notification_and_bad_notification_context() -> None:
    r = parse_payload(ld(water(height=prop(3.2, observedAt="2026-01-28T09:45:00Z")), **{"@context": [CTX]}))
    assert r.ok and r.observations[0].attributes == {"height": 3.2}
    r = parse_payload(ld(water(height=prop(3.2, observedAt="2026-01-28T09:45:00Z")), **{"@context": 42}))
    assert not r.ok and r.rejections[0].code == "bad-context"


def test_geojson_feature_collection_notification() -> None:
    fc = {
        "type": "FeatureCollection",
        "@context": CTX,
        "features": [
            {
                "type": "Feature",
                "id": "urn:ngsi-ld:WaterObserved:a",
                "geometry": {"type": "Point", "coordinates": [-8.61, 41.14]},
                "properties": {
                    "type": "WaterObserved",
                    "height": prop(3.2, observedAt="2026-01-28T09:45:00Z", unitCode="MTR"),
                },
            },
            {
                "type": "Feature",
                "id": "urn:ngsi-ld:WaterObserved:b",
                "geometry": None,
                "properties": {
                    "type": "WaterObserved",
                    "height": {"value": 1.5},
                    "dateObserved": "2026-01-28T09:45:00Z",
                    "location": {"type": "Point", "coordinates": [-8.57, 41.14]},
                },
            },
            {"type": "Feature", "id": "x"},
        ],
    }
    for body in (ld(**{"data": fc}), orjson.dumps(fc)):
        r = parse_payload(body, content_type="application/geo+json")
        assert r.ok and "geojson" in r.format
        a, b = r.observations
        assert (a.entity, a.attributes, a.units, a.location, a.time) == (
            "urn:ngsi-ld:WaterObserved:a",
            {"height": 3.2},
            {"height": "MTR"},
            (-8.61, 41.14),
            T,
        )
        assert (b.entity, b.attributes, b.location) == (
            "urn:ngsi-ld:WaterObserved:b",
            {"height": 1.5},
            (-8.57, 41.14),
        )
        assert [x.code for x in r.rejections] == ["bad-geojson"]


def test_ngsi_v2_simplified_bodies_without_envelope() -> None:
    normalized = {
        "id": "Room1",
        "type": "Room",
        "temperature": {
            "type": "Number",
            "value": 23.5,
            "metadata": {
                "TimeInstant": {"type": "DateTime", "value": "2026-01-28T09:45:00Z"},
                "unitCode": {"type": "Text", "value": "CEL"},
                "accuracy": {"type": "Number", "value": 0.5},
            },
        },
        "district": {"type": "Text", "value": "13"},
    }
    (o,) = parse_payload(
        orjson.dumps(normalized), headers={"Ngsiv2-AttrsFormat": "simplifiedNormalized"}
    ).observations
    assert (o.entity, o.type, o.time, o.attributes, o.units, o.labels) == (
        "Room1",
        "Room",
        T,
        {"temperature": 23.5},
        {"temperature": "CEL"},
        {"district": "13"},
    )
    key_values = {
        "id": "Room1",
        "type": "Room",
        "temperature": 23.5,
        "TimeInstant": "2026-01-28T09:45:00Z",
        "address": {"type": "PostalAddress", "addressLocality": "Porto"},
    }
    (o,) = parse_payload(orjson.dumps({"subscriptionId": "s", "data": [key_values]})).observations
    assert (o.time, o.attributes, o.labels) == (
        T,
        {"temperature": 23.5},
        {"address.addressLocality": "Porto"},
    )
    r = parse_payload(orjson.dumps({**key_values, "id": "x" * 2000}))
    assert r.observations == [] and r.rejections[0].code == "missing-id"


def test_one_entity_several_times_in_data_keeps_every_state() -> None:
    states = [
        water(height=prop(h, observedAt=f"2026-01-28T09:4{i}:00Z")) for i, h in enumerate([3.0, 3.1, 3.2])
    ]
    r = parse_payload(ld(*states))
    assert [o.attributes["height"] for o in r.observations] == [3.0, 3.1, 3.2]
    assert [o.time.minute for o in r.observations] == [40, 41, 42]


def test_distinct_observed_at_split_observations_and_sub_properties_are_not_measurements() -> None:
    e = water(
        dateObserved=prop({"@type": "DateTime", "@value": "2026-01-28T09:45:00Z"}),
        height=prop(3.2, observedAt="2026-01-28T09:30:00Z", accuracy=prop(0.1), previousValue=prop(3.0)),
        flow=prop(2150, unitCode="MQS"),
        modifiedAt="2030-01-01T00:00:00Z",
        createdAt="2030-01-01T00:00:00Z",
    )
    r = parse_payload(ld(e, notifiedAt="2031-01-01T00:00:00Z"))
    early, late = r.observations
    assert (early.time.minute, early.attributes) == (30, {"height": 3.2})
    assert (late.time, late.attributes, late.units) == (T, {"flow": 2150.0}, {"flow": "MQS"})


def test_never_created_at_or_modified_at_fallback_to_notified_at_then_received() -> None:
    e = water(height=prop(3.2), modifiedAt="2026-01-28T09:45:00Z", createdAt="2026-01-28T09:45:00Z")
    (o,) = parse_payload(ld(e), received_at=datetime(2026, 1, 28, 9, 46, tzinfo=UTC)).observations
    assert (o.time, o.time_source) == (datetime(2026, 1, 28, 9, 45, 2, tzinfo=UTC), "notified")
    body = orjson.dumps({"subscriptionId": "s", "data": [{"id": "r1", "type": "Room", "temperature": 21}]})
    (o,) = parse_payload(body, received_at=datetime(2026, 1, 28, 9, 46, tzinfo=UTC)).observations
    assert (o.time, o.time_source) == (datetime(2026, 1, 28, 9, 46, tzinfo=UTC), "received")
    # no notifiedAt and no reception clock: nothing to time it with
    r = parse_payload(body)
    assert r.observations == [] and r.rejections[0].code == "missing-time"


def test_some_attributes_without_time_get_the_fallback_time_apart() -> None:
    r = parse_payload(ld(water(height=prop(3.2, observedAt="2026-01-28T09:45:00Z"), flow=prop(7))))
    got = [(o.time, o.time_source, o.attributes) for o in r.observations]
    assert got == [
        (T, "observed", {"height": 3.2}),
        (datetime(2026, 1, 28, 9, 45, 2, tzinfo=UTC), "notified", {"flow": 7.0}),
    ]
    assert r.rejections == []


def test_expanded_uris_use_the_short_name() -> None:
    e = {
        "id": "urn:a",
        "type": "https://uri.fiware.org/ns/data-models#WaterObserved",
        "https://smartdatamodels.org/dataModel.Environment/waterLevel": prop(
            3.42, observedAt="2026-01-28T09:45:00Z"
        ),
    }
    (o,) = parse_payload(ld(e)).observations
    assert (o.type, o.attributes) == ("WaterObserved", {"waterLevel": 3.42})


def test_numbers_written_as_text_are_not_coerced_but_codes_stay_labels() -> None:
    e = {
        "id": "s1",
        "type": "WaterObserved",
        "dateObserved": "2026-01-28T09:45:00Z",
        "height": "3.42",
        "flow": 12,
        "district": "13",
        "parish": "Bonfim",
        "NO2": 40,
        "ok": True,
    }
    r = parse_payload(orjson.dumps(e))
    (o,) = r.observations
    assert o.attributes == {"flow": 12.0, "NO2": 40.0}
    assert o.labels == {"district": "13", "parish": "Bonfim", "ok": "true"}  # a boolean: a label
    assert [(x.attribute, x.code) for x in r.rejections] == [("height", "number-as-text")]


def test_multi_attribute_instances_by_dataset_id() -> None:
    e = water(
        dateObserved="2026-01-28T09:45:00Z",
        height=[prop(3.2), prop(3.3, datasetId="urn:ngsi-ld:Dataset:radar")],
    )
    (o,) = parse_payload(ld(e)).observations
    assert o.attributes == {"height": 3.2, "height:radar": 3.3}


def test_v2_geo_point_and_swapped_or_impossible_locations() -> None:
    e = {
        "id": "s",
        "type": "T",
        "h": {"type": "Number", "value": 1, "metadata": {}},
        "TimeInstant": {"type": "DateTime", "value": "2026-01-28T09:45:00Z"},
        "location": {"type": "geo:point", "value": "41.14, -8.61"},
    }
    (o,) = parse_payload(orjson.dumps({"subscriptionId": "x", "data": [e]})).observations
    assert o.location == (-8.61, 41.14) and o.quality == []
    bad = water(
        dateObserved="2026-01-28T09:45:00Z",
        h=prop(1),
        location={"type": "Point", "coordinates": [41.1, 95.0]},
    )
    r = parse_payload(ld(bad))
    assert r.observations[0].location is None and r.rejections[0].code == "bad-location"


def test_observation_contract_records() -> None:
    good = {
        "time": "2026-01-28T09:45:00Z",
        "entity": "urn:e",
        "type": "WaterObserved",
        "attributes": {"height": 3.2},
        "location": [-8.61, 41.14],
        "source": "orion-ld",
        "labels": {"district": "13"},
    }
    r = parse_payload(orjson.dumps(good))
    (o,) = r.observations
    assert r.format == "observation" and o.to_dict()["id"] == o.id and o.source == "orion-ld"
    bad = {**good, "attributes": {"height": "3.2", "flow": True, "ok": 1}}
    r = parse_payload(orjson.dumps([good, bad]))
    assert [o.attributes for o in r.observations] == [{"height": 3.2}, {"ok": 1.0}]
    assert sorted(x.code for x in r.rejections) == ["number-as-text", "wrong-value-type"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b"\xff\xfe{}", "encoding"),
        (b"\xef\xbb\xbf{}", "encoding"),
        (b"42", "unrecognised"),
        (b'"text"', "unrecognised"),
        (b"null", "unrecognised"),
        (b'{"foo": 1}', "unrecognised"),
        (b'{"type": "Notification"}', "no-data"),
        (b"[" * 5000 + b"]" * 5000, "too-deep"),
        (b'{"a": -Infinity}', "non-finite-number"),
        (b'{"type":"Notification","id":"a","id":"b","data":[]}', "duplicate-keys"),
    ],
)
def test_payload_refusals(body: bytes, code: str) -> None:
    r = parse_payload(body)
    assert not r.ok and [x.code for x in r.rejections] == [code] and r.http_status == 400


@pytest.mark.parametrize(
    ("charset", "encoding"),
    [("iso-8859-1", "latin-1"), ('"windows-1252"', "cp1252"), ("UTF-16", "utf-16"), ("utf-8", "utf-8")],
)
def test_a_declared_charset_is_read(charset: str, encoding: str) -> None:
    """An older gateway that sends Latin-1 and says so in the Content-Type: its readings are read,
    the parish name with its accents intact, not refused as "not UTF-8"."""
    reading = water(height=prop(3.2, observedAt="2026-01-28T09:45:00Z"), parish=prop("São Nicolau"))
    body = orjson.dumps(reading).decode().encode(encoding)
    r = parse_payload(body, content_type=f"application/ld+json; charset={charset}")
    assert r.ok and r.observations[0].labels["parish"] == "São Nicolau"


@pytest.mark.parametrize(
    ("charset", "reason"),
    [("klingon", "unknown charset"), ("base64", "not a text encoding"), ("utf-16", "not utf-16 text")],
)
def test_a_charset_that_cannot_be_read_is_refused(charset: str, reason: str) -> None:
    r = parse_payload(b'{"a":1}', content_type=f"application/json; charset={charset}")  # (odd: not UTF-16)
    assert not r.ok and [x.code for x in r.rejections] == ["encoding"] and reason in str(r.rejections[0])


@pytest.mark.parametrize("number", ["1e400", "-1e999", "1" + "0" * 400])
def test_a_number_beyond_a_double_refuses_its_attribute_not_the_notification(number: str) -> None:
    """One gauge's fault (a reading of 1e400) costs its attribute, not the other entities' and
    attributes' readings of the same notification; before, the whole notification was refused."""
    body = ld(
        water("urn:a", height=prop(1.5, observedAt="2026-01-28T09:45:00Z"), flow=prop(2.5)),
        water("urn:b", height=prop(3.1, observedAt="2026-01-28T09:45:00Z")),
    ).replace(b"1.5", number.encode())
    r = parse_payload(body)
    assert r.ok and {o.entity: o.attributes for o in r.observations} == {
        "urn:a": {"flow": 2.5},
        "urn:b": {"height": 3.1},
    }
    assert [(x.code, x.attribute) for x in r.rejections] == [("non-finite-number", "height")]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"a": 1e400, "b": NaN}', "non-finite-number"),  # a bare NaN is not JSON at all
        (b'{"a": 1e400, "b": "\\ud800"}', "malformed-json"),  # nor a lone surrogate
        (b'{"a": 1e400, "b": [}', "malformed-json"),
    ],
)
def test_an_overflowing_number_beside_what_is_not_json_is_still_refused(body: bytes, code: str) -> None:
    r = parse_payload(body)
    assert not r.ok and [x.code for x in r.rejections] == [code]


def test_an_integer_past_64_bits_is_read_as_a_number() -> None:
    body = ld(water(height=prop(1.5, observedAt="2026-01-28T09:45:00Z"))).replace(b"1.5", b"1" + b"0" * 20)
    r = parse_payload(body)
    assert r.ok and r.observations[0].attributes == {"height": 1e20}


def test_limits_come_from_settings() -> None:
    opts = IngestOptions.from_settings(Settings(max_payload_bytes=10, area_of_interest=(0, 0, 1, 1)))
    r = parse_payload(b'{"id": "x", "type": "T"}', options=opts)
    assert r.http_status == 413 and r.problem()["type"] == "urn:atalaia:ingest:oversize"
    assert opts.area_of_interest == (0, 0, 1, 1)


def test_dlq_record_format() -> None:
    body = b'{"broken": '
    r = parse_payload(body, content_type="application/json")
    raw = to_dlq_record(
        body,
        "mqtt",
        [str(x) for x in r.rejections],
        rejections=r.rejections,
        content_type="application/json",
        received_at=T,
        headers={"Fiware-Service": "porto"},
    )
    rec = orjson.loads(raw)
    assert rec["v"] == 1 and rec["source"] == "mqtt" and rec["received_at"] == "2026-01-28T09:45:00Z"
    assert base64.b64decode(rec["body_b64"]) == body and rec["body_preview"] == body.decode()
    assert rec["rejections"][0]["code"] == "malformed-json" and rec["headers"] == {"fiware-service": "porto"}
    assert rec["size"] == len(body) and not rec["body_truncated"]
    big = bytes(range(256)) * 10
    rec = read_dlq_record(to_dlq_record(big, "http", "too big", max_body_bytes=100))
    assert rec["body"] == big[:100] and rec["body_truncated"] and rec["size"] == len(big)
    assert rec["reasons"] == ["too big"]


@pytest.fixture
def fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return FIXTURES


def test_cli_prints_what_the_live_ingest_would(fixtures: Path) -> None:
    path = fixtures / "ngsi-ld/WaterObserved/notification-normalized.jsonld"
    res = CliRunner().invoke(main, ["ingest", "parse", str(path)])
    assert res.exit_code == 0, res.output
    lines = [orjson.loads(x) for x in res.stdout.splitlines()]
    expected = [
        orjson.loads(o.to_json()) for o in parse_payload(path.read_bytes(), source="cli").observations
    ]
    assert lines == expected and len(lines) == 2


def test_cli_refused_payload_exits_1_with_the_reason(fixtures: Path) -> None:
    res = CliRunner().invoke(main, ["ingest", "parse", str(fixtures / "bad/malformed-json.json")])
    assert res.exit_code == 1 and "malformed JSON at line 33" in res.stderr and res.stdout == ""
    res = CliRunner().invoke(main, ["ingest", "parse", str(fixtures / "bad/non-numeric-value.json")])
    assert res.exit_code == 0 and "number-as-text" in res.stderr and len(res.stdout.splitlines()) == 1


def test_cli_lines_mode_and_link(tmp_path: Path) -> None:
    f = tmp_path / "events.jsonl"
    f.write_text('{"id":"a","type":"T","h":1,"dateObserved":"2026-01-28T09:45:00Z"}\n\n{"oops"\n')
    res = CliRunner().invoke(
        main, ["ingest", "parse", str(f), "--link", f'<{CTX}>; rel="http://www.w3.org/ns/json-ld#context"']
    )
    assert (
        res.exit_code == 1 and len(res.stdout.splitlines()) == 1 and "events.jsonl:3: rejected" in res.stderr
    )


def test_ingest_batch_dedups_counts_and_fills_the_dlq(fixtures: Path) -> None:
    from atalaia.streams.ingest import Deduper, ReceivedPayload, ingest_batch

    bad = fixtures / "bad"
    names = [
        "duplicate-notification-1.json",
        "duplicate-notification-2.json",
        "malformed-json.json",
        "non-numeric-value.json",
        "empty-data.json",
    ]
    events = [
        ReceivedPayload(
            (bad / n).read_bytes(), source="http", content_type="application/ld+json", received_at=T
        )
        for n in names
    ]
    d = Deduper()
    res = ingest_batch(events, deduper=d)
    assert [o.attributes for o in res.observations] == [
        {"waterLevel": 3.42, "flow": 2150.0},
        {"flow": 2150.0},
    ]
    assert res.counts["payloads"] == 5 and res.counts["notifications_redelivered"] == 1
    assert res.counts["duplicates"] == 1 and res.counts["payloads_refused"] == 1
    assert res.counts["refused:malformed-json"] == 1 and res.counts["refused:number-as-text"] == 1
    assert len(res.dlq) == 2 and {read_dlq_record(x)["body"] for x in res.dlq} == {
        (bad / "malformed-json.json").read_bytes(),
        (bad / "non-numeric-value.json").read_bytes(),
    }
    # a worker restart restores the Deduper: the whole batch replayed yields nothing new
    again = ingest_batch(events, deduper=Deduper.restore(d.snapshot()))
    assert again.observations == [] and again.counts["duplicates"] == 3
    assert (
        again.counts["notifications_redelivered"] == 4 and len(again.dlq) == 1
    )  # malformed: no id to know it
    with pytest.raises(ValueError, match="clock"):
        ingest_batch([ReceivedPayload(b"{}")], deduper=Deduper())


def test_a_reading_sent_again_in_another_unit_is_a_new_reading_not_a_duplicate(fixtures: Path) -> None:
    """A gauge sent 1.3 in KMH (the rules refuse it: a level is no speed); its platform fixed the
    unit and sent the same reading in MTR. Entity, time and value were the observation's identity,
    so the corrected reading was dropped as a redelivery and never evaluated."""
    from atalaia.streams.ingest import Deduper, ReceivedPayload, ingest_batch

    doc = orjson.loads(
        (fixtures / "ngsi-ld" / "WaterObserved" / "notification-normalized.jsonld").read_bytes()
    )
    doc["data"] = doc["data"][:1]
    del doc["data"][0]["flow"]

    def sent(code: str, n: int) -> ReceivedPayload:
        doc["id"] = f"urn:ngsi-ld:Notification:{n}"
        doc["data"][0]["waterLevel"]["unitCode"] = code
        return ReceivedPayload(
            orjson.dumps(doc), source="http", content_type="application/ld+json", received_at=T
        )

    d = Deduper()
    first = ingest_batch([sent("KMH", 1)], deduper=d).observations
    fixed = ingest_batch([sent("MTR", 2)], deduper=d).observations
    assert [o.units for o in fixed] == [{"waterLevel": "MTR"}], "the corrected reading is kept"
    assert first[0].id != fixed[0].id and first[0].to_dict()["id"] == first[0].id
    again = ingest_batch([sent("MTR", 3)], deduper=d)
    assert again.observations == [] and again.counts["duplicates"] == 1, "a redelivery is still one"


def test_non_text_observed_at_is_refused_not_ignored() -> None:
    r = parse_payload(ld(water(dateObserved="2026-01-28T09:45:00Z", height=prop(3.2, observedAt=1706435100))))
    assert r.observations == [] and [(x.attribute, x.code) for x in r.rejections] == [("height", "bad-time")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-28T09:45:00Z", (T, True)),
        ("2026-01-28T09:45:00.000Z", (T, True)),
        ("2026-01-28T10:45:00+01:00", (T, True)),
        ("2026-01-28T10:45:00+0100", (T, True)),
        ("2026-01-28 09:45:00", (T, False)),
        ("2026-01-28T09:45", (T, False)),
        ("2026-01-28T09:40:00Z/2026-01-28T09:45:00Z", (T, True)),
        ("2026-01-28", None),
        ("yesterday", None),
        ("2026-01-28T24:00:00Z", None),
        ("0099-01-01T00:00:00Z", None),
        ("2026-01-28T09:45:00Z" + " " * 100, None),
        ("9999-12-31T23:59:59-05:00", None),
    ],
)
def test_observation_time_formats(text: str, expected) -> None:
    from atalaia.streams.ingest.timeparse import parse_observation_time

    pt = parse_observation_time(text)
    if expected is None:
        assert pt.time is None and pt.error
    else:
        assert (pt.time, pt.zoned) == expected


def test_lower_case_t_and_z_are_rfc3339_times() -> None:
    """RFC 3339 (5.6, note) allows ``t`` and ``z``; Python reads only upper case, so a sensor
    writing ``2026-12-06t17:23:10z`` lost its reading to the DLQ as bad-time."""
    from atalaia.streams.ingest.timeparse import parse_observation_time

    for text in ("2026-12-06t17:23:10z", "2026-12-06T17:23:10z", "2026-12-06t17:23:10+00:00"):
        p = parse_observation_time(text)
        assert (p.time, p.zoned) == (datetime(2026, 12, 6, 17, 23, 10, tzinfo=UTC), True), text


def test_a_v2_number_with_a_null_value_is_no_reading_yet_not_an_error() -> None:
    """Orion keeps an attribute an IoT Agent created with ``"value": null`` until the first reading:
    each notification put it on the DLQ as missing-value. A null is no reading; a Number without
    any value is still refused."""
    entity = {
        "id": "W1",
        "type": "WaterObserved",
        "height": {"type": "Number", "value": None, "metadata": {}},
        "flow": {"type": "Number", "value": 3.2, "metadata": {}},
        "dateObserved": {"type": "DateTime", "value": "2026-12-06T10:00:00Z"},
    }
    r = parse_payload(orjson.dumps({"subscriptionId": "s", "data": [entity]}))
    assert r.rejections == [] and [o.attributes for o in r.observations] == [{"flow": 3.2}]
    del entity["height"]["value"]
    r = parse_payload(orjson.dumps({"subscriptionId": "s", "data": [entity]}))
    assert [(x.attribute, x.code) for x in r.rejections] == [("height", "missing-value")]


def test_a_name_in_several_languages_is_one_label() -> None:
    """An NGSI-LD LanguageProperty ``name`` (Stellio, Orion-LD 1.6) lost its label, so summaries
    read the entity id; the label is its pt-PT (else pt, en-GB, en, else first) text."""
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:r1",
        "type": "WaterObserved",
        "name": {"type": "LanguageProperty", "languageMap": {"en": "Ribeira quay", "pt": "Cais da Ribeira"}},
        "height": {"type": "Property", "value": 3.1, "observedAt": "2026-12-06T10:00:00Z"},
    }
    body = {"id": "urn:n", "type": "Notification", "notifiedAt": "2026-12-06T10:00:01Z", "data": [entity]}
    (o,) = parse_payload(orjson.dumps(body), content_type="application/ld+json").observations
    assert o.labels == {"name": "Cais da Ribeira"}


def test_an_ngsi_ld_mqtt_notification_is_unwrapped() -> None:
    """Orion-LD and Scorpio publish MQTT notifications as ``{"metadata": {headers}, "body":
    notification}`` (the NGSI-LD MQTT binding). The whole message was refused as unrecognised
    JSON, so every MQTT notification went to the DLQ."""
    notification = orjson.loads(ld(water(height=prop(3.2, observedAt="2026-01-28T09:45:00Z"))))
    meta = {
        "Content-Type": "application/json",
        "Link": f'<{CTX}>; rel="http://www.w3.org/ns/json-ld#context"',
    }
    r = parse_payload(orjson.dumps({"metadata": {**meta, "NGSILD-Tenant": "porto"}, "body": notification}))
    assert r.ok and r.format == "ngsi-ld/notification"
    assert [(o.entity, o.tenant, o.attributes) for o in r.observations] == [
        ("urn:ngsi-ld:WaterObserved:a", "porto", {"height": 3.2})
    ]
    # a header of the request wins over the metadata; an ingest token's tenant may not be widened
    r = parse_payload(
        orjson.dumps({"metadata": {"NGSILD-Tenant": "gaia"}, "body": notification}),
        headers={"NGSILD-Tenant": "porto"},
    )
    assert {o.tenant for o in r.observations} == {"porto"}
    r = parse_payload(
        orjson.dumps({"metadata": {"NGSILD-Tenant": "gaia", "auth-tenant": "gaia"}, "body": notification}),
        headers={"auth-source": "orion-porto", "auth-tenant": "porto"},
    )
    assert not r.ok and [x.code for x in r.rejections] == ["tenant-not-allowed"]
    r = parse_payload(orjson.dumps({"metadata": "x", "body": notification}))
    assert not r.ok and [x.code for x in r.rejections] == ["unrecognised"]


@pytest.mark.parametrize(
    "value",
    [
        {"@value": 3.6, "@type": "xsd:double"},
        {"@value": "3.6", "@type": "http://www.w3.org/2001/XMLSchema#double"},  # RDF's usual form
        {"@value": "3.6", "@type": "xsd:decimal"},
    ],
)
def test_a_json_ld_typed_number_is_a_measurement(value: dict, monkeypatch) -> None:
    from test_ingest_fastpath import both_paths

    body = ld(water(height={"type": "Property", "value": value, "observedAt": "2026-01-28T09:45:00Z"}))
    both_paths(body, monkeypatch)
    assert [o.attributes for o in parse_payload(body).observations] == [{"height": 3.6}]


def test_a_null_context_is_valid_json_ld() -> None:
    r = parse_payload(ld(water(height=prop(3.2, observedAt="2026-01-28T09:45:00Z")), **{"@context": None}))
    assert r.ok and r.observations[0].attributes == {"height": 3.2}


def test_a_device_s_date_last_value_reported_times_its_readings() -> None:
    """A Smart Data Models Device says when its values were reported in dateLastValueReported;
    its readings were timed by their reception."""
    device = {
        "id": "urn:ngsi-ld:Device:1",
        "type": "Device",
        "batteryLevel": 0.5,
        "dateLastValueReported": "2026-01-28T09:40:00Z",
    }
    (o,) = parse_payload(orjson.dumps(device), received_at=T).observations
    assert (o.time, o.time_source) == (datetime(2026, 1, 28, 9, 40, tzinfo=UTC), "observed")


def test_compact_iri_names_are_their_terms(monkeypatch) -> None:
    """A broker compacts names with the prefixes of the subscription's @context (``sdm:height``,
    ``fiware:WaterObserved``): kept as sent, no rule on ``height`` or ``WaterObserved`` saw them."""
    from test_ingest_fastpath import both_paths

    entity = {
        "id": "urn:ngsi-ld:WaterObserved:c",
        "type": "fiware:WaterObserved",
        "sdm:height": {"type": "Property", "value": 3.1, "observedAt": "2026-01-28T09:45:00Z"},
        "sdm:parish": {"type": "Property", "value": "Campanhã"},
    }
    both_paths(ld(entity), monkeypatch)
    (o,) = parse_payload(ld(entity)).observations
    assert (o.type, o.attributes, o.labels) == ("WaterObserved", {"height": 3.1}, {"parish": "Campanhã"})
    assert parse_payload(ld({**entity, "type": "urn:x:T"})).observations[0].type == "urn:x:T"  # not a CURIE


def test_a_compact_iri_type_is_its_term_on_both_paths(monkeypatch) -> None:
    from test_ingest_fastpath import both_paths

    entity = {
        "id": "urn:W:1",
        "type": "fiware:WaterObserved",
        "height": {"type": "Property", "value": 1.0, "observedAt": "2026-01-28T09:45:00Z"},
    }
    both_paths(ld(entity), monkeypatch)
    assert parse_payload(ld(entity)).observations[0].type == "WaterObserved"
