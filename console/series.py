"""Recent observations behind each alarm, for the incident page's small charts.

The console keeps a bounded ring buffer in memory: per (entity, attribute) the latest ``POINTS``
values, for at most ``SERIES`` series (the least recently fed one is dropped beyond that), so at
most ``POINTS × SERIES`` points whatever the traffic. It is fed by a group-less consumer of
``atalaia.observations`` (every console instance sees every partition; nothing is committed) that
starts ``BACKFILL`` records before the end of each partition, so a console that just started still
has the recent past. Reading a series is a dictionary lookup: ``GET /api/incidents/{id}/series``
answers in well under a millisecond of work whatever the length of the topic.

Points are kept in time order: an observation older than the newest point of its series (late, or
read again after a reconnect) is left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from datetime import datetime
from typing import Any

from mode import Service

from atalaia.console.consumer import assigned_consumer, consume_retrying
from atalaia.streams.ingest.observation import decode_observation, entity_key
from atalaia.streams.records import DecodeError

log = logging.getLogger(__name__)

POINTS = 120  # per series
SERIES = 2000  # series kept
BACKFILL = 2000  # records read back per partition when the consumer starts


class RingStore:
    """Per (entity key, attribute) the latest ``points`` (epoch seconds, value), ``series`` at most."""

    def __init__(self, points: int = POINTS, series: int = SERIES) -> None:
        self.points, self.series = points, series
        self.data: OrderedDict[tuple[str, str], deque[tuple[float, float]]] = OrderedDict()
        self.dropped_series = 0

    def add(self, key: str, attribute: str, t: float, value: float) -> None:
        k = (key, attribute)
        q = self.data.get(k)
        if q is None:
            q = self.data[k] = deque(maxlen=self.points)
            if len(self.data) > self.series:
                self.data.popitem(last=False)
                self.dropped_series += 1
        elif q and t <= q[-1][0]:
            return  # late or seen again: keep time order
        else:
            self.data.move_to_end(k)
        q.append((t, value))

    def add_observation(self, o: dict[str, Any]) -> int:
        """Add the numeric attributes of one decoded observation; returns how many points."""
        entity, attrs, when = o.get("entity"), o.get("attributes"), o.get("time")
        if not isinstance(entity, str) or not isinstance(attrs, dict) or not isinstance(when, str):
            return 0
        try:
            t = datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0
        key = entity_key(o.get("tenant"), entity)
        n = 0
        for name, v in attrs.items():
            if isinstance(v, int | float) and not isinstance(v, bool) and v == v:  # not NaN
                self.add(key, str(name), t, float(v))
                n += 1
        return n

    def get(self, key: str, attribute: str, limit: int | None = None) -> list[tuple[float, float]]:
        q = self.data.get((key, attribute))
        if not q:
            return []
        pts = list(q)
        return pts[-limit:] if limit else pts

    def attributes(self, key: str) -> list[str]:
        """The attributes kept for an entity (for an alarm whose rule names none)."""
        return [a for (k, a) in self.data if k == key]

    def __len__(self) -> int:
        return sum(len(q) for q in self.data.values())


class ObservationBuffer(Service):
    """Feeds a :class:`RingStore` from ``atalaia.observations``."""

    def __init__(
        self, bootstrap: str, topic: str, store: RingStore | None = None, backfill: int = BACKFILL, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.bootstrap, self.topic, self.backfill = bootstrap, topic, backfill
        self.store = store or RingStore()
        self.connected = False

    async def on_start(self) -> None:
        self.add_future(self._run())

    async def _run(self) -> None:
        await consume_retrying(self, self._consume, log, "console observation buffer")

    async def _consume(self) -> None:
        async with assigned_consumer(self.bootstrap, self.topic, fetch_max_wait_ms=100) as (consumer, tps):
            try:
                ends = await consumer.end_offsets(tps)
                starts = await consumer.beginning_offsets(tps)
                for tp in tps:  # the recent past, bounded
                    consumer.seek(tp, max(starts.get(tp, 0), ends.get(tp, 0) - self.backfill))
                self.connected = True
                while not self.should_stop:
                    batches = await consumer.getmany(timeout_ms=500, max_records=2000)
                    for records in batches.values():
                        for r in records:
                            with contextlib.suppress(DecodeError):  # not an observation: skipped
                                self.store.add_observation(decode_observation(r.value or b""))
                    if batches:
                        await asyncio.sleep(0)  # let the web server answer between batches
            finally:
                self.connected = False
