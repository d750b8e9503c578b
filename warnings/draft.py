"""The warning draft (DESIGN.md, "Warning draft → CAP"): what an operator fills in, in the console or
as a YAML file, validated at the edge.

``Draft`` checks the shape; :func:`problems` checks it against the catalogue (levels, geocodes) and
the CAP rules (references, times, polygons). Every problem names its location (``("area",
"geocodes", "DICOFRE", 0)``), which the YAML loader turns into ``file:line:col`` and the API into a
field name.

>>> from atalaia.warnings.catalogue import Catalogue
>>> d = Draft.model_validate({"sender": "pc@cm-porto.pt", "status": "Actual", "msgType": "Update",
...     "level": "purple", "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
...     "area": {"geocodes": {"DICOFRE": ["131203"]}}})
>>> [(".".join(map(str, loc)), msg) for loc, msg in problems(d, Catalogue.load())]  # doctest: +NORMALIZE_WHITESPACE
[('level', "unknown level 'purple'; use one of: green, azul, yellow, orange, red"),
 ('references', 'an Update needs references: the identifiers (or sender,identifier,sent) of the warnings it replaces')]
"""

from __future__ import annotations

import difflib
import math
import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from atalaia.warnings.catalogue import CAOP_CODES, Catalogue

Loc = tuple[Any, ...]
Problem = tuple[Loc, str]

STATUSES = ("Actual", "Exercise", "Test")
MSG_TYPES = ("Alert", "Update", "Cancel")
URGENCIES = ("Immediate", "Expected", "Future", "Past", "Unknown")
CERTAINTIES = ("Observed", "Likely", "Possible", "Unlikely", "Unknown")
CATEGORIES = ("Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env", "Transport", "Infra")
CATEGORIES = (*CATEGORIES, "CBRNE", "Other")
RESPONSES = ("Shelter", "Evacuate", "Prepare", "Execute", "Avoid", "Monitor", "Assess", "AllClear", "None")
SCOPES = ("Public", "Restricted", "Private")
DEFAULT_LANGUAGE = "pt-PT"

# CAP 1.2 §3.2.1: identifier and sender "must not include spaces, commas or restricted characters
# (< and &)".
_BAD_ID_CHARS = re.compile(r"[\s,<&]")


def _invisible(text: str) -> str | None:
    """The first invisible character of ``text`` (a zero-width space, a direction mark, a BOM,
    any format or control character: ``PT-1\u200b`` looks like ``PT-1`` and is another identifier),
    as ``U+200B``, or None."""
    import unicodedata

    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp", "Zs"):
            return f"U+{ord(ch):04X}"
    return None


# letters that draw nothing (Hangul fillers, the braille blank): a text of them reads as empty
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def blank(text: Any) -> bool:
    """Whether ``text`` shows nothing: empty, or only spaces, format characters (a zero-width
    space, a direction mark) and letters that draw nothing. A headline of U+200B would be sent as
    an empty line to every phone.

    >>> [blank(t) for t in ("", " \u200b\u2060 ", "\u3164", "Cheia")]
    [True, True, True, False]
    """
    import unicodedata

    return all(
        ch in _BLANK_LETTERS or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Zs") for ch in str(text)
    )


_LANG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")
# ASCII digits only (re.ASCII): Python's \d and float() also take other scripts' digits ("٤١"), which
# no CAP reader expects
_CIRCLE = re.compile(
    r"\s*(-?[0-9]+(?:\.[0-9]+)?),(-?[0-9]+(?:\.[0-9]+)?)\s+([0-9]+(?:\.[0-9]+)?)\s*", re.ASCII
)
_EMMA_ID = re.compile(r"[A-Z]{2}[0-9]{3}", re.ASCII)
# a coordinate written as text: a decimal number in ASCII (no "1_0", "nan", "inf", "٤١")
_COORD = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*", re.ASCII)
# A drawn polygon's points (checked for self-intersection, which is quadratic at worst)
MAX_POLYGON_POINTS = 1000
# How much one draft's areas may hold (distinct geocodes; polygons and circles). Far beyond any
# real warning (Portugal has about 3 100 parishes, 308 municipalities): a draft past them is a
# mistake or an attack, and checking it would hold the process (each code is looked up and named)
MAX_AREAS = 100
MAX_AREA_GEOCODES = 4000  # distinct geocodes of one area
MAX_GEOCODES = 4000  # distinct geocodes of the whole draft
MAX_AREA_SHAPES = 100  # polygons and circles of one area
MAX_SHAPES = 200  # polygons and circles of the whole draft
# Smaller than this (about 10 m x 10 m) a drawn polygon is a slip of the hand, not an area to warn
MIN_POLYGON_AREA_M2 = 100.0
# Mainland Portugal (lat, lon), for the plausibility check of drawn polygons (a swapped lat,lon lands
# far outside it). Same box as ../shared/fixtures/cap/validate_cap.py.
PT_BBOX = (36.8, 42.2, -9.6, -6.1)


def cap_time(v: Any) -> Any:
    """A time with an explicit offset (``+01:00``, ``Z``), as UTC without fractional seconds."""
    if isinstance(v, datetime):
        t = v
    elif isinstance(v, date):
        raise ValueError(f"{v.isoformat()} has no time of day: write it like 2026-12-04T18:00:00+00:00")
    elif isinstance(v, str):
        s = " ".join(v.split())
        if re.fullmatch(r"\d{4}-\d\d-\d\d", s):
            raise ValueError(f"{s} has no time of day: write it like 2026-12-04T18:00:00+00:00")
        s = re.sub(r"\s*[zZ]$", "+00:00", s)
        s = re.sub(r"(\d)\s+([+-]\d\d(:?\d\d)?)$", r"\1\2", s)  # YAML allows a space before the offset
        try:
            t = datetime.fromisoformat(s)
        except ValueError:
            raise ValueError(f"{v!r} is not a date-time like 2026-12-04T18:00:00+00:00") from None
    else:
        raise ValueError(f"expected a date-time like 2026-12-04T18:00:00+00:00, got {v!r}")
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(
            f"{t.isoformat()} has no UTC offset: write it like 2026-12-04T18:00:00+00:00 (or +01:00)"
        )
    if t.utcoffset().total_seconds() % 60:  # (CAP's offsets are hh:mm; Python reads +01:00:30 too)
        raise ValueError(f"{v!r}: a UTC offset is hours and minutes, like +01:00 (not seconds)")
    return datetime.fromtimestamp(int(t.timestamp()), UTC)


def local_time(t: datetime, tz: Any, fmt: str = "%d/%m/%Y %H:%M") -> str:
    """``t`` in ``tz``'s wall-clock time; with the zone's abbreviation when that wall-clock time
    happens twice (the autumn DST change: 01:45 WEST and 01:45 WET are an hour apart).

    >>> from zoneinfo import ZoneInfo
    >>> lisbon = ZoneInfo("Europe/Lisbon")
    >>> [local_time(cap_time(t), lisbon) for t in ("2026-10-25T00:45:00Z", "2026-10-25T01:45:00Z", "2026-10-25T02:45:00Z")]
    ['25/10/2026 01:45 WEST', '25/10/2026 01:45 WET', '25/10/2026 02:45']
    """
    local = t.astimezone(tz)
    text = local.strftime(fmt)
    if local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset():
        text += f" {local.tzname()}"
    return text


def _canon(choices: tuple[str, ...]):
    """Case-insensitive enumeration values, returned in their CAP spelling."""
    by_fold = {c.lower(): c for c in choices}

    def f(v: Any) -> Any:
        return by_fold.get(v.strip().lower(), v) if isinstance(v, str) else v

    return BeforeValidator(f)


# what an URI (RFC 3986) may not hold as written: spaces, controls, "<>\"{}|\\^`" and an unescaped
# "%" (non-ASCII letters are left to IRIs, which readers take)
_NOT_IN_URI = re.compile(r"[\x00-\x20\x7f<>\"{}|\\^`]|%(?![0-9A-Fa-f]{2})")

# what no XML 1.0 text may hold (lone surrogates cannot even be encoded as UTF-8)
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(v: Any) -> Any:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return str(v)
    return v


def _xml_text(v: str) -> str:
    if (m := _NOT_XML.search(v)) is not None:
        what = "surrogate" if "\ud800" <= m[0] <= "\udfff" else "control character"
        raise ValueError(f"{what} U+{ord(m[0]):04X} cannot be part of a CAP document")
    return v


def _list(v: Any) -> Any:
    """A single value where a list is expected: a list of one (a string of references: split)."""
    if v is None:
        return []
    if isinstance(v, str):
        return v.split()
    if isinstance(v, list | tuple):
        return list(v)
    return [v]


Time = Annotated[datetime, BeforeValidator(cap_time)]
Text = Annotated[str, BeforeValidator(_text), AfterValidator(_xml_text)]
LangText = Text | dict[str, Text]  # one text for every language, or {language: text}
Status = Annotated[Literal["Actual", "Exercise", "Test"], _canon(STATUSES)]
MsgType = Annotated[Literal["Alert", "Update", "Cancel"], _canon(MSG_TYPES)]
Urgency = Annotated[Literal["Immediate", "Expected", "Future", "Past", "Unknown"], _canon(URGENCIES)]
Certainty = Annotated[Literal["Observed", "Likely", "Possible", "Unlikely", "Unknown"], _canon(CERTAINTIES)]
Category = Annotated[
    Literal[
        "Geo",
        "Met",
        "Safety",
        "Security",
        "Rescue",
        "Fire",
        "Health",
        "Env",
        "Transport",
        "Infra",
        "CBRNE",
        "Other",
    ],
    _canon(CATEGORIES),
]
Response = Annotated[
    Literal["Shelter", "Evacuate", "Prepare", "Execute", "Avoid", "Monitor", "Assess", "AllClear", "None"],
    _canon(RESPONSES),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Point(_Model):
    lat: float
    lon: float


def _coord(v: Any) -> float:
    """A coordinate: a number, or a decimal number written in ASCII."""
    if isinstance(v, bool):
        raise TypeError(v)
    if isinstance(v, str):
        if not _COORD.fullmatch(v):
            raise ValueError(v)
        return float(v)
    return float(v)


# a comma with spaces around it, as people type a pair ("41.15, -8.60"): CAP writes "41.15,-8.60"
_PAIR_COMMA = re.compile(r"\s*,\s*")


def _cap_pairs(text: str) -> list[str]:
    """CAP's ``"lat,lon lat,lon ..."`` as its ``lat,lon`` pairs."""
    return _PAIR_COMMA.sub(",", text.strip()).split()


def _points(v: Any) -> Any:
    """``[[lat, lon], ...]``, ``["lat,lon", ...]`` or CAP's ``"lat,lon lat,lon ..."`` -> [[lat, lon]]."""
    if isinstance(v, str):
        v = _cap_pairs(v)
    if not isinstance(v, list | tuple):
        raise ValueError("a polygon is a list of [lat, lon] pairs")
    out = []
    for p in v:
        if isinstance(p, str):
            p = p.split(",")
        if not isinstance(p, list | tuple) or len(p) != 2:
            raise ValueError(f"{p!r} is not a [lat, lon] pair")
        try:
            out.append((_coord(p[0]), _coord(p[1])))
        except (TypeError, ValueError):
            raise ValueError(f"{p!r} is not a pair of numbers [lat, lon]") from None
    return out


def _one_polygon(v: Any) -> bool:
    """``v`` is a whole polygon in one of its forms, not one of its points: CAP text of several
    pairs, or a list of points written ``[lat, lon]`` or ``"lat,lon"``."""
    if isinstance(v, str):
        return len(_cap_pairs(v)) > 1
    if not isinstance(v, list | tuple) or not v:
        return False
    return isinstance(v[0], list | tuple) or all(isinstance(p, str) and "," in p for p in v)


def several_polygons(v: Any) -> bool:
    """``v`` is a list of polygons, each in any of the forms one polygon is written in (a list
    of CAP texts copied from a document's ``<polygon>`` elements; lists of ``"lat,lon"``)."""
    return isinstance(v, list | tuple) and bool(v) and all(_one_polygon(x) for x in v)


def _polygons(v: Any) -> Any:
    """One polygon, or a list of polygons -> a list of polygons."""
    if v is None:
        return []
    if several_polygons(v):
        return [_points(p) for p in v]
    return [_points(v)]


Polygon = list[tuple[float, float]]


def _one_or_many(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


def _codes(v: Any) -> Any:
    """``{name: value}`` or ``{name: [values]}`` -> ``{name: [values]}``."""
    if isinstance(v, dict):
        return {k: val if isinstance(val, list) else [val] for k, val in v.items()}
    return v


_CIRCLE_SPACED = re.compile(r"\s*([-0-9.]+)\s*,\s*([-0-9.]+)\s+([0-9.]+)\s*", re.ASCII)


MIN_RADIUS_KM = 0.01  # a circle smaller than 10 m (about 300 m²) is a typo, as a polygon under 100 m²


def circle_fits(bbox: tuple[float, float, float, float], lat: float, lon: float, radius_km: float) -> bool:
    """The whole circle lies in ``bbox`` (lat0, lat1, lon0, lon1), not only its centre."""
    dlat = math.degrees(radius_km / 6371.0088)
    dlon = dlat / max(math.cos(math.radians(lat)), 1e-6)
    return bbox[0] <= lat - dlat and lat + dlat <= bbox[1] and bbox[2] <= lon - dlon and lon + dlon <= bbox[3]


def _circles(v: Any) -> Any:
    """One circle or several; ``"41.1487, -8.5853 3"`` (a space after the comma, as people write
    it) is written CAP's way, ``41.1487,-8.5853 3``; anything else is left for the check."""
    if not isinstance(v, str | list):
        return v  # not a circle list: the type check names it
    out = []
    for c in _one_or_many(v):
        m = _CIRCLE_SPACED.fullmatch(c) if isinstance(c, str) else None
        out.append(f"{m[1]},{m[2]} {m[3]}" if m else c)
    return out


class DraftArea(_Model):
    desc: LangText | None = None
    geocodes: dict[str, list[Text]] = Field(default_factory=dict)
    polygon: Annotated[list[Polygon], BeforeValidator(_polygons)] = Field(default_factory=list)
    circle: Annotated[list[str], BeforeValidator(_circles)] = Field(default_factory=list)

    @field_validator("geocodes", mode="before")
    @classmethod
    def _geocodes(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: (val if isinstance(val, list) else [val]) for k, val in v.items()}
        return v


def _areas(v: Any) -> Any:
    return [v] if isinstance(v, dict) else v


class Draft(_Model):
    """A warning draft, exactly DESIGN.md's format (plus a few optional CAP fields)."""

    sender: Text = Field(min_length=1)
    status: Status = "Actual"
    msg_type: MsgType = Field("Alert", alias="msgType")
    references: Annotated[list[Text], BeforeValidator(_list)] = Field(default_factory=list)
    identifier: Text | None = None
    level: Text | None = None
    urgency: Urgency = "Expected"
    certainty: Certainty = "Likely"
    category: Annotated[list[Category], BeforeValidator(_list)] = Field(default_factory=list)
    event: LangText
    headline: LangText | None = None
    description: LangText | None = None
    instruction: LangText | None = None
    onset: Time | None = None
    expires: Time | None = None
    area: Annotated[list[DraftArea], BeforeValidator(_areas)] = Field(default_factory=list)
    incident: Text | None = None
    tenant: Text | None = Field(
        None, description="the tenant (NGSILD-Tenant / Fiware-Service) it belongs to; not part of the CAP XML"
    )
    # optional CAP fields beyond DESIGN.md's example
    hazard: Text | None = Field(
        None, description="MeteoAlarm awareness type ('10; Rain', 'flooding', 'Cheia')"
    )
    effective: Time | None = None
    sent: Time | None = Field(None, description="default: the time of issue (render: --sent or now)")
    response_type: Annotated[list[Response], BeforeValidator(_list)] = Field(
        default_factory=list, alias="responseType"
    )
    sender_name: LangText | None = Field(None, alias="senderName")
    web: LangText | None = Field(
        None,
        description="a full https:// URL for more information; or one per language {pt-PT: ..., en-GB: ...}",
    )
    contact: LangText | None = None
    audience: LangText | None = None
    scope: Annotated[Literal["Public", "Restricted", "Private"], _canon(SCOPES)] = "Public"
    restriction: Text | None = None
    addresses: Text | None = None
    note: Text | None = None
    parameters: dict[str, Text] = Field(default_factory=dict)
    #: CAP ``eventCode``s, system-specific codes of the event (``{ANEPC_EAE: laranja}``): a name
    #: and one value or a list of values
    event_code: Annotated[dict[str, list[Text]], BeforeValidator(_codes)] = Field(
        default_factory=dict, alias="eventCode"
    )

    @property
    def languages_as_written(self) -> list[str]:
        """The ``info`` languages as the draft writes them, in the order given (the first mapping
        among the texts)."""
        for v in (self.event, self.headline, self.description, self.instruction):
            if isinstance(v, dict) and v:
                return list(v)
        for a in self.area:
            if isinstance(a.desc, dict) and a.desc:
                return list(a.desc)
        return [DEFAULT_LANGUAGE]

    @property
    def languages(self) -> list[str]:
        """The ``info`` languages, in the order given, in their canonical spelling (``PT-pt`` is
        ``pt-PT``: language tags are compared ignoring case, RFC 5646 §2.1.1)."""
        return [canonical_language(x) for x in self.languages_as_written]

    def text(self, value: str | dict[str, str] | None, language: str) -> str | None:
        """``value``'s text in ``language`` (tags compared ignoring case)."""
        if value is None or isinstance(value, str):
            return value
        if language in value:
            return value[language]
        fold = language.lower()
        return next((t for k, t in value.items() if k.lower() == fold), None)


def canonical_language(tag: str) -> str:
    """A language tag in its canonical case (RFC 5646 §2.1.1): ``PT-pt`` -> ``pt-PT``, ``EN-gb`` ->
    ``en-GB``, ``zh-hant-tw`` -> ``zh-Hant-TW``.

    >>> canonical_language("PT-pt"), canonical_language("sr-latn-rs"), canonical_language("en-x-ab")
    ('pt-PT', 'sr-Latn-RS', 'en-x-ab')
    """
    parts = tag.split("-")
    out = [parts[0].lower()]
    singleton = False
    for p in parts[1:]:
        if singleton or len(p) == 1:
            singleton = True
            out.append(p.lower())
        elif len(p) == 2:
            out.append(p.upper())
        elif len(p) == 4 and p.isalpha():
            out.append(p.title())
        else:
            out.append(p.lower())
    return "-".join(out)


# --------------------------------------------------------------------------- semantic checks
def _hint(got: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(str(got), allowed, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


#: up to this many configured areas are listed in an unknown geocode's message (a city's parishes);
#: a national catalogue's thousands are counted instead, or 950 unknown codes answered 5 MB
LIST_AREAS_MAX = 30


def _code_hint(got: str, known: list[str], known_set: frozenset[str]) -> str:
    """:func:`_hint` for a geocode: against a district's or a nation's codes (more than
    :data:`LIST_AREAS_MAX`), a code one slip away (a digit changed, left out, added or two swapped),
    the least of them; difflib's compares ``got`` with every code (~30 ms against 3 100 parishes,
    a 950-code draft of another district's parishes took 29 s of the stage's or preview's time)
    and suggested any code sharing half its digits."""
    if len(known) <= LIST_AREAS_MAX:
        return _hint(got, known)
    if len(got) > 12:  # (no code is that long: no slip of one)
        return ""
    digits = "0123456789"
    near = {got[:i] + got[i + 1 :] for i in range(len(got))}  # (a digit too many)
    near |= {got[:i] + d + got[i + 1 :] for i in range(len(got)) for d in digits}  # (a digit wrong)
    near |= {got[:i] + d + got[i:] for i in range(len(got) + 1) for d in digits}  # (one left out)
    near |= {got[:i] + got[i + 1] + got[i] + got[i + 2 :] for i in range(len(got) - 1)}  # (swapped)
    found = sorted((near - {got}) & known_set)
    return f" (did you mean '{found[0]}'?)" if found else ""


def _listed(cat, kind: str, known: list[str]) -> str:
    if not known:
        return "none"
    if len(known) > LIST_AREAS_MAX:
        return f"{len(known)} {kind} codes, from {known[0]} to {known[-1]}; GET /api/areas lists them"
    return ", ".join(f"{c} {cat.area(kind, c).name}" for c in known)


def parse_reference(ref: str) -> tuple[str, str, datetime] | str:
    """``sender,identifier,sent`` -> (sender, identifier, sent); a bare identifier -> itself.
    Raises ValueError for anything else."""
    parts = ref.split(",")
    if len(parts) == 1:
        if _BAD_ID_CHARS.search(ref) or not ref:
            raise ValueError(f"reference {ref!r}: an identifier has no spaces, commas, '<' or '&'")
        if (ch := _invisible(ref)) is not None:
            raise ValueError(f"reference {ref!r}: an identifier has no invisible characters ({ch})")
        return ref
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"reference {ref!r} is neither an identifier nor 'sender,identifier,sent'")
    sender, ident, sent = parts
    for what, v in (("sender", sender), ("identifier", ident)):
        if _BAD_ID_CHARS.search(v):
            raise ValueError(
                f"reference {ref!r}: its {what} {v!r} may not contain spaces, commas, '<' or '&'"
            )
        if (ch := _invisible(v)) is not None:
            raise ValueError(f"reference {ref!r}: its {what} {v!r} has an invisible character ({ch})")
    try:
        return sender, ident, cap_time(sent)
    except ValueError as e:
        raise ValueError(f"reference {ref!r}: its sent time {e}") from None


def micro_degrees(v: float) -> int:
    """A coordinate as CAP writes it (6 decimals, as ``cap._num``), in exact millionths of a degree."""
    return int(f"{v:.6f}".replace(".", ""))


def _orient(a: tuple[int, int], b: tuple[int, int], c: tuple[int, int]) -> int:
    v = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    return (v > 0) - (v < 0)


def _on_segment(a: tuple[int, int], b: tuple[int, int], p: tuple[int, int]) -> bool:
    """p, collinear with a-b, lies on the segment a-b."""
    return min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])


def _touch(a: tuple[int, int], b: tuple[int, int], c: tuple[int, int], d: tuple[int, int]) -> bool:
    """The segments a-b and c-d have a point in common (exact: integer coordinates)."""
    o1, o2, o3, o4 = _orient(a, b, c), _orient(a, b, d), _orient(c, d, a), _orient(c, d, b)
    if o1 != o2 and o3 != o4:
        return True
    return (
        (o1 == 0 and _on_segment(a, b, c))
        or (o2 == 0 and _on_segment(a, b, d))
        or (o3 == 0 and _on_segment(c, d, a))
        or (o4 == 0 and _on_segment(c, d, b))
    )


def _crossing(ring: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The indexes of two edges of the closed ``ring`` (no repeated consecutive points, first !=
    last) that cross or touch other than where they join; None for a simple ring. A sweep along
    the first coordinate compares only edges whose extents overlap there."""
    n = len(ring)
    edges = [(ring[i], ring[(i + 1) % n]) for i in range(n)]
    order = sorted(range(n), key=lambda i: min(edges[i][0][0], edges[i][1][0]))
    active: list[int] = []
    for i in order:
        a, b = edges[i]
        lo = min(a[0], b[0])
        active = [j for j in active if max(edges[j][0][0], edges[j][1][0]) >= lo]
        for j in active:
            c, d = edges[j]
            if (j + 1) % n == i or (i + 1) % n == j:  # neighbours share a point: they may only
                p, q, r = (c, d, b) if (j + 1) % n == i else (a, b, d)  # meet there: not fold back
                if (
                    _orient(p, q, r) == 0
                    and (q[0] - p[0]) * (r[0] - q[0]) + (q[1] - p[1]) * (r[1] - q[1]) < 0
                ):
                    return j, i
                continue
            if (
                min(c[1], d[1]) <= max(a[1], b[1])
                and min(a[1], b[1]) <= max(c[1], d[1])
                and _touch(a, b, c, d)
            ):
                return min(i, j), max(i, j)
        active.append(i)
    return None


def _all_inside(points: Polygon, ring: Polygon) -> bool:
    """Whether every point lies inside ``ring`` (even-odd rule, vectorised: 1000 points against
    1000 edges in milliseconds)."""
    import numpy as np

    from atalaia.warnings.territory import Shape, _inside

    pts = np.asarray(points, dtype=float)
    r = Shape.drawn(ring).polygon
    if not len(pts) or r is None or len(r) < 4:
        return False
    if (pts.min(axis=0) < r.min(axis=0)).any() or (pts.max(axis=0) > r.max(axis=0)).any():
        return False  # (outside its box: the usual case, no edge test needed)
    return bool(_inside(pts, [r]).all())


def nested_polygon(polygons: list[Polygon]) -> tuple[int, int] | None:
    """(inner, outer) for the first drawn polygon that lies inside another of the same area: the
    GeoJSON way to draw a hole, which CAP cannot say (its polygons are a union: the hole would be
    warned too), or None."""
    for j, inner in enumerate(polygons):
        for k, outer in enumerate(polygons):
            if j != k and _all_inside(inner, outer):
                return j, k
    return None


def polygon_problems(points: Polygon, bbox: tuple[float, float, float, float] | None = PT_BBOX) -> list[str]:
    """What is wrong with a drawn polygon, judged on the points as CAP will write them (rounded to
    6 decimals): too few distinct points, out of range or region, (nearly) no area, edges that
    cross."""
    out = []
    if len(points) > MAX_POLYGON_POINTS:
        return [f"a drawn polygon has at most {MAX_POLYGON_POINTS} points, got {len(points)}"]
    bad = [p for p in points if not (-90 <= p[0] <= 90 and -180 <= p[1] <= 180)]
    if bad:
        return [f"point {list(bad[0])} is out of range: pairs are [lat, lon], lat in ±90, lon in ±180"]
    if bbox is not None:
        lat0, lat1, lon0, lon1 = bbox
        outside = [p for p in points if not (lat0 <= p[0] <= lat1 and lon0 <= p[1] <= lon1)]
        if outside:
            out.append(
                f"point {list(outside[0])} is outside the served region "
                f"(lat {lat0}..{lat1}, lon {lon0}..{lon1}): pairs are [lat, lon], not [lon, lat]"
            )
    ring = [(micro_degrees(lat), micro_degrees(lon)) for lat, lon in points]
    ring = [p for i, p in enumerate(ring) if i == 0 or p != ring[i - 1]]  # as written: no repeats
    if len(ring) > 1 and ring[0] == ring[-1]:
        ring.pop()  # closed as given
    for i in range(len(ring)):  # (the closing edge too)
        (_, x0), (_, x1) = ring[i], ring[(i + 1) % len(ring)]
        if abs(x1 - x0) > 180_000_000:
            a, b = points_of(ring, i)
            out.append(
                f"the edge {a} -> {b} crosses the antimeridian (longitude ±180): CAP readers join "
                "the points the other way round the globe, over more than 180° of longitude; draw "
                "one polygon on each side of 180°"
            )
            return out
    distinct = len(set(ring))
    if distinct < 3:
        how = " once rounded to 6 decimals as CAP writes them" if len({tuple(p) for p in points}) >= 3 else ""
        out.append(
            f"a polygon needs at least 3 distinct points (4 pairs once closed), got {distinct} distinct{how}"
        )
        return out
    a = ring[0]
    b = next(p for p in ring if p != a)
    if all(_orient(a, b, p) == 0 for p in ring):
        out.append("the polygon encloses no area: its points lie on one line")
        return out
    if (found := _crossing(ring)) is not None:
        e1, e2 = (points_of(ring, i) for i in found)
        out.append(
            f"the polygon crosses itself: its edges {e1[0]} -> {e1[1]} and {e2[0]} -> {e2[1]} meet; "
            "give the points in order around the area"
        )
        return out
    twice = 0
    for i in range(len(ring)):
        (y0, x0), (y1, x1) = ring[i], ring[(i + 1) % len(ring)]
        twice += x0 * y1 - x1 * y0
    mean_lat = sum(lat for lat, _ in points) / len(points)
    m_per_deg = 111_320.0
    area_m2 = abs(twice) / 2 / 1e12 * m_per_deg * m_per_deg * max(math.cos(math.radians(mean_lat)), 1e-9)
    if area_m2 < MIN_POLYGON_AREA_M2:
        out.append(
            f"the polygon encloses almost no area (about {area_m2:.2g} m², less than {MIN_POLYGON_AREA_M2:g} m²)"
        )
    return out


def points_of(ring: list[tuple[int, int]], i: int) -> tuple[str, str]:
    """Edge ``i`` of a ring in micro-degrees, as CAP pairs ``lat,lon``."""

    def txt(p: tuple[int, int]) -> str:
        return ",".join(f"{v / 1e6:.6f}".rstrip("0").rstrip(".") for v in p)

    return txt(ring[i]), txt(ring[(i + 1) % len(ring)])


def expired_problem(d: Draft, now: datetime) -> tuple[str, str] | None:
    """(field, message) when the draft's ``expires`` is already past at ``now``: it could never be
    issued (issuing refuses it), so drafting and the preview say so, before any approval."""
    if d.expires is None or d.expires > now:
        return None
    return (
        "expires",
        f"{cap_time(d.expires).isoformat()} is already past: a warning must expire after it is issued",
    )


def incomplete_problems(d: Draft) -> list[tuple[str, str]]:
    """(field, message) for each thing a warning must say before it is submitted for approval,
    approved or issued (a draft may be saved without them; ``render`` and the CAP rules do not ask
    for them): a headline and an instruction in every one of its languages and an ``expires``. A
    Cancel needs only its headline (it withdraws: nothing to do, no expiry of its own).

    >>> d = Draft.model_validate({"sender": "a@b.pt", "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
    ...                           "headline": {"pt-PT": "Cheia no Douro"}})
    >>> [f for f, _ in incomplete_problems(d)]
    ['headline.en-GB', 'instruction.pt-PT', 'instruction.en-GB', 'expires']
    """
    langs = d.languages_as_written
    cancel = d.msg_type == "Cancel"
    out: list[tuple[str, str]] = []
    for name in ("headline",) if cancel else ("headline", "instruction"):
        for lang in langs:
            text = d.text(getattr(d, name), lang)
            if text is None or blank(text):
                out.append(
                    (
                        f"{name}.{canonical_language(lang)}",
                        f"no {lang} {name}: a warning is submitted for approval, approved and issued only "
                        f"with {'an' if name[0] in 'aeiou' else 'a'} {name} in each of its languages "
                        f"({', '.join(langs)})",
                    )
                )
    if not cancel and d.expires is None:
        out.append(
            (
                "expires",
                "no expiry: a warning is submitted for approval, approved and issued only with the time "
                "it no longer applies (expires)",
            )
        )
    return out


def size_problems(data: Any) -> list[tuple[str, str]]:
    """(field, message) when the raw draft ``data`` has more areas, distinct geocodes, polygons or
    circles than :data:`MAX_AREAS` and the other bounds allow: cheap (no model, no catalogue), so
    that it runs before them. Repeated geocodes count once (the CAP document carries each once)."""
    if not isinstance(data, dict):
        return []
    areas = data.get("area")
    areas = [areas] if isinstance(areas, dict) else areas
    if not isinstance(areas, list):
        return []
    if len(areas) > MAX_AREAS:
        return [("area", f"at most {MAX_AREAS} areas, got {len(areas)}")]
    out: list[tuple[str, str]] = []
    codes_all: set[tuple[str, str]] = set()
    shapes_all = 0
    for i, a in enumerate(areas):
        if not isinstance(a, dict):
            continue
        codes: set[tuple[str, str]] = set()
        geocodes = a.get("geocodes")
        if isinstance(geocodes, dict):
            for key, vals in geocodes.items():
                kind = str(key).strip().upper()
                for v in vals if isinstance(vals, list) else [vals]:
                    c = str(v).strip() if isinstance(v, str | int) else repr(v)
                    if kind in CAOP_CODES and c.isascii() and c.isdigit():
                        c = c.zfill(CAOP_CODES[kind])
                    codes.add((kind, c))
        if len(codes) > MAX_AREA_GEOCODES:
            out.append(
                (
                    f"area.{i}.geocodes",
                    f"at most {MAX_AREA_GEOCODES} distinct geocodes an area, got {len(codes)}",
                )
            )
        codes_all |= codes
        poly, circle = a.get("polygon"), a.get("circle")
        polygons = 0  # counted as _polygons reads them: several, else one (a list of points, CAP text)
        if poly is not None:
            polygons = len(poly) if several_polygons(poly) else 1
        circles = 1 if isinstance(circle, str) else len(circle) if isinstance(circle, list) else 0
        if polygons + circles > MAX_AREA_SHAPES:
            out.append(
                (
                    f"area.{i}",
                    f"at most {MAX_AREA_SHAPES} polygons and circles an area, got {polygons + circles}",
                )
            )
        shapes_all += polygons + circles
    if len(codes_all) > MAX_GEOCODES and not out:
        out.append(("area", f"at most {MAX_GEOCODES} distinct geocodes in all areas, got {len(codes_all)}"))
    if shapes_all > MAX_SHAPES and not out:
        out.append(("area", f"at most {MAX_SHAPES} polygons and circles in all areas, got {shapes_all}"))
    return out


def geocode_items(area: DraftArea) -> list[tuple[str, str, int, str]]:
    """(key as written, CAP valueName, index, code) of an area's geocodes, codes normalised."""
    out = []
    for key, codes in area.geocodes.items():
        kind = key.strip().upper()
        for i, code in enumerate(codes):
            c = str(code).strip()
            if kind in CAOP_CODES and c.isascii() and c.isdigit():
                c = c.zfill(CAOP_CODES[kind])
            out.append((key, kind, i, c))
    return out


def problems(
    d: Draft, cat: Catalogue, bbox: tuple[float, float, float, float] | None = PT_BBOX
) -> list[Problem]:
    """Everything wrong with a well-shaped draft, each with its location."""
    out: list[Problem] = []
    if _BAD_ID_CHARS.search(d.sender):
        out.append((("sender",), "the sender may not contain spaces, commas, '<' or '&'"))
    if d.identifier is not None and (not d.identifier or _BAD_ID_CHARS.search(d.identifier)):
        out.append((("identifier",), "the identifier may not be empty or contain spaces, commas, '<' or '&'"))
    elif d.identifier is not None and (ch := _invisible(d.identifier)) is not None:
        out.append(
            (
                ("identifier",),
                f"the identifier {d.identifier!r} has an invisible character ({ch}): it would look like "
                "another identifier",
            )
        )
    if not _BAD_ID_CHARS.search(d.sender) and (ch := _invisible(d.sender)) is not None:
        out.append((("sender",), f"the sender {d.sender!r} has an invisible character ({ch})"))
    if d.incident is not None and (not d.incident or re.search(r"\s", d.incident)):
        out.append((("incident",), "an incident id has no spaces"))
    # level
    if d.level is None:
        if d.msg_type != "Cancel":
            out.append(((), f"missing required key 'level' (one of: {', '.join(cat.colours())})"))
    elif cat.level(d.level) is None:
        out.append(
            (
                ("level",),
                f"unknown level {d.level!r}{_hint(d.level, cat.colours())}; use one of: {', '.join(cat.colours())}",
            )
        )
    if d.hazard is not None and cat.hazard(d.hazard) is None:
        names = [h.awareness_type for h in cat.hazards]
        out.append((("hazard",), f"unknown hazard {d.hazard!r}; use one of: {', '.join(names)}"))
    # references
    if d.msg_type in ("Update", "Cancel") and not d.references:
        out.append(
            (
                ("references",),
                f"{'an' if d.msg_type == 'Update' else 'a'} {d.msg_type} needs references: the identifiers (or sender,identifier,sent) "
                "of the warnings it replaces",
            )
        )
    for i, ref in enumerate(d.references):
        try:
            parsed = parse_reference(ref)
        except ValueError as e:
            out.append((("references", i), str(e)))
            continue
        named = parsed if isinstance(parsed, str) else parsed[1]
        if d.identifier is not None and named == d.identifier.strip():
            out.append((("references", i), f"a message cannot reference itself ({named} is its identifier)"))
    # languages (tags compared ignoring case; written in their canonical case)
    langs = d.languages_as_written
    folded = [x.lower() for x in langs]
    for i, lang in enumerate(langs):
        if not _LANG.fullmatch(lang):
            out.append((("event", lang), f"{lang!r} is not a language tag like pt-PT or en-GB"))
        if lang.lower() in (x.lower() for x in langs[:i]):
            out.append((("event", lang), f"language {lang} given twice (language tags ignore case)"))
    texts: list[tuple[Loc, Any]] = [
        (("event",), d.event),
        (("headline",), d.headline),
        (("description",), d.description),
        (("instruction",), d.instruction),
        (("senderName",), d.sender_name),
        (("contact",), d.contact),
        (("audience",), d.audience),
        (("web",), d.web),
    ]
    texts += [(("area", i, "desc"), a.desc) for i, a in enumerate(d.area)]
    for loc, value in texts:
        if isinstance(value, dict):
            seen: set[str] = set()
            for lang in value:
                if lang.lower() not in folded:
                    out.append(
                        ((*loc, lang), f"language {lang} is not one of the warning's: {', '.join(langs)}")
                    )
                elif lang.lower() in seen and loc != ("event",):  # (the event's: said above)
                    out.append(((*loc, lang), f"language {lang} given twice (language tags ignore case)"))
                seen.add(lang.lower())
            missing = [lang for lang in langs if lang.lower() not in seen]
            if missing and loc == ("event",):  # other texts may be given in fewer languages
                out.append(
                    (loc, f"no {', '.join(missing)} text (the warning's languages: {', '.join(langs)})")
                )
            for lang, text in value.items():
                if blank(text):
                    out.append(((*loc, lang), "empty text"))
        elif isinstance(value, str) and blank(value):
            out.append(
                (
                    loc,
                    "the event may not be empty" if loc == ("event",) else "empty text",
                )
            )
    for name in ("note", "restriction", "addresses"):
        value = getattr(d, name)
        if value is not None and blank(value):
            out.append(((name,), "empty text"))
    # web: CAP 1.2 §3.2.2 "a full absolute URI"; one, or one per language
    from atalaia.notifiers.channels import url_problem  # (the delivery targets' check too)

    webs = d.web.items() if isinstance(d.web, dict) else [(None, d.web)]
    for lang, web in webs:
        where = ("web",) if lang is None else ("web", lang)
        if web is not None and web.strip() and not re.match(r"https?://[^\s/]+", web.strip(), re.ASCII):
            out.append(
                (where, f"{web!r} is not a full URL: write it with https:// (CAP needs an absolute URI)")
            )
        elif web is not None and (bad := sorted(set(_NOT_IN_URI.findall(web.strip())))):
            escaped = ", ".join(f"{c!r} as %{ord(c):02X}" for c in bad if ord(c) < 128)
            out.append(
                (
                    where,
                    f"{web!r} is not a valid URL: {', '.join(map(repr, bad))} cannot be in one"
                    + (f" (write {escaped})" if escaped else ""),
                )
            )
        elif web is not None and web.strip() and (bad_host := url_problem(web.strip())) is not None:
            out.append((where, f"{web!r} is not a valid URL: {bad_host}"))
    # scope: CAP 1.2 §3.2.1 (addresses "required when scope is Private", restriction "used when
    # scope is Restricted")
    if d.scope == "Private" and d.addresses is None:
        out.append((("scope",), "scope Private needs 'addresses': the intended recipients, space-separated"))
    if d.scope == "Restricted" and d.restriction is None:
        out.append((("scope",), "scope Restricted needs 'restriction': the rule for limiting distribution"))
    # times
    if d.onset and d.expires and d.expires <= d.onset:
        out.append(
            (("expires",), f"expires ({d.expires.isoformat()}) must be after onset ({d.onset.isoformat()})")
        )
    if d.effective and d.expires and d.expires <= d.effective:
        out.append(
            (
                ("expires",),
                f"expires ({d.expires.isoformat()}) must be after effective ({d.effective.isoformat()})",
            )
        )
    if d.sent and d.expires and d.expires <= d.sent:
        out.append(
            (("expires",), f"expires ({d.expires.isoformat()}) must be after sent ({d.sent.isoformat()})")
        )
    # parameters: the level and the hazard write MeteoAlarm's awareness parameters (azul: ANEPC_EAE); one of the
    # user's own would put a second, contradicting value in the same info block
    for key, value in d.parameters.items():
        if not key.strip() or _NOT_XML.search(key):
            out.append(
                (("parameters", key), "a parameter name is a non-empty text without control characters")
            )
        elif not value.strip():
            out.append((("parameters", key), "empty text"))
    for key, values in d.event_code.items():
        if not key.strip() or _NOT_XML.search(key):
            out.append(
                (("eventCode", key), "an event code name is a non-empty text without control characters")
            )
        for j, value in enumerate(values):
            if not value.strip():
                out.append((("eventCode", key, j), "empty text"))
    level = cat.level(d.level) if d.level is not None else None
    written = ["awareness_level", "awareness_type", *([level.parameter[0]] if level else [])]
    for key in dict.fromkeys(written):
        if key in d.parameters:
            source = "hazard" if key == "awareness_type" else "level"
            out.append(
                (("parameters", key), f"'{key}' comes from the draft's {source}; set '{source}' instead")
            )
    # area
    if not d.area and d.msg_type != "Cancel":
        out.append(((), "missing required key 'area' (geocodes and/or a polygon)"))
    codes_of: dict[str, tuple[list[str], frozenset[str]]] = {}
    for i, a in enumerate(d.area):
        at = ("area", i)
        if not any(a.geocodes.values()) and not a.polygon and not a.circle:
            out.append((at, "an area needs geocodes, a polygon or a circle"))
        names = []
        for key, kind, j, code in geocode_items(a):
            if kind in CAOP_CODES:
                found = cat.area(kind, code)
                if found is None:
                    if kind not in codes_of:  # (once a draft: a national catalogue's thousands)
                        codes_of[kind] = (cat.codes(kind), frozenset(cat.codes(kind)))
                    known, known_set = codes_of[kind]
                    named = cat.parishes_named(code) if kind == "DICOFRE" and not code.isdigit() else []
                    if named:  # a parish's name where its code goes: say which code
                        what = ", ".join(f"{c} ({cat.area(kind, c).name})" for c in named)
                        message = f"{code!r} is a name, not a {kind} code: write {what}"
                    else:
                        message = (
                            f"unknown {kind} geocode {code!r}{_code_hint(code, known, known_set)}: not in the configured "
                            f"CAOP areas ({_listed(cat, kind, known)})"
                        )
                    out.append(((*at, "geocodes", key, j), message))
                else:
                    names.append(found.name)
            elif kind != "EMMA_ID":
                out.append(
                    ((*at, "geocodes", key), f"unknown geocode type {key!r}; use DICOFRE, DICO or EMMA_ID")
                )
            elif not _EMMA_ID.fullmatch(code):
                out.append(((*at, "geocodes", key, j), f"{code!r} is not an EMMA_ID like PT009"))
        # (an unknown code, or nothing at all, is the problem then: said above)
        said = any(loc[: len(at) + 1] == (*at, "geocodes") or loc == at for loc, _ in out)
        if a.desc is None and not names and not said:
            out.append(
                (at, "an area needs a desc unless it has DICOFRE or DICO geocodes (their names make one)")
            )
        drawn_problems = []
        for j, poly in enumerate(a.polygon):
            loc = (*at, "polygon") if len(a.polygon) == 1 else (*at, "polygon", j)
            drawn_problems += [(loc, m) for m in polygon_problems(poly, bbox)]
        out += drawn_problems
        if not drawn_problems and (nested := nested_polygon(a.polygon)) is not None:
            inner, outer = nested
            out.append(
                (
                    (*at, "polygon", inner),
                    f"CAP cannot express holes: polygon {inner} lies inside polygon {outer} of the same area, "
                    "and CAP's polygons add up, so the hole would be warned too; draw the area around "
                    "the hole as polygons that do not contain each other (or drop the inner one)",
                )
            )
        for j, c in enumerate(a.circle):
            m = _CIRCLE.fullmatch(c)
            if not m or not (-90 <= float(m[1]) <= 90 and -180 <= float(m[2]) <= 180):
                out.append(((*at, "circle", j), f"{c!r} is not a circle 'lat,lon radius_km'"))
            elif float(m[3]) < MIN_RADIUS_KM:
                out.append(
                    (
                        (*at, "circle", j),
                        f"{c!r} has radius {m[3]} km: a circle warns nobody unless its radius is at "
                        f"least {MIN_RADIUS_KM:g} km ({MIN_RADIUS_KM * 1000:g} m)",
                    )
                )
            elif bbox is not None:  # all of it in the served region, as a polygon's points
                lat0, lat1, lon0, lon1 = bbox
                lat, lon, r = float(m[1]), float(m[2]), float(m[3])
                if not (lat0 <= lat <= lat1 and lon0 <= lon <= lon1):
                    out.append(
                        (
                            (*at, "circle", j),
                            f"the centre {lat:g},{lon:g} is outside the served region (lat {lat0}..{lat1}, "
                            f"lon {lon0}..{lon1}): a circle is 'lat,lon radius_km', not 'lon,lat'",
                        )
                    )
                elif not circle_fits(bbox, lat, lon, r):
                    out.append(
                        (
                            (*at, "circle", j),
                            f"{c!r} reaches beyond the served region (lat {lat0}..{lat1}, lon "
                            f"{lon0}..{lon1}) with its radius of {r:g} km: is the radius in km?",
                        )
                    )
    if not out:  # (a document of every area's boundaries in every language: bounded)
        from atalaia.warnings.cap import size_problem

        if (too_big := size_problem(d, cat)) is not None:
            out.append(too_big)
    return out
