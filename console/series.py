"""Recent observations behind each alarm, for the incident page's small charts.

The console keeps a bounded ring buffer in memory: per (entity, attribute) the latest ``POINTS``
values, for at most ``SERIES`` series of each tenant (the tenant's least recently fed one is dropped
beyond that) and ``TOTAL_SERIES`` in all, so at most ``POINTS × TOTAL_SERIES`` points whatever the
traffic. Beyond the total a new series pushes out a series of the tenant that holds the most (its
least recently fed): one tenant's sensors, however many, never push another tenant's series out
while that tenant holds fewer (the buffer was one list for every tenant, so a tenant's flood emptied
the others' charts). It is fed by a group-less consumer of
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
SERIES = 2000  # series kept per tenant
TOTAL_SERIES = 4000  # series kept in all (over every tenant): about 90 MB at 120 points each
BACKFILL = 2000  # records read back per partition when the consumer starts


class RingStore:
    """Per (entity key, attribute) the latest ``points`` (epoch seconds, value, unit code or None);
    per tenant (the
    entity key's tenant part) ``series`` at most, and ``total`` over all tenants."""

    def __init__(self, points: int = POINTS, series: int = SERIES, total: int = TOTAL_SERIES) -> None:
        self.points, self.series, self.total = points, series, max(total, 1)
        #: per tenant ("" without one), its series, least recently fed first
        self.tenants: dict[str, OrderedDict[tuple[str, str], deque[tuple[float, float, str | None]]]] = {}
        # the tenants holding each number of series, and the largest number (the fair eviction's
        # victim in O(1): a count moves by one at a time)
        self._holding: dict[int, set[str]] = {}
        self._most = 0
        self.kept = 0  # series in all
        self.dropped_series = 0

    def _move(self, tenant: str, before: int, after: int) -> None:
        if before:
            group = self._holding[before]
            group.discard(tenant)
            if not group:
                del self._holding[before]
                if self._most == before and after < before:
                    self._most = after
        if after:
            self._holding.setdefault(after, set()).add(tenant)
            self._most = max(self._most, after)
        else:
            self.tenants.pop(tenant, None)

    def _drop_oldest(self, tenant: str) -> None:
        data = self.tenants[tenant]
        data.popitem(last=False)
        self.kept -= 1
        self.dropped_series += 1
        self._move(tenant, len(data) + 1, len(data))

    def add(self, key: str, attribute: str, t: float, value: float, unit: str | None = None) -> None:
        k = (key, attribute)
        tenant = tenant_of(key)
        data = self.tenants.get(tenant)
        q = data.get(k) if data is not None else None
        if q is None:
            if data is None:
                data = self.tenants[tenant] = OrderedDict()
            if len(data) >= self.series:
                self._drop_oldest(tenant)  # the tenant's own bound: its least recently fed
            elif self.kept >= self.total:
                # every tenant's together: one of the tenant holding the most (this one on a tie)
                most = self._holding[self._most]
                self._drop_oldest(tenant if tenant in most else next(iter(most)))
            self.tenants[tenant] = data  # (a tenant whose last series went is forgotten meanwhile)
            q = data[k] = deque(maxlen=self.points)
            self.kept += 1
            self._move(tenant, len(data) - 1, len(data))
        elif q and t <= q[-1][0]:
            return  # late or seen again: keep time order
        else:
            data.move_to_end(k)
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
        q = self.tenants.get(tenant_of(key), {}).get((key, attribute))
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
        return [a for (k, a) in self.tenants.get(tenant_of(key), {}) if k == key]

    def held(self, tenant: str | None = None) -> int:
        """How many series are kept: of ``tenant`` ("" for none), or in all."""
        return self.kept if tenant is None else len(self.tenants.get(tenant, ()))

    def __len__(self) -> int:
        return sum(len(q) for data in self.tenants.values() for q in data.values())


def tenant_of(key: str) -> str:
    """The tenant part of an :func:`entity_key` ("" for none): everything before the first
    unescaped ``|`` (as written in the key, escapes and all: it only groups the key's series)."""
    if "\\" not in key:
        i = key.find("|")
        return key[:i] if i > 0 else ""
    i = 0
    while i < len(key):
        if key[i] == "\\":
            i += 2
        elif key[i] == "|":
            return key[:i]
        else:
            i += 1
    return ""


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
