"""The delivery pipeline: small composable stages, after Alertmanager's ``notify`` package.

Every stage has ``async exec(ctx, notifications) -> notifications`` (what it passes on); a
:class:`Pipeline` chains stages. The default pipeline (built by :class:`~atalaia.notifiers.service.Notifier`)::

    Dedup ─► Outbox ─► FanOut(per target, in parallel; in order within a target) ─► RateLimit ─► Retry(send)

* :class:`Dedup` drops notifications the delivery log already knows (any state) or that
  repeat inside the batch: a replay after a crash sends nothing twice.
* :class:`Outbox` records the batch as ``queued`` (with the notification) in one transaction.
* :class:`FanOut` hands each target's notifications to that target's lane: an asyncio task that
  runs the lane stages, so a target that is down never delays another.
* :class:`RateLimit` is a per-target token bucket that waits (never drops).
* :class:`Retry` sends through the target's channel, recording ``sending`` before and the result
  after every attempt; retryable failures back off exponentially with jitter.

Clock, sleep and random are injected (``DeliveryContext``) so tests run on a fake clock.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from atalaia.notifiers.channels.base import Channel
from atalaia.notifiers.log import DeliveryLog
from atalaia.notifiers.model import DeliveryResult, Notification


@dataclass
class DeliveryContext:
    log: DeliveryLog
    channels: dict[str, Channel]
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    on_result: Callable[[Notification, DeliveryResult, int, float], None] | None = None  # metrics hook


class Stage(Protocol):
    async def exec(self, ctx: DeliveryContext, notifications: list[Notification]) -> list[Notification]: ...


class Pipeline:
    def __init__(self, stages: Sequence[Stage]):
        self.stages = list(stages)

    async def exec(self, ctx: DeliveryContext, notifications: list[Notification]) -> list[Notification]:
        for stage in self.stages:
            if not notifications:
                break
            notifications = await stage.exec(ctx, notifications)
        return notifications


class Dedup:
    async def exec(self, ctx: DeliveryContext, notifications: list[Notification]) -> list[Notification]:
        known = ctx.log.known(n.id for n in notifications)
        out, seen = [], set()
        for n in notifications:
            if n.id in known or n.id in seen:
                continue
            seen.add(n.id)
            out.append(n)
        return out


class Outbox:
    async def exec(self, ctx: DeliveryContext, notifications: list[Notification]) -> list[Notification]:
        now = ctx.clock()
        ctx.log.enqueue(
            [(n, ctx.channels[n.target].kind if n.target in ctx.channels else "?") for n in notifications],
            now,
        )
        out = []
        for n in notifications:
            if n.target in ctx.channels:
                out.append(n)
            else:  # configuration changed since the escalation emitted it: recorded, not silently lost
                ctx.log.begin(n, "?", 1, now)
                ctx.log.finish(
                    n, 1, DeliveryResult("permanent", error=f"no target named {n.target!r}"), True, now, 0.0
                )
        return out


class _Lane:
    def __init__(self, target: str, stages: Pipeline, ctx: DeliveryContext):
        self.queue: asyncio.Queue[tuple[list[Notification], asyncio.Future[list[Notification]]]] = (
            asyncio.Queue()
        )
        self.task = asyncio.create_task(self._run(stages, ctx), name=f"notify-lane-{target}")

    async def _run(self, stages: Pipeline, ctx: DeliveryContext) -> None:
        while True:
            batch, fut = await self.queue.get()
            try:  # one notification at a time through the lane: rate limit and order hold per send
                result = [d for n in batch for d in await stages.exec(ctx, [n])]
            except Exception as e:  # a bug in a stage must not kill the lane silently
                if not fut.done():
                    fut.set_exception(e)
            else:
                if not fut.done():
                    fut.set_result(result)
            finally:
                self.queue.task_done()


class FanOut:
    """Per-target lanes. ``exec`` returns when every lane has finished this batch; use
    :meth:`dispatch` to hand the batch over without waiting."""

    def __init__(self, lane_stages: Callable[[str], Sequence[Stage]]):
        self.lane_stages = lane_stages
        self.lanes: dict[str, _Lane] = {}

    def dispatch(self, ctx: DeliveryContext, notifications: list[Notification]) -> list[asyncio.Future]:
        by_target: dict[str, list[Notification]] = {}
        for n in notifications:
            by_target.setdefault(n.target, []).append(n)
        futures = []
        loop = asyncio.get_running_loop()
        for target, batch in by_target.items():
            lane = self.lanes.get(target)
            if lane is None:
                lane = self.lanes[target] = _Lane(target, Pipeline(self.lane_stages(target)), ctx)
            fut: asyncio.Future[list[Notification]] = loop.create_future()
            lane.queue.put_nowait((batch, fut))
            futures.append(fut)
        return futures

    async def exec(self, ctx: DeliveryContext, notifications: list[Notification]) -> list[Notification]:
        results = await asyncio.gather(*self.dispatch(ctx, notifications))
        return [n for r in results for n in r]

    async def drain(self) -> None:
        await asyncio.gather(*(lane.queue.join() for lane in self.lanes.values()))

    async def aclose(self) -> None:
        for lane in self.lanes.values():
            lane.task.cancel()
        await asyncio.gather(*(lane.task for lane in self.lanes.values()), return_exceptions=True)
        self.lanes.clear()


class RateLimit:
    """Token bucket for one target: at most ``max`` messages per ``per`` seconds (bursts up to
    ``max``); waits for a token instead of dropping."""

    def __init__(self, max_messages: int, per_seconds: float):
        self.capacity, self.rate = float(max_messages), max_messages / per_seconds
        self.tokens: float | None = None
        self.last = 0.0

    async def exec(self, ctx: DeliveryContext, notifications: list[Notification]) -> list[Notification]:
        out = []
        for n in notifications:  # lanes pass one notification at a time, so a token = a send
            await self._take(ctx)
            out.append(n)
        return out

    async def _take(self, ctx: DeliveryContext) -> None:
        now = ctx.clock()
        if self.tokens is None:
            self.tokens, self.last = self.capacity, now
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1.0:
            wait = (1.0 - self.tokens) / self.rate
            await ctx.sleep(wait)
            now = ctx.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
            self.tokens = max(self.tokens, 1.0)
        self.tokens -= 1.0


@dataclass
class Backoff:
    """Delay before attempt ``k+1`` after ``k`` failures: ``base·2^(k-1)`` capped, with "equal
    jitter" (half fixed, half random) so retries of many targets do not synchronise."""

    base: float = 1.0
    cap: float = 300.0

    def delay(self, failures: int, rng: random.Random) -> float:
        d = min(self.cap, self.base * 2 ** (failures - 1))
        return d / 2 + rng.uniform(0, d / 2)


class Retry:
    """Sends each notification through ``channel`` until delivered, a permanent error, or
    ``max_attempts``; every attempt is recorded (``sending`` first, then its result)."""

    def __init__(
        self,
        channel: Channel,
        max_attempts: int = 6,
        backoff: Backoff | None = None,
        prior_attempts: dict[str, int] | None = None,
    ):
        self.channel, self.max_attempts = channel, max_attempts
        self.backoff = backoff or Backoff()
        self.first_attempt = (
            {} if prior_attempts is None else prior_attempts
        )  # id -> attempts made before a restart

    async def exec(self, ctx: DeliveryContext, notifications: list[Notification]) -> list[Notification]:
        delivered = []
        for n in notifications:
            if await self.deliver_one(ctx, n):
                delivered.append(n)
        return delivered

    async def deliver_one(self, ctx: DeliveryContext, n: Notification) -> bool:
        attempt = self.first_attempt.pop(n.id, 0)
        failures = 0
        while True:
            attempt += 1
            ctx.log.begin(n, self.channel.kind, attempt, ctx.clock())
            t0 = time.perf_counter()
            try:
                result = await self.channel.send(n)
            except Exception as e:  # a channel bug is a failed attempt, recorded, not a lost lane
                result = DeliveryResult("retryable", error=f"{type(e).__name__}: {e}")
            latency_ms = (time.perf_counter() - t0) * 1000
            final = result.ok or result.status == "permanent" or attempt >= self.max_attempts
            ctx.log.finish(n, attempt, result, final, ctx.clock(), latency_ms)
            if ctx.on_result is not None:
                ctx.on_result(n, result, attempt, latency_ms)
            if final:
                return result.ok
            failures += 1
            await ctx.sleep(self.backoff.delay(failures, ctx.rng))
