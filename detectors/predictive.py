"""Predictive detector: how surprising is the point given a one-step forecast?"""

from __future__ import annotations

import math
from datetime import datetime

from river import stats, time_series

from atalaia.detectors.base import Detector, clean, log_tail, scale_floor

FORECASTERS = ("holt", "snarimax")


class ForecastResidual(Detector):
    """One-step forecast by river's ``HoltWinters`` (level + trend) or ``SNARIMAX``; the score
    is the residual standardised by its exponentially weighted mean absolute size, on the
    log tail scale. The forecaster sees the series relative to its first value, so large
    levels keep their precision; a time gap longer than ``max_gap`` typical steps restarts it
    (a forecast across a gap means nothing), keeping the learned residual scale.

    >>> from datetime import datetime, timedelta
    >>> t0 = datetime(2026, 1, 1)
    >>> det = ForecastResidual(model="holt", warmup=20)
    >>> for i in range(100):
    ...     _ = det.score_learn(100.0 + i + (i % 2) * 0.5, t0 + timedelta(minutes=i))
    >>> det.score_one(200.2, t0 + timedelta(minutes=100)) < 0.3 < det.score_one(260.0, t0)
    True
    """

    def __init__(
        self,
        model: str = "holt",
        alpha: float = 0.5,
        beta: float = 0.05,
        p: int = 2,
        d: int = 1,
        q: int = 1,
        fading: float = 0.02,
        warmup: int = 30,
        max_gap: float = 10.0,
    ) -> None:
        if model not in FORECASTERS:
            raise ValueError(f"model must be one of {FORECASTERS}, not {model!r}")
        self.model = model
        self.params = {"alpha": alpha, "beta": beta, "p": p, "d": d, "q": q}
        self.warmup = warmup
        self.max_gap = max_gap
        self.n_seen = 0
        self._scale = stats.EWMean(fading_factor=fading)
        self._n_resid = 0
        self._restart()
        self._prev_t: datetime | None = None
        self._step: float | None = None

    def _restart(self) -> None:
        if self.model == "holt":
            self._fc = time_series.HoltWinters(alpha=self.params["alpha"], beta=self.params["beta"])
        else:
            self._fc = time_series.SNARIMAX(p=self.params["p"], d=self.params["d"], q=self.params["q"])
        self._origin: float | None = None
        self._n_fc = 0

    def _gap(self, t: datetime) -> bool:
        if self._prev_t is None or self._step is None:
            return False
        return (t - self._prev_t).total_seconds() > self.max_gap * self._step

    def _residual(self, x: float, t: datetime) -> float | None:
        if self._origin is None or self._n_fc < 3 or self._gap(t):
            return None
        try:
            yhat = self._fc.forecast(horizon=1)[0] + self._origin
        except (ValueError, IndexError, ZeroDivisionError, OverflowError):
            return None
        return x - yhat if math.isfinite(yhat) else None

    def score_one(self, x: float, t: datetime) -> float:
        x = clean(x)
        if x is None or self.n_seen < self.warmup or self._n_resid == 0:
            return 0.0
        r = self._residual(x, t)
        if r is None:
            return 0.0
        spread = max(1.2533 * self._scale.get(), scale_floor(self._origin or 0.0))
        return log_tail(r / spread)

    def learn_one(self, x: float, t: datetime) -> None:
        x = clean(x)
        if x is None:
            return
        if self._gap(t):
            self._restart()
        r = self._residual(x, t)
        if r is not None:
            self._scale.update(abs(r))
            self._n_resid += 1
        if self._origin is None:
            self._origin = x
        try:
            self._fc.learn_one(x - self._origin)
            self._n_fc += 1
        except (ValueError, ZeroDivisionError, OverflowError):
            self._restart()
        if self._prev_t is not None:
            dt = (t - self._prev_t).total_seconds()
            if dt > 0:
                self._step = dt if self._step is None else min(dt, 0.9 * self._step + 0.1 * dt)
        self._prev_t = t
        self.n_seen += 1
