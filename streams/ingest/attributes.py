"""One attribute of an NGSI entity -> what it means for the Observation.

Handles every attribute shape brokers send: NGSI-LD normalized (``{"type": "Property", "value":
..., "unitCode": ..., "observedAt": ...}``), concise (the same without ``type``, geometry as is,
``{"object": ...}`` for relationships), keyValues (bare values), and NGSI-v2 normalized
(``{"type": "Number", "value": ..., "metadata": {"unitCode": ..., "TimeInstant": ...}}``).
Numeric sub-properties and metadata (accuracy, previousValue ...) are never measurements; text that
looks like a number is never coerced.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from atalaia.streams.ingest.geo import V2_SHAPES, LocationError, geo_point_text, unlocated

LD_TYPES = frozenset(
    {
        "Property",
        "GeoProperty",
        "Relationship",
        "LanguageProperty",
        "VocabProperty",
        "JsonProperty",
        "ListProperty",
        "ListRelationship",
    }
)
GEOMETRY_TYPES = frozenset(
    {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon", "GeometryCollection"}
)


def is_geometry(v: dict) -> bool:
    """Is this object a GeoJSON geometry by its ``type``? (Any JSON may stand there: a list or
    an object is not a type name, and must not reach a set lookup.)"""
    kind = v.get("type")
    return type(kind) is str and kind in GEOMETRY_TYPES


V2_NUMBER_TYPES = frozenset({"Number", "Integer", "Float", "Double", "number", "integer", "float", "double"})
# Entity-level observation time, in order of preference (after the attribute's own observedAt).
TIME_FIELDS = (
    "dateObserved",
    "observationDateTime",
    "dateObservedTo",
    "TimeInstant",
    "dateLastValueReported",
)
#: (``alterationType``: Orion v2's entityCreate/entityUpdate/entityChange/entityDelete, sent when a
#: subscription asks for it: what happened to the entity, not something observed of it)
RESERVED = frozenset(
    {
        "id",
        "type",
        "@id",
        "@type",
        "@context",
        "createdAt",
        "modifiedAt",
        "deletedAt",
        "scope",
        "expiresAt",
        "alterationType",
    }
)
#: Smart Data Models attributes declared text whose values often look like decimals (Device's
#: firmwareVersion "1.0"): labels, never refused as a number written as text (unless a unit, an
#: observation time or a v2 Number type declares them a measurement)
TEXT_ATTRIBUTES = frozenset(
    {
        "firmwareVersion",
        "hardwareVersion",
        "softwareVersion",
        "osVersion",
        "version",
        "entityVersion",  # (SmartMeteringObservation: "2.0")
        "serialNumber",
        "stationID",
        "stationCode",
    }
)
#: text properties that describe an entity rather than tell its state: an entity with only these
#: (and relationships, addresses) has nothing to observe
DESCRIPTIVE = TEXT_ATTRIBUTES | frozenset(
    {"name", "description", "alternateName", "dataProvider", "source", "owner", "seeAlso", "areaServed"}
)
#: Bookkeeping: what a broker, an agent or the data model writes about the entity record, never a
#: measurement of the thing, whatever its value (a number included; as text it stays what it was:
#: a label, a date-time). By name:
#: * NGSI-v2 builtin attributes (Orion API, "Builtin Attributes": ``dateCreated``, ``dateModified``,
#:   ``dateExpires``, ``servicePath``; ``alterationType`` is RESERVED); NGSI-LD's system attributes
#:   (``createdAt``, ``modifiedAt``, ``deletedAt``, ``expiresAt``, ``scope``) are RESERVED;
#: * versions of the entity or of its schema (``entityVersion``, which some brokers and agents add
#:   as a revision counter, Smart Data Models' ``schemaVersion``), and the descriptive text
#:   DESCRIPTIVE names (names, serial numbers, station ids, firmware versions);
#: * by the Smart Data Models guidelines' naming rules: ``date<Name>`` is a date or timestamp
#:   ("Date Attributes": ``dateLastCalibration``, ``dateIssued``), ``ref<Type>`` a relationship
#:   to another entity ("Modelling linked data": ``refDevice``), and the date-times its common
#:   schemas name otherwise (``startDate``, ``endDate``, Alert's ``validFrom``, ``validTo``).
#: (The entity's time fields, TIME_FIELDS, are read as times, never as measurements.)
BOOKKEEPING = DESCRIPTIVE | frozenset(
    {
        "dateCreated",
        "dateModified",
        "dateExpires",
        "servicePath",
        "entityVersion",
        "schemaVersion",
        "startDate",
        "endDate",
        "validFrom",
        "validTo",
        "validThrough",
    }
)
_bookkeeping: dict[str, bool] = {}


def bookkeeping(name: str) -> bool:
    """Is ``name`` (a short name, as rules read it) a bookkeeping attribute (:data:`BOOKKEEPING`,
    ``date<Name>``, ``ref<Type>``), never a measurement? Cached per name."""
    known = _bookkeeping.get(name)
    if known is None:
        known = (
            name in BOOKKEEPING
            or (name.startswith("date") and name[4:5].isupper())
            or (name.startswith("ref") and name[3:4].isupper())
        )
        if len(_bookkeeping) >= 4096:
            _bookkeeping.clear()
        _bookkeeping[name] = known
    return known


def drop_bookkeeping(measurements: list[Measurement]) -> list[Measurement]:
    """``measurements`` without those of bookkeeping attributes (the fast path never appends them)."""
    return [m for m in measurements if not bookkeeping(m.name)]


#: the keys that make an object an attribute instance (normalized, concise, of any NGSI-LD kind)
INSTANCE_KEYS = frozenset({"value", "object", "type", "vocab", "languageMap", "json", "datasetId"})
#: a GeoJSON Feature (or FeatureCollection) given as a keyValues location: its geometry locates it
FEATURE_TYPES = frozenset({"Feature", "FeatureCollection"})
#: the same, for a ``type`` that may be any JSON (a list is unhashable: compared, never looked up)
_FEATURES = ("Feature", "FeatureCollection")
#: NGSI-LD 1.8's null (an attribute deleted, in a notification): no value, never a label
NGSI_LD_NULL = "urn:ngsi-ld:null"
_NUMBER_TEXT = re.compile(r"\s*[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][+-]?\d+)?\s*")
_DATETIME_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]")


@dataclass(slots=True)
class Measurement:
    name: str
    value: float
    unit: str | None
    time: str | None  # the attribute's own observedAt / TimeInstant metadata, as written
    time_key: str = "observedAt"  # where ``time`` was written, for a refusal's reason


@dataclass(slots=True)
class Refused:
    name: str
    reason: str
    code: str


@dataclass(slots=True)
class Parts:
    """Everything read from one entity's attributes."""

    measurements: list[Measurement]
    labels: dict[str, str]
    refused: list[Refused]
    geometry: Any = None  # the ``location`` value (GeoJSON geometry, or v2 geo:point text)
    has_location: bool = False
    times: dict[str, Any] | None = None  # TIME_FIELDS name -> raw value
    state_times: list[Any] | None = None  # observedAt of text and boolean properties (states)
    has_state: bool = False  # a text or boolean property that is not DESCRIPTIVE
    # NGSI-v2: the value of a geo-typed attribute not named ``location`` (Orion's one location
    # attribute may have any name, "position"), the location when there is no ``location``
    other_geometry: Any = None
    deleted: list[str] | None = None  # attributes notified as deleted (NGSI-v2 actionType delete)


def is_label_property(val: str, prop: dict, max_label: int) -> bool:
    """A Property whose text value is a label (``district``, ``name`` ...): it starts with a letter
    (neither a number nor a date-time), is short, and is not a measurement (no unit, no
    observation time)."""
    return val[:1].isalpha() and len(val) <= max_label and "unitCode" not in prop and "observedAt" not in prop


def _time_text(v: Any) -> str | None:
    """An ``observedAt`` as text; a non-text one is kept (as text) so that it is refused, not ignored."""
    return v if type(v) is str or v is None else str(v)[:64]


#: the NGSI-LD core context's prefix for the default context, as a broker compacts an attribute
#: that no user @context names (``ngsi-ld:default-context/height``)
DEFAULT_CONTEXT_PREFIX = "ngsi-ld:default-context/"


_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")  # a JSON-LD prefix (an NCName)


def short_name(name: str) -> str:
    """``https://smartdatamodels.org/dataModel.Environment/waterLevel`` -> ``waterLevel``;
    ``ngsi-ld:default-context/height`` -> ``height``; ``sdm:height`` -> ``height``."""
    if name.startswith(DEFAULT_CONTEXT_PREFIX) and len(name) > len(DEFAULT_CONTEXT_PREFIX):
        return name[len(DEFAULT_CONTEXT_PREFIX) :]
    if name.startswith(("http://", "https://")):
        tail = name.rstrip("/#")
        return tail[max(tail.rfind("/"), tail.rfind("#")) + 1 :] or name
    if ":" in name:  # a compact IRI (``sdm:height``, ``fiware:WaterObserved``): its term
        prefix, _, term = name.partition(":")
        if term and not term.startswith("//") and _PREFIX.fullmatch(prefix) and prefix.lower() != "urn":
            return term
    return name


def term(name: str, dialect: str) -> str:
    """A name as rules read it: NGSI-LD's short name (:func:`short_name`); in NGSI-v2, which has no
    ``@context``, a colon is part of the name (Orion allows ``power:L1``) and only a full URI or the
    default context's prefix (an Orion-LD cross-notification of a term it could not compact) is
    shortened."""
    if dialect == "ld" or name.startswith((DEFAULT_CONTEXT_PREFIX, "http://", "https://")):
        return short_name(name)
    return name


#: the usual prefix of NGSI-LD dataset ids (``urn:ngsi-ld:Dataset:raw``)
_DATASET_PREFIX = "urn:ngsi-ld:dataset:"


def dataset_name(name: str, dataset: Any) -> str:
    """The attribute name of one instance of a multi-attribute: ``name`` for the default instance
    (no ``datasetId``), else ``name:<dataset>`` where <dataset> is the id after
    ``urn:ngsi-ld:Dataset:`` (``urn:ngsi-ld:Dataset:sensor-1:raw`` -> ``sensor-1:raw``), the last
    path segment of a URL, or the part after the last ``:`` of another URN."""
    if type(dataset) is not str or not dataset:
        return name
    if dataset.lower().startswith(_DATASET_PREFIX) and len(dataset) > len(_DATASET_PREFIX):
        return f"{name}:{dataset[len(_DATASET_PREFIX) :]}"
    return f"{name}:{short_name(dataset).rsplit(':', 1)[-1]}"


def is_number(v: Any) -> bool:
    return (type(v) is float and math.isfinite(v)) or type(v) is int


def number_like_text(v: str, declared: bool) -> bool:
    """Text that is a number in disguise: decimals always; integers when declared a measurement
    (unitCode/observedAt/Number type). Plain integer codes such as district "13" stay labels."""
    if len(v) > 64:
        return False
    if not declared and "." not in v and "," not in v and "e" not in v and "E" not in v:
        return False  # an integer code: a label whatever the pattern says
    return _NUMBER_TEXT.fullmatch(v) is not None


def v2_number_text(name: str, v: str, unit: Any) -> bool:
    """An NGSI-v2 text value (of type Text, String or any type of the user's, "Temperature") that
    is a number in disguise: decimals always, integers when a unit declares a measurement. Not
    ``TimeInstant``: an IoT Agent puts it on every attribute, so a mode code "2" stays a label.
    The attributes Smart Data Models declare text (``TEXT_ATTRIBUTES``: a firmware version "1.0")
    are numbers only when a unit says so."""
    if name in TEXT_ATTRIBUTES:
        return unit is not None and number_like_text(v, True)
    return number_like_text(v, unit is not None)


def _text_refusal(name: str, text: str) -> Refused:
    return Refused(
        name, f"{name} value {text[:40]!r} is a number written as text; not coerced", "number-as-text"
    )


class _Reader:
    __slots__ = ("dialect", "max_label", "parts")

    def __init__(self, dialect: str, max_label: int) -> None:
        self.dialect = dialect
        self.max_label = max_label
        self.parts = Parts([], {}, [])

    def label(self, name: str, text: str) -> None:
        if text == NGSI_LD_NULL or not text or text.isspace():
            return  # (blank: an IoT Agent's unset Text attribute, " ", is no state)
        if len(text) <= self.max_label and not (
            len(text) > 10 and text[4] == "-" and _DATETIME_TEXT.match(text)
        ):
            self.parts.labels[name] = text

    def state(self, name: str, text: str, time: Any) -> None:
        """A text or boolean property: a label (a boolean as ``"true"``/``"false"``); its
        ``observedAt`` times an entity that has no measurement (a device's state alone)."""
        self.label(name, text)
        if name in self.parts.labels and name not in DESCRIPTIVE:
            self.parts.has_state = True
        if time is not None and name in self.parts.labels:
            if self.parts.state_times is None:
                self.parts.state_times = []
            self.parts.state_times.append(_time_text(time))

    def structured(self, name: str, value: dict) -> None:
        if name == "address":
            for k, v in value.items():
                if type(v) is str and k != "type":
                    self.label(f"address.{k}", v)

    def location(self, name: str, geometry: Any) -> None:
        if geometry == NGSI_LD_NULL:  # (NGSI-LD 1.8: deleted)
            geometry = None
        elif type(geometry) is dict and geometry.get("type") in _FEATURES and unlocated(geometry):
            geometry = None  # an unlocated GeoJSON Feature, as a null location
        if name == "location" and geometry is not None:  # null: the entity has no location now
            self.parts.geometry = geometry
            self.parts.has_location = True

    def measurement_value(self, name: str, v: Any, unit: Any, time: Any, declared: bool) -> None:
        """``v`` is the value of a Property (LD) or of a v2 attribute. A JSON-LD typed value
        (``{"@value": 3.6, "@type": "xsd:double"}``) is its ``@value``."""
        if type(v) is dict and "@value" in v and len(v) <= 3:  # (@value, @type, @language)
            v = _typed_value(v)
            if type(v) is _NotANumber:
                self.parts.refused.append(Refused(name, f"{name} value {v.why}", v.code))
                return
        if is_number(v):
            self.parts.measurements.append(
                Measurement(name, float(v), unit if type(unit) is str else None, _time_text(time))
            )
        elif type(v) is str:
            text = name in TEXT_ATTRIBUTES and not declared and unit is None and time is None
            if not text and number_like_text(v, declared or unit is not None or time is not None):
                self.parts.refused.append(_text_refusal(name, v))
            elif not declared:
                self.state(name, v, time)
            elif v and not v.isspace():  # (blank: an IoT Agent's " " before the first reading)
                self.parts.refused.append(
                    Refused(
                        name,
                        f"{name} is declared a Number but has the text {v[:40]!r}, not a number",
                        "wrong-value-type",
                    )
                )
        elif type(v) is bool and not declared:
            self.state(name, "true" if v else "false", time)
        elif type(v) is float:  # non-finite float can only come from a lenient producer
            self.parts.refused.append(
                Refused(name, f"{name} value is not a finite number", "non-finite-number")
            )
        elif declared:
            what = "no value" if v is None else f"a {type(v).__name__} value"
            self.parts.refused.append(
                Refused(
                    name,
                    f"{name} is declared a Number but has {what}",
                    "missing-value" if v is None else "wrong-value-type",
                )
            )
        elif type(v) is dict:
            self.structured(name, v)

    def attribute(self, name: str, v: Any) -> None:
        if name in RESERVED:
            return
        if not name:
            self.parts.refused.append(Refused(name, "an attribute has an empty name", "empty-name"))
            return
        name = term(name, self.dialect)
        if type(v) is dict and "metadata" in v and action_deleted(v):
            # what a deleted attribute still carries is its last value, not a reading, a state, a
            # location or a time: noted (IngestResult.ignored), never observed
            if self.parts.deleted is None:
                self.parts.deleted = []
            self.parts.deleted.append(name)
            return
        if name in TIME_FIELDS:
            if self.parts.times is None:
                self.parts.times = {}
            self.parts.times[name] = v
            return
        self.value(name, v)

    def value(self, name: str, v: Any) -> None:
        """An attribute's value as the simplified (keyValues) and concise forms send it."""
        t = type(v)
        if t is int or t is float:
            self.measurement_value(name, v, None, None, False)
        elif t is bool:
            self.state(name, "true" if v else "false", None)  # keyValues boolean
        elif t is str:
            if name == "location" and _point_text(v):
                self.location(name, v)  # NGSI-v2 keyValues geo:point "lat, lon"
            elif number_like_text(v, False) and name not in TEXT_ATTRIBUTES:
                self.parts.refused.append(_text_refusal(name, v))
            else:
                self.state(name, v, None)
        elif t is dict:
            # (one instance with a datasetId, sent as an object: never the default instance; the
            # entity's location stays its location)
            self.dict_attribute(name if name == "location" else dataset_name(name, v.get("datasetId")), v)
        elif t is list and v and type(v[0]) is dict:
            self.instances(name, v)

    def instances(self, name: str, items: list) -> None:
        """NGSI-LD multi-attribute: several instances told apart by ``datasetId``."""
        if not items or type(items[0]) is not dict or not INSTANCE_KEYS.intersection(items[0]):
            return  # a list value (ListProperty, keyValues), not instances
        for item in items:  # every instance, whichever kinds follow the first (concise: no type)
            if type(item) is dict and INSTANCE_KEYS.intersection(item):
                self.dict_attribute(dataset_name(name, item.get("datasetId")), item)

    def dataset(self, name: str, instances: dict) -> None:
        """NGSI-LD's simplified multi-attribute (1.7 §4.5.4, Stellio): ``{"dataset": {"@none": v,
        "urn:ngsi-ld:Dataset:raw": v2}}``, each value as keyValues sends one."""
        for dataset, v in instances.items():
            if type(dataset) is str and dataset:
                self.value(name if dataset == "@none" else dataset_name(name, dataset), v)

    def dict_attribute(self, name: str, d: dict) -> None:
        kind = d.get("type")
        if kind is not None and type(kind) is not str:
            if "value" in d or "object" in d:
                self.parts.refused.append(
                    Refused(name, f"{name} has a non-text attribute type", "wrong-attribute-type")
                )
            return
        if kind is None:
            if "value" in d:  # concise Property (or v2 without type)
                v = d["value"]
                if type(v) is dict and (
                    is_geometry(v) or (name == "location" and v.get("type") in _FEATURES)
                ):
                    self.location(
                        name, v
                    )  # concise GeoProperty with sub-attributes (a Feature: its geometry)
                    return
                if self.dialect == "v2" and type(d.get("metadata")) is dict:
                    self.v2_attribute(name, None, d)  # (a Smart Data Models v2 example: no type)
                    return
                self.measurement_value(name, d["value"], d.get("unitCode"), d.get("observedAt"), False)
            elif "object" in d:
                if type(d["object"]) is str:
                    self.label(name, d["object"])
            elif "vocab" in d:  # concise VocabProperty
                self.vocab(name, d)
            elif "languageMap" in d:  # concise LanguageProperty
                self.ld_attribute(name, "LanguageProperty", d)
            elif type(d.get("dataset")) is dict and len(d) == 1:
                self.dataset(name, d["dataset"])
            elif "@value" in d and len(d) <= 3:  # a keyValues JSON-LD typed value (@type, @language)
                self.measurement_value(name, d, None, None, False)
            else:
                self.structured(name, d)
            return
        if (
            (kind in GEOMETRY_TYPES and "coordinates" in d)
            or kind == "GeometryCollection"
            or (name == "location" and kind in FEATURE_TYPES and "value" not in d)
        ):
            self.location(name, d)  # (a keyValues location; a Feature: its geometry)
        elif kind in LD_TYPES:
            self.ld_attribute(name, kind, d)
        elif self.dialect == "v2":
            self.v2_attribute(name, kind, d)
        elif "value" in d or "object" in d:
            self.parts.refused.append(
                Refused(
                    name,
                    f"{name} has attribute type {str(kind)[:40]!r}; NGSI-LD allows Property, "
                    "GeoProperty, Relationship, LanguageProperty, ...",
                    "wrong-attribute-type",
                )
            )
        else:
            self.structured(name, d)  # keyValues structured value such as a PostalAddress

    def ld_attribute(self, name: str, kind: str, d: dict) -> None:
        if kind == "Property":
            if "value" not in d:
                self.parts.refused.append(
                    Refused(name, f"{name} is a Property without value", "missing-value")
                )
                return
            value = d["value"]
            if (
                name == "location"
                and type(value) is dict
                and (is_geometry(value) or value.get("type") in _FEATURES)
            ):
                # (written as a Property, as Smart Data Models' DeviceMeasurement, BikeLane,
                # SeaConditions NGSI-LD examples are: its geometry is the location all the same)
                self.location(name, d["value"])
                return
            unit, time = d.get("unitCode"), d.get("observedAt")
            meta = d.get("metadata")
            if type(meta) is dict:  # Orion-LD's x-ngsiv2-normalized cross-notification
                if unit is None:
                    unit = _meta_value(meta.get("unitCode"))
                if time is None:
                    time = _meta_value(meta.get("observedAt"))
            self.measurement_value(name, d["value"], unit, time, False)
        elif kind == "GeoProperty":
            self.location(name, d.get("value"))
        elif kind == "Relationship":
            obj = d.get("object", d.get("value"))  # "value": x-ngsiv2-normalized
            if type(obj) is str:
                self.label(name, obj)
        elif kind == "LanguageProperty" and name in DESCRIPTIVE:
            text = _in_language(d.get("languageMap"))  # a name in several languages: one label
            if text is not None:
                self.label(name, text)
        elif kind == "VocabProperty":
            self.vocab(name, d)

    def vocab(self, name: str, d: dict) -> None:
        """An NGSI-LD 1.8 VocabProperty (an enumerated state: ``"vocab": "fault"``, or an expanded
        term): a state as a text Property's value is, its term's short name."""
        v = d.get("vocab")
        if type(v) is list and len(v) == 1:
            v = v[0]
        if type(v) is str and v and v != NGSI_LD_NULL:
            self.state(name, short_name(v), d.get("observedAt"))

    def v2_attribute(self, name: str, kind: Any, d: dict) -> None:
        if "value" not in d and "metadata" not in d:
            self.structured(name, d)  # keyValues structured value with its own "type" (PostalAddress)
            return
        meta = d.get("metadata")
        unit = time = None
        time_key = "observedAt"
        if type(meta) is dict and meta:
            unit = _meta_value(meta.get("unitCode")) or _meta_value(meta.get("unit"))  # ("cm": a symbol)
            time, time_key = meta_time(meta)
        v = d.get("value")
        measurements = self.parts.measurements
        first = len(measurements)
        if kind in V2_NUMBER_TYPES:
            if v is None and "value" in d:
                return  # a Number with a null value: no reading yet (Orion, IoT Agents), not an error
            self.measurement_value(name, v, unit, time, True)
        elif kind == "geo:json" or kind == "geo:point" or kind in V2_SHAPES:
            geometry = (kind, v) if kind in V2_SHAPES and v is not None else v
            if name == "location":
                self.location(name, geometry)
            elif (
                geometry is not None
                and self.parts.other_geometry is None
                and not (type(meta) is dict and _meta_value(meta.get("ignoreType")) in (True, "true"))
            ):
                self.parts.other_geometry = geometry  # (Orion's ignoreType: not the location)
        elif kind == "DateTime":
            return
        elif kind == "Relationship":
            if type(v) is str:
                self.label(name, v)
        elif type(v) is str:
            if v2_number_text(name, v, unit):
                # a reading an IoT Agent sent as its default type (an unprovisioned UL attribute),
                # or under a type of the user's ("Temperature"): refused as any number written as
                # text is, with the reason, never a state
                self.parts.refused.append(_text_refusal(name, v))
            else:
                self.state(name, v, time)
        elif is_number(v) or type(v) is bool:  # (a number as "Text": an IoT Agent's default type)
            self.measurement_value(name, v, unit, time, False)
        elif type(v) is dict:
            if name == "location" and is_geometry(v):
                # a geometry under another type: Orion's StructuredValue, the type it gives an
                # object written without one
                self.location(name, v)
            else:
                self.structured(name, v)
        if time is not None and len(measurements) > first:
            measurements[-1].time_key = time_key


#: the label of a LanguageProperty: its text in the first of these languages it has, else its first
LABEL_LANGUAGES = ("pt-PT", "pt", "en-GB", "en")


def _in_language(languages: Any) -> str | None:
    if type(languages) is not dict or not languages:
        return None
    for tag in LABEL_LANGUAGES:
        if type(languages.get(tag)) is str:
            return languages[tag]
    first = next(iter(languages.values()))
    return first if type(first) is str else None


def _point_text(v: str) -> bool:
    """``"lat, lon"`` (a keyValues ``geo:point``), parseable as such."""
    if v[:1].isalpha() or v.count(",") != 1:
        return False
    try:
        geo_point_text(v)
    except LocationError:
        return False
    return True


_XSD_NUMBERS = ("double", "decimal", "float", "integer", "int", "long", "short")
_XSD_INTEGERS = ("integer", "int", "long", "short")
# XSD's lexical forms (whitespace collapsed): no "1_000", no digits of other scripts, no hex
_XSD_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_XSD_INTEGER = re.compile(r"[+-]?[0-9]+")
_XSD_COMMA = re.compile(r"[+-]?[0-9]*,[0-9]+(?:[eE][+-]?[0-9]+)?")  # a decimal comma: number-as-text


@dataclass(frozen=True, slots=True)
class _NotANumber:
    """Text typed as an XSD number that is not one (or not a finite double): refused, never a label."""

    code: str
    why: str


def _typed_value(v: dict) -> Any:
    """A JSON-LD value object's value; text typed as an XSD number (``{"@value": "3.6", "@type":
    "xsd:double"}``, RDF's usual form) is that number, declared so by its sender, read as XSD
    writes numbers. Typed text that is not one (``"abc"``, ``"1_000"``; ``"3,6"`` is a number
    written as text) or is no finite double
    (``"NaN"``, ``"INF"``, ``"1e400"``) is a :class:`_NotANumber`."""
    value, kind = v["@value"], v.get("@type")
    if type(value) is str and type(kind) is str:
        xsd = kind.rsplit("#", 1)[-1].rsplit(":", 1)[-1]
        if xsd in _XSD_NUMBERS:
            text = value.strip()
            typed = f"{value[:40]!r} typed {kind[:60]}"
            if (_XSD_INTEGER if xsd in _XSD_INTEGERS else _XSD_DECIMAL).fullmatch(text):
                number = float(text)
                if math.isfinite(number):
                    return number
                return _NotANumber("non-finite-number", f"{typed} overflows a double")
            if text.lstrip("+-") in ("INF", "NaN"):
                return _NotANumber("non-finite-number", f"{typed} is not a finite number")
            if _XSD_COMMA.fullmatch(text):
                return value  # ("3,6": a number written as text, refused as such)
            return _NotANumber("wrong-value-type", f"{typed} is not a number")
    return value


def meta_time(meta: dict) -> tuple[Any, str]:
    """An NGSI-v2 attribute's own time and the metadata it is written in: ``TimeInstant`` (IoT
    Agents), else ``observedAt`` (Orion-LD's cross-notifications), else a ``timestamp`` text
    (Smart Data Models' v2 ParkingSpot ``status``, OffStreetParking ``availableSpotNumber``). An
    unset one (blank, the epoch) is skipped."""
    m = meta.get("TimeInstant")
    if type(m) is dict:  # (the usual, on every attribute an IoT Agent writes: one look)
        time = m.get("value")
        if type(time) is str and "2" <= time[:1] <= "9":  # neither blank nor the epoch
            return time, "TimeInstant metadata"
    for key, where in _META_TIMES:
        time = _meta_value(meta.get(key))
        if time is None or (type(time) is str and unset_time(time)):
            continue  # (unset: blank, or the epoch an IoT Agent writes before it knows)
        if type(time) is str or key != "timestamp":
            return time, where
    return None, "observedAt"


_META_TIMES = tuple((key, f"{key} metadata") for key in ("TimeInstant", "observedAt", "timestamp"))


def action_deleted(attribute: dict) -> bool:
    """Does an NGSI-v2 attribute's ``actionType`` builtin metadata (NGSI-v2 "Builtin Metadata",
    only in notifications, when the subscription asks for it: ``update``, ``append`` or
    ``delete``) say that the attribute was deleted?"""
    meta = attribute.get("metadata")
    return type(meta) is dict and "actionType" in meta and _meta_value(meta["actionType"]) == "delete"


def _meta_value(m: Any) -> Any:
    """An NGSI-v2 metadata's value (``{"type": ..., "value": ...}``, or bare text). Blank text is
    no value: an unset ``TimeInstant`` (``" "``, an IoT Agent's default for what it has not been
    told) is absent, as an unset entity time is, so the next time is used; a blank ``unitCode``
    is no unit."""
    if type(m) is dict:
        m = m.get("value")
    elif type(m) is not str:
        return None
    return None if type(m) is str and (not m or m.isspace()) else m


def read_attributes(entity: dict, dialect: str, max_label: int) -> Parts:
    """Read every attribute of one entity. The loop inlines the shapes that dominate real traffic
    (numeric and text NGSI-LD Properties, normalized or concise, relationships, bare keyValues
    numbers and words); everything else goes through the general reader."""
    reader = _Reader(dialect, max_label)
    general = reader.attribute
    parts = reader.parts
    measurements = parts.measurements
    labels = parts.labels
    for name, v in entity.items():
        if name in RESERVED:
            continue
        if not name or name in TIME_FIELDS or ":" in name or name.startswith("http"):
            general(name, v)  # (a compact or full IRI, the default context's prefix: short_name)
            continue
        t = type(v)
        if t is dict:
            kind = v.get("type")
            if "datasetId" in v:
                general(name, v)
                continue
            if (kind == "Property" or kind is None) and "value" in v and "metadata" not in v:
                val = v["value"]
                tv = type(val)
                if tv is int or (tv is float and val - val == 0.0):
                    unit = v.get("unitCode")
                    at = v.get("observedAt")
                    measurements.append(
                        Measurement(
                            name,
                            float(val),
                            unit if type(unit) is str else None,
                            _time_text(at),
                        )
                    )
                    continue
                if tv is str and is_label_property(val, v, max_label) and val != NGSI_LD_NULL:
                    labels[name] = val
                    if name not in DESCRIPTIVE:
                        parts.has_state = True
                    continue
            elif kind == "GeoProperty" and name == "location":
                g = v.get("value")
                if g is not None and g != NGSI_LD_NULL and not unlocated(g):
                    parts.geometry = g
                    parts.has_location = True
                continue
            elif kind == "Relationship":
                obj = v.get("object")
                if (
                    type(obj) is str
                    and len(obj) <= max_label
                    and obj != NGSI_LD_NULL
                    and obj
                    and not obj.isspace()  # (blank: the reader's, no label)
                ):
                    labels[name] = obj
                    continue
        elif t is int or (t is float and v - v == 0.0):
            measurements.append(Measurement(name, float(v), None, None))
            continue
        elif t is str and v[:1].isalpha() and len(v) <= max_label and v != NGSI_LD_NULL:
            labels[name] = v
            if name not in DESCRIPTIVE:
                parts.has_state = True
            continue
        general(name, v)
    if parts.other_geometry is not None and "location" not in entity:
        reader.location("location", parts.other_geometry)
    for m in measurements:
        if bookkeeping(m.name):  # (a numeric entityVersion, dateModified, refDevice: never a reading)
            parts.measurements = drop_bookkeeping(measurements)
            break
    return parts


#: Smart Data Models types whose reading's unit is a property of the entity rather than the
#: reading's ``unitCode``: DeviceMeasurement's ``unit`` ("Units of the measurement", a UN/CEFACT
#: code) is the unit of its ``numValue``
ENTITY_UNITS: dict[str, tuple[str, tuple[str, ...]]] = {"DeviceMeasurement": ("unit", ("numValue",))}


def entity_units(types: list[str], parts: Parts) -> None:
    """Give the readings of an :data:`ENTITY_UNITS` type without a unit code of their own the
    unit the entity states (its text property, as sent)."""
    for etype in types:
        rule = ENTITY_UNITS.get(etype)
        if rule is None:
            continue
        unit = parts.labels.get(rule[0])
        if unit is None:
            continue
        for m in parts.measurements:
            if m.unit is None and m.name in rule[1]:
                m.unit = unit


#: the time an IoT Agent writes in a DateTime attribute it has not been told yet
#: (iotagent-node-lib's ``DATETIME_DEFAULT``, 1970-01-01T00:00:00.000Z): the epoch is no reading's time
_EPOCH = re.compile(r"\s*1970-01-01[Tt ]00:00:00(?:[.,]0+)?(?:[Zz]|[+-]00:?00)?\s*")


def unset_time(text: str) -> bool:
    """Time text that says no time: blank, or an IoT Agent's placeholder, the epoch."""
    if "2" <= text[:1] <= "9":  # (a time of this millennium, the usual: no pattern to try)
        return False
    return not text or text.isspace() or _EPOCH.fullmatch(text) is not None


def absent_time(v: Any) -> bool:
    """An entity-level time attribute that holds no time: null, blank text, the epoch (an IoT
    Agent's placeholder), or a Property whose value is one of those (an IoT Agent's unset
    ``dateObserved``). The next field of TIME_FIELDS is used instead, as if it were not there."""
    if v is None:
        return True
    if type(v) is str:
        return unset_time(v)
    if type(v) is dict and v.get("type") != "Relationship":
        key = "value" if "value" in v else "@value" if "@value" in v else None  # (a typed literal)
        if key is not None:
            inner = v[key]
            if type(inner) is dict:
                if "@value" in inner:  # (a Property whose value is a typed literal)
                    inner = inner["@value"]
                elif inner.get("type") == "DateTime":  # (an NGSI-v2 DateTime nested: time_text's)
                    inner = inner.get("value")
            return inner is None or (type(inner) is str and unset_time(inner))
    return False


def time_text(name: str, v: Any) -> tuple[str | None, str | None]:
    """The time string inside an entity-level time attribute, or an error."""
    if type(v) is str:
        return v, None
    if type(v) is dict:
        kind = v.get("type")
        if kind == "Relationship":
            return None, f"{name} is a Relationship, expected a date-time Property"
        inner = v.get("value", v.get("@value"))
        if type(inner) is dict:
            # a typed value, or an NGSI-v2 DateTime nested as the value of an NGSI-LD Property
            # (``{"type": "DateTime", "value": "..."}``, as Smart Data Models' RainFallRadarObserved
            # and PhreaticObserved examples write it)
            if "@value" in inner:
                inner = inner["@value"]
            else:
                inner = inner.get("value") if inner.get("type") == "DateTime" else None
        if type(inner) is str:
            return inner, None
    return None, f"{name} holds no date-time text"
