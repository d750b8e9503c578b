"""CPU per record of the consuming stage cores, records given as the bytes they read from their
topic (decode + the core's work + encoding its outputs; no broker). < 1 min.

    nice .venv/bin/python -m benchmarks.stages_bench

* incidents: ``IncidentsCore.process`` on ``atalaia.alarms`` records (batches of 5 000);
* escalation: ``EscalationCore.process`` on the ``atalaia.incidents`` records it made;
* projection: ``ProjectionCore.aprocess`` on the same records (SQLite in memory, batches of 2 000);
* rules (not fused): ``RulesCore.process`` on ``atalaia.observations`` records (10 rules);
* decode only: each topic's record decoded alone, as its consumers do.

The best of three runs is kept (the machine is shared).
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import orjson

from benchmarks.incidents_bench import city_alarms

NOW = 1_796_403_600.0


def records(values: list[bytes], topic: str) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(value=v, topic=topic, offset=i, headers=[], timestamp=1_769_594_400_000)
        for i, v in enumerate(values)
    ]


def best(fn, n: int, runs: int = 3) -> float:
    """µs per record, the best of ``runs``."""
    times = []
    for _ in range(runs):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return 1e6 * min(times) / n


def incidents() -> list[bytes]:
    from atalaia.incidents.config import IncidentConfig
    from atalaia.incidents.scenarios import STORM_CONFIG
    from atalaia.incidents.stage import IncidentsCore

    cfg = IncidentConfig.model_validate(
        {**STORM_CONFIG, "closing": {"after": 0, "require_acknowledged": False}}
    )
    alarms = records(
        [orjson.dumps(a) for a in city_alarms(30_000, areas=60, sensors_per_area=20)], "atalaia.alarms"
    )
    made: list[bytes] = []

    def run() -> None:
        core = IncidentsCore(cfg)
        made.clear()
        for i in range(0, len(alarms), 5000):
            made.extend(o.value for o in core.process(alarms[i : i + 5000], NOW) if o.topic == "incidents")

    print(f"incidents core   (atalaia.alarms)     : {best(run, len(alarms)):6.2f} µs/record")
    return list(made)


def escalation(events: list[bytes]) -> None:
    from atalaia.notifiers.config import load_config
    from atalaia.notifiers.stage import EscalationCore
    from atalaia.streams.settings import CONFIG_DIR

    cfg = load_config(CONFIG_DIR / "escalation.yaml")
    recs = records(events, "atalaia.incidents")

    def run() -> None:
        core = EscalationCore(cfg)
        for i in range(0, len(recs), 2000):
            core.process(recs[i : i + 2000], NOW)

    print(f"escalation core  (atalaia.incidents)  : {best(run, len(recs)):6.2f} µs/record")


def projection(events: list[bytes]) -> None:
    from atalaia.incidents.projection import Projection
    from atalaia.incidents.stage import ProjectionCore
    from atalaia.streams.sink import Sink

    recs = records(events[:10_000], "atalaia.incidents")

    def run() -> None:
        sink = Sink(lambda: Projection.connect("sqlite://:memory:"), "projection")
        core = ProjectionCore(sink)

        async def go() -> None:
            for i in range(0, len(recs), 2000):
                await core.aprocess(recs[i : i + 2000], NOW)

        asyncio.run(go())
        sink.close()

    # process_time counts the sink's thread too (it is this process's CPU)
    print(f"projection core  (atalaia.incidents)  : {best(run, len(recs)):6.2f} µs/record (SQLite)")


def rules() -> None:
    from atalaia.detectors.config import load_config
    from atalaia.rules.stage import RuleFiles, RulesCore
    from atalaia.streams.settings import CONFIG_DIR, Settings

    obs = []
    for i in range(20_000):
        t = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_769_594_400 + i))
        obs.append(
            {
                "time": t,
                "entity": f"urn:ngsi-ld:WaterObserved:s{i % 500}",
                "type": "WaterObserved",
                "attributes": {"height": 1.0 + (i % 7) * 0.5, "flow": 10.0 + i % 3},
                "location": [-8.61, 41.14],
                "source": "bench",
                "labels": {"parish": f"p{i % 20}"},
                "quality": [],
                "time_source": "observed",
                "id": f"{i:024x}",
            }
        )
    recs = records([orjson.dumps(o) for o in obs], "atalaia.observations")

    def run() -> None:
        core = RulesCore(
            RuleFiles([CONFIG_DIR / "rules"]),
            load_config(CONFIG_DIR / "detectors.yaml"),
            Settings(reorder_s=0),
        )
        for i in range(0, len(recs), 5000):
            core.process(recs[i : i + 5000], NOW)

    print(f"rules core       (atalaia.observations): {best(run, len(recs)):6.2f} µs/record (not fused)")


def decode_only(events: list[bytes]) -> None:
    """What each consumer pays to turn one record's bytes into what its core reads."""
    from atalaia.streams import records as rec_mod

    alarm = orjson.dumps(city_alarms(1, 1, 1)[0])
    samples = {
        "alarm": (alarm, "atalaia.alarms"),
        "incident event": (events[len(events) // 2], "atalaia.incidents"),
    }
    for name, (value, topic) in samples.items():
        batch = records([value] * 20_000, topic)
        if hasattr(rec_mod, "Problem"):  # before: orjson.loads + the hand-written check
            from atalaia.incidents.events import incident_event_problem
            from atalaia.rules.alarm import alarm_problem

            problem = alarm_problem if name == "alarm" else incident_event_problem
            us = best(lambda b=batch, p=problem: rec_mod.decode(b, p), len(batch))
        else:
            from atalaia.incidents.events import decode_incident_record
            from atalaia.rules.alarm import decode_alarm

            dec = decode_alarm if name == "alarm" else decode_incident_record
            us = best(lambda b=batch, d=dec: rec_mod.decode(b, d), len(batch))
        print(f"decode only      {name:22s}: {us:6.2f} µs/record")


def main() -> None:
    events = incidents()
    escalation(events)
    projection(events)
    rules()
    decode_only(events)


if __name__ == "__main__":
    main()
