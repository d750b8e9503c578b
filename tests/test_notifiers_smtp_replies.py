"""SMTP replies reach the delivery log, and a 5xx is not retried (against a real aiosmtpd server).

A mailbox that does not exist (550 at RCPT), a message refused after its DATA terminator (554):
``permanent`` with the server's code and text. A 4xx, a refused connection, a mailbox full (552 at
RCPT, X.2.2) and the relay refusing the session (a sender refused, 553; bad credentials, 535):
``retryable``, with the code/text too. Several recipients: the ones that got the
message do not get it again when another one's refusal is retried."""

from __future__ import annotations

import asyncio
import re
import socket
from zoneinfo import ZoneInfo

import pytest

from atalaia.notifiers.channels.apprise import AppriseChannel
from atalaia.notifiers.channels.base import ChannelContext
from atalaia.notifiers.config import load_config_text
from atalaia.notifiers.engine import EscalationEngine, EscalationState
from atalaia.notifiers.log import SQLiteDeliveryLog
from atalaia.notifiers.service import Notifier
from atalaia.notifiers.testing import SmtpSink, incident_event
from atalaia.streams.clock import parse_time

ANA, RUI = "ana@cm-porto.pt", "rui@cm-porto.pt"


@pytest.fixture
def smtp():
    sink = SmtpSink().start()
    yield sink
    sink.stop()


def config(url: str):
    # a short budget: the old behaviour (a 550 retried like an outage) ends within seconds
    return load_config_text(
        f"""
timezone: Europe/Lisbon
retry: {{for: 3s, first_backoff: 0.1, max_backoff: 0.2}}
targets:
  piquete: {{channel: email, url: "{url}"}}
routes: [{{policy: p}}]
policies:
  p: {{steps: [{{targets: [piquete], wait: 10m}}]}}
""",
        "smtp.yaml",
    )


def two(smtp: SmtpSink) -> str:
    return smtp.mailto(f"{ANA},{RUI}")


def notes_for(cfg, incident: str = "inc-1"):
    ev = incident_event(incident=incident, at="2026-03-01T10:00:00Z")
    return EscalationEngine(cfg).step(EscalationState(), ev, parse_time(ev["at"]))[1]


async def deliver(cfg, tmp_path):
    notifier = Notifier(cfg, SQLiteDeliveryLog(tmp_path / "d.sqlite"))
    await notifier.start()
    try:
        await asyncio.wait_for(notifier.deliver(notes_for(cfg)), 30)
    finally:
        await notifier.aclose()
    return notifier


async def test_a_mailbox_that_does_not_exist_fails_for_good_with_the_servers_words(smtp, tmp_path):
    smtp.rcpt_replies[RUI] = "550 5.1.1 mailbox unavailable"
    notifier = await deliver(config(two(smtp)), tmp_path)
    (d,) = notifier.log.deliveries()
    assert d.status == "failed" and d.attempts == 1 and d.resend_until is None  # not retried, not kept
    assert f"SMTP 550 5.1.1 mailbox unavailable (RCPT {RUI})" in d.last_error
    assert f"delivered to {ANA}" in d.last_error and "permanent" in d.last_error
    (a,) = notifier.log.attempts()
    assert (a.status, a.detail) == ("permanent", "SMTP 550")  # as an HTTP 404 shows "HTTP 404"
    assert [m.rcpt_tos for m in smtp.messages] == [[ANA]]  # ana got it, once
    notifier.log.close()


@pytest.mark.parametrize(
    "where, reply, expect",
    [
        (
            "data",
            "554 5.7.1 message refused as spam",
            f"SMTP 554 5.7.1 message refused as spam (end of DATA, to {ANA})",
        ),
    ],
)
async def test_a_message_refused_with_a_5xx_is_refused_not_in_doubt(smtp, tmp_path, where, reply, expect):
    smtp.data_reply = reply  # after the DATA terminator: past the commit point, yet refused
    notifier = await deliver(config(smtp.mailto(ANA)), tmp_path)
    (d,) = notifier.log.deliveries()
    assert (d.status, d.attempts, d.resend_until) == ("failed", 1, None)
    assert d.last_error.startswith(expect)
    (a,) = notifier.log.attempts()
    assert (a.status, a.detail) == ("permanent", f"SMTP {reply[:3]}")
    marks = tmp_path / "d.sqlite.smtp-commit"
    assert not any(marks.iterdir())  # the commit marker of the refused message is gone: not in doubt
    assert smtp.messages == []
    notifier.log.close()


async def test_a_4xx_is_retried_with_its_words_and_who_got_it_is_not_sent_it_again(smtp, tmp_path):
    smtp.rcpt_replies[RUI] = "450 4.2.1 mailbox busy, try later"
    cfg = config(two(smtp))
    notifier = Notifier(cfg, SQLiteDeliveryLog(tmp_path / "d.sqlite"))
    await notifier.start()
    try:
        fut = asyncio.ensure_future(notifier.deliver(notes_for(cfg)))
        for _ in range(100):
            await asyncio.sleep(0.05)
            rows = notifier.log.deliveries()
            if rows and rows[0].attempts >= 2:
                break
        (d,) = notifier.log.deliveries()
        assert d.status in ("waiting", "sending")
        assert f"SMTP 450 4.2.1 mailbox busy, try later (RCPT {RUI})" in (
            notifier.log.attempts()[0].error or ""
        )
        assert notifier.log.attempts()[0].status == "retryable"
        smtp.rcpt_replies.clear()  # rui's mailbox is back
        assert len(await asyncio.wait_for(fut, 10)) == 1
    finally:
        await notifier.aclose()
    (d,) = notifier.log.deliveries()
    assert d.status == "delivered"
    got = sorted(r for m in smtp.messages for r in m.rcpt_tos)
    assert got == [ANA, RUI]  # each once: ana's copy was not sent again with rui's retries
    notifier.log.close()


async def test_a_refused_connection_is_retryable_and_says_so():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    url = f"mailto://127.0.0.1:{port}?mode=insecure&from=a@cm-porto.pt&to={ANA}&user=&pass="
    ch = AppriseChannel("e", ChannelContext(tz=ZoneInfo("Europe/Lisbon")), url, "email")
    r = await ch._deliver("s", "b", None, "n1")
    assert r.status == "retryable"
    # the server it tried is named: a wrong host or port in the target is seen in the delivery log
    assert r.error.startswith(f"SMTP connect to 127.0.0.1:{port} failed: ConnectionRefusedError"), r.error


async def test_bad_credentials_are_retried_not_dropped_and_the_password_is_not_logged():
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            return "250 OK"

    def refuse(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=False, handled=False)  # the server answers 535

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        authenticator=refuse,
        auth_require_tls=False,
        auth_exclude_mechanism=["LOGIN"],
    )
    server.start()
    try:
        url = f"mailto://ana:s3cret-pw@127.0.0.1:{port}?mode=insecure&from=a@cm-porto.pt&to={ANA}"
        ch = AppriseChannel("e", ChannelContext(tz=ZoneInfo("Europe/Lisbon")), url, "email")
        r = ch.scrub(await ch._deliver("s", "b", None, "n1"))
    finally:
        server.stop()
    # the relay refuses us, not a recipient: every page would fail the same way until a person
    # fixes the credentials; retried (the breaker opens, /health names the target), not dropped
    assert (r.status, r.detail) == ("retryable", "SMTP 535")
    assert r.error == "SMTP 535 5.7.8 Authentication credentials invalid (AUTH)"


async def deliver_through(serve):
    """One email (to ana) through a hand-written SMTP server: ``serve(conn)`` answers its one
    connection (what aiosmtpd cannot be made to do: a busy greeting, a drop mid-session)."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def accept():
        conn, _ = listener.accept()
        with conn:
            serve(conn)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        port = listener.getsockname()[1]
        url = f"mailto://127.0.0.1:{port}?mode=insecure&from=a@cm-porto.pt&to={ANA}&user=&pass="
        ch = AppriseChannel("e", ChannelContext(tz=ZoneInfo("Europe/Lisbon")), url, "email")
        return await ch._deliver("s", "b", None, "n1")
    finally:
        t.join(5)
        listener.close()


async def test_a_server_too_busy_to_talk_is_retryable_with_its_greeting():
    r = await deliver_through(lambda conn: conn.sendall(b"421 4.3.2 too many connections, try later\r\n"))
    assert (r.status, r.detail) == ("retryable", "SMTP 421")
    assert re.fullmatch(
        r"SMTP 421 4\.3\.2 too many connections, try later \(connect to 127\.0\.0\.1:\d+\)", r.error
    )


async def test_a_recipient_refused_for_good_is_not_asked_again_while_another_is_retried(smtp, tmp_path):
    smtp.rcpt_replies[ANA] = "550 5.1.1 no such user"
    smtp.rcpt_replies[RUI] = "452 4.2.2 mailbox full"
    cfg = config(two(smtp))
    notifier = Notifier(cfg, SQLiteDeliveryLog(tmp_path / "d.sqlite"))
    await notifier.start()
    try:
        fut = asyncio.ensure_future(notifier.deliver(notes_for(cfg)))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if len(notifier.log.attempts()) >= 3:
                break
        del smtp.rcpt_replies[RUI]  # rui's mailbox has room again
        assert await asyncio.wait_for(fut, 10) == []  # not delivered to everyone: failed
    finally:
        await notifier.aclose()
    (d,) = notifier.log.deliveries()
    assert d.status == "failed" and d.resend_until is None and d.attempts >= 3
    assert d.last_error.startswith(f"SMTP 550 5.1.1 no such user (RCPT {ANA}); delivered to {RUI}")
    assert smtp.rcpts.count(ANA) == 1  # asked once, not at every retry
    assert [m.rcpt_tos for m in smtp.messages] == [[RUI]]
    notifier.log.close()


@pytest.mark.parametrize(
    "rcpt, data, expect",
    [
        # RFC 5321 §4.5.3.1.10: a 552 to RCPT (too many recipients, or the old "mailbox full") is
        # to be treated as a temporary failure (452)
        ("552 5.5.3 too many recipients", None, f"SMTP 552 5.5.3 too many recipients (RCPT {ANA})"),
        # RFC 3463 X.2.2 mailbox full: "a persistent transient failure", whatever the basic code
        ("550 5.2.2 mailbox full", None, f"SMTP 550 5.2.2 mailbox full (RCPT {ANA})"),
        (None, "552 5.2.2 quota exceeded", f"SMTP 552 5.2.2 quota exceeded (end of DATA, to {ANA})"),
    ],
)
async def test_a_full_mailbox_is_retried_and_gets_the_page_once_it_has_room(
    smtp, tmp_path, rcpt, data, expect
):
    if rcpt is not None:
        smtp.rcpt_replies[ANA] = rcpt
    smtp.data_reply = data
    cfg = config(smtp.mailto(ANA))
    notifier = Notifier(cfg, SQLiteDeliveryLog(tmp_path / "d.sqlite"))
    await notifier.start()
    try:
        fut = asyncio.ensure_future(notifier.deliver(notes_for(cfg)))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if len(notifier.log.attempts()) >= 2:
                break
        a = notifier.log.attempts()[0]
        assert (a.status, a.error) == ("retryable", expect)
        smtp.rcpt_replies.clear()  # ana made room
        smtp.data_reply = None
        assert len(await asyncio.wait_for(fut, 10)) == 1
    finally:
        await notifier.aclose()
    (d,) = notifier.log.deliveries()
    assert d.status == "delivered"
    assert [m.rcpt_tos for m in smtp.messages] == [[ANA]]
    notifier.log.close()


async def test_a_relay_refusing_the_sender_is_retried_and_the_page_goes_once_it_is_fixed(smtp, tmp_path):
    # a relay's policy change refuses our sender (553 at MAIL FROM), for every message: that is no
    # reason to drop the page for good (and a permanent answer counts as the target being up, so
    # /health said ok while every email page failed); retried, it goes when the relay is fixed
    smtp.mail_reply = "553 5.7.1 sender not allowed"
    cfg = config(smtp.mailto(ANA))
    notifier = Notifier(cfg, SQLiteDeliveryLog(tmp_path / "d.sqlite"))
    await notifier.start()
    try:
        fut = asyncio.ensure_future(notifier.deliver(notes_for(cfg)))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if len(notifier.log.attempts()) >= 2:
                break
        a = notifier.log.attempts()[0]
        assert (a.status, a.detail) == ("retryable", "SMTP 553")
        assert a.error == f"SMTP 553 5.7.1 sender not allowed (MAIL FROM, to {ANA})"
        smtp.mail_reply = None
        assert len(await asyncio.wait_for(fut, 10)) == 1
    finally:
        await notifier.aclose()
    assert notifier.log.deliveries()[0].status == "delivered"
    assert [m.rcpt_tos for m in smtp.messages] == [[ANA]]
    notifier.log.close()


async def test_a_notifications_recipient_progress_is_freed_once_it_is_no_longer_scheduled(smtp, tmp_path):
    # rui's mailbox stays busy: the row fails after its budget, then is dropped at its re-send
    # horizon; what the channel kept of it (who got it, for the next attempt) goes with it, not
    # held in memory until 10 000 others push it out
    smtp.rcpt_replies[RUI] = "450 4.2.1 mailbox busy"
    cfg = load_config_text(
        f"""
timezone: Europe/Lisbon
retry: {{for: 1s, resend_for: 2s, first_backoff: 0.1, max_backoff: 0.2}}
targets:
  piquete: {{channel: email, url: "{two(smtp)}"}}
routes: [{{policy: p}}]
policies:
  p: {{steps: [{{targets: [piquete], wait: 10m}}]}}
""",
        "smtp.yaml",
    )
    notifier = Notifier(cfg, SQLiteDeliveryLog(tmp_path / "d.sqlite"))
    await notifier.start()
    try:
        await asyncio.wait_for(notifier.deliver(notes_for(cfg)), 10)
        channel = notifier.ctx.channels["piquete"]
        assert len(channel._progress) == 1  # failed, still to be re-sent: its progress is kept
        for _ in range(60):  # past the re-send horizon (2 s after it was queued)
            await asyncio.sleep(0.05)
            if not channel._progress:
                break
        assert channel._progress == {}
    finally:
        await notifier.aclose()
    assert [m.rcpt_tos for m in smtp.messages] == [[ANA]]
    notifier.log.close()


async def test_a_cc_refused_for_now_does_not_page_the_recipient_again_at_every_retry(smtp, tmp_path):
    # to=ana, cc=rui: the server takes the message for ana and answers 450 for rui. Retried, the
    # message went to ana again at every attempt (apprise tracks the message by its recipient,
    # and it had "failed"), for the whole budget; now it is not sent again: the row fails naming
    # rui's refusal and that ana got it
    smtp.rcpt_replies[RUI] = "450 4.2.1 mailbox busy"
    notifier = await deliver(config(smtp.mailto(ANA) + f"&cc={RUI}"), tmp_path)
    assert [m.rcpt_tos for m in smtp.messages] == [[ANA]]  # once
    (d,) = notifier.log.deliveries()
    assert d.status == "failed" and d.resend_until is None
    assert d.last_error.startswith(f"SMTP 450 4.2.1 mailbox busy (RCPT {RUI}); delivered to {ANA}")
    notifier.log.close()


def test_which_refusals_are_permanent():
    from atalaia.notifiers.channels.apprise import SmtpReply

    def permanent(command, code, text):
        return SmtpReply(command, code, text, ANA).permanent

    assert permanent("RCPT", 550, "5.1.1 no such user")
    assert permanent("end of DATA", 554, "5.7.1 message refused as spam")
    assert not permanent("RCPT", 450, "4.2.1 mailbox busy")
    assert not permanent("RCPT", 552, "5.5.3 too many recipients")  # RFC 5321 §4.5.3.1.10
    assert not permanent("end of DATA", 552, "5.2.2 mailbox full")
    # greylisting / rate limiting answered with a 5xx by a misconfigured relay: it says to come back
    assert not permanent("RCPT", 550, "Greylisted, please try again in 300 seconds")
    assert not permanent("RCPT", 554, "5.7.1 Service temporarily unavailable, try again later")
    assert not permanent("AUTH", 535, "5.7.8 Authentication credentials invalid")  # the session
    assert not permanent("connect", 554, "5.7.1 no SMTP service here")


async def test_a_connection_dropped_during_the_send_says_so():
    def take_and_drop(conn):  # takes the envelope, then closes instead of answering the DATA command
        f = conn.makefile("rb")
        conn.sendall(b"220 hi\r\n")
        for line in f:
            if line.strip().upper() == b"DATA":
                return
            conn.sendall(b"250 ok\r\n")

    r = await deliver_through(take_and_drop)
    assert r.status == "retryable"
    assert r.error == f"SMTP session, to {ANA} failed: Connection unexpectedly closed"  # was "SMTP , to …"


def test_the_declared_apprise_has_the_per_recipient_bookkeeping_the_email_channel_relies_on():
    # apprise's email plugin skips the recipients of a notification that already got it only from
    # 2.0 on (``is_delivered`` / ``_delivery_tracker``); with 1.x, which ``apprise>=1.8`` let in,
    # every retry re-sent the message to all of them and a recipient refused for good was asked
    # again, silently (``_TRACKER`` None)
    import re
    import tomllib
    from pathlib import Path

    from apprise.plugins.email import base as email_base

    from atalaia.notifiers.channels.apprise import _TRACKER

    deps = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    (spec,) = [d for d in deps["project"]["dependencies"] if re.match(r"apprise\b", d)]
    floor = tuple(int(x) for x in re.search(r">=\s*([\d.]+)", spec).group(1).split("."))
    assert floor >= (2, 0), spec
    assert _TRACKER is not None and "is_delivered" in Path(email_base.__file__).read_text()


async def test_after_a_server_closes_the_session_the_next_recipient_is_not_told_to_run_connect(
    smtp, tmp_path
):
    """A 421 to one RCPT closes the session (smtplib shuts it); apprise goes on to the next
    recipient on that closed session, whose error read smtplib's 'please run connect() first', a
    programming hint that says nothing to an operator."""
    smtp.rcpt_replies[ANA] = "421 4.4.2 closing connection"
    notifier = await deliver(config(two(smtp)), tmp_path)
    errors = [a.error or "" for a in notifier.log.attempts()]
    assert errors and not any("connect()" in e for e in errors), errors
    assert f"SMTP 421 4.4.2 closing connection (RCPT {ANA})" in errors[0], errors
    assert f"SMTP session, to {RUI} failed: the server had closed the session" in errors[0], errors
