"""The attribute catalogue of Smart Data Models types (``attributes.json``, built by
:mod:`atalaia.rules.sdm.build` from the models' CC-BY-4.0 schemas, see ``NOTICE.md``): what
``rules check`` compares a rule's attribute names, kinds and units against.

>>> attribute_problem("AirQualityObserved", "NO2")
"attribute 'NO2' is not in the Smart Data Models schema of AirQualityObserved (did you mean 'no2'?)"
>>> attribute_problem("AirQualityObserved", "no2") is None
True
>>> attribute_problem("MyOwnType", "anything") is None   # types without a schema are not checked
True
>>> documented_unit("WaterObserved", "flow")
'MQS'
>>> documented_unit("AirQualityObserved", "no2:sensorA")   # an instance with a datasetId
'GQ'
"""

from __future__ import annotations

import difflib
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

_FILE = Path(__file__).with_name("attributes.json")


@cache
def catalogue() -> dict[str, dict[str, Any]]:
    """type -> attribute -> {"type": [json types], "minimum"?, "maximum"?, "enum"?, "unit"?}."""
    data = json.loads(_FILE.read_text(encoding="utf-8"))
    return {t: spec["attributes"] for t, spec in data["types"].items()}


def _folded(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _spec(entity_type: str, attribute: str) -> dict[str, Any] | None:
    """The schema of an attribute; for an instance of a multi-attribute (``no2:sensorA``: NGSI-LD's
    ``datasetId``, as ingest names it) that the schema does not name, the attribute's own."""
    attributes = catalogue().get(entity_type)
    if attributes is None:
        return None
    spec = attributes.get(attribute)
    if spec is None and ":" in attribute:
        spec = attributes.get(attribute.partition(":")[0])
    return spec


def attribute_problem(entity_type: str, attribute: str) -> str | None:
    """A warning when ``attribute`` is not in the schema of ``entity_type`` (None when it is, or when
    the type has no schema here), with the closest names."""
    attributes = catalogue().get(entity_type)
    if attributes is None or _spec(entity_type, attribute) is not None:
        return None
    same = [a for a in attributes if _folded(a) == _folded(attribute)]  # NO2 -> no2, PM2.5 -> pm25
    close = same or difflib.get_close_matches(attribute, list(attributes), n=2, cutoff=0.6)
    hint = " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)" if close else ""
    return f"attribute '{attribute}' is not in the Smart Data Models schema of {entity_type}{hint}"


def attribute_kind(entity_type: str, attribute: str) -> list[str] | None:
    """The JSON types the schema gives the attribute (``["number"]``, ``["string"]``...) or None."""
    spec = _spec(entity_type, attribute)
    return spec.get("type") if spec else None


def documented_unit(entity_type: str, attribute: str) -> str | None:
    """The UN/CEFACT code of the unit the model documents for the attribute (for ``no2:sensorA``,
    an instance with a ``datasetId``: for ``no2``), or None."""
    spec = _spec(entity_type, attribute)
    return spec.get("unit") if spec else None


def known_type(entity_type: str) -> bool:
    return entity_type in catalogue()
