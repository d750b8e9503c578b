"""Every NGSI-LD / NGSI-v2 notification and Smart Data Models example -> the expected Observations."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from atalaia.streams.ingest import encode_observation, parse_payload
from atalaia.streams.ingest.observation import Observation

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"
if not FIXTURES.is_dir():
    pytest.skip(
        f"shared fixtures not found at {FIXTURES} (clone ../shared beside the repo)", allow_module_level=True
    )

LINK = (
    "<https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld>; "
    'rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
)
T_WATER = datetime(2026, 1, 28, 9, 45, tzinfo=UTC)
T_AIR = datetime(2026, 1, 28, 10, 0, tzinfo=UTC)
RIBEIRA = (-8.6131, 41.1406)
FREIXO = (-8.5735, 41.1448)
BOAVISTA = (-8.6253, 41.158)
AQ_LD = {
    "temperature": 11.8,
    "relativeHumidity": 0.87,
    "no2": 68.0,
    "pm10": 54.0,
    "pm25": 31.0,
    "o3": 22.0,
    "co": 0.6,
    "airQualityIndex": 4.0,
    "reliability": 0.9,
}
AQ_LD_UNITS = {
    "temperature": "CEL",
    "relativeHumidity": "C62",
    "no2": "GQ",
    "pm10": "GQ",
    "pm25": "GQ",
    "o3": "GQ",
    "co": "GP",
}
AQ_V2 = {"temperature": 11.8, "relativeHumidity": 0.87, "no2": 68.0, "pm10": 54.0, "pm25": 31.0}
WATER_UNITS = {"waterLevel": "MTR", "flow": "MQS"}

# file -> [(entity, type, time, attributes, units, location)]
EXPECTED: dict[str, list[tuple]] = {
    "ngsi-ld/WaterObserved/notification-normalized.jsonld": [
        (
            "urn:ngsi-ld:WaterObserved:porto-douro-ribeira-001",
            "WaterObserved",
            T_WATER,
            {"waterLevel": 3.42, "flow": 2150.0},
            WATER_UNITS,
            RIBEIRA,
        ),
        (
            "urn:ngsi-ld:WaterObserved:porto-douro-freixo-002",
            "WaterObserved",
            T_WATER,
            {"waterLevel": 3.71, "flow": 2180.0},
            WATER_UNITS,
            FREIXO,
        ),
    ],
    "ngsi-ld/WaterObserved/notification-concise.json": [
        (
            "urn:ngsi-ld:WaterObserved:porto-douro-ribeira-001",
            "WaterObserved",
            T_WATER,
            {"waterLevel": 3.42, "flow": 2150.0},
            WATER_UNITS,
            RIBEIRA,
        ),
        (
            "urn:ngsi-ld:WaterObserved:porto-douro-freixo-002",
            "WaterObserved",
            T_WATER,
            {"waterLevel": 3.71, "flow": 2180.0},
            WATER_UNITS,
            FREIXO,
        ),
    ],
    "ngsi-ld/WaterObserved/notification-keyValues.json": [
        (
            "urn:ngsi-ld:WaterObserved:porto-douro-ribeira-001",
            "WaterObserved",
            T_WATER,
            {"waterLevel": 3.42, "flow": 2150.0},
            {},
            RIBEIRA,
        ),
        (
            "urn:ngsi-ld:WaterObserved:porto-douro-freixo-002",
            "WaterObserved",
            T_WATER,
            {"waterLevel": 3.71, "flow": 2180.0},
            {},
            FREIXO,
        ),
    ],
    "ngsi-ld/AirQualityObserved/notification-normalized.jsonld": [
        (
            "urn:ngsi-ld:AirQualityObserved:porto-boavista-aq-01",
            "AirQualityObserved",
            T_AIR,
            AQ_LD,
            AQ_LD_UNITS,
            BOAVISTA,
        )
    ],
    "ngsi-ld/AirQualityObserved/notification-concise.json": [
        (
            "urn:ngsi-ld:AirQualityObserved:porto-boavista-aq-01",
            "AirQualityObserved",
            T_AIR,
            AQ_LD,
            AQ_LD_UNITS,
            BOAVISTA,
        )
    ],
    "ngsi-ld/AirQualityObserved/notification-keyValues.json": [
        (
            "urn:ngsi-ld:AirQualityObserved:porto-boavista-aq-01",
            "AirQualityObserved",
            T_AIR,
            AQ_LD,
            {},
            BOAVISTA,
        )
    ],
    "ngsi-v2/WaterObserved/notification-normalized.json": [
        (
            "WaterObserved:porto-douro-ribeira-001",
            "WaterObserved",
            T_WATER,
            {"waterLevel": 3.42, "flow": 2150.0},
            WATER_UNITS,
            RIBEIRA,
        )
    ],
    "ngsi-v2/WaterObserved/notification-keyValues.json": [
        (
            "WaterObserved:porto-douro-ribeira-001",
            "WaterObserved",
            T_WATER,
            {"waterLevel": 3.42, "flow": 2150.0},
            {},
            RIBEIRA,
        )
    ],
    "ngsi-v2/AirQualityObserved/notification-normalized.json": [
        (
            "AirQualityObserved:porto-boavista-aq-01",
            "AirQualityObserved",
            T_AIR,
            AQ_V2,
            {"temperature": "CEL", "no2": "GQ", "pm10": "GQ", "pm25": "GQ"},
            BOAVISTA,
        )
    ],
    "ngsi-v2/AirQualityObserved/notification-keyValues.json": [
        ("AirQualityObserved:porto-boavista-aq-01", "AirQualityObserved", T_AIR, AQ_V2, {}, BOAVISTA)
    ],
}

MADRID = (-3.712247222222222, 40.423852777777775)
T_MADRID = datetime(2016, 3, 15, 11, 0, tzinfo=UTC)
AQ_SDM = {
    "co": 500.0,
    "no": 45.0,
    "nox": 139.0,
    "so2": 11.0,
    "airQualityIndex": 65.0,
    "relativeHumidity": 0.54,
    "reliability": 0.7,
    "temperature": 12.2,
    "windSpeed": 0.64,
}
AQ_SDM_UNITS = {"co": "GP", "no": "GQ", "no2": "GQ", "nox": "GQ", "so2": "GQ"}
AQ_SDM_EXTRA = {"pm4": 37.0, "tpc": 108.0, "tsp": 73.3, "pressure": 1.1, "charge": 5.0}
FLOOD = {
    "alertLevel": 10.0,
    "measuredDistance": 3.22,
    "currentLevel": 0.98,
    "dangerLevel": 25.0,
    "referenceLevel": 4.2,
}
FLOOD_N = {
    "alertLevel": 11.0,
    "measuredDistance": 4.22,
    "currentLevel": 1.98,
    "dangerLevel": 26.0,
    "referenceLevel": 4.2,
}
T_FLOOD = datetime(2020, 9, 16, 8, 0, tzinfo=UTC)  # 13:30+05:30
NOISE = {"LAS": 91.6, "LAeq": 67.8, "LAeq_d": 65.4, "LAmax": 94.5}
VITORIA = (-2.698, 42.8491)
T_NOISE = datetime(2016, 12, 28, 12, 0, tzinfo=UTC)  # end of the dateObservedFrom/To period
TRAFFIC = {
    "averageHeadwayTime": 0.5,
    "averageVehicleLength": 9.87,
    "averageVehicleSpeed": 52.6,
    "intensity": 197.0,
    "laneId": 1.0,
    "occupancy": 0.76,
}
T_TRAFFIC_END = datetime(2016, 12, 7, 11, 15, tzinfo=UTC)  # interval "11:10/11:15" -> its end
VALLADOLID_MEAN = (
    (-4.73735395519672 - 4.73414858659993 - 4.73447575302641) / 3,
    (41.6538181849672 + 41.6600594193478 + 41.659585195093) / 3,
)
WATER_SDM = {
    "flow": 12.0,
    "height": 3.52,
    "measuredArea": 250.0,
    "objectArea": 35.0,
    "objectHeightAverage": 1.75,
    "objectHeightMax": 2.25,
    "objectVolume": 17.5,
}
T_NICE = datetime(2020, 3, 17, 8, 45, 0, 209000, tzinfo=UTC)
NICE_AS_SENT = (43.66481, 7.196545)

SDM: dict[str, list[tuple]] = {
    "AirQualityObserved/example.json": [
        (
            "Madrid-AmbientObserved-28079004-2016-03-15T11:00:00",
            "AirQualityObserved",
            T_MADRID,
            {**AQ_SDM, **AQ_SDM_EXTRA, "co2": 69.0, "precipitation": 0.0, "windDirection": 176.0},
            {},
            MADRID,
        )
    ],
    "AirQualityObserved/example-normalized.json": [
        (
            "Madrid-AmbientObserved-28079004-2016-03-15T11:00:00",
            "AirQualityObserved",
            T_MADRID,
            {**AQ_SDM, **AQ_SDM_EXTRA, "no2": 69.0, "windDirection": 176.0},
            AQ_SDM_UNITS,
            MADRID,
        )
    ],
    "AirQualityObserved/example.jsonld": [
        (
            "urn:ngsi-ld:AirQualityObserved:Madrid-AmbientObserved-28079004-2016-03-15T11:00:00",
            "AirQualityObserved",
            T_MADRID,
            {**AQ_SDM, "no2": 69.0, "precipitation": 0.0, "windDirection": 180.0},
            {},
            MADRID,
        )
    ],
    "AirQualityObserved/example-normalized.jsonld": [
        (
            "urn:ngsi-ld:AirQualityObserved:Madrid-AmbientObserved-28079004-2016-03-15T11:00:00",
            "AirQualityObserved",
            T_MADRID,
            {**AQ_SDM, **AQ_SDM_EXTRA, "no2": 69.0, "precipitation": 0.0, "windDirection": 186.0},
            AQ_SDM_UNITS,
            MADRID,
        )
    ],
    "FloodMonitoring/example.json": [
        ("urn:ngsi-ld:FloodMonitoring:Pune-NoiseLevelObserved", "FloodMonitoring", T_FLOOD, FLOOD, {}, None)
    ],
    "FloodMonitoring/example.jsonld": [
        ("urn:ngsi-ld:FloodMonitoring:Pune-NoiseLevelObserved", "FloodMonitoring", T_FLOOD, FLOOD, {}, None)
    ],
    "FloodMonitoring/example-normalized.json": [
        ("urn:ngsi-ld:FloodMonitoring:Pune-NoiseLevelObserved", "FloodMonitoring", T_FLOOD, FLOOD_N, {}, None)
    ],
    "FloodMonitoring/example-normalized.jsonld": [
        (
            "urn:ngsi-ld:FloodMonitoring:Pune-NoiseLevelObserved",
            "FloodMonitoring",
            T_FLOOD,
            FLOOD_N,
            dict.fromkeys(FLOOD_N, "MTR"),
            None,
        )
    ],
    "NoiseLevelObserved/example.json": [
        (
            "Vitoria-NoiseLevelObserved-2016-12-28T11:00:00_2016-12-28T12:00:00",
            "NoiseLevelObserved",
            T_NOISE,
            NOISE,
            {},
            VITORIA,
        )
    ],
    "NoiseLevelObserved/example-normalized.json": [
        (
            "Vitoria-NoiseLevelObserved-2016-12-28T11:00:00_2016-12-28T12:00:00",
            "NoiseLevelObserved",
            T_NOISE,
            NOISE,
            {},
            VITORIA,
        )
    ],
    "NoiseLevelObserved/example.jsonld": [
        (
            "urn:ngsi-ld:NoiseLevelObserved:Vitoria-NoiseLevelObserved-2016-12-28T11:00:00_2016-12-28T12:00:00",
            "NoiseLevelObserved",
            T_NOISE,
            NOISE,
            {},
            VITORIA,
        )
    ],
    "NoiseLevelObserved/example-normalized.jsonld": [
        (
            "urn:ngsi-ld:NoiseLevelObserved:Vitoria-NoiseLevelObserved-2016-12-28T11:00:00_2016-12-28T12:00:00",
            "NoiseLevelObserved",
            T_NOISE,
            NOISE,
            {},
            VITORIA,
        )
    ],
    "TrafficFlowObserved/example.json": [
        (
            "TrafficFlowObserved-Valladolid-osm-60821110",
            "TrafficFlowObserved",
            T_TRAFFIC_END,
            TRAFFIC,
            {},
            VALLADOLID_MEAN,
        )
    ],
    "TrafficFlowObserved/example-normalized.json": [
        (
            "TrafficFlowObserved-Valladolid-osm-60821110",
            "TrafficFlowObserved",
            T_TRAFFIC_END,
            TRAFFIC,
            {},
            VALLADOLID_MEAN,
        )
    ],
    "TrafficFlowObserved/example.jsonld": [
        (
            "urn:ngsi-ld:TrafficFlowObserved:TrafficFlowObserved-Valladolid-osm-60821110",
            "TrafficFlowObserved",
            T_TRAFFIC_END,
            TRAFFIC,
            {},
            VALLADOLID_MEAN,
        )
    ],
    # this official example writes dateObserved as a bare start "11:10:00" (no interval)
    "TrafficFlowObserved/example-normalized.jsonld": [
        (
            "urn:ngsi-ld:TrafficFlowObserved:TrafficFlowObserved-Valladolid-osm-60821110",
            "TrafficFlowObserved",
            datetime(2016, 12, 7, 11, 10, tzinfo=UTC),
            TRAFFIC,
            {},
            VALLADOLID_MEAN,
        )
    ],
    "WaterObserved/example.json": [
        (
            "WaterObserved:MNCA-001",
            "WaterObserved",
            T_NICE,
            {**WATER_SDM, "waterLevel": 2.4, "waterDischarge": 3.0},
            {},
            NICE_AS_SENT,
        )
    ],
    "WaterObserved/example-normalized.json": [
        (
            "WaterObserved:MNCA-001",
            "WaterObserved",
            T_NICE,
            {**WATER_SDM, "waterLevel": 2.4, "waterDischarge": 3.0},
            {},
            NICE_AS_SENT,
        )
    ],
    "WaterObserved/example.jsonld": [
        ("uri:ngsi:WaterObserved:MNCA-001", "WaterObserved", T_NICE, WATER_SDM, {}, NICE_AS_SENT)
    ],
    # dateObserved written as a Relationship: no usable observation time -> the entity is refused
    "WaterObserved/example-normalized.jsonld": [],
    # Alert has no numeric attribute: nothing to observe (not an error)
    "Alert/example.json": [],
    "Alert/example.jsonld": [],
    "Alert/example-normalized.json": [],
    "Alert/example-normalized.jsonld": [],
    # Device has measurements (batteryLevel, rssi) but no observation time: refused
    "Device/example.json": [],
    "Device/example.jsonld": [],
    "Device/example-normalized.json": [],
    "Device/example-normalized.jsonld": [],
}
SDM_REFUSED = {  # file -> (scope, code) of the rejection expected
    "WaterObserved/example-normalized.jsonld": ("entity", "missing-time"),
    "Device/example.json": ("entity", "missing-time"),
    "Device/example.jsonld": ("entity", "missing-time"),
    "Device/example-normalized.json": ("entity", "missing-time"),
    "Device/example-normalized.jsonld": ("entity", "missing-time"),
    "FloodMonitoring/example-normalized.jsonld": ("attribute", "wrong-attribute-type"),
}


def _content_type(path: Path) -> str:
    return "application/ld+json" if path.suffix == ".jsonld" else "application/json"


def _check(observations: list[Observation], expected: list[tuple]) -> None:
    got = [(o.entity, o.type, o.time, o.attributes, o.units, o.location) for o in observations]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g[:3] == e[:3]
        assert g[3] == pytest.approx(e[3])
        assert set(g[3]) == set(e[3])
        assert g[4] == e[4]
        if e[5] is None:
            assert g[5] is None
        else:
            assert g[5] == pytest.approx(e[5])


def test_every_notification_fixture_is_listed() -> None:
    found = {
        str(p.relative_to(FIXTURES))
        for d in ("ngsi-ld", "ngsi-v2")
        for p in (FIXTURES / d).glob("*/notification-*")
    }
    assert found == set(EXPECTED)


def test_every_sdm_example_is_listed() -> None:
    found = {str(p.relative_to(FIXTURES / "sdm")) for p in (FIXTURES / "sdm").glob("*/example*.json*")}
    assert found == set(SDM)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notification_fixture(name: str) -> None:
    path = FIXTURES / name
    link = LINK if path.suffix == ".json" and name.startswith("ngsi-ld") else None
    r = parse_payload(
        path.read_bytes(),
        content_type=_content_type(path),
        link=link,
        source="orion-ld",
        received_at=datetime(2026, 1, 28, 10, 0, 5, tzinfo=UTC),
    )
    assert r.ok and r.rejections == [] and r.warnings == []
    assert r.format == ("ngsi-ld/notification" if name.startswith("ngsi-ld") else "ngsi-v2/notification")
    _check(r.observations, EXPECTED[name])
    assert all(o.source == "orion-ld" and o.quality == [] for o in r.observations)
    for o in r.observations:  # the contract survives a JSON round trip unchanged
        assert Observation.from_json(o.to_json()) == o
        assert encode_observation(o) == o.to_json()


def test_labels_carry_text_properties() -> None:
    r = parse_payload((FIXTURES / "ngsi-ld/WaterObserved/notification-normalized.jsonld").read_bytes())
    labels = r.observations[0].labels
    assert labels["name"] == "Douro - Cais da Ribeira"
    assert labels["areaServed"] == "Porto - Ribeira"
    assert labels["address.addressLocality"] == "Porto"
    assert labels["refDevice"] == "urn:ngsi-ld:Device:porto-douro-ribeira-radar-01"
    assert "dateObserved" not in labels and "location" not in labels
    r = parse_payload((FIXTURES / "ngsi-ld/AirQualityObserved/notification-concise.json").read_bytes())
    assert r.observations[0].labels["airQualityLevel"] == "poor"
    assert r.observations[0].labels["typeOfLocation"] == "outdoor"


@pytest.mark.parametrize("name", sorted(SDM))
def test_sdm_example(name: str) -> None:
    path = FIXTURES / "sdm" / name
    r = parse_payload(path.read_bytes(), content_type=_content_type(path), source="sdm")
    assert r.ok
    _check(r.observations, SDM[name])
    codes = {(x.scope, x.code) for x in r.rejections}
    if name in SDM_REFUSED:
        assert SDM_REFUSED[name] in codes
    else:
        assert codes == set()
    if name.startswith("Alert/"):
        assert r.ignored and "nothing to observe" in r.ignored[0]


def test_sdm_quality_flags() -> None:
    def quality(name: str) -> list[str]:
        return parse_payload((FIXTURES / "sdm" / name).read_bytes()).observations[0].quality

    assert any(q.startswith("time-without-zone") for q in quality("AirQualityObserved/example.json"))
    assert any(q.startswith("location-outside-area") for q in quality("AirQualityObserved/example.json"))
    assert any(
        q.startswith("location-geometry: LineString") for q in quality("TrafficFlowObserved/example.json")
    )
    assert quality("FloodMonitoring/example.json") == []


def test_subscriptions_are_not_notifications() -> None:
    for path in [
        *FIXTURES.glob("ngsi-ld/subscription-*.json"),
        *FIXTURES.glob("ngsi-v2/subscription-*.json"),
    ]:
        r = parse_payload(path.read_bytes())
        assert not r.ok and r.http_status == 400
        assert r.rejections[0].code == "not-a-notification"
