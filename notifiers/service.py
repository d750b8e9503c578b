"""The notifier service: what the Faust agent on ``atalaia.notifications`` calls.

    notifier = Notifier(load_config(path), SQLiteDeliveryLog(data_dir / "deliveries.sqlite"))
    await notifier.start()                 # HTTP client, lanes, recovery of unfinished deliveries
    await notifier.submit(notifications)   # dedup + durable outbox; returns once recorded
    ...                                    # (commit the Kafka offset after submit returns)
    await notifier.aclose()

``submit`` returns the notifications accepted (new ones); delivery continues in per-target lanes.
``deliver`` is ``submit`` and waiting for those deliveries (tests, CLI, benchmarks): it returns
once each is delivered or failed (a failed one is still re-sent if its target recovers).

Retry settings per notification come from the escalation file's ``retry:`` (top level, then the
policy's, then the target's: the most specific setting of each field wins); the default budget
is the life of the escalation step (``wait × (repeat + 1)``), at least one hour.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from mode import Service
from prometheus_client import Counter, Gauge, Histogram

from atalaia.notifiers.channels import Channel, ChannelContext, build_channel
from atalaia.notifiers.commit import CommitMarks
from atalaia.notifiers.config import EscalationConfig, Retry, with_console_url
from atalaia.notifiers.log import DeliveryLog, TargetHealth
from atalaia.notifiers.model import DeliveryResult, Notification
from atalaia.notifiers.pipeline import (
    Backoff,
    Dedup,
    DeliveryContext,
    FanOut,
    Outbox,
    Pipeline,
    TargetLane,
    TokenBucket,
    inline,
)
from atalaia.notifiers.retry import BreakerPolicy, RetryPolicy
from atalaia.streams.clock import utc_second

log = logging.getLogger("atalaia.notifiers")

ATTEMPTS = Counter("atalaia_notification_attempts", "delivery attempts", ["channel", "status"])
LATENCY = Histogram("atalaia_notification_send_seconds", "time of one send attempt", ["channel"])
TARGET_OPEN = Gauge(
    "atalaia_notification_target_open", "1 while the target's circuit is open (target down)", ["target"]
)
TARGET_WAITING = Gauge(
    "atalaia_notification_target_waiting",
    "notifications waiting for the target (sampled at breaker changes and as they are sent, at "
    "most once a second)",
    ["target"],
)
IN_DOUBT = Counter(
    "atalaia_notification_in_doubt",
    "deliveries found in flight at a restart on a channel that cannot be re-sent safely (SMS, "
    "Alertmanager, email past its commit point): marked in doubt, not re-sent; a person checks",
    ["target"],
)
MIN_BUDGET = 3600.0  # the default retry budget is the life of the step, at least this
IN_DOUBT_ALERT_S = 3600.0  # /health names in-doubt deliveries this long after they were marked
DELIVERY_GRACE_S = 15.0  # a graceful stop waits this long at most for the sends in flight


@dataclass(slots=True)
class Recovery:
    resent: int = 0  # queued / waiting / in-flight on an idempotent channel: sent again
    in_doubt: int = 0  # in-flight on a non-idempotent channel: not re-sent
    uncommitted: int = 0  # of resent: in-flight on a commit-point channel, killed before its commit point
    kept: int = 0  # failed after their budget: re-sent when the target recovers
    stranded: dict[str, int] = field(default_factory=dict)  # target no longer configured -> rows


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
        rules: Mapping[str, Any] | None = None,
        io: Callable[..., Awaitable[Any]] = inline,
        in_doubt_alert_s: float = IN_DOUBT_ALERT_S,
    ):
        self.config, self.log = config, log
        self.in_doubt_alert_s = in_doubt_alert_s
        # rule id → RuleInfo: units, summaries and runbooks in messages (a RuleCatalog follows the files)
        self.rules = {} if rules is None else rules
        self._env, self._channels, self._http = env, channels, http
        self._own_http = http is None
        self.backoff = backoff or Backoff()
        self.ctx = DeliveryContext(
            log,
            {},
            clock,
            sleep,
            rng or random.Random(),
            self._observe,
            self._observe_health,
            CommitMarks.for_log(log),
            io,
        )
        self.fanout = FanOut(self._make_lane)
        self._spent: dict[str, list[float]] = {}  # target -> send times within its rate window
        self._policies: dict[tuple[str, str, int], RetryPolicy] = {}
        self.front = Pipeline([Dedup(), Outbox()])
        self._holds: dict[str, float] = {}  # target -> its Retry-After hold found at the start
        self.started = False

    async def start(self, recover: bool = True) -> Recovery:
        """Build the channels and seed the rate limits; then, unless ``recover`` is false (a
        one-off sender beside the running one, `atalaia notify test`), take up the log's
        unfinished deliveries (:meth:`recover`)."""
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
        # what each rate-limited target was sent within its window before a restart still counts:
        # the lanes start with that spent (a restarted process sent a second burst in one window)
        now = self.ctx.clock()
        for name, target in self.config.targets.items():
            if target.rate is not None:
                try:
                    self._spent[name] = await self.ctx.io(
                        self.log.sent_since, name, now - target.rate.per.total_seconds()
                    )
                except Exception as e:  # (a log that cannot say: that bucket starts full, as before)
                    log.warning(
                        "rate limit of %s starts full: the delivery log could not say what it sent: %s",
                        name,
                        e,
                    )
        if not recover:
            return Recovery()
        # a target that asked to be left alone (HTTP Retry-After) before a restart still is
        try:
            held = await self.ctx.io(self.log.targets)
        except Exception as e:  # (a log that cannot say: no hold, as before)
            log.warning("Retry-After holds not read from the delivery log: %s", e)
            held = []
        self._holds = {t.target: t.hold_until for t in held if t.hold_until and t.hold_until > now}
        return await self.recover()

    async def recover(self) -> Recovery:
        """Take up unfinished deliveries found in the log (after a crash or restart), and the
        failed ones still to be re-sent when their target recovers."""
        rec, todo, prior = Recovery(), [], {}
        now = self.ctx.clock()
        marks = self.ctx.marks
        for u in await self.ctx.io(self.log.unfinished, now):
            n = u.notification
            channel = self.ctx.channels.get(n.target)
            uncommitted = (
                u.status == "sending"
                and channel is not None
                and channel.commit_point
                and marks is not None
                and not marks.in_doubt(n.id)
            )
            progress = u.progress
            if uncommitted:  # killed before a commit point: the receiver discarded that message
                rec.uncommitted += 1
                log.warning("delivery %s to %s interrupted before its commit point: re-sent", n.id, n.target)
                taken = marks.accepted(n.id)  # (several recipients: those answered 250 before it)
                if taken:
                    progress = dict(progress or {})
                    done = list(progress.get("done", []))
                    done += [[0, r] for r in taken if [0, r] not in done]
                    accepted = list(progress.get("accepted", []))
                    accepted += [r for r in taken if r not in accepted]
                    progress.update(done=done, accepted=accepted)
            elif u.status == "sending" and (channel is None or not channel.idempotent):
                await self.ctx.io(self.log.mark_in_doubt, n.id, now)
                rec.in_doubt += 1
                IN_DOUBT.labels(n.target).inc()
                log.warning("delivery %s to %s in doubt after restart: not re-sent", n.id, n.target)
                continue
            if channel is None:  # its target was removed from the escalation file since
                rec.stranded[n.target] = rec.stranded.get(n.target, 0) + 1
                continue
            if progress and hasattr(channel, "restore"):
                # an email to several recipients: who got it (or refused it for good) before the
                # restart is not sent it again
                channel.restore(n.id, progress)
            failed = u.status == "failed"
            prior[n.id] = (u.queued_at, u.attempts, failed)
            todo.append(n)
            if failed:
                rec.kept += 1
            else:
                rec.resent += 1
        from atalaia.streams.guard import HEALTH

        for target, count in rec.stranded.items():
            # never silently: said in the log and on /health until a restart finds the target again
            log.warning(
                "%d unfinished delivery(ies) to target %r, which the escalation file no longer has: not "
                "sent (put the target back to send them; `atalaia notify log` lists them)",
                count,
                target,
            )
            HEALTH.condition(
                f"target-gone:{target}",
                f"{count} unfinished delivery(ies) to target {target!r}, no longer configured: not sent",
            )
        await self._health_in_doubt(now)
        if marks is not None:  # every marker's row is now settled (in doubt) or not in flight
            marks.clear_all()
        if todo:
            self.fanout.dispatch(todo, self.retry_policy, prior)
        return rec

    async def _health_in_doubt(self, now: float) -> None:
        """``/health`` degraded, naming the targets, while deliveries marked in doubt within the
        last ``in_doubt_alert_s`` exist (these and earlier restarts': a crash loop does not hide
        them); then it clears by itself. A person must check with the recipient whether each
        arrived; the rows stay in ``atalaia notify log``. Not "until acknowledged": one old row
        would keep the process 503 for ever, while the escalation's next repeat or step (unless
        someone acknowledges) already covers a message that really was lost."""
        from atalaia.streams.guard import HEALTH

        if self.in_doubt_alert_s <= 0:
            HEALTH.condition("in-doubt", None)
            return
        try:
            rows = await self.ctx.io(self.log.in_doubt_since, now - self.in_doubt_alert_s)
        except Exception as e:  # a log that cannot say: the WARNING lines above still did
            log.warning("in-doubt deliveries not checked for /health: %s", e)
            return
        if not rows:
            HEALTH.condition("in-doubt", None)
            return
        per: dict[str, int] = {}
        for target, _ in rows:
            per[target] = per.get(target, 0) + 1
        first, last = rows[0][1], rows[-1][1]
        targets = ", ".join(f"{t} ({c})" for t, c in sorted(per.items()))
        HEALTH.condition(
            "in-doubt",
            f"{len(rows)} notification(s) in doubt since "
            f"{utc_second(first)} (the worker stopped between "
            f"sending and recording them; not re-sent): check with the recipients of {targets} "
            "whether they arrived (`atalaia notify log` lists them)",
            until=last + self.in_doubt_alert_s,
        )

    async def submit(self, notifications: list[Notification]) -> list[Notification]:
        if not self.started:
            raise RuntimeError("Notifier.start() first")
        accepted = await self.front.exec(self.ctx, list(notifications))
        if accepted:
            self.fanout.dispatch(accepted, self.retry_policy)
        return accepted

    async def deliver(self, notifications: list[Notification]) -> list[Notification]:
        """Submit and wait until each is delivered or failed; returns those delivered (now, by
        this call)."""
        if not self.started:
            raise RuntimeError("Notifier.start() first")
        accepted = await self.front.exec(self.ctx, list(notifications))
        if not accepted:
            return []
        results = await asyncio.gather(*self.fanout.dispatch(accepted, self.retry_policy))
        return [n for n, ok in zip(accepted, results, strict=True) if ok]

    async def drain(self) -> None:
        await self.fanout.drain()

    async def aclose(self, grace: float = 0.0) -> dict[str, list[str]]:
        """Stop delivering: no new send starts, the sends in flight get up to ``grace`` seconds
        (in all) to be answered and recorded, then the rest are cut off (logged; their rows stay
        ``sending``, which the next start treats as a crash: re-sent if idempotent, else in
        doubt). Returns target → the ids cut off."""
        from atalaia.streams.guard import HEALTH

        targets = list(self.fanout.lanes)
        busy = sum(len(lane.in_flight) for lane in self.fanout.lanes.values())
        if busy and grace > 0:
            log.info("stopping delivery: waiting up to %.0f s for %d send(s) in flight", grace, busy)
        cut = await self.fanout.aclose(grace)
        for target, ids in cut.items():
            log.warning(
                "stopping delivery: %d send(s) to %s still unanswered after the %.0f s grace, cut off "
                "(outcome unknown; at the next start re-sent if the channel is idempotent, else in doubt): %s",
                len(ids),
                target,
                grace,
                ", ".join(ids),
                extra={"ratelimit": False},
            )
        for target in targets:  # its lanes are gone: /health names none of them as down any more
            HEALTH.condition(f"target-open:{target}", None)
        for ch in self.ctx.channels.values():
            await ch.aclose()
        if self._own_http and self._http is not None:
            await self._http.close()
        self.started = False
        return cut

    # --- retry settings ---------------------------------------------------------------------

    def _retry_fields(self, *layers: Retry | None) -> dict:
        vals: dict = {}
        for layer in layers:
            if layer is not None:
                vals.update({k: getattr(layer, k) for k in layer.model_fields_set})
        return vals

    def retry_policy(self, n: Notification) -> RetryPolicy:
        """The retry budget of one notification (see the module docstring)."""
        key = (n.target, n.policy, n.step)
        pol = self._policies.get(key)
        if pol is not None:
            return pol
        policy = self.config.policies.get(n.policy)
        target = self.config.targets.get(n.target)
        layer = policy.retry if policy else None
        if n.kind == "warning" and self.config.warnings is not None:  # the warnings: section
            layer = self.config.warnings.retry
        vals = self._retry_fields(self.config.retry, layer, target.retry if target else None)
        if vals.get("for_") is not None:
            budget = vals["for_"].total_seconds()
        else:
            life = 0.0
            if policy is not None and 0 <= n.step < len(policy.steps):
                step = policy.steps[n.step]
                life = step.wait.total_seconds() * (step.repeat + 1)
            budget = max(MIN_BUDGET, life)
        first = vals["first_backoff"].total_seconds() if "first_backoff" in vals else self.backoff.base
        cap = vals["max_backoff"].total_seconds() if "max_backoff" in vals else self.backoff.cap
        pol = RetryPolicy(
            budget=budget,
            first_backoff=first,
            max_backoff=max(first, cap),
            max_attempts=target.max_attempts if target else None,
            resend_for=vals["resend_for"].total_seconds() if "resend_for" in vals else 86400.0,
        )
        self._policies[key] = pol
        return pol

    def breaker_policy(self, target: str) -> BreakerPolicy:
        cfg = self.config.targets.get(target)
        vals = self._retry_fields(self.config.retry, cfg.retry if cfg else None)
        first = vals["first_backoff"].total_seconds() if "first_backoff" in vals else self.backoff.base
        cap = vals["max_backoff"].total_seconds() if "max_backoff" in vals else self.backoff.cap
        return BreakerPolicy(
            open_after=vals.get("open_after", 3),
            first_backoff=first,
            max_backoff=max(first, cap),
            max_in_flight=cfg.concurrency if cfg else 1,
        )

    def _make_lane(self, target: str) -> TargetLane:
        cfg = self.config.targets.get(target)
        bucket = TokenBucket(cfg.rate.max, cfg.rate.per.total_seconds()) if cfg and cfg.rate else None
        spent = self._spent.pop(target, None)
        if bucket is not None and spent:  # sent within its window before a restart (start())
            bucket.seed(spent, self.ctx.clock())
        lane = TargetLane(target, self.ctx.channels[target], self.ctx, self.breaker_policy(target), bucket)
        hold = self._holds.pop(target, None)
        if hold is not None:  # asked before a restart (start()): nothing goes to it before then
            lane.sched.hold_until = hold
        return lane

    def _observe_health(self, health: TargetHealth, waiting: int) -> None:
        from atalaia.streams.guard import HEALTH

        down = health.state != "closed"
        TARGET_OPEN.labels(health.target).set(1 if down else 0)
        TARGET_WAITING.labels(health.target).set(waiting)
        # /health names a target whose breaker is open (degraded) for as long as it is open
        HEALTH.condition(
            f"target-open:{health.target}",
            (
                f"notification target {health.target} unavailable since "
                f"{utc_second(health.since)} "
                f"({health.failures} consecutive failures: {(health.last_error or '?')[:200]}); "
                f"{waiting} notification(s) waiting"
            )
            if down
            else None,
        )

    def _observe(self, n: Notification, result: DeliveryResult, attempt: int, latency_ms: float) -> None:
        channel = self.ctx.channels.get(n.target)
        kind = channel.kind if channel else "?"
        ATTEMPTS.labels(kind, result.status).inc()
        LATENCY.labels(kind).observe(latency_ms / 1000)


# -- the delivery stage's wiring (streams.topology declares it; the worker runs it) ---------------
def delivery_stage(settings: Any, app: Any) -> Any:
    """The delivery stage's core factory for a worker (``streams.topology``), or None (logged)
    when the escalation targets lack the settings they need: the notifier with its delivery
    log in a thread of its own (an async sink: no SQLite write or fsync on the loop), started
    and closed with the worker."""
    import os

    from atalaia.notifiers.channels import check_targets
    from atalaia.notifiers.config import ConfigError, load_config, missing_env
    from atalaia.notifiers.log import SQLiteDeliveryLog
    from atalaia.notifiers.stage import DeliveryCore
    from atalaia.rules.info import RuleCatalog
    from atalaia.streams.metrics import metered_log
    from atalaia.streams.sink import Sink

    # the safe loader (no plain read first: a FIFO or a non-UTF-8 byte is a file:line:col error)
    escalation = load_config(settings.escalation_path)
    missing = missing_env(escalation)
    from atalaia.streams.guard import HEALTH

    if missing:
        log.error(
            "delivery is NOT running: escalation targets need %s (see config/escalation.yaml). "
            "Notifications wait on %s and go out once it is configured.",
            ", ".join(missing),
            settings.topic("notifications"),
        )
        # said on /health too (degraded) for as long as this worker runs without delivery: the
        # ERROR line scrolls by, and nobody is paged meanwhile
        HEALTH.condition(
            "delivery-not-running",
            f"delivery is NOT running: the escalation targets of {settings.escalation_path} need "
            f"{', '.join(missing)} (unset); notifications wait on {settings.topic('notifications')} "
            "and nobody is notified until they are set and the worker restarted",
        )
        return None
    HEALTH.condition("delivery-not-running", None)
    # every target built as it will be, ${VAR}s expanded: an empty webhook secret, a URL that is
    # not http(s), an apprise URL of the wrong kind stop the worker here (file:line:col, no secret)
    problems, weak = check_targets(escalation, os.environ)
    if problems:
        raise ConfigError(problems)
    for w in weak:
        log.warning("%s", w)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    escalation = with_console_url(escalation, settings)  # links lead to the running console
    path = settings.data_dir / "deliveries.sqlite"
    from atalaia.streams.connect import hold_lock

    # one sender per delivery log: a second process sending from it (an `atalaia worker` with the
    # delivery stage beside `atalaia up` on one data directory) re-sent every waiting notification
    hold_lock(
        settings.data_dir / "deliveries.lock",
        lambda holder: (
            f"another process (pid {holder}) sends the notifications of the delivery log "
            f"{path}: one sender per delivery log. Run the delivery stage in one worker only (`atalaia up` "
            "runs it), or give this one its own ATALAIA_DATA_DIR"
        ),
    )
    # FULL: the outbox is fsynced before the notifications' offsets are committed
    deliveries = Sink(lambda: metered_log(SQLiteDeliveryLog(path, synchronous="FULL")), "deliveries")
    notifier = Notifier(
        escalation,
        deliveries.resource,
        rules=RuleCatalog(settings.rules_paths),  # units, summaries, runbooks in messages (hot reload)
        io=deliveries.offload,
        in_doubt_alert_s=getattr(settings, "in_doubt_alert_s", IN_DOUBT_ALERT_S),
    )
    app.atalaia_notifier = notifier
    app.service(NotifierService(notifier, grace=getattr(settings, "delivery_grace_s", DELIVERY_GRACE_S)))
    return lambda p: DeliveryCore(notifier)


class NotifierService(Service):
    """Starts the notifier with the worker (re-sending what its outbox holds, logging what
    recovery found) and closes it at stop: a graceful stop (SIGTERM, Ctrl-C) starts no new send
    and gives the sends in flight ``grace`` seconds to be answered and recorded, so none of them
    is left in doubt (only a kill, or a send that outlives the grace, leaves one)."""

    def __init__(self, notifier: Notifier, grace: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.notifier = notifier
        self.grace = grace

    async def on_start(self) -> None:
        recovery = await self.notifier.start()
        if recovery.resent or recovery.in_doubt:
            log.warning(
                "delivery recovery: %d re-sent, %d in doubt (not re-sent)",
                recovery.resent,
                recovery.in_doubt,
            )

    async def on_stop(self) -> None:
        await self.notifier.aclose(self.grace)
