"""The ingest loop, once: a consumed batch -> parse, drop redelivered notifications and
observations, build DLQ records, count. The ingest stage core (``streams.ingest.stage``) and the
fused ingest + rules core (``rules.fused``) run it on their Kafka records.

    result = ingest_batch(events, deduper=deduper, options=options)
    publish(result.observations)   # atalaia.observations, keyed by observation.entity
    publish(result.dlq)            # atalaia.dlq
    metrics.update(result.counts)

Pure: ``received_at`` of each event (or ``now``) is the only clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from atalaia.streams.ingest.dedup import Deduper
from atalaia.streams.ingest.dlq import to_dlq_record
from atalaia.streams.ingest.observation import Observation
from atalaia.streams.ingest.options import IngestOptions
from atalaia.streams.ingest.payload import parse_payload


@dataclass(frozen=True, slots=True)
class ReceivedPayload:
    """One received payload, as the HTTP endpoint, the MQTT client or a Kafka record gives it."""

    body: bytes
    source: str = "kafka"
    content_type: str | None = None
    link: str | None = None
    headers: Mapping[str, str] | None = None
    received_at: datetime | None = None
    timestamp: int | None = None  # the Kafka record's produce time (ms), passed on to its observations


@dataclass(slots=True)
class BatchResult:
    observations: list[Observation] = field(default_factory=list)  # new ones only (redeliveries removed)
    timestamps: list[int | None] = field(default_factory=list)  # per observation: its payload's timestamp
    dlq: list[bytes] = field(default_factory=list)  # one record per payload with anything refused
    counts: Counter[str] = field(
        default_factory=Counter
    )  # payloads, observations, duplicates, refused:<code> ...


def ingest_batch(
    events: Iterable[ReceivedPayload],
    *,
    deduper: Deduper | None = None,
    now: datetime | float | None = None,
    options: IngestOptions | None = None,
    max_body_bytes: int | None = None,
    dedup_observations: bool = True,
) -> BatchResult:
    """Normalise a batch. Counter keys: ``payloads``, ``payloads_refused``, ``observations``,
    ``duplicates`` (observations dropped as redeliveries), ``notifications_redelivered``,
    ``warnings``, ``ignored`` and ``refused:<code>`` per rejection kind.

    ``deduper`` drops a redelivered notification (same id and body) whole, and, unless
    ``dedup_observations`` is off (the fused stage dedups observations by their id itself),
    observations seen before. ``max_body_bytes`` bounds the original bytes a DLQ record keeps."""
    out = BatchResult()
    counts = out.counts  # the rare keys; the per-payload ones are summed here and added at the end
    payloads = warnings = ignored = kept = duplicates = 0
    for ev in events:
        r = parse_payload(
            ev.body,
            content_type=ev.content_type,
            link=ev.link,
            headers=ev.headers,
            source=ev.source,
            received_at=ev.received_at,
            options=options,
        )
        payloads += 1
        clock = ev.received_at or now
        if deduper is not None:
            if clock is None:
                raise ValueError("deduplication needs a clock: give each event received_at, or pass now")
            if r.notification_id and not deduper.admit_notification(r.notification_id, r.digest, now=clock):
                counts["notifications_redelivered"] += 1
                duplicates += len(r.observations)
                continue
        warnings += len(r.warnings)
        ignored += len(r.ignored)
        if r.rejections:
            if not r.ok:
                counts["payloads_refused"] += 1
            for x in r.rejections:
                counts[f"refused:{x.code}"] += 1
            out.dlq.append(
                to_dlq_record(
                    ev.body,
                    ev.source,
                    [str(x) for x in r.rejections],
                    rejections=r.rejections,
                    content_type=ev.content_type,
                    received_at=ev.received_at,
                    headers=ev.headers,
                    max_body_bytes=max_body_bytes,
                )
            )
        observations = r.observations
        if deduper is not None and dedup_observations and observations:
            fresh = deduper.admit(observations, now=clock)  # type: ignore[arg-type]
            duplicates += len(observations) - len(fresh)
            observations = fresh
        if observations:
            kept += len(observations)
            out.observations.extend(observations)
            out.timestamps.extend([ev.timestamp] * len(observations))
    if payloads:
        counts.update(
            payloads=payloads, warnings=warnings, ignored=ignored, observations=kept, duplicates=duplicates
        )
    return out
