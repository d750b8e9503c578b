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
from zoneinfo import ZoneInfo

from atalaia.warnings.catalogue import Catalogue, fold
from atalaia.warnings.draft import cap_time, local_time

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
# MeteoAlarm awareness type number (levels.yaml's hazards) -> (pt-PT, en-GB) event names, for a
# hazard label the catalogue knows by another name ("vento", "Neve", "floodRisk", "cheia")
HAZARD_EVENTS = {
    "1": ("Vento forte", "Strong wind"),
    "2": ("Neve e gelo", "Snow and ice"),
    "3": ("Trovoada", "Thunderstorm"),
    "4": ("Nevoeiro", "Fog"),
    "5": ("Tempo quente", "Heat"),
    "6": ("Tempo frio", "Cold"),
    "7": ("Agitação marítima", "Coastal event"),
    "8": ("Incêndio rural", "Wildfire"),
    "10": ("Precipitação forte", "Heavy rain"),
    "12": ("Cheia", "Flood"),
    "13": ("Inundação por chuva", "Rain flooding"),
}
COLOURS_PT = {"green": "verde", "yellow": "amarelo", "orange": "laranja", "red": "vermelho"}
# incident severities in the words of each language (as in the notifiers' messages)
SEVERITY_WORDS = {
    "pt-PT": {"informational": "informativa", "low": "baixa", "medium": "média", "high": "alta", "critical": "crítica"},
    "en-GB": {"informational": "informational", "low": "low", "medium": "medium", "high": "high", "critical": "critical"},
}  # fmt: skip
LISBON = ZoneInfo("Europe/Lisbon")
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


def _where(incident: dict[str, Any], codes: list[str], cat: Catalogue) -> str | None:
    """The incident's place in words: its parishes' names, else a place-naming correlation value
    (a parish or area label the catalogue does not know), else None (the text leaves the place
    out). Never the other correlation values: a public text must not carry the tenant, an entity
    URN or an alarm key."""
    names = [a.name for code in codes if (a := cat.area("DICOFRE", code))]
    if not names:
        corr = incident.get("correlation")
        values = [corr.get(k) for k in PARISH_LABELS] if isinstance(corr, dict) else []
        names = [v.strip() for v in values if isinstance(v, str) and v.strip() and not v.strip().isdigit()]
    return "; ".join(dict.fromkeys(names)) or None


def description(incident: dict[str, Any], event: dict[str, str], where: str | None) -> dict[str, str]:
    """What the incident says, in each language's own words (never the English incident title in
    the Portuguese text): the event and place, the incident's severity, how many alarms since when
    (Lisbon time).

    >>> description({"severity": "high", "alarm_count": 3, "opened_at": "2026-12-04T18:00:05Z"},
    ...             {"pt-PT": "Cheia", "en-GB": "Flood"}, "Campanhã")["pt-PT"]
    'Cheia em Campanhã. Gravidade do incidente: alta; 3 alarmes desde 04/12/2026 18:00 (hora de Lisboa).'
    """
    severity = incident.get("severity")
    count = incident.get("alarm_count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        alarms = incident.get("alarms")
        count = len(alarms) if isinstance(alarms, list) and alarms else None
    try:
        since = local_time(cap_time(incident.get("opened_at")), LISBON)  # (WEST/WET when ambiguous)
    except (ValueError, TypeError, OverflowError, OSError):
        since = None
    out = {}
    for lang in ("pt-PT", "en-GB"):
        pt = lang == "pt-PT"
        text = f"{event[lang]} {'em' if pt else 'in'} {where}" if where else event[lang]
        facts = []
        sev = SEVERITY_WORDS[lang].get(severity) if isinstance(severity, str) else None
        if sev:
            facts.append(f"Gravidade do incidente: {sev}" if pt else f"Incident severity: {sev}")
        word = ("alarme" if count == 1 else "alarmes") if pt else ("alarm" if count == 1 else "alarms")
        when = (f"desde {since} (hora de Lisboa)" if pt else f"since {since} (Lisbon time)") if since else ""
        if count or since:
            facts.append(f"{count} {word} {when}".strip() if count else when)
        facts[:1] = [f[0].upper() + f[1:] for f in facts[:1]]
        out[lang] = f"{text}. {'; '.join(facts)}." if facts else f"{text}."
    return out


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
    if names is None and h is not None:  # never the MeteoAlarm English name in the Portuguese text
        names = HAZARD_EVENTS.get(h.awareness_type.split(";", 1)[0].strip())
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
        # in each language's words: the incident's title ("rain-intense +2 more — …") is English
        "description": description(incident, {"pt-PT": pt, "en-GB": en}, _where(incident, codes, cat)),
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
