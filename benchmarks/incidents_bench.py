"""Incident manager throughput: alarm transitions per second through ``step_batch`` (batches of
5000, as the stage hands them), plus snapshot/restore and the SQLite projection. < 1 min.

    nice .venv/bin/python -m benchmarks.incidents_bench
"""

from __future__ import annotations

import os
import random
import statistics
import time

from atalaia.incidents.config import IncidentConfig
from atalaia.incidents.events import IncidentEvent
from atalaia.incidents.manager import IncidentManager
from atalaia.incidents.projection import Projection
from atalaia.incidents.scenarios import STORM_CONFIG, porto_storm
from atalaia.incidents.testing import at_s

BATCH = 5000


def city_alarms(n: int, areas: int, sensors_per_area: int, seed: int = 1) -> list[dict]:
    """n transitions over a city: each sensor alternates firing/resolved with drifting values."""
    rnd = random.Random(seed)
    state: dict[str, bool] = {}
    out = []
    t = 0.0
    for _ in range(n):
        t += rnd.expovariate(20.0)  # ~20 transitions/s of event time
        area = rnd.randrange(areas)
        key = f"urn:ngsi-ld:Device:a{area}-s{rnd.randrange(sensors_per_area)}"
        firing = not state.get(key, False)
        state[key] = firing
        out.append(
            {
                "at": at_s(round(t, 3)),
                "rule": "river-level-high",
                "key": key,
                "state": "firing" if firing else "resolved",
                "severity": rnd.choice(["medium", "high", "critical"]),
                "value": rnd.random() * 5,
                "entity": key,
                "group": "hydro",
                "labels": {"parish": f"parish-{area}", "station": f"st-{area}"},
            }
        )
    return out


def run(name: str, mgr: IncidentManager, alarms: list[dict], repeat: int = 3) -> tuple[float, list]:
    rates = []
    outs: list = []
    for _ in range(repeat):
        state = mgr.initial_state()
        outs = []
        t0 = time.perf_counter()
        for i in range(0, len(alarms), BATCH):
            batch = alarms[i : i + BATCH]
            state, out = mgr.step_batch(state, batch, batch[-1]["at"])
            outs.extend(out)
        rates.append(len(alarms) / (time.perf_counter() - t0))
    rate = statistics.median(rates)
    events = sum(isinstance(o, IncidentEvent) for o in outs)
    print(
        f"{name:<44} {rate:>10,.0f} alarms/s  ({len(alarms):,} transitions -> {events:,} incident events, "
        f"{len(state.incidents)} open incidents)"
    )
    return rate, [state, outs]


def open_incidents_scaling(cfg: IncidentConfig, sizes: tuple[int, ...] = (10, 100, 1_000, 10_000)) -> None:
    """CPU per alarm with N incidents already open (issue 11: O(1) per alarm whatever N): N parishes
    each get one firing sensor (N open incidents), then 20 000 transitions flap 10 sensors of 10 of
    those parishes, and only those are timed (median of 3)."""
    mgr = IncidentManager(cfg)
    base = None
    for n in sizes:
        opening = [
            {
                "at": at_s(i * 0.01),
                "rule": "river-level-high",
                "key": f"urn:ngsi-ld:Device:open-{i}",
                "state": "firing",
                "severity": "high",
                "value": 5.0,
                "entity": f"urn:ngsi-ld:Device:open-{i}",
                "group": "hydro",
                "labels": {"parish": f"parish-{i}", "station": f"st-{i}"},
            }
            for i in range(n)
        ]
        t0 = n * 0.01 + 1
        flaps = [
            {
                **opening[k % 10],
                "at": at_s(t0 + k * 0.05),
                "key": f"urn:ngsi-ld:Device:flap-{k % 10}",
                "entity": f"urn:ngsi-ld:Device:flap-{k % 10}",
                "state": "firing" if (k // 10) % 2 == 0 else "resolved",
            }
            for k in range(20_000)
        ]
        costs = []
        for _ in range(3):
            state = mgr.initial_state()
            for i in range(0, n, BATCH):
                state, _ = mgr.step_batch(state, opening[i : i + BATCH], opening[min(i + BATCH, n) - 1]["at"])
            c0 = time.process_time()
            for i in range(0, len(flaps), BATCH):
                state, _ = mgr.step_batch(state, flaps[i : i + BATCH], flaps[i + BATCH - 1]["at"])
            costs.append((time.process_time() - c0) / len(flaps) * 1e6)
        cost = statistics.median(costs)
        base = base or cost
        print(
            f"{n:>6,} open incidents: {cost:6.1f} µs CPU per alarm "
            f"({len(state.incidents):,} incidents after; x{cost / base:.2f} of the first row)"
        )


def main() -> None:
    cfg = IncidentConfig.model_validate(
        {**STORM_CONFIG, "closing": {"after": 0, "require_acknowledged": False}}
    )
    open_incidents_scaling(cfg)
    mgr = IncidentManager(cfg)
    city = city_alarms(30_000, areas=60, sensors_per_area=20)
    _, (state, outs) = run("city: 60 parishes x 20 sensors", mgr, city)
    events = [o for o in outs if isinstance(o, IncidentEvent)]
    big = city_alarms(15_000, areas=4, sensors_per_area=300, seed=2)
    run("storm: 4 parishes x 300 sensors (big incidents)", mgr, big)
    storm = porto_storm(scale=10)
    run(
        f"porto storm x10 ({len(storm)} with redeliveries)",
        IncidentManager(IncidentConfig.model_validate(STORM_CONFIG)),
        storm,
    )

    t0 = time.perf_counter()
    blob = mgr.snapshot(state)
    t1 = time.perf_counter()
    restored = mgr.restore(blob)
    t2 = time.perf_counter()
    alarms = sum(len(i.alarms) for i in restored.incidents.values())
    print(
        f"snapshot {len(blob) / 1024:,.0f} KiB ({len(restored.incidents)} incidents, {alarms} alarms): "
        f"dump {1000 * (t1 - t0):.1f} ms, restore {1000 * (t2 - t1):.1f} ms"
    )

    project("SQLite", "sqlite://:memory:", events[:10_000])
    try:
        project(
            "PostgreSQL", "postgresql://127.0.0.1:5432/test", events[:10_000], schema=f"bench_{os.getpid()}"
        )
    except Exception as e:  # no server: say so, do not fail the benchmark run
        print(f"PostgreSQL projection: skipped ({type(e).__name__}: {str(e)[:80]})")


def project(name: str, url: str, sample: list[IncidentEvent], schema: str | None = None) -> None:
    proj = Projection.connect(url, schema=schema)
    try:
        t0 = time.perf_counter()
        for i in range(0, len(sample), 2000):
            proj.apply(sample[i : i + 2000])
        dt = time.perf_counter() - t0
        print(f"{name} projection: {len(sample) / dt:,.0f} incident events/s applied (batches of 2000)")
    finally:
        if schema:
            proj.conn.rollback()
            proj.conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            proj.conn.commit()
        proj.close()


if __name__ == "__main__":
    main()
