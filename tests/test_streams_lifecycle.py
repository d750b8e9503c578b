"""Broker lifecycle: `atalaia up` starts the embedded broker and leaves no process behind, on
Ctrl-C and even when it is killed outright."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ATALAIA, free_port

pytestmark = pytest.mark.broker


def tansu_pids(port: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", f"listener-url tcp://127.0.0.1:{port}"], capture_output=True, text=True
    )
    return [int(p) for p in out.stdout.split()]


def start_up(tmp_path: Path) -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    env = {**os.environ, "ATALAIA_DATA_DIR": str(tmp_path / "data"), "ATALAIA_HTTP_PORT": str(port)}
    env.pop("ATALAIA_KAFKA", None)
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([ATALAIA, "up"], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            # every stage took its partitions (`up` without --demo runs without delivery: its
            # escalation targets' settings are unset, so /health is "degraded", saying so)
            h = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
            if h["stages"] and all(s["partitions"] for s in h["stages"].values()):
                break
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail(f"atalaia up did not answer on /health:\n{log.read_text()}")
    bootstrap = (tmp_path / "data" / "broker").read_text()
    broker_port = int(bootstrap.rsplit(":", 1)[1])
    assert tansu_pids(broker_port), "the embedded broker should be running"
    return proc, broker_port, log


def wait_gone(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while tansu_pids(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not tansu_pids(port), "embedded broker left behind"


def test_ctrl_c_stops_worker_and_broker(tmp_path):
    proc, broker_port, log = start_up(tmp_path)
    deadline = time.monotonic() + 20
    while "Atalaia is up" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "Atalaia is up" in log.read_text(), "the banner tells the user where to look"
    proc.send_signal(signal.SIGINT)
    # each worker process gets 35 s (the delivery grace, 15 s, + 20 s; at least
    # streams.processes.STOP_TIMEOUT_S) to finish its sends, checkpoint and leave its groups before
    # it is killed, then the broker stops: within a minute in all
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"atalaia up did not stop within 60 s of Ctrl-C:\n{log.read_text()[-8000:]}")
    wait_gone(broker_port)
    assert not (tmp_path / "data" / "broker").exists(), "stale broker announcement left behind"


def test_killed_parent_takes_the_broker_with_it(tmp_path):
    proc, broker_port, _ = start_up(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    wait_gone(broker_port)
