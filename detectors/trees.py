"""HalfSpaceTrees (river) on engineered, robustly scaled features."""

from __future__ import annotations

from datetime import datetime

from river import anomaly, stats

from atalaia.detectors.base import Detector, clean, clip01, scale_floor, squash


class _Scaler:
    """Exponentially weighted mean and mean absolute deviation of one feature."""

    def __init__(self, fading: float) -> None:
        self.mean = stats.EWMean(fading_factor=fading)
        self.mad = stats.EWMean(fading_factor=fading)
        self.n = 0

    def z(self, v: float) -> float:
        if self.n == 0:
            return 0.0
        centre = self.mean.get()
        spread = max(1.2533 * self.mad.get(), scale_floor(centre))
        return (v - centre) / spread

    def learn(self, v: float) -> None:
        if self.n:
            self.mad.update(abs(v - self.mean.get()))
        self.mean.update(v)
        self.n += 1


class HSTDetector(Detector):
    """river ``HalfSpaceTrees`` over the value and its last change, each standardised by
    exponentially weighted statistics (slow and fast) and squashed into (0, 1).

    A gap longer than ``max_gap`` typical steps makes the change feature neutral.

    >>> from datetime import datetime, timedelta
    >>> t0 = datetime(2026, 1, 1)
    >>> det = HSTDetector(n_trees=5, height=6, window_size=50, warmup=60, seed=1)
    >>> for i in range(300):
    ...     _ = det.score_learn(10.0 + (i % 7) * 0.1, t0 + timedelta(minutes=i))
    >>> det.score_one(10.3, t0) < det.score_one(50.0, t0)
    True
    """

    def __init__(
        self,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        slow: float = 0.005,
        fast: float = 0.1,
        warmup: int = 250,
        max_gap: float = 10.0,
        seed: int = 42,
    ) -> None:
        for name, value, least in (
            ("n_trees", n_trees, 1),
            ("height", height, 1),
            ("window_size", window_size, 1),
        ):
            if not (isinstance(value, int) and value >= least):
                raise ValueError(f"{name} must be an integer >= {least}, not {value!r}")
        self.warmup = warmup
        self.n_seen = 0
        self.max_gap = max_gap
        self.trees = anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, seed=seed
        )
        self._slow = _Scaler(slow)
        self._fast = _Scaler(fast)
        self._diff = _Scaler(slow)
        self._prev: float | None = None
        self._prev_t: datetime | None = None
        self._step: float | None = None

    def _features(self, x: float, t: datetime) -> tuple[dict[str, float], float | None]:
        d = None
        if self._prev is not None:
            dt = (t - self._prev_t).total_seconds()
            if self._step is None or dt <= self.max_gap * self._step:
                d = x - self._prev
        feats = {
            "slow": squash(self._slow.z(x) / 2.0),
            "fast": squash(self._fast.z(x) / 2.0),
            "diff": squash(self._diff.z(d) / 2.0) if d is not None else 0.5,
        }
        return feats, d

    def score_one(self, x: float, t: datetime) -> float:
        x = clean(x)
        if x is None or self.n_seen < self.warmup:
            return 0.0
        feats, _ = self._features(x, t)
        return clip01(self.trees.score_one(feats))

    def learn_one(self, x: float, t: datetime) -> None:
        x = clean(x)
        if x is None:
            return
        feats, d = self._features(x, t)
        self.trees.learn_one(feats)
        self._slow.learn(x)
        self._fast.learn(x)
        if d is not None:
            self._diff.learn(d)
        if self._prev_t is not None:
            dt = (t - self._prev_t).total_seconds()
            if dt > 0:
                self._step = dt if self._step is None else min(dt, 0.9 * self._step + 0.1 * dt)
        self._prev, self._prev_t = x, t
        self.n_seen += 1
