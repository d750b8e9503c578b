"""Scale: ``atalaia worker --processes 2`` ÷ ``--processes 1`` on the fused ingest+rules stage.

    python -m benchmarks.scale_bench [N_EVENTS] [--runs R]

N NGSI-LD keyValues notifications (keyed by entity, 500 entities) are put on ``atalaia.events``
of a fresh topic set on the embedded broker; then ``atalaia worker --stages ingest,rules
--processes K`` is started as a user would, and this process counts the observations it
publishes. Throughput is taken between 20 % and 95 % of the observations, so the start-up and
the group's first rebalance stay out of the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory

from aiokafka import AIOKafkaConsumer, TopicPartition

from atalaia.streams.broker import EmbeddedBroker, ensure_topics
from atalaia.streams.kafka_config import client_options
from benchmarks.ingest_bench import produce


async def count(bootstrap: str, topic: str, n: int, timeout: float = 300) -> float:
    c = AIOKafkaConsumer(**client_options(bootstrap), enable_auto_commit=False, fetch_max_wait_ms=50)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(6)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        seen, marks = 0, {}
        deadline = time.monotonic() + timeout
        while seen < 0.95 * n and time.monotonic() < deadline:
            for records in (await c.getmany(timeout_ms=200, max_records=20000)).values():
                seen += len(records)
            now = time.perf_counter()
            if seen >= 0.2 * n and "a" not in marks:
                marks["a"] = (now, seen)
        t1 = time.perf_counter()
        (t0, s0) = marks["a"]
        return (seen - s0) / (t1 - t0)
    finally:
        await c.stop()


def run(bootstrap: str, n: int, processes: int, data: Path) -> float:
    prefix = f"scale{uuid.uuid4().hex[:6]}"
    asyncio.run(ensure_topics(bootstrap, prefix, partitions=6))
    asyncio.run(produce(bootstrap, f"{prefix}.events", n))
    env = {
        **os.environ,
        "ATALAIA_KAFKA": bootstrap,
        "ATALAIA_TOPIC_PREFIX": prefix,
        "ATALAIA_APP_ID": prefix,
        "ATALAIA_DATA_DIR": str(data / prefix),
        "ATALAIA_ALLOWED_LATENESS_S": "1e9",
        "ATALAIA_LOG_LEVEL": "warning",
    }
    exe = Path(sys.executable).parent / "atalaia"
    args = [str(exe), "worker", "--stages", "ingest,rules", "--processes", str(processes)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return asyncio.run(count(bootstrap, f"{prefix}.observations", n))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=150_000)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    with EmbeddedBroker() as b, TemporaryDirectory() as tmp:
        one, two = [], []
        for _ in range(args.runs):  # alternating, so a drift of the shared machine hits both
            one.append(run(b.bootstrap, args.n, 1, Path(tmp)))
            two.append(run(b.bootstrap, args.n, 2, Path(tmp)))
        a, c = statistics.median(one), statistics.median(two)
        print(
            f"fused ingest+rules (Porto rules), {args.n} events, 6 partitions, {os.cpu_count()} CPUs (shared)"
        )
        print(f"1 process : {a:10,.0f} events/s   (runs: {', '.join(f'{x:,.0f}' for x in one)})")
        print(f"2 processes: {c:10,.0f} events/s   (runs: {', '.join(f'{x:,.0f}' for x in two)})")
        print(f"2 processes ÷ 1: {c / a:.2f}   (issue 11 target ≥ 1.7)")


if __name__ == "__main__":
    main()
