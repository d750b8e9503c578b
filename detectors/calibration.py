"""Turn a raw anomaly score stream into a calibrated one.

A raw score (a tail probability, a tree mass, a residual) is rarely comparable across
series: on a noisy series it is high all the time. The *anomaly likelihood* (Ahmad et
al., Neurocomputing 2017, as in Numenta's HTM) asks instead how unusual the recent
average raw score is compared with the raw scores of a long trailing window, which is
strictly online. The result is mapped to a log scale (0.5 ≈ one chance in 10⁵,
1.0 ≈ one in 10¹⁰) and, once it raises an alert, the following points are damped so
that one anomaly yields one detection rather than a burst.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from atalaia.detectors.base import clip01

_LOG_FLOOR = math.log(1e-10)


@dataclass
class AnomalyLikelihood:
    """Rolling-distribution calibration of raw scores in [0, 1].

    >>> cal = AnomalyLikelihood(short_window=3, long_window=50, min_samples=20)
    >>> quiet = [cal.update(0.1 + 0.01 * (i % 3)) for i in range(60)]
    >>> max(quiet) < 0.5
    True
    >>> cal.update(0.9) > 0.5 or cal.update(0.9) > 0.5
    True
    """

    short_window: int = 10
    long_window: int = 2000
    min_samples: int = 100
    min_std: float = 0.02
    min_mean: float = 0.0
    alert: float = 0.5
    suppress_for: int = 0
    suppress_to: float = 0.0
    _short: deque = field(default_factory=deque, repr=False)
    _short_sum: float = 0.0
    _hist: deque = field(default_factory=deque, repr=False)
    _sum: float = 0.0
    _sumsq: float = 0.0
    _since_recompute: int = 0
    _quiet: int = 0

    def peek(self, raw: float) -> float:
        """Calibrated score of ``raw`` if it were the next raw score (no state change)."""
        raw = clip01(raw)
        n_short = len(self._short)
        if n_short >= self.short_window:
            avg = (self._short_sum - self._short[0] + raw) / n_short
        else:
            avg = (self._short_sum + raw) / (n_short + 1)
        return self._finish(self._log_likelihood(avg))

    def update(self, raw: float) -> float:
        """Calibrated score of ``raw``, then learn it."""
        score = self.peek(raw)
        self.learn(raw, score)
        return score

    def learn(self, raw: float, emitted: float | None = None) -> None:
        raw = clip01(raw)
        self._short.append(raw)
        self._short_sum += raw
        if len(self._short) > self.short_window:
            self._short_sum -= self._short.popleft()
        avg = self._short_sum / len(self._short)
        self._hist.append(avg)
        self._sum += avg
        self._sumsq += avg * avg
        if len(self._hist) > self.long_window:
            old = self._hist.popleft()
            self._sum -= old
            self._sumsq -= old * old
        self._since_recompute += 1
        if self._since_recompute >= self.long_window:  # cancel floating-point drift
            self._sum = math.fsum(self._hist)
            self._sumsq = math.fsum(v * v for v in self._hist)
            self._short_sum = math.fsum(self._short)
            self._since_recompute = 0
        if self._quiet:
            self._quiet -= 1
        elif emitted is not None and emitted >= self.alert and self.suppress_for:
            self._quiet = self.suppress_for

    def _log_likelihood(self, avg: float) -> float:
        n = len(self._hist)
        if n < self.min_samples:
            return 0.0
        mean = max(self._sum / n, self.min_mean)
        var = max(self._sumsq / n - (self._sum / n) ** 2, 0.0)
        std = max(math.sqrt(var), self.min_std)
        z = (avg - mean) / std
        if z <= 0.0:
            return 0.0
        tail = 0.5 * math.erfc(z / math.sqrt(2.0))
        return clip01(math.log(tail + 1e-10) / _LOG_FLOOR)

    def _finish(self, score: float) -> float:
        if self._quiet:
            return min(score, self.suppress_to)
        return score
