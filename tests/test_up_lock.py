"""One `atalaia up` per data directory: a second one on the same ATALAIA_DATA_DIR (another HTTP
port) refuses to start, in one line naming the data directory and the PID holding it, before it
starts anything (it had joined the first's broker and run delivery recovery too: every waiting
notification sent twice); once the first is killed with SIGKILL, a new one starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ATALAIA

RULES = """
group: hydro
rules:
  - id: level-high
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: high, above: 3.5}]
"""
PORTS = (8290, 8291)
ESCALATION = """
targets:
  sms: {channel: sms, url: "smseagle://tok@127.0.0.1:9/+351912000001"}
routes: [{policy: p}]
policies:
  p:
    steps:
      - {targets: [sms], wait: 1h}
"""


def env_for(tmp_path: Path, port: int) -> dict[str, str]:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "esc.yaml").write_text(ESCALATION)  # a target delivery can run with (nobody listens)
    env = {
        **os.environ,
        "ATALAIA_DATA_DIR": str(tmp_path / "data"),
        "ATALAIA_HTTP_PORT": str(port),
        "ATALAIA_RULES_PATHS": f'["{tmp_path / "rules.yaml"}"]',
        "ATALAIA_UP_STARTUP_S": "3",
        "ATALAIA_ESCALATION_PATH": str(tmp_path / "esc.yaml"),
    }
    env.pop("ATALAIA_KAFKA", None)
    return env


def start_up(env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        proc = subprocess.Popen([ATALAIA, "up"], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{env['ATALAIA_HTTP_PORT']}"
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, log.read_text()[-5000:]
        assert time.monotonic() < deadline, log.read_text()[-5000:]
        try:
            h = httpx.get(f"{url}/health", timeout=1).json()
            if h["stages"] and all(s["partitions"] for s in h["stages"].values()):
                return proc
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.3)


def refused(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a second `atalaia up`; one that starts anyway is stopped and reported."""
    proc = subprocess.Popen(
        [ATALAIA, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=40)
        pytest.fail(f"the second `atalaia up` started on the same data directory:\n{out}\n{err[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.broker
def test_second_up_on_same_data_dir_refuses_and_a_killed_one_never_blocks_a_restart(tmp_path: Path) -> None:
    first_env, second_env = env_for(tmp_path, PORTS[0]), env_for(tmp_path, PORTS[1])
    data = Path(first_env["ATALAIA_DATA_DIR"])
    first = start_up(first_env, tmp_path / "up1.log")
    third = None
    try:
        t0 = time.monotonic()
        second = refused(second_env)
        took = time.monotonic() - t0
        assert second.returncode != 0
        assert "Atalaia is up" not in second.stdout + second.stderr
        errors = [line for line in second.stderr.splitlines() if line.startswith("Error")]
        assert len(errors) == 1, second.stderr
        assert str(data) in errors[0] and f"pid {first.pid}" in errors[0], errors
        assert "delivery recovery" not in second.stderr and "embedded broker stopped" not in second.stderr
        assert took < 15, took
        # nothing of the second one started: the first still answers alone on its port
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{PORTS[1]}/livez", timeout=1)
        assert httpx.get(f"http://127.0.0.1:{PORTS[0]}/livez", timeout=3).status_code == 200
        # nor does a worker with the delivery stage, joining the first's broker: one sender per
        # delivery log (it re-sent every waiting notification)
        worker = subprocess.run(
            [ATALAIA, "worker", "--stages", "delivery"],
            env=second_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert worker.returncode != 0, worker.stderr[-3000:]
        assert "another process (pid " in worker.stderr and "one sender per delivery log" in worker.stderr
        assert "delivery recovery" not in worker.stderr

        first.send_signal(signal.SIGKILL)  # a crash: its lock goes with it
        first.wait(10)
        time.sleep(1.0)  # its worker processes die with it (PR_SET_PDEATHSIG)
        third = start_up(first_env, tmp_path / "up3.log")
        assert "Atalaia is up" in (tmp_path / "up3.log").read_text()
    finally:
        for proc in (first, third):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(40)
                except subprocess.TimeoutExpired:
                    proc.kill()


HOLD = """
import time
from pathlib import Path
from atalaia.streams.connect import lock_data_dir
class S: data_dir = Path({data!r})
lock_data_dir(S)
print("held", flush=True)
time.sleep(120)
"""


def test_data_dir_lock_refuses_while_held_and_is_released_by_sigkill(tmp_path: Path) -> None:
    import click

    from atalaia.streams import connect

    class S:
        data_dir = tmp_path / "data"

    holder = subprocess.Popen(
        [sys.executable, "-P", "-c", HOLD.format(data=str(S.data_dir))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(click.ClickException) as e:
            connect.lock_data_dir(S)
        assert str(S.data_dir) in e.value.message and f"pid {holder.pid}" in e.value.message
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        connect.lock_data_dir(S)  # the OS released it: a crashed instance never blocks a restart
        assert (S.data_dir / "up.lock").read_text().strip() == str(os.getpid())
    finally:
        if holder.poll() is None:
            holder.kill()
        fd = connect._HELD.pop(S.data_dir / "up.lock", None)
        if fd is not None:
            os.close(fd)
