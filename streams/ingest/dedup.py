"""Recognise redeliveries: the same observation (entity + type + time + values) or the same
notification delivered twice (same notification id and byte-identical body).

A pure, bounded state machine: memory is capped by ``max_entries`` (least recently seen evicted
first) and by ``horizon_s`` (entries older than that, on the injected clock, are forgotten). The
clock is whatever the caller passes as ``now`` (the Kafka record timestamp, the reception time); it
never moves backwards inside the Deduper. ``snapshot()``/``restore()`` round-trip the state exactly,
so a worker restart recovers the same decisions.

>>> from datetime import datetime, UTC
>>> from atalaia.streams.observation import Observation
>>> o = Observation(time="2026-01-28T09:45:00Z", entity="e1", type="WaterObserved", attributes={"height": 3.2})
>>> d = Deduper(horizon_s=3600)
>>> [x.entity for x in d.admit([o, o], now=0.0)]
['e1']
>>> Deduper.restore(d.snapshot()).admit([o], now=1.0)
[]
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime

import orjson

from atalaia.streams.observation import Observation, format_time, observation_id

_VERSION = 1


def _seconds(now: float | datetime) -> float:
    return now.timestamp() if isinstance(now, datetime) else float(now)


def observation_key(o: Observation) -> str:
    """Identity of a delivery: NGSI-v2 identity is id + type, so the type is part of it."""
    return f"{o.type}\x1f{observation_id(o.entity, format_time(o.time), o.attributes)}"


class Deduper:
    def __init__(self, horizon_s: float = 3600.0, max_entries: int = 200_000) -> None:
        if horizon_s <= 0 or max_entries <= 0:
            raise ValueError("horizon_s and max_entries must be positive")
        self.horizon_s = float(horizon_s)
        self.max_entries = int(max_entries)
        self.clock = float("-inf")
        self._seen: OrderedDict[str, float] = OrderedDict()  # key -> last seen (clock seconds)

    def __len__(self) -> int:
        return len(self._seen)

    def _tick(self, now: float | datetime) -> float:
        t = _seconds(now)
        if t > self.clock:
            self.clock = t
        cutoff = self.clock - self.horizon_s
        seen = self._seen
        while seen:
            key, ts = next(iter(seen.items()))
            if ts >= cutoff:
                break
            del seen[key]
        return self.clock

    def _check(self, key: str, t: float) -> bool:
        """True when ``key`` is new (and remember it); False for a redelivery."""
        seen = self._seen
        if key in seen:
            seen.move_to_end(key)
            seen[key] = t
            return False
        seen[key] = t
        if len(seen) > self.max_entries:
            seen.popitem(last=False)
        return True

    def admit(self, observations: Iterable[Observation], *, now: float | datetime) -> list[Observation]:
        """The observations of this batch not seen before (within the horizon), in order."""
        t = self._tick(now)
        check = self._check
        return [o for o in observations if check(observation_key(o), t)]

    def admit_notification(self, notification_id: str | None, digest: str, *, now: float | datetime) -> bool:
        """False when this exact notification (id + body digest) was already admitted."""
        if not notification_id:
            return True
        return self._check(f"notification\x1f{notification_id}\x1f{digest}", self._tick(now))

    def snapshot(self) -> bytes:
        return orjson.dumps(
            {
                "v": _VERSION,
                "horizon_s": self.horizon_s,
                "max_entries": self.max_entries,
                "clock": self.clock if self.clock != float("-inf") else None,
                "seen": list(self._seen.items()),
            }
        )

    @classmethod
    def restore(cls, data: bytes) -> Deduper:
        state = orjson.loads(data)
        if not isinstance(state, dict) or state.get("v") != _VERSION:
            raise ValueError("not a Deduper snapshot (or an unknown version)")
        d = cls(state["horizon_s"], state["max_entries"])
        d.clock = float("-inf") if state["clock"] is None else float(state["clock"])
        d._seen = OrderedDict((k, float(ts)) for k, ts in state["seen"])
        return d
