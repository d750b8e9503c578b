"""The rule language as pydantic models: the structure and types of a rule file.

Checks that need several fields (one rule kind per rule, ``clear_below`` below ``above``, unique
ids...) live in :mod:`atalaia.rules.checks` so that each error points at the right key.
"""

from __future__ import annotations

import difflib
import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from atalaia.rules.alarm import SEVERITIES
from atalaia.rules.durations import DURATION_PATTERN, format_duration, parse_duration

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["30s", "10m", "1h30m"]}),
]


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise ValueError(f"must be a finite number, got {x}")
    return x


# every number a rule author writes (thresholds, hysteresis, range, state values): .nan and .inf refused
Finite = Annotated[float, AfterValidator(_finite)]
Severity = Literal["informational", "low", "medium", "high", "critical"]
AggregateFunction = Literal["avg", "min", "max", "sum", "count", "last", "delta", "rate"]
assert tuple(Severity.__args__) == SEVERITIES  # type: ignore[attr-defined]


class Strict(BaseModel):
    """Base: unknown keys are errors with a "did you mean" hint."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = [f.alias or name for name, f in cls.model_fields.items()]
            for key in data:
                if key not in known and key not in cls.model_fields:
                    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
                    hint = f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(known)}"
                    raise PydanticCustomError(
                        "unknown_key", "unknown key '{key}'{hint}", {"key": key, "hint": hint}
                    )
        return data


class Select(Strict):
    type: str = Field(min_length=1, description="entity type, e.g. WaterObserved")
    attribute: str | None = Field(
        None, description="observed attribute, e.g. height (optional for absent_for)"
    )
    where: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description="equality filters on observation labels (and 'entity', 'type'); a list means any of",
    )


class Aggregate(Strict):
    function: AggregateFunction = Field(description="over the event-time window (t - window, t]")
    window: Duration


class ThresholdRef(Strict):
    """A per-entity threshold: the entity's own latest value of an attribute (``attribute``), or a
    column of a CSV table keyed by entity id (``table`` + ``column``, path relative to the rule file)."""

    attribute: str | None = Field(
        None, min_length=1, description="the entity's own latest value of this attribute, e.g. alertLevelHigh"
    )
    table: str | None = Field(
        None, min_length=1, description="CSV file (relative to the rule file) with an 'entity' column"
    )
    column: str | None = Field(None, min_length=1, description="the table's column holding the threshold")


Threshold = Finite | ThresholdRef


def is_ref(x: Any) -> bool:
    return isinstance(x, ThresholdRef)


class Level(Strict):
    """One severity of a rule: the condition that makes the alarm that severity."""

    severity: Severity
    above: Threshold | None = Field(
        None,
        description="holds when value > above (strict); a number or a per-entity {attribute}/{table, column}",
    )
    below: Threshold | None = Field(None, description="holds when value < below (strict); as above")
    clear_below: Finite | None = Field(
        None, description="hysteresis: a firing level stays until value < clear_below"
    )
    clear_above: Finite | None = Field(
        None, description="hysteresis: a firing level stays until value > clear_above"
    )
    for_: Duration = Field(
        0.0, alias="for", description="condition must hold at least this long before firing"
    )
    equals: str | bool | Finite | None = Field(
        None, description="state condition: holds while the (text, boolean) value equals this"
    )
    in_: list[str | bool | Finite] | None = Field(
        None, alias="in", description="state condition: holds while the value is one of these"
    )
    changed_to: str | bool | Finite | None = Field(
        None,
        description="state condition: holds from an observation where the value changes to this from "
        "another one seen before, while it stays so (never at the first observation of a key)",
    )

    @property
    def is_state(self) -> bool:
        return self.equals is not None or self.in_ is not None or self.changed_to is not None

    @property
    def refs(self) -> list[tuple[str, ThresholdRef]]:
        return [(k, v) for k, v in (("above", self.above), ("below", self.below)) if is_ref(v)]


class Condition(Strict):
    """One part of a compound rule (``all:``/``any:``): a condition on one attribute, with the aggregate,
    ``for`` and hysteresis of a simple rule."""

    name: str | None = Field(
        None, min_length=1, description="the part's name in the alarm's 'values' (default: the attribute)"
    )
    type: str | None = Field(None, min_length=1, description="entity type (default: the rule's select.type)")
    attribute: str = Field(min_length=1)
    where: dict[str, str | list[str]] = Field(default_factory=dict, description="extra label filters")
    aggregate: Aggregate | None = None
    above: Threshold | None = None
    below: Threshold | None = None
    clear_below: Finite | None = None
    clear_above: Finite | None = None
    for_: Duration = Field(0.0, alias="for", description="the part holds once its condition held this long")
    equals: str | bool | Finite | None = Field(None, description="text/boolean condition")
    in_: list[str | bool | Finite] | None = Field(None, alias="in", description="text/boolean condition")
    unit: str | None = Field(None, description="unit of this part's thresholds (as the rule's 'unit')")

    @property
    def is_state(self) -> bool:
        return self.equals is not None or self.in_ is not None

    @property
    def refs(self) -> list[tuple[str, ThresholdRef]]:
        return [(k, v) for k, v in (("above", self.above), ("below", self.below)) if is_ref(v)]

    @property
    def label(self) -> str:
        return self.name or self.attribute


class Join(Strict):
    on: list[str] = Field(min_length=1, description="labels the entities share, e.g. [parish]")
    within: Duration = Field(description="each part counts only if its entity was observed this recently")


class Rule(Strict):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    description: str | None = None
    select: Select
    key: list[str] = Field(
        default_factory=lambda: ["entity"],
        min_length=1,
        description="one alarm per key: 'entity' or observation label names",
    )
    aggregate: Aggregate | None = None
    severities: list[Level] | None = Field(None, description="highest first; the highest that holds wins")
    keep_firing_for: Duration = 0.0
    absent_for: Duration | None = Field(
        None, description="fires when the key has not been observed this long"
    )
    stuck_for: Duration | None = Field(None, description="fires when the value has not changed this long")
    severity: Severity | None = Field(None, description="severity of an absent_for or stuck_for rule")
    detector: str | None = Field(None, description="severities apply to this detector's score in [0, 1]")
    unit: str | None = Field(
        None,
        description="the unit of the thresholds (pint: m3/s, l/s, cm, degC, km/h, hPa, %, ug/m3; or a "
        "UN/CEFACT code): observations are converted from their unitCode; an incompatible one is rejected",
        examples=["m3/s", "l/s", "cm", "MQS"],
    )
    require_observed_time: bool = Field(
        False,
        description="evaluate only observations whose time was measured (time_source 'observed'); those "
        "timed by the notification or the reception are skipped and counted",
    )
    range: tuple[Finite, Finite] | None = Field(
        None,
        description="data quality: physically possible values [min, max]; a value outside raises the "
        "'<id>:sensor-fault' alarm and is never evaluated by this rule",
    )
    all_: list[Condition] | None = Field(
        None, alias="all", description="compound: every condition holds (attributes of one entity, or a join)"
    )
    any_: list[Condition] | None = Field(
        None, alias="any", description="compound: at least one condition holds"
    )
    join: Join | None = Field(
        None, description="the parts come from entities sharing these labels (the alarm key), seen within"
    )
    within: Duration | None = Field(
        None,
        description="compound (without join): a condition counts only if its attribute was observed this "
        "recently (PromQL's lookback, 5m); without it a part's last reading counts however old",
    )
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _join_key(cls, data: Any) -> Any:
        """A join's alarm key is its ``on`` labels (so it runs where label-keyed rules run)."""
        if isinstance(data, dict) and isinstance(data.get("join"), dict) and "key" not in data:
            on = data["join"].get("on")
            if isinstance(on, list) and on:
                data = {**data, "key": list(on)}
        return data

    @property
    def conditions(self) -> list[Condition] | None:
        return self.all_ if self.all_ is not None else self.any_


class RuleFile(Strict):
    group: str | None = Field(None, description="rule group name (default: the file name)")
    rules: list[Rule]


def json_schema() -> dict[str, Any]:
    schema = RuleFile.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Atalaia rule file"
    return schema
