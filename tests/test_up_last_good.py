"""`atalaia up` keeps paging when a configuration file is edited into one that does not load and
the ops process then crashes: the process is restarted on the last configuration that loaded
(``streams.lastgood``), says so in an ERROR line with the file:line:col error, ``/health`` is
``degraded`` naming it and ``atalaia_config_last_good{part}`` is 1; once the file loads again the
process is restarted on it. Before, the ops process stayed down until the file was fixed: no new
alarm was paged (the second alarm below never reached the SMTP server)."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from atalaia.notifiers.testing import SmtpSink
from tests.test_up_processes import children
from tests.test_up_remembers import Up, up_env, wait_for

pytestmark = pytest.mark.broker


def escalation(smtp: SmtpSink) -> str:
    return f"""
timezone: Europe/Lisbon
targets:
  email: {{channel: email, url: "{smtp.mailto("sala@cm-porto.pt")}"}}
routes: [{{policy: p}}]
policies:
  p:
    steps:
      - {{targets: [email], wait: 1h}}
"""


def alarm(up: Up, entity: str, **values: float) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "id": "urn:ngsi-ld:Notification:1",
        "type": "Notification",
        "notifiedAt": now,
        "data": [
            {
                "id": f"urn:ngsi-ld:WaterObserved:{entity}",
                "type": "WaterObserved",
                "dateObserved": now,
                **(values or {"height": 4.0}),
            }
        ],
    }
    token = (Path(up.env["ATALAIA_DATA_DIR"]) / "ingest-token").read_text().strip()
    r = httpx.post(
        f"{up.url}/ngsi-ld/notify",
        content=orjson.dumps(body),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text


def accepted(up: Up, entity: str, **values: float) -> bool:
    """``alarm``, True when it was accepted (False while the process starts: 503)."""
    try:
        alarm(up, entity, **values)
    except AssertionError:
        return False
    return True


def paged(smtp: SmtpSink, entity: str) -> bool:
    return any(entity in m.text or entity in m.subject for m in smtp.messages)


def test_a_crash_while_the_escalation_file_does_not_load_still_pages(tmp_path: Path) -> None:
    smtp = SmtpSink().start()
    # the ops process counts as having run 5 s after it started (a death sooner stops everything)
    up = Up(tmp_path, up_env(tmp_path, escalation(smtp), ATALAIA_UP_STARTUP_S="5"))
    try:
        up.start()
        alarm(up, "freixo")
        wait_for(lambda: paged(smtp, "freixo"), 60, "the first page", up)
        time.sleep(5)  # past ATALAIA_UP_STARTUP_S

        esc = tmp_path / "esc.yaml"
        good = esc.read_text()
        esc.write_text(good.replace("routes: [{policy: p}]", "routes: [{policy: p}\n  broken: [x"))
        ops = children(up.proc.pid)["ops"]
        os.kill(ops, signal.SIGKILL)
        wait_for(lambda: children(up.proc.pid).get("ops") not in (None, ops), 30, "ops restarted", up)
        alarm(up, "ribeira")
        wait_for(lambda: paged(smtp, "ribeira"), 90, "a new alarm paged after the crash", up)

        log = up.log.read_text()
        (line,) = [x for x in log.splitlines() if "LAST CONFIGURATION THAT LOADED" in x]
        assert " ERROR " in line and f"{esc}:6:" in line, line
        health = httpx.get(f"{up.url}/health", timeout=5).json()
        assert health["status"] == "degraded", health
        assert any("last configuration that loaded" in p and f"{esc}:6:" in p for p in health["problems"])
        metrics = text_string_to_metric_families(httpx.get(f"{up.url}/metrics", timeout=5).text)
        gauge = {
            (s.labels.get("process"), s.labels["part"]): s.value
            for f in metrics
            if f.name == "atalaia_config_last_good"
            for s in f.samples
        }
        assert gauge == {("ops", "escalation"): 1.0}, gauge

        esc.write_text(good)  # fixed: the ops process is restarted on it, and /health is ok again
        wait_for(lambda: "the configuration loads again (escalation)" in up.log.read_text(), 30, "fixed", up)
        wait_for(
            lambda: httpx.get(f"{up.url}/health", timeout=2).json()["status"] == "ok", 60, "health ok", up
        )
        up.stop(signal.SIGTERM)
        assert up.proc.returncode == 0
    finally:
        if up.proc and up.proc.poll() is None:
            up.proc.kill()
        smtp.stop()


FLOW_RULE = """
  - id: flow-high
    select: {type: WaterObserved, attribute: flow}
    severities: [{severity: high, above: 10}]
"""


def test_a_crash_of_the_rules_process_while_its_rules_do_not_load_runs_the_last_accepted_ones(
    tmp_path: Path,
) -> None:
    """The alarms process (ingest, rules) killed while its rule file does not load: restarted on
    the rules of the last accepted reload (a rule added while it ran fires), not left down (before:
    ingest refused every connection and nothing was paged)."""
    smtp = SmtpSink().start()
    up = Up(tmp_path, up_env(tmp_path, escalation(smtp), ATALAIA_UP_STARTUP_S="5"))
    try:
        up.start()
        rules = tmp_path / "rules" / "r.yaml"
        rules.write_text(rules.read_text() + FLOW_RULE)  # a reload the running rules accept
        wait_for(lambda: "rules reloaded: 2 rule(s)" in up.log.read_text(), 30, "the reload", up)
        kept = tmp_path / "data" / "config-last-good" / "rules" / "0" / "r.yaml"
        wait_for(lambda: kept.exists() and "flow-high" in kept.read_text(), 30, "the accepted rules kept", up)
        time.sleep(5)  # past ATALAIA_UP_STARTUP_S

        rules.write_text("group: hydro\nrules: [\n  - id: x\n")  # refused by the running rules
        wait_for(lambda: "do not load; keeping the running rules" in up.log.read_text(), 30, "refused", up)
        alarms = children(up.proc.pid)["alarms"]
        os.kill(alarms, signal.SIGKILL)
        wait_for(lambda: children(up.proc.pid).get("alarms") not in (None, alarms), 30, "restarted", up)
        wait_for(lambda: accepted(up, "ribeira", height=1.0, flow=20.0), 60, "ingest again", up)
        wait_for(lambda: paged(smtp, "ribeira"), 90, "the added rule's alarm paged after the crash", up)
        (line,) = [x for x in up.log.read_text().splitlines() if "LAST CONFIGURATION THAT LOADED" in x]
        assert "process alarms" in line and f"{rules}:3:" in line, line
        up.stop(signal.SIGTERM)
    finally:
        if up.proc and up.proc.poll() is None:
            up.proc.kill()
        smtp.stop()
