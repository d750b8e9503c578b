"""Checks across fields of a rule file, each error at the key it is about."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from atalaia.rules.alarm import severity_rank
from atalaia.rules.errors import RuleError
from atalaia.rules.schema import Level, Rule
from atalaia.rules.templates import template_problem

Locate = Callable[..., tuple[str, int, int]]  # (loc, at_key=False) -> (file, line, col)


def semantic_errors(
    rules: list[tuple[int, Rule]], seen_ids: dict[str, str], locate: Locate
) -> list[RuleError]:
    """Errors of the validated rules (``(index in the file, rule)``); ``seen_ids`` spans files."""
    errors: list[RuleError] = []

    def err(loc: tuple[Any, ...], message: str, at_key: bool = False) -> None:
        errors.append(RuleError(*locate(loc, at_key), message))

    for i, rule in rules:
        base = ("rules", i)
        file, line, col = locate((*base, "id"))
        if rule.id in seen_ids:
            err((*base, "id"), f"duplicate rule id '{rule.id}' (first defined at {seen_ids[rule.id]})")
        else:
            seen_ids[rule.id] = f"{file}:{line}:{col}"
        _rule_errors(rule, base, err)
    return errors


def referenced_attributes(rule: Rule) -> list[tuple[tuple[Any, ...], str]]:
    """(location below the rule, attribute name) of every attribute of its entity type a rule reads."""
    out: list[tuple[tuple[Any, ...], str]] = []
    if rule.select.attribute:
        out.append((("select", "attribute"), rule.select.attribute))
    return out


def authoring_warnings(rules: list[tuple[int, Rule]], locate: Locate) -> list[RuleError]:
    """What a rule author probably got wrong but the engine accepts: attribute names that the Smart
    Data Models schema of the selected type does not have (``NO2`` for ``no2``)."""
    from atalaia.rules.sdm import attribute_problem

    out: list[RuleError] = []
    for i, rule in rules:
        for loc, name in referenced_attributes(rule):
            problem = attribute_problem(rule.select.type, name)
            if problem:
                out.append(RuleError(*locate(("rules", i, *loc)), f"warning: {problem}"))
    return out


def _rule_errors(rule: Rule, base: tuple[Any, ...], err: Callable[..., None]) -> None:
    set_fields = rule.model_fields_set
    kinds = [
        k
        for k in ("severities", "absent_for", "stuck_for")
        if k in set_fields and getattr(rule, k) is not None
    ]
    if not kinds:
        err(base, f"rule '{rule.id}' needs one of 'severities', 'absent_for' or 'stuck_for'")
        return
    if len(kinds) > 1:
        err(
            (*base, kinds[1]),
            f"'{kinds[1]}' cannot be combined with '{kinds[0]}' in one rule: write two rules",
            True,
        )
        return
    kind = kinds[0]
    if kind == "severities":
        _threshold_errors(rule, base, err)
    else:
        if rule.severity is None:
            err(base, f"an {kind} rule needs 'severity' (one of informational, low, medium, high, critical)")
        if getattr(rule, kind) <= 0:
            err((*base, kind), f"'{kind}' must be longer than 0")
        for other in ("aggregate", "detector", "keep_firing_for"):
            if other in set_fields:
                err((*base, other), f"'{other}' does not apply to an {kind} rule", True)
        if kind == "stuck_for" and not rule.select.attribute:
            err((*base, "select"), "a stuck_for rule needs 'select.attribute' (the value that must change)")
    if rule.unit is not None and not any(lv.is_state for lv in rule.severities or []):
        _unit_errors(rule, base, err)
    if rule.aggregate is not None and rule.aggregate.window <= 0:
        err((*base, "aggregate", "window"), "'window' must be longer than 0")
    for kind_name in ("labels", "annotations"):
        for name, source in getattr(rule, kind_name).items():
            problem = template_problem(source)
            if problem:
                err((*base, kind_name, name), f"{kind_name[:-1]} '{name}': {problem}")


def _unit_errors(rule: Rule, base: tuple[Any, ...], err: Callable[..., None]) -> None:
    from atalaia.rules.sdm import documented_unit
    from atalaia.rules.units import convert_factor, unit_problem

    assert rule.unit is not None
    if rule.detector is not None or rule.absent_for is not None:
        what = "a detector score" if rule.detector is not None else "an absent_for rule"
        err((*base, "unit"), f"'unit' does not apply to {what}", True)
        return
    problem = unit_problem(rule.unit)
    if problem:
        err((*base, "unit"), problem)
        return
    declared = documented_unit(rule.select.type, rule.select.attribute or "")
    if declared is not None:
        conv = convert_factor(declared, rule.unit)
        if isinstance(conv, str):
            err(
                (*base, "unit"),
                f"{rule.select.type} documents '{rule.select.attribute}' in {declared}: {conv}",
            )


def _threshold_errors(rule: Rule, base: tuple[Any, ...], err: Callable[..., None]) -> None:
    levels = rule.severities or []
    if not levels:
        err((*base, "severities"), "'severities' must list at least one severity")
    if not rule.select.attribute:
        err((*base, "select"), "'select' needs an 'attribute' for a rule with severities")
    if "severity" in rule.model_fields_set:
        err(
            (*base, "severity"),
            "'severity' is for absent_for/stuck_for rules; this rule lists 'severities'",
            True,
        )
    if rule.detector is not None and rule.aggregate is not None:
        err(
            (*base, "aggregate"),
            "a detector rule scores each observation; it cannot also have 'aggregate'",
            True,
        )
    state = any(level.is_state for level in levels)
    if state:
        _state_errors(rule, base, err)
    seen: dict[str, int] = {}
    for j, level in enumerate(levels):
        loc = (*base, "severities", j)
        if level.severity in seen:
            err((*loc, "severity"), f"severity '{level.severity}' is listed twice in rule '{rule.id}'")
        elif j and severity_rank(level.severity) > severity_rank(levels[j - 1].severity):
            err(
                (*loc, "severity"),
                f"severities must be listed highest first: '{level.severity}' comes after "
                f"'{levels[j - 1].severity}'",
            )
        seen[level.severity] = j
        if not state:
            _level_errors(level, loc, rule.detector is not None, err)


def _state_errors(rule: Rule, base: tuple[Any, ...], err: Callable[..., None]) -> None:
    levels = rule.severities or []
    for j, level in enumerate(levels):
        loc = (*base, "severities", j)
        given = [
            k
            for k, v in (
                ("above", level.above),
                ("below", level.below),
                ("equals", level.equals),
                ("in", level.in_),
                ("changed_to", level.changed_to),
            )
            if v is not None
        ]
        if not level.is_state:
            err(
                (*loc, given[0] if given else "severity"),
                "a rule with state conditions (equals, in, changed_to) cannot also compare numbers "
                "(above, below): write two rules",
                bool(given),
            )
        elif len(given) > 1:
            err((*loc, given[1]), f"use one of {', '.join(given)} in one severity, not several", True)
        for k in ("clear_below", "clear_above"):
            if getattr(level, k) is not None:
                err((*loc, k), f"'{k}' goes with a number threshold, not a state condition", True)
    for other, why in (
        ("aggregate", "a text or boolean state has no numeric aggregate"),
        ("detector", "a detector scores numbers"),
        ("unit", "a state has no unit"),
    ):
        if other in rule.model_fields_set:
            err((*base, other), f"'{other}' cannot be used with state conditions: {why}", True)


def _level_errors(level: Level, loc: tuple[Any, ...], detector: bool, err: Callable[..., None]) -> None:
    if level.above is None and level.below is None:
        err(loc, f"severity '{level.severity}' needs 'above' or 'below' (or equals, in, changed_to)")
    if level.above is not None and level.below is not None:
        err(
            (*loc, "below"),
            "use either 'above' or 'below' in one severity, not both (write two severities)",
            True,
        )
    if level.clear_below is not None:
        if level.above is None:
            err((*loc, "clear_below"), "'clear_below' goes with 'above'", True)
        elif level.clear_below > level.above:
            err(
                (*loc, "clear_below"),
                f"'clear_below' ({level.clear_below:g}) must not be above 'above' "
                f"({level.above:g}): a firing alarm clears when the value falls below it",
            )
    if level.clear_above is not None:
        if level.below is None:
            err((*loc, "clear_above"), "'clear_above' goes with 'below'", True)
        elif level.clear_above < level.below:
            err(
                (*loc, "clear_above"),
                f"'clear_above' ({level.clear_above:g}) must not be below 'below' "
                f"({level.below:g}): a firing alarm clears when the value rises above it",
            )
    if detector:
        if level.above is not None and not level.above < 1:
            err((*loc, "above"), f"a detector score is in [0, 1]: 'above: {level.above:g}' can never hold")
        if level.below is not None and not level.below > 0:
            err((*loc, "below"), f"a detector score is in [0, 1]: 'below: {level.below:g}' can never hold")
