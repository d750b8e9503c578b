"""Extreme-value tail probability: how often does *this* series go this far?

Record novelty asks "is this beyond everything seen?", which on a spiky, heavy-tailed series
is true every few days. Here each feature's tail is modelled instead, by peaks over threshold
(the extreme-value approach of SPOT, Siffer et al., KDD 2017): above a high running quantile
``u`` of the feature (river ``stats.Quantile``, P²), the excesses are fitted with a
generalised Pareto distribution (shape ``γ`` and scale ``σ`` by the method of moments of the
excesses, exponentially forgotten after ``horizon`` of them), so a value ``x > u`` has the tail
probability

    p(x) = (1 − q) · (1 + γ (x − u) / σ) ^ (−1/γ)      (p = 0 beyond the end point when γ < 0)

The score is the surprise of the smallest such probability over the tests (both tails of each
feature), Bonferroni-corrected for their number: ``log10(1 / (k · p_min)) / decades``. With the
default 10 decades a score of 0.4 means "once in 10⁴ points of this series", on every series
alike: a heavy-tailed series needs a bigger spike than a quiet one for the same score.
"""

from __future__ import annotations

import math
from datetime import datetime

from river import stats

from atalaia.detectors.base import clean, clip01, scale_floor
from atalaia.detectors.novelty import RecordNovelty, _Extremes


class _ParetoTail:
    """Upper tail of one feature: running ``q`` quantile and moments of the excesses over it."""

    __slots__ = ("m", "n", "quantile", "v")

    def __init__(self, q: float) -> None:
        self.quantile = stats.Quantile(q)
        self.n = 0  # excesses learned
        self.m = 0.0  # their mean
        self.v = 0.0  # their variance

    def log10_tail(self, f: float, q: float, floor: float) -> float:
        """log10 of P(feature ≥ f) (0 at or below the quantile; −inf beyond the end point)."""
        u = self.quantile.get()
        if u is None or f <= u:
            return 0.0
        m = max(self.m, floor)
        # method of moments: γ = (1 − m²/v) / 2, σ = m (1 + m²/v) / 2; v floored so γ ≥ −½·…
        ratio = m * m / max(self.v, floor * floor)
        gamma = 0.5 * (1.0 - ratio)
        sigma = 0.5 * m * (1.0 + ratio)
        y = (f - u) / sigma
        base = math.log10(1.0 - q)
        if abs(gamma) < 1e-6:
            return base - y / math.log(10.0)
        inner = 1.0 + gamma * y
        if inner <= 0.0:  # beyond the fitted distribution's end point
            return -math.inf
        return base - math.log10(inner) / gamma

    def learn(self, f: float, horizon: int) -> None:
        u = self.quantile.get()
        self.quantile.update(f)
        if u is None or f <= u:
            return
        e = f - u
        self.n += 1
        rate = max(1.0 / self.n, 1.0 / horizon)
        d = e - self.m
        self.m += rate * d
        self.v = (1.0 - rate) * (self.v + rate * d * d)


class ExtremeTail(RecordNovelty):
    """Peaks-over-threshold tail probability of the value, its change, its level shift and its
    deviation from the daily profile (the features of ``RecordNovelty``), both tails each; see
    the module docstring. The defaults are the default detector's.

    Parameters: ``features`` (as in ``RecordNovelty``); ``q`` (quantile above which the tail
    is fitted); ``horizon`` (excesses remembered); ``min_excess`` (excesses needed before a
    tail scores); ``decades`` (the log10 probability that scores 1); ``fast``/``slow``/
    ``bin_minutes``/``warmup``/``max_gap`` as in ``RecordNovelty``.

    >>> from datetime import datetime, timedelta
    >>> t0 = datetime(2026, 1, 1)
    >>> det = ExtremeTail(features=["value"], warmup=50)
    >>> for i in range(2000):
    ...     _ = det.score_learn(10.0 + ((i * 7919) % 101) / 100, t0 + timedelta(minutes=5 * i))
    >>> det.score_one(10.9, t0) < 0.2 < 0.5 < det.score_one(13.0, t0)
    True
    """

    def __init__(
        self,
        features: tuple[str, ...] | list[str] = ("value", "diff", "shift", "seasonal"),
        q: float = 0.98,
        horizon: int = 1000,
        min_excess: int = 10,
        decades: float = 10.0,
        fast: float = 0.1,
        slow: float = 0.01,
        bin_minutes: int = 60,
        warmup: int = 150,
        max_gap: float = 10.0,
        **novelty,
    ) -> None:
        super().__init__(
            features=features,
            fast=fast,
            slow=slow,
            bin_minutes=bin_minutes,
            warmup=warmup,
            max_gap=max_gap,
            **novelty,
        )
        if not 0.5 <= q < 1.0 or horizon < 2 or min_excess < 2 or decades <= 0:
            raise ValueError("0.5 <= q < 1, horizon >= 2, min_excess >= 2, decades > 0")
        self.q = q
        self.horizon = horizon
        self.min_excess = min_excess
        self.decades = decades
        self._tails = {f: (_ParetoTail(q), _ParetoTail(q)) for f in self.features}
        self._ext = {}  # no record tests of its own (NoveltyExtreme adds them back)

    def score_one(self, x: float, t: datetime) -> float:
        return self._tail_score(x, t)

    def _tail_score(self, x: float, t: datetime) -> float:
        x = clean(x)
        if x is None or self.n_seen < self.warmup:
            return 0.0
        floor = scale_floor(self._slow_mean if self._slow_mean is not None else x)
        lowest, k = 0.0, 0
        for name, f in self._values(x, t).items():
            for tail, g in zip(self._tails[name], (f, -f), strict=True):
                k += 1
                if tail.n >= self.min_excess:
                    lowest = min(lowest, tail.log10_tail(g, self.q, floor))
        if lowest == -math.inf:
            return 1.0
        return clip01(-(lowest + math.log10(max(k, 1))) / self.decades)

    def learn_one(self, x: float, t: datetime) -> None:
        cx = clean(x)
        if cx is None:
            return
        for name, f in self._values(cx, t).items():
            hi, lo = self._tails[name]
            hi.learn(f, self.horizon)
            lo.learn(-f, self.horizon)
        super().learn_one(cx, t)  # the features' running means and daily profile


class NoveltyExtreme(ExtremeTail):
    """The mean of two model families on the same features, computed once: the record novelty
    of ``record_features`` with its far-tail test (``RecordNovelty``: beyond the range this
    series has seen?) and the extreme-value tail probability of ``features`` (``ExtremeTail``:
    how often does this series go this far?). The same scores as an ``Ensemble(combine="mean")``
    of the two models, in one state.

    >>> from datetime import datetime, timedelta
    >>> t0 = datetime(2026, 1, 1)
    >>> det = NoveltyExtreme(warmup=50)
    >>> for i in range(2000):
    ...     _ = det.score_learn(10.0 + ((i * 7919) % 101) / 100, t0 + timedelta(minutes=5 * i))
    >>> det.score_one(10.9, t0) < 0.2 < 0.6 < det.score_one(13.0, t0)
    True
    """

    def __init__(
        self,
        record_features: tuple[str, ...] | list[str] = ("value", "shift", "seasonal"),
        features: tuple[str, ...] | list[str] = ("value", "diff", "shift", "seasonal"),
        tail: str | None = "history",
        **params,
    ) -> None:
        if not set(record_features) <= set(features):
            raise ValueError("record_features must be among features")
        super().__init__(features=features, tail=tail, **params)
        self.record_features = tuple(record_features)
        self._ext = {f: _Extremes() for f in self.record_features}

    def score_one(self, x: float, t: datetime) -> float:
        return (RecordNovelty.score_one(self, x, t) + self._tail_score(x, t)) / 2
