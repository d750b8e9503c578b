"""Seasonal profile: compare the point with what is usual at this time of day (and week)."""

from __future__ import annotations

import math
from datetime import datetime

from river import stats

from atalaia.detectors.base import Detector, clean, log_tail, scale_floor


class SeasonalProfile(Detector):
    """Exponentially weighted mean and mean absolute deviation per time-of-day bin
    (``bin_minutes`` wide; with ``weekly=True`` per hour-of-week bin). A bin scores only after
    ``min_per_bin`` points fell into it; the score is the log tail of the standardised
    deviation from the bin's profile. A young bin's spread is shrunk towards the spread of all
    bins, as if it held ``prior_points`` extra points of it.

    >>> from datetime import datetime, timedelta
    >>> t0 = datetime(2026, 1, 1)
    >>> det = SeasonalProfile(bin_minutes=60, min_per_bin=3, warmup=10)
    >>> for i in range(24 * 12 * 5):
    ...     t = t0 + timedelta(minutes=5 * i)
    ...     _ = det.score_learn(10.0 + t.hour + (i % 3) * 0.1, t)
    >>> det.score_one(13.1, t0.replace(hour=3)) < 0.2 < det.score_one(20.0, t0.replace(hour=3))
    True
    """

    def __init__(
        self,
        bin_minutes: int = 60,
        weekly: bool = False,
        fading: float = 0.1,
        min_per_bin: int = 3,
        prior_points: int = 5,
        warmup: int = 100,
    ) -> None:
        if not 1 <= bin_minutes <= 1440 or 1440 % bin_minutes:
            raise ValueError("bin_minutes must divide a day (1..1440)")
        self.bin_minutes = bin_minutes
        self.weekly = weekly
        self.fading = fading
        self.min_per_bin = min_per_bin
        self.prior_points = prior_points
        self.warmup = warmup
        self.n_seen = 0
        self._bins: dict[int, tuple[stats.EWMean, stats.EWMean, int]] = {}
        self._global = stats.EWMean(fading_factor=0.01)

    def _bin(self, t: datetime) -> int:
        b = (t.hour * 60 + t.minute) // self.bin_minutes
        if self.weekly:
            b += t.weekday() * (1440 // self.bin_minutes)
        return b

    def score_one(self, x: float, t: datetime) -> float:
        x = clean(x)
        if x is None or self.n_seen < self.warmup:
            return 0.0
        entry = self._bins.get(self._bin(t))
        if entry is None or entry[2] < self.min_per_bin:
            return 0.0
        mean, mad, n = entry
        # shrink a young bin's spread towards the all-bins spread (k pseudo-points of prior)
        k = self.prior_points
        local, pooled = mad.get(), self._global.get()
        blended = math.sqrt((n * local * local + k * pooled * pooled) / (n + k))
        spread = max(1.2533 * blended, scale_floor(mean.get()))
        return log_tail((x - mean.get()) / spread)

    def learn_one(self, x: float, t: datetime) -> None:
        x = clean(x)
        if x is None:
            return
        b = self._bin(t)
        entry = self._bins.get(b)
        if entry is None:
            entry = (stats.EWMean(fading_factor=self.fading), stats.EWMean(fading_factor=self.fading), 0)
        mean, mad, n = entry
        if n:
            dev = abs(x - mean.get())
            mad.update(dev)
            self._global.update(dev)
        mean.update(x)
        self._bins[b] = (mean, mad, n + 1)
        self.n_seen += 1
