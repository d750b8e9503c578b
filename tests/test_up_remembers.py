"""`atalaia up` on its embedded (memory-only) broker remembers: restarted after SIGTERM and after
SIGKILL it still has the open incidents and the shelve, the escalation timer fires once, and
nobody is paged twice (local SMTP and SMS-gateway sinks); `--fresh` starts clean."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from atalaia.notifiers.testing import HttpSink, SmtpSink
from tests.conftest import ATALAIA, free_port

pytestmark = pytest.mark.broker

RULES = """
group: hydro
rules:
  - id: level-high
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: high, above: 3.5}]
    labels: {team: hydro}
"""
STEP2_S = 25  # the second escalation step: due after the restarts


def escalation(smtp: SmtpSink, http: HttpSink) -> str:
    return f"""
timezone: Europe/Lisbon
targets:
  email: {{channel: email, url: "{smtp.mailto("sala@cm-porto.pt")}"}}
  sms: {{channel: sms, url: "smseagle://tok@127.0.0.1:{http.port}/+351912000001"}}
routes: [{{policy: p}}]
policies:
  p:
    steps:
      - {{targets: [email], wait: {STEP2_S}s}}
      - {{targets: [sms], wait: 1h}}
"""


def up_env(tmp_path: Path, escalation_text: str, **extra: str) -> dict[str, str]:
    """The environment of an ``atalaia up`` on its own embedded broker in ``tmp_path``, with
    ``RULES`` and ``escalation_text`` written there, two partitions and ``extra`` settings."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(RULES)
    (tmp_path / "esc.yaml").write_text(escalation_text)
    env = {**os.environ, "ATALAIA_DATA_DIR": str(tmp_path / "data"), "ATALAIA_HTTP_PORT": str(free_port())}
    env.pop("ATALAIA_KAFKA", None)
    env.update(
        ATALAIA_RULES_PATHS=f'["{tmp_path / "rules"}"]',
        ATALAIA_ESCALATION_PATH=str(tmp_path / "esc.yaml"),
        ATALAIA_PARTITIONS="2",
        **extra,
    )
    return env


class Up:
    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp, self.env, self.n = tmp_path, env, 0
        self.port = int(env["ATALAIA_HTTP_PORT"])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.tmp / f"up{self.n}.log"

    def start(self, *args: str) -> Up:
        self.n += 1
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [ATALAIA, "up", *args], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-5000:]
            try:
                h = httpx.get(f"{self.url}/health", timeout=1).json()
                if all(s["partitions"] for s in h["stages"].values()):
                    return self
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        self.proc.kill()
        raise AssertionError(f"atalaia up not ready:\n{self.log.read_text()[-5000:]}")

    def stop(self, sig: int) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(30)

    def incidents(self) -> dict[str, dict]:
        r = httpx.get(f"{self.url}/api/incidents?state=all", timeout=3)
        r.raise_for_status()  # (a 503 problem while a process starts again: the waits try again)
        rows = r.json()
        rows = rows.get("incidents", rows) if isinstance(rows, dict) else rows
        return {r["id"]: r for r in rows}


def wait_for(pred, timeout: float, what: str, up: Up) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{up.log.read_text()[-6000:]}")
        time.sleep(0.3)


def notify(up: Up) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "id": "urn:ngsi-ld:Notification:1",
        "type": "Notification",
        "notifiedAt": now,
        "data": [
            {
                "id": f"urn:ngsi-ld:WaterObserved:{name}",
                "type": "WaterObserved",
                "dateObserved": now,
                "height": 4.0,
                "parish": parish,
            }
            for name, parish in (("freixo", "Campanhã"), ("ribeira", "Bonfim"))
        ],
    }
    # `atalaia up` keeps its demo ingest token in the data directory (never an open ingest)
    token = (Path(up.env["ATALAIA_DATA_DIR"]) / "ingest-token").read_text().strip()
    r = httpx.post(
        f"{up.url}/ngsi-ld/notify",
        content=orjson.dumps(body),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text


class HttpSinkThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sink = asyncio.run_coroutine_threadsafe(HttpSink().start(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sink.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def announced(up: Up) -> set[str]:
    """The stages that announced their open state again in ``up``'s log (after a new broker)."""
    lines = [line for line in up.log.read_text().splitlines() if "of its state sent again" in line]
    return {stage for line in lines for stage in ("rules", "incidents", "escalation") if f" {stage}:" in line}


def test_up_restarted_keeps_incidents_shelve_and_timers_and_pages_nobody_twice(tmp_path: Path) -> None:
    smtp, http = SmtpSink().start(), HttpSinkThread()
    try:
        up = Up(tmp_path, up_env(tmp_path, escalation(smtp, http.sink))).start()
        notify(up)
        wait_for(lambda: len(up.incidents()) == 2 and len(smtp.messages) == 2, 60, "two incidents paged", up)
        opened = up.incidents()
        shelved = next(iter(opened))
        r = httpx.post(
            f"{up.url}/api/incidents/{shelved}/commands",
            json={"action": "shelve", "duration": "1h", "actor": "ana", "role": "operator", "reason": "crew"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        wait_for(lambda: up.incidents()[shelved]["state"] == "shelved", 20, "the shelve", up)
        time.sleep(3)  # a checkpoint with the shelve

        for sig in (signal.SIGTERM, signal.SIGKILL):
            up.stop(sig)
            up.start()
            text = up.log.read_text()
            assert "kept the previous run's incidents" in text and "put back from the ingest log" in text
            if sig == signal.SIGTERM:  # a planned stop checkpoints everything: nothing to put back
                assert "put back on the new broker" not in text
            # the open alarms and incidents were announced again on the new broker (what was in
            # flight is gone); versions stay, and nobody is paged twice (below)
            wait_for(lambda: announced(up) == {"rules", "incidents", "escalation"}, 30, "announce", up)
            after = up.incidents()
            assert set(after) == set(opened) and after[shelved]["state"] == "shelved"
            assert {i: r["version"] for i, r in after.items()} == {
                i: r["version"] for i, r in opened.items()
            } | {shelved: after[shelved]["version"]}
            # a planned restart: healthy once every stage of both processes took its partitions
            # (a stage of one process may list partitions the other holds while it still starts)
            wait_for(
                lambda: httpx.get(f"{up.url}/health", timeout=2).json()["status"] == "ok", 30, "health ok", up
            )
            time.sleep(3)

        # the escalation timer survived the restarts: step 2 (SMS) fires once, for the unshelved one
        wait_for(lambda: len(http.sink.received("/jsonrpc/sms")) >= 1, STEP2_S + 40, "step 2", up)
        time.sleep(4)
        pages = Counter(m.text.split("Ref.: ")[1].split(" /")[0] for m in smtp.messages)
        assert sorted(pages) == sorted(opened) and max(pages.values()) == 1, pages
        sms = Counter(
            r.json["params"]["message"].rsplit(" ", 1)[1] for r in http.sink.received("/jsonrpc/sms")
        )
        assert max(sms.values()) == 1 and shelved not in sms, sms
        up.stop(signal.SIGTERM)

        up.start("--fresh")
        assert up.incidents() == {}
        up.stop(signal.SIGTERM)
    finally:
        if up.proc and up.proc.poll() is None:
            up.proc.kill()
        smtp.stop()
        http.stop()
