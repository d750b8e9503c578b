"""Aggregates over an event-time window ``(t - window, t]``, given as parallel lists of sample times and
values sorted by time (builtins over plain lists: the hot path stays in C).

``delta`` = last - first and ``rate`` = delta / seconds between them need two samples; with fewer the
aggregate has no value and no severity holds (as in Prometheus). An aggregate that overflows
(``sum``/``avg``/``delta``/``rate`` of values near ±1.8e308: ±inf) has no value either: the engine only
compares finite numbers (it rejects non-finite readings) and a transition's JSON cannot carry inf.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from math import isfinite

NEG_INF = float("-inf")

Aggregate = Callable[[list[float], list[float]], float | None]


def _avg(times: list[float], values: list[float]) -> float | None:
    if not values:
        return None
    v = sum(values) / len(values)
    return v if isfinite(v) else None


def _min(times: list[float], values: list[float]) -> float | None:
    return min(values) if values else None


def _max(times: list[float], values: list[float]) -> float | None:
    return max(values) if values else None


def _sum(times: list[float], values: list[float]) -> float | None:
    if not values:
        return None
    v = float(sum(values))
    return v if isfinite(v) else None


def _count(times: list[float], values: list[float]) -> float | None:
    return float(len(values))


def _last(times: list[float], values: list[float]) -> float | None:
    return values[-1] if values else None


def _delta(times: list[float], values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    v = values[-1] - values[0]
    return v if isfinite(v) else None


def _rate(times: list[float], values: list[float]) -> float | None:
    if len(values) < 2 or times[-1] == times[0]:
        return None
    v = (values[-1] - values[0]) / (times[-1] - times[0])
    return v if isfinite(v) else None


AGGREGATES: dict[str, Aggregate] = {
    "avg": _avg,
    "min": _min,
    "max": _max,
    "sum": _sum,
    "count": _count,
    "last": _last,
    "delta": _delta,
    "rate": _rate,
}

EXTREMES = ("min", "max")


class Extreme:
    """The running min or max of a window, exactly as :func:`min`/:func:`max` of its values would give
    (the earliest of equal extremes), in O(1) amortised per sample instead of a rescan.

    Keeps the candidates (times, values): samples not dominated by a later one (for max: no later sample
    is strictly greater), so the values are monotonic and the first candidate is the extreme. Samples
    must come in time order; a late sample (inserted in the middle of the window) needs a rebuild.
    """

    __slots__ = ("is_max", "times", "values")

    def __init__(self, is_max: bool, times: list[float], values: list[float]) -> None:
        self.is_max = is_max
        self.times: list[float] = []
        self.values: list[float] = []
        for t, v in zip(times, values, strict=True):
            self.push(t, v, NEG_INF)

    def push(self, t: float, v: float, cutoff: float) -> float | None:
        """Add a sample at time ``t`` (>= every earlier one), forget samples at or before ``cutoff``, and
        return the extreme of what is left (None when nothing is)."""
        times, values = self.times, self.values
        if self.is_max:
            while values and values[-1] < v:
                values.pop()
                times.pop()
        else:
            while values and values[-1] > v:
                values.pop()
                times.pop()
        times.append(t)
        values.append(v)
        if times[0] <= cutoff:
            drop = bisect_right(times, cutoff)
            del times[:drop]
            del values[:drop]
        return values[0] if values else None
