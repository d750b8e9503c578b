"""A simulated storm over Porto, for the scenario test and the benchmark: river, rain and air
alarms in a few parishes, chattering gauges, redelivered transitions, and one station whose
communications fail (its sensors' alarms are then inhibited)."""

from __future__ import annotations

import random
from typing import Any

from atalaia.incidents.testing import transition

PARISHES = {  # name -> (lon, lat) of a point in it
    "Campanhã": (-8.5850, 41.1500),
    "Lordelo do Ouro e Massarelos": (-8.6450, 41.1500),
    "Aldoar, Foz do Douro e Nevogilde": (-8.6770, 41.1560),
    "Bonfim": (-8.5960, 41.1500),
}
FAILING_STATION = "st-campanha"
SENSORS = (("river-level-high", "hydro", 5), ("rain-intense", "meteo", 4), ("air-no2-high", "air", 3))


def porto_storm(seed: int = 7, scale: int = 1, redeliver: float = 0.05) -> list[dict[str, Any]]:
    """Alarm transitions in time order. ``scale`` multiplies the sensors per parish."""
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    for parish, (lon, lat) in PARISHES.items():
        station = "st-" + parish.split()[0].split(",")[0].lower().replace("ã", "a")
        for rule, group, n in SENSORS:
            for i in range(n * scale):
                key = f"urn:ngsi-ld:Device:{station}-{rule.split('-')[0]}-{i:02d}"
                loc = [round(lon + rnd.uniform(-0.004, 0.004), 5), round(lat + rnd.uniform(-0.004, 0.004), 5)]
                labels = {"parish": parish, "station": station, "district": "13"}
                start = rnd.uniform(0, 900)
                sev = rnd.choice(["medium", "high"])
                kw = {"location": loc, "group": group, **labels}
                out.append(_tr(rule, key, "firing", start, sev, 1.0, **kw))
                if rnd.random() < 0.3:  # escalation while firing
                    out.append(_tr(rule, key, "firing", start + rnd.uniform(60, 600), "critical", 2.0, **kw))
                if rnd.random() < 0.1:  # a chattering gauge: resolved and firing again within a minute
                    t = start + rnd.uniform(5, 20)
                    out.append(_tr(rule, key, "resolved", t, sev, 0.5, **kw))
                    out.append(_tr(rule, key, "firing", t + 10, sev, 1.1, **kw))
                out.append(_tr(rule, key, "resolved", rnd.uniform(2400, 3300), sev, 0.2, **kw))
        if station == FAILING_STATION:
            kw = {
                "location": [lon, lat],
                "group": "hydro",
                "parish": parish,
                "station": station,
                "district": "13",
            }
            out.append(_tr("station-comms-failure", station, "firing", 300, "high", None, **kw))
            out.append(_tr("station-comms-failure", station, "resolved", 3400, "high", None, **kw))
    out.sort(key=lambda t: (t["at"], t["rule"], t["key"]))
    result: list[dict[str, Any]] = []
    for t in out:
        result.append(t)
        if rnd.random() < redeliver:  # at-least-once: a copy arrives again a little later
            result.append(dict(t))
    return result


def _tr(
    rule: str,
    key: str,
    state: str,
    at: float,
    severity: str,
    value: float | None,
    group: str,
    location: list[float],
    **labels: str,
) -> dict[str, Any]:
    t = transition(
        rule, key, state, round(at, 3), severity=severity, value=value, location=location, **labels
    )
    t["group"] = group
    return t


STORM_CONFIG = {
    "correlation": {"window": "30m", "max_distance_m": 3000},
    "closing": {"after": "5m"},
    "chattering": {"auto_shelve": True, "shelve_for": "30m"},
    "positions": [
        {"name": "hydro", "matchers": ['group="hydro"']},
        {"name": "environment", "matchers": ['group=~"meteo|air"']},
    ],
    "inhibit": [
        {
            "source_matchers": ['rule="station-comms-failure"'],
            "target_matchers": ['rule!="station-comms-failure"'],
            "equal": ["station"],
        }
    ],
}
