"""`atalaia up` on both cores (issue 11): the alarm path and the ops stages in two processes.

* it starts two worker processes under one command, /health shows every stage of both, and
  SIGTERM stops them all (and the embedded broker) with exit status 0;
* storm isolation: with the ops process (incidents, projection, escalation, console) frozen by
  SIGSTOP, a storm of alarm transitions still drains through the alarm path to atalaia.alarms,
  all of them; once the ops process resumes, the incidents follow;
* a worker process that dies (kill -9) is reported and restarted.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ATALAIA, consume_all, free_port

pytestmark = pytest.mark.broker

RULES = """
group: hydro
rules:
  - id: level-high
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: high, above: 3.5}]
"""


def children(pid: int) -> dict[str, int]:
    out = subprocess.run(
        ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True
    )
    found = {}
    for line in out.stdout.splitlines():
        child, _, args = line.strip().partition(" ")
        if " worker " in f" {args} ":
            found["alarms" if "ingest" in args else "ops"] = int(child)
    return found


@pytest.fixture
def up(tmp_path: Path):
    (tmp_path / "rules.yaml").write_text(RULES)
    port = free_port()
    env = {
        **os.environ,
        "ATALAIA_DATA_DIR": str(tmp_path / "data"),
        "ATALAIA_HTTP_PORT": str(port),
        "ATALAIA_RULES_PATHS": json.dumps([str(tmp_path / "rules.yaml")]),
        "ATALAIA_UP_STARTUP_S": "3",
    }
    env.pop("ATALAIA_KAFKA", None)
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([ATALAIA, "up"], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, log.read_text()[-6000:]
        assert time.monotonic() < deadline, log.read_text()[-6000:]
        try:
            h = httpx.get(f"{url}/health", timeout=3).json()
            if {"ingest", "rules", "incidents", "projection"} <= set(h["stages"]) and all(
                s["partitions"] for s in h["stages"].values()
            ):
                break
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    yield proc, url, env, log
    for pid in children(proc.pid).values():
        os.kill(pid, signal.SIGCONT)
    if proc.poll() is None:
        proc.kill()


def storm(path: Path, entities: int, steps: int) -> int:
    t0 = datetime.now(UTC) - timedelta(seconds=steps + 60)
    lines = []
    for k in range(steps):
        for e in range(entities):
            t = (t0 + timedelta(seconds=k, milliseconds=e)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            height = 5.0 if k % 2 == 0 else 1.0  # every observation crosses the threshold
            lines.append(
                json.dumps(
                    {
                        "time": t,
                        "entity": f"urn:ngsi-ld:WaterObserved:s{e:03d}",
                        "type": "WaterObserved",
                        "attributes": {"height": height},
                        "labels": {"parish": f"p{e % 7}"},
                    }
                )
            )
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def test_up_runs_two_processes_and_stops_them_all(up):
    proc, url, _env, log = up
    kids = children(proc.pid)
    assert set(kids) == {"alarms", "ops"}, kids
    # in a storm the cores serve the alarm path first: ops runs nicer (ATALAIA_OPS_NICE, default 5)
    nice = {name: os.getpriority(os.PRIO_PROCESS, pid) for name, pid in kids.items()}
    assert nice["ops"] - nice["alarms"] == 5, nice
    assert httpx.get(f"{url}/api/incidents", timeout=5).status_code == 200  # forwarded to ops
    # /health shows every stage's lag, of both processes (sampled each second from their fetches;
    # ingest and rules, fused in one stage, each its own topic's)
    deadline = time.monotonic() + 20
    while True:
        stages = httpx.get(f"{url}/health", timeout=3).json()["stages"]
        if all(s["lag"] is not None for s in stages.values()):
            break
        assert time.monotonic() < deadline, stages
        time.sleep(0.3)
    assert {"ingest", "rules", "incidents", "escalation"} <= set(stages), stages
    assert all(s["lag"] == 0 and s["behind_s"] == 0.0 for s in stages.values()), stages
    assert "processes:" in log.read_text()  # one banner, naming both
    # one scrape of the public port sees both processes, each sample labelled with its process
    text = httpx.get(f"{url}/metrics", timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    stage_up = {(s.labels["process"], s.labels["stage"]) for s in families["atalaia_stage_up"].samples}
    assert {("alarms", "rules"), ("ops", "incidents"), ("ops", "escalation")} <= stage_up, stage_up
    assert {s.labels["process"]: s.value for s in families["atalaia_process_up"].samples} == {
        "alarms": 1.0,
        "ops": 1.0,
    }
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert "error" not in (check.stdout + check.stderr).lower(), check.stdout + check.stderr
    # a compressed console request through the front is heard as the plain one (the front sent
    # the decoded body on with the client's Content-Encoding: the ops process refused all of them)
    body = json.dumps({"matchers": "nonsense"}).encode()
    answers = []
    for encoding, data in (("identity", body), ("gzip", gzip.compress(body))):
        headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
        r = httpx.post(f"{url}/api/silences", content=data, headers=headers, timeout=10)
        answers.append((r.status_code, r.json()["title"]))
    assert answers == [(422, "Invalid silence")] * 2, answers
    r = httpx.post(
        f"{url}/api/silences",
        content=b"not gzip",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        timeout=10,
    )
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json"), r.text
    assert "cannot be read" in r.json()["detail"] and "Traceback" not in log.read_text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, log.read_text()[-4000:]
    for pid in kids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "Atalaia stopped. (embedded broker stopped)" in log.read_text()


def test_alarms_drain_while_the_ops_process_is_frozen(up, tmp_path):
    proc, _url, env, _log = up
    bootstrap = (tmp_path / "data" / "broker").read_text().strip()
    kids = children(proc.pid)
    os.kill(kids["ops"], signal.SIGSTOP)  # incidents, projection, escalation, console: frozen
    n = storm(tmp_path / "storm.jsonl", entities=200, steps=10)
    r = subprocess.run(
        [ATALAIA, "send", str(tmp_path / "storm.jsonl")], env=env, capture_output=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 120
    while True:  # every observation is a transition; the alarm path never waits for ops
        got = [orjson.loads(x.value) for x in asyncio.run(consume_all(bootstrap, "atalaia.alarms", idle=3.0))]
        unique = {a["id"]: a for a in got}
        if len(unique) >= n or time.monotonic() > deadline:
            break
    assert len(unique) == n, f"{len(unique)} of {n} alarm transitions while ops was frozen"
    assert {a["state"] for a in unique.values()} == {"firing", "resolved"}
    # a frozen process does not hang the scrape: it is reported down
    text = httpx.get(f"{_url}/metrics", timeout=10).text
    up_ = {
        s.labels["process"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "atalaia_process_up"
    }
    assert up_ == {"alarms": 1.0, "ops": 0.0}, up_
    os.kill(kids["ops"], signal.SIGCONT)
    deadline = time.monotonic() + 120
    while not asyncio.run(consume_all(bootstrap, "atalaia.incidents", idle=2.0)):
        assert time.monotonic() < deadline, "the ops process never caught up"
    assert proc.poll() is None


def test_a_killed_worker_process_is_restarted(up):
    proc, url, _env, log = up
    time.sleep(3.5)  # past the start-up window (ATALAIA_UP_STARTUP_S): a death now is restarted
    old = children(proc.pid)["alarms"]
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, log.read_text()[-4000:]
        assert time.monotonic() < deadline, log.read_text()[-4000:]
        new = children(proc.pid).get("alarms")
        try:
            h = httpx.get(f"{url}/health", timeout=3).json()
            if new and new != old and h["stages"]["rules"]["partitions"]:
                break
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    assert f"process alarms (pid {old}) died (signal SIGKILL): restarting it" in log.read_text()
