"""Sensor faults injected into anomaly-free series: does this detector see them, and how fast?

The companion of ``null.py``. That module counts the alarms a configuration raises on series
that hold no anomaly; this one injects **one fault** into each of those series and asks whether
the configuration alarms within ``window`` readings of its onset. The faults are the usual
taxonomy of sensor faults (outliers, offsets, drift, a noisier sensor, a frozen one, a dead one
reading zero), sized by the series' own spread before the onset, so the same fault is as large
for a quiet sensor as for a noisy one, and four **contextual** faults whose readings stay
inside the series' range (its daily cycle stops, runs late, its deviations shrink, or its
course runs twice as fast): those
are injected only into the families that can show them (``Fault.hosts``). Nothing is tuned on them: like the null families they
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

__all__ = [
    "CYCLIC",
    "FAULTS",
    "HOSTS",
    "NOISY",
    "PACED",
    "STEP",
    "Fault",
    "Result",
    "detection",
    "faulty",
    "hosts",
    "onset",
]

#: (values, onset index, spread, level, the usual level of each hour of the day) -> the
#: values with the fault from the onset on
Injector = Callable[[np.ndarray, int, float, float, np.ndarray], np.ndarray]
#: readings per hour
PER_HOUR = PER_DAY // 24


def _spike(sign: float) -> Injector:
    def inject(x, at, sd, level, hours):
        x[at] += sign * 6.0 * sd
        return x

    return inject


def _shift(sign: float) -> Injector:
    def inject(x, at, sd, level, hours):
        x[at:] += sign * 3.0 * sd
        return x

    return inject


def _drift(x, at, sd, level, hours):
    ramp = np.minimum(np.arange(len(x) - at) / PER_DAY, 1.0)
    x[at:] += 4.0 * sd * ramp
    return x


def _noisy(x, at, sd, level, hours):
    end = at + PER_DAY
    x[at:end] = level + 3.0 * (x[at:end] - level)
    return x


def _stuck(x, at, sd, level, hours):
    x[at : at + PER_DAY] = x[at]
    return x


def _zero(x, at, sd, level, hours):
    x[at : at + PER_DAY] = 0.0
    return x


def _hour(at: int, n: int) -> np.ndarray:
    """The hour of the day (0-23) of readings ``at`` to ``at + n`` (the series start at
    midnight)."""
    return (np.arange(at, at + n) % PER_DAY) // PER_HOUR


def _no_cycle(x, at, sd, level, hours):
    end = min(at + PER_DAY, len(x))
    x[at:end] += level - hours[_hour(at, end - at)]
    return x


def _late_cycle(x, at, sd, level, hours):
    end = min(at + PER_DAY, len(x))
    late = 6 * PER_HOUR
    x[at:end] = x[at - late : end - late].copy()  # the readings of six hours before, replayed
    return x


def _quiet(x, at, sd, level, hours):
    end = min(at + PER_DAY, len(x))
    usual = hours[_hour(at, end - at)]
    x[at:end] = usual + 0.2 * (x[at:end] - usual)
    return x


def _double_speed(x, at, sd, level, hours):
    end = min(at + PER_DAY, len(x))
    # the readings of the next two days, every other one: the series' own values and range,
    # its course twice as fast
    fast = x[at : at + 2 * (end - at) : 2].copy()
    x[at : at + len(fast)] = fast
    return x


#: the families with a daily cycle, and those with noise around a stationary level
CYCLIC = ("daily", "weekly", "counts", "square", "cycle")
NOISY = ("white", "heavy", "skewed", "spiky", "daily", "weekly", "counts", "dropouts")
#: the families whose readings have an order to speed up without leaving their range: the cycles,
#: a wandering level, a stepping sensor (not noise, whose order says nothing, nor a trend or a
#: random walk, whose next days' readings leave the range seen)
PACED = (*CYCLIC, "wandering", "stepping")


@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    inject: Injector
    #: the families it is injected into (None: every one of ``HOSTS``); a fault that a family
    #: cannot show (a cycle that stops in a series without one) would only count chance alarms
    hosts: tuple[str, ...] | None = None


FAULTS: tuple[Fault, ...] = (
    Fault("spike", "one reading 6 standard deviations high", _spike(1.0)),
    Fault("dip", "one reading 6 standard deviations low", _spike(-1.0)),
    Fault("shift-up", "the level steps up 3 standard deviations and stays", _shift(1.0)),
    Fault("shift-down", "the level steps down 3 standard deviations and stays", _shift(-1.0)),
    Fault("drift", "the level drifts up 4 standard deviations over a day and stays", _drift),
    Fault("noisy", "deviations from the median three times as large for a day", _noisy),
    Fault("stuck", "the reading at the onset repeated for a day (a frozen sensor)", _stuck),
    Fault("zero", "0 for a day (a dead sensor, a feed that reports zeros)", _zero),
    # contextual faults (added after the ones above, fixed before any detector was measured on
    # them): each reading stays inside the range the series has produced; only its time of
    # day, or its spread, says something is wrong
    Fault(
        "no-cycle",
        "the daily cycle stops for a day: every reading holds the median instead of its hour's "
        "usual level, with its usual deviations (a holiday, a stopped pump schedule)",
        _no_cycle,
        CYCLIC,
    ),
    Fault(
        "late-cycle",
        "the daily cycle runs 6 hours late for a day (a clock, a shifted schedule)",
        _late_cycle,
        CYCLIC,
    ),
    Fault(
        "quiet",
        "deviations from the hour's usual level a fifth as large for a day (a sensor that lost most "
        "of its signal, an interpolated feed)",
        _quiet,
        NOISY,
    ),
    # added with the pattern-rarity feature (detectors/README.md, "A pattern-rarity feature"),
    # fixed before any detector was measured on it: none of the three above changes the
    # series' rhythm while keeping its values
    Fault(
        "double-speed",
        "the series runs twice as fast for a day: the readings of the next two days, every other one "
        "(a clock or a schedule running fast, a controller hunting)",
        _double_speed,
        PACED,
    ),
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
    """``values`` with ``fault`` from ``at`` on (a copy), sized by the spread, the median and
    the median of each hour of the day of the readings before ``at``."""
    before = values[:at]
    hour = _hour(0, at)
    hours = np.array([float(np.median(before[hour == h])) for h in range(24)])
    return fault.inject(values.copy(), at, float(np.std(before)) or 1.0, float(np.median(before)), hours)


def hosts(fault: Fault, families: tuple[Family, ...] = HOSTS) -> tuple[Family, ...]:
    """The ones of ``families`` that ``fault`` is injected into."""
    return families if fault.hosts is None else tuple(f for f in families if f.name in fault.hosts)


def hosts_of(family: str) -> tuple[Fault, ...]:
    """The faults injected into the family named ``family``."""
    return tuple(f for f in FAULTS if f.hosts is None or family in f.hosts)


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
    ``threshold``, default the configuration's own), by chance (in the same windows of the
    fault's host series without it), and how soon. A fault is injected only into the ones of
    ``families`` it can show (``Fault.hosts``); one that none of them can is left out."""
    if days < settle + 6:
        raise ValueError(f"days ({days}) must be at least the settling days + 6 ({settle + 6})")
    if seeds < 1:
        raise ValueError("seeds must be at least 1")
    if window < 1:
        raise ValueError("window must be at least 1 reading")
    thr = check_threshold(spec, threshold)
    cases = {}  # family name -> [(times, values, onset, the alarms without the fault)]
    for family in families:
        cases[family.name] = []
        for seed in range(seeds):
            times, values = series(family, seed, days)
            cases[family.name].append((times, values, onset(family, seed, days, settle)))
    clean = {
        (name, k): any(at <= i < at + window for i in alarms(spec, thr, times, values))
        for name, rows in cases.items()
        for k, (times, values, at) in enumerate(rows)
    }
    out = {}
    for fault in faults:
        delays, by_chance, total = [], 0, 0
        for family in hosts(fault, families):
            for k, (times, values, at) in enumerate(cases[family.name]):
                total += 1
                by_chance += clean[family.name, k]
                hits = [
                    i - at
                    for i in alarms(spec, thr, times, faulty(fault, values, at))
                    if at <= i < at + window
                ]
                if hits:
                    delays.append(hits[0])
        if total:  # (a fault none of ``families`` can show is left out)
            out[fault.name] = Result(
                len(delays) / total, by_chance / total, statistics.median(delays) if delays else None
            )
    return out
