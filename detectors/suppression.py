"""Refractory period: one anomaly should raise one alarm, not a burst."""

from __future__ import annotations

from datetime import datetime

from atalaia.detectors.base import Detector, clean


class Refractory(Detector):
    """After ``inner`` scores at least ``alert``, the next ``hold`` points score at most
    ``cap`` (the model still learns them). Event count, not wall clock, so it is exact
    across restarts. With ``sustain=True`` the uninterrupted run of high scores that raised
    the alarm passes through (so a rule with ``for:`` can see a lasting anomaly); only a new
    rise during the hold is capped.

    >>> from datetime import datetime
    >>> from atalaia.detectors.novelty import RecordNovelty
    >>> det = Refractory(RecordNovelty(features=["value"], warmup=3), alert=0.9, hold=2)
    >>> t = datetime(2026, 1, 1)
    >>> [round(det.score_learn(x, t), 2) for x in [1, 2, 1, 2, 9, 10, 11, 12]]
    [0.0, 0.0, 0.0, 0.5, 1.0, 0.0, 0.0, 0.88]
    """

    def __init__(
        self, inner: Detector, alert: float = 0.6, hold: int = 100, cap: float = 0.0, sustain: bool = False
    ) -> None:
        self.inner = inner
        self.alert = alert
        self.hold = hold
        self.cap = cap
        self.sustain = sustain
        self.warmup = inner.warmup
        self.n_seen = 0
        self._quiet = 0
        self._run = False  # with sustain: the alarm's run of high scores is still going on

    def score_one(self, x: float, t: datetime) -> float:
        s = self.inner.score_one(x, t)
        if not self._quiet or (self._run and s >= self.alert):
            return s
        return min(s, self.cap)

    def learn_one(self, x: float, t: datetime) -> None:
        if clean(x) is None:
            return
        emitted = self.score_one(x, t)
        high = emitted >= self.alert
        self.inner.learn_one(x, t)
        if self._quiet:
            self._quiet -= 1
            self._run = self._run and high
        elif high:
            self._quiet = self.hold
            self._run = self.sustain
        self.n_seen += 1
