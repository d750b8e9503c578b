"""What probing the ingest with notifications as Orion, IoT Agents, Orion-LD, Scorpio and Stellio
send them found wrong (each case failed before its fix); fast and general path agree on each."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

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
