"""False alarms on anomaly-free series: how often would this detector page for nothing?

The NAB score says how a configuration trades detections against false positives on 31
labelled files; it cannot say how it behaves on kinds of series those files do not hold. This
module runs a configuration over synthetic series that contain **no anomaly by construction**,
in families that city sensors resemble (white noise, heavy tails, skew, spiky bursts, a slowly
wandering level, daily and weekly cycles, counts, a stepping sensor, routine dropouts, a
quantised gauge that blips, a square wave, a flat line, a noiseless cycle, a steady trend, a
random walk), and counts the alarms it raises at a threshold.
None of them was used to tune anything; they are a second, independent view of the false-alarm
rate, in the unit an operations centre feels: **alarms per sensor per week**.

Every series is 5-minute readings over ``days`` days from a seeded generator (numpy's PCG64),
strictly online like the live bank; alarms in the first ``settle`` days (the model's warm-up
and its first sight of the daily cycle, like NAB's 15 % probation) are not counted.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from atalaia.detectors.config import DetectorSpec

STEP = timedelta(minutes=5)
PER_DAY = 288
T0 = datetime(2026, 1, 5)  # a Monday

Generator = Callable[[np.random.Generator, np.ndarray, np.ndarray], np.ndarray]


def _white(rng, tod, dow):
    return 50.0 + 5.0 * rng.standard_normal(len(tod))


def _heavy(rng, tod, dow):
    return 50.0 + 3.0 * rng.standard_t(3, len(tod))


def _skewed(rng, tod, dow):
    return 20.0 * np.exp(0.5 * rng.standard_normal(len(tod)))


def _spiky(rng, tod, dow):
    x = 5.0 + 0.5 * rng.standard_normal(len(tod))
    burst = rng.random(len(tod)) < 0.02
    x[burst] += rng.exponential(20.0, int(burst.sum()))
    return x


def _wandering(rng, tod, dow):
    e = rng.standard_normal(len(tod))
    x = np.empty(len(tod))
    level = 0.0
    for i, step in enumerate(e):
        level = 0.95 * level + step
        x[i] = level
    return 100.0 + x


def _daily(rng, tod, dow):
    return 50.0 + 20.0 * np.sin(2 * math.pi * tod) + 3.0 * rng.standard_normal(len(tod))


def _weekly(rng, tod, dow):
    weekend = np.where(dow >= 5, 0.6, 1.0)
    cycle = 1000.0 + 800.0 * np.sin(2 * math.pi * (tod - 0.25))
    return cycle * weekend * np.exp(0.08 * rng.standard_normal(len(tod)))


def _counts(rng, tod, dow):
    return rng.poisson(6.0 * (1.2 + np.sin(2 * math.pi * tod))).astype(float)


def _stepping(rng, tod, dow):
    x = np.empty(len(tod))
    level = 1
    for i, u in enumerate(rng.random(len(tod))):
        if u < 0.05:
            level = min(3, max(0, level + (1 if rng.random() < 0.5 else -1)))
        x[i] = level
    return x


def _dropouts(rng, tod, dow):
    x = 60.0 + 3.0 * rng.standard_normal(len(tod))
    drop = rng.random(len(tod)) < 0.01
    x[drop] = rng.uniform(0.0, 20.0, int(drop.sum()))
    return x


def _blips(rng, tod, dow):
    x = np.full(len(tod), 0.066)
    blip = rng.random(len(tod)) < 0.005
    x[blip] += 0.068 * rng.integers(1, 3, int(blip.sum()))
    return x


def _square(rng, tod, dow):
    return np.where(tod < 0.5, 80.0, 20.0)


def _flat(rng, tod, dow):
    return np.full(len(tod), 42.0)


def _cycle(rng, tod, dow):
    return 50.0 + 20.0 * np.sin(2 * math.pi * tod)


def _trend(rng, tod, dow):
    n = len(tod)
    return 50.0 + 20.0 * np.arange(n) / n + 2.0 * rng.standard_normal(n)


def _walk(rng, tod, dow):
    return 100.0 + np.cumsum(rng.standard_normal(len(tod)))


@dataclass(frozen=True)
class Family:
    name: str
    what: str
    make: Generator


FAMILIES: tuple[Family, ...] = (
    Family("white", "white noise", _white),
    Family("heavy", "heavy-tailed noise (Student t, 3 degrees)", _heavy),
    Family("skewed", "skewed noise (log-normal)", _skewed),
    Family("spiky", "a quiet baseline with bursts in 2 % of readings (CPU, network)", _spiky),
    Family("wandering", "a slowly wandering level (AR(1), 0.95)", _wandering),
    Family("daily", "a daily cycle with noise (temperature, load)", _daily),
    Family("weekly", "a daily cycle, quieter at weekends, multiplicative noise (traffic)", _weekly),
    Family("counts", "Poisson counts with a daily rate (people, mentions)", _counts),
    Family("stepping", "four levels, a step about once in 20 readings (a gate, a pump)", _stepping),
    Family("dropouts", "readings that drop to 0-20 in 1 % of cases (a flaky sensor)", _dropouts),
    Family(
        "blips", "nearly always one value, a step or two up in 0.5 % of readings (a quantised gauge)", _blips
    ),
    Family("square", "a noiseless daily on/off", _square),
    Family("flat", "a constant", _flat),
    Family("cycle", "a noiseless daily cycle", _cycle),
    Family(
        "trend",
        "a steady rise of 10 standard deviations over the series (a filling reservoir, a growing disk)",
        _trend,
    ),
    Family("walk", "a random walk (a tank level, a cumulative balance)", _walk),
)


def series(family: Family, seed: int, days: int) -> tuple[list[datetime], np.ndarray]:
    """One anomaly-free series of ``family``: 5-minute times from ``T0`` and values (the
    generator is seeded by ``seed`` and the family's name, so any family can be run)."""
    n = days * PER_DAY
    times = [T0 + i * STEP for i in range(n)]
    tod = (np.arange(n) % PER_DAY) / PER_DAY
    dow = (np.arange(n) // PER_DAY) % 7
    rng = np.random.default_rng([seed, zlib.crc32(family.name.encode())])
    return times, family.make(rng, tod, dow)


def alarms(spec: DetectorSpec, threshold: float, times: list[datetime], values: np.ndarray) -> list[int]:
    """Indexes where a fresh model of ``spec`` scores at least ``threshold`` (online)."""
    det = spec.build()
    step = det.score_learn
    return [i for i, (t, v) in enumerate(zip(times, values.tolist(), strict=True)) if step(v, t) >= threshold]


def check_threshold(spec: DetectorSpec, threshold: float | None) -> float:
    """``threshold``, or the one ``spec`` ships with; a clear error when neither is a number
    between 0 and 1."""
    thr = spec.threshold if threshold is None else threshold
    if thr is None:
        raise ValueError(f"detector {spec.name!r} ships no threshold: give --threshold")
    if not 0.0 <= thr <= 1.0:  # (NaN too: it would count no alarm at all)
        raise ValueError(f"the threshold must be between 0 and 1, not {thr!r}")
    return thr


def per_week(
    spec: DetectorSpec,
    threshold: float | None = None,
    days: int = 14,
    seeds: int = 20,
    settle: int = 2,
    families: tuple[Family, ...] = FAMILIES,
) -> dict[str, float]:
    """Alarms per sensor per week of each family (mean over ``seeds`` series), counted after
    the first ``settle`` days, at ``threshold`` (default: the one the configuration ships with)."""
    if days <= settle:
        raise ValueError(f"days ({days}) must exceed the settling days ({settle})")
    if seeds < 1:
        raise ValueError("seeds must be at least 1")
    thr = check_threshold(spec, threshold)
    first = settle * PER_DAY
    out = {}
    for family in families:
        count = 0
        for seed in range(seeds):
            times, values = series(family, seed, days)
            count += sum(1 for i in alarms(spec, thr, times, values) if i >= first)
        out[family.name] = count / seeds * 7.0 / (days - settle)
    return out
