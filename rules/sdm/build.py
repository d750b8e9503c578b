"""Build ``attributes.json`` (the attribute catalogue of Smart Data Models types) from the models'
``schema.json`` files, resolving their ``$ref`` to local copies of the common schemas.

    python -m atalaia.rules.sdm.build ../shared/fixtures/sdm > rules/sdm/attributes.json

The schemas are © the Smart Data Models initiative, CC-BY-4.0; the catalogue keeps, per type, the
attribute names, their JSON types, bounds and enumerations (an adaptation: see ``NOTICE.md``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# the common schemas a model's remote $ref points at -> the local copy in _common/
_COMMON = {
    "common-schema.json": "common-schema.json",
    "alert-schema.json": "alert-schema.json",
    "device-schema.json": "device-schema.json",
    "weather-schema.json": "weather-schema.json",
    "Environment-schema.json": "Environment-schema.json",
}


def _resolve(ref: str, root: Path, here: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the node a $ref points at, the document it is in: relative refs inside it resolve there)."""
    url, _, fragment = ref.partition("#")
    doc = here
    if url:
        name = url.rsplit("/", 1)[-1]
        doc = json.loads((root / "_common" / _COMMON.get(name, name)).read_text())
    node: Any = doc
    for part in fragment.strip("/").split("/") if fragment.strip("/") else []:
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node, doc


def _kind(spec: dict[str, Any], root: Path, doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "$ref" in spec:
        target, doc = _resolve(spec["$ref"], root, doc)
        spec = {**target, **{k: v for k, v in spec.items() if k != "$ref"}}
    types: set[str] = set()
    for alt in [spec, *spec.get("oneOf", []), *spec.get("anyOf", [])]:
        t = alt.get("type")
        if isinstance(t, str):
            types.add(t)
        elif isinstance(t, list):
            types.update(t)
        for bound in ("minimum", "maximum"):
            if bound in alt and alt is spec:
                out[bound] = alt[bound]
        if "enum" in alt:
            out.setdefault("enum", []).extend(alt["enum"])
    if types:
        out["type"] = sorted(types)
    return out


def _properties(schema: dict[str, Any], root: Path, doc: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    if "$ref" in schema:
        target, there = _resolve(schema["$ref"], root, doc)
        props.update(_properties(target, root, there))
    for part in [*schema.get("allOf", []), *schema.get("anyOf", []), *schema.get("oneOf", [])]:
        props.update(_properties(part, root, doc))
    for name, spec in (schema.get("properties") or {}).items():
        props[name] = _kind(spec, root, doc)
    return props


# The unit each model documents for a measured attribute (its description or the model's spec page),
# as a UN/CEFACT common code: what ``rules check`` converts a rule's ``unit:`` from. A fraction the
# schema bounds to [0, 1] (``relativeHumidity`` "a number between 0 and 1 representing the range of
# 0% to 100%", ``occupancy`` "fraction of the observation time", ``reliability``, ``batteryLevel``) is C62, "one": 0.95 is 95 %.
DOCUMENTED_UNITS = {
    "WaterObserved": {"flow": "MQS", "waterDischarge": "MQS", "height": "MTR", "waterLevel": "MTR"},
    "AirQualityObserved": {
        **{p: "GQ" for p in ("no", "no2", "nox", "o3", "so2", "pm1", "pm10", "pm25", "pm4", "c6h6")},
        "co": "GP",
        "precipitation": "MMT",
        "temperature": "CEL",
        "relativeHumidity": "C62",
        "reliability": "C62",
        "windSpeed": "MTS",
    },
    "Device": {"batteryLevel": "C62"},  # "1.0 when battery is full, 0.0 when empty" (-1: unknown)
    "FloodMonitoring": {"currentLevel": "MTR", "alertLevel": "MTR", "dangerLevel": "MTR"},
    "NoiseLevelObserved": {"LAeq": "2N", "LAmax": "2N", "LAS": "2N", "LAeq_d": "2N"},
    "TrafficFlowObserved": {"averageVehicleSpeed": "KMH", "occupancy": "C62"},
}


def build(root: Path) -> dict[str, Any]:
    types = {}
    for schema_file in sorted(root.glob("*/schema.json")):
        doc = json.loads(schema_file.read_text())
        props = _properties(doc, root, doc)
        props.pop("type", None)
        props.pop("id", None)
        for name, code in DOCUMENTED_UNITS.get(schema_file.parent.name, {}).items():
            if name in props:
                props[name]["unit"] = code
        types[schema_file.parent.name] = {"$id": doc.get("$id"), "attributes": dict(sorted(props.items()))}
    return {
        "source": "Smart Data Models schema.json files (https://smartdatamodels.org), CC-BY-4.0",
        "types": types,
    }


if __name__ == "__main__":
    json.dump(build(Path(sys.argv[1])), sys.stdout, indent=1, ensure_ascii=False, sort_keys=False)
    sys.stdout.write("\n")
