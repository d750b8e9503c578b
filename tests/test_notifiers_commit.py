"""SMTP commit point: the marker is written right before the DATA terminator (against a real
aiosmtpd server), and a crash leaves an email ``in-doubt`` only if it got that far; one killed
before it (no marker) is re-sent on recovery and arrives exactly once."""

from __future__ import annotations

import asyncio
import smtplib
import time
from zoneinfo import ZoneInfo

import pytest

from atalaia.notifiers.channels.apprise import AppriseChannel
from atalaia.notifiers.channels.base import ChannelContext
from atalaia.notifiers.commit import COMMIT_HOOK, CommitMarks
from atalaia.notifiers.config import load_config_text
from atalaia.notifiers.engine import EscalationEngine, EscalationState
from atalaia.notifiers.log import SQLiteDeliveryLog
from atalaia.notifiers.service import Notifier
from atalaia.notifiers.testing import SmtpSink, incident_event
from atalaia.streams.clock import parse_time

TERMINATOR = b"\r\n.\r\n"


@pytest.fixture
def smtp():
    sink = SmtpSink().start()
    yield sink
    sink.stop()


async def test_hook_fires_once_per_message_right_before_the_terminator(smtp, monkeypatch):
    events: list[tuple] = []
    real_send = smtplib.SMTP.send

    def spy_send(self, s):
        events.append(("send", bytes(s) if isinstance(s, bytes | bytearray) else s.encode()))
        return real_send(self, s)

    monkeypatch.setattr(smtplib.SMTP, "send", spy_send)

    def hook():
        events.append(("hook", len(smtp.messages)))  # how many the server had accepted then

    # two recipients: apprise sends two messages (two DATA transactions) in one session
    url = f"mailto://127.0.0.1:{smtp.port}?mode=insecure&from=a@cm-porto.pt&to=ana@cm-porto.pt,rui@cm-porto.pt&user=&pass="
    ch = AppriseChannel("e", ChannelContext(tz=ZoneInfo("Europe/Lisbon")), url, "email")
    assert ch.commit_point
    for k in range(2):
        token = COMMIT_HOOK.set(hook)
        try:
            result = await ch._deliver(f"subject {k}", f"body {k}\n.leading dot\n", None)
        finally:
            COMMIT_HOOK.reset(token)
        assert result.ok, result.error

    assert len(smtp.messages) == 4
    hooks = [i for i, e in enumerate(events) if e[0] == "hook"]
    assert len(hooks) == 4  # exactly once per message
    for n, i in enumerate(hooks):
        assert events[i][1] == n  # the server had not yet got this message
        nxt, prev = events[i + 1], events[i - 1]
        # the payload went before it up to its last "\r\n"; the very next bytes complete the terminator
        assert prev[0] == "send" and nxt == ("send", b".\r\n") and (prev[1] + nxt[1]).endswith(TERMINATOR)
        assert events[i - 2] == ("send", b"data\r\n")  # the DATA command went before, without the hook
    # not for any other command (and no hook outside our sends)
    assert sum(1 for e in events if e == ("send", b".\r\n")) == 4

    # a send without a hook set (another library using smtplib) is untouched
    events.clear()
    assert (await ch._deliver("x", "y", None)).ok
    assert not [e for e in events if e[0] == "hook"]


def config(smtp: SmtpSink):
    return load_config_text(
        f"""
timezone: Europe/Lisbon
targets:
  ana-email: {{channel: email, url: "{smtp.mailto("ana@cm-porto.pt")}"}}
  ana-sms: {{channel: sms, url: "smseagle://tok@127.0.0.1:1/+351912000001"}}
routes: [{{policy: p}}]
policies:
  p: {{steps: [{{targets: [ana-email], wait: 10m}}]}}
""",
        "commit.yaml",
    )


def notes_for(cfg, incident: str):
    ev = incident_event(incident=incident, at="2026-03-01T10:00:00Z")
    return EscalationEngine(cfg).step(EscalationState(), ev, parse_time(ev["at"]))[1]


async def until(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        await asyncio.sleep(0.05)
    return cond()


@pytest.mark.parametrize("marked", [False, True])
async def test_a_crashed_email_is_re_sent_only_if_it_never_reached_the_terminator(tmp_path, smtp, marked):
    cfg = config(smtp)
    (n,) = notes_for(cfg, "inc-1")
    db = tmp_path / "d.sqlite"
    # the state a kill -9 leaves: the attempt recorded as 'sending', and a marker iff the
    # terminator was about to go out
    log = SQLiteDeliveryLog(db)
    log.enqueue([(n, "email")], time.time())
    log.begin(n, "email", 1, time.time())
    marks = CommitMarks.for_log(log)
    assert marks is not None
    if marked:
        marks.mark(n.id)
    log.close()

    notifier = Notifier(cfg, SQLiteDeliveryLog(db))
    try:
        rec = await notifier.start()
        assert not any(marks.dir.iterdir())  # recovery clears every marker
        if marked:
            assert (rec.in_doubt, rec.resent, rec.uncommitted) == (1, 0, 0)
            await asyncio.sleep(0.3)
            assert notifier.log.deliveries()[0].status == "in-doubt"
        else:
            assert (rec.in_doubt, rec.resent, rec.uncommitted) == (0, 1, 1)
            assert await until(lambda: notifier.log.deliveries()[0].status == "delivered", 5)
        assert await notifier.deliver(notes_for(cfg, "inc-1")) == []  # a replay: nothing twice
        await notifier.drain()
    finally:
        await notifier.aclose()
    assert len(smtp.messages) == (0 if marked else 1)
    statuses = sorted(a.status for a in notifier.log.attempts())
    assert statuses == (["in-doubt"] if marked else ["delivered", "unknown"])
    assert not any(marks.dir.iterdir())
    notifier.log.close()


async def test_a_normal_send_writes_the_marker_before_delivery_and_removes_it_after(
    tmp_path, smtp, monkeypatch
):
    cfg = config(smtp)
    seen: list[tuple[str, int]] = []
    real_mark = CommitMarks.mark

    def spy_mark(self, nid):
        real_mark(self, nid)
        seen.append((nid, len(smtp.messages)))

    monkeypatch.setattr(CommitMarks, "mark", spy_mark)
    notifier = Notifier(cfg, SQLiteDeliveryLog(tmp_path / "d.sqlite"))
    await notifier.start()
    try:
        (n,) = await notifier.deliver(notes_for(cfg, "inc-2"))
    finally:
        await notifier.aclose()
    assert seen == [(n.id, 0)] and len(smtp.messages) == 1
    assert not any((tmp_path / "d.sqlite.smtp-commit").iterdir())  # removed once recorded
    notifier.log.close()


async def test_a_delivery_to_a_target_removed_since_is_said_not_silently_stranded(
    tmp_path, smtp, caplog
) -> None:
    """A page waiting for its target (the receiver down), then a restart with that target removed
    from the escalation file: recovery skipped the row without a word, /health said ok, and the
    delivery log kept "waiting" for ever. It is logged, and /health names it."""
    from atalaia.streams.guard import HEALTH

    cfg = config(smtp)
    (n,) = notes_for(cfg, "inc-9")
    db = tmp_path / "d.sqlite"
    log = SQLiteDeliveryLog(db)
    log.enqueue([(n, "email")], time.time())
    log.close()
    text = """
timezone: Europe/Lisbon
targets:
  ana-sms: {channel: sms, url: "smseagle://tok@127.0.0.1:1/+351912000001"}
routes: [{policy: p}]
policies:
  p: {steps: [{targets: [ana-sms], wait: 10m}]}
"""
    notifier = Notifier(load_config_text(text, "e.yaml"), SQLiteDeliveryLog(db))
    try:
        rec = await notifier.start()
        assert rec.stranded == {"ana-email": 1} and rec.resent == 0
        assert any(
            "no longer has" in r.getMessage() and "ana-email" in r.getMessage() for r in caplog.records
        )
        status, reasons = HEALTH.status()
        assert status == "degraded" and any("ana-email" in x for x in reasons), (status, reasons)
    finally:
        HEALTH.condition("target-gone:ana-email", None)
        await notifier.aclose()
        notifier.log.close()
    assert smtp.messages == []


async def test_a_rate_limit_keeps_counting_what_was_sent_before_a_restart(tmp_path, smtp) -> None:
    """`rate: {max: 3, per: 20s}` on an SMS target: a restart started the bucket full, so the
    three sent just before and three more just after made six within seconds. The lane starts
    with what the delivery log says was sent within the window."""
    from atalaia.notifiers.model import DeliveryResult
    from atalaia.notifiers.pipeline import TokenBucket

    text = """
timezone: Europe/Lisbon
targets:
  ana-sms: {channel: sms, url: "smseagle://tok@127.0.0.1:1/+351912000001", rate: {max: 3, per: 20s}}
  other: {channel: sms, url: "smseagle://tok@127.0.0.1:1/+351912000002", rate: {max: 3, per: 20s}}
routes: [{policy: p}]
policies:
  p: {steps: [{targets: [ana-sms], wait: 10m}]}
"""
    cfg = load_config_text(text, "e.yaml")
    db = tmp_path / "d.sqlite"
    log = SQLiteDeliveryLog(db)
    now = time.time()
    for k, n in enumerate(notes_for(cfg, "inc-1") + notes_for(cfg, "inc-2") + notes_for(cfg, "inc-3")):
        log.enqueue([(n, "sms")], now - 30 + k)
        log.begin(n, "sms", 1, now - 3 + k)  # three sent 3, 2 and 1 s ago
        log.finish(n, 1, DeliveryResult("delivered"), "delivered", now - 3 + k, 5.0)
    assert len(log.sent_since("ana-sms", now - 20)) == 3 and log.sent_since("other", now - 20) == []
    log.close()
    notifier = Notifier(cfg, SQLiteDeliveryLog(db))
    try:
        await notifier.start()
        spent = notifier._make_lane("ana-sms").bucket
        fresh = notifier._make_lane("other").bucket
        assert spent.available(time.time()) == 0  # the window's three were spent before the restart
        assert 1.0 <= spent.next_token_at(time.time()) - time.time() <= 7.0  # refills at 3 per 20 s
        assert fresh.available(time.time()) == 3
    finally:
        await notifier.aclose()
        notifier.log.close()
    bucket = TokenBucket(3, 20)
    bucket.seed([100.0, 101.0], 110.0)
    assert bucket.available(110.0) == 2 and bucket.available(101.0 + 20 / 3 * 2) == 3
