"""Escalate now: the ``escalate`` command (operator and supervisor) is audited as an ``escalated``
change that leaves the incident's state alone, and the escalation engine pages the next step at
once; then the same through the console API."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from atalaia.incidents.events import CommandReply, IncidentEvent
from atalaia.incidents.testing import Driver
from atalaia.notifiers.config import load_config_text
from atalaia.notifiers.engine import TICK, EscalationEngine, EscalationState
from tests.test_notifiers_escalation import CONFIG

T0 = datetime(2026, 1, 1, tzinfo=UTC)  # the Driver's time 0


def as_dict(e: IncidentEvent) -> dict:
    return orjson.loads(e.to_json())


def paged(notes) -> list[tuple[int, int, str]]:
    return sorted((n.step, n.repeat, n.target) for n in notes if n.kind == "escalation")


def test_escalate_now_pages_the_next_step_at_once_and_the_escalation_continues_from_it():
    d = Driver()
    engine = EscalationEngine(load_config_text(CONFIG, "escalation.yaml"))
    state = EscalationState()
    opened = d.fire("river-level-high", "porto-01", at=0, parish="Ribeira")
    _, notes = engine.step(state, as_dict(opened), T0)
    assert {n.step for n in notes} == {0}

    e = d.command("escalate", at=60, reason="water over the quay")
    assert isinstance(e, IncidentEvent) and e.change == "escalated"
    assert (e.state, e.actor, e.reason) == ("unacknowledged", "ana", "water over the quay"), "audited"
    assert d.state.incidents[e.incident].audit[-1].change == "escalated"
    _, notes = engine.step(state, as_dict(e), T0 + timedelta(seconds=60))
    assert paged(notes) == [(1, 0, "chefe-sms"), (1, 0, "piquete-email")], "step 2 now, not in 5 min"
    esc = state.escalations[e.incident]
    assert esc.step == 1 and esc.status == "running"
    assert esc.next_due == (T0 + timedelta(seconds=60 + 600)).timestamp(), "continues with step 2's wait"
    _, notes = engine.step(state, TICK, T0 + timedelta(minutes=5))
    assert notes == [], "step 1's own timer no longer fires"
    _, notes = engine.step(state, TICK, T0 + timedelta(minutes=11))
    assert paged(notes) == [(1, 1, "chefe-sms"), (1, 1, "piquete-email")], "step 2's first repeat"

    # roles: operator and supervisor; a viewer or an engineer is refused with the reason
    for k, role in enumerate(("viewer", "engineer")):
        r = d.command("escalate", at=700 + k, role=role)
        assert isinstance(r, CommandReply) and not r.accepted and f"role {role} may not escalate" in r.reason
    e = d.command("escalate", at=720, role="supervisor")
    _, notes = engine.step(state, as_dict(e), T0 + timedelta(seconds=720))
    assert paged(notes) == [(1, 2, "chefe-sms"), (1, 2, "piquete-email")], "the last step again"

    # acknowledged: the escalation is stopped; escalating pages the last step once more and stays stopped
    ack = d.command("acknowledge", at=800)
    engine.step(state, as_dict(ack), T0 + timedelta(seconds=800))
    e = d.command("escalate", at=900, reason="need the chief on site")
    assert e.state == "acknowledged"
    _, notes = engine.step(state, as_dict(e), T0 + timedelta(seconds=900))
    assert paged(notes) == [(1, 3, "chefe-sms"), (1, 3, "piquete-email")]
    assert state.escalations[e.incident].status == "stopped"
    assert engine.step(state, TICK, T0 + timedelta(hours=2))[1] == [], "nothing more while acknowledged"
    ids = [n.id for n in d.outputs if isinstance(n, IncidentEvent)]
    assert len(ids) == len(set(ids))

    # shelved: refused (nothing is paged while an overlay is set)
    d.command("shelve", at=1000, reason="crew on site", duration=600)
    r = d.command("escalate", at=1010)
    assert isinstance(r, CommandReply) and not r.accepted and "shelved" in r.reason


def test_escalating_an_incident_nothing_paged_yet_pages_step_one_once():
    d = Driver()
    engine = EscalationEngine(load_config_text(CONFIG, "escalation.yaml"))
    state = EscalationState()
    opened = d.fire("river-level-high", "porto-02", at=0, parish="Foz")
    ack = d.command("acknowledge", at=10)
    e = d.command("escalate", at=20)
    # the engine sees only the acknowledged state and the escalation (e.g. it started late)
    assert engine.step(state, as_dict(ack), T0 + timedelta(seconds=10))[1] == []
    _, notes = engine.step(state, as_dict(e), T0 + timedelta(seconds=20))
    assert {(n.step, n.repeat) for n in notes} == {(0, 0)} and len(notes) == 2
    assert state.escalations[opened.incident].status == "stopped"


@pytest.mark.broker
def test_escalate_through_the_api(make_worker, broker, topic_prefix):
    from tests.test_incidents_live import produce

    w = make_worker("--stages", "incidents,projection").start(("incidents", "projection"))
    t = datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    alarm = {
        "id": "e1",
        "at": t,
        "rule": "river-level-high",
        "group": "hydro",
        "key": "urn:ngsi-ld:WaterObserved:e1",
        "state": "firing",
        "severity": "high",
        "value": 4.8,
        "entity": "urn:ngsi-ld:WaterObserved:e1",
        "type": "WaterObserved",
        "labels": {"parish": "Bonfim"},
        "annotations": {},
        "location": None,
        "since": t,
    }
    asyncio.run(produce(broker, f"{topic_prefix}.alarms", [alarm]))
    deadline, rows = time.monotonic() + 30, []
    while not rows and time.monotonic() < deadline:
        rows = httpx.get(f"{w.url}/api/incidents", timeout=5).json()["incidents"]
        time.sleep(0.2)
    assert rows and "escalate" in rows[0]["actions"]
    iid = rows[0]["id"]
    url = f"{w.url}/api/incidents/{iid}/commands"
    r = httpx.post(url, json={"action": "escalate", "actor": "vi", "role": "viewer"}, timeout=10)
    assert r.status_code == 409 and "viewer may not escalate" in r.json()["detail"]
    r = httpx.post(
        url, json={"action": "escalate", "actor": "ana", "role": "operator", "reason": "rising"}, timeout=10
    )
    assert r.status_code == 200, r.text
    assert r.json()["reply"]["reason"] == "rising"

    def escalated():
        h = httpx.get(f"{w.url}/api/incidents/{iid}", timeout=5).json()["history"]
        return [x for x in h if x["change"] == "escalated"]

    deadline, hits = time.monotonic() + 15, []
    while not hits and time.monotonic() < deadline:
        hits = escalated()
        time.sleep(0.2)
    assert hits and (hits[0]["actor"], hits[0]["reason"], hits[0]["state"]) == (
        "ana",
        "rising",
        "unacknowledged",
    )
