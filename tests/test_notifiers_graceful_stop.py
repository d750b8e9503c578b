"""A graceful stop of the worker (SIGTERM, as systemd and ``atalaia up``'s Ctrl-C send) during a
backlog of deliveries leaves nothing in doubt: no new send starts, the sends in flight are
answered and recorded (within ``ATALAIA_DELIVERY_GRACE_S``), and the restart sends each waiting
notification once. Before, the sends in flight were cancelled mid-request: after the restart each
Alertmanager message being sent was ``in-doubt`` (``/health`` degraded) and each signed webhook
being sent went out twice. A kill -9 still leaves them in doubt (Alertmanager) or re-sent
(webhook), as ``notifiers/README.md`` says; so does a send that outlives the grace.

Real worker subprocesses on the real broker, a real local HTTP receiver that answers slowly.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from atalaia.notifiers.testing import HttpSink
from tests.test_streams_delivery_live import SinkThread, notify_log, read_log, wait_for

pytestmark = pytest.mark.broker

STAGES = ("ingest", "rules", "incidents", "escalation", "delivery")
SECRET = "graceful-stop-hook-secret"
GAUGES = 6
RULES = """
group: hydro
rules:
  - id: level-high
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: high, above: 3.5}]
"""
INCIDENTS = "correlation: {window: 30m}\nchattering: {auto_shelve: false}\n"


def escalation_yaml(url: str) -> str:
    return f"""
timezone: Europe/Lisbon
targets:
  sala: {{channel: webhook, url: "{url}/hook", secret: "${{GRACE_HOOK_SECRET}}"}}
  am: {{channel: alertmanager, url: "{url}/am", concurrency: 2}}
routes: [{{policy: p}}]
policies:
  p: {{steps: [{{targets: [sala, am], wait: 1h}}]}}
"""


def notification(now: str) -> bytes:
    data = [
        {"id": f"urn:ngsi-ld:WaterObserved:g{i}", "type": "WaterObserved", "dateObserved": now, "height": 4.2}
        for i in range(GAUGES)
    ]
    return orjson.dumps({"id": "urn:ngsi-ld:Notification:g", "type": "Notification", "data": data})


def requests_per_notification(http: HttpSink) -> Counter:
    """Requests the receiver got, per notification (webhook: its delivery id; Alertmanager: the
    incident of its group, one Alertmanager notification per incident here)."""
    got: Counter = Counter()
    for r in http.requests:
        if r.path == "/hook":
            assert r.signature_ok
            got["sala", r.headers["X-Atalaia-Delivery"]] += 1
        else:
            got["am", r.json["groupKey"]] += 1
    return got


@pytest.mark.parametrize("stop", ["sigterm", "sigterm-past-grace", "kill"])
def test_a_graceful_stop_mid_send_leaves_nothing_in_doubt_and_sends_nothing_twice(
    broker, topic_prefix, make_worker, tmp_path: Path, stop: str
) -> None:
    sink = HttpSink(secret=SECRET)
    # answers slowly: the stop lands while requests are at the receiver, unanswered
    slow = 6.0 if stop == "sigterm-past-grace" else 1.5  # (< the 10 s timeout)
    sink.delay = {"/hook": slow, "/am": slow}
    with SinkThread(sink) as http:
        for name, text in (
            ("rules.yaml", RULES),
            ("incidents.yaml", INCIDENTS),
            ("escalation.yaml", escalation_yaml(http.url)),
        ):
            (tmp_path / name).write_text(text)
        env = {
            "ATALAIA_RULES_PATHS": json.dumps([str(tmp_path / "rules.yaml")]),
            "ATALAIA_INCIDENTS_PATH": str(tmp_path / "incidents.yaml"),
            "ATALAIA_ESCALATION_PATH": str(tmp_path / "escalation.yaml"),
            "GRACE_HOOK_SECRET": SECRET,
            "ATALAIA_DELIVERY_GRACE_S": "2" if stop == "sigterm-past-grace" else "15",
        }
        w1 = make_worker("--stages", ",".join(STAGES), extra_env=env).start(STAGES)
        db = Path(w1.env["ATALAIA_DATA_DIR"]) / "deliveries.sqlite"
        diag = lambda: f"log: {list(read_log(db).values())}\nworker:\n{w1.log.read_text()[-4000:]}"  # noqa: E731
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        r = httpx.post(
            f"{w1.url}/ngsi-ld/notify",
            content=notification(now),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert r.status_code == 200 and r.json()["accepted"] == GAUGES, r.text

        # the backlog is queued and the first sends of both targets are at the receiver, unanswered
        def in_flight() -> bool:
            paths = {r.path for r in http.requests}
            return len(read_log(db)) == 2 * GAUGES and paths == {"/hook", "/am"}

        wait_for(in_flight, 60, "the first webhook and Alertmanager sends at the receiver", diag)
        sent_before = requests_per_notification(http)
        if stop == "kill":
            w1.kill()
        else:
            w1.proc.send_signal(signal.SIGTERM)
            assert w1.proc.wait(40) == 0, diag()
        at_stop = read_log(db)
        sending = {i: d for i, d in at_stop.items() if d["status"] == "sending"}

        w2 = make_worker("--stages", ",".join(STAGES), extra_env=env, port=w1.port).start(STAGES)
        diag = lambda: f"log: {list(read_log(db).values())}\nworker:\n{w2.log.read_text()[-4000:]}"  # noqa: E731
        if stop != "kill":
            http.delay = {}  # (past the grace: the rest need not wait 6 s each)

        def final() -> bool:
            log = read_log(db)
            return len(log) == 2 * GAUGES and all(
                d["status"] in ("delivered", "in-doubt") for d in log.values()
            )

        wait_for(final, 90, "every delivery final after the restart", diag)
        rows = {d["notification_id"]: d for d in notify_log(w2.env, db)}
        health = w2.health()
        w2.stop()
        got = requests_per_notification(http)

    in_doubt = {i: d for i, d in rows.items() if d["status"] == "in-doubt"}
    doubt_reasons = [x for x in health.get("problems", []) if "in doubt" in x]
    assert Counter(target for target, _ in got) == {"sala": GAUGES, "am": GAUGES} or stop != "sigterm", got
    assert {target for target, _ in got} == {"sala", "am"} and len(got) == 2 * GAUGES, got  # none lost
    if stop == "sigterm":
        # the sends in flight were answered and recorded before the worker exited
        assert sending == {}, at_stop
        assert sum(1 for d in at_stop.values() if d["status"] == "delivered") >= len(sent_before)
        assert in_doubt == {}, in_doubt
        assert doubt_reasons == [], health
        assert all(d["status"] == "delivered" for d in rows.values())
        assert set(got.values()) == {1}, got  # each notification reached the receiver exactly once
        return
    # a kill, or a send still unanswered when the grace ran out: the crash policy, unchanged
    assert sending, at_stop
    assert {d["target"] for d in in_doubt.values()} <= {"am"}
    assert set(in_doubt) == {i for i, d in sending.items() if d["target"] == "am"}
    assert doubt_reasons and "am (" in doubt_reasons[0], health
    hooks_in_flight = {i for i, d in sending.items() if d["target"] == "sala"}
    for (target, key), count in got.items():
        if target == "am":
            assert count == 1, got  # never re-sent, in doubt or not
        else:  # an idempotent webhook in flight is re-sent (the receiver dedupes on its id)
            assert count == (2 if key in hooks_in_flight else 1), (key, count)


# -- the same at the notifier's level (in one process, fast): the grace and what is cut off -------

AM_CFG = """
timezone: Europe/Lisbon
targets:
  am: {{channel: alertmanager, url: "{url}/am"}}
routes: [{{policy: p}}]
policies:
  p: {{steps: [{{targets: [am], wait: 10m}}]}}
"""


async def _one_send_in_flight(tmp_path: Path, sink: HttpSink):
    import asyncio

    from atalaia.notifiers.config import load_config_text
    from atalaia.notifiers.engine import EscalationEngine, EscalationState
    from atalaia.notifiers.log import SQLiteDeliveryLog
    from atalaia.notifiers.service import Notifier
    from atalaia.notifiers.testing import incident_event
    from atalaia.streams.clock import parse_time

    cfg = load_config_text(AM_CFG.format(url=sink.url), "e.yaml")
    ev = incident_event(incident="inc-grace")
    (note,) = EscalationEngine(cfg).step(EscalationState(), ev, parse_time(ev["at"]))[1]
    db = tmp_path / "d.sqlite"
    notifier = Notifier(cfg, SQLiteDeliveryLog(db))
    await notifier.start()
    await notifier.submit([note])
    for _ in range(100):  # the request is at the receiver, its answer held back by the delay
        if sink.requests:
            break
        await asyncio.sleep(0.05)
    assert len(sink.received("/am")) == 1
    return cfg, db, note, notifier


async def test_the_send_in_flight_finishes_within_the_grace_and_is_recorded(tmp_path):
    from atalaia.notifiers.log import SQLiteDeliveryLog

    sink = await HttpSink().start()
    sink.delay = {"/am": 0.5}
    try:
        _, db, note, notifier = await _one_send_in_flight(tmp_path, sink)
        assert await notifier.aclose(grace=5.0) == {}
        notifier.log.close()
        (row,) = SQLiteDeliveryLog(db).deliveries()
        assert (row.notification_id, row.status, row.attempts) == (note.id, "delivered", 1)
    finally:
        await sink.stop()


async def test_a_send_that_outlives_the_grace_is_cut_off_and_in_doubt_at_the_next_start(tmp_path):
    import time

    from atalaia.notifiers.log import SQLiteDeliveryLog
    from atalaia.notifiers.service import Notifier

    sink = await HttpSink().start()
    sink.delay = {"/am": 3.0}
    try:
        cfg, db, note, notifier = await _one_send_in_flight(tmp_path, sink)
        t0 = time.monotonic()
        assert await notifier.aclose(grace=0.3) == {"am": [note.id]}
        assert time.monotonic() - t0 < 2.0  # bounded by the grace, not by the answer
        notifier.log.close()
        assert [r.status for r in SQLiteDeliveryLog(db).deliveries()] == ["sending"]
        again = Notifier(cfg, SQLiteDeliveryLog(db))
        rec = await again.start()
        await again.aclose()
        assert (rec.in_doubt, rec.resent) == (1, 0)
        assert len(sink.received("/am")) == 1  # not re-sent
    finally:
        await sink.stop()
