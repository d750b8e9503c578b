"""Recent observations behind each alarm, for the incident page's small charts.

The console keeps a bounded ring buffer in memory: per (entity, attribute) the latest ``POINTS``
values, for at most ``SERIES`` series (the least recently fed one is dropped beyond that), so at
most ``POINTS × SERIES`` points whatever the traffic. It is fed by a group-less consumer of
``atalaia.observations`` (every console instance sees every partition; nothing is committed) that
starts ``BACKFILL`` records before the end of each partition, so a console that just started still
has the recent past. Reading a series is a dictionary lookup: ``GET /api/incidents/{id}/series``
answers in well under a millisecond of work whatever the length of the topic.

Points are kept in time order: an observation older than the newest point of its series (late, or
read again after a reconnect) is left out. Each point keeps the unit code it came with (its
``units`` entry, else the one its Smart Data Models type documents), so a series is read in the
rule's unit as the rules read it: a gauge reporting 1.71 in MTR is 171 under a rule in cm, and a
reading whose unit does not convert (which the rules refuse) is left out of the chart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import OrderedDict, deque
from datetime import datetime
from typing import Any

from mode import Service

from atalaia.console.consumer import assigned_consumer, consume_retrying
from atalaia.rules.sdm import documented_unit
from atalaia.rules.units import converter
from atalaia.streams.ingest.observation import decode_observation, entity_key
from atalaia.streams.records import DecodeError

log = logging.getLogger(__name__)

POINTS = 120  # per series
SERIES = 2000  # series kept
BACKFILL = 2000  # records read back per partition when the consumer starts


class RingStore:
    """Per (entity key, attribute) the latest ``points`` (epoch seconds, value, unit code or None),
    ``series`` at most."""

    def __init__(self, points: int = POINTS, series: int = SERIES) -> None:
        self.points, self.series = points, series
        self.data: OrderedDict[tuple[str, str], deque[tuple[float, float, str | None]]] = OrderedDict()
        self.dropped_series = 0

    def add(self, key: str, attribute: str, t: float, value: float, unit: str | None = None) -> None:
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
        q.append((t, value, unit))

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
        units = o.get("units") if isinstance(o.get("units"), dict) else {}
        kind = o.get("type") if isinstance(o.get("type"), str) else None
        n = 0
        for name, v in attrs.items():
            if isinstance(v, int | float) and not isinstance(v, bool) and v == v:  # not NaN
                code = units.get(name)
                if not isinstance(code, str):
                    code = documented_unit(kind, str(name)) if kind else None
                self.add(key, str(name), t, float(v), code)
                n += 1
        return n

    def get(
        self, key: str, attribute: str, limit: int | None = None, unit: str | None = None
    ) -> list[tuple[float, float]]:
        """The latest points, oldest first, as (epoch seconds, value). With ``unit`` (the rule's),
        each value is converted from the unit it came in, as the rules convert it (one without a
        unit is taken as it is); a point whose unit does not convert is left out."""
        q = self.data.get((key, attribute))
        if not q:
            return []
        if unit is None:
            pts = [(t, v) for t, v, _ in q]
        else:
            pts = []
            for t, v, code in q:
                conv = converter(code, unit, attribute) if code is not None else None
                if isinstance(conv, str):
                    continue  # not convertible: the rules refused it too
                x = conv(v) if conv is not None else v
                if math.isfinite(x):
                    pts.append((t, x))
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
