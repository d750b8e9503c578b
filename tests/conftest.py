"""Shared fixtures: the real embedded broker, worker subprocesses, paths to ../shared."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from hypothesis import settings

# Property tests draw the same examples on every run of `make test` (derandomize), so a red run
# means the change broke something, not that this run's draw found an old bug; `make fuzz` draws
# new examples each time (random seeds, three rounds) to look for those, and each find becomes an
# explicit test. ATALAIA_HYPOTHESIS=fuzz selects it.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("fuzz", derandomize=False, database=None, print_blob=True)
settings.load_profile(os.environ.get("ATALAIA_HYPOTHESIS", "ci"))

# On the embedded broker a consumer group's first join completes after half the session timeout
# (10 s by default: 5 s per join, two joins per worker start). Every worker and `atalaia up` the
# tests start (they inherit this environment) uses 4 s, so a start takes about 6 s less; a killed
# worker's partitions move sooner too. The default stays what users run.
os.environ.setdefault("ATALAIA_SESSION_TIMEOUT_S", "4")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ATALAIA = str(Path(sys.executable).parent / "atalaia")


@pytest.fixture(autouse=True)
def _health_as_found() -> Iterator[None]:
    """This process's ``/health`` conditions (``streams.guard.HEALTH``, a process-wide object) are
    put back after each test as it found them: a test that drives a guard, a stage or delivery in
    this process leaves its resets and outages behind, and a later test in the same xdist worker
    (the order changes as files are added) read ``degraded``."""
    guard = sys.modules.get("atalaia.streams.guard")
    before = dict(guard.HEALTH.problems) if guard is not None else {}
    yield
    guard = sys.modules.get("atalaia.streams.guard")
    if guard is not None:
        guard.HEALTH.problems.clear()
        guard.HEALTH.problems.update(before)
        # a broker found gone at a stage's stop in this test is not "gone" for the next one's
        getattr(guard, "_gone", {}).clear()


def shared_path(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent: these tests need the project's ../shared folder beside the repo")
    return p


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """A real Kafka-protocol broker (embedded Tansu) for the whole session."""
    from atalaia.streams.broker import EmbeddedBroker

    with EmbeddedBroker() as b:
        yield b.bootstrap


@pytest.fixture
def topic_prefix(broker: str) -> str:
    """A fresh set of pipeline topics for one test."""
    from atalaia.streams.broker import ensure_topics

    prefix = f"t{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(broker, prefix, partitions=3))
    return prefix


_NEXT_PORT: list[int] = []  # this test process's next candidate, as an offset in its block


def free_port() -> int:
    """A port for a process a test starts, free now and below the kernel's ephemeral range: the
    OS's own choice (bind to port 0) lies in that range, where any outgoing connection on the
    machine may take it in the seconds before the process binds it (a worker failed so, 'address
    already in use'). Each pytest-xdist worker takes its ports from a block of its own, in turn,
    so two tests running side by side never pick the same one (a random pick did, once: one
    test's `up` found its port taken and the test talked to the other test's worker)."""
    import random
    import socket

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    span = max(1, (max(low, 20001) - 20000) // count)
    base = 20000 + (int(worker) % count if worker.isdigit() else 0) * span
    if not _NEXT_PORT:
        _NEXT_PORT.append(random.randrange(span))
    for _ in range(min(span, 2000)):
        port = base + _NEXT_PORT[0] % span
        _NEXT_PORT[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    from atalaia.streams.broker import free_port as fp

    return fp()


def non_loopback_address() -> str | None:
    """This machine's IPv4 address on its outward interface (not loopback), if it has one."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


class WorkerProcess:
    """``atalaia worker`` as a real subprocess (so tests can kill it)."""

    def __init__(self, env: dict[str, str], args: list[str], log: Path) -> None:
        self.env, self.args, self.log = env, args, log
        self.port = int(env["ATALAIA_HTTP_PORT"])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, stages: tuple[str, ...], timeout: float = 60) -> WorkerProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([ATALAIA, *self.args], env=self.env, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"worker exited {self.proc.returncode}:\n{self.log.read_text()[-12000:]}"
                )
            try:
                h = httpx.get(f"{self.url}/health", timeout=1).json()
                if all(h["stages"].get(s, {}).get("partitions") for s in stages):
                    return self
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        self.kill()
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.log.read_text()[-12000:]}")

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=2).json()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else 0


@pytest.fixture
def make_worker(broker: str, topic_prefix: str, tmp_path: Path):
    workers: list[WorkerProcess] = []
    data_dir = tmp_path / "data"

    def make(
        *extra_args: str, extra_env: dict[str, str] | None = None, port: int | None = None
    ) -> WorkerProcess:
        env = {
            **os.environ,
            "ATALAIA_KAFKA": broker,
            "ATALAIA_TOPIC_PREFIX": topic_prefix,
            "ATALAIA_APP_ID": topic_prefix,
            "ATALAIA_DATA_DIR": str(data_dir),
            "ATALAIA_HTTP_PORT": str(port or free_port()),
            "ATALAIA_PARTITIONS": "3",
            "ATALAIA_LOG_LEVEL": "info",
            # a killed worker's partitions move after its session expires: short in tests
            "ATALAIA_SESSION_TIMEOUT_S": "4",
            **(extra_env or {}),
        }
        w = WorkerProcess(env, ["worker", "--http", *extra_args], tmp_path / f"worker{len(workers)}.log")
        workers.append(w)
        return w

    yield make
    for w in workers:
        w.kill()


async def consume_all(
    bootstrap: str, topic: str, *, expect: int | None = None, idle: float = 3.0, timeout: float = 60.0
) -> list:
    """Read a topic from the beginning until `expect` records arrived (or it stays idle)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list = []
        loop = asyncio.get_running_loop()
        start = last = loop.time()
        while loop.time() - start < timeout:
            batches = await consumer.getmany(timeout_ms=200)
            got = [r for rs in batches.values() for r in rs]
            if got:
                out.extend(got)
                last = loop.time()
            if expect is not None and len(out) >= expect:
                # keep reading briefly: more than expected would be a duplicate
                if loop.time() - last > 1.0:
                    break
            elif expect is None and loop.time() - last > idle:
                break
        return out
    finally:
        await consumer.stop()


def water_notification(entity: str, height: float, **attributes: object) -> bytes:
    """An NGSI-LD notification of one WaterObserved gauge observed now (as a FIWARE broker sends)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    entity_body = {"id": f"urn:ngsi-ld:WaterObserved:{entity}", "type": "WaterObserved", "dateObserved": now}
    entity_body |= {"height": height, **attributes}
    return orjson.dumps(
        {
            "id": f"urn:ngsi-ld:Notification:{entity}",
            "type": "Notification",
            "notifiedAt": now,
            "data": [entity_body],
        }
    )


def wait(pred, timeout: float, what: str):
    """``pred()``'s first truthy answer, polled every 0.2 s; an AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# The longest test files, longest first (their summed durations, measured with --junitxml on the
# 2-core CI machine). `make test` hands whole files to its two workers in collection order: in
# alphabetical order the longest (test_up_*, test_warnings_*) came last, and for the final eight
# minutes one worker ran them while the other had nothing left to do. First, they overlap with
# the many short files instead. A file not listed keeps its alphabetical place after these.
LONGEST_FIRST = (
    "test_streams_rules_live",
    "test_ingest_log_up",
    "test_config_validate_properties",
    "test_faults_kill",
    "test_up_remembers",
    "test_up_processes",
    "test_console_login",
    "test_broker_reset",
    "test_streams_ingest_live",
    "test_up_lock",
    "test_detectors_faults",
    "test_console_silences",
    "test_streams_lifecycle",
    "test_warnings_live",
    "test_warnings_delivery_live",
    "test_preflight",
    "test_console_board",
    "test_config_fuzz",
    "test_ingest_properties",
    "test_console_api",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: a file's own order kept
