"""Detector throughput and memory per entity.

    python -m benchmarks.detectors_bench [--entities 20] [--points 1000] [--fleet 100000]
                                         [--detector NAME ...]

For every detector in config/detectors.yaml (or the ``--detector`` ones): points/s through
``DetectorBank.score_learn`` (the live path, one model per entity; wall clock, and per second
of this process's CPU time, which other load on a shared machine disturbs less), and the state
one entity costs (pickled bytes of its model and Python heap measured with tracemalloc).

``--fleet N``: the memory of a bank holding N warmed-up entities of the default detector (each
loaded from the state of a model that learned 2000 points, then scoring one point, as a live
entity does): the growth of the process's resident set (RSS) and of the Python heap
(tracemalloc), in all and per entity, and the share of the models themselves (the rest is the
bank's per-entity bookkeeping: keys, its ordered map, the last event times).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import time
import tracemalloc
from datetime import datetime, timedelta

from atalaia.detectors.bank import DetectorBank
from atalaia.detectors.base import Detector
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


def heap_of(config, name: str, data) -> int:
    """Python heap (tracemalloc) of a bank that learned ``data``."""
    gc.collect()
    tracemalloc.start()  # on a few entities: tracemalloc slows everything down
    before = tracemalloc.get_traced_memory()[0]
    bank = DetectorBank(config)
    bank.score_learn_many(name, data)
    heap = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del bank
    return heap


def bench(name: str, config, data, samples) -> tuple[float, float, float, float]:
    """(points/s, points per CPU second, pickled bytes per entity, heap bytes per entity:
    the growth of the heap from the first to the second sample bank over the entities it
    adds, so that what a bank and a configuration cost once is not counted per entity)."""
    bank = DetectorBank(config)
    started, cpu = time.perf_counter(), time.process_time()
    bank.score_learn_many(name, data)
    rate = len(data) / (time.perf_counter() - started)
    cpu_rate = len(data) / (time.process_time() - cpu)
    pickled = sum(bank.memory_per_entity().values())
    del bank
    (few, a), (more, b) = samples
    heap = (heap_of(config, name, b) - heap_of(config, name, a)) / (more - few)
    return rate, cpu_rate, pickled, heap


def rss() -> int:
    """Resident set size of this process in bytes (Linux ``/proc``; 0 where there is none)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def fleet(config, name: str, entities: int, points: int = 2000) -> dict[str, float]:
    """Memory of ``entities`` warmed-up models of ``name`` held in one bank: every entity
    gets the state of one model that learned ``points`` points (its size has settled by then)
    and then scores one point of its own, as a live entity does. Returns the pickled bytes of
    one model, the RSS growth and the heap growth (tracemalloc) of the bank in all, and the
    heap of the models alone (tracemalloc, on up to 10 000 of them)."""
    one = DetectorBank(config, max_entities=None, idle_after=None)
    history = rows(1, points)
    for k, a, t, v in history:
        one.score_learn(name, k, a, t, v)
    state = one.state_of(name, *history[0][:2])
    t_next = history[-1][2] + timedelta(minutes=5)

    def populate() -> DetectorBank:
        bank = DetectorBank(config, max_entities=None, idle_after=None)
        for e in range(entities):
            key = f"urn:ngsi-ld:WaterObserved:fleet-{e:06d}"
            bank.load_state(name, key, "flow", state)
            bank.score_learn(name, key, "flow", t_next + timedelta(seconds=e % 60), 10.0 + e % 7)
        return bank

    gc.collect()
    before = rss()
    bank = populate()
    gc.collect()
    rss_growth = rss() - before
    del bank
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    bank = populate()
    heap = tracemalloc.get_traced_memory()[0] - before
    del bank
    gc.collect()
    n = min(entities, 10_000)
    before = tracemalloc.get_traced_memory()[0]
    models = [Detector.from_state(state) for _ in range(n)]
    model_heap = (tracemalloc.get_traced_memory()[0] - before) / len(models)
    del models
    gc.collect()
    # an evicted entity's checkpoint (its state bytes, keyed in the bank's checkpoints)
    before = tracemalloc.get_traced_memory()[0]
    checkpoints = {(name, f"urn:fleet-{e:06d}", "flow"): bytes(bytearray(state)) for e in range(n)}
    checkpoint_heap = (tracemalloc.get_traced_memory()[0] - before) / len(checkpoints)
    tracemalloc.stop()
    return {
        "pickled": len(state),
        "rss": rss_growth,
        "heap": heap,
        "model_heap": model_heap,
        "checkpoint_heap": checkpoint_heap,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=20)
    ap.add_argument("--points", type=int, default=1000, help="points per entity")
    ap.add_argument(
        "--fleet", type=int, default=0, help="also: memory of this many default-detector entities"
    )
    ap.add_argument("--detector", action="append", help="only these detectors (default: all)")
    args = ap.parse_args(argv)
    config = load_config()
    if args.fleet:
        n, f = args.fleet, fleet(config, config.default, args.fleet)
        print(
            f"{config.default}: {n} warmed-up entities in one bank: RSS +{f['rss'] / 2**20:.0f} MiB "
            f"({f['rss'] / n:.0f} B/entity), heap +{f['heap'] / 2**20:.0f} MiB ({f['heap'] / n:.0f} "
            f"B/entity, of which the model {f['model_heap']:.0f} B and the bank's bookkeeping "
            f"{f['heap'] / n - f['model_heap']:.0f} B); pickled state {f['pickled']} B/entity; "
            f"an evicted entity's checkpoint {f['checkpoint_heap']:.0f} B of heap"
        )
        print(
            f"  a worker at its limits (bank: max_entities {config.bank.max_entities}, max_checkpoints "
            f"{config.bank.max_checkpoints}): about "
            f"{((config.bank.max_entities or 0) * f['heap'] / n + (config.bank.max_checkpoints or 0) * f['checkpoint_heap']) / 2**20:.0f} MiB of heap"
        )
    data = rows(args.entities, args.points)
    samples = [(n, rows(n, args.points)) for n in (2, 5)]
    print(f"{len(data)} points over {args.entities} entities, DetectorBank.score_learn")
    print(
        f"{'detector':19s} {'points/s':>10s} {'points/CPU-s':>13s} {'pickled B/entity':>17s} "
        f"{'heap B/entity':>14s}"
    )
    for spec in config.detectors:
        if args.detector and spec.name not in args.detector:
            continue
        rate, cpu_rate, pickled, heap = bench(spec.name, config, data, samples)
        mark = "*" if spec.name == config.default else " "
        print(f"{mark}{spec.name:18s} {rate:10.0f} {cpu_rate:13.0f} {pickled:17.0f} {heap:14.0f}")


if __name__ == "__main__":
    main()
