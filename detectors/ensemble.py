"""Ensemble: several detectors on the same series, scores combined."""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime

from atalaia.detectors.base import Detector, clean

COMBINE = ("max", "mean", "min")


class Ensemble(Detector):
    """Score with every member, combine by ``max`` (any expert alarmed), ``mean`` or ``min``
    (every expert must agree).

    >>> from datetime import datetime, timedelta
    >>> from atalaia.detectors.gaussian import GaussianTail
    >>> t0 = datetime(2026, 1, 1)
    >>> det = Ensemble([GaussianTail(window=50, warmup=5), GaussianTail(feature="diff", warmup=5)])
    >>> for i in range(60):
    ...     _ = det.score_learn(float(i % 3), t0 + timedelta(minutes=i))
    >>> det.score_one(1.0, t0) < 0.9 < det.score_one(30.0, t0)
    True
    """

    def __init__(self, members: list[Detector], combine: str = "max") -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if combine not in COMBINE:
            raise ValueError(f"combine must be one of {COMBINE}, not {combine!r}")
        self.members = members
        self.combine = combine
        self.warmup = max(m.warmup for m in members)
        self.n_seen = 0

    def score_one(self, x: float, t: datetime) -> float:
        if clean(x) is None:
            return 0.0
        scores = [m.score_one(x, t) for m in self.members]
        if self.combine == "mean":
            return sum(scores) / len(scores)
        return max(scores) if self.combine == "max" else min(scores)

    def signature(self) -> Hashable:
        members = tuple(m.signature() for m in self.members)
        return None if None in members else ("ensemble", self.combine, members)

    def learn_one(self, x: float, t: datetime) -> None:
        if clean(x) is None:
            return
        for m in self.members:
            m.learn_one(x, t)
        self.n_seen += 1
