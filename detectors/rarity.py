"""Rarity: how often has this series produced a raw score this high? (its own history)

A raw anomaly score means different things on different series: a new record is news on a
quiet series and routine on one that keeps drifting to new highs. ``Rarity`` re-expresses a
raw score as the surprise of its tail frequency in the series' own past: with ``p`` the
(exponentially forgotten) fraction of past points whose raw score was at least as high, the
score is ``log(1/p) / log(horizon)``, so 1 means "rarer than once per ``horizon`` points" and
0.5 "once per √horizon points" on every series alike. Before the series has a long history
the score cannot claim more rarity than its length supports (``p ≥ 1/(n+1)``). Raw scores
are binned on their logit (``1/bins_per_unit`` wide), in constant memory.
"""

from __future__ import annotations

import math
from datetime import datetime

from atalaia.detectors.base import Detector, clean

_ZMAX = 30.0


class Rarity(Detector):
    """Tail frequency of ``inner``'s raw score in the series' own history, on a log scale.

    >>> from datetime import datetime, timedelta
    >>> from atalaia.detectors.novelty import RecordNovelty
    >>> t0 = datetime(2026, 1, 1)
    >>> det = Rarity(RecordNovelty(features=["value"], warmup=20), horizon=1000)
    >>> scores = [det.score_learn(5.0 + (i % 7) * 0.1, t0 + timedelta(minutes=i)) for i in range(600)]
    >>> max(scores[100:]) < 0.3 < 0.8 < det.score_one(20.0, t0 + timedelta(minutes=600))
    True
    """

    def __init__(self, inner: Detector, horizon: int = 5000, bins_per_unit: float = 1.0) -> None:
        self.inner = inner
        self.horizon = horizon
        self.bins_per_unit = bins_per_unit
        self.warmup = inner.warmup
        self.n_seen = 0
        self._growth = 1.0 / (1.0 - 1.0 / horizon)
        self._nbins = int(_ZMAX * bins_per_unit) + 2  # bin 0: raw below 0.5
        # forgetting without touching every bin: each new point weighs ``growth`` times the
        # previous one; counts are rescaled when the weights grow large
        self._counts = [0.0] * self._nbins
        self._total = 0.0
        self._w = 1.0
        self._cache: tuple[float, datetime, float] | None = None

    def _bin(self, raw: float) -> int:
        if raw < 0.5:
            return 0
        z = _ZMAX if raw >= 1.0 else min(_ZMAX, math.log(raw / (1.0 - raw)))
        return 1 + int(z * self.bins_per_unit)

    def _score(self, raw: float) -> float:
        b = self._bin(raw)
        if b == 0:
            return 0.0
        tail = sum(self._counts[b:])
        p = (tail + self._w) / (self._total + self._w)
        return min(1.0, max(0.0, math.log(1.0 / p) / math.log(self.horizon)))

    def _raw(self, x: float, t: datetime) -> float:
        c = self._cache
        if c is not None and c[0] == x and c[1] == t:
            return c[2]
        raw = self.inner.score_one(x, t)
        self._cache = (x, t, raw)
        return raw

    def score_one(self, x: float, t: datetime) -> float:
        x = clean(x)
        if x is None or self.inner.n_seen < self.inner.warmup:
            return 0.0
        return self._score(self._raw(x, t))

    def learn_one(self, x: float, t: datetime) -> None:
        x = clean(x)
        if x is None:
            return
        if self.inner.n_seen >= self.inner.warmup:
            raw = self._raw(x, t)
            self._w *= self._growth
            self._counts[self._bin(raw)] += self._w
            self._total += self._w
            if self._w > 1e100:
                self._counts = [c / self._w for c in self._counts]
                self._total /= self._w
                self._w = 1.0
        self._cache = None
        self.inner.learn_one(x, t)
        self.n_seen += 1
