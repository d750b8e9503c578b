"""Broker resets, truncation and topic layout: detected, said loudly, visible on ``/health``.

* :data:`HEALTH` collects what is wrong with the broker as this worker sees it. A *reset* (a
  stage's checkpoint offset lies outside the partition's log: the broker restarted empty, the
  log was truncated, or the broker is another cluster) keeps ``/health`` at ``degraded`` for
  ``ATALAIA_RESET_ALERT_S`` (default 15 min, long enough for any scrape to see it; the counter
  ``atalaia_broker_resets_total{stage,topic}`` keeps the event for alerting on ``increase()``)
  and then clears by itself; restarting the worker clears it too. A wrong *topic layout* keeps
  ``/health`` at ``failed`` and the stages stopped for as long as it lasts.
* :class:`BrokerGuard` checks the broker every few seconds: a new cluster id (a new history) makes
  every stage verify its positions at once; missing topics (a broker restarted empty) are
  re-created with their designed partition counts; topics with other counts stop the stages.
  A topic that this worker had seen and that vanished while it ran (deleted, or lost by the
  broker, under the same cluster id) is a reset too: one ``BROKER RESET`` ERROR line, ``/health``
  ``degraded`` for ``ATALAIA_RESET_ALERT_S``, every stage reading it starts again at the
  re-created log's beginning (it went on at its old offset in the new log, so that log's first
  records were never processed, without a word), and every stage sends its open state again (what
  it had sent there and nobody had read is gone with the topic). So is a topic found under another
  topic id than at the last check: deleted and created again by another client (the other process
  of ``atalaia up``, a script) before this check could find it missing (an id the topic had
  before, or the id of a topic this check created, is no reset: see ``BrokerGuard.learn_ids``;
  ids that cannot be read leave only this case unseen). On Tansu, a topic this
  check re-created that already holds records (written to the deleted topic, which Tansu keeps and
  which hide later writes) is deleted once more and created again, so its new log starts empty.
  Those records may be events the ingest endpoints answered for: the ingest producer keeps what
  the broker acknowledged until a check confirms its topic (the same id at two checks in a row),
  and a check that finds topics vanished, created again, or a new cluster has it write them again
  once the topics are there (``BrokerGuard.write_again``, ``IngestProducer.resend``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from mode import Service
from prometheus_client import Counter, Gauge

from atalaia.streams.clock import utc_second
from atalaia.streams.kafka_config import KAFKA, known_kind

log = logging.getLogger(__name__)

BROKER_RESETS = Counter(
    "atalaia_broker_resets",
    "checkpoint offsets found outside the partition's log (broker reset or truncation); the stage "
    "kept its state and restarted at the log's beginning",
    ["stage", "topic"],
)
EMBEDDED_BROKER_RESTARTS = Gauge(
    "atalaia_embedded_broker_restarts",
    "times atalaia up has started a new embedded broker since it started, because the one before "
    "died (its topics were in its memory: the stages resumed from the data directory)",
)
BROKER_REACHABLE = Gauge(
    "atalaia_broker_reachable", "1 while the broker answers this process's checks (every few seconds)"
)
TOPIC_LAYOUT_OK = Gauge(
    "atalaia_topic_layout_ok", "1 when every pipeline topic has its designed partition count"
)


@dataclass
class Problem:
    status: str  # "degraded" | "failed"
    reason: str
    since: float
    until: float | None  # None: until resolved


class BrokerHealth:
    """What ``/health`` reports about the broker (see the module docstring)."""

    def __init__(self, reset_alert_s: float = 900.0, clock: Any = time.time) -> None:
        self.reset_alert_s, self.clock = reset_alert_s, clock
        self.problems: dict[str, Problem] = {}
        TOPIC_LAYOUT_OK.set(1)

    def reset(self, stage: str, resets: list[tuple[str, int, int, int, int, str]]) -> None:
        """A stage found checkpoint offsets outside their logs and starts at their beginnings:
        ``resets`` = (topic, partition, checkpoint offset, log begin, log end, why) each. One
        line per stage and occasion, never rate-limited."""
        if not resets:
            return
        whys = sorted({r[5] for r in resets})
        where = ", ".join(f"{t}[{p}] checkpoint {o} -> log [{b}, {e})" for t, p, o, b, e, _ in resets)
        log.error(
            "BROKER RESET: stage %s: %s; %s. Keeping the stage's state and starting at each log's "
            "beginning; records the broker lost are not processed",
            stage,
            "; ".join(whys),
            where,
            extra={"ratelimit": False},
        )
        now = self.clock()
        for topic, partition, offset, begin, end, why in resets:
            BROKER_RESETS.labels(stage, topic).inc()
            self.problems[f"reset:{stage}:{topic}:{partition}"] = Problem(
                "degraded",
                f"broker reset at {utc_second(now)}: stage {stage} "
                f"found {topic}[{partition}] checkpoint offset {offset} outside the log [{begin}, {end}) "
                f"({why}); restarted at {begin} with its state kept",
                now,
                now + self.reset_alert_s,
            )

    def layout(self, problems: list[str], message: str = "") -> None:
        """Topics with wrong partition counts (``[]``: the layout is right)."""
        if problems:
            if "layout" not in self.problems:
                log.error("%s", message or "; ".join(problems))
            self.problems["layout"] = Problem("failed", message or "; ".join(problems), self.clock(), None)
        elif self.problems.pop("layout", None) is not None:
            log.warning("topic layout is right again: the stages resume")
        TOPIC_LAYOUT_OK.set(0 if problems else 1)

    def condition(
        self, key: str, reason: str | None, status: str = "degraded", until: float | None = None
    ) -> None:
        """A condition of this process that ``/health`` names (``degraded`` unless said) until it
        is cleared (``reason`` None), or until the time ``until`` when given: e.g. no rules loaded
        (``rules.stage``), recent in-doubt deliveries (``notifiers.service``)."""
        if reason is None:
            self.problems.pop(key, None)
            return
        old = self.problems.get(key)
        self.problems[key] = Problem(status, reason, old.since if old else self.clock(), until)

    @property
    def holding(self) -> bool:
        """True while the stages must not consume (wrong topic layout)."""
        return "layout" in self.problems

    def status(self) -> tuple[str, list[str]]:
        now = self.clock()
        for k, p in list(self.problems.items()):
            if p.until is not None and now >= p.until:
                del self.problems[k]
        if not self.problems:
            return "ok", []
        worst = "failed" if any(p.status == "failed" for p in self.problems.values()) else "degraded"
        return worst, [p.reason for p in sorted(self.problems.values(), key=lambda p: p.since)]


HEALTH = BrokerHealth()


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """What a check raises when the broker cannot be reached (refused, not ready, timed out)."""
    from aiokafka.errors import (
        KafkaConnectionError,
        KafkaTimeoutError,
        NodeNotReadyError,
        RequestTimedOutError,
    )

    return (
        KafkaConnectionError,
        KafkaTimeoutError,
        NodeNotReadyError,
        RequestTimedOutError,
        OSError,
        TimeoutError,
    )


def broker_restarted(notice: str | None, health: BrokerHealth = HEALTH) -> None:
    """In a process ``atalaia up`` started again after its embedded broker died (``notice``: the
    JSON ``{"at", "why", "count"}`` of ATALAIA_BROKER_RESTARTED): ``/health`` says so,
    ``degraded``, for ATALAIA_RESET_ALERT_S from the death (as a broker reset: what the broker
    held and no stage had checkpointed or logged is gone), and the gauge counts the restarts."""
    if not notice:
        return
    try:
        told = json.loads(notice)
        at, why, count = float(told["at"]), str(told["why"]), int(told["count"])
    except (ValueError, TypeError, KeyError, OverflowError):
        log.warning("ATALAIA_BROKER_RESTARTED is not up's notice: ignored (%r)", notice[:200])
        return
    try:
        when = utc_second(at)
    except (OverflowError, OSError, ValueError):
        log.warning("ATALAIA_BROKER_RESTARTED is not up's notice: ignored (%r)", notice[:200])
        return
    EMBEDDED_BROKER_RESTARTS.set(count)
    health.condition(
        "embedded-broker-restart",
        f"{why} at {when}; atalaia up started a new "
        f"one ({count} since it started) and resumed every stage from the data directory's "
        "checkpoints and ingest log; see its log for what was put back",
        until=at + health.reset_alert_s,
    )


#: at stop, a wait on the broker (a flush, the acks of outputs, a commit) goes on this long before
#: the broker is checked, and then as long as it answers
STOP_CHECK_S = 1.0
#: a broker found gone at stop is not asked again for this long: the next waits give up at once
GONE_KEPT_S = 10.0
_gone: dict[str, tuple[float, str]] = {}  # bootstrap -> (when it was found gone, why)


async def broker_gone(bootstrap: str, timeout: float = 1.0, health: BrokerHealth | None = None) -> str | None:
    """Why the broker ``bootstrap`` cannot be reached now, or None when it can: no address of it
    accepts a connection within ``timeout`` (down, its host gone), or this process's broker
    checks have failed for ATALAIA_BROKER_UNREACHABLE_S (it accepts connections and does not
    answer: frozen)."""
    said = (health or HEALTH).problems.get("broker-unreachable")
    if said is not None:
        return said.reason
    errors = []
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition("://")[2].rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), timeout)
        except (OSError, TimeoutError, ValueError) as e:
            errors.append(
                f"{address.strip()}: {type(e).__name__}: {e}" if str(e) else f"{address}: {type(e).__name__}"
            )
            continue
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return None
    return "; ".join(errors)


async def unless_broker_gone(aw: Any, bootstrap: str, what: str) -> bool:
    """At stop: await ``aw`` (a flush, the acks a checkpoint waits for, a commit) while the broker
    can be reached; if it cannot, give it up (cancelled) and say so in one WARNING line, so a
    stop with the broker down takes seconds, not the clients' timeouts (about 35 s under
    ``atalaia up``, which then killed the process). Nothing is lost: what was given up was not
    acknowledged, so no checkpoint covers it and the restart redoes it from the last checkpoint
    (an accepted event is on the broker, or in the ingest log of ``atalaia up``'s embedded
    broker, before it is answered). True when ``aw`` completed (its exception raised)."""
    task = asyncio.ensure_future(aw)
    try:
        while True:
            found = _gone.get(bootstrap)
            recent = found is not None and time.monotonic() - found[0] < GONE_KEPT_S
            done, _ = await asyncio.wait({task}, timeout=0.1 if recent else STOP_CHECK_S)
            if done:
                task.result()
                return True
            why = found[1] if recent and found else await broker_gone(bootstrap)
            if why is None:
                continue
            _gone[bootstrap] = (found[0] if recent and found else time.monotonic(), why)
            task.cancel()  # (its outcome retrieved; one that ignores the cancellation is left)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            await asyncio.wait({task}, timeout=1.0)
            log.warning(
                "stopping without the broker at %s: it cannot be reached (%s); %s given up: "
                "nothing unacknowledged is checkpointed, the restart resumes from the last checkpoint",
                bootstrap,
                why,
                what,
                extra={"ratelimit": False},
            )
            return False
    except asyncio.CancelledError:
        task.cancel()
        raise


CONFIG_LAST_GOOD = Gauge(
    "atalaia_config_last_good",
    "1 while this process runs on the last configuration that loaded for this part (its file does "
    "not load: atalaia up restarted the process on its snapshot, streams.lastgood)",
    ["part"],
)


def config_last_good(notice: str | None, health: BrokerHealth = HEALTH) -> None:
    """In a process ``atalaia up`` started on the last configuration that loaded (``notice``: the
    JSON ``{"at", "problems", "taken_at"}`` of ATALAIA_CONFIG_LAST_GOOD): ``/health`` is
    ``degraded`` naming the files that do not load (``file:line:col``) for as long as the process
    runs, and the gauge is 1 for each such part."""
    if not notice:
        return
    try:
        told = json.loads(notice)
        problems = {str(k): [str(x) for x in v] for k, v in told["problems"].items()}
        taken = {str(k): utc_second(float(v)) for k, v in told.get("taken_at", {}).items()}
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, OSError):
        log.warning("ATALAIA_CONFIG_LAST_GOOD is not up's notice: ignored (%r)", notice[:200])
        return
    said = []
    for part, lines in problems.items():
        CONFIG_LAST_GOOD.labels(part).set(1)
        kept = f"its snapshot of {taken[part]}" if part in taken else "an empty file (refusing everyone)"
        said.append(f"{part} on {kept}, because {' | '.join(lines[:3]) or 'it does not load'}")
    health.condition(
        "config-last-good",
        "running on the last configuration that loaded, not on the files: "
        + "; ".join(said)
        + " (fix them, `atalaia check`: atalaia up restarts this process on them once they load)",
    )


class BrokerGuard(Service):
    """Every ``interval`` seconds: the broker's cluster id and the pipeline topics' partition
    counts (see the module docstring)."""

    def __init__(
        self, bootstrap: str, settings: Any, stages: dict[str, Any], interval: float = 2.0, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.bootstrap, self.settings, self.stages, self.interval = bootstrap, settings, stages, interval
        self.cluster: str | None = None
        self.warned: dict[str, bool] = {}
        self.known: set[str] = set()  # the pipeline topics the last check found
        self.ids: dict[str, bytes] = {}  # their topic ids, where the broker says (streams.broker.topic_ids)
        self.old_ids: dict[str, set[bytes]] = {}  # the ids they had before: a lagging broker may answer one
        HEALTH.reset_alert_s = settings.reset_alert_s
        self.answered = time.monotonic()  # the last check the broker answered (or the start)
        # the producers whose acknowledged records this check confirms or has written again
        # (``streams.ingest.http.IngestProducer``: ``confirm(before)``, ``resend(topics)``)
        self.producers: list[Any] = []
        self.began: float | None = None  # when the last completed check began (monotonic)
        self.told_ids = False  # whether the broker ever told topic ids (Kafka < 2.8 does not)
        self.unreachable_s = getattr(settings, "broker_unreachable_s", 10.0)

    async def on_start(self) -> None:
        from atalaia.streams.logfilter import install

        install(self.settings.log_interval_s)  # again: the Faust worker may have set up handlers
        broker_restarted(os.environ.get("ATALAIA_BROKER_RESTARTED"))
        config_last_good(os.environ.get("ATALAIA_CONFIG_LAST_GOOD"))
        BROKER_REACHABLE.set(1)
        self.add_future(self._watch())

    def reached(self, error: BaseException | None) -> None:
        """After each check: a broker that has not answered for ``unreachable_s`` makes
        ``/health`` ``failed`` (nothing flows: the clients retry without end and say so only in
        the log) until it answers again."""
        now = time.monotonic()
        if error is None:
            self.answered = now
            BROKER_REACHABLE.set(1)
            if HEALTH.problems.get("broker-unreachable") is not None:
                HEALTH.condition("broker-unreachable", None)
                log.warning("the broker at %s answers again", self.bootstrap, extra={"ratelimit": False})
            return
        if now - self.answered < self.unreachable_s:
            return
        BROKER_REACHABLE.set(0)
        first = "broker-unreachable" not in HEALTH.problems
        since = utc_second(time.time() - (now - self.answered))
        said = str(error)  # aiokafka's errors name their class already
        said = said if said.startswith(type(error).__name__) else f"{type(error).__name__}: {said}"
        HEALTH.condition(
            "broker-unreachable",
            f"the broker at {self.bootstrap} has not answered since {since} "
            f"({said}); no event is processed or sent until it does",
            status="failed",
        )
        if first:
            log.error(
                "the broker at %s has not answered for %.0f s (%s): /health is failed until it does",
                self.bootstrap,
                now - self.answered,
                said,
                extra={"ratelimit": False},
            )

    async def _watch(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        from atalaia.streams.kafka_config import client_options

        admin = None
        while not self.should_stop:
            try:
                if admin is None:
                    admin = AIOKafkaAdminClient(**client_options(self.bootstrap), request_timeout_ms=5000)
                    await admin.start()
                await self.check(admin)
                self.reached(None)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # broker unreachable: the clients say so too; keep watching
                log.warning("broker check failed: %s: %s", type(e).__name__, e)
                # another error is an answer: only a broker that cannot be reached is unreachable
                self.reached(e if isinstance(e, unreachable_errors()) else None)
                if admin is not None:
                    with contextlib.suppress(Exception):
                        await admin.close()
                admin = None
            await asyncio.sleep(self.interval)
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()

    async def check(self, admin: Any) -> None:
        from atalaia.streams.broker import (
            cluster_id,
            create_topics,
            designed_partitions,
            layout_error,
            layout_problems,
            topic_ids,
        )

        began = time.monotonic()
        cid = await cluster_id(admin)
        if cid and self.cluster and cid != self.cluster and not self.warned.get(cid):
            self.warned[cid] = True
            log.error(
                "the broker at %s is a new cluster (%s, was %s): it holds a new history; the stages "
                "check their positions against it",
                self.bootstrap,
                cid,
                self.cluster,
            )
        changed = bool(cid and self.cluster and cid != self.cluster)
        designed = designed_partitions(self.settings.topic_prefix, self.settings.partitions)
        existing = set(await admin.list_topics())
        vanished = sorted(t for t in designed if t in self.known and t not in existing)
        actual = await create_topics(admin, designed, existing=existing)
        created = {t: n for t, n in designed.items() if t not in existing and t in actual}
        if created and known_kind(self.bootstrap) != KAFKA:
            await self.start_clean(admin, created)
        # asked after the topics this check created: a topic found with another id than the last
        # check's was deleted and created again by another client (the other process of `atalaia
        # up`, a script) before this check could find it missing
        try:
            ids = await topic_ids(admin._client)
        except Exception as e:  # a request of Atalaia's own: the rest of the check does without it
            log.warning(
                "broker check: topic ids not read (%s: %s); a topic another client re-created is "
                "told at a later check",
                type(e).__name__,
                e,
            )
            ids = {}
        recreated, learnt = self.learn_ids(designed, existing, ids)
        problems = layout_problems(designed, actual)
        HEALTH.layout(problems, layout_error(problems, self.bootstrap) if problems else "")
        await self.state_topics(admin)
        if changed:
            for stage in self.stages.values():
                await stage.recheck(cid)
        elif vanished or recreated:
            await self.vanished(sorted({*vanished, *recreated}))
        lost = None if changed else {*vanished, *recreated, *created}
        if changed or lost:
            await self.write_again(lost)
        elif self.began is not None and (
            all(t in ids and t in self.ids for t in designed) if ids or self.told_ids else True
        ):
            # each topic as at the last check (the same ids, on a broker that tells them): what
            # was acknowledged before that check is on it
            for producer in self.producers:
                producer.confirm(self.began)
        self.cluster = cid or self.cluster  # only now: a failed recheck is tried again
        self.known = {t for t in designed if t in existing or t in actual}
        self.ids, self.old_ids = learnt  # only now, as the rest: a failed check is tried again
        self.began = began
        self.told_ids = self.told_ids or bool(ids)

    def learn_ids(
        self, designed: dict[str, int], existing: set[str], ids: dict[str, bytes]
    ) -> tuple[list[str], tuple[dict[str, bytes], dict[str, set[bytes]]]]:
        """The topics of ``designed`` that ``existing`` lists under another id than the last one
        learnt (created again by another client since: a reset); ``ids`` (this check's answer) is
        learnt. A topic this check found missing (and created) forgets its id: its new one is
        learnt from the first answer that has it, never taken for another client's re-creation.
        An answer without a topic's id changes nothing (its last id stays: re-created by the
        next check, the new id tells it), nor does one with an id the topic had before (on a
        Kafka cluster, a broker whose metadata lags behind its re-creation). Returned with them:
        the ids and former ids to keep once the check is done."""
        recreated, known, former = [], dict(self.ids), {t: set(v) for t, v in self.old_ids.items()}
        for t in designed:
            old = former.setdefault(t, set())
            if t not in existing and t in known:
                old.add(known.pop(t))
            new = ids.get(t)
            if new is None or new in old:
                continue
            last = known.get(t)
            if last is not None and last != new:
                recreated.append(t)
                old.add(last)
            known[t] = new
        return recreated, (known, former)

    async def start_clean(self, admin: Any, created: dict[str, int]) -> None:
        """Topics this check created again that already hold records (on Tansu: those written to
        the deleted topic, :func:`streams.broker.kept_while_deleted`) are deleted once more, which
        drops them, and created again: writes to the new log are then all read. What they held
        was written after the deletion and is lost with it, as the ``BROKER RESET`` line says."""
        from atalaia.streams.broker import create_topics, kept_while_deleted

        for _ in range(3):
            kept = await kept_while_deleted(self.bootstrap, created)
            if not kept:
                return
            log.warning(
                "the broker kept records written to %s while it was deleted, at the re-created "
                "log's first offsets, where they would hide later writes: deleting and creating it "
                "again",
                ", ".join(kept),
            )
            await admin.delete_topics(kept)
            created = {t: created[t] for t in kept}
            await create_topics(admin, created, existing=set())
        log.error(
            "%s still hold records written while deleted: writes to them may be acknowledged and "
            "never read; delete them while no Atalaia process runs",
            ", ".join(created),
        )

    async def write_again(self, topics: set[str] | None) -> None:
        """The records this process's producers had acknowledged since the last check that found
        the topics as they were, on ``topics`` (None: every topic, a new cluster), written again:
        the broker may have lost them with its memory, or taken them for a topic it did not have
        and dropped them when the topic was created (``start_clean``)."""
        for producer in self.producers:
            n = await producer.resend(topics)
            if n:
                log.warning(
                    "wrote again the %d record(s) this process had written to %s since the broker "
                    "check last found %s as it was (the broker may have lost them)",
                    n,
                    self.bootstrap,
                    ", ".join(sorted(topics)) if topics else "every topic",
                    extra={"ratelimit": False},
                )

    async def vanished(self, topics: list[str]) -> None:
        """Topics this worker had seen vanished from the broker and were re-created empty: said
        loudly, on ``/health``, and every stage resumes from the new logs (module docstring)."""
        now = HEALTH.clock()
        why = "the topic vanished from the broker while the worker ran and was re-created empty"
        log.error(
            "BROKER RESET: topic(s) %s vanished from the broker at %s (deleted, or lost by it) and "
            "were re-created empty: records on them that no stage had read are lost; the stages "
            "reading them start at the new logs' beginning and every stage sends its open state again",
            ", ".join(topics),
            self.bootstrap,
            extra={"ratelimit": False},
        )
        HEALTH.condition(
            "vanished:" + ",".join(topics),
            f"broker reset at {utc_second(now)}: topic(s) "
            f"{', '.join(topics)} vanished from the broker and were re-created empty",
            until=now + HEALTH.reset_alert_s,
        )
        for stage in self.stages.values():
            vanished = getattr(stage, "vanished", None)
            if vanished is not None:
                await vanished(set(topics), why)

    async def state_topics(self, admin: Any) -> None:
        """Re-create the stages' state topics (``ATALAIA_STATE_STORE=kafka``) that vanished with a
        reset broker, so the next checkpoints have somewhere to go. Their partition counts are
        not checked: a checkpoint of partition p lives in state partition p mod count."""
        from atalaia.streams.broker import create_topics
        from atalaia.streams.checkpoints import STATE_TOPIC_CONFIG, KafkaCheckpoints

        stores = [getattr(s, "checkpoints", None) for s in self.stages.values()]
        wanted = {c.topic: c.partitions for c in stores if isinstance(c, KafkaCheckpoints)}
        if wanted:
            await create_topics(admin, wanted, STATE_TOPIC_CONFIG)
