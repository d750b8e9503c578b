"""Inhibition (parent condition suppresses its children), maintenance suppression by design,
chattering flagging and auto-shelving; the configuration loader's errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from atalaia.incidents.config import ConfigError, IncidentConfig, load_config
from atalaia.incidents.testing import Driver

INHIBIT = {
    "inhibit": [
        {
            "source_matchers": ['rule=~"station-(power|comms)-failure"'],
            "target_matchers": ['rule!~"station-.*"'],
            "equal": ["station"],
        }
    ]
}


def inhibited_driver(**extra) -> Driver:
    return Driver(IncidentConfig.model_validate({**INHIBIT, **extra}))


def test_station_failure_inhibits_its_sensors_shown_not_hidden() -> None:
    d = inhibited_driver()
    d.fire(
        "station-comms-failure", "st-ribeira", at=0, parish="Ribeira", station="st-ribeira", severity="medium"
    )
    ev = d.fire(
        "river-level-high", "porto-01", at=10, parish="Ribeira", station="st-ribeira", severity="critical"
    )
    sensor = next(a for a in ev.alarms if a.rule == "river-level-high")
    assert sensor.suppressed == "inhibited by station-comms-failure st-ribeira"
    assert ev.alarm_count == 2 and ev.severity == "medium"  # the inhibited critical does not drive severity
    other = d.fire("river-level-high", "porto-02", at=11, parish="Ribeira", station="st-campanha")
    assert next(a for a in other.alarms if a.key == "porto-02").suppressed is None


def test_target_first_then_source_then_source_clears() -> None:
    d = inhibited_driver()
    d.fire("river-level-high", "porto-01", at=0, parish="Foz", station="st-1")
    d.command("acknowledge", at=5)
    sensor_incident = d.last_incident()
    d.fire("station-power-failure", "st-1", at=10, parish="Ribeira", station="st-1")
    ev = d.current(sensor_incident)
    assert ev.state == "suppressed" and ev.active and ev.change == "alarm-suppressed"
    assert ev.actor == "inhibition:station-power-failure"
    d.fire("river-level-high", "porto-01", at=20, parish="Foz", station="st-1", value=9.0)  # still recorded
    assert d.current(sensor_incident).alarms[0].count == 2
    d.resolve("station-power-failure", "st-1", at=30, parish="Ribeira", station="st-1")
    ev = d.current(sensor_incident)
    assert ev.change == "alarm-unsuppressed" and ev.alarms[0].suppressed is None
    assert ev.state == "acknowledged"  # this episode was annunciated before the inhibition


def test_activation_while_inhibited_is_annunciated_when_the_parent_clears() -> None:
    d = inhibited_driver()
    d.fire("station-power-failure", "st-1", at=0, parish="Ribeira", station="st-1")
    ev = d.fire("river-level-high", "porto-01", at=10, parish="Foz", station="st-1")
    assert ev.state == "suppressed"
    with pytest.raises(AssertionError):  # nothing to acknowledge while suppressed
        assert d.command("acknowledge", at=11).accepted
    d.resolve("station-power-failure", "st-1", at=30, parish="Ribeira", station="st-1")
    assert d.current(ev.incident).state == "unacknowledged"


def test_an_inhibited_alarm_that_clears_closes_without_acknowledgement() -> None:
    d = inhibited_driver()
    d.fire("station-power-failure", "st-1", at=0, parish="Ribeira", station="st-1")
    ev = d.fire("river-level-high", "porto-01", at=10, parish="Foz", station="st-1")
    d.resolve("river-level-high", "porto-01", at=20, parish="Foz", station="st-1")
    assert d.current(ev.incident).state == "closed"  # never annunciated, nothing to acknowledge


MAINT = {
    "maintenance": [
        {
            "name": "ribeira-gauge",
            "matchers": ['entity="porto-01"'],
            "start": "2026-01-01T00:10:00Z",
            "end": "2026-01-01T01:00:00Z",
            "reason": "gauge swap",
        }
    ]
}


def test_maintenance_window_suppresses_by_design_and_ends_on_time() -> None:
    d = Driver(IncidentConfig.model_validate(MAINT))
    ev = d.fire("river-level-high", "porto-01", at=900, parish="Ribeira")
    assert ev.state == "suppressed" and ev.alarms[0].suppressed == "maintenance ribeira-gauge: gauge swap"
    assert d.fire("river-level-high", "porto-07", at=901, parish="Foz").state == "unacknowledged"
    out = d.tick(4000)
    end = d.current(ev.incident)
    assert out and end.at == "2026-01-01T01:00:00Z" and end.state == "unacknowledged"
    assert end.change == "alarm-unsuppressed" and end.actor == "maintenance:ribeira-gauge"


def test_maintenance_starting_suppresses_alarms_already_open() -> None:
    d = Driver(IncidentConfig.model_validate(MAINT))
    ev = d.fire("river-level-high", "porto-01", at=0, parish="Ribeira")
    d.tick(600)
    assert d.current(ev.incident).state == "suppressed"
    assert d.current(ev.incident).at == "2026-01-01T00:10:00Z"


def chatter(d: Driver, start: float = 0) -> None:
    for i, state in enumerate(["firing", "resolved", "firing"]):
        d.alarm("river-level-high", "porto-01", state, at=start + 10 * i, parish="Ribeira")


def test_chattering_is_flagged() -> None:
    d = Driver()
    chatter(d)
    ev = d.current()
    assert ev.alarms[0].chattering and ev.alarms[0].suppressed is None
    assert d.manager.kpis(d.state).chattering_alarms == 1


def test_chattering_auto_shelve_by_policy_expires() -> None:
    d = Driver(IncidentConfig.model_validate({"chattering": {"auto_shelve": True, "shelve_for": "30m"}}))
    chatter(d)
    ev = d.current()
    assert ev.alarms[0].suppressed == "shelved: chattering until 2026-01-01T00:30:20Z"
    d.alarm("river-level-high", "porto-01", "resolved", at=40, parish="Ribeira")
    d.alarm("river-level-high", "porto-01", "firing", at=50, parish="Ribeira")
    assert (
        d.manager.kpis(d.state).positions[0].annunciated_total == 1
    )  # only the first activation reached the operator
    d.tick(1819)
    assert d.current().alarms[0].suppressed is not None
    d.tick(1820)
    after = d.current()
    assert after.alarms[0].suppressed is None and after.state == "unacknowledged" and after.actor == "timer"
    assert d.state.kpi.auto_shelved == 1


def test_config_errors_point_at_file_line_col(tmp_path: Path) -> None:
    p = tmp_path / "incidents.yaml"
    p.write_text("correlation:\n  window: 10 minutes\n")
    with pytest.raises(ConfigError, match=r"incidents.yaml:2:3: correlation.window: bad duration"):
        load_config(p)
    p.write_text("inhibit:\n  - source_matchers: ['rule=~\"(\"']\n    target_matchers: []\n")
    with pytest.raises(ConfigError, match=r"incidents.yaml:2:5: .*bad regular expression"):
        load_config(p)
    p.write_text("permissions:\n  close: [janitor]\n")
    with pytest.raises(
        ConfigError, match=r"incidents.yaml:2:11: permissions.close.0: Input should be 'operator'"
    ):
        load_config(p)
    p.write_text("flood: {threshold: [}\n")
    with pytest.raises(ConfigError, match=r"incidents.yaml:1:\d+: "):
        load_config(p)


def test_demo_config_loads() -> None:
    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "incidents.yaml")
    assert cfg.inhibit and cfg.positions and cfg.flood.threshold == 10


def test_an_inhibition_needs_its_equal_labels_on_both_alarms() -> None:
    """A label neither alarm carries is not a match (it is in Alertmanager, where both are
    empty): one station's failure must not hide the alarms of sensors with no station label."""
    d = inhibited_driver()
    d.fire("station-power-failure", "st-1", at=0, parish="Ribeira")  # no station label
    ev = d.fire("river-level-high", "porto-01", at=10, parish="Foz")
    assert next(a for a in ev.alarms if a.key == "porto-01").suppressed is None
    d.fire("station-comms-failure", "st-2", at=20, station="st-2")
    ev = d.fire("river-level-high", "porto-02", at=30, parish="Campanha")  # target without it
    assert next(a for a in ev.alarms if a.key == "porto-02").suppressed is None


def test_the_shipped_inhibition_is_per_entity() -> None:
    """config/incidents.yaml: a gauge that went silent suppresses its own alarms, not another
    gauge's (both carry only the labels the rules give them)."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "incidents.yaml")
    d = Driver(cfg)
    silent, other = "urn:ngsi-ld:WaterObserved:a", "urn:ngsi-ld:WaterObserved:b"
    d.fire("station-silent", silent, at=0, entity=silent, severity="medium", team="telemetry")
    ev = d.fire("river-level-high", other, at=10, entity=other, severity="high", parish="Ribeira")
    assert next(a for a in ev.alarms if a.key == other).suppressed is None
    ev = d.fire("flow-anomaly", silent, at=20, entity=silent, severity="medium")
    assert next(a for a in ev.alarms if a.key == silent and a.rule == "flow-anomaly").suppressed == (
        f"inhibited by station-silent {silent}"
    )


def test_a_chattering_flag_ends_when_the_alarm_stops_chattering() -> None:
    """EEMUA 191 counts chattering over a window: an alarm that changed state three times in a
    minute and then stayed firing for a day is not chattering any more. It stayed flagged (on the
    board and in atalaia_chattering_alarms) until its next change, however long after."""
    d = Driver()
    chatter(d)  # changes at 0, 10, 20 s: flagged until the change at 0 s leaves the 1 min window
    assert d.current().alarms[0].chattering
    assert d.manager.kpis(d.state, "2026-01-01T00:00:59Z").chattering_alarms == 1
    assert d.manager.kpis(d.state, "2026-01-01T00:01:00Z").chattering_alarms == 0
    d.tick(86_400)
    assert d.manager.kpis(d.state).chattering_alarms == 0
    ev = d.command("comment", at=86_400, reason="still high, crew on the way")
    assert not ev.alarms[0].chattering  # the next event of its incident shows it ended
    assert d.state.kpi.chattering_flagged == 1  # the total keeps counting it
    # it chatters again a day later: flagged again (also after a restart), and ends again
    for i, state in enumerate(["resolved", "firing", "resolved"]):
        d.alarm("river-level-high", "porto-01", state, at=90_000 + 10 * i, parish="Ribeira")
    assert d.current().alarms[0].chattering and d.state.kpi.chattering_flagged == 2
    d.state = d.manager.restore(d.manager.snapshot(d.state))
    assert d.manager.kpis(d.state, "2026-01-02T01:00:59Z").chattering_alarms == 1
    assert d.manager.kpis(d.state, "2026-01-02T01:01:00Z").chattering_alarms == 0


@pytest.mark.parametrize(("river", "rain"), [("medium", "high"), ("high", "medium")])
def test_an_acknowledged_incident_stays_acknowledged_when_its_station_comes_back(river, rain) -> None:
    """Two alarms of one incident, acknowledged, inhibited by their station's failure, which then
    clears. When the lower alarm was the first to be unsuppressed, the incident's severity dipped
    and 'rose' again with the second, and it asked for acknowledgement again at the severity it
    already had (the escalation paged again): it depended on the order of the alarms."""
    d = inhibited_driver()
    incident = d.fire(
        "river-level-high", "porto-01", at=0, parish="Ribeira", station="st-1", severity=river
    ).incident
    d.fire("rain-intense", "rain-01", at=1, parish="Ribeira", station="st-1", severity=rain)
    d.command("acknowledge", at=2, incident=incident)
    d.fire("station-comms-failure", "st-1", at=3, parish="Foz", station="st-1")
    assert (d.current(incident).state, d.current(incident).severity) == ("suppressed", "high")
    d.resolve("station-comms-failure", "st-1", at=4, parish="Foz", station="st-1")
    ev = d.current(incident)
    assert (ev.state, ev.severity, ev.acknowledged_by, ev.changes) == (
        "acknowledged",
        "high",
        "ana",
        ["alarm-unsuppressed"],
    )
