"""What a worker tells Prometheus: metric definitions, the stage hooks that feed them, consumer
lag, and the ``/health`` report.

Every worker process serves ``/metrics`` (and ``/health``, ``/readyz``, ``/livez``): on its HTTP port with
``--http``, and on ``ATALAIA_METRICS_PORT`` (bound to ``ATALAIA_HTTP_HOST``) otherwise. The
metrics are per process; Prometheus sums them over the scraped workers.

Metrics (besides the stage counters of ``streams.stage`` and the KPIs of ``incidents.kpi``):

* ``atalaia_consumer_lag{stage,topic,partition}``: records between a stage's position and the
  partition's end (offsets the consumer skips without handing them over, a transaction's marker
  or records compacted out of a batch, are not records behind: see :func:`_partitions`). The end is the *high watermark of the consumer's last fetch response*, not a
  ListOffsets answer: Tansu reports ListOffsets "latest" as the last batch's base offset + 1
  (too low, by up to a producer batch), while its fetch responses carry the true high watermark
  (measured: 110 records, fetch high watermark 110, ListOffsets 101). Before the first fetch of a
  partition the lag is not reported. Apache Kafka gives the same number both ways.
* ``atalaia_alarm_latency_seconds{stage}`` (produce → alarm): for each alarm transition a stage
  emits while processing records, the time from the Kafka timestamp of the oldest input record
  of its partition batch (the producer's create time: when the HTTP/MQTT adapter or a producer
  wrote the event; ingest passes it on to the observation) until the transition is acknowledged
  by the broker. Batch granularity: an upper bound for the alarm, exact for batches of one.
  Transitions from timers (absence, ``for:`` durations on the clock) are not latencies and are
  only counted.
* ``atalaia_stage_record_age_seconds{stage}``: the same age for every partition batch a stage
  processes (how far behind real time each hop runs; grows with lag).
* ``atalaia_alarm_delivery_latency_seconds{target}`` (alarm → delivery): from the event time of
  the incident change that triggered a first-step notification (the alarm's time) until the
  target accepted it.
* ``atalaia_alarm_transitions_total{rule,state}``, ``atalaia_incident_changes_total{state}``,
  ``atalaia_deliveries_total{target,status}`` (the delivery log's row status after each attempt:
  delivered, waiting = a retry is scheduled, failed = given up).
* ``atalaia_stage_up{stage}``: 1 while a stage runs, 0 once it failed.
* ``atalaia_ingest_mqtt_messages_total{outcome}``: MQTT messages the bridge received, by what
  became of them (a fixed set: accepted, oversize, unstorable, retained; see ``MQTT_OUTCOMES``).
* ``/health`` shows each stage's lag too, with how long its oldest unprocessed record has waited,
  sampled every second (:class:`Behind`), and is ``degraded`` while that wait is over
  ``ATALAIA_HEALTH_MAX_BEHIND_S``.
* ``atalaia_ingest_total{outcome}``: what the ingest stage (or the fused ingest + rules stage)
  made of the payloads it consumed: new observations, duplicates, redelivered notifications,
  payloads refused whole, data-quality warnings, entities and attributes ignored (deleted, nothing
  to observe)
  (``INGEST_OUTCOMES``). Refusals by reason: ``atalaia_dlq_records_total{source,reason}``.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import time
import weakref
from collections import deque
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson
from mode import Service
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

ALARM_LATENCY = Histogram(
    "atalaia_alarm_latency_seconds",
    "produce -> alarm: from the input record's Kafka timestamp to the alarm transition's ack",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
RECORD_AGE = Histogram(
    "atalaia_stage_record_age_seconds",
    "age of the oldest record of each partition batch when the stage has processed it",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
DELIVERY_LATENCY = Histogram(
    "atalaia_alarm_delivery_latency_seconds",
    "alarm -> delivery: from the alarm's time to the target's acceptance (first escalation step)",
    ["target"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600),
)
ALARM_TRANSITIONS = Counter(
    "atalaia_alarm_transitions_total", "alarm transitions produced, by rule and state", ["rule", "state"]
)
INCIDENT_CHANGES = Counter(
    "atalaia_incident_changes_total", "incident changes produced, by the incident's new state", ["state"]
)
DELIVERIES = Counter(
    "atalaia_deliveries_total",
    "delivery attempts by target and the delivery's status after it (delivered, waiting, failed)",
    ["target", "status"],
)

#: what the MQTT bridge did with a message (streams/ingest/mqtt.py): put on the events topic,
#: refused as over max_payload_bytes (DLQ), refused by Kafka for good (DLQ: record too large or
#: invalid), or dropped because the broker replayed it as retained on (re)subscription
MQTT_OUTCOMES = ("accepted", "oversize", "unstorable", "retained")
MQTT_MESSAGES = Counter(
    "atalaia_ingest_mqtt_messages_total", "MQTT messages received, by outcome", ["outcome"]
)
for _outcome in MQTT_OUTCOMES:  # every outcome shows from the start, at 0
    MQTT_MESSAGES.labels(_outcome)

#: what the ingest stage made of the payloads it consumed (``streams.ingest.batch`` counts)
INGEST_OUTCOMES = (
    "payloads",
    "payloads_refused",
    "observations",
    "duplicates",
    "notifications_redelivered",
    "warnings",
    "ignored",
)
INGEST_EVENTS = Counter(
    "atalaia_ingest_total",
    "what ingest made of the payloads it consumed: payloads, payloads_refused (whole payload on the "
    "DLQ), observations (new ones), duplicates, notifications_redelivered, warnings (accepted with a "
    "data-quality warning), ignored (deleted entities and attributes, nothing to observe)",
    ["outcome"],
)
for _outcome in INGEST_OUTCOMES:
    INGEST_EVENTS.labels(_outcome)


def count_ingest(counts: dict[str, int]) -> None:
    """Add one ingest batch's counts (``BatchResult.counts``) to the metrics (refusals by reason
    are ``atalaia_dlq_records_total``, counted off the DLQ topic)."""
    for key in INGEST_OUTCOMES:
        if n := counts.get(key):
            INGEST_EVENTS.labels(key).inc(n)


# -- stage hooks ------------------------------------------------------------------------------
def _count_outputs(stage: str, outs: Iterable[Any]) -> int:
    """Count alarm transitions and incident changes among ``outs``; returns the alarms. The
    labels are the ones the cores attached when they encoded the typed records (``Out.counted``):
    no output is decoded again to be counted."""
    alarms = 0
    for o in outs:
        topic = o.topic
        if topic == "alarms":
            ALARM_TRANSITIONS.labels(*(o.counted or _read_labels(o.value, "rule", "state"))).inc()
            alarms += 1
        elif topic == "incidents":
            INCIDENT_CHANGES.labels(*(o.counted or _read_labels(o.value, "state"))).inc()
    return alarms


def _read_labels(value: bytes, *fields: str) -> tuple[str, ...]:
    """The labels of an output no core encoded (made by hand, without ``counted``): read from its
    JSON, ``?`` where unreadable. The stages' outputs never come here."""
    try:
        d = orjson.loads(value)
        return tuple(str(d.get(f, "?")) for f in fields)
    except (orjson.JSONDecodeError, AttributeError):
        return ("?",) * len(fields)


def batch_done(stage: str, slices: list[tuple[list[Any], list[Any]]]) -> None:
    """After a batch's outputs were acknowledged: ``slices`` = (records of one partition, the
    outputs the core made of them) each."""
    now = time.time()
    age, latency = RECORD_AGE.labels(stage), None
    for records, outs in slices:
        ts = getattr(records[0], "timestamp", None) if records else None
        waited = now - ts / 1000 if isinstance(ts, int) and ts > 0 else None
        if waited is not None:
            age.observe(max(0.0, waited))
        alarms = _count_outputs(stage, outs) if outs else 0
        if alarms and waited is not None:
            latency = latency or ALARM_LATENCY.labels(stage)
            for _ in range(alarms):
                latency.observe(max(0.0, waited))


def ticked(stage: str, outs: list[Any]) -> None:
    """Outputs of a stage's timer (no input record, so no latency): counted only."""
    if outs:
        _count_outputs(stage, outs)


# -- deliveries -------------------------------------------------------------------------------
def _event_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, TypeError, AttributeError):
        return None


def delivery_finished(n: Any, status: str, wall: float | None = None) -> None:
    DELIVERIES.labels(n.target, status).inc()
    if status == "delivered" and n.kind == "escalation" and n.step == 0 and n.repeat == 0:
        at = _event_time(n.snapshot.at)
        if at is not None:
            DELIVERY_LATENCY.labels(n.target).observe(max(0.0, (wall or time.time()) - at))


def metered_log(delivery_log: Any) -> Any:
    """The delivery log, counting each ``finish`` (a row's status after an attempt)."""
    finish = delivery_log.finish

    def metered_finish(n: Any, attempt: int, result: Any, status: str, *args: Any, **kw: Any) -> None:
        finish(n, attempt, result, status, *args, **kw)
        try:
            delivery_finished(n, status)
        except Exception:  # metrics never break a delivery
            log.debug("delivery metrics", exc_info=True)

    delivery_log.finish = metered_finish
    return delivery_log


# -- consumer lag and stage state (read at scrape time) ---------------------------------------
class StageCollector:
    """``atalaia_consumer_lag``, ``atalaia_consumer_position`` and ``atalaia_stage_up`` of the
    stages of this process, computed when Prometheus scrapes (see the module docstring)."""

    def __init__(self) -> None:
        self.stages: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        up = GaugeMetricFamily(
            "atalaia_stage_up", "1 while the stage runs, 0 once it failed", labels=["stage"]
        )
        lag = GaugeMetricFamily(
            "atalaia_consumer_lag",
            "records between the stage's position and the partition's end (fetch high watermark)",
            labels=["stage", "topic", "partition"],
        )
        pos = GaugeMetricFamily(
            "atalaia_consumer_position",
            "next offset the stage processes",
            labels=["stage", "topic", "partition"],
        )
        health = GaugeMetricFamily(
            "atalaia_health",
            "1 for this process's /health status (ok, degraded, starting, failed), 0 for the others: "
            "/health answers 200 while degraded, so alert on this (or on the conditions' own metrics)",
            labels=["status"],
        )
        try:
            now, _ = health_status(dict(self.stages))
        except Exception:  # a scrape never breaks on it
            log.warning("/health status not read for /metrics", exc_info=True)
            now = None
        if now is not None:
            for status in HEALTH_RANK:
                health.add_metric([status], 1.0 if status == now else 0.0)
        banks: dict[str, dict[str, float]] = {}
        for name, stage in sorted(self.stages.items()):
            up.add_metric([name], 0.0 if getattr(stage, "failed", None) is not None else 1.0)
            for core in list(getattr(stage, "cores", {}).values()):
                # the detector banks of the rules cores (the fused core holds its rules core)
                bank = getattr(getattr(core, "rules", core), "bank", None)
                if bank is not None and hasattr(bank, "metrics"):
                    sums = banks.setdefault(name, {})
                    for metric, value in bank.metrics().items():
                        # the limit is the worker's, shared by its banks: not summed
                        add = max if metric == "atalaia_detector_entities_max" else operator.add
                        sums[metric] = add(sums.get(metric, 0.0), value)
            for label, tp, position, end in _partitions(name, stage):
                labels = [label, tp.topic, str(tp.partition)]
                pos.add_metric(labels, stage.positions.get(tp, position))
                if end is not None:
                    lag.add_metric(labels, max(0, end - position))
        yield from (up, lag, pos, health)
        yield from _bank_families(banks)


def _partitions(name: str, stage: Any) -> Iterable[tuple[str, Any, int, int | None]]:
    """(user stage, topic partition, position, fetch high watermark or None before the first
    fetch) of each partition a stage holds: read from the consumer, no broker request.

    The position is where the stage has applied every record it was handed up to: its own
    (the last record applied + 1), or, while its loop is not applying a batch, the consumer's
    next fetch offset if that is further. The consumer skips what it never hands over, a
    transaction's marker, records compacted out of a batch, a log emptied by retention before
    a stage without a checkpoint read it (its position 0): a high watermark past them is not
    records waiting (an idle stage seemed behind, for ever)."""
    consumer = getattr(stage, "consumer", None)
    if consumer is None or not getattr(stage, "_consumer_started", False):
        return
    try:
        assigned = consumer.assignment()
    except Exception:
        return
    lock = getattr(stage, "_lock", None)
    applying = lock is not None and lock.locked()  # a batch handed over may not be applied yet
    for tp in sorted(assigned):
        position = stage.positions.get(tp)
        if position is None:
            continue
        if not applying:
            fetched = _fetch_position(consumer, tp)
            if fetched is not None and fetched > position:
                position = fetched
        # the fused stage: its events are ingest's lag (observations stay the rules')
        label = (getattr(stage, "topic_stages", None) or {}).get(tp.topic, name)
        yield label, tp, position, consumer.highwater(tp)


def _fetch_position(consumer: Any, tp: Any) -> int | None:
    """The offset the consumer fetches next for ``tp`` (aiokafka's ``position()`` without its
    wait): past every record it returned and what it skipped. None if unknown."""
    try:
        state = consumer._subscription.subscription.assignment.state_value(tp)
        return state.position if state is not None and state.has_valid_position else None
    except Exception:  # another aiokafka, a rebalance under way: the stage's own position
        return None


BANK_HELP = {
    "atalaia_detector_entities": "entity models the detector banks of the stage's partitions hold in memory",
    "atalaia_detector_entities_checkpointed": "idle entity models checkpointed out of memory",
    "atalaia_detector_entities_max": "models the worker's banks may hold in memory together, over its partitions and stages (max_entities)",
    "atalaia_detector_entities_evicted": "entity models evicted for idleness (count kept in the banks' checkpoints)",
    "atalaia_detector_entities_resumed": "evicted entity models resumed from their checkpoints",
    "atalaia_detector_entities_refused": "new entities refused because a bank was full (no score, logged)",
    "atalaia_detector_entities_reset": "restored entity models restarted because they no longer compute what their configuration builds",
    "atalaia_detector_entities_forgotten": "checkpoints forgotten (entity silent for forget_after, or the oldest beyond max_checkpoints): such an entity starts a fresh model",
    "atalaia_detector_entities_upgraded": "restored entity models kept with a test the code added since (it learns from the restore on)",
}


def _bank_families(banks: dict[str, dict[str, float]]) -> Any:
    """The detector banks' gauges (``DetectorBank.metrics()``), summed per stage."""
    names = sorted({m for sums in banks.values() for m in sums})
    for metric in names:
        family = GaugeMetricFamily(metric, BANK_HELP.get(metric, metric), labels=["stage"])
        for stage, sums in sorted(banks.items()):
            if metric in sums:
                family.add_metric([stage], sums[metric])
        yield family


STAGES = StageCollector()
REGISTRY.register(STAGES)


def watch_stages(stages: dict[str, Any]) -> None:
    """Report these stages (name -> BatchStage) on /metrics."""
    STAGES.stages.update(stages)


# -- how long each stage has been behind (/health) ----------------------------------------------
#: marks one partition keeps at most (about one a second while it falls behind); beyond, every
#: other one is dropped: the waits stay lower bounds, coarser the longer the backlog
MAX_MARKS = 512


class Behind:
    """Records behind and how long the oldest of them has waited, per stage, for ``/health``;
    and ``/health`` ``degraded`` while that wait is over ``max_behind_s`` (sustained lag).

    Sampled every second (:class:`BehindWatch`) from what the lag metric reads: each partition's
    fetch high watermark and the stage's position, no broker request. A partition keeps *marks*
    (high watermark, when it was first seen): the record at the stage's position already existed
    when the first mark above the position was taken, so ``now`` minus that time is how long the
    oldest unprocessed record has waited, at least (at most a sample late). A storm worked
    through in seconds keeps it at seconds however many records it brings; a stage that falls
    behind and stays behind sees it grow until it catches up."""

    def __init__(self, max_behind_s: float = 120.0, clock: Any = time.time, health: Any = None) -> None:
        self.max_behind_s, self.clock, self.health = max_behind_s, clock, health
        self.marks: dict[tuple[str, Any], deque[tuple[int, float]]] = {}
        self.stages: dict[str, dict[str, Any]] = {}  # user stage -> {"lag": n, "behind_s": s}
        self.flagged: set[str] = set()

    def of(self, stage: str) -> dict[str, Any]:
        """What ``/health`` shows of a stage: records behind (``lag``) and how long the oldest
        has waited (``behind_s``; 0 when caught up); None before its first fetch."""
        return self.stages.get(stage, {"lag": None, "behind_s": None})

    def sample(self, stages: dict[str, Any]) -> None:
        now = self.clock()
        seen: set[tuple[str, Any]] = set()
        found: dict[str, dict[str, Any]] = {}
        for name, stage in list(stages.items()):
            for label, tp, position, end in _partitions(name, stage):
                if end is None:
                    continue
                key = (name, tp)
                seen.add(key)
                marks = self.marks.setdefault(key, deque())
                if marks and end < marks[-1][0]:  # a shorter log than before: a new one
                    marks.clear()
                if end > position and (not marks or end > marks[-1][0]):
                    marks.append((end, now))
                    if len(marks) > MAX_MARKS:  # the first (the oldest wait) and the last kept
                        marks = self.marks[key] = deque([*list(marks)[:-1:2], marks[-1]])
                while marks and marks[0][0] <= position:
                    marks.popleft()
                row = found.setdefault(label, {"lag": 0, "behind_s": 0.0})
                row["lag"] += max(0, end - position)
                row["behind_s"] = max(row["behind_s"], round(now - marks[0][1], 1) if marks else 0.0)
        for key in self.marks.keys() - seen:  # revoked partitions, stopped stages
            del self.marks[key]
        self.stages = found
        self._health(found)

    def _health(self, found: dict[str, dict[str, Any]]) -> None:
        from atalaia.streams.guard import HEALTH

        health = self.health or HEALTH
        late = {
            label: row
            for label, row in found.items()
            if self.max_behind_s > 0 and row["behind_s"] > self.max_behind_s
        }
        for label in self.flagged - late.keys():
            health.condition(f"behind:{label}", None)
        for label, row in late.items():
            health.condition(
                f"behind:{label}",
                f"stage {label} is behind: {row['lag']} record(s) waiting, the oldest for "
                f"{row['behind_s']:.0f} s (more than ATALAIA_HEALTH_MAX_BEHIND_S, "
                f"{self.max_behind_s:g} s): what it produces comes that late",
            )
        self.flagged = set(late)


BEHIND = Behind()


class BehindWatch(Service):
    """Samples :data:`BEHIND` every ``interval`` seconds over the watched stages (a few dictionary
    reads per partition, off the stages' batch loops)."""

    def __init__(self, interval: float = 1.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.interval = interval

    async def on_start(self) -> None:
        self.add_future(self._watch())

    async def _watch(self) -> None:
        while not self.should_stop:
            await asyncio.sleep(self.interval)
            try:
                BEHIND.sample(dict(STAGES.stages))
            except Exception:  # /health never breaks a worker
                log.warning("stage lag not sampled for /health", exc_info=True)


#: the ``/health`` statuses, least to most serious (merging several processes' reports keeps the worst)
HEALTH_RANK = {"ok": 0, "degraded": 1, "starting": 2, "failed": 3}
#: the statuses of a process that serves now: ``degraded`` works, with conditions the body names
SERVING = frozenset({"ok", "degraded"})


def health_code(status: str) -> int:
    """The HTTP status ``/health`` answers with: 200 while the process serves (``ok``, or
    ``degraded``: it works, with conditions its body names, e.g. a broker reset it recovered from,
    kept for ``ATALAIA_RESET_ALERT_S``), 503 while it cannot (``starting``: a stage has no
    partitions yet; ``failed``: the broker does not answer, a wrong topic layout). As the health
    check response format for HTTP APIs (pass and warn are 2xx, fail is 5xx) and Kubernetes'
    readiness: a load balancer or a readiness probe that reads the code takes a process out of
    service only while it cannot serve, never for an incident it came through."""
    return 200 if status in SERVING else 503


def readiness(status: str) -> tuple[dict[str, Any], int]:
    """The ``/readyz`` body and status of a ``/health`` status: ``{"status": "ready"}`` 200 while
    the process serves, else 503 naming the status (``starting``, ``failed``) and nothing more
    (``/readyz`` is open: the reasons are on ``/health``, behind the metrics token)."""
    if status in SERVING:
        return {"status": "ready"}, 200
    return {"status": status if status in HEALTH_RANK else "failed"}, 503


def health_status(stages: dict[str, Any]) -> tuple[str, list[str]]:
    """This process's ``/health`` status and the conditions it names (broker problems and the
    others ``streams.guard.HEALTH`` holds; ``starting`` while a stage has no partitions yet)."""
    from atalaia.streams.guard import HEALTH

    status, problems = HEALTH.status()  # broker reset, wrong topic layout (streams.guard)
    if status != "failed" and not all(getattr(s, "assigned", True) for s in stages.values()):
        # a stage whose consumer group has not assigned it partitions yet processes nothing: not
        # serving yet, even with a condition already named (a process restarted after its
        # embedded broker died starts degraded)
        status = "starting"
    return status, problems


def health_report(stages: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The ``/health`` body and status (broker problems from ``streams.guard``, stages with their
    lag from :data:`BEHIND`)."""
    status, problems = health_status(stages)
    body = {
        "status": status,
        **({"problems": problems} if problems else {}),
        "stages": {
            n: {"processed": s.processed, "partitions": sorted(s.cores), **BEHIND.of(n)}
            for n, s in stages.items()
        },
    }
    return body, health_code(status)
