"""How long a record waits in the embedded broker before a consumer gets it, without any stage:

    python -m benchmarks.fetch_probe [--rate 5000] [--seconds 15] [--waits 50,10,200]

A fresh embedded broker; a separate process produces keyed ~300-byte records to a 6-partition
topic at ``--rate`` records/s (as ``latency_bench`` does); this process reads them with a bare
aiokafka ``getmany`` loop (nothing else on its loop) for each fetch wait (``fetch_max_wait_ms``)
in turn and prints the age of each fetched partition batch's oldest and newest record (fetch time
− the record's Kafka timestamp), the time one ``getmany`` took and the broker's CPU. This is the
latency floor the broker sets under every consumer hop.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from atalaia.streams.broker import EmbeddedBroker
from atalaia.streams.kafka_config import client_options


def produce(bootstrap: str, topic: str, rate: float, seconds: float) -> None:
    async def go() -> None:
        p = AIOKafkaProducer(**client_options(bootstrap), linger_ms=1, acks=1)
        await p.start()
        start, sent = time.time(), 0
        while (now := time.time()) < start + seconds:
            while sent < int((now - start) * rate):
                sent += 1
                await p.send(topic, b"x" * 300, key=b"e%04d" % (sent % 1000))
            await asyncio.sleep(0.01)
        await p.stop()

    asyncio.run(go())


def cpu(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def read(bootstrap: str, topic: str, wait_ms: int, seconds: float) -> dict[str, list[float]]:
    c = AIOKafkaConsumer(
        topic,
        **client_options(bootstrap),
        group_id=f"probe-{uuid.uuid4().hex[:6]}",
        fetch_max_wait_ms=wait_ms,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await c.start()
    await c.getmany(timeout_ms=2000)
    out: dict[str, list[float]] = {"oldest": [], "newest": [], "getmany": []}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        batches = await c.getmany(timeout_ms=200, max_records=5000)
        out["getmany"].append((time.perf_counter() - t0) * 1000)
        wall = time.time() * 1000
        for records in batches.values():
            if records:
                out["oldest"].append(wall - records[0].timestamp)
                out["newest"].append(wall - records[-1].timestamp)
    await c.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--waits", default="50,10,200")
    args = ap.parse_args()
    from atalaia.streams.broker import ensure_topics

    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap
        pid = broker.proc.pid
        for wait in [int(w) for w in args.waits.split(",")]:
            topic = f"probe{uuid.uuid4().hex[:6]}"
            asyncio.run(ensure_topics(bootstrap, topic, partitions=6))
            prod = multiprocessing.Process(
                target=produce, args=(bootstrap, f"{topic}.events", args.rate, args.seconds + 4)
            )
            prod.start()
            c0, t0 = cpu(pid), time.monotonic()
            res = asyncio.run(read(bootstrap, f"{topic}.events", wait, args.seconds))
            used = 100 * (cpu(pid) - c0) / (time.monotonic() - t0)
            prod.join()
            print(
                f"fetch wait {wait:4} ms: age oldest p50 {pct(res['oldest'], 0.5):5.1f} "
                f"p99 {pct(res['oldest'], 0.99):6.1f} ms, newest p50 {pct(res['newest'], 0.5):5.1f} ms; getmany p50 "
                f"{pct(res['getmany'], 0.5):5.1f} p99 {pct(res['getmany'], 0.99):6.1f} ms; broker CPU {used:.0f}%; "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
