"""Stage cores: thin adapters between Kafka records and the pure cores of each package.

Each core turns a batch of consumer records into output records (``Out``) and can snapshot its
state; ``streams.stage.BatchStage`` drives them. No I/O here.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from atalaia.streams.events import RawEvent
from atalaia.streams.stage import Out

log = logging.getLogger(__name__)


def _ts(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


class IngestCore:
    """``atalaia.events`` → ``atalaia.observations`` (keyed by entity) + ``atalaia.dlq``.

    Redeliveries (same entity, time and values) are dropped by a bounded deduper whose state is
    part of the checkpoint.
    """

    def __init__(self, settings: Any, state: bytes | None = None) -> None:
        from atalaia.streams.ingest import Deduper

        self.settings = settings
        self.dedup = Deduper.restore(state) if state else Deduper()
        self.duplicates = 0

    def process(self, records: list[Any], now: float) -> list[Out]:
        from atalaia.streams.ingest import parse_payload, to_dlq_record

        outs: list[Out] = []
        received = _ts(now)
        for r in records:
            ev = RawEvent.from_record(r.value, r.headers)
            headers = dict(ev.extra or {})
            res = parse_payload(ev.body, content_type=ev.content_type, link=ev.link, headers=headers,
                                source=ev.source, received_at=received,
                                max_bytes=self.settings.max_payload_bytes)
            for rej in res.rejections:
                outs.append(Out("dlq", to_dlq_record(ev.body, source=ev.source, reason=rej.reason,
                                                     content_type=ev.content_type, rejection=rej,
                                                     received_at=ev.received_at)))
            for obs in res.observations:
                d = obs.to_dict()
                if not self.dedup.add(d["id"], obs.time):
                    self.duplicates += 1
                    continue
                outs.append(Out("observations", orjson.dumps(d), key=obs.entity.encode()))
        return outs

    def tick(self, now: float) -> list[Out]:
        return []

    def snapshot(self) -> bytes:
        return self.dedup.snapshot()
