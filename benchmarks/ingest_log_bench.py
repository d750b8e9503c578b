"""HTTP ingest on ``atalaia up`` with the ingest log on ÷ off: what keeping every answered event on
disk costs the endpoint.

    python -m benchmarks.ingest_log_bench [--events 20000] [--concurrency 32] [--rounds 2]

For each variant (``log`` = the default; ``nolog`` = ``ATALAIA_INGEST_LOG=0``) a fresh ``atalaia
up`` (embedded broker, its own data directory and port); this process POSTs one-entity NGSI-LD
notifications to ``/ngsi-ld/notify`` with ``--concurrency`` requests in flight, as a FIWARE
broker's notifications arrive, and prints the accepted events/s and the answer time p50 / p99
of each variant, alternating the variants ``--rounds`` times, and their ratios. Afterwards: the
bytes the log held at the end of the run (trimmed as the stages checkpoint).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from benchmarks.latency_bench import Up, percentile


def body(i: int) -> bytes:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return orjson.dumps(
        {
            "id": f"urn:ngsi-ld:Notification:{i}",
            "type": "Notification",
            "notifiedAt": now,
            "data": [
                {
                    "id": f"urn:ngsi-ld:WaterObserved:s{i % 1000}",
                    "type": "WaterObserved",
                    "dateObserved": now,
                    "height": 1.0 + (i % 7) / 10,
                }
            ],
        }
    )


async def load(url: str, token: str, n: int, concurrency: int) -> tuple[float, list[float], int]:
    """POST ``n`` notifications with ``concurrency`` in flight (aiohttp: httpx's client was the
    bottleneck); (wall seconds, answer times in ms, how many were not answered 200)."""
    import aiohttp

    times: list[float] = []
    failed = 0
    bodies = iter(range(n))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/ld+json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failed
        for i in bodies:
            data = body(i)
            t0 = time.perf_counter()
            async with session.post(url, data=data, headers=headers) as r:
                await r.read()
                failed += r.status != 200
            times.append((time.perf_counter() - t0) * 1000)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - t0, times, failed


def run(variant: str, workdir: Path, n: int, concurrency: int) -> tuple[float, float, float, int, int]:
    up = Up(variant, workdir)  # (its environment: this process's, ATALAIA_INGEST_LOG set by main)
    try:
        up.wait_ready()
        token = (up.dir / "data" / "ingest-token").read_text().strip()
        url = f"http://127.0.0.1:{up.port}/ngsi-ld/notify"
        asyncio.run(load(url, token, 500, concurrency))  # warm-up
        wall, times, failed = asyncio.run(load(url, token, n, concurrency))
        logged = sum(p.stat().st_size for p in (up.dir / "data" / "ingest-log").rglob("*") if p.is_file())
        return n / wall, percentile(times, 0.5), percentile(times, 0.99), failed, logged
    finally:
        up.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    import os

    results: dict[str, list[tuple[float, float, float, int, int]]] = {"log": [], "nolog": []}
    with tempfile.TemporaryDirectory(prefix="ingest-log-bench-") as tmp:
        for r in range(args.rounds):
            for variant in ("log", "nolog") if r % 2 == 0 else ("nolog", "log"):
                if variant == "nolog":
                    os.environ["ATALAIA_INGEST_LOG"] = "0"
                else:
                    os.environ.pop("ATALAIA_INGEST_LOG", None)
                res = run(variant, Path(tmp) / f"r{r}", args.events, args.concurrency)
                results[variant].append(res)
                rate, p50, p99, failed, logged = res
                print(
                    f"round {r + 1} {variant:>5}: {rate:8.0f} events/s, answer p50 {p50:6.1f} ms, "
                    f"p99 {p99:6.1f} ms, not 200: {failed}, ingest log at the end: {logged / 1e6:.1f} MB",
                    flush=True,
                )
    os.environ.pop("ATALAIA_INGEST_LOG", None)
    best = {v: max(x[0] for x in rs) for v, rs in results.items()}
    med50 = {v: sorted(x[1] for x in rs)[len(rs) // 2] for v, rs in results.items()}
    print(
        f"log ÷ nolog: throughput ×{best['log'] / best['nolog']:.2f} (best of {args.rounds}), "
        f"answer p50 ×{med50['log'] / med50['nolog']:.2f}"
    )
    sys.exit(1 if any(x[3] for rs in results.values() for x in rs) else 0)


if __name__ == "__main__":
    main()
