"""Refractory period: one anomaly should raise one alarm, not a burst."""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime
from typing import Any, ClassVar

from atalaia.detectors.base import Detector, clean


class Refractory(Detector):
    """After ``inner`` scores at least ``alert``, the next ``hold`` points score at most
    ``cap`` (the model still learns them). Event count, not wall clock, so it is exact
    across restarts. With ``sustain=True`` the uninterrupted run of high scores that raised
    the alarm passes through (so a rule with ``for:`` can see a lasting anomaly); only a new
    rise during the hold is capped.

    ``every`` > 0 adds an alert-rate cap (a token bucket counted in learned points): an alert
    spends a token, a token accrues every ``every`` points, at most ``burst`` are kept (the
    bucket starts full); without a token, scores are capped as during a hold. So a series
    raises at most ``burst + n / every`` alerts in ``n`` points, whatever its scale or kind.

    >>> from datetime import datetime
    >>> from atalaia.detectors.novelty import RecordNovelty
    >>> det = Refractory(RecordNovelty(features=["value"], warmup=3), alert=0.9, hold=2)
    >>> t = datetime(2026, 1, 1)
    >>> [round(det.score_learn(x, t), 2) for x in [1, 2, 1, 2, 9, 10, 11, 12]]
    [0.0, 0.0, 0.0, 0.5, 1.0, 0.0, 0.0, 0.88]
    """

    # one per entity in a bank: slots, not a __dict__
    __slots__ = (
        "_quiet",
        "_run",
        "_tokens",
        "alert",
        "burst",
        "cap",
        "every",
        "hold",
        "inner",
        "n_seen",
        "sustain",
        "warmup",
    )
    #: states pickled before the rate cap existed load as "no cap"
    _DEFAULTS: ClassVar[dict[str, Any]] = {"every": 0, "burst": 1, "_tokens": 1.0}

    def __init__(
        self,
        inner: Detector,
        alert: float = 0.6,
        hold: int = 100,
        cap: float = 0.0,
        sustain: bool = False,
        every: int = 0,
        burst: int = 1,
    ) -> None:
        self.inner = inner
        self.alert = alert
        self.hold = hold
        self.cap = cap
        self.sustain = sustain
        self.every = every
        self.burst = burst
        self._tokens = float(burst)
        self.warmup = inner.warmup
        self.n_seen = 0
        self._quiet = 0
        self._run = False  # with sustain: the alarm's run of high scores is still going on

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, Any] | tuple) -> None:
        if isinstance(state, tuple):  # (None, slots): the default form of a slotted object
            state = state[1]
        # a dict: this form, or the attribute dict of the states written before the slots
        for name, value in {**self._DEFAULTS, **state}.items():
            setattr(self, name, value)

    def score_one(self, x: float, t: datetime) -> float:
        return self._cap(self.inner.score_one(x, t))

    def _cap(self, s: float) -> float:
        if self._quiet:
            return s if self._run and s >= self.alert else min(s, self.cap)
        if self.every and self._tokens < 1.0:
            return min(s, self.cap)
        return s

    def score_learn(self, x: float, t: datetime) -> float:
        # the inner model scores once: learn_one would score the same point again
        emitted = self.score_one(x, t)
        if clean(x) is not None:
            self._learn(x, t, emitted)
        return emitted

    def upgrade(self, fresh: Detector) -> Detector | None:
        if not isinstance(fresh, Refractory) or self._knobs() != fresh._knobs():
            return None
        inner = self.inner.upgrade(fresh.inner)
        if inner is None:
            return None
        self.inner = inner
        return self

    def _knobs(self) -> tuple:
        return (self.alert, self.hold, self.cap, self.sustain, self.every, self.burst)

    def signature(self) -> Hashable:
        inner = self.inner.signature()
        if inner is None:
            return None
        return ("refractory", *self._knobs(), inner)

    def learn_one(self, x: float, t: datetime) -> None:
        if clean(x) is None:
            return
        self._learn(x, t, self.score_one(x, t))

    def _learn(self, x: float, t: datetime, emitted: float) -> None:
        high = emitted >= self.alert
        self.inner.learn_one(x, t)
        if self._quiet:
            self._quiet -= 1
            self._run = self._run and high
        elif high:
            self._quiet = self.hold
            self._run = self.sustain
            self._tokens -= 1.0
        if self.every:
            self._tokens = min(float(self.burst), self._tokens + 1.0 / self.every)
        self.n_seen += 1
