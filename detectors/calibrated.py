"""Wrap any detector in the anomaly-likelihood calibration (and a range check)."""

from __future__ import annotations

from datetime import datetime

from atalaia.detectors.base import Detector, clean, clip01, scale_floor
from atalaia.detectors.calibration import AnomalyLikelihood


class Calibrated(Detector):
    """``inner``'s raw scores, re-expressed as a log anomaly likelihood (see
    ``AnomalyLikelihood``). With ``range_tolerance`` set, a value beyond everything seen so
    far by more than that fraction of the seen range scores 1 (Numenta's "spatial anomaly").

    >>> from datetime import datetime, timedelta
    >>> from atalaia.detectors.gaussian import GaussianTail
    >>> t0 = datetime(2026, 1, 1)
    >>> det = Calibrated(GaussianTail(window=100, warmup=10, scale="log"), long_window=500,
    ...                  min_samples=50, range_tolerance=0.05)
    >>> scores = [det.score_learn(5.0 + (i % 4), t0 + timedelta(minutes=i)) for i in range(200)]
    >>> max(scores[60:]) < 0.5, det.score_one(40.0, t0)
    (True, 1.0)
    """

    def __init__(
        self,
        inner: Detector,
        short_window: int = 10,
        long_window: int = 2000,
        min_samples: int = 100,
        min_std: float = 0.02,
        suppress_for: int = 0,
        suppress_to: float = 0.0,
        alert: float = 0.5,
        range_tolerance: float | None = None,
        range_warmup: int = 0,
    ) -> None:
        self.inner = inner
        self.cal = AnomalyLikelihood(
            short_window=short_window,
            long_window=long_window,
            min_samples=min_samples,
            min_std=min_std,
            alert=alert,
            suppress_for=suppress_for,
            suppress_to=suppress_to,
        )
        self.warmup = max(inner.warmup, min_samples)
        self.n_seen = 0
        self.range_tolerance = range_tolerance
        self.range_warmup = range_warmup
        self._lo: float | None = None
        self._hi: float | None = None
        self._cache: tuple[float, datetime, float, float] | None = None

    def _scores(self, x: float, t: datetime) -> tuple[float, float]:
        c = self._cache
        if c is not None and c[0] == x and c[1] == t:
            return c[2], c[3]
        raw = self.inner.score_one(x, t)
        score = self.cal.peek(raw)
        if self._out_of_range(x):
            score = max(score, self.cal._finish(1.0))
        self._cache = (x, t, raw, score)
        return raw, score

    def _out_of_range(self, x: float) -> bool:
        if self.range_tolerance is None or self._lo is None or self.n_seen < self.range_warmup:
            return False
        # a series that never moved: any change is beyond its range
        tol = max((self._hi - self._lo) * self.range_tolerance, scale_floor(self._hi))
        return x > self._hi + tol or x < self._lo - tol

    def score_one(self, x: float, t: datetime) -> float:
        x = clean(x)
        if x is None:
            return 0.0
        return clip01(self._scores(x, t)[1])

    def learn_one(self, x: float, t: datetime) -> None:
        x = clean(x)
        if x is None:
            return
        raw, score = self._scores(x, t)
        self._cache = None
        self.inner.learn_one(x, t)
        self.cal.learn(raw, score)
        self._lo = x if self._lo is None else min(self._lo, x)
        self._hi = x if self._hi is None else max(self._hi, x)
        self.n_seen += 1
