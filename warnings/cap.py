"""CAP 1.2 documents from warning drafts, built with lxml and validated before anything leaves.

:func:`render` = :func:`build` + :func:`validate`: the OASIS CAP 1.2 XSD (``schema/CAP-v1.2.xsd``)
and the CAP 1.2 text rules the XSD cannot express (identifier characters, closed ``lat,lon``
polygons of at least 4 pairs, ``references`` triples, offsets written ``+00:00``). A document that
fails is never returned: :class:`CapInvalid` lists the reasons.

>>> from atalaia.warnings.catalogue import Catalogue
>>> from atalaia.warnings.draft import Draft
>>> d = Draft.model_validate({"sender": "pc@cm-porto.pt", "level": "orange",
...     "event": {"pt-PT": "Cheia", "en-GB": "Flood"}, "area": {"geocodes": {"DICOFRE": ["131203"]}}})
>>> doc = render(d, Catalogue.load(), sent="2026-12-04T17:00:00+00:00")
>>> doc.identifier, doc.sent  # doctest: +ELLIPSIS
('PT-CM-PORTO-20261204170000-...', '2026-12-04T17:00:00+00:00')
>>> b"<severity>Severe</severity>" in doc.xml and b"<value>3; orange; Severe</value>" in doc.xml
True
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import orjson
from lxml import etree

from atalaia.warnings import simplify
from atalaia.warnings.catalogue import CAOP_CODES, Catalogue, Hazard
from atalaia.warnings.draft import PT_BBOX, Draft, cap_time, circle_fits, geocode_items, parse_reference

NS = "urn:oasis:names:tc:emergency:cap:1.2"
Q = f"{{{NS}}}"
XSD = Path(__file__).resolve().parent / "schema" / "CAP-v1.2.xsd"
CONTENT_TYPE = "application/cap+xml"
EXERCISE_MARK = "EXERCÍCIO / EXERCISE"
_ID_TIME = re.compile(r"-(\d{14})-[0-9a-f]{10}$")
_CAP_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{2}:[0-9]{2}", re.ASCII
)
# CAP's numbers are WGS 84 decimals in ASCII; Python's float() also takes "1_0", "nan", "inf" and
# other scripts' digits, and \d matches those digits too
_DECIMAL = r"-?[0-9]+(?:\.[0-9]+)?"
_PAIR = re.compile(rf"({_DECIMAL}),({_DECIMAL})", re.ASCII)
_CIRCLE = re.compile(rf"\s*({_DECIMAL}),({_DECIMAL})\s+([0-9]+(?:\.[0-9]+)?)\s*", re.ASCII)
_BAD_ID = re.compile(r"[\s,<&]")


class CapInvalid(ValueError):
    """A CAP document that may not be published; ``problems`` says why."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True, slots=True)
class Reference:
    sender: str
    identifier: str
    sent: str  # as the original wrote it

    def __str__(self) -> str:
        return f"{self.sender},{self.identifier},{self.sent}"


Resolver = Callable[[str], Reference | None]


@dataclass(frozen=True, slots=True)
class CapDocument:
    identifier: str
    sender: str
    sent: str
    status: str
    msg_type: str
    references: tuple[Reference, ...]
    xml: bytes
    notes: tuple[str, ...] = field(default=())  # what the builder had to assume (e.g. a reference's time)

    @property
    def reference(self) -> Reference:
        """How later Updates and Cancels refer to this document."""
        return Reference(self.sender, self.identifier, self.sent)


# --------------------------------------------------------------------------- times and identifiers
def cap_datetime(t: datetime | str) -> str:
    """``2026-12-04T18:00:00+00:00``: UTC, explicit offset, no fractional seconds."""
    return cap_time(t).isoformat()


def identifier_prefix(sender: str) -> str:
    """``protecao.civil@cm-porto.pt`` -> ``PT-CM-PORTO``."""
    domain = sender.rsplit("@", 1)[-1].lower()
    parts = domain.split(".")
    country = parts[-1] if len(parts) > 1 and len(parts[-1]) == 2 else ""
    name = parts[0] if len(parts) > 1 else domain
    name = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").upper() or "ATALAIA"
    return f"{country.upper()}-{name}" if country else name


def identifier_for(draft: Draft, sent: str) -> str:
    """Stable and unique: the sender's prefix, the sent time (UTC) and a hash of the content."""
    content = draft.model_dump(mode="json", by_alias=True, exclude={"identifier", "sent"})
    digest = hashlib.blake2b(
        orjson.dumps([draft.sender, sent, content], option=orjson.OPT_SORT_KEYS), digest_size=5
    ).hexdigest()
    t = cap_time(sent)  # strftime's %Y does not pad years before 1000 to 4 digits
    stamp = f"{t.year:04d}{t.month:02d}{t.day:02d}{t.hour:02d}{t.minute:02d}{t.second:02d}"
    return f"{identifier_prefix(draft.sender)}-{stamp}-{digest}"


def sent_of_identifier(identifier: str) -> str | None:
    """The sent time an identifier made by :func:`identifier_for` carries."""
    m = _ID_TIME.search(identifier)
    if not m:
        return None
    try:
        return datetime.strptime(m[1], "%Y%m%d%H%M%S").replace(tzinfo=UTC).isoformat()
    except ValueError:
        return None


def prefix_of_identifier(identifier: str) -> str | None:
    """The sender prefix an identifier made by :func:`identifier_for` carries (``PT-CM-GAIA``)."""
    m = _ID_TIME.search(identifier)
    return identifier[: m.start()] if m and sent_of_identifier(identifier) else None


def other_senders_identifier(identifier: str, sender: str) -> str | None:
    """Why a bare ``identifier`` evidently is not ``sender``'s (it carries another sender's
    prefix, so the draft's sender would be a wrong guess), or None."""
    prefix = prefix_of_identifier(identifier)
    if prefix is None or prefix == identifier_prefix(sender):
        return None
    return (
        f"reference {identifier!r} looks made by another sender ({prefix}, not "
        f"{identifier_prefix(sender)} of {sender}): write the full 'sender,identifier,sent'"
    )


def missing_languages(draft: Draft) -> list[str]:
    """A note for each text given per language without one of the warning's languages (allowed:
    CAP's texts are optional, and a translation must never hold a warning back), saying what that
    language's ``info`` block gets instead."""
    notes = []
    langs = draft.languages
    texts = [
        ("headline", draft.headline),
        ("description", draft.description),
        ("instruction", draft.instruction),
        ("senderName", draft.sender_name),
        ("contact", draft.contact),
        ("audience", draft.audience),
        ("web", draft.web),
    ]
    for name, value in texts:
        if isinstance(value, dict):
            for lang in langs:
                if draft.text(value, lang) is None:
                    notes.append(f"{name} has no {lang} text: the {lang} info block has no {name}")
    for i, a in enumerate(draft.area):
        if isinstance(a.desc, dict) and a.desc:
            for lang in langs:
                if draft.text(a.desc, lang) is None:
                    first = next(iter(a.desc))
                    notes.append(f"area.{i}.desc has no {lang} text: the {lang} areaDesc is the {first} one")
    return notes


def resolve_references(
    draft: Draft, sent: str, resolve: Resolver | None = None, strict: bool = False
) -> tuple[list[Reference], list[str]]:
    """The draft's references as ``sender,identifier,sent`` (+ notes on what was assumed).

    A bare identifier is looked up with ``resolve`` (the issued warnings), else read from an
    Atalaia identifier (which carries its sent time); failing both, ``strict`` refuses it, otherwise
    the draft's sender and this message's sent time stand in (and a note says so)."""
    refs, notes = [], []
    for raw in draft.references:
        parsed = parse_reference(raw)
        if isinstance(parsed, tuple):
            s, ident, t = parsed
            sent_text = raw.split(",")[2].strip()
            if strict:
                _check_full_reference(raw, s, ident, t, sent, resolve)
            refs.append(Reference(s, ident, sent_text if _CAP_TIME.fullmatch(sent_text) else t.isoformat()))
            continue
        found = resolve(parsed) if resolve else None
        if found is None and (t := sent_of_identifier(parsed)):
            if strict and (later := reference_after(raw, cap_time(sent))):
                raise CapInvalid([f"references: {later}"])
            found = Reference(draft.sender, parsed, t)
            if (other := other_senders_identifier(parsed, draft.sender)) is not None:
                if strict:
                    raise CapInvalid([f"references: {other}"])
                notes.append(f"{other}; used this draft's sender")
        if found is None:
            if strict:
                raise CapInvalid([f"references: no issued warning {parsed!r}"])
            notes.append(
                f"reference {parsed!r}: the original's sent time is unknown here; used {sent} "
                "(write the full 'sender,identifier,sent' to be exact)"
            )
            found = Reference(draft.sender, parsed, sent)
        refs.append(found)
    unique = list(dict.fromkeys(refs))
    return unique, notes


def _check_full_reference(
    raw: str, sender: str, ident: str, t: datetime, sent: str, resolve: Resolver | None
) -> None:
    """A full ``sender,identifier,sent`` reference names a message that can exist: one issued here
    with that sender and sent time (a reader matching the whole triple would otherwise keep the
    original in force), and in any case sent before this message."""
    known = resolve(ident) if resolve else None
    if known is not None and (known.sender != sender or cap_time(known.sent) != t):
        raise CapInvalid(
            [
                f"references: {raw!r} does not name the warning issued here as {ident}: that is "
                f"'{known.sender},{ident},{known.sent}' (or write the bare identifier)"
            ]
        )
    if _CAP_TIME.fullmatch(sent) and (later := reference_after(raw, cap_time(sent))):
        raise CapInvalid([f"references: {later}"])


#: How far ahead of the drafting time a referenced message's time may be before drafting, editing
#: and the preview refuse it as "sent after this message": this message is sent when it is issued,
#: after an approval, and the other message's time is its system's clock (a few seconds or minutes
#: ahead of ours). Issuing compares with the real ``sent``, exactly.
DRAFTING_SKEW = timedelta(minutes=5)


def reference_after(raw: str, when: datetime, slack: timedelta = timedelta(0)) -> str | None:
    """Why reference ``raw`` cannot be in a message sent at ``when``: the message it names was sent
    after it (a full reference's ``sent``, or the time an identifier Atalaia generated carries),
    by more than ``slack`` (:data:`DRAFTING_SKEW` when ``when`` is only the drafting time); None
    when it was not, or its time is unknown.

    >>> reference_after("pc@cm-porto.pt,PT-9,2027-01-01T00:00:00-03:30", cap_time("2027-01-01T01:00:00Z"))
    "'pc@cm-porto.pt,PT-9,2027-01-01T00:00:00-03:30' was sent after this message (2027-01-01T01:00:00+00:00): at 2027-01-01T03:30:00+00:00; a message references only earlier ones"
    >>> reference_after("PT-CM-PORTO-20261204170000-0123456789", cap_time("2026-12-05T00:00:00Z")) is None
    True
    """
    try:
        parsed = parse_reference(raw.strip())
    except ValueError:
        return None  # (the draft's checks name it)
    if isinstance(parsed, tuple):
        t = parsed[2]
    else:
        carried = sent_of_identifier(parsed)
        t = cap_time(carried) if carried else None
    if t is None or t <= when + slack:
        return None
    return (
        f"{raw.strip()!r} was sent after this message ({cap_time(when).isoformat()}): at "
        f"{t.isoformat()}; a message references only earlier ones"
    )


# --------------------------------------------------------------------------- building
def _num(v: float) -> str:
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def polygon_text(points: list[tuple[float, float]] | tuple) -> str:
    """CAP's ``lat,lon`` pairs, closed, as written to 6 decimals: a point repeated (a double
    click, a closing point given next to the first) is written once, so no edge has length 0."""
    pairs = [f"{_num(lat)},{_num(lon)}" for lat, lon in points]
    pairs = [p for i, p in enumerate(pairs) if i == 0 or p != pairs[i - 1]]
    while len(pairs) > 1 and pairs[-1] == pairs[0]:
        pairs.pop()
    return " ".join([*pairs, pairs[0]] if pairs else [])


#: The largest CAP document Atalaia builds. Its record on ``atalaia.warnings`` carries it, and each
#: warning notification on ``atalaia.notifications`` carries it twice (the XML and the parsed
#: document: about 2 x its size); a record over the broker's ``message.max.bytes`` (1 MiB by
#: default) or the stage producer's 4 MiB is refused, and the stage would stop at that output on
#: every restart, every warning with it. Real warnings are far smaller (all of Porto's parishes
#: in pt-PT and en-GB: 17 KB).
MAX_CAP_BYTES = 384 * 1024


@dataclass(frozen=True, slots=True)
class AreaShapes:
    """What an area writes in every ``info`` block: the names of its CAOP geocodes, its polygons
    (each CAOP geocode's rings, then the drawn ones, each once), its circles and geocodes."""

    names: tuple[str, ...]
    polygons: tuple[str, ...]
    circles: tuple[str, ...]
    codes: tuple[tuple[str, str], ...]

    def size(self) -> int:
        """At least the bytes these take in one ``info`` block (tags and indentation included)."""
        return (
            sum(len(p) + 32 for p in self.polygons)
            + sum(_xml_len(c) + 32 for c in self.circles)
            + sum(_xml_len(k) + _xml_len(v) + 100 for k, v in self.codes)
            + 64
        )


def _xml_len(text: str) -> int:
    """The bytes ``text`` takes in the document: UTF-8, with ``&``, ``<`` and ``>`` escaped, and a
    CR written ``&#13;`` (lxml keeps it from the parser's line-end normalization)."""
    return (
        len(text.encode())
        + 4 * (text.count("&") + text.count("\r"))
        + 3 * (text.count("<") + text.count(">"))
    )


def area_desc(area: Any, shape: AreaShapes, draft: Draft, lang: str) -> str:
    """The ``areaDesc`` an area writes in ``lang``: its desc in that language, else in any (place
    names), else its geocodes' names."""
    desc = draft.text(area.desc, lang) if area.desc is not None else None
    if desc is None and isinstance(area.desc, dict) and area.desc:
        desc = next(iter(area.desc.values()))
    if desc is None:
        desc = ", ".join(dict.fromkeys(shape.names))
    return desc


def area_shapes(
    draft: Draft, cat: Catalogue, boundaries: bool = True, tolerance: float = 0.0
) -> list[AreaShapes]:
    """Each area's :class:`AreaShapes`, a geocode's rings written once however many areas name it
    (``boundaries`` false: a geocode's name and code, not its rings; ``tolerance``: its rings
    simplified to that many degrees, :func:`boundary_text`; the drawn polygons are kept exact)."""
    rings: dict[tuple[str, str], tuple[str | None, list[str]]] = {}
    out = []
    for a in draft.area:
        names, polygons, codes = [], [], []
        for _key, kind, _i, code in geocode_items(a):
            codes.append((kind, code))
            if (kind, code) not in rings:
                found = cat.area(kind, code) if kind in CAOP_CODES else None
                rings[kind, code] = (
                    (found.name, [boundary_text(r, tolerance) for r in found.rings] if boundaries else [])
                    if found
                    else (None, [])
                )
            name, texts = rings[kind, code]
            if name is not None:
                names.append(name)
                polygons += texts
        polygons += [polygon_text(p) for p in a.polygon]
        circles = tuple(" ".join(c.split()) for c in a.circle)
        out.append(
            AreaShapes(tuple(names), tuple(dict.fromkeys(polygons)), circles, tuple(dict.fromkeys(codes)))
        )
    return out


@lru_cache(maxsize=16384)
def _ring_pairs(ring: tuple[tuple[float, float], ...]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """A boundary ring's pairs as the document writes them (without the closing one) and their
    Douglas–Peucker significance (:mod:`atalaia.warnings.simplify`)."""
    pairs = tuple(f"{_num(lat)},{_num(lon)}" for lat, lon in simplify.open_ring(ring))
    return pairs, simplify.significance(ring)


def boundary_text(ring: tuple[tuple[float, float], ...], tolerance: float = 0.0) -> str:
    """An areas file's ring as :func:`polygon_text` writes it, simplified to ``tolerance``
    (degrees; 0: exact). A ring the rounding to 6 decimals would leave under 4 pairs, or of no
    area (a ring through its first vertex twice simplified to two spikes, 'A B A C A'), is written
    as it is (it is no bigger than the rings the document wrote before it was simplified)."""
    if tolerance <= 0.0:
        return polygon_text(ring)
    pairs, sig = _ring_pairs(ring)
    kept = [p for p, s in zip(pairs, sig, strict=True) if s > tolerance]
    kept = [p for i, p in enumerate(kept) if i == 0 or p != kept[i - 1]]
    while len(kept) > 1 and kept[-1] == kept[0]:
        kept.pop()
    if len(set(kept)) < 3 or _area2(kept) == 0:
        return polygon_text(ring)
    return " ".join([*kept, kept[0]])


def _area2(pairs: list[str]) -> int:
    """Twice the signed area of a ring's written pairs (without the closing one), exactly, in
    (10⁻⁶ degree)²."""
    pts = [tuple(round(float(v) * 1_000_000) for v in p.split(",")) for p in pairs]
    return sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(pts, [*pts[1:], pts[0]], strict=True))


#: The first tolerance tried when the areas file's boundaries make a document too big (about 1 m),
#: doubled until they fit, then narrowed down (:data:`TOLERANCE_STEPS` halvings).
MIN_TOLERANCE = 0.00001
#: The coarsest: a ring simplified beyond about 1 km would misdraw the parish it stands for more than
#: it shows it; the areas are written by geocode and name alone instead.
MAX_TOLERANCE = 0.01
TOLERANCE_STEPS = 6


@dataclass(frozen=True, slots=True)
class FittedShapes:
    """The areas' shapes a document writes (:func:`shapes_to_write`), and how they were fitted to
    :data:`MAX_CAP_BYTES`: ``tolerance`` (degrees) when the areas file's boundaries were simplified,
    ``bare`` when they were left out; ``note`` says so."""

    shapes: tuple[AreaShapes, ...] | list[AreaShapes]
    tolerance: float | None = None
    bare: bool = False

    @property
    def note(self) -> str | None:
        bound = f"the {MAX_CAP_BYTES // 1024} KiB a warning may be"
        if self.tolerance is not None:
            return (
                "the boundaries the areas file gives for the geocodes were simplified to a tolerance of "
                f"about {_metres(self.tolerance)} to fit {bound} (the geocodes name the areas exactly; "
                "drawn polygons and circles are kept as drawn)"
            )
        if self.bare:
            return (
                "the geocodes are written by code and name alone, without the boundaries the areas file "
                f"gives: even simplified to about {_metres(MAX_TOLERANCE)} they would not fit {bound} "
                "(drawn polygons and circles are kept as drawn)"
            )
        return None


def _metres(degrees: float) -> str:
    m = degrees * simplify.METRES_PER_DEGREE
    return f"{m / 1000:.1f} km" if m >= 1000 else f"{m:.0f} m" if m >= 10 else f"{m:.1f} m"


def fit_shapes(draft: Draft, cat: Catalogue) -> FittedShapes:
    """The areas' shapes the document writes, whatever its msgType: every geocode's boundaries
    from the areas file, as they are when the document fits :data:`MAX_CAP_BYTES`; else simplified
    (:func:`boundary_text`) to the least tolerance found that fits, by doubling from
    :data:`MIN_TOLERANCE` and halving the last step :data:`TOLERANCE_STEPS` times (the same draft
    and areas give the same document: the preview is what is issued); else, beyond
    :data:`MAX_TOLERANCE`, by geocode and name alone. The drawn polygons and circles are always
    written exact: when they and the texts alone are over the bound, those (boundaries left out)
    are what :func:`size_problem` refuses. A warning is never refused for the boundaries Atalaia
    adds.

    The answer is kept for the last few drafts (:data:`FIT_MEMO`), keyed by the whole draft, the
    catalogue and the bound: a preview checks the draft and builds it (three searches, each up to
    ~20 passes over every ring of a national warning's areas, for every edit in the editor)."""
    key = (id(cat), MAX_CAP_BYTES, MIN_TOLERANCE, MAX_TOLERANCE, TOLERANCE_STEPS, draft.model_dump_json())
    with _FIT_LOCK:
        if (known := _FIT_MEMO.get(key)) is not None and known[0] is cat:
            _FIT_MEMO.move_to_end(key)
            return known[1]
    found = _fit_shapes(draft, cat)
    fitted = FittedShapes(tuple(found.shapes), found.tolerance, found.bare)  # (shared: immutable)
    with _FIT_LOCK:
        _FIT_MEMO[key] = (cat, fitted)  # (the catalogue held: its id is not another's)
        while len(_FIT_MEMO) > FIT_MEMO:
            _FIT_MEMO.popitem(last=False)
    return fitted


#: How many drafts' :func:`fit_shapes` answers are kept.
FIT_MEMO = 16
_FIT_MEMO: OrderedDict[tuple, tuple[Catalogue, FittedShapes]] = OrderedDict()
_FIT_LOCK = threading.Lock()


def _fit_shapes(draft: Draft, cat: Catalogue) -> FittedShapes:
    shapes = area_shapes(draft, cat)
    if _size_problem(draft, shapes) is None:
        return FittedShapes(shapes)
    bare = area_shapes(draft, cat, boundaries=False)
    if _size_problem(draft, bare) is not None:
        return FittedShapes(bare, bare=True)  # (the draft's own content: refused)

    def fitting(t: float) -> list[AreaShapes] | None:
        s = area_shapes(draft, cat, tolerance=t)
        return s if _size_problem(draft, s) is None else None

    if fitting(MAX_TOLERANCE) is None:  # (not the ~11 doublings up to it first)
        return FittedShapes(bare, bare=True)
    low, high = 0.0, MIN_TOLERANCE
    while (found := fitting(high)) is None:
        if high >= MAX_TOLERANCE:
            return FittedShapes(bare, bare=True)
        low, high = high, min(2 * high, MAX_TOLERANCE)
    for _ in range(TOLERANCE_STEPS):
        mid = (low + high) / 2
        if (nearer := fitting(mid)) is not None:
            high, found = mid, nearer
        else:
            low = mid
    return FittedShapes(found, tolerance=high)


def shapes_to_write(draft: Draft, cat: Catalogue) -> list[AreaShapes]:
    """The areas' shapes the document writes (:func:`fit_shapes`). A Cancel is no exception: it
    keeps the areas of the warning it withdraws (issued before the bound, or before the areas file
    gave finer boundaries), and a warning that cannot be cancelled stays in force."""
    return fit_shapes(draft, cat).shapes


def size_problem(
    draft: Draft, cat: Catalogue, shapes: list[AreaShapes] | None = None
) -> tuple[tuple[str, ...], str] | None:
    """(location, message) when the draft's CAP document would be over :data:`MAX_CAP_BYTES`
    (estimated before it is built: every area's shapes and every text are written once per
    language; located at ``area`` when the areas make most of it), or None. Without ``shapes``,
    those :func:`shapes_to_write` gives (the areas file's boundaries simplified or left out rather
    than refused: only the draft's own texts, geocodes, drawn shapes and languages can be)."""
    return _size_problem(draft, shapes_to_write(draft, cat) if shapes is None else shapes)


def _size_problem(draft: Draft, shapes: list[AreaShapes]) -> tuple[tuple[str, ...], str] | None:
    langs = draft.languages
    fields = {
        "event": draft.event,
        "headline": draft.headline,
        "description": draft.description,
        "instruction": draft.instruction,
        "senderName": draft.sender_name,
        "contact": draft.contact,
        "audience": draft.audience,
        "web": draft.web,
    }
    parts = {"area": sum(s.size() for s in shapes) * len(langs)}  # (what each part writes in all)
    for name, value in fields.items():
        parts[name] = sum(_xml_len(draft.text(value, lang) or "") + 40 for lang in langs)
    parts["area"] += sum(  # (a desc in one language, or none: the names, written in every language)
        _xml_len(area_desc(a, s, draft, lang)) + 40
        for a, s in zip(draft.area, shapes, strict=True)
        for lang in langs
    )
    parts["parameters"] = len(langs) * sum(
        _xml_len(k) + _xml_len(v) + 100 for k, v in draft.parameters.items()
    )
    parts["eventCode"] = len(langs) * sum(
        _xml_len(k) + _xml_len(v) + 100 for k, vs in draft.event_code.items() for v in vs
    )
    # what the alert writes once (a bare reference is written 'sender,identifier,sent'), and each
    # info's lists and exercise marks: the document is fitted up to the bound, so none is left out
    mark = _xml_len(EXERCISE_MARK) + 2 if draft.status == "Exercise" else 0
    parts["note"] = _xml_len(draft.note or "") + mark + 40
    parts["restriction"] = _xml_len(draft.restriction or "") + 40
    parts["addresses"] = _xml_len(draft.addresses or "") + 40
    parts["references"] = sum(_xml_len(r) + _xml_len(draft.sender) + 40 for r in draft.references) + 40
    parts["event"] += sum(mark + _xml_len(draft.text(draft.event, lang) or "") for lang in langs if mark)
    parts["category"] = len(langs) * sum(_xml_len(c) + 40 for c in [*draft.category, *draft.response_type])
    own = _xml_len(draft.identifier or "") + _xml_len(draft.incident or "") + 2 * _xml_len(draft.sender)
    total = 1024 + own + 600 * len(langs) + sum(parts.values())  # (the alert's and each info's own elements)
    if total <= MAX_CAP_BYTES:
        return None
    biggest = max(parts, key=lambda k: parts[k])
    return (biggest,), (
        f"its CAP document would be about {total // 1024} KiB, over the {MAX_CAP_BYTES // 1024} KiB a "
        f"warning may be ({biggest}: about {parts[biggest] // 1024} KiB in {len(langs)} languages; every "
        "area's geocodes and shapes and every text are written once per language, the boundaries of "
        "the geocodes left out already): name each place in one area, or use fewer languages or "
        "shorter texts"
    )


def hazard_of(draft: Draft, cat: Catalogue) -> Hazard | None:
    if draft.hazard:
        return cat.hazard(draft.hazard)
    texts = [draft.event] if isinstance(draft.event, str) else list(draft.event.values())
    for t in texts:
        if h := cat.hazard(t):
            return h
    for t in texts:  # a longer name: "Vento muito forte", "Inundações urbanas"
        if h := cat.hazard_in(t):
            return h
    return None


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    el = etree.SubElement(parent, Q + tag)
    if text is not None:
        el.text = text
    return el


def _pair(parent: etree._Element, tag: str, name: str, value: str) -> None:
    el = _sub(parent, tag)
    _sub(el, "valueName", name)
    _sub(el, "value", value)


# an exercise mark an author may have typed at the start of a text: "Exercício:", "EXERCISE -",
# "[Exercício]", "Exercício / Exercise:", our own mark (also several in a row); not a text that only
# begins with the word ("Exercício de evacuação", "Exercise caution"): a mark is bracketed or ends
# in ":" or a dash and a space
_MARK_WORDS = r"exerc[ií]cio|exercise"
_MARKS = rf"(?:{_MARK_WORDS})(?:\s*/\s*(?:{_MARK_WORDS}))*"
_SEPARATOR = r"(?::+|[-–—]+(?=\s|$))"  # "Exercise-based" is a word, "Exercise - " a mark
_AUTHOR_MARK = re.compile(
    rf"\s*(?:[\[(]\s*{_MARKS}\s*[\])]\s*{_SEPARATOR}?|{_MARKS}\s*(?:{_SEPARATOR}|$))\s*", re.IGNORECASE
)


def unmarked(text: str) -> str:
    """``text`` without the exercise marks its author put at its start."""
    while m := _AUTHOR_MARK.match(text):
        text = text[m.end() :]
    return text


def _marked(text: str | None, fallback: str | None = None) -> str | None:
    """An Exercise text: the bilingual mark exactly once, then the text without any mark its
    author typed ("Exercício: Cheia" → "EXERCÍCIO / EXERCISE: Cheia"); a text that was nothing
    but a mark gives way to ``fallback`` (the event)."""
    rest = unmarked(text or "").strip() or unmarked(fallback or "").strip()
    if text is None and fallback is None:
        return None
    return f"{EXERCISE_MARK}: {rest}" if rest else EXERCISE_MARK


def build(
    draft: Draft,
    cat: Catalogue,
    sent: datetime | str | None = None,
    *,
    resolve: Resolver | None = None,
    strict_references: bool = False,
    identifier: str | None = None,
) -> CapDocument:
    """The CAP 1.2 document of a checked draft (see :func:`render`, which also validates it)."""
    sent_text = cap_datetime(sent if sent is not None else (draft.sent or datetime.now(UTC)))
    ident = identifier or draft.identifier or identifier_for(draft, sent_text)
    refs, notes = resolve_references(draft, sent_text, resolve, strict_references)
    if draft.expires is not None and draft.expires <= datetime.fromisoformat(sent_text):
        notes.append(
            f"this warning expires ({cap_datetime(draft.expires)}) before it is sent ({sent_text}): "
            "it would be issued already expired"
        )
    notes += missing_languages(draft)
    level = cat.level(draft.level) if draft.level else None
    hazard = hazard_of(draft, cat)
    exercise = draft.status == "Exercise"

    root = etree.Element(Q + "alert", nsmap={None: NS})
    _sub(root, "identifier", ident)
    _sub(root, "sender", draft.sender)
    _sub(root, "sent", sent_text)
    _sub(root, "status", draft.status)
    _sub(root, "msgType", draft.msg_type)
    _sub(root, "scope", draft.scope)
    if draft.restriction:
        _sub(root, "restriction", draft.restriction)
    if draft.addresses:
        _sub(root, "addresses", draft.addresses)
    note = draft.note
    if exercise:
        note = _marked(note) if note else EXERCISE_MARK  # a note that is only a mark: the mark
    if note:
        _sub(root, "note", note)
    if refs:
        _sub(root, "references", " ".join(map(str, refs)))
    if draft.incident:
        _sub(root, "incidents", draft.incident)

    fitted = fit_shapes(draft, cat)
    shapes = fitted.shapes
    if (too_big := size_problem(draft, cat, shapes)) is not None:
        raise CapInvalid([f"{'.'.join(too_big[0]) or 'draft'}: {too_big[1]}"])
    if fitted.note:
        notes.append(fitted.note)
    categories = draft.category or [hazard.category if hazard else "Other"]
    responses = draft.response_type or (["AllClear"] if draft.msg_type == "Cancel" else [])
    severity = level.severity if level else "Unknown"
    for lang in draft.languages:
        info = _sub(root, "info")
        _sub(info, "language", lang)
        for c in dict.fromkeys(categories):
            _sub(info, "category", c)
        _sub(info, "event", draft.text(draft.event, lang))
        for r in dict.fromkeys(responses):
            _sub(info, "responseType", r)
        _sub(info, "urgency", draft.urgency)
        _sub(info, "severity", severity)
        _sub(info, "certainty", draft.certainty)
        if draft.audience and draft.text(draft.audience, lang) is not None:
            _sub(info, "audience", draft.text(draft.audience, lang))
        for name, values in draft.event_code.items():
            for value in values:
                _pair(info, "eventCode", name, value)
        for name, t in (("effective", draft.effective), ("onset", draft.onset), ("expires", draft.expires)):
            if t is not None:
                _sub(info, name, cap_datetime(t))
        for name, value in (("senderName", draft.sender_name),):
            if draft.text(value, lang) is not None:
                _sub(info, name, draft.text(value, lang))
        headline = draft.text(draft.headline, lang)
        if exercise:
            headline = _marked(headline, draft.text(draft.event, lang))
        if headline is not None:
            _sub(info, "headline", headline)
        for name, value in (("description", draft.description), ("instruction", draft.instruction)):
            if draft.text(value, lang) is not None:  # a text given in fewer languages is left out
                _sub(info, name, draft.text(value, lang))
        if draft.text(draft.web, lang):
            _sub(info, "web", draft.text(draft.web, lang))
        if draft.contact and draft.text(draft.contact, lang) is not None:
            _sub(info, "contact", draft.text(draft.contact, lang))
        if level:  # (MeteoAlarm's awareness_level; a level it has not, ANEPC's azul, by its name)
            _pair(info, "parameter", *level.parameter)
        if hazard:
            _pair(info, "parameter", "awareness_type", hazard.awareness_type)
        for k, v in draft.parameters.items():
            _pair(info, "parameter", k, v)
        for a, shape in zip(draft.area, shapes, strict=True):
            area = _sub(info, "area")
            _sub(area, "areaDesc", area_desc(a, shape, draft, lang))
            for p in shape.polygons:
                _sub(area, "polygon", p)
            for c in shape.circles:
                _sub(area, "circle", c)
            for kind, code in shape.codes:
                _pair(area, "geocode", kind, code)
    xml = b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(
        root, encoding="UTF-8", xml_declaration=False, pretty_print=True
    )
    if len(xml) > MAX_CAP_BYTES:  # (the estimate's backstop)
        raise CapInvalid(
            [
                f"the CAP document is {len(xml) // 1024} KiB, over the {MAX_CAP_BYTES // 1024} KiB a warning may be"
            ]
        )
    return CapDocument(
        identifier=ident,
        sender=draft.sender,
        sent=sent_text,
        status=draft.status,
        msg_type=draft.msg_type,
        references=tuple(refs),
        xml=xml,
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- validation
@cache
def schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD)))


Box = tuple[float, float, float, float]  # lat0, lat1, lon0, lon1


def _inside(box: Box, lat: float, lon: float) -> bool:
    return box[0] <= lat <= box[1] and box[2] <= lon <= box[3]


def text_problems(
    root: etree._Element, bbox: Box | None = PT_BBOX, strict: bool = True, swapped: Box | None = None
) -> list[str]:
    """The CAP 1.2 rules the XSD leaves to ``xs:string`` (after ../shared/fixtures/cap/validate_cap.py),
    and, ``strict``, Atalaia's own for what it publishes: UTC written ``+00:00`` (never ``-00:00``),
    expires after onset. ``bbox``: every polygon must lie in it; ``swapped``: a polygon that lies
    outside it but would lie inside with lat and lon exchanged is refused (a document about any
    other place passes)."""
    out = []
    if root.tag != Q + "alert":
        return ["not a CAP 1.2 alert"]
    ident = root.findtext(Q + "identifier") or ""
    if _BAD_ID.search(ident):
        out.append("identifier contains space/comma/'<'/'&'")
    sender = root.findtext(Q + "sender") or ""
    if _BAD_ID.search(sender):
        out.append("sender contains space/comma/'<'/'&'")
    scope = root.findtext(Q + "scope")
    if scope == "Private" and not (root.findtext(Q + "addresses") or "").strip():
        out.append("scope Private without addresses")
    if scope == "Restricted" and not (root.findtext(Q + "restriction") or "").strip():
        out.append("scope Restricted without restriction")
    for poly in root.iter(Q + "polygon"):
        pairs = (poly.text or "").split()
        if any(len(p.split(",")) != 2 for p in pairs):
            out.append("polygon: pair is not 'lat,lon'")
            continue
        found = [_PAIR.fullmatch(p) for p in pairs]
        if not all(found):
            out.append("polygon: non-numeric pair (lat,lon are decimal numbers in ASCII digits)")
            continue
        pts = [(float(m[1]), float(m[2])) for m in found if m]
        if len(pts) < 4:
            out.append(f"polygon: {len(pts)} pairs (< 4)")
        if pts and pts[0] != pts[-1]:
            out.append("polygon: first pair != last pair")
        if any(not (-90 <= la <= 90 and -180 <= lo <= 180) for la, lo in pts):
            out.append("polygon: coordinate out of range")
        elif bbox is not None:
            if not all(_inside(bbox, la, lo) for la, lo in pts):
                out.append("polygon: outside the served region (lat,lon swapped?)")
        elif (
            swapped is not None
            and pts
            and not all(_inside(swapped, la, lo) for la, lo in pts)
            and all(_inside(swapped, lo, la) for la, lo in pts)
        ):
            out.append("polygon: lat,lon swapped? (read as lon,lat it lies in the served region)")
    for circ in root.iter(Q + "circle"):
        m = _CIRCLE.fullmatch(circ.text or "")
        if not m:
            out.append(f"circle: bad format {circ.text!r}")
        elif not (-90 <= float(m[1]) <= 90 and -180 <= float(m[2]) <= 180):
            out.append(f"circle: centre out of range {circ.text!r}")
        elif bbox is not None and not _inside(bbox, float(m[1]), float(m[2])):
            out.append(f"circle: centre outside the served region (lat,lon swapped?) {circ.text!r}")
        elif bbox is not None and not circle_fits(bbox, float(m[1]), float(m[2]), float(m[3])):
            out.append(f"circle: reaches beyond the served region (is its radius in km?) {circ.text!r}")
        elif (
            swapped is not None
            and not _inside(swapped, float(m[1]), float(m[2]))
            and _inside(swapped, float(m[2]), float(m[1]))
        ):
            out.append(
                f"circle: lat,lon swapped? (read as lon,lat the centre lies in the served region) {circ.text!r}"
            )
    refs = root.findtext(Q + "references")
    if refs:
        for r in refs.split():
            parts = r.split(",")
            if len(parts) != 3:
                out.append(f"references: entry {r!r} is not sender,identifier,sent")
            elif any(not v or _BAD_ID.search(v) for v in parts[:2]):
                out.append(f"references: entry {r!r}: a sender or identifier contains '<' or '&' or is empty")
    if root.findtext(Q + "msgType") in ("Update", "Cancel", "Ack", "Error") and not refs:
        out.append("msgType Update/Cancel/Ack/Error without references")
    if not strict:
        return out
    for tag in ("sent", "effective", "onset", "expires"):
        for el in root.iter(Q + tag):
            if (el.text or "").endswith("-00:00"):
                out.append(f"{tag}: write UTC as +00:00, not -00:00")
    for info in root.iter(Q + "info"):
        onset, expires = info.findtext(Q + "onset"), info.findtext(Q + "expires")
        if onset and expires:
            try:
                if cap_time(expires) <= cap_time(onset):
                    out.append("info: expires is not after onset")
            except ValueError:
                pass  # the XSD reports the format
    return out


def validate(
    xml: bytes, bbox: Box | None = PT_BBOX, strict: bool = True, swapped: Box | None = None
) -> list[str]:
    """Why a CAP document may not be published ([] when it may); ``strict=False`` checks only CAP 1.2
    itself (for documents from elsewhere)."""
    try:
        doc = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as e:
        return [f"not well-formed XML: {e}"]
    info = doc.getroottree().docinfo
    if info.doctype or info.internalDTD is not None:
        # entities are not expanded here (no XXE), so the schema cannot judge the text they
        # stand for (lxml's validator failed with an internal error); CAP has no use for a DTD
        return ["a DOCTYPE (DTD, entity declarations) is not allowed in a CAP message"]
    s = schema()
    out = []
    try:
        valid = s.validate(doc)
    except etree.Error as e:  # whatever else the validator cannot take: a refusal, not a crash
        return [f"the XSD validator cannot read this document: {e}"]
    if not valid:
        out += [f"XSD line {e.line}: {e.message}" for e in s.error_log]
    return out + text_problems(doc, bbox, strict, swapped)


def render(
    draft: Draft,
    cat: Catalogue,
    sent: datetime | str | None = None,
    *,
    resolve: Resolver | None = None,
    strict_references: bool = False,
    identifier: str | None = None,
    bbox: tuple[float, float, float, float] | None = PT_BBOX,
) -> CapDocument:
    """Check the draft, build its CAP document and validate it; :class:`CapInvalid` otherwise."""
    from atalaia.warnings.draft import problems

    found = problems(draft, cat, bbox)
    if found:
        raise CapInvalid([f"{'.'.join(map(str, loc)) or 'draft'}: {msg}" for loc, msg in found])
    doc = build(draft, cat, sent, resolve=resolve, strict_references=strict_references, identifier=identifier)
    bad = validate(doc.xml, bbox)
    if bad:
        raise CapInvalid(bad)
    return doc


def summary(xml: bytes) -> dict[str, Any]:
    """identifier, sender, sent, status, msgType and the first info's headline/severity/expires."""
    root = etree.fromstring(xml)
    info = root.find(Q + "info")

    def first(tag: str) -> str | None:
        return info.findtext(Q + tag) if info is not None else None

    return {
        "identifier": root.findtext(Q + "identifier"),
        "sender": root.findtext(Q + "sender"),
        "sent": root.findtext(Q + "sent"),
        "status": root.findtext(Q + "status"),
        "msgType": root.findtext(Q + "msgType"),
        "event": first("event"),
        "headline": first("headline"),
        "severity": first("severity"),
        "onset": first("onset"),
        "expires": first("expires"),
        "areas": [a.findtext(Q + "areaDesc") for a in (info.iter(Q + "area") if info is not None else [])],
    }
