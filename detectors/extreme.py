"""Extreme-value tail probability: how often does *this* series go this far?

Record novelty asks "is this beyond everything seen?", which on a spiky, heavy-tailed series
is true every few days. Here each feature's tail is modelled instead, by peaks over threshold
(the extreme-value approach of SPOT, Siffer et al., KDD 2017): above a high running quantile
``u`` of the feature (river ``stats.Quantile``, P²), the excesses are fitted with a
generalised Pareto distribution (shape ``γ`` and scale ``σ`` by the method of moments of the
excesses, exponentially forgotten after ``horizon`` of them), so a value ``x > u`` has the tail
probability

    p(x) = (1 − q) · (1 + γ (x − u) / σ) ^ (−1/γ)

The shape is held at ``γ ≥ shape_min`` (default 0, with ``σ = m (1 − γ)`` keeping the excesses'
mean ``m``). A negative shape would give the tail an end point, beyond which ``p = 0`` and the
score is 1; but the moment fit puts that end point wherever the excesses happen to bunch: on a
quantised or stepping series (a counter, a noiseless cycle, a sensor with a few levels) the
excesses are nearly equal, the fitted ``γ`` is very negative and the end point falls *below*
values the series has already produced, so a step it makes every few minutes scored 1 ("never
possible"). Gaussian noise, the usual case, lies in the γ = 0 (Gumbel) domain; a bounded sensor
is better told by its record tests than by a fitted wall. ``shape_min: null`` restores the free
fit (the default detector before this, ``novelty-evt-mean-v1``).

The score is the surprise of the smallest such probability over the tests (both tails of each
feature), Bonferroni-corrected for their number: ``log10(1 / (k · p_min)) / decades``. With the
default 10 decades a score of 0.4 means "once in 10⁴ points of this series", on every series
alike: a heavy-tailed series needs a bigger spike than a quiet one for the same score.
"""

from __future__ import annotations

import math
from datetime import datetime

from river import stats

from atalaia.detectors.base import clean, clip01, number, scale_floor
from atalaia.detectors.novelty import SLOW_MEAN, RecordNovelty, _param, logistic, p2_quantile


def log10_tail(
    u: float, m: float, v: float, f: float, q: float, floor: float, shape_min: float | None = None
) -> float:
    """log10 of P(feature ≥ f) for the tail over the quantile ``u`` whose excesses have mean
    ``m`` and variance ``v`` (0 at or below the quantile; −inf beyond the end point). With
    ``shape_min`` the fitted shape is held at or above it (0: never a finite end point)."""
    if f <= u:
        return 0.0
    m = max(m, floor)
    # method of moments: γ = (1 − m²/v) / 2, σ = m (1 + m²/v) / 2; v floored so γ ≥ −½·…
    ratio = m * m / max(v, floor * floor)
    gamma = 0.5 * (1.0 - ratio)
    sigma = 0.5 * m * (1.0 + ratio)
    if shape_min is not None and gamma < shape_min:
        # the shape held up, the scale keeps the excesses' mean: σ = m (1 − γ)
        gamma = shape_min
        sigma = m * (1.0 - gamma)
    y = (f - u) / sigma
    base = math.log10(1.0 - q)
    if abs(gamma) < 1e-6:
        return base - y / math.log(10.0)
    inner = 1.0 + gamma * y
    if inner <= 0.0:  # beyond the fitted distribution's end point
        return -math.inf
    return base - math.log10(inner) / gamma


class _ParetoTail:
    """Upper tail of one feature: running ``q`` quantile and moments of the excesses over it.
    (The models keep the same numbers in their state array; this object is the layout of
    states written before it, and the reference for the tail's arithmetic.)"""

    __slots__ = ("m", "n", "quantile", "v")

    def __init__(self, q: float) -> None:
        self.quantile = stats.Quantile(q)
        self.n = 0  # excesses learned
        self.m = 0.0  # their mean
        self.v = 0.0  # their variance

    def log10_tail(self, f: float, q: float, floor: float) -> float:
        """log10 of P(feature ≥ f) (0 at or below the quantile; −inf beyond the end point)."""
        u = self.quantile.get()
        return 0.0 if u is None else log10_tail(u, self.m, self.v, f, q, floor)

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
    ``bin_minutes``/``warmup``/``max_gap`` as in ``RecordNovelty``; ``shape_min`` (the least
    tail shape fitted; None: free, with an end point beyond which a value scores 1).

    >>> from datetime import datetime, timedelta
    >>> t0 = datetime(2026, 1, 1)
    >>> det = ExtremeTail(features=["value"], warmup=50)
    >>> for i in range(2000):
    ...     _ = det.score_learn(10.0 + ((i * 7919) % 101) / 100, t0 + timedelta(minutes=5 * i))
    >>> det.score_one(10.9, t0) < 0.2 < 0.5 < det.score_one(13.0, t0)
    True
    """

    __slots__ = ()

    def __init__(
        self,
        features: tuple[str, ...] | list[str] = ("value", "diff", "shift", "seasonal"),
        q: float = 0.98,
        horizon: int = 1000,
        min_excess: int = 10,
        decades: float = 10.0,
        shape_min: float | None = 0.0,
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
        if type(self) is ExtremeTail and novelty.get("stuck") is not None:
            raise ValueError(
                "stuck is a record test, which model extreme does not score: use novelty-extreme"
            )
        if not 0.5 <= q < 1.0 or horizon < 2 or min_excess < 2 or decades <= 0:
            raise ValueError("0.5 <= q < 1, horizon >= 2, min_excess >= 2, decades > 0")
        if shape_min is not None and not (number(shape_min) and -0.5 <= shape_min <= 1.0):
            raise ValueError(f"shape_min must be a number between -0.5 and 1, or null, not {shape_min!r}")
        params = self._p.params._replace(
            record=(),
            pareto=True,
            q=q,
            horizon=horizon,
            min_excess=min_excess,
            decades=decades,
            shape_min=None if shape_min is None else float(shape_min),
        )
        # the quantiles: the far tail's two (None without it), then each feature's upper and
        # lower tail
        far = self._q or (None, None)
        self._setup(params, (*far, *(p2_quantile(q) for _ in range(2 * len(params.features)))))

    q = _param("q", True)
    horizon = _param("horizon", True)
    min_excess = _param("min_excess", True)
    decades = _param("decades", True)

    def score_one(self, x: float, t: datetime) -> float:
        x = clean(x)
        if x is None or self.n_seen < self._p.warmup:
            return 0.0
        return self._tail_score(x, self._values(x, t))

    def _tail_score(self, x: float, values: list[tuple[float, int, int, int]]) -> float:
        p, s, qs = self._p, self._s, self._q
        slow = s[SLOW_MEAN]
        floor = scale_floor(slow if slow == slow else x)
        lowest, k, least, q, shape = 0.0, 0, p.min_excess, p.q, p.shape_min
        for f, _, o, qi in values:
            # both tails of the feature: f over the upper one, −f over the lower one; a tail
            # with excesses has seen values, so its quantile estimate is defined
            k += 2
            if s[o + 1] >= least:
                lowest = min(lowest, log10_tail(qs[qi].get(), s[o + 2], s[o + 3], f, q, floor, shape))
            if s[o + 4] >= least:
                lowest = min(lowest, log10_tail(qs[qi + 1].get(), s[o + 5], s[o + 6], -f, q, floor, shape))
        if lowest == -math.inf:
            return 1.0
        return clip01(-(lowest + math.log10(max(k, 1))) / p.decades)

    def _learn_tails(self, values: list[tuple[float, int, int, int]]) -> None:
        s, qs, horizon = self._s, self._q, self._p.horizon
        for f, _, o, qi in values:
            seen = s[o]
            s[o] = 1.0
            for a, g, quantile in ((o + 1, f, qs[qi]), (o + 4, -f, qs[qi + 1])):
                u = quantile.get() if seen else 0.0
                quantile.update(g)
                if not seen or g <= u:
                    continue
                # an excess over the quantile: EW moments (equal weights for the first horizon)
                e = g - u
                n = s[a] + 1.0
                s[a] = n
                rate = max(1.0 / n, 1.0 / horizon)
                m = s[a + 1]
                d = e - m
                s[a + 1] = m + rate * d
                s[a + 2] = (1.0 - rate) * (s[a + 2] + rate * d * d)


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

    __slots__ = ()

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
        self._setup(self._p.params._replace(record=tuple(record_features)), self._q)

    record_features = _param("record", False)

    def score_one(self, x: float, t: datetime) -> float:
        x = clean(x)
        if x is None or self.n_seen < self._p.warmup:
            return 0.0
        values = self._values(x, t)
        mean = (self._record_score(x, t, values, stuck=False) + self._tail_score(x, values)) / 2
        # a frozen sensor is not the tail model's to judge (its reading is an ordinary one): the
        # stuck test speaks at its own score, not averaged with the tail's "ordinary"
        run = self._stuck_test(x, t)
        return mean if run is None else max(mean, logistic(run / self._p.tolerance))
