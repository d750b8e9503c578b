"""``config/detectors.yaml``: named detectors, their model, parameters and warm-up.

```yaml
default: hst-default          # used when a caller names no detector
detectors:
  - name: hst-default
    select: {type: WaterObserved, attribute: flow}   # what the live agent feeds it
    warmup: 150               # the bank returns None for an entity's first 150 points
    model: hst                # gaussian | hst | forecast | seasonal | ensemble
    params: {n_trees: 10}
    members: []               # ensemble only: [{model, params}, ...]
    calibration: {long_window: 2000}   # optional anomaly-likelihood wrapper
```
Errors are reported as ``file:line:col: message``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from atalaia.detectors.base import Detector
from atalaia.detectors.calibrated import Calibrated
from atalaia.detectors.ensemble import Ensemble
from atalaia.detectors.extreme import ExtremeTail, NoveltyExtreme
from atalaia.detectors.gaussian import GaussianTail
from atalaia.detectors.likelihood import Likelihood
from atalaia.detectors.novelty import RecordNovelty
from atalaia.detectors.predictive import ForecastResidual
from atalaia.detectors.rarity import Rarity
from atalaia.detectors.seasonal import SeasonalProfile
from atalaia.detectors.suppression import Refractory
from atalaia.detectors.trees import HSTDetector
from atalaia.rules.durations import parse_duration
from atalaia.streams.config_yaml import YamlError, YamlErrors, YamlLimits, located, parse, read_text, validate

MODELS: dict[str, type[Detector]] = {
    "gaussian": GaussianTail,
    "hst": HSTDetector,
    "forecast": ForecastResidual,
    "seasonal": SeasonalProfile,
    "novelty": RecordNovelty,
    "extreme": ExtremeTail,
    "novelty-extreme": NoveltyExtreme,
}
log = logging.getLogger("atalaia.detectors")
_WARNED: set[str] = set()
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "config" / "detectors.yaml"


class ConfigError(ValueError):
    """A detectors file that cannot be used; the message starts with file:line:col."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Select(_Strict):
    type: str | None = None
    attribute: str | None = None


class Calibration(_Strict):
    short_window: int = Field(10, ge=1)
    long_window: int = Field(2000, ge=10)
    min_samples: int = Field(100, ge=1)
    min_std: float = Field(0.02, gt=0)
    suppress_for: int = Field(0, ge=0)
    suppress_to: float = Field(0.0, ge=0, le=1)
    alert: float = Field(0.5, ge=0, le=1)
    range_tolerance: float | None = Field(None, ge=0)
    range_warmup: int = Field(0, ge=0)


class RarityParams(_Strict):
    horizon: int = Field(5000, ge=10)
    bins_per_unit: float = Field(1.0, gt=0)


class LikelihoodParams(_Strict):
    short: int = Field(1, ge=1)
    horizon: int = Field(2000, ge=2)
    min_samples: int = Field(150, ge=2)
    min_std: float = Field(0.01, gt=0)
    decades: float = Field(10.0, gt=0)


class Suppression(_Strict):
    alert: float = Field(0.6, ge=0, le=1)
    hold: int = Field(100, ge=0)
    cap: float = Field(0.0, ge=0, le=1)
    sustain: bool = False
    every: int = Field(0, ge=0)
    burst: int = Field(1, ge=1)


class ModelSpec(_Strict):
    model: str
    params: dict[str, Any] = {}
    members: list[ModelSpec] = []
    calibration: Calibration | None = None
    rarity: RarityParams | None = None
    likelihood: LikelihoodParams | None = None
    suppress: Suppression | None = None

    @model_validator(mode="after")
    def _known(self) -> ModelSpec:
        if self.model == "ensemble":
            if not self.members:
                raise ValueError("an ensemble needs members: [{model, params}, ...]")
        elif self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; known: {[*MODELS, 'ensemble']}")
        elif self.members:
            raise ValueError("only an ensemble has members")
        return self

    def build(self) -> Detector:
        if self.model == "ensemble":
            det = Ensemble([m.build() for m in self.members], **self.params)
        else:
            det = MODELS[self.model](**self.params)
        if self.calibration is not None:
            det = Calibrated(det, **self.calibration.model_dump())
        if self.rarity is not None:
            det = Rarity(det, **self.rarity.model_dump())
        if self.likelihood is not None:
            det = Likelihood(det, **self.likelihood.model_dump())
        if self.suppress is not None:
            det = Refractory(det, **self.suppress.model_dump())
        return det


class DetectorSpec(ModelSpec):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    select: Select = Select()
    warmup: int = Field(0, ge=0)
    #: the alert threshold the configuration ships with (chosen by cross-validation; rules
    #: using this detector should alarm on ``above:`` it)
    threshold: float | None = Field(None, ge=0, le=1)


class Alias(_Strict):
    """An old name kept for a while: it resolves to ``to`` and logs ``note`` once."""

    to: str
    note: str = ""


class BankLimits(_Strict):
    """Bounds of the live per-entity bank (``detectors/bank.py``)."""

    #: an entity attribute not seen for this long (event time) is checkpointed and evicted
    #: from memory; it resumes from the checkpoint when it reports again ("0": never)
    idle_evict_after: str = "1d"
    #: models held in memory at most, by all the banks of a worker process together (its
    #: partitions and stages); beyond it new entities are refused (logged, counted)
    max_entities: int | None = Field(200_000, ge=1)
    #: a checkpoint whose entity has not reported for this long (event time) is forgotten: the
    #: entity starts a fresh model if it ever returns ("0": never)
    forget_after: str = "30d"
    #: checkpoints kept at most, by all the banks of a worker process together; beyond it the
    #: oldest are forgotten (null: no limit)
    max_checkpoints: int | None = Field(200_000, ge=1)

    @property
    def idle_seconds(self) -> float | None:
        return parse_duration(self.idle_evict_after) or None

    @property
    def forget_seconds(self) -> float | None:
        return parse_duration(self.forget_after) or None

    @field_validator("idle_evict_after", "forget_after")
    @classmethod
    def _duration(cls, text: str) -> str:
        parse_duration(text)  # (the error names the field's own line)
        return text


class DetectorsConfig(_Strict):
    default: str
    detectors: list[DetectorSpec]
    aliases: dict[str, Alias] = {}
    bank: BankLimits = BankLimits()

    @model_validator(mode="after")
    def _names(self) -> DetectorsConfig:
        names = [d.name for d in self.detectors]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate detector names: {sorted(dup)}")
        clash = sorted(set(self.aliases) & set(names))
        if clash:
            raise ValueError(f"aliases {clash} are also detector names")
        for old, alias in self.aliases.items():
            if alias.to not in names:
                raise ValueError(f"alias {old!r} points to {alias.to!r}, which is not a detector name")
        if self.resolve(self.default) not in names:
            raise ValueError(f"default {self.default!r} is not a detector name")
        return self

    def resolve(self, name: str) -> str:
        """The configured name behind ``name`` (itself, or what a deprecated alias points to)."""
        alias = self.aliases.get(name)
        if alias is None:
            return name
        if name not in _WARNED:
            _WARNED.add(name)
            log.warning(
                "detector name %r is deprecated, use %r%s",
                name,
                alias.to,
                f": {alias.note}" if alias.note else "",
            )
        return alias.to

    def get(self, name: str | None = None) -> DetectorSpec:
        name = self.resolve(name or self.default)
        for d in self.detectors:
            if d.name == name:
                return d
        raise KeyError(f"unknown detector {name!r}; known: {[d.name for d in self.detectors]}")

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.detectors]

    @property
    def known(self) -> frozenset[str]:
        """The names a rule may use: every configured name and every deprecated alias."""
        return frozenset(self.names) | frozenset(self.aliases)


def parse_config(text: str, source: str = "<string>", limits: YamlLimits | None = None) -> DetectorsConfig:
    """Parse and validate a detectors file; every model is built once to check its params."""
    try:
        doc = parse(text, source, limits)
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}:1:1: expected a mapping with 'default' and 'detectors'")
    try:
        config = validate(doc, DetectorsConfig, source, at="key")
    except YamlErrors as exc:
        raise ConfigError(str(exc.errors[0])) from None
    for i, spec in enumerate(config.detectors):
        try:
            spec.build()
        except Exception as exc:  # a model's own check of its parameters, whatever it raises
            where = located(doc, source, ("detectors", i, "params"), f"detector {spec.name!r}: {exc}", "key")
            raise ConfigError(str(where)) from None
    return config


def load_config(path: str | Path | None = None, limits: YamlLimits | None = None) -> DetectorsConfig:
    """Load ``path`` (default: the repository's ``config/detectors.yaml``), held to the safe-YAML
    limits of ``atalaia.streams.config_yaml``."""
    path = Path(path) if path else DEFAULT_PATH
    try:
        text = read_text(path, limits)
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    return parse_config(text, str(path), limits)
