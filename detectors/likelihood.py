"""Anomaly likelihood in constant memory: how unusual is the recent raw score for *this* series?

A raw anomaly score (a record exceedance, a forecast residual, a profile deviation) means
different things on different series: on a spiky series it is high every day. Following the
idea of Numenta's anomaly likelihood (Ahmad et al., Neurocomputing 2017) the raw score is
re-expressed against the series' own history: the mean of the last ``short`` raw scores is
compared with a Gaussian fitted to the long-run distribution of that mean, and the score is
the surprise of its upper tail probability ``q`` on a log scale, ``log10(1/q) / decades``
(with the default 10 decades: 0.5 means "once in 10⁵ points of this series' normal
behaviour", 1.0 "once in 10¹⁰"), the same meaning on every series.

Unlike ``calibration.AnomalyLikelihood`` (a trailing window of 2000 raw means), the long-run
mean and variance here are exponentially weighted (equal weights until ``horizon`` points,
then a fading memory of about ``horizon`` points), so the state is a few floats and the last
``short`` raw scores. Strictly online: the score of a point uses only the points before it
(and the point itself); the statistics learn it afterwards.
"""

from __future__ import annotations

import math
from collections import deque
from datetime import datetime

from atalaia.detectors.base import Detector, clean, clip01

#: tail probabilities below this are treated as this (the score saturates at 1 long before)
_Q_FLOOR = 1e-300


def tail_surprise(z: float, decades: float = 10.0) -> float:
    """Upper-tail surprise of a standardised deviation, in [0, 1]: ``-log10(P(Z ≥ z)) /
    decades`` for a standard normal Z (0 for z ≤ 0: only *higher* raw scores are news)."""
    if z != z or z <= 0.0:
        return 0.0
    if z > 37.0:
        return 1.0
    q = max(0.5 * math.erfc(z / math.sqrt(2.0)), _Q_FLOOR)
    return clip01(-math.log10(q) / decades)


class Likelihood(Detector):
    """``inner``'s raw score re-expressed as the log tail probability of its recent mean
    against the series' own long-run distribution of that mean (see the module docstring).

    Parameters: ``short`` (raw scores averaged, the current one included); ``horizon``
    (points of long-run memory); ``min_samples`` (raw means learned before it scores, 0
    before); ``min_std`` (floor of the long-run spread, in raw-score units, so a series whose
    raw score never moved is not infinitely surprised by a small rise); ``decades`` (the
    log10 tail probability that scores 1).

    >>> from datetime import datetime, timedelta
    >>> from atalaia.detectors.predictive import ForecastResidual
    >>> t0 = datetime(2026, 1, 1)
    >>> det = Likelihood(ForecastResidual(warmup=10), min_samples=50)
    >>> quiet = [det.score_learn(10.0 + (i % 5) * 0.1, t0 + timedelta(minutes=i)) for i in range(300)]
    >>> max(quiet) < 0.3 < 0.5 < det.score_one(30.0, t0 + timedelta(minutes=300))
    True
    """

    def __init__(
        self,
        inner: Detector,
        short: int = 1,
        horizon: int = 2000,
        min_samples: int = 150,
        min_std: float = 0.01,
        decades: float = 10.0,
    ) -> None:
        if short < 1 or horizon < 2 or min_samples < 2 or min_std <= 0 or decades <= 0:
            raise ValueError("short >= 1, horizon >= 2, min_samples >= 2, min_std > 0, decades > 0")
        self.inner = inner
        self.short = short
        self.horizon = horizon
        self.min_samples = min_samples
        self.min_std = min_std
        self.decades = decades
        self.warmup = max(inner.warmup, min_samples)
        self.n_seen = 0
        self._recent: deque[float] = deque(maxlen=short - 1)  # the raw scores before this one
        self._n = 0  # raw means learned
        self._mean = 0.0
        self._var = 0.0
        self._cache: tuple[float, datetime, float, float, float] | None = None

    def _recent_mean(self, raw: float) -> float:
        r = self._recent
        return (sum(r) + raw) / (len(r) + 1) if r else raw

    def _scores(self, x: float, t: datetime) -> tuple[float, float, float]:
        """(raw score, recent mean raw score, likelihood score) of ``x`` at ``t``."""
        c = self._cache
        if c is not None and c[0] == x and c[1] == t:
            return c[2], c[3], c[4]
        raw = clip01(self.inner.score_one(x, t))
        m = self._recent_mean(raw)
        if self._n < self.min_samples:
            score = 0.0
        else:
            std = max(math.sqrt(self._var), self.min_std)
            score = tail_surprise((m - self._mean) / std, self.decades)
        self._cache = (x, t, raw, m, score)
        return raw, m, score

    def score_one(self, x: float, t: datetime) -> float:
        x = clean(x)
        if x is None:
            return 0.0
        return self._scores(x, t)[2]

    def learn_one(self, x: float, t: datetime) -> None:
        x = clean(x)
        if x is None:
            return
        raw, m, _ = self._scores(x, t)
        self._cache = None
        self.inner.learn_one(x, t)
        self._recent.append(raw)
        self._n += 1
        rate = max(1.0 / self._n, 1.0 / self.horizon)
        d = m - self._mean
        self._mean += rate * d
        self._var = (1.0 - rate) * (self._var + rate * d * d)
        self.n_seen += 1
