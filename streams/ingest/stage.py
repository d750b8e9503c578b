"""The ingest stage core: ``atalaia.events`` → ``atalaia.observations`` (keyed by entity) +
``atalaia.dlq``. Thin: Kafka records → :class:`ReceivedPayload` → the ingest loop
(:func:`~atalaia.streams.ingest.batch.ingest_batch`) → outputs. No I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from atalaia.streams.clock import parse_time, utc
from atalaia.streams.ingest.batch import ReceivedPayload, ingest_batch
from atalaia.streams.ingest.dedup import Deduper
from atalaia.streams.ingest.encode import encode_observation
from atalaia.streams.ingest.events import RawEvent
from atalaia.streams.ingest.observation import Observation, partition_key
from atalaia.streams.ingest.options import IngestOptions
from atalaia.streams.metrics import count_ingest
from atalaia.streams.records import DLQ_MAX_BODY
from atalaia.streams.stage import Out

if TYPE_CHECKING:
    from atalaia.streams.settings import Settings


_last_received: list = [None, None]  # (received-at text, its time): the last one parsed


def received_at(ev: RawEvent, record: Any, default: datetime) -> datetime:
    """When Atalaia received the payload: the ``received-at`` header the HTTP/MQTT adapter wrote,
    else the Kafka record's timestamp, else ``default``. Stable across redeliveries of the record,
    so an observation timed by it (``time_source`` ``received``) is deduplicated on replay."""
    text = ev.received_at
    if text:
        if text == _last_received[0]:  # a batch's records mostly share it: parsed once
            return _last_received[1]
        try:
            t = parse_time(text)
        except ValueError:
            pass
        else:
            _last_received[:] = (text, t)
            return t
    ts = getattr(record, "timestamp", None)
    if isinstance(ts, int | float) and not isinstance(ts, bool) and ts > 0:
        return datetime.fromtimestamp(ts / 1000, UTC)
    return default


class IngestCore:
    """``atalaia.events`` → ``atalaia.observations`` (keyed by entity) + ``atalaia.dlq``.

    Redelivered notifications (same id and body) and observations (same entity, time and values)
    are dropped by a bounded deduper whose state is the checkpoint.
    """

    def __init__(self, settings: Settings, state: bytes | None = None) -> None:
        self.options = IngestOptions.from_settings(settings)
        self.dedup = Deduper.restore(state) if state else Deduper()
        self.duplicates = 0

    def restore(self, state: bytes) -> None:
        """The checkpoint is the deduper's state."""
        self.dedup = Deduper.restore(state)

    def process(self, records: list[Any], now: float) -> list[Out]:
        outs, fresh = self.observations(records, now, self.dedup)
        for obs, ts in fresh:
            outs.append(
                Out("observations", encode_observation(obs), key=partition_key(obs.__dict__), timestamp=ts)
            )
        return outs

    def observations(
        self, records: list[Any], now: float, deduper: Deduper | None, dedup_observations: bool = True
    ) -> tuple[list[Out], list[tuple[Observation, int | None]]]:
        """The events of a batch parsed: (DLQ outputs, ``(observation, ts)`` for the Observations
        not seen before, ``ts`` the Kafka timestamp of their event (ms, None if it has none: the
        produce → alarm latency is measured from it)). ``deduper`` drops redelivered
        notifications and, with ``dedup_observations``, observations seen before (the fused stage
        dedups observations by their id with the rules' deduper)."""
        received = utc(now)
        payloads = []
        for r in records:
            ev = RawEvent.from_record(r.value, r.headers)
            ts = r.timestamp if isinstance(r.timestamp, int) and r.timestamp > 0 else None  # produce time
            payloads.append(
                ReceivedPayload(
                    ev.body, ev.source, ev.content_type, ev.link, ev.extra, received_at(ev, r, received), ts
                )
            )
        res = ingest_batch(
            payloads,
            deduper=deduper,
            now=received,
            options=self.options,
            max_body_bytes=DLQ_MAX_BODY,
            dedup_observations=dedup_observations,
        )
        self.duplicates += res.counts["duplicates"]
        count_ingest(res.counts)
        outs = [Out("dlq", d) for d in res.dlq]
        return outs, list(zip(res.observations, res.timestamps, strict=True))

    def tick(self, now: float, backlog: bool = False) -> list[Out]:
        return []

    def snapshot(self) -> bytes:
        return self.dedup.snapshot()
