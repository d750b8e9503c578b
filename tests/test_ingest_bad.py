"""Every hostile input in ../shared/fixtures/bad -> the behaviour expected.yaml asks for.

Parametrised over expected.yaml: a new case without a specific check here fails."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from atalaia.streams.ingest import Deduper, IngestResult, dlq_record_for, parse_payload, read_dlq_record

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BAD = SHARED / "fixtures" / "bad"
if not BAD.is_dir():
    pytest.skip(
        f"shared fixtures not found at {BAD} (clone ../shared beside the repo)", allow_module_level=True
    )

CASES: dict[str, dict] = YAML(typ="safe").load((BAD / "expected.yaml").read_text())
RECEIVED = datetime(2026, 1, 28, 9, 45, 3, tzinfo=UTC)
RIBEIRA = "urn:ngsi-ld:WaterObserved:porto-douro-ribeira-001"


def parse(name: str) -> IngestResult:
    return parse_payload(
        (BAD / name).read_bytes(), content_type="application/ld+json", source="http", received_at=RECEIVED
    )


def _codes(r: IngestResult) -> set[tuple[str, str]]:
    return {(x.scope, x.code) for x in r.rejections}


def malformed(r: IngestResult) -> None:
    assert _codes(r) == {("payload", "malformed-json")}
    assert "line 33 column 28" in r.rejections[0].reason


def huge(r: IngestResult) -> None:
    assert _codes(r) == {("payload", "oversize")} and r.http_status == 413
    assert "1048576" in r.rejections[0].reason


def nan(r: IngestResult) -> None:
    assert _codes(r) == {("payload", "non-finite-number")} and "NaN" in r.rejections[0].reason


def data_not_array(r: IngestResult) -> None:
    assert _codes(r) == {("payload", "data-not-array")}


def missing_id(r: IngestResult) -> None:
    assert _codes(r) == {("entity", "missing-id")} and r.observations == []
    assert r.rejections[0].detail == "data[0]"


def non_numeric(r: IngestResult) -> None:
    assert _codes(r) == {("attribute", "number-as-text")}
    (o,) = r.observations
    assert o.attributes == {"flow": 2150.0}  # the rest of the entity still counts
    assert any("3,42" in q for q in o.quality) and any("3,42" in w for w in r.warnings)


def wrong_context(r: IngestResult) -> None:
    assert _codes(r) == {("entity", "bad-context")} and r.observations == []
    assert r.rejections[0].entity == RIBEIRA


def duplicate_keys(r: IngestResult) -> None:
    assert _codes(r) == {("entity", "duplicate-keys")} and r.observations == []
    assert "waterLevel" in r.rejections[0].reason


def wrong_attribute_type(r: IngestResult) -> None:
    assert _codes(r) == {("attribute", "wrong-attribute-type")}
    (o,) = r.observations
    assert o.attributes == {"flow": 2150.0} and r.rejections[0].attribute == "waterLevel"


def v2_number_as_string(r: IngestResult) -> None:
    assert _codes(r) == {("attribute", "number-as-text"), ("attribute", "missing-value")}
    assert {x.attribute for x in r.rejections} == {"waterLevel", "flow"}
    assert r.observations == []  # nothing numeric left in that entity


def time_without_zone(r: IngestResult) -> None:
    (o,) = r.observations
    assert o.time == datetime(2026, 1, 28, 9, 45, tzinfo=UTC)  # UTC assumed, never local time
    assert any(q.startswith("time-without-zone") for q in o.quality)
    assert any("notifiedAt" in w for w in r.warnings)


def future(r: IngestResult) -> None:
    # waterLevel observed "in 2099", flow now: one Observation per distinct observation time
    by_time = {o.time.year: o for o in r.observations}
    assert set(by_time) == {2026, 2099}
    assert by_time[2099].attributes == {"waterLevel": 3.42} and by_time[2026].attributes == {"flow": 2150.0}
    assert any(q.startswith("future-time") for q in by_time[2099].quality)
    assert not any(q.startswith("future-time") for q in by_time[2026].quality)


def latlon(r: IngestResult) -> None:
    (o,) = r.observations
    assert o.location == (41.1406, -8.6131)  # kept as sent, flagged
    assert any(q.startswith("location-swapped") for q in o.quality)


def empty(r: IngestResult) -> None:
    assert r.observations == [] and r.rejections == []


def unknown_type(r: IngestResult) -> None:
    # with every type accepted (the default), the ParkingSpot's state is an observation of its
    # own (no attributes; its status a label state rules read), the WaterObserved as always
    water, spot = r.observations
    assert water.type == "WaterObserved" and water.attributes
    assert (spot.type, spot.attributes, spot.labels, spot.time_source) == (
        "ParkingSpot",
        {},
        {"status": "free"},
        "notified",
    )
    # the lead's configuration may restrict the subscribed types
    from atalaia.streams.ingest import IngestOptions

    only = parse_payload(
        (BAD / "unknown-entity-type.json").read_bytes(),
        options=IngestOptions(accepted_types=frozenset({"WaterObserved"})),
    )
    assert len(only.observations) == 1 and any("not subscribed" in n for n in only.ignored)


def first_delivery(r: IngestResult) -> None:
    (o,) = r.observations
    assert o.attributes == {"waterLevel": 3.42, "flow": 2150.0}
    assert r.notification_id == "urn:ngsi-ld:Notification:bad-duplicate"


def redelivery(r: IngestResult) -> None:
    first = parse("duplicate-notification-1.json")
    dedup = Deduper(horizon_s=3600)
    assert dedup.admit_notification(first.notification_id, first.digest, now=RECEIVED)
    assert dedup.admit(first.observations, now=RECEIVED) == first.observations
    # the redelivery is recognised at both levels
    assert not dedup.admit_notification(r.notification_id, r.digest, now=RECEIVED)
    assert dedup.admit(r.observations, now=RECEIVED) == []


CHECKS: dict[str, Callable[[IngestResult], None]] = {
    "malformed-json.json": malformed,
    "missing-entity-id.json": missing_id,
    "non-numeric-value.json": non_numeric,
    "wrong-context-type.json": wrong_context,
    "huge-string.json": huge,
    "nan-infinity.json": nan,
    "time-without-zone.json": time_without_zone,
    "duplicate-notification-1.json": first_delivery,
    "duplicate-notification-2.json": redelivery,
    "duplicate-keys.json": duplicate_keys,
    "latlon-swapped-location.json": latlon,
    "wrong-attribute-type.json": wrong_attribute_type,
    "data-not-array.json": data_not_array,
    "empty-data.json": empty,
    "future-timestamp.json": future,
    "unknown-entity-type.json": unknown_type,
    "ngsi-v2-number-as-string.json": v2_number_as_string,
}


def test_every_bad_file_has_an_expectation() -> None:
    assert {p.name for p in BAD.glob("*.json")} == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name: str) -> None:
    expect = CASES[name]["expect"]
    body = (BAD / name).read_bytes()
    r = parse(name)
    if expect == "reject":
        assert not r.ok and r.observations == [] and r.http_status in (400, 413)
        assert r.problem()["status"] == r.http_status and r.problem()["detail"]
    elif expect == "reject_entity":
        assert r.ok and r.http_status == 200
        assert r.rejections and all(x.scope in ("entity", "attribute") for x in r.rejections)
    elif expect == "accept_with_warning":
        assert r.ok and r.rejections == [] and r.observations and r.warnings
        assert all(o.quality for o in r.observations if o.time.year != 2026 or "future" not in name)
    elif expect in ("accept", "dedupe"):
        assert r.ok and r.rejections == []
    else:
        pytest.fail(f"{name}: unknown expectation {expect!r}")
    assert name in CHECKS, f"{name}: no specific check for this case"
    CHECKS[name](r)
    # whatever is refused goes to the DLQ with the original bytes and a reason a person can read
    record = dlq_record_for(r, body, "http", content_type="application/ld+json", received_at=RECEIVED)
    if expect in ("reject", "reject_entity"):
        assert record is not None
        decoded = read_dlq_record(record)
        assert decoded["body"] == body and decoded["size"] == len(body) and decoded["source"] == "http"
        assert decoded["reasons"] and all(len(x) > 10 for x in decoded["reasons"])
        assert decoded["received_at"] == "2026-01-28T09:45:03Z"
    else:
        assert record is None
