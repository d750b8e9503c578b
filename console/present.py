"""How the console presents projection rows: triage order, the actions a state allows, the "why"
of each timeline entry, and what the rules say about their alarms (unit, description, runbook).
Pure functions over plain dicts (no I/O except :func:`rule_catalog`, which reads the rule files).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

SEVERITIES = ("informational", "low", "medium", "high", "critical")  # lowest first
STATES = (
    "unacknowledged",
    "acknowledged",
    "returned-unacknowledged",
    "normal",
    "shelved",
    "suppressed",
    "out-of-service",
    "closed",
)
UNACKNOWLEDGED = ("unacknowledged", "returned-unacknowledged")
OVERLAYS = ("shelved", "suppressed", "out-of-service")

# The unit of a measured attribute (Smart Data Models names) when the rule does not say
# (``annotations: {unit: ...}`` wins).
UNITS = {
    "height": "m",
    "waterLevel": "m",
    "level": "m",
    "flow": "m³/s",
    "precipitation": "mm",
    "temperature": "°C",
    "relativeHumidity": "%",
    "windSpeed": "m/s",
    "no2": "µg/m³",
    "pm10": "µg/m³",
    "pm25": "µg/m³",
    "o3": "µg/m³",
    "so2": "µg/m³",
    "co": "mg/m³",
}

# Which states each action needs (the incident manager has the last word; this only hides buttons
# that would certainly be refused). ``None`` = any open state.
ACTION_STATES: dict[str, tuple[str, ...] | None] = {
    "acknowledge": UNACKNOWLEDGED,
    "shelve": ("unacknowledged", "acknowledged", "returned-unacknowledged", "normal"),
    "unshelve": ("shelved",),
    "comment": None,
    "assign": None,
    "close": ("returned-unacknowledged", "normal", "shelved", "suppressed", "out-of-service"),
    "suppress": ("unacknowledged", "acknowledged", "returned-unacknowledged", "normal"),
    "unsuppress": ("suppressed",),
    "out-of-service": ("unacknowledged", "acknowledged", "returned-unacknowledged", "normal"),
    "return-to-service": ("out-of-service",),
}


def severity_rank(severity: str | None) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


def triage_key(incident: dict[str, Any]) -> tuple[Any, ...]:
    """Unacknowledged first, then the most severe, then the oldest (waiting longest), then id."""
    return (
        0 if incident.get("state") in UNACKNOWLEDGED else 1,
        -severity_rank(incident.get("severity")),
        str(incident.get("opened_at") or ""),
        str(incident.get("id") or ""),
    )


def triage(incidents: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(incidents, key=triage_key)


def allowed_actions(
    incident: dict[str, Any], role: str | None, permissions: dict[str, tuple[str, ...]]
) -> list[str]:
    """The actions ``role`` may take on ``incident`` in its current state (``role`` None = any)."""
    state = incident.get("state")
    if state == "closed":
        return []
    out = []
    for action, states in ACTION_STATES.items():
        if states is not None and state not in states:
            continue
        if action == "close" and incident.get("active"):
            continue  # close needs no firing alarm
        if role is not None and role not in permissions.get(action, ()):
            continue
        out.append(action)
    return out


def counts(incidents: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    by_state: dict[str, int] = {}
    by_severity: dict[str, int] = {}
    for i in incidents:
        by_state[i["state"]] = by_state.get(i["state"], 0) + 1
        by_severity[i["severity"]] = by_severity.get(i["severity"], 0) + 1
    return {"state": by_state, "severity": by_severity}


def explain(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The audit trail with a ``why`` for each entry: what the change did and, when the incident
    needs acknowledging again, why (e.g. ``severity rose from medium to high: acknowledgement
    required again``)."""
    out = []
    prev: dict[str, Any] | None = None
    for h in history:
        e = dict(h)
        changes = list(e.get("changes") or [e.get("change")])
        why = []
        if prev is not None and e.get("severity") != prev.get("severity"):
            rose = severity_rank(e.get("severity")) > severity_rank(prev.get("severity"))
            why.append(
                f"severity {'rose' if rose else 'fell'} from {prev.get('severity')} to {e.get('severity')}"
            )
        if prev is not None and prev.get("state") not in UNACKNOWLEDGED and e.get("state") in UNACKNOWLEDGED:
            if any(why) and why[0].startswith("severity rose"):
                why[0] += ": acknowledgement required again"
            elif "alarm-added" in changes:
                why.append("a new alarm fired: acknowledgement required")
            elif prev.get("state") not in OVERLAYS:
                why.append("an alarm fired again: acknowledgement required again")
            else:
                why.append(f"{prev.get('state')} ended with an alarm firing: acknowledgement required")
        if prev is not None and e.get("state") != prev.get("state") and not why:
            why.append(f"{prev.get('state')} → {e.get('state')}")
        e["changes"] = changes
        e["why"] = "; ".join(why)
        out.append(e)
        prev = h
    return out


@dataclass(frozen=True, slots=True)
class RuleInfo:
    unit: str | None
    description: str | None
    summary: str | None
    runbook: str | None
    attribute: str | None
    aggregate: str | None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def rule_info(rule: Any) -> RuleInfo:
    attribute = rule.select.attribute
    aggregate = rule.aggregate.function if rule.aggregate else None
    unit = rule.annotations.get("unit")
    if unit is None and rule.detector:
        unit = "score"
    elif unit is None and not (rule.absent_for or rule.stuck_for) and aggregate != "count":
        unit = UNITS.get(attribute or "")
        if unit and aggregate == "rate":
            unit = f"{unit}/s"
    return RuleInfo(
        unit=unit,
        description=rule.description,
        summary=rule.annotations.get("summary"),
        runbook=rule.annotations.get("runbook"),
        attribute=attribute,
        aggregate=aggregate,
    )


def rule_catalog(paths: Iterable[Any]) -> dict[str, RuleInfo]:
    """Rule id → what the console shows about its alarms; an unreadable rule set gives {}."""
    from atalaia.rules.loader import load_rules

    try:
        rules = load_rules(list(paths))
    except Exception as e:  # the console shows bare values rather than failing
        log.warning("console: rules not readable (%s); alarm values are shown without units", e)
        return {}
    return {lr.rule.id: rule_info(lr.rule) for lr in rules.rules}
