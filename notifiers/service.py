"""The notifier service: what the Faust agent on ``atalaia.notifications`` calls.

    notifier = Notifier(load_config(path), SQLiteDeliveryLog(data_dir / "deliveries.sqlite"))
    await notifier.start()                 # HTTP client, lanes, recovery of unfinished deliveries
    await notifier.submit(notifications)   # dedup + durable outbox; returns once recorded
    ...                                    # (commit the Kafka offset after submit returns)
    await notifier.aclose()

``submit`` returns the notifications accepted (new ones); delivery continues in per-target lanes.
``deliver`` is ``submit`` and waiting for those deliveries (tests, CLI, benchmarks).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from prometheus_client import Counter, Histogram

from atalaia.notifiers.channels import Channel, ChannelContext, build_channel
from atalaia.notifiers.config import EscalationConfig
from atalaia.notifiers.log import DeliveryLog
from atalaia.notifiers.model import DeliveryResult, Notification
from atalaia.notifiers.pipeline import (
    Backoff,
    Dedup,
    DeliveryContext,
    FanOut,
    Outbox,
    Pipeline,
    RateLimit,
    Retry,
)

log = logging.getLogger("atalaia.notifiers")

ATTEMPTS = Counter("atalaia_notification_attempts", "delivery attempts", ["channel", "status"])
LATENCY = Histogram("atalaia_notification_send_seconds", "time of one send attempt", ["channel"])


@dataclass(slots=True)
class Recovery:
    resent: int = 0  # queued / retrying / in-flight on an idempotent channel: sent again
    in_doubt: int = 0  # in-flight on a non-idempotent channel: not re-sent


class Notifier:
    def __init__(
        self,
        config: EscalationConfig,
        log: DeliveryLog,
        *,
        env: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        backoff: Backoff | None = None,
        channels: dict[str, Channel] | None = None,
        http: aiohttp.ClientSession | None = None,
        rules: dict[str, Any] | None = None,
    ):
        self.config, self.log = config, log
        self.rules = rules or {}  # rule id → RuleInfo: units, summaries and runbooks in messages
        self._env, self._channels, self._http = env, channels, http
        self._own_http = http is None
        self.backoff = backoff or Backoff()
        self.ctx = DeliveryContext(log, {}, clock, sleep, rng or random.Random(), self._observe)
        self._prior: dict[str, int] = {}
        self.fanout = FanOut(self._lane_stages)
        self.front = Pipeline([Dedup(), Outbox()])
        self.started = False

    async def start(self) -> Recovery:
        if self._http is None:
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200, limit_per_host=20))
        cctx = ChannelContext(
            self.config.lang,
            ZoneInfo(self.config.timezone),
            self.config.console_url,
            time.time,
            self._http,
            self.rules,
        )
        channels = dict(self._channels or {})
        for name, target in self.config.targets.items():
            if name not in channels:
                channels[name] = build_channel(name, target, cctx, self._env)
        self.ctx.channels = channels
        self.started = True
        return await self.recover()

    async def recover(self) -> Recovery:
        """Re-dispatch unfinished deliveries found in the log (after a crash or restart)."""
        rec, todo = Recovery(), []
        for n, status, attempts in self.log.unfinished():
            channel = self.ctx.channels.get(n.target)
            if status == "sending" and (channel is None or not channel.idempotent):
                self.log.mark_in_doubt(n.id, self.ctx.clock())
                rec.in_doubt += 1
                log.warning("delivery %s to %s in doubt after restart: not re-sent", n.id, n.target)
                continue
            if channel is None:
                continue
            self._prior[n.id] = attempts
            todo.append(n)
            rec.resent += 1
        if todo:
            self.fanout.dispatch(self.ctx, todo)
        return rec

    async def submit(self, notifications: list[Notification]) -> list[Notification]:
        if not self.started:
            raise RuntimeError("Notifier.start() first")
        accepted = await self.front.exec(self.ctx, list(notifications))
        if accepted:
            self.fanout.dispatch(self.ctx, accepted)
        return accepted

    async def deliver(self, notifications: list[Notification]) -> list[Notification]:
        """Submit and wait; returns the notifications delivered (now, by this call)."""
        if not self.started:
            raise RuntimeError("Notifier.start() first")
        accepted = await self.front.exec(self.ctx, list(notifications))
        if not accepted:
            return []
        results = await asyncio.gather(*self.fanout.dispatch(self.ctx, accepted))
        return [n for r in results for n in r]

    async def drain(self) -> None:
        await self.fanout.drain()

    async def aclose(self) -> None:
        await self.fanout.aclose()
        for ch in self.ctx.channels.values():
            await ch.aclose()
        if self._own_http and self._http is not None:
            await self._http.close()
        self.started = False

    def _lane_stages(self, target: str) -> list:
        cfg = self.config.targets.get(target)
        stages: list = []
        if cfg is not None and cfg.rate is not None:
            stages.append(RateLimit(cfg.rate.max, cfg.rate.per.total_seconds()))
        stages.append(
            Retry(self.ctx.channels[target], cfg.max_attempts if cfg else 6, self.backoff, self._prior)
        )
        return stages

    def _observe(self, n: Notification, result: DeliveryResult, attempt: int, latency_ms: float) -> None:
        channel = self.ctx.channels.get(n.target)
        kind = channel.kind if channel else "?"
        ATTEMPTS.labels(kind, result.status).inc()
        LATENCY.labels(kind).observe(latency_ms / 1000)
