"""Ingest options: limits, clock-skew tolerance, area of interest, subscribed entity types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from atalaia.streams.settings import Settings

MAINLAND_PORTUGAL = (-9.6, 36.8, -6.1, 42.2)


@dataclass(frozen=True, slots=True)
class IngestOptions:
    max_payload_bytes: int = 1024 * 1024  # checked before parsing
    future_tolerance_s: float = 300.0  # observation time this far past the reference -> warning
    area_of_interest: tuple[float, float, float, float] = (
        MAINLAND_PORTUGAL  # lon_min, lat_min, lon_max, lat_max
    )
    accepted_types: frozenset[str] | None = None  # None = every entity type
    max_label_chars: int = 256  # longer text (descriptions) is not kept as a label
    # observation time this far behind the reception clock -> a warning in the answer (the rules
    # stage refuses it as too late); None: no warning
    allowed_lateness_s: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings, accepted_types: frozenset[str] | None = None) -> IngestOptions:
        return cls(
            max_payload_bytes=settings.max_payload_bytes,
            future_tolerance_s=settings.future_tolerance_s,
            area_of_interest=tuple(settings.area_of_interest),  # type: ignore[arg-type]
            accepted_types=accepted_types,
            allowed_lateness_s=settings.allowed_lateness_s,
        )


DEFAULT_OPTIONS = IngestOptions()
