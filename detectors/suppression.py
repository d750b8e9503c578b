"""Refractory period: one anomaly should raise one alarm, not a burst."""

from __future__ import annotations

from datetime import datetime

from atalaia.detectors.base import Detector, clean


class Refractory(Detector):
    """After ``inner`` scores at least ``alert``, the next ``hold`` points score at most
    ``cap`` (the model still learns them). Event count, not wall clock, so it is exact
    across restarts.

    >>> from datetime import datetime
    >>> from atalaia.detectors.novelty import RecordNovelty
    >>> det = Refractory(RecordNovelty(features=["value"], warmup=3), alert=0.9, hold=2)
    >>> t = datetime(2026, 1, 1)
    >>> [round(det.score_learn(x, t), 2) for x in [1, 2, 1, 2, 9, 10, 11, 12]]
    [0.0, 0.0, 0.0, 0.5, 1.0, 0.0, 0.0, 0.88]
    """

    def __init__(self, inner: Detector, alert: float = 0.6, hold: int = 100, cap: float = 0.0) -> None:
        self.inner = inner
        self.alert = alert
        self.hold = hold
        self.cap = cap
        self.warmup = inner.warmup
        self.n_seen = 0
        self._quiet = 0

    def score_one(self, x: float, t: datetime) -> float:
        s = self.inner.score_one(x, t)
        return min(s, self.cap) if self._quiet else s

    def learn_one(self, x: float, t: datetime) -> None:
        if clean(x) is None:
            return
        fired = not self._quiet and self.inner.score_one(x, t) >= self.alert
        self.inner.learn_one(x, t)
        if self._quiet:
            self._quiet -= 1
        elif fired:
            self._quiet = self.hold
        self.n_seen += 1
