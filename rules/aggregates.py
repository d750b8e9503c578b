"""Aggregates over an event-time window ``(t - window, t]``, given as parallel lists of sample times and
values sorted by time (builtins over plain lists: the hot path stays in C).

``delta`` = last - first and ``rate`` = delta / seconds between them need two samples; with fewer the
aggregate has no value and no severity holds (as in Prometheus).
"""

from __future__ import annotations

from collections.abc import Callable

Aggregate = Callable[[list[float], list[float]], float | None]


def _avg(times: list[float], values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _min(times: list[float], values: list[float]) -> float | None:
    return min(values) if values else None


def _max(times: list[float], values: list[float]) -> float | None:
    return max(values) if values else None


def _sum(times: list[float], values: list[float]) -> float | None:
    return float(sum(values)) if values else None


def _count(times: list[float], values: list[float]) -> float | None:
    return float(len(values))


def _last(times: list[float], values: list[float]) -> float | None:
    return values[-1] if values else None


def _delta(times: list[float], values: list[float]) -> float | None:
    return values[-1] - values[0] if len(values) >= 2 else None


def _rate(times: list[float], values: list[float]) -> float | None:
    if len(values) < 2 or times[-1] == times[0]:
        return None
    return (values[-1] - values[0]) / (times[-1] - times[0])


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
