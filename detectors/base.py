"""The one detector interface: score a point, then learn it; scores in [0, 1].

Every detector is a plain Python object whose whole state is its attributes, so
``to_state()`` / ``Detector.from_state()`` round-trip it through bytes exactly
(pickle; only ever load snapshots this process family wrote itself).
"""

from __future__ import annotations

import math
import pickle
from abc import ABC, abstractmethod
from collections.abc import Hashable
from datetime import datetime

#: smallest scale used to standardise a value (relative to its level, then absolute),
#: so that a constant series neither divides by zero nor hides a later change
REL_EPS = 1e-6
ABS_EPS = 1e-9


class Detector(ABC):
    """Online anomaly detector for one numeric series (one entity, one attribute).

    ``score_one(x, t)`` returns how anomalous ``x`` at time ``t`` is, in [0, 1], without
    changing the model; ``learn_one(x, t)`` then updates it. ``score_learn`` does both.
    ``warmup`` is the number of points the detector must learn before its scores mean
    anything (it still returns a score, typically 0, during warm-up).
    """

    __slots__ = ()  # so that a subclass may hold its state in slots (one model per entity)
    warmup: int = 0
    n_seen: int = 0

    @abstractmethod
    def score_one(self, x: float, t: datetime) -> float:
        """Anomaly score of ``x`` at ``t`` in [0, 1]; does not change the model."""

    @abstractmethod
    def learn_one(self, x: float, t: datetime) -> None:
        """Update the model with ``x`` at ``t`` (call after ``score_one``)."""

    def score_learn(self, x: float, t: datetime) -> float:
        """Score ``x`` then learn it (the strictly online order)."""
        score = self.score_one(x, t)
        self.learn_one(x, t)
        return score

    @property
    def warmed_up(self) -> bool:
        return self.n_seen >= self.warmup

    def signature(self) -> Hashable:
        """Everything that decides what the model computes (its class and parameters after the
        code's defaults were applied, wrappers included), or None when the model does not tell.
        A bank keeps a restored model exactly when its signature is a freshly built one's, so a
        model written under other defaults restarts instead of scoring by rules its
        configuration no longer names, and an edit that changes nothing it computes (a
        description, a rule threshold) keeps it. Without a signature the configuration's text
        decides."""
        return None

    def upgrade(self, fresh: Detector) -> Detector | None:
        """This restored model carried over to the parameters of ``fresh`` (a model freshly built
        from its configuration today), when they differ from its own only by a test the code
        added since: the new test starts learning from here and the rest of the state is kept.
        None otherwise (the bank then restarts the model). Called by a bank when the signatures
        differ; may change and return ``self``, and must neither change nor keep ``fresh``."""
        return None

    def to_state(self) -> bytes:
        """The detector's complete state as bytes."""
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_state(cls, data: bytes) -> Detector:
        """Rebuild a detector from ``to_state()`` bytes."""
        obj = pickle.loads(data)
        if not isinstance(obj, cls):
            raise TypeError(f"state holds a {type(obj).__name__}, not a {cls.__name__}")
        return obj


#: magnitudes beyond this are clamped to it, so that squares and sums of a window stay finite
MAX_ABS = 1e150


def number(x: object) -> bool:
    """Is ``x`` a real number a parameter may be (an int or a float, not a bool)?"""
    return type(x) is not bool and isinstance(x, int | float)


def clean(x: float) -> float | None:
    """``x`` as a float clamped to ±``MAX_ABS``, or None when it is not a finite number."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(x):
        return None
    return x if -MAX_ABS <= x <= MAX_ABS else math.copysign(MAX_ABS, x)


def scale_floor(level: float) -> float:
    """Smallest meaningful spread around ``level``."""
    return REL_EPS * abs(level) + ABS_EPS


def two_sided_tail(z: float) -> float:
    """1 − P(|Z| ≥ |z|) for a standard normal Z: 0 at the mean, → 1 far out, in [0, 1]."""
    if not math.isfinite(z):
        return 1.0
    return math.erf(abs(z) / math.sqrt(2.0))


def log_tail(z: float, decades: float = 10.0) -> float:
    """Surprise of a standardised deviation on a log scale in [0, 1]: −log10 of the
    two-sided Gaussian tail probability divided by ``decades`` (0.5 ≈ 1 in 10⁵ with 10)."""
    if not math.isfinite(z):
        return 1.0
    a = abs(z)
    if a > 37.0:  # erfc underflows; the score is saturated long before
        return 1.0
    tail = math.erfc(a / math.sqrt(2.0))
    return 1.0 if tail <= 0.0 else min(1.0, -math.log10(tail) / decades)


def squash(z: float) -> float:
    """Map a standardised deviation to (0, 1) smoothly (logistic), for tree features."""
    if z > 40.0:
        return 1.0
    if z < -40.0:
        return 0.0
    return 1.0 / (1.0 + math.exp(-z))


def clip01(s: float) -> float:
    if s != s:  # NaN
        return 0.0
    return 0.0 if s < 0.0 else 1.0 if s > 1.0 else s
