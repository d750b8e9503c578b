"""One whole process per measurement, for CPU-time comparisons on a shared machine (time it from
outside, e.g. ``/usr/bin/time -v``; alternate the two modes):

    python -m benchmarks.fused_cpu fused|two|raw [N_EVENTS] [RULES]

Starts an embedded broker, puts N events on a fresh topic set and runs either the fused
ingest+rules stage or ingest and rules as two stages (1 000 rules by default) until every event
has been evaluated; prints the wall-clock rate. Whole-process CPU time (this process and the
broker) is the figure that survives other people's load.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from tempfile import TemporaryDirectory

from atalaia.streams.broker import EmbeddedBroker, ensure_topics
from benchmarks.ingest_bench import CPU_US_PER_EVENT, fused, pipeline, produce, raw_consumer


async def main(mode: str, n: int, rules: int) -> None:
    with EmbeddedBroker() as b, TemporaryDirectory() as tmp:
        await ensure_topics(b.bootstrap, "cpu", partitions=6)
        await produce(b.bootstrap, "cpu.events", n)
        if mode == "raw":
            rate = await raw_consumer(b.bootstrap, "cpu.events", n)
        else:
            run = fused if mode == "fused" else pipeline
            rate = await run(b.bootstrap, "cpu", n, Path(tmp) / "cpu", rules=rules)
        cpu = CPU_US_PER_EVENT[-1]  # this process, while the stages ran (the broker not included)
        print(f"{mode}: {rate:,.0f} events/s (wall), {cpu:.1f} µs CPU per event (stages' process)")


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(args[0], int(args[1]) if len(args) > 1 else 30_000, int(args[2]) if len(args) > 2 else 1000)
    )
