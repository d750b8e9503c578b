"""Aggregates over an event-time window ``(t - window, t]`` of ``(time, value)`` samples sorted by time.

``delta`` = last - first and ``rate`` = delta / seconds between them need two samples; with fewer the
aggregate has no value and no severity holds (as in Prometheus).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Samples = Sequence[tuple[float, float]]


def _avg(w: Samples) -> float | None:
    return sum(v for _, v in w) / len(w) if w else None


def _min(w: Samples) -> float | None:
    return min(v for _, v in w) if w else None


def _max(w: Samples) -> float | None:
    return max(v for _, v in w) if w else None


def _sum(w: Samples) -> float | None:
    return float(sum(v for _, v in w)) if w else None


def _count(w: Samples) -> float | None:
    return float(len(w))


def _last(w: Samples) -> float | None:
    return w[-1][1] if w else None


def _delta(w: Samples) -> float | None:
    return w[-1][1] - w[0][1] if len(w) >= 2 else None


def _rate(w: Samples) -> float | None:
    if len(w) < 2 or w[-1][0] == w[0][0]:
        return None
    return (w[-1][1] - w[0][1]) / (w[-1][0] - w[0][0])


AGGREGATES: dict[str, Callable[[Samples], float | None]] = {
    "avg": _avg,
    "min": _min,
    "max": _max,
    "sum": _sum,
    "count": _count,
    "last": _last,
    "delta": _delta,
    "rate": _rate,
}
