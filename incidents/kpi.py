"""Alarm-load KPIs after EEMUA 191, computed live from the annunciations the manager makes.

* alarms per operator position per window (default 10 min), and its peak;
* time in flood: a position is in flood while more than ``threshold`` alarms were annunciated in the
  trailing window; the meter integrates that time exactly on event time;
* chattering alarms (flagged by the manager: >= N state changes within a minute) and stale alarms
  (firing for more than ``stale_after``) are counted from the manager state.

``export_kpis(registry, snapshot)`` publishes a :class:`KpiSnapshot` as Prometheus metrics.
"""

from __future__ import annotations

import bisect
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any

ALL = "all"


@dataclass(slots=True)
class FloodMeter:
    """Sliding-window annunciation count with exact time-in-flood integration (event time, µs)."""

    times: deque[int] = field(default_factory=deque)
    flood_us: int = 0
    since: int | None = None
    clock: int | None = None
    total: int = 0
    peak: int = 0

    def advance(self, t: int, window: int, threshold: int) -> None:
        if self.clock is None:
            self.since = self.clock = t
            return
        if t <= self.clock:
            return
        times = self.times
        while times and times[0] + window <= t:
            expiry = times[0] + window
            if len(times) > threshold and expiry > self.clock:
                self.flood_us += expiry - self.clock
            self.clock = max(self.clock, expiry)
            times.popleft()
        if len(times) > threshold:
            self.flood_us += t - self.clock
        self.clock = t

    def add(self, t: int, window: int, threshold: int) -> None:
        self.advance(t, window, threshold)
        self.total += 1
        assert self.clock is not None
        if t + window <= self.clock:  # too late to be in the window any more
            return
        if self.times and t < self.times[-1]:  # late annunciation: keep the window sorted
            bisect.insort(self.times, t)
        else:
            self.times.append(t)
        self.peak = max(self.peak, len(self.times))

    def in_flood(self, threshold: int) -> bool:
        return len(self.times) > threshold

    def average(self, window: int) -> float:
        if self.since is None or self.clock is None or self.clock <= self.since:
            return float(self.total)
        return self.total * window / max(window, self.clock - self.since)

    def flood_ratio(self) -> float:
        if self.since is None or self.clock is None or self.clock <= self.since:
            return 0.0
        return self.flood_us / (self.clock - self.since)


@dataclass(slots=True)
class KpiState:
    meters: dict[str, FloodMeter] = field(default_factory=dict)  # position (and "all") -> meter
    chattering_flagged: int = 0  # times an alarm was flagged chattering
    auto_shelved: int = 0  # chattering alarms shelved by policy
    by_rule: dict[str, int] = field(default_factory=dict)  # annunciations per rule (EEMUA "bad actors")

    def annunciate(self, position: str, t: int, window: int, threshold: int, rule: str = "") -> None:
        self.by_rule[rule] = self.by_rule.get(rule, 0) + 1
        for name in (position, ALL):
            meter = self.meters.get(name)
            if meter is None:
                meter = self.meters[name] = FloodMeter()
            meter.add(t, window, threshold)

    def advance(self, t: int, window: int, threshold: int) -> None:
        for meter in self.meters.values():
            meter.advance(t, window, threshold)


@dataclass(slots=True, frozen=True)
class PositionKpi:
    position: str
    alarms_in_window: int
    peak_in_window: int
    in_flood: bool
    flood_ratio: float  # fraction of observed time in flood
    annunciated_total: int
    average_per_window: float  # annunciations per window, averaged over the observed time


@dataclass(slots=True, frozen=True)
class KpiSnapshot:
    at: str
    window_s: float
    threshold: int
    positions: tuple[PositionKpi, ...]
    chattering_alarms: int  # currently flagged
    chattering_flagged_total: int
    auto_shelved_total: int
    stale_alarms: int
    open_incidents: dict[str, int]  # by state
    suppressed_alarms: int
    stats: dict[str, int]
    top_rules: tuple[tuple[str, int], ...] = ()  # the most frequent alarms (EEMUA: top 10 bad actors)

    def position(self, name: str) -> PositionKpi | None:
        return next((p for p in self.positions if p.position == name), None)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


class KpiCollector:
    """A Prometheus collector over the latest :class:`KpiSnapshot` (set with :meth:`update`)."""

    def __init__(self) -> None:
        self.snapshot: KpiSnapshot | None = None

    def update(self, snapshot: KpiSnapshot) -> None:
        self.snapshot = snapshot

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.snapshot
        if s is None:
            return
        rate = GaugeMetricFamily(
            "atalaia_alarms_per_window",
            "alarms annunciated in the trailing flood window (EEMUA 191: per operator position per 10 min)",
            labels=["position"],
        )
        peak = GaugeMetricFamily(
            "atalaia_alarms_per_window_peak", "highest alarms per window seen", labels=["position"]
        )
        flood = GaugeMetricFamily(
            "atalaia_alarm_flood", "1 while the position is in alarm flood", labels=["position"]
        )
        ratio = GaugeMetricFamily(
            "atalaia_alarm_flood_time_ratio", "fraction of observed time in flood", labels=["position"]
        )
        total = CounterMetricFamily("atalaia_alarms_annunciated", "alarms annunciated", labels=["position"])
        for p in s.positions:
            rate.add_metric([p.position], p.alarms_in_window)
            peak.add_metric([p.position], p.peak_in_window)
            flood.add_metric([p.position], 1.0 if p.in_flood else 0.0)
            ratio.add_metric([p.position], p.flood_ratio)
            total.add_metric([p.position], p.annunciated_total)
        average = GaugeMetricFamily(
            "atalaia_alarms_per_window_average",
            "alarms per window averaged over the observed time",
            labels=["position"],
        )
        for p in s.positions:
            average.add_metric([p.position], p.average_per_window)
        yield from (rate, peak, flood, ratio, total, average)
        top = CounterMetricFamily(
            "atalaia_alarms_annunciated_by_rule", "annunciations of the most frequent rules", labels=["rule"]
        )
        for rule, n in s.top_rules:
            top.add_metric([rule], n)
        yield top
        yield GaugeMetricFamily(
            "atalaia_chattering_alarms", "alarms currently flagged chattering", value=s.chattering_alarms
        )
        yield CounterMetricFamily(
            "atalaia_chattering_flagged",
            "times an alarm was flagged chattering",
            value=s.chattering_flagged_total,
        )
        yield CounterMetricFamily(
            "atalaia_alarms_auto_shelved", "chattering alarms shelved by policy", value=s.auto_shelved_total
        )
        yield GaugeMetricFamily(
            "atalaia_stale_alarms", "alarms firing longer than the stale limit", value=s.stale_alarms
        )
        yield GaugeMetricFamily(
            "atalaia_suppressed_alarms",
            "alarms in open incidents that are suppressed",
            value=s.suppressed_alarms,
        )
        opened = GaugeMetricFamily("atalaia_open_incidents", "open incidents by state", labels=["state"])
        for state, n in sorted(s.open_incidents.items()):
            opened.add_metric([state], n)
        yield opened
        stats = CounterMetricFamily(
            "atalaia_incident_inputs", "inputs processed by the incident manager", labels=["kind"]
        )
        for kind, n in sorted(s.stats.items()):
            stats.add_metric([kind], n)
        yield stats


_collectors: weakref.WeakKeyDictionary[Any, KpiCollector] = weakref.WeakKeyDictionary()


def export_kpis(registry: Any, snapshot: KpiSnapshot) -> KpiCollector:
    """Publish ``snapshot`` in ``registry`` (a ``prometheus_client.CollectorRegistry``); the first call
    registers a collector, later calls replace the snapshot it reports."""
    collector = _collectors.get(registry)
    if collector is None:
        collector = _collectors[registry] = KpiCollector()
        registry.register(collector)
    collector.update(snapshot)
    return collector
