"""What a rule says about the alarms it raises, for people reading them (console, SMS, email):
the unit of its value, its description, summary and runbook annotations.

    rules = rule_catalog(["config/rules"])
    info = rules["river-level-high"]
    info.unit                                   # "m" (annotations: {unit: ...} wins over the table)
    info.summary_for(alarm, labels)             # the summary annotation rendered for one alarm
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


def display_unit(unit: str) -> str:
    """A rule's ``unit:`` as people read it: ``m3/s`` -> ``m³/s``, ``ug/m3`` -> ``µg/m³``, ``degC`` -> ``°C``.

    >>> display_unit("m3/s"), display_unit("ug/m3"), display_unit("degC"), display_unit("l/s")
    ('m³/s', 'µg/m³', '°C', 'l/s')
    """
    import re

    text = unit.strip().replace("degC", "°C").replace("ug/", "µg/").replace("^2", "²").replace("^3", "³")
    return re.sub(r"(?<=[a-zA-Z])([23])\b", lambda m: "²" if m[1] == "2" else "³", text)


# The unit of a measured attribute (Smart Data Models names) when the rule does not say
# (``annotations: {unit: ...}`` wins).
UNITS = {
    "height": "m",
    "waterLevel": "m",
    "level": "m",
    "flow": "m³/s",
    "precipitation": "mm",
    "temperature": "°C",
    "windSpeed": "m/s",
    "no2": "µg/m³",
    "pm10": "µg/m³",
    "pm25": "µg/m³",
    "o3": "µg/m³",
    "so2": "µg/m³",
    "co": "mg/m³",
}


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

    def summary_for(self, alarm: dict[str, Any], labels: dict[str, Any] | None = None) -> str | None:
        """The summary annotation rendered with one alarm's values (None if it has none or fails)."""
        if not self.summary:
            return None
        from atalaia.rules.templates import Template

        if alarm.get("value") is None and "value" in self.summary:
            return None
        text = Template(self.summary).render(
            {
                "entity": alarm.get("entity") or alarm.get("key"),
                "key": alarm.get("key"),
                "value": alarm.get("value"),
                "severity": alarm.get("severity"),
                "labels": dict(labels or {}),
                "rule": alarm.get("rule"),
                "type": alarm.get("type"),
                "attributes": {},
                "state": alarm.get("state"),
            }
        )
        return None if text.startswith("<template error") else text


def rule_info(rule: Any) -> RuleInfo:
    attribute = rule.select.attribute
    aggregate = rule.aggregate.function if rule.aggregate else None
    unit = rule.annotations.get("unit")
    if unit is None and getattr(rule, "unit", None) and not rule.detector and aggregate != "count":
        unit = display_unit(rule.unit) if aggregate != "rate" else f"{display_unit(rule.unit)}/s"
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
