"""Rolling-statistics detectors: how far is the point from its recent distribution?"""

from __future__ import annotations

import math
from collections import deque
from datetime import datetime

from river import stats

from atalaia.detectors.base import Detector, clean, log_tail, scale_floor, two_sided_tail

FEATURES = ("value", "diff")


class _Feature:
    """The value itself, or its change since the previous point (None after a gap)."""

    def __init__(self, feature: str, max_gap: float) -> None:
        if feature not in FEATURES:
            raise ValueError(f"feature must be one of {FEATURES}, not {feature!r}")
        self.feature = feature
        self.max_gap = max_gap
        self.prev: float | None = None
        self.prev_t: datetime | None = None
        self.step: float | None = None  # typical seconds between points (EW median-ish)

    def of(self, x: float, t: datetime) -> float | None:
        if self.feature == "value":
            return x
        if self.prev is None or self.gap(t):
            return None
        return x - self.prev

    def gap(self, t: datetime) -> bool:
        if self.prev_t is None or self.step is None:
            return False
        dt = (t - self.prev_t).total_seconds()
        return dt > self.max_gap * self.step

    def learn(self, x: float, t: datetime) -> None:
        if self.prev_t is not None:
            dt = (t - self.prev_t).total_seconds()
            if dt > 0:
                self.step = dt if self.step is None else min(dt, 0.9 * self.step + 0.1 * dt)
        self.prev, self.prev_t = x, t


class GaussianTail(Detector):
    """Gaussian tail probability of the point against a sliding window (NAB's windowed
    Gaussian), or, with ``robust=True``, against the window's median and IQR.

    ``feature="diff"`` scores the change since the previous point instead (a change across a
    time gap longer than ``max_gap`` typical steps is not scored).

    >>> from datetime import datetime, timedelta
    >>> t0 = datetime(2026, 1, 1)
    >>> det = GaussianTail(window=50, warmup=10)
    >>> for i in range(60):
    ...     _ = det.score_learn(10.0 + (i % 5) * 0.1, t0 + timedelta(minutes=5 * i))
    >>> det.score_one(10.2, t0) < 0.9 < det.score_one(25.0, t0)
    True
    """

    def __init__(
        self,
        window: int = 400,
        warmup: int = 30,
        robust: bool = False,
        feature: str = "value",
        max_gap: float = 10.0,
        scale: str = "prob",
    ) -> None:
        if scale not in ("prob", "log"):
            raise ValueError(f"scale must be 'prob' or 'log', not {scale!r}")
        if not (isinstance(window, int) and window >= 2) or not (isinstance(warmup, int) and warmup >= 0):
            raise ValueError(f"window must be an integer >= 2 and warmup >= 0, not {window!r} and {warmup!r}")
        self.scale = scale
        self.window = window
        self.warmup = warmup
        self.robust = robust
        self.feat = _Feature(feature, max_gap)
        self.n_seen = 0
        self._n = 0
        if robust:
            self._median = stats.RollingQuantile(0.5, window)
            self._iqr = stats.RollingIQR(q_inf=0.25, q_sup=0.75, window_size=window)
            self._mad = stats.EWMean(fading_factor=0.02)  # fallback spread when IQR is 0
        else:
            self._buf: deque[float] = deque()
            self._shift = 0.0
            self._sum = 0.0
            self._sumsq = 0.0
            self._since = 0

    def _centre_spread(self) -> tuple[float, float]:
        if self.robust:
            centre = self._median.get()
            spread = self._iqr.get() / 1.349
            spread = max(spread, 1.2533 * self._mad.get())
        else:
            n = len(self._buf)
            shifted = self._sum / n  # sums are of (f - shift): no cancellation at large levels
            centre = self._shift + shifted
            spread = math.sqrt(max(self._sumsq / n - shifted * shifted, 0.0))
        return centre, max(spread, scale_floor(centre))

    def z(self, x: float, t: datetime) -> float | None:
        """Standardised deviation of the point's feature, None while it cannot be judged."""
        x = clean(x)
        if x is None or self.n_seen < self.warmup or self._n == 0:
            return None
        f = self.feat.of(x, t)
        if f is None:
            return None
        centre, spread = self._centre_spread()
        return (f - centre) / spread

    def score_one(self, x: float, t: datetime) -> float:
        z = self.z(x, t)
        if z is None:
            return 0.0
        return two_sided_tail(z) if self.scale == "prob" else log_tail(z)

    def learn_one(self, x: float, t: datetime) -> None:
        x = clean(x)
        if x is None:
            return
        f = self.feat.of(x, t)
        self.feat.learn(x, t)
        self.n_seen += 1
        if f is None:
            return
        self._n += 1
        if self.robust:
            if self._n > 1:
                self._mad.update(abs(f - self._median.get()))
            self._median.update(f)
            self._iqr.update(f)
            return
        if not self._buf:
            self._shift = f
        self._buf.append(f)
        d = f - self._shift
        self._sum += d
        self._sumsq += d * d
        if len(self._buf) > self.window:
            old = self._buf.popleft() - self._shift
            self._sum -= old
            self._sumsq -= old * old
        self._since += 1
        if self._since >= self.window:  # re-centre and cancel floating-point drift
            self._shift = math.fsum(self._buf) / len(self._buf)
            self._sum = math.fsum(v - self._shift for v in self._buf)
            self._sumsq = math.fsum((v - self._shift) ** 2 for v in self._buf)
            self._since = 0
