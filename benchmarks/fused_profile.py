"""CPU per event of the fused ingest+rules core alone (no broker, no consumer, no producer), and
a pyinstrument profile of it:

    python -m benchmarks.fused_profile [N_EVENTS] [--rules 1000] [--profile FILE] [--repeat 3]

The events are ``ingest_bench``'s (one-entity NGSI-LD keyValues notifications of 500 entities,
each with its own ``dateObserved``), fed to ``IngestRulesCore.process`` in batches of 5 000 as
the stage would, with the Porto rules + fillers (1 000 rules) and the ``record-novelty``
detector, after ``settle_heap()`` as the stage process does at start-up. Every observation
belongs to the core's partition (the read-back of ``atalaia.observations`` is not part of this
figure). The CPU time is the steady figure on a shared machine; the profile (text) shows where
it goes.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from benchmarks.ingest_bench import make_event, rule_paths


@dataclass(slots=True)
class Record:
    """What the stage hands a core: aiokafka's ConsumerRecord fields the cores read."""

    topic: str
    value: bytes
    key: bytes
    headers: Any
    timestamp: int
    offset: int
    partition: int = 0


def core_and_records(n: int, rules: int, state: Path) -> tuple[Any, list[Record]]:
    from atalaia.detectors.config import load_config
    from atalaia.rules.fused import IngestRulesCore
    from atalaia.rules.stage import RuleFiles
    from atalaia.streams.ingest.events import RawEvent
    from atalaia.streams.settings import CONFIG_DIR, Settings

    settings = Settings(topic_prefix="cpu", allowed_lateness_s=1e9)
    files = RuleFiles(rule_paths(state, rules))
    core = IngestRulesCore(0, settings, files, load_config(CONFIG_DIR / "detectors.yaml"), None)
    core.partitions = 1  # every observation is this core's: evaluated here
    headers = RawEvent(body=b"", source="bench", content_type="application/json").headers()
    records = [
        Record(
            "cpu.events",
            make_event(i),
            f"urn:ngsi-ld:WaterObserved:porto-{i % 500:03d}".encode(),
            headers,
            1_700_000_000_000 + i,
            i,
        )
        for i in range(n)
    ]
    return core, records


def feed(core: Any, records: list[Record], batch: int = 5000) -> int:
    now, outs = time.time(), 0
    for i in range(0, len(records), batch):
        outs += len(core.process(records[i : i + batch], now))
    return outs


def settle() -> None:
    try:  # what a stage process does at start-up (where the code has it)
        from atalaia.streams.stage import settle_heap
    except ImportError:
        return
    settle_heap()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("events", type=int, nargs="?", default=30_000)
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", type=Path, default=None, help="write a pyinstrument text profile here")
    args = ap.parse_args()
    with TemporaryDirectory() as tmp:
        warm, recs = core_and_records(2000, args.rules, Path(tmp) / "warm")
        feed(warm, recs)  # imports, caches, compiled patterns
        runs = []
        for r in range(args.repeat):
            core, recs = core_and_records(args.events, args.rules, Path(tmp) / f"run{r}")
            settle()
            c0 = time.process_time()
            feed(core, recs)
            runs.append((time.process_time() - c0) / args.events * 1e6)
        print(
            f"fused ingest+rules core, {args.rules} rules, {args.events} events: "
            f"{min(runs):.1f} µs CPU per event (min of {args.repeat}; runs "
            f"{', '.join(f'{x:.1f}' for x in runs)})"
        )
        if args.profile:
            from pyinstrument import Profiler

            core, recs = core_and_records(args.events, args.rules, Path(tmp) / "profiled")
            settle()
            profiler = Profiler(interval=0.0005)
            profiler.start()
            feed(core, recs)
            profiler.stop()
            args.profile.parent.mkdir(parents=True, exist_ok=True)
            args.profile.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
            print(f"profile: {args.profile}")


if __name__ == "__main__":
    main()
