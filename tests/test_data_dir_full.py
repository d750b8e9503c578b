"""The data directory fills up while a worker runs, then space returns (a real, small tmpfs:
needs root to mount it, skipped otherwise).

Before: the first checkpoint that could not be written (``OSError 28``) failed its stage and
stopped the worker, as did the delivery log's ``database or disk is full``; under ``atalaia up``
both processes then crash-looped for as long as the disk stayed full, and nobody was paged.
Now the worker goes on: the stages keep their state and retry their checkpoints, the delivery
stage holds the notifications it cannot record (nothing recorded, nothing sent) and the
projection the incident changes, ``/health`` is ``degraded`` naming each, and once there is room
every page goes out exactly once and every incident is projected."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from atalaia.notifiers.testing import HttpSink
from tests.test_incidents_live import produce, wait_for
from tests.test_streams_delivery_live import SinkThread

pytestmark = pytest.mark.broker

SECRET = "full-disk-hook-secret-0123456789"
INCIDENTS = """
correlation: {window: 30m}
chattering: {auto_shelve: false}
"""
GAUGES = 6


def alarm(i: int, at: datetime) -> dict:
    entity = f"urn:ngsi-ld:WaterObserved:full-{i}"
    return {
        "at": at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "rule": "level-high",
        "key": entity,
        "state": "firing",
        "severity": "high",
        "value": 4.2,
        "entity": entity,
        "labels": {"parish": f"parish-{i}", "team": "hydro"},
        "group": "hydro",
    }


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    where = tmp_path / "small"
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(where) -> None:
    """Fill the file system to its last byte."""
    fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)


def test_a_full_data_directory_stops_nothing_and_loses_no_page(broker, topic_prefix, make_worker, small_disk):
    cfg = small_disk.parent
    (cfg / "incidents.yaml").write_text(INCIDENTS)
    with SinkThread(HttpSink(secret=SECRET)) as http:
        (cfg / "escalation.yaml").write_text(
            f"""
timezone: Europe/Lisbon
repage_interval: 0s
targets:
  hook: {{channel: webhook, url: "{http.url}/hook", secret: "{SECRET}"}}
routes: [{{policy: page}}]
policies:
  page:
    notify_resolved: false
    steps: [{{targets: [hook], wait: 1h}}]
"""
        )
        env = {
            "ATALAIA_DATA_DIR": str(small_disk / "data"),
            "ATALAIA_INCIDENTS_PATH": str(cfg / "incidents.yaml"),
            "ATALAIA_ESCALATION_PATH": str(cfg / "escalation.yaml"),
            "ATALAIA_STATE_STORE": "file",
            "ATALAIA_CHECKPOINT_S": "0.5",
        }
        stages = ("incidents", "projection", "escalation", "delivery")
        w = make_worker("--stages", ",".join(stages), extra_env=env).start(stages)
        now = datetime.now(UTC)
        asyncio.run(produce(broker, f"{topic_prefix}.alarms", [alarm(0, now)]))
        wait_for(lambda: len(http.deliveries("/hook")) == 1, 30, "the first page")

        fill(small_disk)
        asyncio.run(
            produce(
                broker,
                f"{topic_prefix}.alarms",
                [alarm(i, now + timedelta(seconds=i)) for i in range(1, GAUGES)],
            )
        )

        def named() -> str:
            assert w.proc is not None and w.proc.poll() is None, (
                f"the worker stopped:\n{w.log.read_text()[-3000:]}"
            )
            text = " ".join(w.health().get("problems", []))
            return text if all(k in text for k in ("delivery log", "projection", "checkpoints")) else ""

        wait_for(lambda: bool(named()), 30, "/health to name the delivery log, projection and checkpoints")
        projection = [p for p in w.health()["problems"] if "stage projection" in p]
        assert projection and "disk is full" in projection[0], projection  # the cause, not a rollback's error
        time.sleep(2)
        assert w.proc is not None and w.proc.poll() is None, "the worker kept running"
        assert w.health()["status"] == "degraded"
        assert len(http.deliveries("/hook")) == 1, "nothing is sent that the delivery log cannot record"

        (small_disk / "filler").unlink()
        wait_for(lambda: len(set(http.deliveries("/hook"))) == GAUGES, 30, "every page once there is room")
        wait_for(lambda: not w.health().get("problems"), 30, "/health ok again")
        time.sleep(1)
        sent = Counter(http.deliveries("/hook"))
        assert len(sent) == GAUGES and set(sent.values()) == {1}, sent
        db = sqlite3.connect(small_disk / "data" / "atalaia.db")
        try:
            assert db.execute("SELECT count(*) FROM incidents").fetchone()[0] == GAUGES
        finally:
            db.close()
        log = w.log.read_text()
        assert "stage failed" not in log
        assert w.stop() == 0
