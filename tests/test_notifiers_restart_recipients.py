"""An email to several recipients, partly delivered, then the worker killed (SIGKILL) and
restarted: who already got it is not sent it again, and who was refused for good is not asked
again (a real aiosmtpd server; the first worker is a separate process, killed).

Found by the fault probe of `atalaia up` (chaos SMTP server, kill -9 rounds): the channel kept
each notification's recipients reached so far in memory only, so a row `waiting` for one
recipient's 451 was sent again to every recipient after a restart; the ones that had it got
the page twice, with nothing in doubt and nothing on /health."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atalaia.notifiers.config import load_config_text
from atalaia.notifiers.engine import EscalationEngine, EscalationState
from atalaia.notifiers.log import SQLiteDeliveryLog
from atalaia.notifiers.service import Notifier
from atalaia.notifiers.testing import SmtpSink, incident_event
from atalaia.streams.clock import parse_time

ANA, RUI, BOB = "ana@cm-porto.pt", "rui@cm-porto.pt", "bob@cm-porto.pt"

ESCALATION = """
timezone: Europe/Lisbon
retry: {{first_backoff: 30s, max_backoff: 60s}}
targets:
  piquete: {{channel: email, url: "{url}"}}
routes: [{{policy: p}}]
policies:
  p: {{steps: [{{targets: [piquete], wait: 10m}}]}}
"""

# the first worker: delivers the incident's page and keeps running (its next retry is 15-30 s
# away) until the test kills it
FIRST = """
import asyncio, sys
from atalaia.notifiers.config import load_config
from atalaia.notifiers.engine import EscalationEngine, EscalationState
from atalaia.notifiers.log import SQLiteDeliveryLog
from atalaia.notifiers.service import Notifier
from atalaia.notifiers.testing import incident_event
from atalaia.streams.clock import parse_time

async def main():
    cfg = load_config(sys.argv[1])
    notifier = Notifier(cfg, SQLiteDeliveryLog(sys.argv[2]))
    await notifier.start()
    ev = incident_event(incident="inc-1", at="2026-03-01T10:00:00Z")
    await notifier.submit(EscalationEngine(cfg).step(EscalationState(), ev, parse_time(ev["at"]))[1])
    print("submitted", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.fixture
def smtp():
    sink = SmtpSink().start()
    yield sink
    sink.stop()


def rows(db: Path):
    log = SQLiteDeliveryLog(db)
    try:
        return log.deliveries(), log.attempts()
    finally:
        log.close()


async def settled(notifier, *statuses: str):
    """The one delivery row once it has one of ``statuses`` (or as it is after about 10 s)."""
    for _ in range(200):
        await asyncio.sleep(0.05)
        (d,) = notifier.log.deliveries()
        if d.status in statuses:
            break
    return d


async def test_a_restart_does_not_page_again_who_got_a_partly_delivered_email(smtp, tmp_path):
    smtp.rcpt_replies[RUI] = "451 4.3.0 temporary local problem"
    smtp.rcpt_replies[BOB] = "550 5.1.1 no such user"
    url = smtp.mailto(f"{ANA},{RUI},{BOB}")
    (tmp_path / "esc.yaml").write_text(ESCALATION.format(url=url))
    db = tmp_path / "d.sqlite"
    first = subprocess.Popen(
        [sys.executable, "-c", FIRST, str(tmp_path / "esc.yaml"), str(db)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert first.poll() is None, "the first worker died"
            if db.exists():
                deliveries, attempts = rows(db)
                if deliveries and deliveries[0].status == "waiting":
                    break
            assert time.monotonic() < deadline, "the first attempt was not recorded"
            await asyncio.sleep(0.1)
        (a,) = attempts
        assert a.status == "retryable" and f"(RCPT {RUI})" in a.error and f"(RCPT {BOB})" in a.error
        assert [m.rcpt_tos for m in smtp.messages] == [[ANA]]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)

    # restarted: rui's mailbox is back; the waiting row is taken up at once
    smtp.rcpt_replies.pop(RUI)
    cfg = load_config_text(ESCALATION.format(url=url), "esc.yaml")
    notifier = Notifier(cfg, SQLiteDeliveryLog(db))
    rec = await notifier.start()
    assert rec.resent == 1
    try:
        d = await settled(notifier, "delivered", "failed")
    finally:
        await notifier.aclose()
    got = sorted(r for m in smtp.messages for r in m.rcpt_tos)
    assert got == [ANA, RUI], got  # ana once: not paged again after the restart
    assert smtp.rcpts.count(BOB) == 1  # refused for good: not asked again
    (d,) = notifier.log.deliveries()
    assert d.status == "failed" and d.resend_until is None
    assert f"SMTP 550 5.1.1 no such user (RCPT {BOB})" in d.last_error
    assert ANA in d.last_error.split("delivered to")[1] and RUI in d.last_error.split("delivered to")[1]
    notifier.log.close()


async def test_a_partly_delivered_email_killed_during_its_retry_is_resent_to_the_others_only(smtp, tmp_path):
    # the worker is killed while its retry to rui is in flight (before the DATA terminator: no
    # commit marker), so the row is `sending`: re-sent after the restart, to rui only
    smtp.rcpt_replies[RUI] = "451 4.3.0 temporary local problem"
    url = smtp.mailto(f"{ANA},{RUI}")
    cfg = load_config_text(ESCALATION.format(url=url), "esc.yaml")
    db = tmp_path / "d.sqlite"
    notifier = Notifier(cfg, SQLiteDeliveryLog(db))
    await notifier.start()
    try:
        ev = incident_event(incident="inc-2", at="2026-03-01T10:00:00Z")
        await notifier.submit(EscalationEngine(cfg).step(EscalationState(), ev, parse_time(ev["at"]))[1])
        d = await settled(notifier, "waiting")
        assert d.status == "waiting"
    finally:
        await notifier.aclose()
    # what a kill during the next attempt leaves: the row `sending`, no commit marker
    notifier.log.begin(notifier.log.payloads([d.notification_id])[d.notification_id], "email", 2, time.time())
    notifier.log.close()
    smtp.rcpt_replies.clear()
    notifier = Notifier(cfg, SQLiteDeliveryLog(db))
    rec = await notifier.start()
    assert rec.uncommitted == 1
    try:
        d = await settled(notifier, "delivered")
    finally:
        await notifier.aclose()
    assert d.status == "delivered"
    assert sorted(r for m in smtp.messages for r in m.rcpt_tos) == [ANA, RUI]
    notifier.log.close()


# the first worker dies at its second commit point: ana's message was taken (250), rui's is
# about to get its DATA terminator
DIES_AT_SECOND = """
import asyncio, os, signal, sys
from atalaia.notifiers.commit import CommitMarks
from atalaia.notifiers.config import load_config
from atalaia.notifiers.engine import EscalationEngine, EscalationState
from atalaia.notifiers.log import SQLiteDeliveryLog
from atalaia.notifiers.service import Notifier
from atalaia.notifiers.testing import incident_event
from atalaia.streams.clock import parse_time

real, calls = CommitMarks.mark, []

def mark(self, nid):
    calls.append(nid)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, nid)

CommitMarks.mark = mark

async def main():
    cfg = load_config(sys.argv[1])
    notifier = Notifier(cfg, SQLiteDeliveryLog(sys.argv[2]))
    await notifier.start()
    ev = incident_event(incident="inc-3", at="2026-03-01T10:00:00Z")
    await notifier.submit(EscalationEngine(cfg).step(EscalationState(), ev, parse_time(ev["at"]))[1])
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_killed_between_two_recipients_messages_is_not_in_doubt_and_pages_the_other_once(
    smtp, tmp_path
):
    # one attempt passes a commit point per recipient; killed after ana's message was answered
    # 250 and before rui's terminator, the row was in doubt (the marker of ana's commit point):
    # rui never got the page. Now the marker says ana's was answered: rui's message is sent, once
    url = smtp.mailto(f"{ANA},{RUI}")
    (tmp_path / "esc.yaml").write_text(ESCALATION.format(url=url))
    db = tmp_path / "d.sqlite"
    first = subprocess.Popen(
        [sys.executable, "-c", DIES_AT_SECOND, str(tmp_path / "esc.yaml"), str(db)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert first.wait(30) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    assert [m.rcpt_tos for m in smtp.messages] == [[ANA]]
    (d,), _ = rows(db)
    assert d.status == "sending"

    notifier = Notifier(load_config_text(ESCALATION.format(url=url), "esc.yaml"), SQLiteDeliveryLog(db))
    rec = await notifier.start()
    assert (rec.in_doubt, rec.uncommitted) == (0, 1)
    try:
        d = await settled(notifier, "delivered")
    finally:
        await notifier.aclose()
    assert d.status == "delivered"
    assert sorted(r for m in smtp.messages for r in m.rcpt_tos) == [ANA, RUI]  # each once
    notifier.log.close()


async def test_killed_between_a_terminator_and_its_reply_is_still_in_doubt(smtp, tmp_path):
    # the second recipient's terminator went out, no reply read: that one may have been taken
    (n,) = EscalationEngine(
        cfg := load_config_text(ESCALATION.format(url=smtp.mailto(f"{ANA},{RUI}")), "e.yaml")
    ).step(EscalationState(), ev := incident_event(incident="inc-4"), parse_time(ev["at"]))[1]
    db = tmp_path / "d.sqlite"
    log = SQLiteDeliveryLog(db)
    log.enqueue([(n, "email")], time.time())
    log.begin(n, "email", 1, time.time())
    from atalaia.notifiers.commit import CommitMarks

    marks = CommitMarks.for_log(log)
    marks.mark(n.id).answered(250, ANA)
    marks.mark(n.id)  # rui's terminator, no answer
    log.close()
    notifier = Notifier(cfg, SQLiteDeliveryLog(db))
    rec = await notifier.start()
    await notifier.aclose()
    assert (rec.in_doubt, rec.uncommitted) == (1, 0)
    assert notifier.log.deliveries()[0].status == "in-doubt"
    assert smtp.messages == []
    notifier.log.close()
