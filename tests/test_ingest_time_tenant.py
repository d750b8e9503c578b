"""The observation-time fallback (``time_source``) and the tenant headers (DESIGN.md, Observation).

Time is the attribute's ``observedAt`` (v2: ``TimeInstant`` metadata), else the entity's
``dateObserved``/``TimeInstant``; ``createdAt``/``modifiedAt`` never. Without any: the NGSI-LD
notification's ``notifiedAt``, else the reception time. ``NGSILD-Tenant``/``Fiware-Service`` and
``Fiware-ServicePath`` travel on every observation; entity identity is (tenant, id).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ingest_fastpath import FORMS, both_paths, envelope, well_formed_entity
from test_ingest_properties import entities as arbitrary_entities

from atalaia.streams.cli import main
from atalaia.streams.ingest import Deduper, encode_observation, parse_payload
from atalaia.streams.ingest.observation import TIME_SOURCES, Observation, partition_key

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
RECEIVED = datetime(2026, 1, 28, 10, 0, 5, tzinfo=UTC)
LINK = (
    "<https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld>; "
    'rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
)
TIME_NAMES = ("observedAt", "dateObserved", "observationDateTime", "dateObservedTo", "TimeInstant")
FAST = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


def _notifications() -> list[Path]:
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return sorted(p for d in ("ngsi-ld", "ngsi-v2") for p in (FIXTURES / d).glob("*/notification-*"))


def _headers(path: Path) -> dict[str, str]:
    """What the broker sends with the body (a ``*.headers`` file beside it wins, if there is one)."""
    side = path.with_name(path.name + ".headers")
    if side.exists():
        return dict(
            (k.strip(), v.strip())
            for k, _, v in (line.partition(":") for line in side.read_text().splitlines())
            if k.strip()
        )
    if path.parts[-3] == "ngsi-v2":
        attrs = "keyValues" if "keyValues" in path.name else "normalized"
        return {
            "Content-Type": "application/json",
            "Fiware-Service": "porto",
            "Fiware-ServicePath": "/hydro",
            "Ngsiv2-AttrsFormat": attrs,
        }
    if path.suffix == ".jsonld":
        return {"Content-Type": "application/ld+json", "NGSILD-Tenant": "porto"}
    return {"Content-Type": "application/json", "Link": LINK, "NGSILD-Tenant": "porto"}


def _strip_times(node):
    """The same body as a plain Orion/Orion-LD entity: no observedAt, dateObserved, TimeInstant."""
    if isinstance(node, dict):
        return {k: _strip_times(v) for k, v in node.items() if k not in TIME_NAMES}
    if isinstance(node, list):
        return [_strip_times(v) for v in node]
    return node


def _numeric_entities(doc: dict) -> set[str]:
    return {e["id"] for e in doc["data"]}  # every fixture entity has numeric measurements


@pytest.mark.parametrize("stripped", [False, True], ids=["as-sent", "no-observation-time"])
def test_every_fixture_notification_gives_one_observation_per_entity_with_its_time_source(stripped) -> None:
    for path in _notifications():
        doc = orjson.loads(path.read_bytes())
        if stripped:
            doc = _strip_times(doc)
        headers = _headers(path)
        r = parse_payload(orjson.dumps(doc), headers=headers, source="broker", received_at=RECEIVED)
        assert r.ok and r.rejections == [], (path, r.rejections)
        entities = [o.entity for o in r.observations]
        assert sorted(entities) == sorted(_numeric_entities(doc)), path  # one per entity
        ld = path.parts[-3] == "ngsi-ld"
        for o in r.observations:
            assert o.attributes and o.tenant == "porto"
            assert o.service_path == (None if ld else "/hydro")
            if not stripped:
                assert o.time_source == "observed"
            elif ld:
                notified = datetime.fromisoformat(doc["notifiedAt"])
                assert (o.time_source, o.time) == ("notified", notified)
            else:  # Orion's v2 notifications carry no notifiedAt
                assert (o.time_source, o.time) == ("received", RECEIVED)
            line = orjson.loads(encode_observation(o))
            assert line["time_source"] == o.time_source and line["tenant"] == "porto"
            assert Observation.from_json(encode_observation(o)) == o
            assert encode_observation(o) == o.to_json()


def test_sdm_examples_without_time_are_accepted_with_the_reception_time() -> None:
    if not FIXTURES.is_dir():
        pytest.skip("no shared fixtures")
    for name in ("Device/example.json", "Device/example-normalized.jsonld"):
        path = FIXTURES / "sdm" / name
        ct = "application/ld+json" if path.suffix == ".jsonld" else "application/json"
        r = parse_payload(path.read_bytes(), content_type=ct, received_at=RECEIVED)
        assert r.ok and r.rejections == [], r.rejections
        assert [(o.time, o.time_source) for o in r.observations] == [(RECEIVED, "received")]
    # dateObserved written as a Relationship: not a time -> the fallback, with a data-quality warning
    path = FIXTURES / "sdm" / "WaterObserved" / "example-normalized.jsonld"
    r = parse_payload(path.read_bytes(), content_type="application/ld+json", received_at=RECEIVED)
    assert r.rejections == [] and [o.time_source for o in r.observations] == ["received"]
    assert any("bad-time" in w and "dateObserved" in w for w in r.warnings)


# --------------------------------------------------------------------------- what real brokers send
ORION_LD = {  # Orion-LD: normalized, observedAt on some attributes only, sysAttrs, object values
    "id": "urn:ngsi-ld:Notification:65f0c1a2",
    "type": "Notification",
    "subscriptionId": "urn:ngsi-ld:Subscription:s1",
    "notifiedAt": "2024-03-12T10:31:04.118Z",
    "data": [
        {
            "id": "urn:ngsi-ld:T:1",
            "type": "T",
            "createdAt": "2024-03-12T10:30:00.000Z",
            "modifiedAt": "2024-03-12T10:31:04.000Z",
            "P1": {"type": "Property", "value": 12, "observedAt": "2024-03-12T10:29:00.000Z"},
            "P2": {"type": "Property", "value": 1.5, "createdAt": "2024-03-12T10:30:00.000Z"},
            "P3": {"type": "Property", "value": {"a": 1, "b": [1, 2]}},
            "R1": {"type": "Relationship", "object": "urn:ngsi-ld:T:2"},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-8.61, 41.14]}},
        },
        {"id": "urn:ngsi-ld:T:2", "type": "T", "P1": {"type": "Property", "value": 7}},
    ],
}


def test_orion_ld_normalized_with_observed_at_on_some_attributes_only() -> None:
    r = parse_payload(orjson.dumps(ORION_LD), headers={"NGSILD-Tenant": "t1"}, received_at=RECEIVED)
    got = [(o.entity, o.time_source, format(o.time.isoformat()), o.attributes) for o in r.observations]
    assert got == [
        ("urn:ngsi-ld:T:1", "observed", "2024-03-12T10:29:00+00:00", {"P1": 12.0}),
        ("urn:ngsi-ld:T:1", "notified", "2024-03-12T10:31:04.118000+00:00", {"P2": 1.5}),
        ("urn:ngsi-ld:T:2", "notified", "2024-03-12T10:31:04.118000+00:00", {"P1": 7.0}),
    ]
    assert r.rejections == [] and r.warnings == []
    assert {o.tenant for o in r.observations} == {"t1"}
    assert orjson.loads(encode_observation(r.observations[1]))["time"] == "2024-03-12T10:31:04.118Z"


@pytest.mark.parametrize(
    "entity",
    [
        {"id": "urn:a", "type": "T", "P1": 3},  # keyValues
        {"id": "urn:a", "type": "T", "P1": {"value": 3}},  # concise
        {"id": "urn:a", "type": "T", "P1": {"value": 3, "observedAt": "2024-03-12T10:29:00Z"}},
    ],
    ids=["keyValues", "concise", "concise-observed"],
)
def test_keyvalues_and_concise_without_time_use_notified_at(entity) -> None:
    doc = {**ORION_LD, "data": [entity]}
    (o,) = parse_payload(orjson.dumps(doc), received_at=RECEIVED).observations
    assert o.time_source == ("observed" if "observedAt" in str(entity) else "notified")


def test_geojson_notification_without_time_uses_notified_at() -> None:
    doc = {
        "id": "urn:n",
        "type": "Notification",
        "notifiedAt": "2024-03-12T10:31:04.5Z",
        "data": {
            "type": "FeatureCollection",
            "features": [
                {
                    "id": "urn:a",
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [-8.61, 41.14]},
                    "properties": {"type": "T", "P1": {"type": "Property", "value": 2}},
                }
            ],
        },
    }
    (o,) = parse_payload(orjson.dumps(doc), content_type="application/geo+json").observations
    assert (o.time_source, o.time.microsecond, o.location) == ("notified", 500000, (-8.61, 41.14))
    bare = orjson.dumps(doc["data"])  # a bare FeatureCollection has no notifiedAt: received
    (o,) = parse_payload(bare, content_type="application/geo+json", received_at=RECEIVED).observations
    assert (o.time_source, o.time) == ("received", RECEIVED)


def test_orion_v2_time_instant_metadata_and_plain_attributes() -> None:
    body = orjson.dumps(
        {
            "subscriptionId": "5b",
            "data": [
                {
                    "id": "Room1",
                    "type": "Room",
                    "temperature": {"type": "Float", "value": 23.5, "metadata": {}},
                    "pressure": {
                        "type": "Integer",
                        "value": 720,
                        "metadata": {
                            "TimeInstant": {"type": "DateTime", "value": "2024-05-01T10:00:00.000Z"}
                        },
                    },
                    "dateModified": {"type": "DateTime", "value": "2024-05-01T10:00:02.000Z", "metadata": {}},
                }
            ],
        }
    )
    headers = {"Fiware-Service": "city1", "Fiware-ServicePath": "/rooms", "Ngsiv2-AttrsFormat": "normalized"}
    r = parse_payload(body, headers=headers, received_at=RECEIVED)
    got = [(o.time_source, o.attributes, o.tenant, o.service_path) for o in r.observations]
    assert got == [
        ("observed", {"pressure": 720.0}, "city1", "/rooms"),
        ("received", {"temperature": 23.5}, "city1", "/rooms"),
    ]


def test_no_clock_at_all_still_refuses_with_missing_time() -> None:
    """A caller that gives no reception time and a payload without notifiedAt: nothing to time it by."""
    r = parse_payload(orjson.dumps({"subscriptionId": "s", "data": [{"id": "a", "type": "T", "x": 1}]}))
    assert r.observations == [] and r.rejections[0].code == "missing-time"


def test_observation_records_keep_their_time_source_and_tenant() -> None:
    rec = {"time": "2026-01-28T10:00:00Z", "entity": "e", "type": "T", "attributes": {"x": 1}}
    (o,) = parse_payload(orjson.dumps({**rec, "time_source": "received", "tenant": "b"})).observations
    assert (o.time_source, o.tenant) == ("received", "b")
    (o,) = parse_payload(orjson.dumps(rec)).observations  # a record from before: observed, no tenant
    line = orjson.loads(encode_observation(o))
    assert (line["time_source"], "tenant" in line, "service_path" in line) == ("observed", False, False)
    (o,) = parse_payload(orjson.dumps({**rec, "tenant": "b"}), headers={"Fiware-Service": "a"}).observations
    assert o.tenant == "a"  # the headers win
    r = parse_payload(orjson.dumps({**rec, "tenant": "a|b"}))
    assert r.rejections[0].code == "bad-tenant"


@pytest.mark.parametrize("bad", ["a|b", "a b", "a/b", "x" * 65, "a\x01"])
def test_tenant_headers_that_cannot_name_a_tenant_refuse_the_payload(bad) -> None:
    r = parse_payload(orjson.dumps(ORION_LD), headers={"NGSILD-Tenant": bad}, received_at=RECEIVED)
    assert not r.ok and r.rejections[0].code == "bad-tenant"


def test_same_entity_in_two_tenants_is_two_entities() -> None:
    body = orjson.dumps({**ORION_LD, "data": ORION_LD["data"][1:]})
    a, b, none = (
        parse_payload(body, headers=h, received_at=RECEIVED).observations[0]
        for h in ({"NGSILD-Tenant": "a"}, {"Fiware-Service": "b"}, {})
    )
    assert a.entity == b.entity == none.entity and a.time == b.time
    assert len({partition_key(o.__dict__) for o in (a, b, none)}) == 3
    assert partition_key(none.__dict__) == none.entity.encode()  # single tenant: the key as before
    assert len({a.id, b.id, none.id}) == 3
    assert len(Deduper().admit([a, b, none, a, b, none], now=0.0)) == 3


# --------------------------------------------------------------------------- properties
def _check_times(r) -> None:
    for o in r.observations:
        assert o.time is not None and o.time.tzinfo is not None
        assert o.time_source in TIME_SOURCES
        assert orjson.loads(encode_observation(o))["time_source"] == o.time_source


@FAST
@given(
    st.sampled_from(FORMS).flatmap(
        lambda f: st.tuples(st.just(f), st.lists(well_formed_entity(f), max_size=3))
    ),
    st.sampled_from([{}, {"NGSILD-Tenant": "a"}, {"Fiware-Service": "b", "Fiware-ServicePath": "/x"}]),
)
def test_every_accepted_entity_has_a_time_and_a_time_source(monkeypatch, case, headers) -> None:
    form, data = case
    body, kw = envelope(form, [_strip_times(e) if i % 2 else e for i, e in enumerate(data)])
    both_paths(body, monkeypatch, received_at=RECEIVED, headers=headers, **kw)
    result = parse_payload(body, received_at=RECEIVED, headers=headers, **kw)
    _check_times(result)
    assert not [x for x in result.rejections if x.code == "missing-time"]
    # every generated entity has a numeric attribute: each one yields an observation
    assert {o.entity for o in result.observations} == {e["id"] for e in data}
    tenant = headers.get("NGSILD-Tenant") or headers.get("Fiware-Service")
    assert all(o.tenant == tenant for o in result.observations)


@FAST
@given(st.lists(arbitrary_entities, max_size=4), st.sampled_from(["ld", "v2", "bare"]))
def test_arbitrary_entities_with_a_clock_are_never_refused_for_missing_time(monkeypatch, data, env) -> None:
    doc = (
        {"id": "urn:n:1", "type": "Notification", "notifiedAt": "2026-01-28T09:45:02.25Z", "data": data}
        if env == "ld"
        else {"subscriptionId": "s", "data": data}
        if env == "v2"
        else data
    )
    body = orjson.dumps(doc)
    both_paths(body, monkeypatch, received_at=RECEIVED, headers={"Fiware-Service": "t"})
    r = parse_payload(body, received_at=RECEIVED, headers={"Fiware-Service": "t"})
    _check_times(r)
    assert not [x for x in r.rejections if x.code == "missing-time"]
    for o in r.observations:
        if o.time_source == "notified":
            assert env == "ld" and o.time == datetime(2026, 1, 28, 9, 45, 2, 250000, tzinfo=UTC)
        elif o.time_source == "received":
            assert env != "ld" and o.time == RECEIVED


# --------------------------------------------------------------------------- live ingest core, CLI
def test_ingest_core_times_by_the_received_at_header_and_keys_by_tenant() -> None:
    from atalaia.streams.ingest.events import RawEvent
    from atalaia.streams.ingest.stage import IngestCore
    from atalaia.streams.settings import Settings

    core = IngestCore(Settings())
    body = orjson.dumps({"subscriptionId": "s", "data": [{"id": "urn:g", "type": "T", "x": 1.5}]})
    records = []
    for tenant in ("a", "b"):
        ev = RawEvent(
            body, "ngsi-v2", "application/json", None, "2026-01-28T10:00:05Z", {"fiware-service": tenant}
        )
        records.append(SimpleNamespace(value=ev.body, headers=ev.headers(), timestamp=0))
    outs = core.process(records, now=RECEIVED.timestamp() + 60)
    obs = [(o.key, orjson.loads(o.value)) for o in outs if o.topic == "observations"]
    assert [(k, d["tenant"], d["time"], d["time_source"]) for k, d in obs] == [
        (b"a|urn:g", "a", "2026-01-28T10:00:05Z", "received"),
        (b"b|urn:g", "b", "2026-01-28T10:00:05Z", "received"),
    ]
    # the same records redelivered (a replay after a crash) are recognised: same reception time
    assert [
        o for o in core.process(records, now=RECEIVED.timestamp() + 120) if o.topic == "observations"
    ] == []


def test_cli_ingest_parse_shows_time_source_and_tenant(tmp_path) -> None:
    f = tmp_path / "n.json"
    f.write_bytes(orjson.dumps({"subscriptionId": "s", "data": [{"id": "urn:g", "type": "T", "x": 1}]}))
    args = ["ingest", "parse", str(f), "--received", "2026-01-28T10:00:05Z"]
    res = CliRunner().invoke(main, [*args, "--tenant", "a", "--service-path", "/p"])
    assert res.exit_code == 0, res.output
    line = orjson.loads(res.stdout.splitlines()[0])
    assert (line["time"], line["time_source"], line["tenant"], line["service_path"]) == (
        "2026-01-28T10:00:05Z",
        "received",
        "a",
        "/p",
    )
    res = CliRunner().invoke(main, [*args, "-H", "Fiware-Service: b"])
    assert orjson.loads(res.stdout.splitlines()[0])["tenant"] == "b"
    res = CliRunner().invoke(main, [*args[:3], "--received", "yesterday"])
    assert res.exit_code != 0


def test_a_request_without_tenant_header_takes_its_ingest_tokens_tenant() -> None:
    """An ingest token bound to a tenant names the tenant when the broker sends no tenant header
    (the HTTP endpoint writes it as the ``auth-tenant`` event header); a tenant header wins."""
    body = orjson.dumps({**ORION_LD, "data": ORION_LD["data"][1:]})
    by_token = parse_payload(body, headers={"auth-tenant": "porto"}, received_at=RECEIVED).observations
    assert by_token and {o.tenant for o in by_token} == {"porto"}
    both = parse_payload(
        body, headers={"auth-tenant": "porto", "NGSILD-Tenant": "porto"}, received_at=RECEIVED
    ).observations
    assert [o.id for o in both] == [o.id for o in by_token]


def test_a_token_bound_to_no_tenant_cannot_name_one_in_the_body() -> None:
    """A record of the Observation contract carries its own ``tenant``. Sent with a token bound
    to no tenant (ingest auth on: the ``auth-source`` event header), it wrote into any tenant's
    gauges and incidents, which the same token naming the tenant in a header could not (403). It
    is refused now; with the tenant's own token the token's tenant wins, and without ingest auth
    (a replay of ``atalaia.observations`` through ``atalaia send``) the record's tenant holds."""
    record = {
        "time": "2026-01-28T09:45:00Z",
        "entity": "urn:ngsi-ld:WaterObserved:gaia-gauge-1",
        "type": "WaterObserved",
        "attributes": {"height": 1.0},
        "tenant": "gaia",
    }
    body = orjson.dumps([record, {**record, "tenant": None, "entity": "urn:x"}])
    r = parse_payload(body, headers={"auth-source": "demo"}, received_at=RECEIVED)
    assert [(o.entity, o.tenant) for o in r.observations] == [("urn:x", None)]
    assert [(x.code, x.entity) for x in r.rejections] == [("tenant-not-allowed", record["entity"])]
    r = parse_payload(body, headers={"auth-source": "porto", "auth-tenant": "porto"}, received_at=RECEIVED)
    assert {o.tenant for o in r.observations} == {"porto"} and not r.rejections
    r = parse_payload(body, received_at=RECEIVED)
    assert [o.tenant for o in r.observations] == ["gaia", None]


def test_both_ingest_cores_drop_a_redelivered_notification() -> None:
    """The one ingest loop: an NGSI-LD notification the broker sends again (same id and body,
    received later, so its entities timed by reception would look new) is dropped whole, by the
    ingest core and by the fused ingest + rules core alike."""
    from atalaia.detectors.config import load_config
    from atalaia.rules.fused import IngestRulesCore
    from atalaia.rules.stage import RuleFiles
    from atalaia.streams.ingest.events import RawEvent
    from atalaia.streams.ingest.stage import IngestCore
    from atalaia.streams.settings import CONFIG_DIR, Settings

    body = orjson.dumps(
        {
            "id": "urn:ngsi-ld:Notification:7",
            "type": "Notification",
            "data": [{"id": "urn:g", "type": "T", "x": {"type": "Property", "value": 1.5}}],
        }
    )

    def sent(at: str) -> SimpleNamespace:
        ev = RawEvent(body, "ngsi-ld", "application/json", None, at)
        return SimpleNamespace(value=ev.body, headers=ev.headers(), timestamp=0, topic="atalaia.events")

    one_partition = Settings(partitions=1)
    fused = IngestRulesCore(
        0, one_partition, RuleFiles([CONFIG_DIR / "rules"]), load_config(CONFIG_DIR / "detectors.yaml")
    )
    for core in (IngestCore(one_partition), fused):
        first = core.process([sent("2026-01-28T10:00:05Z")], now=RECEIVED.timestamp() + 60)
        again = core.process([sent("2026-01-28T10:00:35Z")], now=RECEIVED.timestamp() + 90)
        assert [o.topic for o in first].count("observations") == 1, type(core).__name__
        assert [o for o in again if o.topic == "observations"] == [], type(core).__name__


def test_every_stage_core_has_the_core_shape() -> None:
    """Each package's stage core answers the ``Core`` protocol of ``streams.stage`` (the sinks
    ``aprocess`` besides)."""
    from atalaia.incidents.stage import IncidentsCore, ProjectionCore
    from atalaia.notifiers.stage import DeliveryCore, EscalationCore, WarningNoticesCore
    from atalaia.rules.fused import IngestRulesCore
    from atalaia.rules.stage import RulesCore
    from atalaia.streams.ingest.stage import IngestCore
    from atalaia.warnings.stage import WarningsCore

    cores = (IngestCore, RulesCore, IngestRulesCore, IncidentsCore, ProjectionCore, EscalationCore)
    for core in (*cores, WarningNoticesCore, DeliveryCore, WarningsCore):
        assert all(callable(getattr(core, m, None)) for m in ("process", "tick", "snapshot")), core
    assert all(callable(getattr(c, "aprocess", None)) for c in (ProjectionCore, DeliveryCore))


def test_a_broker_clock_running_fast_does_not_time_readings_in_the_future() -> None:
    """notifiedAt 10 minutes ahead of the reception clock (tolerance 5): the readings without a
    time of their own keep their reception time, with a warning saying why. Before, they took
    the future notifiedAt and the rules refused every one ("ahead of the clock"): a 4.8 m river
    level raised nothing."""
    ahead = RECEIVED + timedelta(minutes=10)
    body = orjson.dumps(
        {
            "id": "urn:ngsi-ld:Notification:x",
            "type": "Notification",
            "notifiedAt": ahead.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": [
                {
                    "id": "urn:ngsi-ld:WaterObserved:skew",
                    "type": "WaterObserved",
                    "height": {"type": "Property", "value": 4.8},
                }
            ],
        }
    )
    r = parse_payload(body, received_at=RECEIVED)
    (o,) = r.observations
    assert (o.time, o.time_source) == (RECEIVED, "received")
    assert any("notifiedAt" in w and "clock runs fast" in w for w in r.warnings)
    within = orjson.loads(body) | {
        "notifiedAt": (RECEIVED + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    }
    (o,) = parse_payload(orjson.dumps(within), received_at=RECEIVED).observations
    assert o.time_source == "notified"  # within the tolerance: the broker's time, as ever


def test_a_reading_older_than_the_allowed_lateness_is_warned_about_in_the_answer() -> None:
    from atalaia.streams.ingest import IngestOptions

    opts = IngestOptions(allowed_lateness_s=300)
    old = (RECEIVED - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    fresh = (RECEIVED - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = orjson.dumps(
        [
            {"id": "urn:a", "type": "AirQualityObserved", "dateObserved": old, "no2": 40},
            {"id": "urn:b", "type": "AirQualityObserved", "dateObserved": fresh, "no2": 41},
        ]
    )
    r = parse_payload(body, received_at=RECEIVED, options=opts)
    assert len(r.observations) == 2  # accepted: the DLQ record of the rules stage says the rest
    assert [w.split(":")[0] for w in r.warnings if "late:" in w] == ["urn"]
    (late,) = [w for w in r.warnings if "late:" in w]
    assert late.startswith("urn:a: late:") and "1h behind" in late and "allowed lateness (5m)" in late


def test_a_future_time_warning_says_the_rules_will_refuse_it(monkeypatch) -> None:
    """The answer to a reading dated beyond the tolerance said only "ahead of the reception clock";
    the sender was not told that the rules put it on the DLQ (the late-reading warning says so)."""
    ahead = "2026-01-28T11:00:00Z"  # 1 h after RECEIVED
    entity = {
        "id": "urn:ngsi-ld:WaterObserved:g1",
        "type": "WaterObserved",
        "dateObserved": ahead,
        "height": 1.0,
    }
    for body in (
        orjson.dumps(
            {"id": "n1", "type": "Notification", "notifiedAt": "2026-01-28T10:00:00Z", "data": [entity]}
        ),
        orjson.dumps(
            {"time": ahead, "entity": "urn:x", "type": "WaterObserved", "attributes": {"height": 1.0}}
        ),
    ):
        for fast in (True, False):
            from atalaia.streams.ingest import fastpath

            monkeypatch.setattr(fastpath, "ENABLED", fast)
            r = parse_payload(body, content_type="application/json", received_at=RECEIVED)
            assert len(r.observations) == 1, r.rejections
            (warning,) = [w for w in r.warnings if "future-time" in w]
            assert warning.endswith("the rules will refuse it as ahead of their clock (DLQ)"), warning
