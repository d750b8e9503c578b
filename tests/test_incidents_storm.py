"""Scenario: a storm over Porto (river, rain and air alarms in four parishes, one station's comms
failure) -> four incidents, the failing station's sensors shown inhibited, the KPIs report the flood,
and after the storm operators acknowledge and everything closes. KPIs reach Prometheus."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from atalaia.incidents.config import IncidentConfig
from atalaia.incidents.events import IncidentEvent
from atalaia.incidents.kpi import export_kpis
from atalaia.incidents.scenarios import FAILING_STATION, PARISHES, STORM_CONFIG, porto_storm
from atalaia.incidents.testing import Driver


def run_storm() -> tuple[Driver, list[dict]]:
    d = Driver(IncidentConfig.model_validate(STORM_CONFIG))
    storm = porto_storm()
    for tr in storm:
        d.step(tr, _seconds(tr["at"]))
    return d, storm


def _seconds(at: str) -> float:
    from atalaia.incidents.model import SECOND, to_us
    from atalaia.incidents.testing import T0

    return (to_us(at) - to_us(T0)) / SECOND


def test_storm_gives_one_incident_per_parish_with_inhibited_sensors() -> None:
    d, storm = run_storm()
    opened = [e for e in d.events() if e.change == "opened"]
    assert len(storm) > 130 and len(opened) == len(PARISHES) == 4
    assert {e.correlation["parish"] for e in opened} == set(PARISHES)
    unique = {(t["rule"], t["key"], t["state"], t["at"], t["severity"]) for t in storm}
    assert d.state.stats["duplicates"] == len(storm) - len(unique) > 0  # redeliveries changed nothing
    # while the station is down, every other alarm of that station is shown suppressed, none hidden
    during = [
        e
        for e in d.events()
        if e.correlation.get("parish") == "Campanhã"
        and e.at < "2026-01-01T00:56:40Z"
        and e.at >= "2026-01-01T00:05:00Z"
    ]
    last = during[-1]
    sensors = [a for a in last.alarms if a.rule != "station-comms-failure"]
    assert sensors and all(
        a.suppressed == f"inhibited by station-comms-failure {FAILING_STATION}" for a in sensors
    )
    assert last.alarm_count == 13  # 12 sensors + the failure: nothing lost
    failure = next(e for e in during if e.at == "2026-01-01T00:05:00Z")
    assert failure.changes[0] == "alarm-added" and "alarm-suppressed" in failure.changes


def test_storm_kpis_report_the_flood_and_export_to_prometheus() -> None:
    d, _ = run_storm()
    k = d.manager.kpis(d.state)
    everyone, hydro = k.position("all"), k.position("hydro")
    assert everyone is not None and hydro is not None
    assert everyone.peak_in_window > 10 and hydro.peak_in_window > 10
    assert 0.0 < everyone.flood_ratio < 1.0 and hydro.flood_ratio > 0.0
    assert (
        everyone.annunciated_total < 76
    )  # inhibited and auto-shelved chattering alarms were not annunciated
    assert k.chattering_flagged_total >= 1 and k.auto_shelved_total == k.chattering_flagged_total
    assert 0 < everyone.average_per_window < everyone.peak_in_window
    rules = dict(k.top_rules)
    assert sum(rules.values()) == everyone.annunciated_total and rules["river-level-high"] > 0
    registry = CollectorRegistry()
    export_kpis(registry, k)
    text = generate_latest(registry).decode()
    assert 'atalaia_alarms_per_window_peak{position="hydro"}' in text
    assert 'atalaia_alarms_annunciated_by_rule_total{rule="rain-intense"}' in text
    assert (
        registry.get_sample_value("atalaia_alarm_flood_time_ratio", {"position": "all"})
        == everyone.flood_ratio
    )
    later = d.manager.kpis(d.state, "2026-01-02T06:00:00Z")
    export_kpis(registry, later)  # the same registry, updated in place
    assert registry.get_sample_value("atalaia_alarm_flood", {"position": "all"}) == 0.0
    assert (
        registry.get_sample_value("atalaia_alarms_annunciated_total", {"position": "all"})
        == everyone.annunciated_total
    )


def test_after_the_storm_operators_acknowledge_and_everything_closes() -> None:
    d, _ = run_storm()
    for iid in sorted(d.state.incidents):
        ev = d.current(iid)
        assert not ev.active
        if ev.state == "returned-unacknowledged":
            d.command("acknowledge", at=3600, incident=iid, actor="ana")
    d.tick(3600 + 301)
    assert d.state.incidents == {}
    closes = [e for e in d.events() if e.change == "closed"]
    assert len(closes) == 4 and all(e.actor == "policy:closing" and not e.active for e in closes)


def test_stale_alarms_are_counted() -> None:
    d = Driver()
    d.fire("river-level-high", "porto-01", at=0, parish="Ribeira")
    d.fire("rain-intense", "rain-07", at=3600 * 20, parish="Campanhã")
    assert d.manager.kpis(d.state, "2026-01-02T00:00:01Z").stale_alarms == 1


def test_flood_meter_integrates_time_in_flood_exactly() -> None:
    d = Driver(IncidentConfig.model_validate({"flood": {"threshold": 2, "window": "10m"}}))
    for i, t in enumerate([0, 60, 120]):  # the third alarm at 120 s starts a flood ...
        d.fire("river-level-high", f"porto-{i}", at=t, parish="Ribeira")
    k = d.manager.kpis(d.state, "2026-01-01T00:20:00Z")  # ... which ends at 600 s when the first leaves
    p = k.position("all")
    assert p is not None and p.peak_in_window == 3 and not p.in_flood
    assert abs(p.flood_ratio - 480 / 1200) < 1e-9
    assert p.average_per_window == 3 * 600 / 1200
    assert isinstance(d.events()[0], IncidentEvent)
