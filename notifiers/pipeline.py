"""The delivery pipeline: small composable stages, after Alertmanager's ``notify`` package.

Every front stage has ``async exec(ctx, notifications) -> notifications`` (what it passes on); a
:class:`Pipeline` chains them. The notifier (:class:`~atalaia.notifiers.service.Notifier`) runs::

    Dedup ─► Outbox ─► FanOut ─► TargetLane per target (retry schedule + circuit breaker + rate limit)

* :class:`Dedup` drops notifications the delivery log already knows (any state) or that
  repeat inside the batch: a replay after a crash sends nothing twice.
* :class:`Outbox` records the batch as ``queued`` (with the notification) in one transaction.
* :class:`FanOut` hands each notification to its target's :class:`TargetLane`, so a target that
  is down never delays another.
* :class:`TargetLane` schedules each notification on its own with the pure
  :class:`~atalaia.notifiers.retry.TargetScheduler` (time-budgeted retries with capped backoff,
  a circuit breaker that probes a target that is down, no head-of-line blocking), takes a
  :class:`TokenBucket` token per send when the target has a ``rate``, and records ``sending``
  before and the result after every attempt.

Clock and sleep are injected (``DeliveryContext``) so tests can run on a fake clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from atalaia.notifiers.channels.base import Channel
from atalaia.notifiers.commit import COMMIT_HOOK, CommitMarks
from atalaia.notifiers.log import DeliveryLog, TargetHealth
from atalaia.notifiers.model import DeliveryResult, Notification
from atalaia.notifiers.retry import BreakerPolicy, Decision, RetryPolicy, TargetScheduler

log = logging.getLogger("atalaia.notifiers")


async def inline(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a delivery-log call right here (an in-memory log, tests, the CLI)."""
    return fn(*args)


#: how often at most a lane samples its waiting count while notifications remain (``on_health``)
WAITING_SAMPLE_S = 1.0


@dataclass
class DeliveryContext:
    log: DeliveryLog
    channels: dict[str, Channel]
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    on_result: Callable[[Notification, DeliveryResult, int, float], None] | None = None  # metrics hook
    on_health: Callable[[TargetHealth, int], None] | None = (
        None  # breaker changes, waiting count (health, waiting)
    )
    marks: CommitMarks | None = None  # commit-point markers (channels with ``commit_point``)
    # runs each delivery-log call: inline, or (the live stage) in the log's own thread, off the loop
    io: Callable[..., Awaitable[Any]] = inline


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
        known = await ctx.io(ctx.log.known, [n.id for n in notifications])
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
        await ctx.io(
            ctx.log.enqueue,
            [(n, ctx.channels[n.target].kind if n.target in ctx.channels else "?") for n in notifications],
            now,
        )
        out = []
        for n in notifications:
            if n.target in ctx.channels:
                out.append(n)
            else:  # configuration changed since the escalation emitted it: recorded, not silently lost
                await ctx.io(ctx.log.begin, n, "?", 1, now)
                await ctx.io(
                    ctx.log.finish,
                    n,
                    1,
                    DeliveryResult("permanent", error=f"no target named {n.target!r}"),
                    "failed",
                    now,
                    0.0,
                )
        return out


class TokenBucket:
    """Rate limit of one target: at most ``max`` messages per ``per`` seconds (bursts up to
    ``max``); the lane waits for a token instead of dropping. Pure: ``now`` is passed in."""

    def __init__(self, max_messages: int, per_seconds: float):
        if not (max_messages >= 1 and per_seconds > 0):  # also refused by the config (RateLimit)
            raise ValueError(f"rate limit needs max >= 1 and per > 0 (got {max_messages}/{per_seconds}s)")
        self.capacity, self.rate = float(max_messages), max_messages / per_seconds
        self.tokens: float | None = None
        self.last = 0.0

    def _refill(self, now: float) -> float:
        if self.tokens is None:
            self.tokens, self.last = self.capacity, now
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = max(self.last, now)
        return self.tokens

    def seed(self, sent: list[float], now: float) -> None:
        """Start as if the messages sent at ``sent`` (oldest first, within the last ``per``) had
        gone through this bucket: a restarted process does not begin with a full bucket and send a
        second burst inside one window."""
        for t in sent:
            self._refill(t)
            self.take(t)
        self._refill(now)

    def available(self, now: float) -> int:
        return int(self._refill(now) + 1e-9)

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens = (self.tokens or 0.0) - 1.0

    def next_token_at(self, now: float) -> float:
        return now + max(0.0, 1.0 - self._refill(now)) / self.rate


@dataclass
class Backoff:
    """Default retry delays (overridden by ``retry:`` in the escalation file): after the k-th
    consecutive failure ``min(cap, base·2^(k-1))``, with "equal jitter" (half fixed, half
    derived from the notification id) so retries of many notifications do not synchronise."""

    base: float = 1.0
    cap: float = 60.0

    def delay(self, failures: int, rng: random.Random) -> float:
        d = min(self.cap, self.base * 2 ** (failures - 1))
        return d / 2 + rng.uniform(0, d / 2)


class TargetLane:
    """The I/O shell of one target around its pure :class:`~atalaia.notifiers.retry.TargetScheduler`:
    starts the sends the scheduler says are due (each notification on its own: one that waits
    for its backoff never holds up another), records every attempt (``sending`` before, the
    result and the row's new status after), and sleeps until the scheduler's next wake-up or
    until something new arrives."""

    def __init__(
        self,
        target: str,
        channel: Channel,
        ctx: DeliveryContext,
        breaker: BreakerPolicy | None = None,
        bucket: TokenBucket | None = None,
    ):
        self.target, self.channel, self.ctx, self.bucket = target, channel, ctx, bucket
        self.sched = TargetScheduler(target, breaker)
        self.notes: dict[str, Notification] = {}
        self.waiters: dict[str, asyncio.Future[bool]] = {}
        self.kick = asyncio.Event()
        self.sends: set[asyncio.Task] = set()
        self.in_flight: set[str] = set()  # ids recorded ``sending`` whose result is not recorded yet
        self.closing = False  # stopping: no send starts any more (``aclose``)
        self.last_error: str | None = None
        self._reported: tuple[str, float | None, float | None] = ("closed", None, None)
        self._opened_at = 0.0
        # the waiting count is sampled again (``on_health``) when notifications come or settle,
        # at most every WAITING_SAMPLE_S while some remain, at once when none is left
        self._health: TargetHealth | None = None
        self._changes = self._sampled = 0
        self._sampled_at = float("-inf")
        self.task = asyncio.create_task(self._run(), name=f"notify-lane-{target}")

    def add(
        self,
        n: Notification,
        policy: RetryPolicy,
        *,
        queued_at: float | None = None,
        attempts: int = 0,
        failed: bool = False,
    ) -> asyncio.Future[bool]:
        """Schedule ``n``; the future says whether it was delivered once it is delivered or
        failed (a failed one stays scheduled for re-sending when the target recovers)."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if not self.sched.add(
            n.id, policy, self.ctx.clock(), queued_at=queued_at, attempts=attempts, failed=failed
        ):
            existing = self.waiters.get(n.id)
            if existing is not None:
                return existing
            fut.set_result(False)
            return fut
        self.notes[n.id] = n
        self._changes += 1
        if failed:
            fut.set_result(False)
        else:
            self.waiters[n.id] = fut
        self.kick.set()
        return fut

    async def drain(self) -> None:
        while self.waiters:
            await asyncio.gather(*list(self.waiters.values()), return_exceptions=True)

    async def aclose(self, grace: float = 0.0) -> list[str]:
        """Stop: no new send starts; the sends in flight get up to ``grace`` seconds to be
        answered and recorded (a graceful stop: SIGTERM, Ctrl-C), then the rest are cut off and
        their rows stay ``sending`` (the restart's policy: re-sent if idempotent, else in doubt).
        Returns the ids cut off. Before, every send in flight was cancelled at once, so each
        Alertmanager/SMS message being sent at a graceful restart came back ``in-doubt`` and each
        webhook one was sent twice."""
        self.closing = True
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        pending = {t for t in self.sends if not t.done()}
        if pending and grace > 0:
            _, pending = await asyncio.wait(pending, timeout=grace)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        cut = sorted(self.in_flight)  # begun, result never recorded: cancelled above
        for fut in self.waiters.values():
            if not fut.done():
                fut.cancel()
        return cut

    # --- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self.kick.clear()
            now = self.ctx.clock()
            try:
                for d in self.sched.expire(now):
                    await self.ctx.io(
                        self.ctx.log.settle, d.id, d.status, now, d.reason, d.next_at, d.resend_until
                    )
                    self._settled(d)
                limit = self.bucket.available(now) if self.bucket is not None else None
                for nid in self.sched.due(now, limit):
                    if self.bucket is not None:
                        self.bucket.take(now)
                    task = asyncio.create_task(self._send(nid), name=f"notify-{self.target}-{nid}")
                    self.sends.add(task)
                    task.add_done_callback(self.sends.discard)
                await self._report(now)
            except Exception:  # a bug (or the log failing) must not kill the lane silently
                log.exception("delivery lane %s", self.target)
                await self.ctx.sleep(1.0)
                continue
            wake = self.sched.next_wakeup()
            if self._changes != self._sampled and self._health is not None:  # a sample held back
                wake = min(wake if wake is not None else float("inf"), self._sampled_at + WAITING_SAMPLE_S)
            if wake is not None and wake <= now:
                # still due: only a rate limit holds it back (else a tiny step, never a busy loop)
                wake = self.bucket.next_token_at(now) if self.bucket is not None else now + 0.001
            await self._wait(None if wake is None else max(0.001, wake - now))

    async def _wait(self, delay: float | None) -> None:
        if self.kick.is_set():
            return
        if delay is None:
            await self.kick.wait()
            return
        sleeper = asyncio.ensure_future(self.ctx.sleep(delay))
        kicked = asyncio.ensure_future(self.kick.wait())
        try:
            await asyncio.wait({sleeper, kicked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            kicked.cancel()

    async def _send(self, nid: str) -> None:
        if self.closing:  # created just before the stop: not begun, the row stays as it was
            return
        n = self.notes[nid]
        attempt = self.sched.items[nid].attempts + 1
        ctx = self.ctx
        try:
            self.in_flight.add(nid)
            await ctx.io(ctx.log.begin, n, self.channel.kind, attempt, ctx.clock())
            marks = ctx.marks if self.channel.commit_point else None
            token = None
            if marks is not None:
                # a stale marker of an earlier attempt whose result is recorded; the unlink runs
                # where the log calls run (ctx.io: off the loop in the live stage), awaited before
                # the send as before, so the order of begin, clear, send, finish, clear is kept
                await ctx.io(marks.clear, nid)
                token = COMMIT_HOOK.set(marks.hook(nid))
            t0 = time.perf_counter()
            internal = False
            try:
                result = await self.channel.send(n)
            except Exception as e:  # a channel bug is a failed attempt, recorded, not a lost lane,
                # and not the target's failure: its breaker is not moved (a message that could not
                # be formatted had held the target "unavailable" for every other notification)
                internal = True
                log.error(
                    "delivery of %s to %s failed in Atalaia, not at the target: %s: %s",
                    nid,
                    self.target,
                    type(e).__name__,
                    e,
                )
                result = DeliveryResult("retryable", error=f"internal error: {type(e).__name__}: {e}")
            finally:
                if token is not None:
                    COMMIT_HOOK.reset(token)
            scrub = getattr(self.channel, "scrub", None)
            if scrub is not None:  # no credential reaches the log, the breaker or the logs
                result = scrub(result)
            latency_ms = (time.perf_counter() - t0) * 1000
            now = ctx.clock()
            d = self.sched.record(nid, "internal" if internal else result.status, now, result.retry_after)
            if not result.ok:
                self.last_error = result.error
            error = result.error if d.status != "failed" or not d.reason else f"{result.error}; {d.reason}"
            await ctx.io(
                ctx.log.finish,
                n,
                attempt,
                DeliveryResult(result.status, error, result.detail, progress=result.progress),
                d.status,
                now,
                latency_ms,
                d.next_at,
                d.resend_until,
            )
            self.in_flight.discard(nid)
            if marks is not None:  # the result is recorded: the marker has done its job
                await ctx.io(marks.clear, nid)
            if ctx.on_result is not None:
                ctx.on_result(n, result, attempt, latency_ms)
            self._settled(d)
        except Exception as e:  # Atalaia's own I/O (the delivery log, an email's commit marker:
            # a full or read-only data directory) failed around the send: retried; said as the
            # reason, not "?", where the target's state is shown (/health, notify log)
            self.in_flight.discard(nid)
            log.exception("delivery of %s to %s", nid, self.target)
            self.last_error = f"in Atalaia, not at the target: {type(e).__name__}: {e}"
            if nid in self.sched.items and self.sched.items[nid].in_flight:
                self._settled(self.sched.record(nid, "retryable", ctx.clock()))
        finally:
            self.kick.set()

    def _settled(self, d: Decision) -> None:
        self._changes += 1
        if d.settled:
            fut = self.waiters.pop(d.id, None)
            if fut is not None and not fut.done():
                fut.set_result(d.status == "delivered")
        if d.done:
            self.notes.pop(d.id, None)
            forget = getattr(self.channel, "forget", None)
            if forget is not None:  # (an email's recipients reached so far, kept for a retry)
                forget(d.id)

    async def _report(self, now: float) -> None:
        """Record the breaker's changes and the target's ``Retry-After`` hold (log table, one log
        line per opening and closing): a restarted worker keeps the hold (it sent the waiting
        notifications at once, whatever the target had asked)."""
        s = self.sched
        state = "open" if s.open else "closed"
        probe = s.probe_at if s.open else None
        hold = s.hold_until if s.hold_until > now else None
        if (state, probe, hold) == self._reported:
            self._sample_waiting(now)
            return
        was = self._reported[0]
        self._reported = (state, probe, hold)
        if state == "open" and was == "closed":
            self._opened_at = now
            log.warning(
                "target %s unavailable after %d consecutive failures (%s): its notifications wait; "
                "probing it one at a time",
                self.target,
                s.failures,
                self.last_error,
            )
        elif state == "closed" and was == "open":
            log.warning(
                "target %s is back after %.0f s: sending its %d waiting notifications now",
                self.target,
                now - self._opened_at,
                len(s.items),
            )
        health = TargetHealth(
            self.target,
            state,
            s.failures,
            probe,
            self._opened_at if state == "open" else now,
            self.last_error if state == "open" else None,
            hold,
        )
        if was == state and self._health is not None and state == "closed":
            health = dataclasses.replace(health, since=self._health.since)  # (only the hold changed)
        await self.ctx.io(self.ctx.log.set_target, health)
        self._health = health
        self._sample_waiting(now, force=True)

    def _sample_waiting(self, now: float, force: bool = False) -> None:
        """Tell ``on_health`` the waiting count: at a breaker change, and when notifications came
        or settled since the last sample (at most every WAITING_SAMPLE_S while some remain, at
        once when none is left). It had been sampled at breaker changes only, so a target back
        after an outage showed its 299 waiting notifications for ever once all were sent."""
        if self.ctx.on_health is None or self._health is None:
            return
        if not force:
            if self._changes == self._sampled:
                return
            if self.sched.items and now < self._sampled_at + WAITING_SAMPLE_S:
                return  # the loop wakes for it (_run)
        self._sampled, self._sampled_at = self._changes, now
        self.ctx.on_health(self._health, self.sched.waiting())


class FanOut:
    """One :class:`TargetLane` per target (made on first use by ``make_lane``): a target that is
    down never delays another."""

    def __init__(self, make_lane: Callable[[str], TargetLane]):
        self.make_lane = make_lane
        self.lanes: dict[str, TargetLane] = {}

    def lane(self, target: str) -> TargetLane:
        lane = self.lanes.get(target)
        if lane is None:
            lane = self.lanes[target] = self.make_lane(target)
        return lane

    def dispatch(
        self,
        notifications: list[Notification],
        policy: Callable[[Notification], RetryPolicy],
        prior: dict[str, tuple[float, int, bool]] | None = None,
    ) -> list[asyncio.Future[bool]]:
        """Schedule each notification in its target's lane (``prior``: id → (queued_at,
        attempts, failed) of rows taken up after a restart)."""
        out = []
        for n in notifications:
            q, a, f = (prior or {}).get(n.id, (None, 0, False))
            out.append(self.lane(n.target).add(n, policy(n), queued_at=q, attempts=a, failed=f))
        return out

    async def drain(self) -> None:
        """Wait until every notification is delivered or failed."""
        while any(lane.waiters for lane in self.lanes.values()):
            await asyncio.gather(*(lane.drain() for lane in self.lanes.values()))

    async def aclose(self, grace: float = 0.0) -> dict[str, list[str]]:
        """Close every lane at once (``TargetLane.aclose``: the sends in flight get ``grace``
        seconds in all, not per lane); returns target → the ids cut off after the grace."""
        cut = await asyncio.gather(*(lane.aclose(grace) for lane in self.lanes.values()))
        out = {t: ids for t, ids in zip(self.lanes, cut, strict=True) if ids}
        self.lanes.clear()
        return out
