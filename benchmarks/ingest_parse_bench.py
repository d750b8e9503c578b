"""Ingest normaliser throughput per payload shape: parses/s and observations/s per CPU-second (one core).

    .venv/bin/python -m benchmarks.ingest_parse_bench [--seconds 0.8]

Payloads are the shared fixtures (../shared/fixtures) plus synthetic 20-entity notifications, so
the figures cover both a broker's one-entity notifications and batched ones. The baseline line
(``orjson.loads`` alone) bounds what any Python normaliser can reach on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson

from atalaia.streams.ingest import Deduper, ReceivedPayload, encode_observation, ingest_batch, parse_payload

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
RECEIVED = datetime(2026, 1, 28, 10, 0, 5, tzinfo=UTC)


def _batched(path: Path, n: int) -> bytes:
    doc = orjson.loads(path.read_bytes())
    entity = doc["data"][0]
    data = []
    for i in range(n):
        e = dict(entity)
        e["id"] = f"{entity['id']}-{i}"
        data.append(e)
    return orjson.dumps({**doc, "data": data})


def payloads() -> dict[str, tuple[bytes, str]]:
    f = FIXTURES
    shapes = {
        "ngsi-ld normalized (2 entities)": (
            "ngsi-ld/WaterObserved/notification-normalized.jsonld",
            "application/ld+json",
        ),
        "ngsi-ld concise (2 entities)": (
            "ngsi-ld/WaterObserved/notification-concise.json",
            "application/json",
        ),
        "ngsi-ld keyValues (2 entities)": (
            "ngsi-ld/WaterObserved/notification-keyValues.json",
            "application/json",
        ),
        "ngsi-ld air quality normalized": (
            "ngsi-ld/AirQualityObserved/notification-normalized.jsonld",
            "application/ld+json",
        ),
        "ngsi-v2 normalized": ("ngsi-v2/WaterObserved/notification-normalized.json", "application/json"),
        "ngsi-v2 keyValues": ("ngsi-v2/WaterObserved/notification-keyValues.json", "application/json"),
        "sdm keyValues entity": ("sdm/WaterObserved/example.json", "application/json"),
        "bad: duplicate keys (slow path)": ("bad/duplicate-keys.json", "application/ld+json"),
        "bad: malformed JSON": ("bad/malformed-json.json", "application/ld+json"),
    }
    out = {name: ((f / rel).read_bytes(), ct) for name, (rel, ct) in shapes.items()}
    out["ngsi-ld normalized (20 entities)"] = (
        _batched(f / "ngsi-ld/WaterObserved/notification-normalized.jsonld", 20),
        "application/ld+json",
    )
    out["observation contract record"] = (
        orjson.dumps(
            {
                "time": "2026-01-28T09:45:00Z",
                "entity": "urn:ngsi-ld:WaterObserved:porto-01",
                "type": "WaterObserved",
                "attributes": {"height": 3.2},
                "location": [-8.61, 41.14],
                "source": "kafka",
            }
        ),
        "application/json",
    )
    return out


def _loads(body: bytes) -> int:
    with contextlib.suppress(orjson.JSONDecodeError):
        orjson.loads(body)
    return 0


def rate(fn: Callable[[], int], seconds: float) -> tuple[float, float]:
    """(calls/s, items/s) per second of this process's CPU time (the box is shared: wall time
    would measure the neighbours), over about ``seconds`` of CPU."""
    n = items = 0
    start = time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(50):
            items += fn()
        n += 50
        now = time.process_time()
        if now >= deadline:
            return n / (now - start), items / (now - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.8, help="CPU seconds per shape")
    args = ap.parse_args()
    if not FIXTURES.is_dir():
        raise SystemExit(f"shared fixtures not found at {FIXTURES}")
    print(f"{'payload shape':40s} {'bytes':>7s} {'parses/s':>10s} {'obs/s':>10s} {'orjson.loads/s':>15s}")
    for name, (body, ct) in payloads().items():
        calls, obs = rate(
            lambda b=body, c=ct: len(parse_payload(b, content_type=c, received_at=RECEIVED).observations),
            args.seconds,
        )
        raw, _ = rate(lambda b=body: _loads(b), args.seconds / 3)
        print(f"{name:40s} {len(body):7d} {calls:10.0f} {obs:10.0f} {raw:15.0f}")
    body, ct = payloads()["ngsi-ld normalized (20 entities)"]
    observations = parse_payload(body, content_type=ct).observations
    d = Deduper()
    clock = [0.0]

    def dedup() -> int:
        clock[0] += 0.001
        return len(d.admit(observations, now=clock[0]))

    _, checked = rate(lambda: dedup() or len(observations), args.seconds)
    print(
        f"{'Deduper.admit (20 redelivered obs)':40s} {'':7s} {'':10s} {checked:10.0f}   (observations checked/s)"
    )
    obs = observations[0]
    _, ser = rate(lambda: len(obs.to_json()) and 1, args.seconds / 3)
    print(f"{'Observation.to_json (contract)':40s} {'':7s} {'':10s} {ser:10.0f}   (observations encoded/s)")
    _, fast = rate(lambda: len(encode_observation(obs)) and 1, args.seconds / 3)
    print(f"{'encode_observation (same bytes)':40s} {'':7s} {'':10s} {fast:10.0f}   (observations encoded/s)")
    events = [ReceivedPayload(b, "kafka", c, received_at=RECEIVED) for b, c in payloads().values()]
    calls, batched = rate(
        lambda: ingest_batch(events, deduper=Deduper()).counts["observations"], args.seconds
    )
    print(
        f"{'ingest_batch (all shapes above) + dedup':40s} {'':7s} {calls * len(events):10.0f} {batched:10.0f}"
    )


if __name__ == "__main__":
    main()
