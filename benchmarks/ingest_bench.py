"""Pipeline throughput on the real broker, ÷ a raw aiokafka + orjson consumer reading the same
topic in the same run:

* ingest stage alone (events → observations + DLQ, exactly the worker's ``BatchStage`` +
  ``IngestCore``);
* ingest + rules stages running together (events → observations → alarms, with the Porto rules
  of ``config/rules`` and the ``hst-default`` detector on ``flow``): the time for every event to
  be evaluated by the rules stage;
* the same with 1 000 rules (the Porto rules + fillers on other entity types, as in a city-wide
  rule base), as two stages and as the fused ingest+rules stage (``rules/fused.py``, what
  ``atalaia up`` runs): the issue-11 ratio "fused ingest+rules with 1 000 rules ÷ raw".

    python -m benchmarks.ingest_bench [N_EVENTS]

Events are keyed by entity, as ``atalaia send`` and the HTTP endpoint key them.

Events are NGSI-LD keyValues notifications with one entity (≈ 330 bytes), the commonest
real shape; figures are medians of 3 runs.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from atalaia.streams.broker import EmbeddedBroker, ensure_topics
from atalaia.streams.ingest.events import RawEvent
from atalaia.streams.ingest.stage import IngestCore
from atalaia.streams.kafka_config import client_options
from atalaia.streams.settings import Settings
from atalaia.streams.stage import BatchStage, settle_heaps

settle_heaps()  # as in a worker process (streams.stage.settle_heap)


def make_event(i: int) -> bytes:
    s = i % 500
    return orjson.dumps(
        {
            "id": f"urn:ngsi-ld:Notification:{i}",
            "type": "Notification",
            "subscriptionId": "urn:ngsi-ld:Subscription:bench",
            "notifiedAt": "2026-01-28T09:45:02Z",
            "data": [
                {
                    "id": f"urn:ngsi-ld:WaterObserved:porto-{s:03d}",
                    "type": "WaterObserved",
                    "dateObserved": f"2026-01-28T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}Z",
                    "height": 2.0 + (i % 97) / 100,
                    "flow": 2000.0 + i % 13,
                    "location": {"type": "Point", "coordinates": [-8.61, 41.14]},
                    "district": "13",
                }
            ],
            "@context": "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
        }
    )


async def produce(bootstrap: str, topic: str, n: int) -> None:
    p = AIOKafkaProducer(**client_options(bootstrap), linger_ms=20, max_batch_size=1 << 20)
    await p.start()
    headers = RawEvent(body=b"", source="bench", content_type="application/json").headers()
    futs = [
        await p.send(
            topic,
            make_event(i),
            key=f"urn:ngsi-ld:WaterObserved:porto-{i % 500:03d}".encode(),
            headers=headers,
        )
        for i in range(n)
    ]
    await asyncio.gather(*futs)
    await p.stop()


async def raw_consumer(bootstrap: str, topic: str, n: int) -> float:
    c = AIOKafkaConsumer(
        topic,
        **client_options(bootstrap),
        group_id=f"raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
        max_partition_fetch_bytes=4 << 20,
    )
    await c.start()
    seen, t0, c0 = 0, None, 0.0
    while seen < n:
        batches = await c.getmany(timeout_ms=200, max_records=5000)
        for recs in batches.values():
            if t0 is None:
                t0, c0 = time.perf_counter(), time.process_time()
            for r in recs:
                orjson.loads(r.value)
            seen += len(recs)
    dt = time.perf_counter() - t0
    CPU_US_PER_EVENT.append((time.process_time() - c0) / n * 1e6)
    await c.stop()
    return n / dt


def stage(name: str, source: str, bootstrap: str, prefix: str, state: Path, make_core) -> BatchStage:
    """The worker's own stage class, on a fresh consumer group."""
    return BatchStage(
        name=name,
        bootstrap=bootstrap,
        prefix=prefix,
        source=source,
        group=f"{prefix}-{name}-{uuid.uuid4().hex[:6]}",
        state_dir=state,
        checkpoint_s=5.0,
        make_core=make_core,
    )


CPU_US_PER_EVENT: list[float] = []  # process CPU per event of each measure() window


def fused_events(stage: BatchStage) -> int:
    return sum(getattr(c, "events", 0) for c in stage.cores.values())


async def measure(stages: list[BatchStage], n: int, done=None) -> float:
    """Events/s from the first record the first stage reads until the last stage has read n
    (``done(stage)``: how many events the last stage has finished, default ``processed``)."""
    done = done or (lambda s: s.processed)
    for s in stages:
        await s.start()
    first_stage, last_stage = stages[0], stages[-1]
    while first_stage.processed == 0:
        await asyncio.sleep(0.001)
    t0, first, c0 = time.perf_counter(), first_stage.processed, time.process_time()
    while done(last_stage) < n:
        failed = [s.failed for s in stages if s.failed]
        if failed:
            raise RuntimeError(f"a stage failed: {failed[0]!r}")
        await asyncio.sleep(0.002)
    dt = time.perf_counter() - t0
    CPU_US_PER_EVENT.append((time.process_time() - c0) / max(n - first, 1) * 1e6)
    for s in stages:
        await s.stop()
    return (n - first) / dt


async def ingest_stage(bootstrap: str, prefix: str, n: int, state: Path) -> float:
    settings = Settings(topic_prefix=prefix)
    ingest = stage("ingest", "events", bootstrap, prefix, state, lambda p: IngestCore(settings))
    return await measure([ingest], n)


FILLER_TYPES = [
    "AirQualityObserved",
    "NoiseLevelObserved",
    "TrafficFlowObserved",
    "ParkingSpot",
    "StreetLight",
]


def filler_rules(path: Path, n: int) -> Path:
    """``n`` rules that select other entity types (a city-wide rule base around the Porto rules)."""
    lines = ["group: fillers", "rules:"]
    for i in range(n):
        lines.append(
            f"  - {{id: filler-{i}, select: {{type: {FILLER_TYPES[i % 5]}, attribute: attr{i % 97}}}, "
            f"severities: [{{severity: high, above: {100 + i % 50}, for: 5m}}, {{severity: medium, above: 50}}]}}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def rule_paths(state: Path, rules: int) -> list[Path]:
    from atalaia.streams.settings import CONFIG_DIR

    paths = [CONFIG_DIR / "rules"]
    porto = sum(len(load_rules_count(p)) for p in paths)
    if rules > porto:
        state.mkdir(parents=True, exist_ok=True)
        paths.append(filler_rules(state / "fillers.yaml", rules - porto))
    return paths


def load_rules_count(path: Path) -> list:
    from atalaia.rules.loader import load_rules

    return load_rules([path]).rules


async def pipeline(bootstrap: str, prefix: str, n: int, state: Path, rules: int = 0) -> float:
    from atalaia.detectors.config import load_config
    from atalaia.rules.stage import RuleFiles, RulesCore
    from atalaia.streams.settings import CONFIG_DIR

    settings = Settings(topic_prefix=prefix, allowed_lateness_s=1e9)
    files, detectors = RuleFiles(rule_paths(state, rules)), load_config(CONFIG_DIR / "detectors.yaml")
    ingest = stage("ingest", "events", bootstrap, prefix, state, lambda p: IngestCore(settings))
    rules = stage(
        "rules",
        "observations",
        bootstrap,
        prefix,
        state,
        lambda p: RulesCore(files, detectors, settings),
    )
    return await measure([ingest, rules], n)


async def fused(bootstrap: str, prefix: str, n: int, state: Path, rules: int = 0) -> float:
    from atalaia.detectors.config import load_config
    from atalaia.rules.fused import IngestRulesCore
    from atalaia.rules.stage import RuleFiles
    from atalaia.streams.settings import CONFIG_DIR

    settings = Settings(topic_prefix=prefix, allowed_lateness_s=1e9)
    files, detectors = RuleFiles(rule_paths(state, rules)), load_config(CONFIG_DIR / "detectors.yaml")
    stage = BatchStage(
        name="ingest-rules",
        bootstrap=bootstrap,
        prefix=prefix,
        source=("events", "observations"),
        group=f"{prefix}-fused-{uuid.uuid4().hex[:6]}",
        state_dir=state,
        checkpoint_s=5.0,
        make_core=lambda p: IngestRulesCore(p, settings, files, detectors),
    )
    return await measure([stage], n, done=fused_events)


async def main(n: int) -> None:
    with EmbeddedBroker() as b, TemporaryDirectory() as tmp:
        raw, ing, full, two1k, fused1k = [], [], [], [], []
        for run in range(3):
            prefix = f"bench{run}"
            await ensure_topics(b.bootstrap, prefix, partitions=6)
            await produce(b.bootstrap, f"{prefix}.events", n)
            raw.append(await raw_consumer(b.bootstrap, f"{prefix}.events", n))
            ing.append(await ingest_stage(b.bootstrap, prefix, n, Path(tmp) / prefix))
            prefix = f"benchp{run}"
            await ensure_topics(b.bootstrap, prefix, partitions=6)
            await produce(b.bootstrap, f"{prefix}.events", n)
            full.append(await pipeline(b.bootstrap, prefix, n, Path(tmp) / prefix))
            for label, out, run_it in (("two", two1k, pipeline), ("fused", fused1k, fused)):
                prefix = f"bench{label}{run}"
                await ensure_topics(b.bootstrap, prefix, partitions=6)
                await produce(b.bootstrap, f"{prefix}.events", n)
                out.append(await run_it(b.bootstrap, prefix, n, Path(tmp) / prefix, rules=1000))
        r, i, f = statistics.median(raw), statistics.median(ing), statistics.median(full)
        print(f"events: {n} NGSI-LD keyValues notifications, 6 partitions, embedded Tansu, 3 runs")
        print(
            f"raw aiokafka getmany + orjson.loads : {r:10,.0f} events/s   (runs: "
            f"{', '.join(f'{x:,.0f}' for x in raw)})"
        )
        print(
            f"ingest stage (parse, dedup, produce): {i:10,.0f} events/s   (runs: "
            f"{', '.join(f'{x:,.0f}' for x in ing)})"
        )
        print(
            f"ingest + rules stages (to alarms)    : {f:10,.0f} events/s   (runs: "
            f"{', '.join(f'{x:,.0f}' for x in full)})"
        )
        t1, f1 = statistics.median(two1k), statistics.median(fused1k)
        for label, x, runs in (
            ("ingest + rules stages, 1 000 rules  ", t1, two1k),
            ("fused ingest+rules, 1 000 rules     ", f1, fused1k),
        ):
            print(f"{label}: {x:10,.0f} events/s   (runs: {', '.join(f'{v:,.0f}' for v in runs)})")
        print(f"ratio ingest / raw                   : {i / r:10.3f}")
        print(f"ratio ingest+rules / raw             : {f / r:10.3f}")
        print(f"ratio two stages, 1 000 rules / raw  : {t1 / r:10.3f}")
        print(f"ratio fused, 1 000 rules / raw       : {f1 / r:10.3f}   (issue 11 target ≥ 0.40)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000))
