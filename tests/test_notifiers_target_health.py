"""What a monitor sees of a notification target that is down: /health is "degraded" naming the
target while its circuit breaker is open (it stayed "ok": only the logs and metrics said so), and
`atalaia_notification_target_waiting` follows the waiting notifications back to 0 once they are
sent (it was sampled at breaker changes only: it said 299 after all 300 were delivered)."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from atalaia.notifiers.config import load_config_text
from atalaia.notifiers.engine import EscalationEngine, EscalationState
from atalaia.notifiers.log import SQLiteDeliveryLog
from atalaia.notifiers.model import Notification
from atalaia.notifiers.service import Notifier
from atalaia.notifiers.testing import HttpSink, incident_event
from atalaia.streams.clock import parse_time
from atalaia.streams.guard import HEALTH
from atalaia.streams.metrics import health_report

TARGET = "sala-health-gauge"


def notes_for(cfg, incident: str, at: str) -> list[Notification]:
    ev = incident_event(incident=incident, at=at)
    return EscalationEngine(cfg).step(EscalationState(), ev, parse_time(ev["at"]))[1]


def waiting() -> float | None:
    return REGISTRY.get_sample_value("atalaia_notification_target_waiting", {"target": TARGET})


async def until(cond, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        await asyncio.sleep(step)
    return cond()


async def test_health_names_an_open_target_and_the_waiting_gauge_returns_to_zero(tmp_path) -> None:
    sink = await HttpSink(secret="k").start()
    cfg = load_config_text(
        f"""
timezone: Europe/Lisbon
retry: {{first_backoff: 0.1, max_backoff: 0.5, open_after: 3}}
targets:
  {TARGET}: {{channel: webhook, url: "{sink.url}/hook", secret: k}}
routes: [{{policy: p}}]
policies:
  p: {{steps: [{{targets: [{TARGET}], wait: 10m}}]}}
""",
        "health.yaml",
    )
    log = SQLiteDeliveryLog(tmp_path / "d.sqlite")
    notifier = Notifier(cfg, log)
    port = sink.port
    await sink.stop()  # the target is down
    try:
        await notifier.start()
        for i in range(20):
            assert len(await notifier.submit(notes_for(cfg, f"inc-{i}", f"2026-03-01T10:{i:02d}:00Z"))) == 1
        assert await until(lambda: {h.target: h.state for h in log.targets()}.get(TARGET) == "open", 15)
        body, status = health_report({})
        assert body["status"] == "degraded" and status == 200  # it serves: degraded, not failed
        assert any(f"notification target {TARGET} unavailable" in p for p in body["problems"]), body
        assert (waiting() or 0) > 0

        await sink.start(port)  # back: every waiting notification goes out
        assert await until(lambda: all(d.status == "delivered" for d in log.deliveries()), 20)
        assert len(sink.requests) == 20
        assert await until(lambda: waiting() == 0, 3), waiting()
        body, status = health_report({})
        assert body["status"] == "ok" and status == 200, body
    finally:
        await notifier.aclose()
        await sink.stop()
        HEALTH.problems.pop(f"target-open:{TARGET}", None)


async def test_a_local_failure_around_the_send_is_named_not_a_question_mark(tmp_path, monkeypatch) -> None:
    """The data directory turns read-only: an email's commit marker cannot be cleared before its
    send, so nothing is sent and every attempt fails in Atalaia. /health said the target was
    unavailable with the reason "?"; it now names the local error."""
    from atalaia.notifiers import commit
    from atalaia.notifiers.testing import SmtpSink

    smtp = SmtpSink().start()
    target = "mail-readonly-disk"
    cfg = load_config_text(
        f"""
timezone: Europe/Lisbon
retry: {{first_backoff: 0.05, max_backoff: 0.2, open_after: 3}}
targets:
  {target}: {{channel: email, url: "{smtp.mailto("ana@cm-porto.pt")}"}}
routes: [{{policy: p}}]
policies:
  p: {{steps: [{{targets: [{target}], wait: 10m}}]}}
""",
        "health.yaml",
    )

    def read_only(self, nid: str) -> None:
        raise OSError(30, "Read-only file system", f"{self.dir}/{nid}")

    monkeypatch.setattr(commit.CommitMarks, "clear", read_only)
    log = SQLiteDeliveryLog(tmp_path / "d.sqlite")
    notifier = Notifier(cfg, log)
    try:
        await notifier.start()
        await notifier.submit(notes_for(cfg, "inc-ro", "2026-03-01T10:00:00Z"))
        assert await until(lambda: {h.target: h.state for h in log.targets()}.get(target) == "open", 15)
        body, _ = health_report({})
        (reason,) = [p for p in body["problems"] if f"notification target {target}" in p]
        assert "Read-only file system" in reason and "?)" not in reason, reason
        assert not smtp.messages, "nothing is sent while its commit marker cannot be handled"
    finally:
        await notifier.aclose()
        smtp.stop()
        HEALTH.problems.pop(f"target-open:{target}", None)
