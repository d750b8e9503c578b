"""Sensor faults injected into anomaly-free series: does this detector see them, and how fast?

The companion of ``null.py``. That module counts the alarms a configuration raises on series
that hold no anomaly; this one injects **one fault** into each of those series and asks whether
the configuration alarms within ``window`` readings of its onset. The faults are the usual
taxonomy of sensor faults (outliers, offsets, drift, a noisier sensor, a frozen one, a dead one
reading zero), sized by the series' own spread before the onset, so the same fault is as large
for a quiet sensor as for a noisy one. Nothing is tuned on them: like the null families they
are a view independent of the NAB files, of the recall side.

Each fault is injected once per (family, seed) at an onset drawn from the seed, between the
third day after the settling days and two days before the end. An alarm in the window counts
as a detection, so the table also gives **by chance**: the fraction of the same windows, in
the same series without the fault, that hold an alarm anyway.
"""

from __future__ import annotations

import statistics
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from atalaia.detectors.config import DetectorSpec
from atalaia.detectors.null import FAMILIES, PER_DAY, STEP, Family, alarms, check_threshold, series

__all__ = ["FAULTS", "HOSTS", "STEP", "Fault", "Result", "detection", "faulty", "onset"]

#: (values, onset index, spread, level) -> the values with the fault from the onset on
Injector = Callable[[np.ndarray, int, float, float], np.ndarray]


def _spike(sign: float) -> Injector:
    def inject(x, at, sd, level):
        x[at] += sign * 6.0 * sd
        return x

    return inject


def _shift(sign: float) -> Injector:
    def inject(x, at, sd, level):
        x[at:] += sign * 3.0 * sd
        return x

    return inject


def _drift(x, at, sd, level):
    ramp = np.minimum(np.arange(len(x) - at) / PER_DAY, 1.0)
    x[at:] += 4.0 * sd * ramp
    return x


def _noisy(x, at, sd, level):
    end = at + PER_DAY
    x[at:end] = level + 3.0 * (x[at:end] - level)
    return x


def _stuck(x, at, sd, level):
    x[at : at + PER_DAY] = x[at]
    return x


def _zero(x, at, sd, level):
    x[at : at + PER_DAY] = 0.0
    return x


@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    inject: Injector


FAULTS: tuple[Fault, ...] = (
    Fault("spike", "one reading 6 standard deviations high", _spike(1.0)),
    Fault("dip", "one reading 6 standard deviations low", _spike(-1.0)),
    Fault("shift-up", "the level steps up 3 standard deviations and stays", _shift(1.0)),
    Fault("shift-down", "the level steps down 3 standard deviations and stays", _shift(-1.0)),
    Fault("drift", "the level drifts up 4 standard deviations over a day and stays", _drift),
    Fault("noisy", "deviations from the median three times as large for a day", _noisy),
    Fault("stuck", "the reading at the onset repeated for a day (a frozen sensor)", _stuck),
    Fault("zero", "0 for a day (a dead sensor, a feed that reports zeros)", _zero),
)

#: the families a fault is injected into: every null family but the constant (on which a
#: frozen, noisier or drifting sensor is the same thing or undefined)
HOSTS: tuple[Family, ...] = tuple(f for f in FAMILIES if f.name != "flat")


def onset(family: Family, seed: int, days: int, settle: int) -> int:
    """The fault's onset in a series of ``family``: drawn from the seed, between ``settle + 3``
    days and 2 days before the end."""
    rng = np.random.default_rng([seed, zlib.crc32(family.name.encode()), 1])
    return int(rng.integers((settle + 3) * PER_DAY, (days - 2) * PER_DAY))


def faulty(fault: Fault, values: np.ndarray, at: int) -> np.ndarray:
    """``values`` with ``fault`` from ``at`` on (a copy), sized by the spread and median of
    the readings before ``at``."""
    before = values[:at]
    return fault.inject(values.copy(), at, float(np.std(before)) or 1.0, float(np.median(before)))


@dataclass(frozen=True)
class Result:
    detected: float  # fraction of the series with an alarm in the window after the onset
    chance: float  # the same windows without the fault
    delay: float | None  # median readings from the onset to the first alarm, when detected


def detection(
    spec: DetectorSpec,
    threshold: float | None = None,
    days: int = 14,
    seeds: int = 5,
    settle: int = 2,
    window: int = PER_DAY // 2,
    faults: tuple[Fault, ...] = FAULTS,
    families: tuple[Family, ...] = HOSTS,
) -> dict[str, Result]:
    """Per fault: how often ``spec`` alarms within ``window`` readings of its onset (at
    ``threshold``, default the configuration's own), by chance, and how soon."""
    if days < settle + 6:
        raise ValueError(f"days ({days}) must be at least the settling days + 6 ({settle + 6})")
    if seeds < 1:
        raise ValueError("seeds must be at least 1")
    if window < 1:
        raise ValueError("window must be at least 1 reading")
    thr = check_threshold(spec, threshold)
    cases = []
    for family in families:
        for seed in range(seeds):
            times, values = series(family, seed, days)
            cases.append((times, values, onset(family, seed, days, settle)))
    chance = sum(
        any(at <= i < at + window for i in alarms(spec, thr, times, values)) for times, values, at in cases
    ) / len(cases)
    out = {}
    for fault in faults:
        delays = []
        for times, values, at in cases:
            hits = [
                i - at for i in alarms(spec, thr, times, faulty(fault, values, at)) if at <= i < at + window
            ]
            if hits:
                delays.append(hits[0])
        out[fault.name] = Result(
            len(delays) / len(cases), chance, statistics.median(delays) if delays else None
        )
    return out
