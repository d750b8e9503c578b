"""Detector throughput and memory per entity.

    python -m benchmarks.detectors_bench [--entities 50] [--points 2000]

For every detector in config/detectors.yaml: points/s through ``DetectorBank.score_learn``
(the live path, one model per entity), and the state one entity costs (pickled bytes of its
model and Python heap measured with tracemalloc).
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import time
import tracemalloc
from datetime import datetime, timedelta

from atalaia.detectors.bank import DetectorBank
from atalaia.detectors.config import load_config


def rows(entities: int, points: int, seed: int = 1) -> list[tuple[str, str, datetime, float]]:
    """Interleaved observations of ``entities`` river gauges: daily cycle, noise, rare spikes."""
    rng = random.Random(seed)
    t0 = datetime(2026, 1, 1)
    out = []
    for i in range(points):
        t = t0 + timedelta(minutes=5 * i)
        for e in range(entities):
            v = 10 + e + 2 * math.sin(2 * math.pi * i / 288) + rng.gauss(0, 0.3)
            if rng.random() < 0.001:
                v += 8
            out.append((f"urn:ngsi-ld:WaterObserved:porto-{e:03d}", "flow", t, v))
    return out


def bench(name: str, config, data, sample) -> tuple[float, float, float]:
    """(points/s, pickled bytes per entity, heap bytes per entity)."""
    bank = DetectorBank(config)
    started = time.perf_counter()
    bank.score_learn_many(name, data)
    rate = len(data) / (time.perf_counter() - started)
    pickled = sum(bank.memory_per_entity().values())
    del bank
    gc.collect()
    tracemalloc.start()  # heap on a few entities: tracemalloc slows everything down
    before = tracemalloc.get_traced_memory()[0]
    bank = DetectorBank(config)
    bank.score_learn_many(name, sample)
    heap = (tracemalloc.get_traced_memory()[0] - before) / len(bank)
    tracemalloc.stop()
    return rate, pickled, heap


def fleet(config, name: str, entities: int, points: int = 2000) -> tuple[int, float, float]:
    """Memory of ``entities`` warmed-up models of ``name`` held in one bank: every entity
    gets the state of one model that learned ``points`` points (its size has settled by then).
    Returns (pickled bytes of one model, heap bytes in all (tracemalloc), heap per entity)."""
    one = DetectorBank(config, max_entities=None, idle_after=None)
    for k, a, t, v in rows(1, points):
        one.score_learn(name, k, a, t, v)
    state = one.state_of(name, *rows(1, 1)[0][:2])
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    bank = DetectorBank(config, max_entities=None, idle_after=None)
    for e in range(entities):
        bank.load_state(name, f"urn:ngsi-ld:WaterObserved:fleet-{e:06d}", "flow", state)
    heap = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return len(state), heap, heap / entities


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=20)
    ap.add_argument("--points", type=int, default=1000, help="points per entity")
    ap.add_argument(
        "--fleet", type=int, default=0, help="also: memory of this many default-detector entities"
    )
    args = ap.parse_args(argv)
    config = load_config()
    if args.fleet:
        pickled, heap, per = fleet(config, config.default, args.fleet)
        print(
            f"{config.default}: {args.fleet} warmed-up entities in one bank: {heap / 2**20:.0f} MiB heap "
            f"({per:.0f} B/entity; pickled state {pickled} B/entity)"
        )
    data = rows(args.entities, args.points)
    sample = rows(3, args.points)
    print(f"{len(data)} points over {args.entities} entities, DetectorBank.score_learn")
    print(f"{'detector':19s} {'points/s':>10s} {'pickled B/entity':>17s} {'heap B/entity':>14s}")
    for spec in config.detectors:
        rate, pickled, heap = bench(spec.name, config, data, sample)
        mark = "*" if spec.name == config.default else " "
        print(f"{mark}{spec.name:18s} {rate:10.0f} {pickled:17.0f} {heap:14.0f}")


if __name__ == "__main__":
    main()
