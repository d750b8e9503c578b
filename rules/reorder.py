"""Event-time reorder buffer for label-keyed rules.

Observations of one parish come from many entities, hence from many partitions, and reach the
``rules-shared`` stage in arrival order, not event-time order. The buffer holds them until the
event-time watermark (newest time seen − ``slack_s``) passes them, then releases them sorted by
time, so windows and ``for`` durations see the same sequence a replay of the file would. When
nothing arrives for ``idle_s`` (wall clock) everything left is released: a quiet stream is not
held back. A buffer just started or restored (on another worker, after a takeover) counts its
idle time from then, not from the last arrival it never saw. Pure: the caller supplies the
clock; the buffer is part of the stage checkpoint.

Each observation may travel with its record's Kafka timestamp (ms: when its event was received),
which the stage writes as a DLQ record's ``received_at`` if the rules refuse the observation once
released (``push_stamped`` / ``flush_idle_stamped``); the checkpoint keeps them under ``stamps``,
beside the heap, so a checkpoint without them (older) restores, and an older version restores
this one.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

import orjson

from atalaia.streams.clock import parse_time


class Reorder:
    def __init__(self, slack_s: float, idle_s: float, max_ahead_s: float = 300.0) -> None:
        self.slack_s, self.idle_s, self.max_ahead_s = slack_s, idle_s, max_ahead_s
        self.heap: list[tuple[float, int, bytes]] = []
        self.watermark = float("-inf")
        self.seq = 0
        self.last_arrival = float("-inf")
        self.stamps: dict[int, int] = {}  # seq -> the record's Kafka timestamp (ms), when it had one

    def __len__(self) -> int:
        return len(self.heap)

    def push(self, observations: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        """Add a batch; return what the watermark now releases, oldest first."""
        return [obs for obs, _ in self.push_stamped(observations, None, now)]

    def push_stamped(
        self, observations: list[dict[str, Any]], stamps: Iterable[int | None] | None, now: float
    ) -> list[tuple[dict[str, Any], int | None]]:
        """``push`` with each observation's record timestamp (``stamps``, in order; None: none):
        returns (observation, its timestamp) pairs."""
        for obs, stamp in zip(observations, stamps or (None,) * len(observations), strict=True):
            try:
                t = parse_time(obs["time"]).timestamp()
            except (KeyError, TypeError, ValueError):
                t = self.watermark  # the engine rejects it with a reason
            # a clock-skewed sensor (time far ahead of the wall clock) must not drag the
            # watermark forward and release everyone else unordered
            self.watermark = max(self.watermark, min(t, now + self.max_ahead_s))
            heapq.heappush(self.heap, (t, self.seq, orjson.dumps(obs)))
            if stamp is not None:
                self.stamps[self.seq] = stamp
            self.seq += 1
        if observations:
            self.last_arrival = now
        return self._release(self.watermark - self.slack_s)

    def flush_idle(self, now: float) -> list[dict[str, Any]]:
        return [obs for obs, _ in self.flush_idle_stamped(now)]

    def flush_idle_stamped(self, now: float) -> list[tuple[dict[str, Any], int | None]]:
        if self.last_arrival == float("-inf"):
            # just started or restored (another worker's checkpoint, after a takeover): the
            # stream has not been idle, it has not been heard yet. Flushing now would release
            # the checkpointed observations ahead of the older ones the takeover replays next
            self.last_arrival = now
            return []
        if self.heap and now - self.last_arrival >= self.idle_s:
            return self._release(float("inf"))
        return []

    def _release(self, upto: float) -> list[tuple[dict[str, Any], int | None]]:
        out = []
        heap, stamps = self.heap, self.stamps
        while heap and heap[0][0] <= upto:
            _, seq, obs = heapq.heappop(heap)
            out.append((orjson.loads(obs), stamps.pop(seq, None) if stamps else None))
        return out

    def snapshot(self) -> bytes:
        return orjson.dumps(
            {
                "heap": [[t, s, o.decode()] for t, s, o in self.heap],
                "watermark": None if self.watermark == float("-inf") else self.watermark,
                "seq": self.seq,
                "stamps": {str(seq): ms for seq, ms in self.stamps.items()},
            }
        )

    @classmethod
    def restore(cls, data: bytes, slack_s: float, idle_s: float, max_ahead_s: float = 300.0) -> Reorder:
        r = cls(slack_s, idle_s, max_ahead_s)
        d = orjson.loads(data)
        r.heap = [(t, s, o.encode()) for t, s, o in d["heap"]]
        heapq.heapify(r.heap)
        r.watermark = float("-inf") if d["watermark"] is None else d["watermark"]
        r.seq = d["seq"]
        r.stamps = {int(seq): ms for seq, ms in (d.get("stamps") or {}).items()}
        return r
