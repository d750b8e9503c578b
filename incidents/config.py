"""Incident settings: correlation, closing, shelving, chattering, flood, inhibition, maintenance,
operator positions and the role permission table. Loaded from YAML (``config/incidents.yaml``);
errors point at ``file:line:col``.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from atalaia.rules.matchers import Matcher
from atalaia.streams.config_yaml import YamlError, YamlErrors, YamlLimits, load_file, validate

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")  # ASCII digits only
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


#: the longest duration anything takes (a silence, a shelve, a wait): a year and a day. Beyond it a
#: time would leave the contract's range (an overflow stopped the incidents stage)
MAX_DURATION_S = 366 * 86400.0


def parse_duration(v: Any) -> float:
    """``90s``, ``10m``, ``2h30m``, ``1d`` or a number of seconds -> seconds (finite, at most
    ``MAX_DURATION_S``)."""
    if isinstance(v, bool):
        raise ValueError("duration must be like 30s, 10m, 2h30m or a number of seconds")
    seconds = None
    if isinstance(v, int | float):
        if v < 0:
            raise ValueError("duration must not be negative")
        seconds = float(v)
    elif isinstance(v, str):
        s = v.strip()
        parts = _DURATION.findall(s)
        if parts and "".join(n + u for n, u in parts) == s:
            seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if seconds is None:
        raise ValueError(
            f"bad duration {str(v)[:40]!r}: expected like 30s, 10m, 2h30m, 1d or a number of seconds"
        )
    if not seconds <= MAX_DURATION_S:  # (NaN too)
        raise ValueError(f"duration {str(v)[:40]!r} is longer than a year and a day (366d)")
    return seconds


def _matchers(v: Any) -> tuple[Matcher, ...]:
    if isinstance(v, str):
        v = [v]
    if isinstance(v, dict):  # {name: value} shorthand for equality
        return tuple(Matcher.parse(f'{k}="{val}"') for k, val in v.items())
    if not isinstance(v, list | tuple):
        raise ValueError("matchers must be a list like ['rule=\"x\"', 'team=~\"hydro|meteo\"']")
    return tuple(m if isinstance(m, Matcher) else Matcher.parse(str(m)) for m in v)


def _positive(v: float) -> float:
    if not v > 0:
        raise ValueError("must be longer than 0 (like 30s or 10m)")
    return v


Duration = Annotated[float, BeforeValidator(parse_duration)]
#: a window or a time limit: 0 would turn the feature off silently (no correlation, no flood
#: meter, every alarm stale, no shelve possible), so it is refused
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]
Matchers = Annotated[tuple[Matcher, ...], BeforeValidator(_matchers)]

RoleName = Literal["operator", "supervisor", "engineer", "viewer"]
ActionName = Literal[
    "acknowledge",
    "shelve",
    "unshelve",
    "comment",
    "assign",
    "close",
    "suppress",
    "unsuppress",
    "out-of-service",
    "return-to-service",
    "escalate",
]
ROLES = get_args(RoleName)
ACTIONS = get_args(ActionName)
DEFAULT_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "acknowledge": ("operator", "supervisor"),
    "shelve": ("operator", "supervisor"),
    "unshelve": ("operator", "supervisor"),
    "comment": ("operator", "supervisor", "engineer"),
    "assign": ("operator", "supervisor"),
    "close": ("supervisor",),
    "suppress": ("supervisor", "engineer"),
    "unsuppress": ("supervisor", "engineer"),
    "out-of-service": ("supervisor", "engineer"),
    "return-to-service": ("supervisor", "engineer"),
    "escalate": ("operator", "supervisor"),  # page the next escalation step now
    "silence": ("operator", "supervisor", "engineer"),  # create and expire runtime silences
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class Correlation(_Model):
    window: PositiveDuration = Field(
        1800.0, description="an alarm joins an open incident whose last alarm activity is at most this old"
    )
    default_labels: tuple[str, ...] = Field(
        ("parish", "area"),
        description="without a rule `correlation` label: the first of these the alarm carries",
    )
    max_distance_m: float | None = Field(
        None,
        gt=0,
        le=20_040_000,  # half the Earth's circumference: any two places are closer
        allow_inf_nan=False,
        description="also require the alarm within this distance of the incident",
    )


class Closing(_Model):
    require_acknowledged: bool = True
    after: Duration = Field(0.0, description="hold time in normal before closing (0 = at once)")


class Shelving(_Model):
    max: PositiveDuration = Field(8 * 3600.0, description="longest shelve an operator may request")


class Chattering(_Model):
    transitions: int = Field(3, ge=2, le=1000)
    window: PositiveDuration = 60.0
    auto_shelve: bool = False
    shelve_for: PositiveDuration = 1800.0


class Flood(_Model):
    threshold: int = Field(
        10, ge=1, le=1_000_000, description="flood when more than this many alarms per window"
    )
    window: PositiveDuration = 600.0


class Position(_Model):
    name: str = Field(min_length=1)
    matchers: Matchers = ()


class InhibitRule(_Model):
    source_matchers: Matchers
    target_matchers: Matchers
    equal: tuple[str, ...] = ()


class Maintenance(_Model):
    name: str = Field(min_length=1)
    matchers: Matchers = ()
    start: datetime
    end: datetime
    reason: str = "maintenance"

    @field_validator("start", "end")
    @classmethod
    def _zoned(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("time needs a UTC offset (e.g. 2026-01-01T08:00:00Z)")
        return v

    def model_post_init(self, _: Any) -> None:
        if self.end <= self.start:
            raise ValueError(f"maintenance {self.name!r}: end must be after start")


class IncidentConfig(_Model):
    correlation: Correlation = Correlation()
    closing: Closing = Closing()
    reacknowledge_on_escalation: bool = Field(
        True, description="a severity increase needs a new acknowledgement"
    )
    shelving: Shelving = Shelving()
    chattering: Chattering = Chattering()
    flood: Flood = Flood()
    stale_after: PositiveDuration = 86400.0
    positions: tuple[Position, ...] = ()
    default_position: str = "main"
    inhibit: tuple[InhibitRule, ...] = ()
    maintenance: tuple[Maintenance, ...] = ()
    permissions: dict[ActionName | Literal["silence"], tuple[RoleName, ...]] = Field(
        default_factory=lambda: dict(DEFAULT_PERMISSIONS)
    )
    alarms_in_event: int = Field(
        100, ge=1, le=10_000, description="at most this many alarms (latest first) in an incident event"
    )
    audit_in_state: int = Field(
        50,
        ge=1,
        le=10_000,
        description="latest audit entries kept per open incident in the state "
        "(the whole trail is in the events and the SQL projection)",
    )
    memory: int = Field(
        10000,
        ge=1,
        le=1_000_000,
        description="closed incidents and command ids remembered for replies and dedup",
    )

    @field_validator("permissions")
    @classmethod
    def _perms(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        return {**DEFAULT_PERMISSIONS, **v}


class ConfigError(ValueError):
    """A configuration error, formatted ``file:line:col: message``."""


def load_config(path: str | Path, limits: YamlLimits | None = None) -> IncidentConfig:
    """Load ``config/incidents.yaml``-style settings; a problem raises ConfigError
    ``file:line:col: message`` (the first problem found). The file is held to the safe-YAML limits
    (``atalaia.streams.config_yaml``)."""
    path = Path(path)
    try:
        data = load_file(path, limits)
    except YamlError as e:
        raise ConfigError(str(e)) from None
    if data is None:
        return IncidentConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1:1: the incidents configuration must be a mapping")
    try:
        return validate(data, IncidentConfig, str(path), at="key")
    except YamlErrors as e:
        raise ConfigError(str(e.errors[0])) from None
