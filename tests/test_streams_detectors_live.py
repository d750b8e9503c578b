"""Detectors on the real broker (issue 5): observations → detector scores → alarms of rules with
`detector:`, equal to `atalaia rules replay --detectors` of the same file, also when the worker is
killed in the middle; the restarted worker continues from the models in its checkpoint (a fresh
model would still be warming up and miss the anomalies that come right after the restart)."""

from __future__ import annotations

import asyncio
import json
import math
import random
import subprocess
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from tests.conftest import ATALAIA, ROOT, consume_all

pytestmark = pytest.mark.broker

DETECTORS = ROOT / "config" / "detectors.yaml"

RULES = """
group: hydro
rules:
  - id: flow-anomaly
    select: {type: WaterObserved, attribute: flow}
    detector: hst-default
    severities: [{severity: medium, above: 0.9}]
    keep_firing_for: 30m
  - id: flow-gauss
    select: {type: WaterObserved, attribute: flow}
    detector: gaussian
    severities: [{severity: high, above: 0.999}, {severity: low, above: 0.99}]
  - id: flow-default
    select: {type: WaterObserved, attribute: flow}
    detector: novelty-evt-mean
    severities: [{severity: medium, above: 0.45}]
    keep_firing_for: 30m
"""

ENTITIES, STEPS, STEP = 6, 600, timedelta(minutes=10)
T0 = datetime(2026, 1, 10, tzinfo=UTC)
# the worker is killed after it checkpointed steps [0, SPLIT_A) and while it processes
# [SPLIT_A, HALF); hst-default warms up for 150 points, so a model started fresh at the
# checkpoint (step >= SPLIT_A) could not score before step SPLIT_A + 150 = 400
SPLIT_A, HALF = 250, 300
# spikes: before the checkpoint (200, 210), between it and the kill (275: re-processed by the
# restarted worker), right after the kill (330, 340, 360, 380: inside a fresh model's warm-up)
# and late (470, 500, 540)
ANOMALIES = {0: (200, 340, 500), 1: (330, 470), 2: (380,), 3: (275,), 4: (210, 360, 540)}
# a frozen sensor after the kill: entity 5 repeats its reading of step 420 until step 440 (the
# default detector tells it on the third equal reading, from the run counts in the checkpoint)
FROZEN = {5: range(420, 440)}


def entity(e: int) -> str:
    return f"urn:ngsi-ld:WaterObserved:d{e:02d}"


def make_history(seed: int = 5) -> list[list[str]]:
    """Per step, one line per entity: a daily cycle plus noise, with +150 spikes."""
    rng = random.Random(seed)
    steps = []
    for k in range(STEPS):
        row = []
        for e in range(ENTITIES):
            t = T0 + k * STEP + timedelta(seconds=7 * e)
            v = 100 + 10 * e + 30 * math.sin(2 * math.pi * k / 144 + e) + rng.gauss(0, 3)
            if k in ANOMALIES.get(e, ()):
                v += 150
            frozen = FROZEN.get(e, ())
            if k in frozen and k > frozen[0]:
                v = float(json.loads(steps[frozen[0]][e])["attributes"]["flow"])
            row.append(
                json.dumps(
                    {
                        "time": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "entity": entity(e),
                        "type": "WaterObserved",
                        "attributes": {"flow": round(v, 3)},
                    }
                )
            )
        steps.append(row)
    return steps


def write(path: Path, steps: list[list[str]]) -> Path:
    path.write_text("".join(line + "\n" for row in steps for line in row))
    return path


def step_of(at: str) -> int:
    return int((datetime.fromisoformat(at.replace("Z", "+00:00")) - T0) // STEP)


def replay(rules: Path, history: Path) -> list[dict]:
    r = subprocess.run(
        [ATALAIA, "rules", "replay", str(rules), str(history), "--detectors", str(DETECTORS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def per_key(transitions: list[dict]) -> dict[tuple[str, str], list[tuple]]:
    out: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for t in transitions:
        out[(t["rule"], t["key"])].append((t["at"], t["state"], t["severity"], t["value"]))
    return dict(out)


def firings(transitions: list[dict], rule: str) -> set[tuple[str, int]]:
    return {(t["key"], step_of(t["at"])) for t in transitions if t["rule"] == rule and t["state"] == "firing"}


def send(env: dict, path: Path) -> None:
    r = subprocess.run([ATALAIA, "send", str(path)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def checkpointed(data_dir: Path, topic: str) -> dict[int, int]:
    """Offsets of `topic` in the rules stage's checkpoint files, per partition."""
    from atalaia.streams.stage import Checkpoints

    out = {}
    for f in sorted((data_dir / "state" / "rules").glob("p*.ckpt")):
        ckpt = Checkpoints(f.parent).load(int(f.stem[1:]))
        if ckpt and topic in ckpt[0]:
            out[int(f.stem[1:])] = ckpt[0][topic]
    return out


def wait_for(what: str, cond, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_detector_alarms_equal_replay_and_models_survive_a_worker_kill(
    broker, topic_prefix, make_worker, tmp_path
):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    steps = make_history()
    history = write(tmp_path / "history.jsonl", steps)
    n = ENTITIES * STEPS
    expected = replay(rules, history)
    fired = firings(expected, "flow-anomaly")
    assert {(entity(3), 275), (entity(1), 330), (entity(2), 380)} <= fired, (
        "spikes around the kill raise alarms"
    )
    assert any(k < SPLIT_A for _, k in fired) and any(k > 400 for _, k in fired)
    assert (entity(5), 422) in firings(expected, "flow-default"), "a frozen sensor raises an alarm"
    part_a = write(tmp_path / "a.jsonl", steps[:SPLIT_A])
    part_b = write(tmp_path / "b.jsonl", steps[SPLIT_A:HALF])
    second = write(tmp_path / "c.jsonl", steps[HALF:])
    n_a, n_half = ENTITIES * SPLIT_A, ENTITIES * HALF

    env = {"ATALAIA_RULES_PATHS": json.dumps([str(rules)]), "ATALAIA_DETECTORS_PATH": str(DETECTORS)}
    w = make_worker("--stages", "ingest,rules", extra_env=env).start(("ingest", "rules"))
    data_dir, observations = Path(w.env["ATALAIA_DATA_DIR"]), f"{topic_prefix}.observations"
    send(w.env, part_a)
    # models and offsets of the first part are on disk (checkpoints every 2 s) ...
    wait_for(
        "the first part in a checkpoint", lambda: sum(checkpointed(data_dir, observations).values()) >= n_a
    )
    send(w.env, part_b)
    # ... and the worker dies while it processes the second, between checkpoints
    wait_for(
        "the rules stage to reach the second part",
        lambda: w.health()["stages"]["rules"]["processed"] >= n_a + (n_half - n_a) // 2,
    )
    w.kill()
    ckpt = checkpointed(data_dir, observations)
    assert n_a <= sum(ckpt.values()) <= n_half, ckpt
    send(w.env, second)
    w2 = make_worker("--stages", "ingest,rules", extra_env=env, port=w.port).start(("ingest", "rules"))

    want = per_key(expected)
    deadline = time.monotonic() + 60
    while True:
        records = asyncio.run(consume_all(broker, f"{topic_prefix}.alarms", idle=3.0, timeout=60))
        unique = list({t["id"]: t for t in (orjson.loads(r.value) for r in records)}.values())
        live = per_key(unique)
        if live == want or time.monotonic() > deadline:
            break
    diff = {k: (live.get(k), want.get(k)) for k in set(live) | set(want) if live.get(k) != want.get(k)}
    assert not diff, "\n".join(f"{k}:\n  live   {a}\n  replay {b}" for k, (a, b) in sorted(diff.items()))

    # the second worker resumed from the checkpoint: it read only what came after it (re-ingested
    # events of the second part included), not the stream from the start
    log = w2.log.read_text()
    assert all(f"rules: partition {p} restored from checkpoint" in log for p in ckpt), log[-3000:]
    obs = asyncio.run(consume_all(broker, observations, expect=n, idle=2.0, timeout=30))
    assert 0 < w2.health()["stages"]["rules"]["processed"] <= len(obs) - sum(ckpt.values())
    # and from the checkpointed models: a fresh model at the checkpoint (= replaying only what
    # came after it) is still warming up at the first spikes after the kill and misses them
    after = {
        (o["entity"], o["time"]): line
        for r in obs
        if r.offset >= ckpt.get(r.partition, 0)
        for line in [r.value.decode()]
        for o in [json.loads(line)]
    }
    fresh = replay(
        rules, write(tmp_path / "after-ckpt.jsonl", [[after[k] for k in sorted(after, key=lambda k: k[1])]])
    )
    missed = fired - firings(fresh, "flow-anomaly")
    assert {(entity(1), 330), (entity(2), 380)} <= missed, (missed, fresh)
    dlq = asyncio.run(consume_all(broker, f"{topic_prefix}.dlq", idle=1.0))
    assert dlq == [], "nothing in this history is late or malformed"
