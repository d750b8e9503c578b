"""Fast construction of already-validated Observations for the hot path.

Equivalent to ``Observation.model_construct`` with every field given (what pydantic 2 does: set
``__dict__``, ``__pydantic_fields_set__``, no extra, no private), without its per-field alias loop,
which costs more than the rest of an entity's normalisation. Falls back to ``model_construct`` if
the model ever grows a post-init hook, private attributes or other fields.
"""

from __future__ import annotations

from datetime import datetime

from atalaia.streams.ingest.observation import Observation

_FIELDS = (
    "time",
    "entity",
    "type",
    "attributes",
    "location",
    "source",
    "units",
    "labels",
    "quality",
    "time_source",
    "tenant",
    "service_path",
    "types",
)
_FIELDS_SET = frozenset(_FIELDS)
_setattr = object.__setattr__
_FAST = (
    tuple(Observation.model_fields) == _FIELDS
    and not Observation.__pydantic_post_init__
    and not Observation.__private_attributes__
    and Observation.model_config.get("extra") != "allow"
)


def build_observation(
    time: datetime,
    entity: str,
    type: str,
    attributes: dict[str, float],
    location: tuple[float, float] | None,
    source: str,
    units: dict[str, str],
    labels: dict[str, str],
    quality: list[str],
    time_source: str = "observed",
    tenant: str | None = None,
    service_path: str | None = None,
    types: tuple[str, ...] | None = None,
) -> Observation:
    values = {
        "time": time,
        "entity": entity,
        "type": type,
        "attributes": attributes,
        "location": location,
        "source": source,
        "units": units,
        "labels": labels,
        "quality": quality,
        "time_source": time_source,
        "tenant": tenant,
        "service_path": service_path,
        "types": types,
    }
    if not _FAST:  # pragma: no cover - only if the contract model changes shape
        return Observation.model_construct(**values)
    o = Observation.__new__(Observation)
    _setattr(o, "__dict__", values)
    _setattr(o, "__pydantic_fields_set__", set(_FIELDS_SET))
    _setattr(o, "__pydantic_extra__", None)
    _setattr(o, "__pydantic_private__", None)
    return o
