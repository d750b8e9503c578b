"""What a rule says about the alarms it raises, for people reading them (console, SMS, email):
the unit of its value, its description, summary and runbook annotations.

    rules = rule_catalog(["config/rules"])      # read once; RuleCatalog(paths) follows the files
    info = rules["river-level-high"]
    info.unit                                   # "m" (annotations: {unit: ...} wins over the table)
    info.summary_for(alarm, labels)             # the summary annotation rendered for one alarm
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
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


def _read_catalog(paths: list[Any]) -> dict[str, RuleInfo]:
    from atalaia.rules.loader import load_rules

    return {lr.rule.id: rule_info(lr.rule) for lr in load_rules(paths).rules}


def rule_catalog(paths: Iterable[Any]) -> dict[str, RuleInfo]:
    """Rule id → what the console shows about its alarms; an unreadable rule set gives {}."""
    try:
        return _read_catalog(list(paths))
    except Exception as e:  # the console shows bare values rather than failing
        log.warning("console: rules not readable (%s); alarm values are shown without units", e)
        return {}


class RuleCatalog(Mapping[str, RuleInfo]):
    """``rule_catalog(paths)`` that follows the rule files as the rules stage does: a rule added or
    edited while the system runs has its unit, description, summary and runbook on the console and
    in messages without a restart (before, the console and the notifier read them once, at start).

    A lookup never waits for the files: at most every ``every_s`` seconds it starts a look in a
    thread of its own (the files' stamps; when they changed, the rules read again) and a later
    lookup takes its result. Files that no longer load leave the catalogue as it was (the rules
    stage keeps its running rules too, and says why)."""

    def __init__(self, paths: Iterable[Any], every_s: float = 2.0) -> None:
        from atalaia.rules.loader import file_stamps

        self.paths, self.every_s = list(paths), every_s
        self.stamp = file_stamps(self.paths)
        self.rules = rule_catalog(self.paths)
        self.looked = time.monotonic()
        self.pending: Future[tuple[tuple, dict[str, RuleInfo] | None] | None] | None = None

    def _look(self, stamp: tuple) -> tuple[tuple, dict[str, RuleInfo] | None] | None:
        """In the catalogue's thread: None when no file changed since ``stamp``, else (the new
        stamp, the catalogue read, or None when the files do not load)."""
        from atalaia.rules.loader import file_stamps

        now = file_stamps(self.paths)
        if now == stamp:
            return None
        try:
            return now, _read_catalog(self.paths)
        except Exception:  # the rules stage logs why; the console keeps what it shows
            return now, None

    def current(self) -> dict[str, RuleInfo]:
        """The catalogue as last read; starts or picks up a look at the files (never blocks)."""
        future = self.pending
        if future is not None and future.done():
            self.pending = None
            with contextlib.suppress(Exception):  # (the files could not be looked at: next time)
                found = future.result()
                if found is not None:
                    self.stamp = found[0]
                    if found[1] is not None:
                        self.rules = found[1]
        elif future is None and time.monotonic() - self.looked >= self.every_s:
            self.looked = time.monotonic()
            self.pending = _catalog_thread().submit(self._look, self.stamp)
        return self.rules

    def __getitem__(self, rule: str) -> RuleInfo:
        return self.current()[rule]

    def __iter__(self) -> Iterator[str]:
        return iter(self.current())

    def __len__(self) -> int:
        return len(self.current())


_LOOKS: ThreadPoolExecutor | None = None  # one thread looks at the rule files for every RuleCatalog


def _catalog_thread() -> ThreadPoolExecutor:
    global _LOOKS
    if _LOOKS is None:
        _LOOKS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rule-catalog")
    return _LOOKS
