"""Produce → alarm latency on ``atalaia up`` as users start it, and what a storm does to it.

    python -m benchmarks.latency_bench [--seconds S] [--storm-seconds S] [--variants before,after]
                                       [--profile DIR]

For each variant a fresh ``atalaia up`` (embedded broker, its own data directory and port) is
started as a subprocess; this process is the outside world: it produces NGSI-LD keyValues
notifications to ``atalaia.events`` (keyed by entity, as ``atalaia send`` does) at a fixed
offered rate and reads ``atalaia.alarms``. The rule set is one rule (``height`` above 3.5). Each
event's ``dateObserved`` is its send time, so an alarm transition's ``at`` is the send time of
the observation that caused it: latency = time the transition is read − ``at``.

* steady: 1 000 entities, 10 of them flapping (every observation crosses the threshold), at
  1 000 and 5 000 events/s;
* storm: all 1 000 entities flapping at 1 000 events/s for ``--storm-seconds`` (30), i.e.
  1 000 alarm transitions/s into incidents, projection and escalation; then 200 events/s (10
  flapping) and the p99 of what was sent from 5 s after the storm on.

Variants: ``before`` = every stage in one process, ingest and rules as two stages (``atalaia up
--single-process`` with ``ATALAIA_FUSE_INGEST_RULES=0``: the layout before issue 11); ``after``
= ``atalaia up`` (two processes, fused ingest+rules). ``--profile DIR`` records py-spy profiles
(collapsed stacks ``.txt`` and a top-functions summary ``.top``) of every worker process during
each steady run. ``--timing DIR`` has every stage loop log where its time goes
(``ATALAIA_STAGE_TIMING``, ``streams.stage.PhaseTimes``) to ``DIR/<variant>-timing.log``.

Beside each figure: the load average when the phase ended (the machine is shared: wall-clock
figures move with it) and the CPU each worker process used during the phase (% of one core).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from atalaia.streams.kafka_config import client_options

RULES = """
group: bench
rules:
  - id: level-high
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: high, above: 3.5}]
"""
ENTITIES = 1000


def event(entity: int, height: float, t: float) -> bytes:
    stamp = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return orjson.dumps(
        {
            "id": f"urn:ngsi-ld:Notification:{entity}-{t}",
            "type": "Notification",
            "subscriptionId": "urn:ngsi-ld:Subscription:bench",
            "notifiedAt": stamp,
            "data": [
                {
                    "id": f"urn:ngsi-ld:WaterObserved:e{entity:04d}",
                    "type": "WaterObserved",
                    "dateObserved": stamp,
                    "height": height,
                    "location": {"type": "Point", "coordinates": [-8.61, 41.14]},
                }
            ],
        }
    )


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


class Up:
    """``atalaia up`` in a subprocess (its own data directory, port and broker)."""

    def __init__(self, variant: str, workdir: Path, timing: Path | None = None) -> None:
        from atalaia.streams.broker import free_port

        self.variant, self.dir = variant, workdir / variant
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "rules.yaml").write_text(RULES)
        self.port = free_port()
        self.env = {
            **os.environ,
            "ATALAIA_DATA_DIR": str(self.dir / "data"),
            "ATALAIA_HTTP_PORT": str(self.port),
            "ATALAIA_RULES_PATHS": json.dumps([str(self.dir / "rules.yaml")]),
            "ATALAIA_LOG_LEVEL": "warning",
        }
        if timing is not None:
            self.env["ATALAIA_STAGE_TIMING"] = str(timing / f"{variant}-timing.log")
        args = ["up"]
        if variant == "before":
            args.append("--single-process")
            self.env["ATALAIA_FUSE_INGEST_RULES"] = "0"
        exe = Path(sys.executable).parent / "atalaia"
        self.log = open(self.dir / "up.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([str(exe), *args], env=self.env, stdout=self.log, stderr=self.log)

    def wait_ready(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.dir / "up.log").read_text()[-4000:]
            try:
                h = httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).json()
                if h["stages"] and all(s["partitions"] for s in h["stages"].values()):
                    return (self.dir / "data" / "broker").read_text().strip()
            except (httpx.HTTPError, ValueError, KeyError, FileNotFoundError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.variant}: atalaia up not ready")

    def pids(self) -> dict[str, int]:
        """The worker processes (the children of up; none for the single-process variant)."""
        out = subprocess.run(
            ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        )
        pids = {}
        broker = None
        for line in out.stdout.splitlines():
            pid, _, args = line.strip().partition(" ")
            if "worker" in args:
                pids["alarms" if "ingest" in args else "ops"] = int(pid)
            elif "tansu" in args:
                broker = int(pid)
        return {**(pids or {"all": self.proc.pid}), **({"broker": broker} if broker else {})}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def run_load(
    bootstrap: str, phases: list[tuple[str, float, float, int]]
) -> dict[str, list[tuple[float, float]]]:
    """Produce each phase (name, seconds, events/s, flapping entities) in turn while reading
    atalaia.alarms; returns per phase [(send time, latency s)] of the alarms its events caused."""
    producer = AIOKafkaProducer(**client_options(bootstrap), linger_ms=1, acks=1)
    consumer = AIOKafkaConsumer(**client_options(bootstrap), enable_auto_commit=False, fetch_max_wait_ms=10)
    await producer.start()
    await consumer.start()
    tp = TopicPartition("atalaia.alarms", 0)
    consumer.assign([tp])
    await consumer.seek_to_end(tp)
    spans: list[tuple[str, float, float]] = []
    got: list[tuple[float, float]] = []
    done = asyncio.Event()

    async def read() -> None:
        while not done.is_set():
            for records in (await consumer.getmany(timeout_ms=50)).values():
                now = time.time()
                for r in records:
                    a = orjson.loads(r.value)
                    at = datetime.fromisoformat(a["at"].replace("Z", "+00:00")).timestamp()
                    got.append((at, now - at))

    reader = asyncio.create_task(read())
    tick = 0.01
    seq = 0
    for name, seconds, rate, flapping in phases:
        start = time.time()
        spans.append((name, start, start + seconds))
        sent = 0
        while (now := time.time()) < start + seconds:
            due = int((now - start) * rate)
            while sent < due:
                seq += 1
                entity = seq % ENTITIES
                flaps = entity < flapping  # then every observation crosses the threshold
                height = (5.0 if (seq // ENTITIES) % 2 else 1.0) if flaps else 1.0 + (seq % 7) / 10
                key = f"urn:ngsi-ld:WaterObserved:e{entity:04d}".encode()
                await producer.send("atalaia.events", event(entity, height, time.time()), key=key)
                sent += 1
            await asyncio.sleep(tick)
    await asyncio.sleep(15)  # the stragglers
    done.set()
    await reader
    await producer.stop()
    await consumer.stop()
    return {name: [(t, lat) for t, lat in got if a <= t < b] for name, a, b in spans}


def summary(lat: list[tuple[float, float]]) -> str:
    xs = [x for _, x in lat]
    if not xs:
        return "no alarms"
    return (
        f"p50 {percentile(xs, 0.5) * 1000:7.0f} ms  p99 {percentile(xs, 0.99) * 1000:7.0f} ms  "
        f"max {max(xs) * 1000:7.0f} ms  ({len(xs)} alarms)"
    )


def spy(pid: int, path: Path, seconds: float) -> subprocess.Popen:
    """py-spy (pip install py-spy) sampling ``pid`` for ``seconds``: collapsed stacks (``path``,
    one ``frame;frame;... count`` line per stack; flamegraph.pl or speedscope draw them)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [exe, "record", "-p", str(pid), "-d", str(int(seconds)), "-o", str(path), "-r", "100", "-f", "raw"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def top(path: Path, n: int = 15) -> str:
    """The functions with most samples in a collapsed-stacks profile: inclusive share (any frame of
    the stack) and self share (the innermost frame); idle samples (the loop waiting) excluded."""
    stacks = []
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            stacks.append((stack.split(";"), int(count)))

    def idle(frames: list[str]) -> bool:  # the loop in select(), a pool thread waiting for work
        return frames[-1].startswith("_worker (concurrent") or any(
            "select (selectors.py" in f for f in frames[-2:]
        )

    busy = [(frames, c) for frames, c in stacks if not idle(frames)]
    total = sum(c for _, c in busy) or 1
    incl: dict[str, int] = {}
    own: dict[str, int] = {}
    for frames, c in busy:
        for f in set(frames):
            incl[f] = incl.get(f, 0) + c
        own[frames[-1]] = own.get(frames[-1], 0) + c
    idle_n = sum(c for _, c in stacks) - total
    lines = [f"{path.name}: {total} busy samples, {idle_n} idle (loop or thread pool waiting)"]
    lines.append("self %  function")
    for f, c in sorted(own.items(), key=lambda kv: -kv[1])[:n]:
        lines.append(f"{100 * c / total:6.1f}  {f}")
    lines.append("incl %  function (inclusive)")
    for f, c in sorted(incl.items(), key=lambda kv: -kv[1])[: 2 * n]:
        lines.append(f"{100 * c / total:6.1f}  {f}")
    return "\n".join(lines)


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds each process has used so far (Linux ``/proc``)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            out[name] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return out


class Phase:
    """Load average and the CPU (% of one core) of each worker, the broker and this process (the
    load generator) over a phase (and the 15 s tail in which the stragglers are read)."""

    def __init__(self, pids: dict[str, int]) -> None:
        pids = {**pids, "bench": os.getpid()}
        self.pids, self.t0, self.cpu0 = pids, time.monotonic(), cpu_seconds(pids)

    def end(self) -> str:
        dt, cpu = time.monotonic() - self.t0, cpu_seconds(self.pids)
        used = " ".join(f"{k} {100 * (cpu[k] - self.cpu0[k]) / dt:.0f}%" for k in cpu if k in self.cpu0)
        return f"load {os.getloadavg()[0]:.1f}, CPU {used}"


def bench(
    variant: str,
    workdir: Path,
    seconds: float,
    storm_s: float,
    profile: Path | None,
    timing: Path | None = None,
) -> dict:
    up = Up(variant, workdir, timing)
    try:
        bootstrap = up.wait_ready()
        time.sleep(3)
        out = {}
        for rate in (1000, 5000):
            phase = Phase(up.pids())
            spies = (
                [
                    spy(pid, profile / f"{variant}-{name}-{rate}.txt", seconds)
                    for name, pid in up.pids().items()
                    if name != "broker"
                ]
                if profile
                else []
            )
            res = asyncio.run(run_load(bootstrap, [(f"{rate}", seconds, rate, 10)]))
            out[f"{rate}/s"] = (res[f"{rate}"], phase.end())
            for s in spies:
                s.wait(60)
            for path in sorted(profile.glob(f"{variant}-*-{rate}.txt")) if profile else ():
                path.with_suffix(".top").write_text(top(path) + "\n")
                path.with_suffix(".txt.gz").write_bytes(gzip.compress(path.read_bytes()))
                path.unlink()
        phase = Phase(up.pids())
        res = asyncio.run(
            run_load(
                bootstrap,
                [("storm", storm_s, 1000, ENTITIES), ("after-0-5", 5, 200, 10), ("after", 10, 200, 10)],
            )
        )
        end = phase.end()
        out["storm"] = (res["storm"], end)
        out["after storm (5-15 s)"] = (res["after"], end)
        return out
    finally:
        up.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--storm-seconds", type=float, default=30)
    ap.add_argument("--variants", default="before,after")
    ap.add_argument("--profile", type=Path, default=None)
    ap.add_argument("--timing", type=Path, default=None)
    args = ap.parse_args()
    for d in (args.profile, args.timing):
        if d:
            d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for v in args.variants.split(","):
            results[v] = bench(v, Path(tmp), args.seconds, args.storm_seconds, args.profile, args.timing)
    print(
        f"produce → alarm on `atalaia up`, 1 rule, {ENTITIES} entities; {os.cpu_count()} CPUs (shared machine)"
    )
    for v, res in results.items():
        for what, (lat, where) in res.items():
            print(f"{v:7} {what:22} {summary(lat)}  [{where}]")


if __name__ == "__main__":
    main()
