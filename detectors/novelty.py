"""Record novelty: is some feature of the stream beyond anything seen so far?

Numenta's NAB detector fires when the value leaves the range seen so far ("spatial
anomaly"); this generalises it to several engineered features (value, change, level shift
against a slow mean, local volatility, deviation from the time-of-day profile), and adds a
far-tail test against robust quantiles, so that one huge spike does not mask later
anomalies. Records get rarer as a stream ages, so false alarms thin out on their own;
extremes can be forgotten after ``memory`` points, so a pattern not seen for a long time
becomes news again.
"""

from __future__ import annotations

import math
from collections import deque
from datetime import datetime

from river import stats

from atalaia.detectors.base import Detector, clean, scale_floor

FEATURES = ("value", "diff", "shift", "volatility", "seasonal")
TAILS = (None, "history", "rolling")


class _Extremes:
    """Highest and lowest value of one feature: all-time, or over the last ``memory`` points
    (kept as maxima/minima of blocks of ``memory // 8`` points, so it costs O(1) per point)."""

    __slots__ = ("block", "blocks", "cur_hi", "cur_lo", "cur_n", "hi", "lo", "mean", "n")

    def __init__(self) -> None:
        self.hi = self.lo = self.mean = 0.0
        self.n = 0
        self.blocks: deque[tuple[float, float]] = deque()
        self.cur_hi = self.cur_lo = 0.0
        self.cur_n = 0

    def exceedance(self, f: float) -> float:
        """How far ``f`` lies beyond the seen range, in units of its width (< 0 inside)."""
        span = max(self.hi - self.lo, scale_floor(self.mean))
        return max(f - self.hi, self.lo - f) / span

    def learn(self, f: float, relax: float, fading: float, memory: int | None) -> None:
        if self.n == 0:
            self.hi = self.lo = self.mean = f
        else:
            self.mean += fading * (f - self.mean)
            self.hi += relax * (self.mean - self.hi)
            self.lo += relax * (self.mean - self.lo)
            self.hi = max(self.hi, f)
            self.lo = min(self.lo, f)
        self.n += 1
        if memory is None:
            return
        if self.cur_n == 0:
            self.cur_hi = self.cur_lo = f
        else:
            self.cur_hi, self.cur_lo = max(self.cur_hi, f), min(self.cur_lo, f)
        self.cur_n += 1
        size = max(1, memory // 8)
        if self.cur_n >= size:
            self.blocks.append((self.cur_hi, self.cur_lo))
            self.cur_n = 0
            if len(self.blocks) > 8:
                self.blocks.popleft()
                self.hi = max(b[0] for b in self.blocks)
                self.lo = min(b[1] for b in self.blocks)


class RecordNovelty(Detector):
    """Score = max over features of a logistic of the feature's exceedance of its seen range
    (0.5 exactly at the edge of the range, → 1 beyond it by a few ``tolerance``).

    Parameters: ``features`` (among value, diff, shift, volatility, seasonal); ``tolerance``
    (fraction of the range that moves the score from 0.5 to 0.73); ``fast``/``slow`` (EW rates
    of the level-shift means); ``bin_minutes`` (time-of-day profile bins); ``memory`` (points
    over which extremes are remembered, None = forever); ``relax`` (per-point pull of the
    extremes towards the mean); ``tail`` ("history": P² quantiles of the whole history in
    constant memory, "rolling": exact quantiles of the last ``tail_window`` values) adds a
    far-tail test — a value beyond the ``tail_quantile`` band by more than ``tail_margin`` band
    widths is news even when one old spike stretched the range (it scores 0.5 at the margin,
    rising with ``tail_tolerance``); ``margin`` (a fraction of the seen range a feature must
    exceed before it scores above 0.5: scale-free); ``agree`` (score the ``agree``-th most
    novel test, features and tail alike, so ``agree=2`` needs two tests to agree); ``warmup`` (points scored 0); ``max_gap`` (a gap longer
    than this many typical steps makes the change features wait for the next point).

    >>> from datetime import datetime, timedelta
    >>> t0 = datetime(2026, 1, 1)
    >>> det = RecordNovelty(warmup=50)
    >>> for i in range(500):
    ...     _ = det.score_learn(10.0 + (i % 10) * 0.2, t0 + timedelta(minutes=5 * i))
    >>> det.score_one(10.8, t0 + timedelta(minutes=2500)) < 0.2 < 0.9 < det.score_one(13.0, t0)
    True
    """

    # class defaults: states pickled before these knobs existed load unchanged
    margin = 0.0
    agree = 1

    def __init__(
        self,
        features: tuple[str, ...] | list[str] = FEATURES,
        tolerance: float = 0.05,
        relax: float = 0.0,
        fast: float = 0.3,
        slow: float = 0.01,
        bin_minutes: int = 60,
        warmup: int = 150,
        max_gap: float = 10.0,
        memory: int | None = None,
        tail: str | None = None,
        tail_window: int = 2000,
        tail_quantile: float = 0.99,
        tail_margin: float = 1.0,
        tail_tolerance: float = 0.25,
        margin: float = 0.0,
        agree: int = 1,
    ) -> None:
        unknown = set(features) - set(FEATURES)
        if unknown or not features:
            raise ValueError(f"features must be among {FEATURES}, not {sorted(unknown) or '[]'}")
        if 1440 % bin_minutes:
            raise ValueError("bin_minutes must divide a day")
        if not 1 <= agree <= len(features) + (tail is not None):
            raise ValueError("agree must be between 1 and the number of tests (features + tail)")
        self.features = tuple(features)
        self.margin = margin
        self.agree = agree
        self.tolerance = tolerance
        self.relax = relax
        self.fast = fast
        self.slow = slow
        self.bin_minutes = bin_minutes
        self.warmup = warmup
        self.max_gap = max_gap
        self.memory = memory
        self.tail_margin = tail_margin
        self.tail_tolerance = tail_tolerance
        if tail not in TAILS:
            raise ValueError(f"tail must be one of {TAILS}, not {tail!r}")
        self.tail = tail
        self._tail_min = min(tail_window // 4, 500)
        self._tail: list | None = None
        if tail == "rolling":  # exact quantiles of the last tail_window values
            self._tail = [
                stats.RollingQuantile(1.0 - tail_quantile, tail_window),
                stats.RollingQuantile(tail_quantile, tail_window),
                0,
            ]
        elif tail == "history":  # P² estimates over the whole history, constant memory
            self._tail = [stats.Quantile(1.0 - tail_quantile), stats.Quantile(tail_quantile), 0]
        self.n_seen = 0
        self._ext = {f: _Extremes() for f in self.features}
        self._prev: float | None = None
        self._prev_t: datetime | None = None
        self._step: float | None = None
        self._fast_mean: float | None = None
        self._slow_mean: float | None = None
        self._vol: float | None = None
        self._profile: dict[int, float] = {}

    def _gap(self, t: datetime) -> bool:
        if self._prev_t is None or self._step is None:
            return False
        return (t - self._prev_t).total_seconds() > self.max_gap * self._step

    def _values(self, x: float, t: datetime) -> dict[str, float]:
        out: dict[str, float] = {}
        contiguous = self._prev is not None and not self._gap(t)
        for name in self.features:
            if name == "value":
                out[name] = x
            elif name == "diff" and contiguous:
                out[name] = x - self._prev
            elif name == "shift" and self._slow_mean is not None:
                fast = self._fast_mean + self.fast * (x - self._fast_mean)
                out[name] = fast - self._slow_mean
            elif name == "volatility" and contiguous and self._vol is not None:
                out[name] = self._vol + self.fast * (abs(x - self._prev) - self._vol)
            elif name == "seasonal":
                ref = self._profile.get(self._bin(t))
                if ref is not None:
                    out[name] = x - ref
        return out

    def _bin(self, t: datetime) -> int:
        return (t.hour * 60 + t.minute) // self.bin_minutes

    def score_one(self, x: float, t: datetime) -> float:
        x = clean(x)
        if x is None or self.n_seen < self.warmup:
            return 0.0
        tests = []
        for name, f in self._values(x, t).items():
            e = self._ext.get(name)  # a subclass may compute features it does not record-test
            if e is not None and e.n:
                tests.append(e.exceedance(f) - self.margin)
        if self._tail is not None and self._tail[2] >= self._tail_min:
            lo, hi = self._tail[0].get(), self._tail[1].get()
            span = max(hi - lo, scale_floor(hi))
            e = max(x - hi, lo - x) / span
            tests.append((e - self.tail_margin) * self.tolerance / self.tail_tolerance)
        if len(tests) < self.agree:
            return 0.0
        # the agree-th largest: with agree=2 two tests must call the point novel
        worst = max(tests) if self.agree == 1 else sorted(tests)[-self.agree]
        z = worst / self.tolerance
        return 1.0 if z > 40.0 else 0.0 if z < -40.0 else 1.0 / (1.0 + math.exp(-z))

    def learn_one(self, x: float, t: datetime) -> None:
        x = clean(x)
        if x is None:
            return
        for name, f in self._values(x, t).items():
            e = self._ext.get(name)
            if e is not None:
                e.learn(f, self.relax, self.slow, self.memory)
        if self._tail is not None:
            self._tail[0].update(x)
            self._tail[1].update(x)
            self._tail[2] += 1
        contiguous = self._prev is not None and not self._gap(t)
        if self._slow_mean is None:
            self._fast_mean = self._slow_mean = x
        else:
            self._fast_mean += self.fast * (x - self._fast_mean)
            self._slow_mean += self.slow * (x - self._slow_mean)
        if contiguous:
            d = abs(x - self._prev)
            self._vol = d if self._vol is None else self._vol + self.fast * (d - self._vol)
        b = self._bin(t)
        ref = self._profile.get(b)
        self._profile[b] = x if ref is None else ref + 0.1 * (x - ref)
        if self._prev_t is not None:
            dt = (t - self._prev_t).total_seconds()
            if dt > 0:
                self._step = dt if self._step is None else min(dt, 0.9 * self._step + 0.1 * dt)
        self._prev, self._prev_t = x, t
        self.n_seen += 1
