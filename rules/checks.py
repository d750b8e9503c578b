"""Checks across fields of a rule file, each error at the key it is about."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from atalaia.rules.alarm import severity_rank
from atalaia.rules.errors import RuleError
from atalaia.rules.schema import Condition, Level, Rule, ThresholdRef
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
        _RULE_FILE["file"] = file  # where tables named by the rule are found
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
        gas = _assumed_gas_unit(rule)
        if gas:
            out.append(RuleError(*locate(("rules", i, "unit"), True), f"warning: {gas}"))
    return out


def _assumed_gas_unit(rule: Rule) -> str | None:
    """A rule in a mixing ratio on a gas the type documents as a mass concentration (or the other
    way round): readings without a unit code are converted from the documented unit, so a sensor
    that reports in the rule's unit without saying so is read wrong by the gas's factor."""
    from atalaia.rules.sdm import documented_unit
    from atalaia.rules.units import convert_factor, unit_problem

    attribute = rule.select.attribute
    if rule.unit is None or rule.detector is not None or not attribute or unit_problem(rule.unit):
        return None
    declared = documented_unit(rule.select.type, attribute)
    if declared is None or not isinstance(convert_factor(declared, rule.unit), str):
        return None
    factor = convert_factor(declared, rule.unit, attribute)
    if isinstance(factor, str):
        return None
    return (
        f"readings of '{attribute}' without a unit code are taken in {declared}, the unit "
        f"{rule.select.type} documents, and converted to {rule.unit} (×{factor[0]:.4g}, at 20 °C and "
        f"101.325 kPa); a sensor that reports in {rule.unit} must say so (unitCode, or metadata unit)"
    )


def _rule_errors(rule: Rule, base: tuple[Any, ...], err: Callable[..., None]) -> None:
    set_fields = rule.model_fields_set
    if rule.all_ is not None or rule.any_ is not None:
        _compound_errors(rule, base, err)
        return
    if rule.join is not None:
        err((*base, "join"), "'join' needs 'all:' or 'any:' conditions on the joined entities", True)
    if rule.within is not None:
        err((*base, "within"), "'within' applies to a compound rule ('all:' or 'any:')", True)
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
    if rule.range is not None:
        _range_errors(rule, base, kind, err)
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
        conv = convert_factor(declared, rule.unit, rule.select.attribute)
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
            _ref_errors(rule, level, loc, err)


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
        elif isinstance(level.above, ThresholdRef):
            err(
                (*loc, "clear_below"),
                "hysteresis needs a number: 'clear_below' cannot go with a per-entity 'above'",
            )
        elif level.clear_below > level.above:
            err(
                (*loc, "clear_below"),
                f"'clear_below' ({level.clear_below:g}) must not be above 'above' "
                f"({level.above:g}): a firing alarm clears when the value falls below it",
            )
    if level.clear_above is not None:
        if level.below is None:
            err((*loc, "clear_above"), "'clear_above' goes with 'below'", True)
        elif isinstance(level.below, ThresholdRef):
            err(
                (*loc, "clear_above"),
                "hysteresis needs a number: 'clear_above' cannot go with a per-entity 'below'",
            )
        elif level.clear_above < level.below:
            err(
                (*loc, "clear_above"),
                f"'clear_above' ({level.clear_above:g}) must not be below 'below' "
                f"({level.below:g}): a firing alarm clears when the value rises above it",
            )
    if detector and (isinstance(level.above, ThresholdRef) or isinstance(level.below, ThresholdRef)):
        err(loc, "a detector score in [0, 1] has no per-entity threshold: use a number")
    elif detector:
        if level.above is not None and not level.above < 1:
            err((*loc, "above"), f"a detector score is in [0, 1]: 'above: {level.above:g}' can never hold")
        if level.below is not None and not level.below > 0:
            err((*loc, "below"), f"a detector score is in [0, 1]: 'below: {level.below:g}' can never hold")


# labels the city's ingest puts on every entity (besides the text properties of its model)
CITY_LABELS = frozenset(
    {"district", "parish", "municipality", "zone", "area", "name", "tenant", "service_path"}
)
_OWN = frozenset({"entity", "type", "tenant", "service_path"})


def _range_errors(rule: Rule, base: tuple[Any, ...], kind: str, err: Callable[..., None]) -> None:
    assert rule.range is not None
    if kind != "severities" or any(lv.is_state for lv in rule.severities or []):
        err((*base, "range"), "'range' (physically possible values) goes with a numeric threshold rule", True)
        return
    low, high = rule.range
    if not low < high:
        err((*base, "range"), f"'range' must be [min, max] with min < max, got [{low:g}, {high:g}]")


def _ref_errors(rule: Rule, level: Level | Condition, loc: tuple[Any, ...], err: Callable[..., None]) -> None:
    for name, ref in level.refs:
        where = (*loc, name)
        if (ref.attribute is None) == (ref.table is None):
            err(where, f"a per-entity '{name}' needs either 'attribute' or 'table' with 'column'")
            continue
        if ref.attribute is not None and ref.column is not None:
            err((*where, "column"), "'column' goes with 'table', not with 'attribute'", True)
        if ref.table is not None and ref.column is None:
            err(where, f"'{name}: {{table: {ref.table}}}' needs 'column' (the threshold's column)")
            continue
        if list(rule.key) != ["entity"] and rule.join is None:
            err(where, "a per-entity threshold needs 'key: [entity]' (one alarm per entity)")
        if ref.table is not None and ref.column is not None:
            from atalaia.rules.tables import TableError, load_table

            try:
                load_table(ref.table, ref.column, _RULE_FILE.get("file"))
            except TableError as exc:
                err((*where, "table"), str(exc))


_RULE_FILE: dict[str, str] = {}


def _compound_errors(rule: Rule, base: tuple[Any, ...], err: Callable[..., None]) -> None:
    set_fields = rule.model_fields_set
    if rule.all_ is not None and rule.any_ is not None:
        err((*base, "any"), "use 'all:' or 'any:' in one rule, not both (write two rules)", True)
    key = "all" if rule.all_ is not None else "any"
    parts = rule.conditions or []
    if not parts:
        err((*base, key), f"'{key}' must list at least one condition")
    for other in ("severities", "absent_for", "stuck_for", "aggregate", "detector", "unit", "range"):
        if other in set_fields:
            err(
                (*base, other),
                f"'{other}' does not apply to a compound rule: give each condition under '{key}' its own",
                True,
            )
    if rule.severity is None:
        err(base, "a compound rule needs 'severity' (one of informational, low, medium, high, critical)")
    if rule.select.attribute:
        err((*base, "select", "attribute"), "a compound rule names its attributes in each condition", True)
    names: dict[str, int] = {}
    for j, part in enumerate(parts):
        loc = (*base, key, j)
        if part.label in names:
            err(
                (*loc, "attribute"),
                f"two conditions are both called '{part.label}': give one a 'name' (the alarm's values are by name)",
            )
        names[part.label] = j
        tests = [
            k
            for k, v in (
                ("above", part.above),
                ("below", part.below),
                ("equals", part.equals),
                ("in", part.in_),
            )
            if v is not None
        ]
        if not tests:
            err(loc, "a condition needs one of 'above', 'below', 'equals' or 'in'")
        elif len(tests) > 1:
            err((*loc, tests[1]), f"use one of {', '.join(tests)} in one condition, not several", True)
        if part.is_state:
            if part.aggregate is not None:
                err(
                    (*loc, "aggregate"),
                    "a text or boolean condition (equals, in) cannot have a numeric aggregate: "
                    "drop 'aggregate' or compare a number",
                    True,
                )
            if part.unit is not None:
                err((*loc, "unit"), "a text or boolean condition has no unit", True)
            for k in ("clear_below", "clear_above"):
                if getattr(part, k) is not None:
                    err((*loc, k), f"'{k}' goes with a number threshold, not a state condition", True)
        else:
            fake = Level(
                severity="high",
                above=part.above,
                below=part.below,
                clear_below=part.clear_below,
                clear_above=part.clear_above,
            )
            if tests:
                _level_errors(fake, loc, False, err)
            _ref_errors(rule, part, loc, err)
            if part.unit is not None:
                from atalaia.rules.units import unit_problem

                problem = unit_problem(part.unit)
                if problem:
                    err((*loc, "unit"), problem)
                else:  # as a simple rule's unit: convertible from the unit its type documents
                    from atalaia.rules.sdm import documented_unit
                    from atalaia.rules.units import convert_factor

                    typ = part.type or rule.select.type
                    declared = documented_unit(typ, part.attribute)
                    conv = convert_factor(declared, part.unit) if declared is not None else None
                    if isinstance(conv, str):
                        err((*loc, "unit"), f"{typ} documents '{part.attribute}' in {declared}: {conv}")
        if part.aggregate is not None and part.aggregate.window <= 0:
            err((*loc, "aggregate", "window"), "'window' must be longer than 0")
        if part.type is not None and rule.join is None and part.type != rule.select.type:
            err(
                (*loc, "type"),
                f"conditions on another type ({part.type}) need 'join: {{on: [label], within: …}}': "
                "without a join every condition is on one entity",
                True,
            )
    if rule.within is not None:
        if rule.join is not None:
            err((*base, "within"), "a join says its 'within' under 'join:' (drop this one)", True)
        elif rule.within <= 0:
            err((*base, "within"), "'within' must be longer than 0")
    if rule.join is not None:
        if rule.join.within <= 0:
            err((*base, "join", "within"), "'within' must be longer than 0")
        if list(rule.key) != list(rule.join.on):
            err((*base, "key"), "a join's alarm key is its 'on' labels: drop 'key'", True)
        types = sorted({p.type or rule.select.type for p in parts})
        for n, label in enumerate(rule.join.on):
            problem = _join_label_problem(label, types)
            if problem:
                err((*base, "join", "on", n), problem)


def _join_label_problem(label: str, types: list[str]) -> str | None:
    """Why the joined types cannot carry ``label`` (None when they can, or cannot be checked)."""
    import difflib

    from atalaia.rules.sdm import catalogue

    if label in _OWN or label in CITY_LABELS:
        return None
    cat = catalogue()
    for typ in types:
        attrs = cat.get(typ)
        if attrs is None:
            continue  # a type without a schema here: not checked
        kinds = attrs.get(label, {}).get("type")
        if kinds is None:
            known = sorted({*CITY_LABELS, *(a for a, s in attrs.items() if "string" in s.get("type", []))})
            close = difflib.get_close_matches(label, known, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            return (
                f"join on label '{label}': {typ} does not carry it (not in its Smart Data Models schema nor "
                f"a city label: {', '.join(sorted(CITY_LABELS))}){hint}"
            )
        if "string" not in kinds:
            return (
                f"join on '{label}': in {typ} it is a {'/'.join(kinds)}, not a text label entities can share"
            )
    return None
