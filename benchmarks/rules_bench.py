"""Rule engine throughput and state size.

    python -m benchmarks.rules_bench [--observations N]

Ten "real" rules match every observation (WaterObserved height/flow: thresholds with several
severities, for, hysteresis, keep_firing_for, avg/rate windows, absence, stuck); the other rules
(up to 10 000) sit on other entity types and attributes, as in a city-wide rule base, so they cannot
match. The figure to watch is the cost per observation with 10 000 rules ÷ with 10 (goal: ≤ 2).
Observations are plain dicts in the contract shape, fed in batches of 5 000 like the live agent.

Compound rules (``--compound``, also part of the default run): 1 000 compound rules (``all:`` of
two conditions on one entity's height and flow; one in ten a ``join`` on parish with a part on
another type) against 1 000 simple rules (one condition each; one in ten keyed by parish) on the
same observations: 100 entity types × 5 entities, each rule base has 10 rules per type, so every
observation (height + flow) feeds 10 rules of either kind. Runs are interleaved, the minimum of
5 is kept; the figure to watch is compound ÷ simple µs per observation (goal: ≤ 2).
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

from atalaia.rules.engine import RuleEngine
from atalaia.rules.loader import LoadedRule, RuleSet, load_texts
from atalaia.rules.schema import Rule

REAL = load_texts(
    [
        (
            "bench.yaml",
            """
group: bench
rules:
  - id: level
    select: {type: WaterObserved, attribute: height}
    severities:
      - {severity: critical, above: 4.5, clear_below: 4.2, for: 2m}
      - {severity: high, above: 3.5, clear_below: 3.3}
      - {severity: medium, above: 3.0}
    keep_firing_for: 5m
    annotations: {summary: "{{ entity }} at {{ value }} m"}
  - id: level-avg
    select: {type: WaterObserved, attribute: height}
    aggregate: {function: avg, window: 10m}
    severities: [{severity: high, above: 3.8}]
  - id: level-rate
    select: {type: WaterObserved, attribute: height}
    aggregate: {function: rate, window: 15m}
    severities: [{severity: high, above: 0.002}]
  - id: level-low
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: low, below: 0.5}]
  - id: level-district
    select: {type: WaterObserved, attribute: height, where: {district: "13"}}
    key: [parish]
    aggregate: {function: max, window: 5m}
    severities: [{severity: high, above: 4.0}]
  - id: flow-high
    select: {type: WaterObserved, attribute: flow}
    aggregate: {function: max, window: 30m}
    severities: [{severity: critical, above: 6000, for: 10m}, {severity: high, above: 3500}]
  - id: flow-sum
    select: {type: WaterObserved, attribute: flow}
    aggregate: {function: sum, window: 5m}
    severities: [{severity: medium, above: 20000}]
  - id: silent
    select: {type: WaterObserved}
    absent_for: 15m
    severity: medium
  - id: stuck
    select: {type: WaterObserved, attribute: height}
    stuck_for: 1h
    severity: low
  - id: flow-silent
    select: {type: WaterObserved, attribute: flow}
    absent_for: 30m
    severity: low
""",
        )
    ]
)

TYPES = [
    "AirQualityObserved",
    "WeatherObserved",
    "NoiseLevelObserved",
    "TrafficFlowObserved",
    "ParkingSpot",
    "StreetLight",
    "WasteContainer",
    "EnergyMeter",
    "WaterQualityObserved",
    "FloodMonitoring",
]


def ruleset(n: int) -> RuleSet:
    """The 10 real rules plus n - 10 that cannot match the benchmark's observations."""
    filler = []
    for i in range(max(n - len(REAL), 0)):
        rule = Rule.model_validate(
            {
                "id": f"filler-{i}",
                "select": {"type": TYPES[i % len(TYPES)], "attribute": f"attr{i % 997}"},
                "aggregate": {"function": "avg", "window": "10m"} if i % 3 == 0 else None,
                "severities": [
                    {"severity": "high", "above": 100.0 + i % 50, "for": "5m"},
                    {"severity": "medium", "above": 50.0},
                ],
            }
        )
        filler.append(LoadedRule(rule, "filler", "<generated>", 0))
    return RuleSet([*REAL.rules, *filler])


def observations(count: int, keys: int) -> list[dict]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(count):
        k = i % keys
        t = start + timedelta(seconds=(i // keys) * 60 + k * 60 / keys)  # every key once a minute
        phase = (i // keys) % 240
        height = (
            2.0 + 2.8 * abs(120 - phase) / 120 + (k % 7) * 0.05
        )  # slow floods, some keys cross thresholds
        out.append(
            {
                "time": t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "entity": f"urn:ngsi-ld:WaterObserved:g{k}",
                "type": "WaterObserved",
                "attributes": {"height": round(height, 3), "flow": 1000.0 + 30 * phase + k},
                "labels": {"district": "13" if k % 2 else "11", "parish": f"p{k % 20}"},
            }
        )
    return out


def run(n_rules: int, data: list[dict], batch: int = 5000) -> dict[str, float]:
    engine = RuleEngine(ruleset(n_rules))
    gc.collect()
    transitions = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(0, len(data), batch):
        out, rejected = engine.observe_batch(data[i : i + batch])
        assert not rejected, rejected[:1]
        transitions += len(out)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    evaluations = engine.stats["evaluations"]
    return {
        "rules": n_rules,
        "seconds": elapsed,
        "obs_per_s": len(data) / elapsed,
        "evals_per_s": evaluations / elapsed,
        "us_per_obs": elapsed / len(data) * 1e6,
        "evals_per_obs": evaluations / len(data),
        "transitions": transitions,
        "cpu_us_per_obs": cpu / len(data) * 1e6,
    }


COMPOUND_TYPES = 100


def compound_observations(count: int, keys: int = 500) -> list[dict]:
    """Like ``observations`` but spread over ``COMPOUND_TYPES`` entity types (keys // types each)."""
    out = observations(count, keys)
    for i, obs in enumerate(out):
        k = i % keys
        typ = f"Gauge{k % COMPOUND_TYPES}"
        obs["type"] = typ
        obs["entity"] = f"urn:ngsi-ld:{typ}:g{k}"
    return out


def _level(i: int) -> dict:
    """The i-th rule's condition on height (even i) or flow (odd i): thresholds the data crosses
    now and then, a third with an aggregate, a fifth with ``for``, a seventh with hysteresis."""
    if i % 2 == 0:
        cond: dict = {"attribute": "height", "above": 3.5 + (i % 10) * 0.1}
        if i % 7 == 0:
            cond["clear_below"] = cond["above"] - 0.2
    else:
        cond = {"attribute": "flow", "above": 4000.0 + (i % 13) * 200}
        if i % 7 == 1:
            cond["clear_below"] = cond["above"] - 300
    if i % 3 == 0:
        cond["aggregate"] = {"function": ("avg", "max", "delta")[i % 9 // 3], "window": "10m"}
        if cond["aggregate"]["function"] == "delta":
            cond["above"] = 0.05 if cond["attribute"] == "height" else 100.0
            cond.pop("clear_below", None)
    if i % 5 == 0:
        cond["for"] = "2m"
    return cond


def simple_rules(n: int = 1000) -> RuleSet:
    """n simple rules, n // COMPOUND_TYPES per type; one in ten keyed by parish."""
    rules = []
    for i in range(n):
        typ, j = f"Gauge{i % COMPOUND_TYPES}", i // COMPOUND_TYPES
        cond = _level(i)
        level = {k: v for k, v in cond.items() if k not in ("attribute", "aggregate")}
        rule: dict = {
            "id": f"simple-{i}",
            "select": {"type": typ, "attribute": cond["attribute"]},
            "severities": [{"severity": "high", **level}],
        }
        if "aggregate" in cond:
            rule["aggregate"] = cond["aggregate"]
        if j % 10 == 9:
            rule["key"] = ["parish"]
        rules.append(LoadedRule(Rule.model_validate(rule), "simple", "<generated>", 0))
    return RuleSet(rules)


def compound_rules(n: int = 1000) -> RuleSet:
    """n compound rules, n // COMPOUND_TYPES per type: all of height and flow on one entity; one in
    ten a join on parish whose flow part is on the next type."""
    rules = []
    for i in range(n):
        typ, j = f"Gauge{i % COMPOUND_TYPES}", i // COMPOUND_TYPES
        height, flow = _level(2 * i), _level(2 * i + 1)
        rule: dict = {
            "id": f"compound-{i}",
            "select": {"type": typ},
            "all": [height, flow],
            "severity": "high",
        }
        if j % 10 == 9:
            flow["type"] = f"Gauge{(i + 1) % COMPOUND_TYPES}"
            rule["join"] = {"on": ["parish"], "within": "10m"}
        rules.append(LoadedRule(Rule.model_validate(rule), "compound", "<generated>", 0))
    return RuleSet(rules)


def run_set(ruleset: RuleSet, data: list[dict], batch: int = 5000) -> dict[str, float]:
    engine = RuleEngine(ruleset)
    gc.collect()
    transitions = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(0, len(data), batch):
        out, rejected = engine.observe_batch(data[i : i + batch])
        assert not rejected, rejected[:1]
        transitions += len(out)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {
        "us_per_obs": elapsed / len(data) * 1e6,
        "cpu_us_per_obs": cpu / len(data) * 1e6,
        "evals_per_obs": engine.stats["evaluations"] / len(data),
        "transitions": transitions,
    }


def compound_vs_simple(count: int, repeats: int = 5) -> None:
    data = compound_observations(count)
    sets = {"simple": simple_rules(), "compound": compound_rules()}
    run_set(sets["compound"], data[:5000])  # warm-up
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeats):  # interleaved: both see the same machine load
        for name, rs in sets.items():
            r = run_set(rs, data)
            if name not in best or r["cpu_us_per_obs"] < best[name]["cpu_us_per_obs"]:
                best[name] = r
    print(
        f"{count} observations of {COMPOUND_TYPES} types (500 entities, height + flow); 1 000 rules, "
        f"10 per type; min of {repeats} interleaved runs"
    )
    print(f"{'rules':>16} {'µs/obs':>8} {'cpu µs/obs':>10} {'evals/obs':>9} {'transitions':>11}")
    for name, label in (("simple", "1 000 simple"), ("compound", "1 000 compound")):
        r = best[name]
        print(
            f"{label:>16} {r['us_per_obs']:>8.2f} {r['cpu_us_per_obs']:>10.2f} {r['evals_per_obs']:>9.1f} "
            f"{r['transitions']:>11}"
        )
    s, c = best["simple"], best["compound"]
    print(
        f"ratio µs/obs compound ÷ simple: wall {c['us_per_obs'] / s['us_per_obs']:.2f}, "
        f"cpu {c['cpu_us_per_obs'] / s['cpu_us_per_obs']:.2f} (goal ≤ 2)"
    )


def state_size(data: list[dict]) -> dict[str, float]:
    """Bytes per (rule, key): snapshot bytes and Python heap (tracemalloc), with full windows."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine = RuleEngine(ruleset(10))
    engine.observe_batch(data)
    live = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    states = engine.state_count()
    t0 = time.perf_counter()
    snap = engine.snapshot()
    snapshot_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    RuleEngine.restore(ruleset(10), snap)
    restore_s = time.perf_counter() - t0
    return {
        "states": states,
        "snapshot_bytes_per_state": len(snap) / states,
        "heap_bytes_per_state": live / states,
        "snapshot_mb": len(snap) / 1e6,
        "restore_s": restore_s,
        "snapshot_s": snapshot_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--observations", type=int, default=100_000)
    ap.add_argument("--keys", type=int, default=500)
    ap.add_argument("--compound", action="store_true", help="only the compound ÷ simple comparison")
    ap.add_argument("--compound-observations", type=int, default=30_000)
    args = ap.parse_args()
    if args.compound:
        compound_vs_simple(args.compound_observations)
        return
    data = observations(args.observations, args.keys)
    print(f"{args.observations} observations, {args.keys} keys, 2 attributes each, batches of 5000")
    run(10, data[:5000])  # warm-up
    rows = [run(n, data) for n in (10, 1_000, 10_000)]
    print("wall-clock figures; 'cpu µs/obs' is process CPU time (robust when the machine is shared)")
    print(
        f"{'rules':>6} {'obs/s':>10} {'evals/s':>10} {'µs/obs':>8} {'cpu µs/obs':>10} {'evals/obs':>9} "
        f"{'transitions':>11}"
    )
    for r in rows:
        print(
            f"{r['rules']:>6} {r['obs_per_s']:>10,.0f} {r['evals_per_s']:>10,.0f} {r['us_per_obs']:>8.2f} "
            f"{r['cpu_us_per_obs']:>10.2f} {r['evals_per_obs']:>9.1f} {r['transitions']:>11}"
        )
    print(
        f"ratio µs/obs 10 000 rules ÷ 10 rules: wall {rows[2]['us_per_obs'] / rows[0]['us_per_obs']:.2f}, "
        f"cpu {rows[2]['cpu_us_per_obs'] / rows[0]['cpu_us_per_obs']:.2f} (goal ≤ 2)"
    )
    size = state_size(data[: min(len(data), 60 * args.keys)])  # one hour of data: windows are full
    print(
        f"state: {size['states']} (rule, key) states; snapshot {size['snapshot_bytes_per_state']:.0f} B/state, "
        f"heap {size['heap_bytes_per_state']:.0f} B/state"
    )
    print(
        f"snapshot {size['snapshot_mb']:.1f} MB written in {size['snapshot_s'] * 1000:.0f} ms "
        f"({size['snapshot_s'] / size['states'] * 1e6:.1f} µs/state), restored in {size['restore_s'] * 1000:.0f} ms "
        f"({size['restore_s'] / size['states'] * 1e6:.1f} µs/state)"
    )
    print()
    compound_vs_simple(args.compound_observations)


if __name__ == "__main__":
    main()
