"""Ingest on the real broker: HTTP notifications, MQTT, `atalaia send`, the DLQ, and a worker
that is killed mid-stream."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from ruamel.yaml import YAML

from atalaia.streams.ingest import Deduper, parse_payload, read_dlq_record
from atalaia.streams.ingest.observation import Observation
from tests.conftest import ATALAIA, consume_all, shared_path

pytestmark = pytest.mark.broker

LINK = (
    "<https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld>; "
    'rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
)


def fixture_requests() -> list[tuple[Path, str, dict[str, str]]]:
    """(file, endpoint path, headers) for every valid fixture, as a real broker would send it."""
    out = []
    fx = shared_path("fixtures")
    for f in sorted((fx / "ngsi-ld").glob("*/notification-*")):
        if f.suffix == ".jsonld":
            out.append((f, "/ngsi-ld/notify", {"Content-Type": "application/ld+json"}))
        else:
            out.append((f, "/ngsi-ld/notify", {"Content-Type": "application/json", "Link": LINK}))
    for f in sorted((fx / "ngsi-v2").glob("*/notification-*.json")):
        fmt = "keyValues" if "keyValues" in f.name else "normalized"
        out.append((f, "/v2/notify", {"Content-Type": "application/json", "Ngsiv2-AttrsFormat": fmt}))
    for f in sorted((fx / "sdm").glob("*/example*.json*")):
        ct = "application/ld+json" if f.suffix == ".jsonld" else "application/json"
        out.append((f, "/notify", {"Content-Type": ct}))
    return out


def expected_observations(body: bytes, headers: dict[str, str], source: str) -> list:
    """What ingest makes of a payload (entities without any time take the reception time, which
    the test cannot know: their ids are predictable only up to that time)."""
    res = parse_payload(
        body,
        content_type=headers.get("Content-Type"),
        link=headers.get("Link"),
        headers=headers,
        source=source,
        received_at=datetime.now(UTC),
    )
    return res.observations


@pytest.fixture(scope="module")
def live(broker, tmp_path_factory):
    """One worker (ingest stage + HTTP + MQTT) on fresh topics for this module."""
    from atalaia.streams.broker import ensure_topics
    from tests.conftest import WorkerProcess, free_port

    prefix = f"t{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(broker, prefix, partitions=3))
    tmp = tmp_path_factory.mktemp("ingest-live")
    mqtt_root = f"atalaia-test/{prefix}"
    env = {
        **os.environ,
        "ATALAIA_KAFKA": broker,
        "ATALAIA_TOPIC_PREFIX": prefix,
        "ATALAIA_APP_ID": prefix,
        "ATALAIA_DATA_DIR": str(tmp / "data"),
        "ATALAIA_HTTP_PORT": str(free_port()),
        "ATALAIA_PARTITIONS": "3",
        "ATALAIA_MQTT_URL": f"mqtt://127.0.0.1:1883/{mqtt_root}/#",
    }
    w = WorkerProcess(env, ["worker", "--http", "--stages", "ingest"], tmp / "worker.log").start(("ingest",))
    w.prefix, w.broker, w.mqtt_root = prefix, broker, mqtt_root
    yield w
    w.stop()


def observations(live, **kw) -> list[dict]:
    return [
        orjson.loads(r.value)
        for r in asyncio.run(consume_all(live.broker, f"{live.prefix}.observations", **kw))
    ]


def dlq(live, **kw) -> list[dict]:
    return [
        read_dlq_record(r.value) for r in asyncio.run(consume_all(live.broker, f"{live.prefix}.dlq", **kw))
    ]


def test_every_fixture_ends_as_its_observations(live):
    want: set[str] = set()
    received: set[str] = set()  # entities timed by their reception
    with httpx.Client(base_url=live.url, timeout=10) as client:
        for path, endpoint, headers in fixture_requests():
            body = path.read_bytes()
            r = client.post(endpoint, content=body, headers=headers)
            assert r.status_code == 200, (path, r.text)
            obs = expected_observations(
                body, headers, endpoint.split("/")[1] if endpoint != "/notify" else "http"
            )
            assert r.json()["accepted"] == len(obs), path
            want |= {o.id for o in obs if o.time_source != "received"}
            received |= {o.entity for o in obs if o.time_source == "received"}
    assert len(want) >= 10, "fixtures should yield many observations"
    got = observations(live, expect=len(want) + len(received))
    got_ids = {o["id"] for o in got}
    assert want <= got_ids
    assert received <= {o["entity"] for o in got if o["time_source"] == "received"}
    ribeira = [o for o in got if o["entity"] == "urn:ngsi-ld:WaterObserved:porto-douro-ribeira-001"]
    assert ribeira and ribeira[0]["attributes"]["waterLevel"] == 3.42
    assert ribeira[0]["time"] == "2026-01-28T09:45:00Z" and ribeira[0]["units"]["waterLevel"] == "MTR"
    assert ribeira[0]["location"] == [-8.6131, 41.1406]
    for o in got:  # everything on the topic is a valid contract Observation
        Observation.model_validate(o)


def test_bad_inputs_end_in_the_dlq_with_a_reason(live):
    bad = shared_path("fixtures", "bad")
    cases = YAML(typ="safe").load((bad / "expected.yaml").read_text())
    before = {o["id"] for o in observations(live, idle=1.0)}
    to_dlq: dict[str, str] = {}
    with httpx.Client(base_url=live.url, timeout=10) as client:
        for name, case in cases.items():
            body = (bad / name).read_bytes()
            r = client.post("/ngsi-ld/notify", content=body, headers={"Content-Type": "application/json"})
            if case["expect"] == "reject":
                assert r.status_code in (400, 413), (name, r.status_code)
                problem = r.json()
                assert r.headers["content-type"].startswith("application/problem+json")
                assert problem["status"] == r.status_code and problem["detail"], name
            else:
                assert r.status_code == 200, (name, r.text)
            if case["expect"] in ("reject", "reject_entity"):
                to_dlq[hashlib.sha256(body).hexdigest()] = name
    records = dlq(live, idle=3.0)
    by_hash = {rec["sha256"]: rec for rec in records}
    for digest, name in to_dlq.items():
        assert digest in by_hash, f"{name}: nothing on the DLQ"
        rec = by_hash[digest]
        assert rec["reasons"] and all(rec["reasons"]), name
        assert rec["body"][:64] == (bad / name).read_bytes()[:64], f"{name}: original bytes kept"
    everything = observations(live, idle=2.0)
    warned = {o["entity"] for o in everything if o["id"] not in before and o["quality"]}
    assert warned, "accept_with_warning cases carry data-quality warnings"
    # the duplicated notification was delivered twice but yields its observations once
    dup = parse_payload((bad / "duplicate-notification-1.json").read_bytes(), content_type="application/json")
    dup_ids = {x.id for x in dup.observations}
    ids = [o["id"] for o in everything if o["id"] in dup_ids]
    assert dup_ids and sorted(ids) == sorted(dup_ids)


def test_mqtt_message_arrives(live):
    import paho.mqtt.publish as publish

    entity = f"urn:ngsi-ld:WaterObserved:mqtt-{uuid.uuid4().hex[:6]}"
    msg = {"id": entity, "type": "WaterObserved", "dateObserved": "2026-01-28T10:00:00Z", "height": 2.5}
    try:
        publish.single(
            f"{live.mqtt_root}/porto/river", orjson.dumps(msg), qos=1, hostname="127.0.0.1", port=1883
        )
    except OSError as e:
        pytest.skip(f"no MQTT broker at 127.0.0.1:1883: {e}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [o for o in observations(live, idle=1.0) if o["entity"] == entity]
        if found:
            assert found[0]["attributes"] == {"height": 2.5}
            assert found[0]["source"].startswith("mqtt:")
            return
    pytest.fail("the MQTT message never reached atalaia.observations")


def test_send_file_publishes_to_kafka(live, tmp_path):
    lines = [
        orjson.dumps(
            {
                "id": f"urn:ngsi-ld:AirQualityObserved:send-{i}",
                "type": "AirQualityObserved",
                "dateObserved": f"2026-01-28T10:{i:02d}:00Z",
                "NO2": 40.0 + i,
            }
        )
        for i in range(5)
    ]
    f = tmp_path / "events.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    env = {**live.env}
    r = subprocess.run([ATALAIA, "send", str(f)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "sent 5 event(s)" in r.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = {o["entity"] for o in observations(live, idle=1.0) if "send-" in o["entity"]}
        if len(got) == 5:
            return
    pytest.fail(f"only {len(got)} of 5 sent events arrived")


def test_worker_killed_mid_stream_loses_nothing(broker, topic_prefix, make_worker, tmp_path):
    """Kill -9 the worker while it ingests; after a restart every event is on atalaia.observations,
    and the duplicates at-least-once may add are exactly those the downstream dedup removes."""
    from aiokafka import AIOKafkaProducer

    from atalaia.streams.ingest.events import RawEvent

    n = 3000
    bodies = [
        orjson.dumps(
            {
                "id": f"urn:ngsi-ld:WaterObserved:k{i % 50}",
                "type": "WaterObserved",
                "dateObserved": f"2026-01-28T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
                "height": 1.0 + i / 1000,
            }
        )
        for i in range(n)
    ]

    async def produce(chunk: list[bytes]) -> None:
        p = AIOKafkaProducer(bootstrap_servers=broker)
        await p.start()
        hdr = RawEvent(body=b"", source="test", content_type="application/json").headers()
        futs = [await p.send(f"{topic_prefix}.events", b, key=b[:40], headers=hdr) for b in chunk]
        await asyncio.gather(*futs)
        await p.stop()

    w = make_worker("--stages", "ingest").start(("ingest",))
    asyncio.run(produce(bodies[: n // 2]))
    deadline = time.monotonic() + 30
    while w.health()["stages"]["ingest"]["processed"] < n // 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    w.kill()
    asyncio.run(produce(bodies[n // 2 :]))
    make_worker("--stages", "ingest", port=w.port).start(("ingest",))
    got = [
        Observation.model_validate(orjson.loads(r.value))
        for r in asyncio.run(consume_all(broker, f"{topic_prefix}.observations", expect=n, idle=3.0))
    ]
    ids = [o.id for o in got]
    assert len(set(ids)) == n, f"{n - len(set(ids))} observations lost"
    deduped = Deduper().admit(got, now=time.time())
    assert len(deduped) == n, "downstream dedup leaves exactly one of each"


def test_non_json_content_type_is_refused_and_kept(live):
    body = b"waterLevel=3.4&station=ribeira"
    r = httpx.post(
        f"{live.url}/ngsi-ld/notify",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert r.status_code == 415 and r.headers["content-type"].startswith("application/problem+json")
    assert "not JSON" in r.json()["detail"]
    digest = hashlib.sha256(body).hexdigest()
    assert any(rec["sha256"] == digest for rec in dlq(live, idle=2.0)), "a refused request is kept on the DLQ"


def test_refused_content_types_are_counted_under_one_code(live):
    """/metrics counts the DLQ by reason: a 415 is `unsupported-media-type` whatever Content-Type
    the sender named. Before, the label was the reason's text, which quotes that Content-Type: each
    new one a sender tried made a new `atalaia_dlq_records_total` series."""
    from atalaia.streams.ingest.dlq import dlq_labels

    marks = [f"application/x-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for ctype in marks:
        r = httpx.post(f"{live.url}/v2/notify", content=b"{}", headers={"Content-Type": ctype}, timeout=10)
        assert r.status_code == 415, r.text
    records = [rec for rec in dlq(live, idle=2.0) if rec.get("content_type") in marks]
    assert len(records) == 2
    assert {dlq_labels(orjson.dumps({k: v for k, v in rec.items() if k != "body"})) for rec in records} == {
        ("ngsi-v2", "unsupported-media-type")
    }


def test_brotli_and_zstd_bodies_are_read_and_a_bad_one_is_kept(live):
    """A gateway that compresses with br or zstd (HTTP's other standard encodings) is heard like
    one using gzip; bytes that are not what their Content-Encoding says get a 400 problem+json
    and a DLQ record. Before, aiohttp's parser refused both in plain text before any handler,
    and nothing reached the DLQ."""
    import brotli

    try:
        from compression import zstd  # (Python 3.14)
    except ImportError:
        from backports import zstd

    entity = f"urn:ngsi-ld:WaterObserved:enc-{uuid.uuid4().hex[:8]}"
    note = {
        "id": "urn:ngsi-ld:Notification:enc",
        "type": "Notification",
        "subscriptionId": "urn:ngsi-ld:Subscription:enc",
        "notifiedAt": "2026-01-28T09:45:00Z",
        "data": [
            {
                "id": entity,
                "type": "WaterObserved",
                "waterLevel": {"type": "Property", "value": 3.5, "observedAt": "2026-01-28T09:45:00Z"},
            }
        ],
    }
    body = orjson.dumps(note)
    for encoding, data in (("br", brotli.compress(body)), ("zstd", zstd.compress(body))):
        r = httpx.post(
            f"{live.url}/ngsi-ld/notify",
            content=data,
            headers={"Content-Type": "application/json", "Content-Encoding": encoding},
            timeout=10,
        )
        assert r.status_code == 200 and r.json()["accepted"] == 1, (encoding, r.status_code, r.text)
    assert [o["attributes"]["waterLevel"] for o in observations(live, idle=2.0) if o["entity"] == entity]
    r = httpx.post(
        f"{live.url}/ngsi-ld/notify",
        content=b"not brotli at all",
        headers={"Content-Type": "application/json", "Content-Encoding": "br", "Connection": "close"},
        timeout=10,
    )
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
    assert "'br'" in r.json()["detail"]
    kept = [rec for rec in dlq(live, idle=2.0) if "'br'" in (rec.get("reasons") or [""])[0]]
    assert kept and [r["code"] for r in kept[-1]["rejections"]] == ["unreadable-body"]


def test_an_encoding_the_server_does_not_decode_is_refused_by_name_and_kept(live):
    """`x-gzip` (gzip's old name), a list of codings or an unknown one reached the handler still
    encoded and was refused as "not UTF-8 text", a reason that sends the sender looking at its
    JSON. Now a 415 names the Content-Encoding and the ones accepted; the body is kept on the DLQ
    as sent, with its Content-Encoding."""
    import gzip

    body = gzip.compress(b'{"id": "urn:ngsi-ld:Notification:xg", "type": "Notification", "data": []}')
    for coding in ("x-gzip", "gzip, gzip", "compress"):
        r = httpx.post(
            f"{live.url}/ngsi-ld/notify",
            content=body,
            headers={"Content-Type": "application/json", "Content-Encoding": coding},
            timeout=10,
        )
        assert r.status_code == 415 and r.headers["content-type"].startswith("application/problem+json")
        detail = r.json()["detail"]
        assert detail.startswith(f"Content-Encoding {coding!r} is not supported;"), detail
        assert "gzip, deflate, br, zstd" in detail and ("old name" in detail) == (coding == "x-gzip")
    kept = [
        rec for rec in dlq(live, idle=2.0) if "Content-Encoding 'x-gzip'" in (rec.get("reasons") or [""])[0]
    ]
    assert kept and kept[-1]["headers"]["content-encoding"] == "x-gzip", kept[-1:]
    assert base64.b64decode(kept[-1]["body_b64"]) == body, "the encoded bytes, as sent"


def test_bodies_that_cannot_be_decoded_are_answered_and_logged_without_tracebacks(live):
    """Bytes that are not what their Content-Encoding says: after the 400, aiohttp read on to
    reuse the connection, met the error again and logged an ERROR "Unhandled exception" with three
    tracebacks for each such request (deflate garbage: a text/plain 400 and an ERROR traceback
    from the parser). Anyone could fill the log that way. Now each is a problem+json 400 on a
    closed connection, and the log says at most one WARNING line per request."""
    before = live.log.stat().st_size
    for encoding in ("gzip", "zstd", "deflate"):
        r = httpx.post(
            f"{live.url}/ngsi-ld/notify",
            content=b"these bytes are not " + encoding.encode(),
            headers={"Content-Type": "application/json", "Content-Encoding": encoding},
            timeout=10,
        )
        assert r.status_code == 400, (encoding, r.text)
        assert r.headers["content-type"].startswith("application/problem+json"), (encoding, r.text)
        assert r.headers.get("connection", "").lower() == "close", encoding
        assert r.headers["x-content-type-options"] == "nosniff"
    time.sleep(0.5)
    with open(live.log, "rb") as f:
        f.seek(before)
        written = f.read().decode(errors="replace")
    assert "Traceback" not in written and "[ERROR]" not in written, written[-3000:]
    assert httpx.get(f"{live.url}/health", timeout=5).status_code == 200


def test_a_gzip_bomb_is_refused_without_inflating_all_of_it(live):
    """22 MB of gzip that inflate to 5 GB held the alarm path's event loop for 8 s while the
    endpoint counted and hashed all of it. Reading stops at read_cap(limit) decoded bytes: 413, a DLQ
    record whose size is a lower bound, and the connection closes (no lingering read of the rest)."""
    import gzip

    from atalaia.streams.ingest.http import read_cap
    from atalaia.streams.settings import Settings

    cap = read_cap(Settings().max_payload_bytes)
    inflated = cap + (8 << 20)  # more than the endpoint reads
    bomb = gzip.compress(b"\0" * inflated, compresslevel=9)
    assert len(bomb) < inflated // 500
    try:
        r = httpx.post(
            f"{live.url}/ngsi-ld/notify",
            content=bomb,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            timeout=30,
        )
        assert r.status_code == 413 and r.json()["detail"].startswith("more than ")
    except httpx.TransportError:
        # the 413 is sent before the connection closes, but closing on bytes it did not read
        # makes the kernel send a reset, which can overtake the answer at a client still reading
        pass
    records = [rec for rec in dlq(live, idle=2.0) if "more than" in (rec.get("reasons") or [""])[0]]
    assert records and records[-1]["size"] <= cap + (1 << 16) < inflated
    # the endpoint still takes a good notification
    good = httpx.post(
        f"{live.url}/ngsi-ld/notify", content=b"{}", headers={"Content-Type": "application/json"}, timeout=10
    )
    assert good.status_code in (200, 400)


def test_a_notify_path_with_a_trailing_slash_is_the_same_endpoint(live):
    """A subscription's endpoint written `.../ngsi-ld/notify/` got 404: every notification lost."""
    body = orjson.dumps(
        {
            "id": "urn:ngsi-ld:WaterObserved:slash",
            "type": "WaterObserved",
            "height": 2.5,
            "dateObserved": "2026-01-28T09:45:00Z",
        }
    )
    for path in ("/ngsi-ld/notify/", "/v2/notify/", "/notify/"):
        r = httpx.post(
            f"{live.url}{path}", content=body, headers={"Content-Type": "application/json"}, timeout=10
        )
        assert r.status_code == 200 and r.json()["accepted"] == 1, (path, r.text)
