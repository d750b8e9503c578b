"""Local stand-ins for the far ends, for tests, benchmarks and demos (loopback only):

* :class:`SmtpSink` — an aiosmtpd SMTP server that keeps the messages it receives;
* :class:`HttpSink` — an aiohttp server that plays an NGSI-LD broker (entity upsert), a
  webhook receiver that verifies signatures, an SMSEagle SMS gateway (``/jsonrpc/sms``) and an
  Alertmanager webhook receiver; ``fail`` / ``delay`` make a path answer 500 or hang,
  ``fail_when`` makes chosen requests answer 503; ``stop()`` then ``start(port)`` is an outage.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from atalaia.notifiers.signing import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    json: Any = None
    signature_ok: bool | None = None


class HttpSink:
    def __init__(self, secret: str | None = None):
        self.secret = secret
        self.requests: list[Received] = []
        self.entities: dict[str, dict[str, Any]] = {}
        self.fail: dict[str, int] = {}  # path -> answer 500 this many more times (-1: always)
        self.delay: dict[str, float] = {}  # path -> seconds to wait before answering
        self.fail_when: Callable[[Received], bool] | None = None  # answer 503 to these requests
        # path -> answers given (in order, each once) before the usual one: (status, headers)
        self.answers: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.sms_seq = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def received(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def start(self, port: int = 0) -> HttpSink:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body = await request.read()
        rec = Received(path, dict(request.headers), body, time.time())
        try:
            rec.json = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            rec.json = None
        if self.secret is not None and SIGNATURE_HEADER in request.headers:
            rec.signature_ok = verify_signature(
                self.secret,
                body,
                request.headers.get(TIMESTAMP_HEADER),
                request.headers.get(SIGNATURE_HEADER),
            )
        self.requests.append(rec)
        if path in self.delay:
            await asyncio.sleep(self.delay[path])
        queued = self.answers.get(path)
        if queued:
            status, headers = queued.pop(0)
            return web.Response(status=status, headers=headers, text=f"answer {status}")
        if self.fail_when is not None and self.fail_when(rec):
            return web.Response(status=503, text="not this one")
        left = self.fail.get(path, 0)
        if left:
            self.fail[path] = left - 1 if left > 0 else left
            return web.Response(status=500, text="gateway broken")
        if path.endswith("/entityOperations/upsert"):
            created = False
            for ent in rec.json or []:
                created |= ent["id"] not in self.entities
                self.entities[ent["id"]] = ent
            return web.Response(status=201 if created else 204)
        if path.endswith("/jsonrpc/sms"):
            self.sms_seq += 1
            return web.json_response({"result": {"message_id": self.sms_seq, "status": "ok"}})
        return web.Response(status=200, text="ok")

    def deliveries(self, path: str) -> list[str]:
        """The X-Atalaia-Delivery ids received on a path (webhooks)."""
        return [r.headers.get(DELIVERY_HEADER, "") for r in self.received(path)]


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    subject: str
    text: str
    at: float
    html: str = ""  # the HTML part, when the message has one


@dataclass
class SmtpSink:
    """A real SMTP server (aiosmtpd) that keeps what it receives. ``rcpt_replies``: address → the
    reply to its ``RCPT`` instead of 250 (e.g. ``"550 5.1.1 mailbox unavailable"``);
    ``mail_reply``: the reply to ``MAIL FROM``; ``data_reply``: the reply after the message's DATA
    terminator instead of 250 (each may be changed while the server runs)."""

    port: int = 0
    messages: list[Mail] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    rcpts: list[str] = field(default_factory=list)  # every RCPT address asked, in order
    mail_reply: str | None = None
    data_reply: str | None = None

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        sink = self

        class Handler:
            async def handle_MAIL(self, server, session, envelope, address, mail_options):
                if sink.mail_reply is not None:
                    return sink.mail_reply
                envelope.mail_from = address
                envelope.mail_options.extend(mail_options)
                return "250 OK"

            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                sink.rcpts.append(address)
                reply = sink.rcpt_replies.get(address)
                if reply is not None:
                    return reply
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                if sink.data_reply is not None:
                    return sink.data_reply
                msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                part = msg.get_body(preferencelist=("plain", "html"))
                html = msg.get_body(preferencelist=("html",))
                sink.messages.append(
                    Mail(
                        envelope.mail_from,
                        list(envelope.rcpt_tos),
                        str(msg["subject"]),
                        part.get_content() if part else "",
                        time.time(),
                        html.get_content() if html else "",
                    )
                )
                return "250 OK"

        if not self.port:
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def mailto(self, to: str, sender: str = "atalaia@cm-porto.pt") -> str:
        return f"mailto://127.0.0.1:{self.port}?mode=insecure&from={sender}&to={to}&user=&pass="


def incident_event(
    incident: str = "inc-douro-1",
    version: int = 1,
    at: str = "2026-03-01T10:00:00Z",
    change: str = "opened",
    state: str = "unacknowledged",
    active: bool = True,
    severity: str = "high",
    **extra: Any,
) -> dict[str, Any]:
    """An ``atalaia.incidents`` event in the contract shape (for tests and demos)."""
    ev: dict[str, Any] = {
        "id": f"{incident}:{version}",
        "incident": incident,
        "version": version,
        "at": at,
        "change": change,
        "state": state,
        "active": active,
        "severity": severity,
        "title": "Nível do Douro elevado na Ribeira",
        "correlation": {"parish": "Cedofeita, Santo Ildefonso, Sé, Miragaia, São Nicolau e Vitória"},
        "labels": {"district": "13", "team": "hydro", "category": "naturalDisaster", "subCategory": "flood"},
        "location": [-8.6132, 41.1405],
        "alarms": [
            {
                "rule": "river-level-high",
                "key": "urn:ngsi-ld:WaterObserved:porto-01",
                "entity": "urn:ngsi-ld:WaterObserved:porto-01",
                "state": "firing",
                "severity": severity,
                "value": 4.7,
                "count": 3,
                "first_seen": "2026-03-01T09:58:00Z",
                "last_seen": at,
                "suppressed": None,
            }
        ],
        "actor": "atalaia",
        "reason": "",
        "opened_at": "2026-03-01T09:58:00Z",
        "acknowledged_by": None,
        "shelved_until": None,
    }
    ev.update(extra)
    ev.setdefault("changes", [ev["change"]])
    ev.setdefault("alarm_count", len(ev["alarms"]))
    return ev


# --- a notifier worker that can be killed between send and record (crash tests) ---------------


def _worker(config_path: str, db: str, events_path: str, kill_on: str | None, env_json: str) -> None:
    """Steps the incident events of ``events_path`` (JSON lines) through the engine and delivers
    the notifications; with ``kill_on=TARGET:K`` it SIGKILLs itself right after the K-th
    successful send to TARGET, before the delivery log records it; with ``TARGET:K:pre-commit``
    (email) during the K-th send, right before the SMTP DATA terminator (no marker written)."""
    import os
    import signal
    from zoneinfo import ZoneInfo

    from atalaia.notifiers.channels import ChannelContext, build_channel
    from atalaia.notifiers.channels.base import Channel
    from atalaia.notifiers.commit import COMMIT_HOOK
    from atalaia.notifiers.config import load_config
    from atalaia.notifiers.engine import EscalationEngine, EscalationState
    from atalaia.notifiers.log import SQLiteDeliveryLog
    from atalaia.notifiers.model import DeliveryResult, Notification
    from atalaia.notifiers.pipeline import Backoff
    from atalaia.notifiers.service import Notifier
    from atalaia.streams.clock import parse_time

    cfg = load_config(config_path)
    env = orjson.loads(env_json)
    kill_target, kill_k = (kill_on.split(":")[0], int(kill_on.split(":")[1])) if kill_on else (None, 0)
    kill_mode = kill_on.split(":")[2] if kill_on and kill_on.count(":") == 2 else "after-send"

    class KillAfter(Channel):
        def __init__(self, inner: Channel):
            super().__init__(inner.name, inner.ctx)
            self.inner, self.kind, self.idempotent, self.count = inner, inner.kind, inner.idempotent, 0
            self.commit_point = inner.commit_point
            self.secrets = inner.secrets

        def forget(self, nid: str) -> None:
            getattr(self.inner, "forget", lambda _: None)(nid)

        def restore(self, nid: str, progress: dict) -> None:
            getattr(self.inner, "restore", lambda *_: None)(nid, progress)

        async def send(self, n: Notification) -> DeliveryResult:
            if kill_mode == "pre-commit" and self.name == kill_target:
                # die in the email thread at the commit point, before the marker and the terminator
                self.count += 1
                if self.count == kill_k:
                    COMMIT_HOOK.set(lambda: os.kill(os.getpid(), signal.SIGKILL))
                return await self.inner.send(n)
            result = await self.inner.send(n)
            if result.ok and self.name == kill_target:
                self.count += 1
                if self.count == kill_k:
                    os.kill(os.getpid(), signal.SIGKILL)
            return result

    async def run() -> None:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            ctx = ChannelContext(cfg.lang, ZoneInfo(cfg.timezone), cfg.console_url, time.time, http)
            channels: dict[str, Channel] = {
                name: KillAfter(build_channel(name, t, ctx, env)) for name, t in cfg.targets.items()
            }
            notifier = Notifier(
                cfg, SQLiteDeliveryLog(db), channels=channels, http=http, backoff=Backoff(0.05, 0.2)
            )
            rec = await notifier.start()
            print(orjson.dumps({"resent": rec.resent, "in_doubt": rec.in_doubt}).decode(), flush=True)
            engine, state = EscalationEngine(cfg), EscalationState()
            with open(events_path, "rb") as f:
                for line in f:
                    ev = orjson.loads(line)
                    _, notes = engine.step(state, ev, parse_time(ev["at"]))
                    await notifier.submit(notes)
            await notifier.drain()
            await notifier.aclose()

    asyncio.run(run())


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="crash-test notifier worker")
    ap.add_argument("config")
    ap.add_argument("db")
    ap.add_argument("events")
    ap.add_argument("--kill-on", default=None, help="TARGET:K[:pre-commit]")
    ap.add_argument("--env", default="{}", help="JSON object of ${VAR} values")
    a = ap.parse_args()
    _worker(a.config, a.db, a.events, a.kill_on, a.env)
