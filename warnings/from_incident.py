"""A warning draft prefilled from an incident event (``atalaia.incidents``): the level from the
incident's severity, the event from the rules' ``hazard`` label, the area from the incident's
parishes (DICOFRE codes, or parish names matched against the configured CAOP areas).

>>> from atalaia.warnings.catalogue import Catalogue
>>> inc = {"incident": "inc-7", "severity": "high", "labels": {"hazard": "flood"},
...        "correlation": {"parish": "Campanhã"}, "alarms": []}
>>> d = draft_from_incident(inc, Catalogue.load(), "pc@cm-porto.pt", "2026-12-04T17:00:00+00:00")
>>> d["level"], d["event"], d["area"]["geocodes"], d["incident"]
('orange', {'pt-PT': 'Cheia', 'en-GB': 'Flood'}, {'DICOFRE': ['131203']}, 'inc-7')
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from atalaia.warnings.catalogue import Catalogue, fold
from atalaia.warnings.draft import cap_time

# hazard label -> (pt-PT, en-GB) event names
EVENTS = {
    "flood": ("Cheia", "Flood"),
    "flooding": ("Cheia", "Flood"),
    "rain": ("Precipitação forte", "Heavy rain"),
    "rainfall": ("Precipitação forte", "Heavy rain"),
    "wind": ("Vento forte", "Strong wind"),
    "thunderstorms": ("Trovoada", "Thunderstorm"),
    "fog": ("Nevoeiro", "Fog"),
    "heat": ("Tempo quente", "Heat"),
    "hightemperature": ("Tempo quente", "Heat"),
    "cold": ("Tempo frio", "Cold"),
    "lowtemperature": ("Tempo frio", "Cold"),
    "coastalevent": ("Agitação marítima", "Coastal event"),
    "fire": ("Incêndio rural", "Wildfire"),
    "firerisk": ("Incêndio rural", "Wildfire"),
    "airquality": ("Qualidade do ar", "Air quality"),
}
COLOURS_PT = {"green": "verde", "yellow": "amarelo", "orange": "laranja", "red": "vermelho"}
PARISH_LABELS = ("dicofre", "parish", "freguesia", "area")


def _labels(incident: dict[str, Any]) -> list[dict[str, str]]:
    """The incident's correlation labels, its labels and its alarms' labels: mappings of texts
    (whatever else an event holds there, a list or a mapping, is left out: never a crash)."""
    alarms = incident.get("alarms")
    found = [incident.get("correlation"), incident.get("labels")]
    found += [a.get("labels") for a in (alarms if isinstance(alarms, list) else []) if isinstance(a, dict)]
    return [
        {str(k): v if isinstance(v, str) else str(v) for k, v in m.items() if _label_value(v)}
        for m in found
        if isinstance(m, dict)
    ]


def _label_value(v: Any) -> bool:
    """A label's value: a text (or a whole number, read as its digits: a DICOFRE code)."""
    return isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))


def _points(incident: dict[str, Any]) -> list[tuple[float, float]]:
    """(lon, lat) of the incident and of its alarms, where they have one."""
    out = []
    alarms = incident.get("alarms")
    for where in [incident.get("location")] + [
        a.get("location") for a in (alarms if isinstance(alarms, list) else []) if isinstance(a, dict)
    ]:
        if isinstance(where, list | tuple) and len(where) >= 2:
            lon, lat = where[0], where[1]
            if all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in (lon, lat)
            ):
                out.append((float(lon), float(lat)))
    return out


def parishes(incident: dict[str, Any], cat: Catalogue) -> list[str]:
    """DICOFRE codes of the incident's parishes: codes or names in its labels (a parish's name
    or alias, a union's name however its prefix is written, or one parish of a union), else the
    parishes its location and its alarms' locations lie in."""
    found: list[str] = []
    for labels in _labels(incident):
        for key in PARISH_LABELS:
            value = str(labels.get(key) or "").strip()
            if value.isdigit() and cat.area("DICOFRE", value.zfill(6)):
                found.append(value.zfill(6))
            elif value:
                found += cat.parishes_named(value)
    if not found:
        found = [code for lon, lat in _points(incident) if (code := cat.parish_at(lon, lat))]
    return list(dict.fromkeys(found))


def draft_from_incident(
    incident: dict[str, Any],
    cat: Catalogue,
    sender: str,
    now: datetime | str,
    valid_for: timedelta = timedelta(hours=12),
) -> dict[str, Any]:
    """A draft (DESIGN.md's format) for an operator to complete, submit and get approved."""
    level = cat.level_for_severity(str(incident.get("severity", ""))) or cat.level("yellow")
    hazard = next((lab["hazard"] for lab in _labels(incident) if lab.get("hazard")), None)
    h = cat.hazard(hazard) if hazard else None
    names = EVENTS.get(fold(hazard or "").replace(" ", ""))
    if names is None:
        name = h.awareness_type.split(";", 1)[1].strip() if h else hazard
        names = (name or "Ocorrência", name or "Incident")
    pt, en = names
    colour = level.colour if level else "yellow"
    codes = parishes(incident, cat)
    # no parish found: no area, which the operator must choose (never the whole municipality
    # by default: a warning for one street would have gone to the whole city)
    area: dict[str, Any] = {"geocodes": {"DICOFRE": codes}} if codes else {}
    t = cap_time(now)
    draft: dict[str, Any] = {
        "sender": sender,
        "status": "Actual",
        "msgType": "Alert",
        "level": colour,
        "event": {"pt-PT": pt, "en-GB": en},
        "headline": {
            "pt-PT": f"Aviso {COLOURS_PT.get(colour, colour)}: {pt}",
            "en-GB": f"{colour.capitalize()} warning: {en}",
        },
        "description": {"pt-PT": str(incident.get("title") or pt), "en-GB": str(incident.get("title") or en)},
        "onset": t.isoformat(),
        "expires": (t + valid_for).isoformat(),
    }
    if area:
        draft["area"] = area
    if h is not None:
        draft["hazard"] = h.awareness_type
    if incident.get("incident"):
        draft["incident"] = str(incident["incident"])
    correlation = incident.get("correlation")
    tenant = incident.get("tenant") or (correlation.get("tenant") if isinstance(correlation, dict) else None)
    if tenant:
        draft["tenant"] = str(tenant)  # the warning stays the incident's tenant's
    return draft
