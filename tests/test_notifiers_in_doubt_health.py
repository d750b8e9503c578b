"""In-doubt deliveries (the worker stopped between sending an SMS and recording it) are named on
``/health`` (count and targets) for ``in_doubt_alert_s`` after they were marked, across restarts,
and then no longer: one old row does not keep the process 503 for ever."""

from __future__ import annotations

import time

import pytest

from atalaia.notifiers.config import load_config_text
from atalaia.notifiers.engine import EscalationEngine, EscalationState
from atalaia.notifiers.log import SQLiteDeliveryLog
from atalaia.notifiers.service import Notifier
from atalaia.notifiers.testing import incident_event
from atalaia.streams.clock import parse_time
from atalaia.streams.guard import HEALTH

CFG = """
timezone: Europe/Lisbon
targets:
  ana-sms: {channel: sms, url: "smseagle://tok@127.0.0.1:1/+351912000001"}
  rui-sms: {channel: sms, url: "smseagle://tok@127.0.0.1:1/+351912000002"}
routes: [{policy: p}]
policies:
  p: {steps: [{targets: [ana-sms, rui-sms], wait: 10m}]}
"""


@pytest.fixture(autouse=True)
def clean_health():
    HEALTH.condition("in-doubt", None)
    yield
    HEALTH.condition("in-doubt", None)


def in_doubt_reasons() -> list[str]:
    return [r for r in HEALTH.status()[1] if "in doubt" in r]


async def restart(db, clock=time.time, alert_s: float = 3600.0):
    n = Notifier(
        load_config_text(CFG, "e.yaml"), SQLiteDeliveryLog(db), clock=clock, in_doubt_alert_s=alert_s
    )
    rec = await n.start()
    await n.aclose()
    n.log.close()
    return rec


async def test_in_doubt_deliveries_degrade_health_for_a_while_naming_their_targets(tmp_path):
    cfg = load_config_text(CFG, "e.yaml")
    ev = incident_event(incident="inc-1")
    notes = EscalationEngine(cfg).step(EscalationState(), ev, parse_time(ev["at"]))[1]
    db = tmp_path / "d.sqlite"
    log = SQLiteDeliveryLog(db)  # what a kill -9 during two SMS sends leaves
    log.enqueue([(n, "sms") for n in notes], time.time())
    for n in notes:
        log.begin(n, "sms", 1, time.time())
    log.close()

    rec = await restart(db)
    assert rec.in_doubt == 2
    status, _ = HEALTH.status()
    (reason,) = in_doubt_reasons()
    assert status == "degraded"
    assert reason.startswith("2 notification(s) in doubt since ")
    assert "ana-sms (1), rui-sms (1)" in reason and "atalaia notify log" in reason
    problem = HEALTH.problems["in-doubt"]
    marked = max(d.updated_at for d in SQLiteDeliveryLog(db).deliveries())
    assert problem.until == pytest.approx(marked + 3600.0)  # clears by itself

    # a second restart (a new process: nothing in memory) still names them: recent rows in the log
    HEALTH.condition("in-doubt", None)
    assert (await restart(db)).in_doubt == 0
    assert len(in_doubt_reasons()) == 1

    # a restart after the window: old in-doubt rows no longer degrade /health
    assert (await restart(db, clock=lambda: time.time() + 3601)).in_doubt == 0
    assert in_doubt_reasons() == []
    # 0 switches it off
    await restart(db, alert_s=0)
    assert in_doubt_reasons() == []
