"""Douglas–Peucker simplification of the areas file's boundary rings, for a CAP document that must
fit :data:`atalaia.warnings.cap.MAX_CAP_BYTES`.

Each vertex's *significance* is computed once: Douglas–Peucker splits a segment at its farthest
vertex whatever the tolerance, and stops where that vertex is no farther than the tolerance, so a
vertex is kept at tolerance ``t`` exactly when its own distance and every distance on its splits'
path are over ``t`` (its significance, the least of those, is over ``t``). Any tolerance is then one
pass over the ring, and a larger tolerance keeps a subset of the vertices a smaller one keeps.

Distances are in degrees of latitude, on the ring's own equirectangular projection (longitudes
scaled by the cosine of its mean latitude): 0.00001° is about 1.1 m. A ring keeps its first vertex,
the vertex farthest from it and the farthest of the others from the line through those two, so it
stays a closed ring of at least 4 pairs (3 distinct points and the first again) that spans an area
when the ring does (:func:`atalaia.warnings.cap.boundary_text` still writes one that has none, a
ring through its first vertex twice, as it is).

>>> ring = ((0.0, 0.0), (0.0, 1.0), (0.001, 2.0), (0.0, 3.0), (1.0, 3.0), (1.0, 0.0), (0.0, 0.0))
>>> simplified(ring, significance(ring), 0.0) == ring
True
>>> simplified(ring, significance(ring), 0.01)
((0.0, 0.0), (0.0, 3.0), (1.0, 3.0), (1.0, 0.0), (0.0, 0.0))
>>> len(simplified(ring, significance(ring), 10.0))
4
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

Point = tuple[float, float]  # (lat, lon)
Ring = tuple[Point, ...]  # closed

#: About how many metres a degree of latitude is (for the notes that say a tolerance in metres).
METRES_PER_DEGREE = 111_320


def open_ring(ring: Ring) -> Ring:
    return ring[:-1] if len(ring) > 1 and ring[0] == ring[-1] else ring


def _segment_distance(p: Point, a: Point, b: Point) -> float:
    (px, py), (ax, ay), (bx, by) = p, a, b
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    if length2 == 0.0:
        return math.hypot(px - ax, py - ay)
    u = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length2))
    return math.hypot(px - (ax + u * dx), py - (ay + u * dy))


def _farthest(xy: list[tuple[float, float]], i: int, j: int) -> tuple[int, float]:
    """The vertex strictly between ``i`` and ``j`` farthest from their segment (the first of
    equals: the same ring gives the same vertices), and its distance."""
    best, dist = i + 1, -1.0
    for m in range(i + 1, j):
        d = _segment_distance(xy[m], xy[i], xy[j])
        if d > dist:
            best, dist = m, d
    return best, dist


def _split(xy: list[tuple[float, float]], sig: list[float], i: int, j: int) -> None:
    """Douglas–Peucker between the always-kept ``i`` and ``j``: each vertex's significance is the
    least distance on its splits' path."""
    stack = [(i, j, math.inf)]
    while stack:
        a, b, cap = stack.pop()
        if b - a < 2:
            continue
        m, d = _farthest(xy, a, b)
        sig[m] = min(d, cap)
        stack.append((a, m, sig[m]))
        stack.append((m, b, sig[m]))


@lru_cache(maxsize=16384)
def significance(ring: Ring) -> tuple[float, ...]:
    """Each vertex's significance (of the ring without its closing pair): Douglas–Peucker keeps it
    at any tolerance (degrees) below this; ``inf`` for the 3 a ring always keeps (every vertex of a
    ring of 3 or fewer)."""
    pts = open_ring(ring)
    n = len(pts)
    if n <= 3:
        return (math.inf,) * n
    k = math.cos(math.radians(sum(lat for lat, _ in pts) / n))
    xy = [(lon * k, lat) for lat, lon in pts]
    xy.append(xy[0])  # (index n: the first vertex again, the end of the second half)
    (x0, y0) = xy[0]
    far = max(range(1, n), key=lambda i: math.hypot(xy[i][0] - x0, xy[i][1] - y0))
    # the third kept vertex: the farthest from the *line* through those two (the first of equals),
    # so the three span an area whenever the ring does; farthest from their segment, a vertex
    # behind the first on that line (a ring starting on a straight edge) made a triangle of none
    dx, dy = xy[far][0] - x0, xy[far][1] - y0
    third = max(
        (i for i in range(1, n) if i != far),
        key=lambda i: (abs((xy[i][0] - x0) * dy - (xy[i][1] - y0) * dx), -i),
    )
    sig = [0.0] * n
    kept = sorted({0, far, third, n})
    for i in kept[:-1]:
        sig[i] = math.inf
    for i, j in itertools.pairwise(kept):
        _split(xy, sig, i, j)
    return tuple(sig)


def simplified(ring: Ring, sig: tuple[float, ...], tolerance: float) -> Ring:
    """``ring`` (closed) simplified to ``tolerance`` (degrees), closed again."""
    kept = [p for p, s in zip(open_ring(ring), sig, strict=True) if s > tolerance]
    return (*kept, kept[0])
