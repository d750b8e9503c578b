"""What a draft refers to: warning levels (``config/levels.yaml``), hazard types and the CAOP areas
(``config/geo/*.geojson``: DICO and DICOFRE codes with their boundaries).

>>> cat = Catalogue.load()
>>> cat.level("orange").severity, cat.level("orange").awareness
('Severe', '3; orange; Severe')
>>> cat.area("DICOFRE", "131203").name
'Campanhã'
>>> cat.area("DICOFRE", "131203").rings[0][0]      # (lat, lon)       # doctest: +ELLIPSIS
(41.1..., -8.5...)
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

CONFIG = Path(__file__).resolve().parents[1] / "config"
DEFAULT_LEVELS = CONFIG / "levels.yaml"
DEFAULT_AREAS = (CONFIG / "geo" / "porto.geojson",)

Ring = tuple[tuple[float, float], ...]  # closed, (lat, lon)

# Geocode systems whose codes name a CAOP area (the boundary comes from the GeoJSON), and their
# code lengths (YAML reads an unquoted 010203 as a number: the zeros are put back).
CAOP_CODES = {"DICOFRE": 6, "DICO": 4}

#: The CAP ``parameter`` that names a level MeteoAlarm's ``awareness_level`` cannot (ANEPC's azul,
#: Estado de Alerta Especial level 1: IPMA has no blue), written the same way: "1; azul; Minor"
LEVEL_PARAMETER = "ANEPC_EAE"
#: English names of the levels that have only a Portuguese one in levels.yaml
_ENGLISH_COLOURS = {"azul": "blue"}


@dataclass(frozen=True, slots=True)
class Level:
    colour: str  # green | yellow | orange | red
    rank: int
    severity: str  # CAP severity
    awareness: str | None  # MeteoAlarm awareness_level, e.g. "3; orange; Severe"
    sdm: str  # Smart Data Models Alert severity
    ipma: bool = True  # an IPMA colour; False: ANEPC's alone (azul, EAE level 1)

    @property
    def parameter(self) -> tuple[str, str]:
        """The CAP parameter (name, value) that names this level: MeteoAlarm's awareness_level
        ("3; orange; Severe"), else :data:`LEVEL_PARAMETER` ("1; azul; Minor")."""
        if self.awareness:
            return "awareness_level", self.awareness
        return LEVEL_PARAMETER, f"{self.rank}; {self.colour}; {self.severity}"


@dataclass(frozen=True, slots=True)
class Hazard:
    awareness_type: str  # MeteoAlarm, e.g. "10; Rain"
    category: str  # CAP category
    names: tuple[str, ...]  # what a draft may call it (IPMA name, SDM subCategory, MeteoAlarm name)


@dataclass(frozen=True, slots=True)
class Area:
    kind: str  # DICOFRE | DICO
    code: str
    name: str
    rings: tuple[Ring, ...]  # outer rings (CAP has no holes), closed, lat,lon
    aliases: tuple[str, ...] = ()  # other names people use ("Centro Histórico do Porto")

    def names(self) -> list[str]:
        """The folded names the area is known by (``parish_names`` of its name and aliases)."""
        out = {n for x in (self.name, *self.aliases) for n in parish_names(x)}
        return sorted(out)

    def contains(self, lat: float, lon: float) -> bool:
        """Is the point inside one of the area's rings (even-odd rule)?"""
        return any(_inside(ring, lat, lon) for ring in self.rings)


def _inside(ring: Ring, lat: float, lon: float) -> bool:
    inside = False
    for (y1, x1), (y2, x2) in itertools.pairwise(ring):
        if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


# "União das freguesias de X, Y e Z" (CAOP), "União de Freguesias do ..." (as people write it)
_UNION = re.compile(r"^(?:uniao|u\.?f\.?) (?:(?:das|de|dos) freguesias )?(?:de |do |da |dos |das )?")


def parish_names(name: str) -> set[str]:
    """Folded names a parish is known by: its name without the union prefix, and each parish a
    union joins ("União das freguesias de Lordelo do Ouro e Massarelos": "lordelo do ouro e
    massarelos", "lordelo do ouro", "massarelos")."""
    full = _UNION.sub("", fold(name))
    return {fold(name), full, *(p for p in re.split(r",\s*|\s+e\s+", full) if p)}


# Common words for the hazards, pt-PT and en-GB, beyond the names levels.yaml gives.
_SYNONYMS = {
    "12; flooding": (
        "cheia",
        "cheias",
        "inundação",
        "inundações",
        "inundacao",
        "flood",
        "flooding",
        "floods",
    ),
    "10; Rain": ("chuva", "chuva forte", "precipitação forte", "rain", "heavy rain", "rainfall"),
    "1; Wind": ("vento forte", "wind", "strong wind", "gale"),
    "3; Thunderstorm": ("trovoada", "thunderstorm", "thunderstorms"),
    "4; Fog": ("nevoeiro", "fog"),
    "5; high-temperature": ("calor", "tempo quente", "heat", "heatwave", "high temperature"),
    "6; low-temperature": ("frio", "tempo frio", "cold", "low temperature"),
    "7; coastalevent": ("agitação marítima", "coastal event", "storm surge", "galgamento costeiro"),
    "8; forest-fire": ("incêndio", "incêndio rural", "fire", "forest fire", "wildfire"),
    "2; snow-ice": ("neve", "gelo", "snow", "ice", "snow-ice"),
}


#: how a longer event name speaks of a hazard ("Vento muito forte", "Inundações urbanas", "Rough
#: sea"), after folding: word beginnings (Portuguese stems, distinctive English ones) and whole
#: words (short English ones: "wind" is not "window"); the first hazard word in the text decides
_STEMS = {
    "12; flooding": ("cheia", "inund", "alag", "flood"),
    "10; Rain": ("chuv", "precipit", "aguaceir", "rain"),
    "1; Wind": ("vento", "rajad", "ventania", "gust", "wind\\b", "winds\\b", "windy\\b", "gale\\b"),
    "3; Thunderstorm": ("trovoad", "thunder", "lightning"),
    "4; Fog": ("nevoeir", "neblina", "fog", "mist\\b"),
    "5; high-temperature": ("calor", "quente", "heat", "hot\\b"),
    "6; low-temperature": ("frio\\b", "frios\\b", "geada", "cold\\b", "frost"),
    "7; coastalevent": ("agitac", "galgament", "ondulac", "coastal", "surge\\b", "rough sea", "high waves"),
    "8; forest-fire": ("incendio rural", "incendio florestal", "incendios rurais", "wildfire", "forest fire"),
    "2; snow-ice": ("neve\\b", "nevao", "gelo\\b", "snow", "ice\\b", "icy\\b"),
}


def fold(text: str) -> str:
    """Lower case, accents removed, spaces collapsed (for matching names)."""
    t = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return " ".join(t.lower().replace("_", " ").split())


@dataclass(slots=True)
class Catalogue:
    levels: dict[str, Level] = field(default_factory=dict)  # colour and aliases -> Level
    hazards: list[Hazard] = field(default_factory=list)
    areas: dict[tuple[str, str], Area] = field(default_factory=dict)

    @classmethod
    def load(
        cls, levels: str | Path = DEFAULT_LEVELS, areas: tuple[str | Path, ...] | list = DEFAULT_AREAS
    ) -> Catalogue:
        return _load(str(levels), tuple(str(a) for a in areas))

    # ------------------------------------------------------------------ look-ups
    def level(self, name: str) -> Level | None:
        return self.levels.get(fold(str(name)))

    def colours(self) -> list[str]:
        return sorted({lv.colour for lv in self.levels.values()}, key=lambda c: self.levels[c].rank)

    def level_for_severity(self, sdm_severity: str) -> Level | None:
        """The level of a Smart Data Models / incident severity (critical → red ...)."""
        best = None
        for lv in {lv.colour: lv for lv in self.levels.values()}.values():
            if lv.sdm == sdm_severity and lv.ipma:  # (a proposal's colour is IPMA's)
                best = lv
        if best is None and sdm_severity == "low":  # no IPMA colour for rank 1: the next one up
            return self.level("yellow")
        return best

    def hazard(self, name: str) -> Hazard | None:
        """A hazard by its awareness type ("10; Rain"), its number, or any of its names."""
        key = fold(str(name))
        for h in self.hazards:
            if key == fold(h.awareness_type) or key == h.awareness_type.split(";")[0].strip():
                return h
            if key in h.names:
                return h
        return None

    def hazard_in(self, text: str) -> Hazard | None:
        """The hazard a free event name speaks of ("Vento muito forte" -> wind): the one whose
        word stem comes first in it, or None."""
        words = fold(str(text))
        best: tuple[int, Hazard] | None = None
        for h in self.hazards:
            for stem in _STEMS.get(h.awareness_type, ()):
                m = re.search(rf"\b{stem}", words)  # (stems are patterns: \\b ends a whole word)
                if m and (best is None or m.start() < best[0]):
                    best = (m.start(), h)
        return best[1] if best else None

    def area(self, kind: str, code: str) -> Area | None:
        return self.areas.get((kind.upper(), str(code)))

    def codes(self, kind: str) -> list[str]:
        return sorted(c for k, c in self.areas if k == kind.upper())

    def parishes_named(self, name: str) -> list[str]:
        """DICOFRE codes of the parishes ``name`` names: a parish's name or alias, a union's
        name however its prefix is written, or one parish of a union."""
        wanted = _UNION.sub("", fold(name))
        if not wanted:
            return []
        return [
            code
            for (kind, code), a in sorted(self.areas.items())
            if kind == "DICOFRE" and wanted in a.names()
        ]

    def parish_at(self, lon: float, lat: float) -> str | None:
        """The DICOFRE code of the parish the point lies in, None outside every parish."""
        for (kind, code), a in sorted(self.areas.items()):
            if kind == "DICOFRE" and a.contains(lat, lon):
                return code
        return None


@cache
def _load(levels: str, areas: tuple[str, ...]) -> Catalogue:
    from atalaia.streams.config_yaml import load_file, plain

    data = plain(load_file(levels))  # within the safe-loading limits
    cat = Catalogue()
    for row in data.get("scale", []):
        colour = row.get("ipma_awarenessLevelID")
        ipma = bool(colour)
        if not colour:  # ANEPC's blue (EAE level 1) has no IPMA colour: a level by its own name
            colour = (row.get("anepc") or {}).get("colour_pt")
            if not colour or row.get("cap_severity") is None:
                continue
        lv = Level(
            colour=colour,
            rank=int(row["rank"]),
            severity=row["cap_severity"],
            awareness=row.get("meteoalarm_awareness_level"),
            sdm=row.get("sdm_alert_severity", ""),
            ipma=ipma,
        )
        cat.levels[fold(colour)] = lv
        pt = (row.get("anepc") or {}).get("colour_pt")
        if pt:
            cat.levels.setdefault(fold(pt), lv)
        if not ipma and fold(colour) in _ENGLISH_COLOURS:  # "blue" for azul, as "red" for vermelho
            cat.levels.setdefault(_ENGLISH_COLOURS[fold(colour)], lv)
    for row in data.get("hazard_types", []):
        at = row["meteoalarm_awareness_type"]
        names = {fold(at.split(";", 1)[1]), fold(row.get("sdm_subCategory") or "")}
        if row.get("ipma"):
            names.add(fold(row["ipma"]))
        names.update(fold(s) for s in _SYNONYMS.get(at, ()))
        names.discard("")
        cat.hazards.append(Hazard(at, row.get("cap_category") or "Met", tuple(sorted(names))))
    for path in areas:
        for a in read_areas(Path(path)):
            cat.areas.setdefault((a.kind, a.code), a)
    return cat


def _close(ring: list[tuple[float, float]]) -> Ring:
    if ring and ring[0] != ring[-1]:
        ring = [*ring, ring[0]]
    return tuple(ring)


def read_areas(path: Path) -> list[Area]:
    """DICOFRE (parishes) and DICO (municipalities) of a CAOP GeoJSON FeatureCollection; a file
    of another shape is a ValueError naming it (it was an AttributeError's traceback)."""
    try:
        return _read_areas(json.loads(path.read_text(encoding="utf-8")))
    except (AttributeError, TypeError, KeyError, IndexError, ValueError) as e:  # (bad JSON, bad UTF-8 too)
        raise ValueError(f"{path}: not a GeoJSON FeatureCollection of CAOP areas ({e})") from None


def _read_areas(doc: Any) -> list[Area]:
    out = []
    for feat in doc.get("features", []):
        props: dict[str, Any] = feat.get("properties") or {}
        caop = props.get("caop_props") or {}
        geom = feat.get("geometry") or {}
        if geom.get("type") == "Polygon":
            polys = [geom["coordinates"]]
        elif geom.get("type") == "MultiPolygon":
            polys = geom["coordinates"]
        else:
            continue
        rings = tuple(
            _close([(float(lat), float(lon)) for lon, lat, *_ in poly[0]]) for poly in polys if poly
        )
        rings = tuple(r for r in rings if len(r) >= 4)
        dicofre = props.get("dicofre") or caop.get("dtmnfr")
        name = props.get("name") or caop.get("freguesia") or caop.get("municipio") or ""
        aliases = props.get("aliases")
        aliases = tuple(str(x) for x in aliases) if isinstance(aliases, list) else ()
        if dicofre and (props.get("level") in (None, "freguesia")):
            out.append(Area("DICOFRE", str(dicofre), str(name), rings, aliases))
            continue
        dico = props.get("dico") or caop.get("dtmn")
        if dico and props.get("level") in (None, "municipio"):
            out.append(Area("DICO", str(dico), str(name), rings))
    return out
