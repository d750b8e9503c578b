"""A tenant's territory as the CAOP areas give it, for holding drawn warning areas to it.

A drawn polygon or circle follows no border exactly (a river bank, a road, a radius), so a
tenant's drawing may reach ``MARGIN_KM`` beyond its areas, and nobody else's drawing may reach
more than that into them. Shapes are sampled: their outline every ``STEP_KM``, and for another
tenant's territory also a grid of ``STEP_KM`` over the part of it the shape could cover, so a
sliver narrower than a step can pass unseen (far below what a population warning addresses).

>>> from atalaia.warnings.catalogue import Catalogue
>>> cat = Catalogue.load()
>>> campanha = Territory.of(a for (k, c), a in cat.areas.items() if c == "131203")
>>> bool(campanha.reach_km(outline([(41.155, -8.575)]))[0] <= 0)   # inside Campanhã
True
>>> round(float(campanha.reach_km(outline([(41.155, -8.70)]))[0]))  # out at sea, off Foz
9
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from atalaia.warnings.catalogue import Area, Catalogue

MARGIN_KM = 1.0  # how far a drawing may reach beyond (or into) a territory's border
STEP_KM = 0.25  # the sampling step of outlines and grids
KM_PER_DEG = 111.2
MAX_POINTS = 40_000  # grid points per territory and shape; the step widens beyond it
MAX_OUTLINE = 100_000  # points of an outline; the step widens beyond it
_CELLS = 1_000_000


def _scale(lat: float) -> float:
    return KM_PER_DEG * max(0.01, math.cos(math.radians(lat)))


def territory(cat: Catalogue, prefixes: tuple[str, ...]) -> Territory | None:
    """The territory of the catalogue's areas whose codes start with one of ``prefixes`` (its
    parishes; a municipality's own outline only where none of its parishes is configured)."""
    key = (id(cat), prefixes)
    hit = _TERRITORIES.get(key)
    if hit is not None and hit[0] is cat:
        return hit[1]
    mine = [(kind, code, a) for (kind, code), a in sorted(cat.areas.items()) if code.startswith(prefixes)]
    parishes = {code for kind, code, _ in mine if kind == "DICOFRE"}
    chosen = [
        a for kind, code, a in mine if kind == "DICOFRE" or not any(p.startswith(code) for p in parishes)
    ]
    found = Territory.of(chosen)
    if len(_TERRITORIES) >= 256:
        _TERRITORIES.clear()
    _TERRITORIES[key] = (cat, found)
    return found


_TERRITORIES: dict[tuple[int, tuple[str, ...]], tuple[Catalogue, Territory | None]] = {}


@dataclass(frozen=True, slots=True)
class Territory:
    """The rings of some areas: ``rings[i]`` an (n, 2) array of closed (lat, lon) points."""

    rings: tuple[np.ndarray, ...]
    groups: tuple[tuple[int, ...], ...]  # the rings of each area (areas may share borders)
    box: tuple[float, float, float, float]  # lat_min, lat_max, lon_min, lon_max
    deepest: tuple[float, ...] = ()  # per area: the depth (km) of its deepest point, on a grid

    @classmethod
    def of(cls, areas: Iterable[Area]) -> Territory | None:
        rings: list[np.ndarray] = []
        groups: list[tuple[int, ...]] = []
        for a in areas:
            first = len(rings)
            rings += [np.asarray(r, dtype=float) for r in a.rings if len(r) >= 4]
            if len(rings) > first:
                groups.append(tuple(range(first, len(rings))))
        if not rings:
            return None
        pts = np.concatenate(rings)
        box = (float(pts[:, 0].min()), float(pts[:, 0].max()), float(pts[:, 1].min()), float(pts[:, 1].max()))
        deepest = []
        for group in groups:  # each area's own grid: a narrow parish is never deeper than its middle
            own = [rings[j] for j in group]  # (a point inside it is nearest its own border)
            grid = _grid(Shape(polygon=np.concatenate(own)).box(), STEP_KM / 2)
            inside = grid[_inside(grid, own)] if len(grid) else grid
            deepest.append(float(_distance_km(inside, _segments(own)).max()) if len(inside) else 0.0)
        return cls(tuple(rings), tuple(groups), box, tuple(deepest))

    def reach_km(self, pts: np.ndarray) -> np.ndarray:
        """For each (lat, lon) point: how far outside the territory it lies, in km (distance to
        its border); minus that distance for a point inside it."""
        out = np.empty(len(pts))
        segs = _segments(self.rings)
        chunk = max(1, _CELLS // len(segs))  # points × segments per step, in memory at once
        for i in range(0, len(pts), chunk):
            p = pts[i : i + chunk]
            inside = np.zeros(len(p), dtype=bool)
            for group in self.groups:  # inside one area: its own rings, even-odd
                inside |= _inside(p, [self.rings[j] for j in group])
            d = _distance_km(p, segs)
            out[i : i + chunk] = np.where(inside, -d, d)
        return out

    def near(self, pts: np.ndarray, km: float) -> np.ndarray:
        """Which points lie in the territory's box widened by ``km`` (the others are farther
        than ``km`` from it: no need to measure them)."""
        lat0, lat1, lon0, lon1 = self.box
        dlat, dlon = km / KM_PER_DEG, km / _scale(max(abs(lat0), abs(lat1)))
        return (
            (pts[:, 0] >= lat0 - dlat)
            & (pts[:, 0] <= lat1 + dlat)
            & (pts[:, 1] >= lon0 - dlon)
            & (pts[:, 1] <= lon1 + dlon)
        )

    def beyond(self, pts: np.ndarray, km: float) -> int | None:
        """The index of the first point farther than ``km`` outside the territory, or None."""
        near = self.near(pts, km)
        first = None if near.all() else int(np.argmin(near))
        inner = np.flatnonzero(near[:first])
        far = np.flatnonzero(self.reach_km(pts[inner]) > km) if len(inner) else inner
        return int(inner[far[0]]) if len(far) else first

    def within(self, pts: np.ndarray, km: float) -> int | None:
        """The index of the first point more than ``km`` inside the territory, or more than half
        its area's depth where that is less (a parish narrower than 2 km), or None."""
        inner = np.flatnonzero(self.near(pts, 0.0))
        if not len(inner):
            return None
        p = pts[inner]
        depth = -self.reach_km(p)
        need = np.full(len(p), km)
        for g, group in enumerate(self.groups):
            if g < len(self.deepest) and 0.5 * self.deepest[g] < km:
                inside = _inside(p, [self.rings[j] for j in group])
                need = np.where(inside, np.minimum(need, 0.5 * self.deepest[g]), need)
        deep = np.flatnonzero((depth > need) & (depth > 0))
        return int(inner[deep[0]]) if len(deep) else None

    def grid(self, shape: Shape, step: float = STEP_KM) -> np.ndarray:
        """Grid points of this territory's box that lie inside ``shape``."""
        lat0, lat1, lon0, lon1 = self.box
        s0, s1, t0, t1 = shape.box()
        lat0, lat1, lon0, lon1 = max(lat0, s0), min(lat1, s1), max(lon0, t0), min(lon1, t1)
        if lat0 > lat1 or lon0 > lon1:
            return np.empty((0, 2))
        pts = _grid((lat0, lat1, lon0, lon1), step)
        return pts[shape.contains(pts)] if len(pts) else pts


@dataclass(frozen=True, slots=True)
class Shape:
    """A drawn area: a closed polygon of (lat, lon) points, or a circle."""

    polygon: np.ndarray | None = None
    centre: tuple[float, float] | None = None
    km: float = 0.0

    @classmethod
    def drawn(cls, points: Sequence[Sequence[float]]) -> Shape:
        """A drawn polygon as a draft gives it, closed here if it was not (a draft may leave it
        open: CAP's document closes it)."""
        ring = np.asarray(points, dtype=float)
        if len(ring) and (ring[0] != ring[-1]).any():
            ring = np.vstack([ring, ring[:1]])
        return cls(polygon=ring)

    def box(self) -> tuple[float, float, float, float]:
        if self.polygon is not None:
            p = self.polygon
            return float(p[:, 0].min()), float(p[:, 0].max()), float(p[:, 1].min()), float(p[:, 1].max())
        assert self.centre is not None
        lat, lon = self.centre
        dlat, dlon = self.km / KM_PER_DEG, self.km / _scale(lat)
        return lat - dlat, lat + dlat, lon - dlon, lon + dlon

    def outline(self) -> np.ndarray:
        """Points of its edge every ``STEP_KM`` (at most 4 096 around a circle), and a circle's
        centre."""
        if self.polygon is not None:
            return outline([tuple(p) for p in self.polygon])
        assert self.centre is not None
        lat, lon = self.centre
        n = min(4096, max(16, math.ceil(2 * math.pi * self.km / STEP_KM)))
        a = np.linspace(0, 2 * math.pi, n, endpoint=False)
        edge = np.stack([lat + self.km / KM_PER_DEG * np.cos(a), lon + self.km / _scale(lat) * np.sin(a)], 1)
        return np.vstack([[lat, lon], edge])

    def contains(self, pts: np.ndarray) -> np.ndarray:
        if self.polygon is not None:
            if not len(pts):
                return np.zeros(0, dtype=bool)
            step = max(1, _CELLS // len(self.polygon))
            return np.concatenate(
                [_inside(pts[i : i + step], [self.polygon]) for i in range(0, len(pts), step)]
            )
        assert self.centre is not None
        lat, lon = self.centre
        dy = (pts[:, 0] - lat) * KM_PER_DEG
        dx = (pts[:, 1] - lon) * _scale(lat)
        return np.hypot(dx, dy) <= self.km


def _grid(box: tuple[float, float, float, float], step: float) -> np.ndarray:
    lat0, lat1, lon0, lon1 = box
    mid = (lat0 + lat1) / 2
    height, width = (lat1 - lat0) * KM_PER_DEG, (lon1 - lon0) * _scale(mid)
    step = max(step, math.sqrt(max(height * width, 1e-9) / MAX_POINTS))
    lats = np.arange(lat0, lat1 + 1e-12, step / KM_PER_DEG)
    lons = np.arange(lon0, lon1 + 1e-12, step / _scale(mid))
    return np.stack(np.meshgrid(lats, lons, indexing="ij"), axis=-1).reshape(-1, 2)


def outline(points: Sequence[tuple[float, float]], most: int = MAX_OUTLINE) -> np.ndarray:
    """The points of a path (a closed ring, or one point) with points added every ``STEP_KM``
    (every longer step when that would make more than ``most`` points)."""
    pairs = list(itertools.pairwise(points))
    kms = [
        math.hypot((y2 - y1) * KM_PER_DEG, (x2 - x1) * _scale((y1 + y2) / 2)) for (y1, x1), (y2, x2) in pairs
    ]
    step = max(STEP_KM, sum(kms) / most)
    out = [np.asarray(points[:1], dtype=float)]
    for ((y1, x1), (y2, x2)), km in zip(pairs, kms, strict=True):
        t = np.arange(1, (n := max(1, math.ceil(km / step))) + 1) / n
        out.append(np.stack([y1 + (y2 - y1) * t, x1 + (x2 - x1) * t], 1))
    return np.concatenate(out)


def _inside(pts: np.ndarray, rings: list[np.ndarray]) -> np.ndarray:
    """Even-odd rule over ``rings`` for each point (vectorised)."""
    y, x = pts[:, 0:1], pts[:, 1:2]
    odd = np.zeros(len(pts), dtype=bool)
    for r in rings:
        y1, x1, y2, x2 = r[:-1, 0], r[:-1, 1], r[1:, 0], r[1:, 1]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        odd ^= (np.count_nonzero(crosses & (x < at), axis=1) % 2).astype(bool)
    return odd


def _segments(rings: Sequence[np.ndarray]) -> np.ndarray:
    """The edges of closed rings as rows (lat1, lon1, lat2, lon2)."""
    return np.concatenate([np.hstack([r[:-1], r[1:]]) for r in rings])


def _distance_km(pts: np.ndarray, segs: np.ndarray) -> np.ndarray:
    """The distance of each point to the nearest segment (lat1, lon1, lat2, lon2), in km, on a
    local flat projection (city scale)."""
    k = (KM_PER_DEG * np.maximum(0.01, np.cos(np.radians(pts[:, 0]))))[:, None]
    py, px = pts[:, 0:1] * KM_PER_DEG, pts[:, 1:2] * k
    ay, ax = segs[:, 0] * KM_PER_DEG, segs[:, 1] * k
    by, bx = segs[:, 2] * KM_PER_DEG, segs[:, 3] * k
    dy, dx = by - ay, bx - ax
    length2 = dy * dy + dx * dx
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.clip(np.where(length2 > 0, ((py - ay) * dy + (px - ax) * dx) / length2, 0.0), 0.0, 1.0)
    return np.sqrt((py - ay - t * dy) ** 2 + (px - ax - t * dx) ** 2).min(axis=1)
