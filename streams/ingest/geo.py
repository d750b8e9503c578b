"""Entity location -> Observation ``location`` ``(lon, lat)`` with data-quality checks.

A GeoJSON Point maps as is. Other geometries (a TrafficFlowObserved LineString, a Polygon) are
represented by the mean of their vertices, with a warning. A point outside the area of interest is
kept as sent and flagged; when swapping it would land inside, the warning says it looks like
``lat,lon`` (the official SDM WaterObserved example has that bug). Geofencing is not ingest's job.
"""

from __future__ import annotations

import math
from typing import Any

Point = tuple[float, float]


class LocationError(ValueError):
    pass


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise LocationError(f"coordinate {v!r} is not a number")
    x = float(v)
    if not math.isfinite(x):
        raise LocationError("coordinate is not finite")
    return x


def _position(c: Any) -> Point:
    if not isinstance(c, list) or len(c) < 2:
        raise LocationError(f"position {str(c)[:60]} is not [lon, lat]")
    return _number(c[0]), _number(c[1])


def _positions(coords: Any, depth: int) -> list[Point]:
    if depth == 0:
        return [_position(coords)]
    if not isinstance(coords, list) or not coords:
        raise LocationError("empty coordinates")
    out: list[Point] = []
    for c in coords:
        out.extend(_positions(c, depth - 1))
    return out


_DEPTH = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2, "MultiPolygon": 3}


def geometry_point(geometry: Any) -> tuple[Point, str | None]:
    """(lon, lat) of a GeoJSON geometry, and a note when it is not a Point. Raises LocationError."""
    if not isinstance(geometry, dict):
        raise LocationError("location is not a GeoJSON geometry object")
    kind = geometry.get("type")
    if kind == "Feature" or kind == "FeatureCollection":
        return geometry_point(feature_geometry(geometry))
    if kind == "GeometryCollection":
        return _collection_point(geometry)
    depth = _DEPTH.get(kind) if isinstance(kind, str) else None
    if depth is None:
        raise LocationError(f"unsupported geometry type {str(kind)[:40]!r}")
    pts = _positions(geometry.get("coordinates"), depth)
    if depth == 0:
        return pts[0], None
    pts = list(dict.fromkeys(pts))  # a ring's closing vertex repeats the first
    lon = sum(p[0] for p in pts) / len(pts)
    lat = sum(p[1] for p in pts) / len(pts)
    return (lon, lat), f"{kind} represented by the mean of its {len(pts)} vertices"


def unlocated(geometry: Any) -> bool:
    """A GeoJSON ``Feature`` whose geometry is ``null`` (RFC 7946 §3.2: an unlocated feature), or a
    ``FeatureCollection`` whose first feature is one: no location, as a ``null`` location is."""
    if type(geometry) is not dict:
        return False
    kind = geometry.get("type")
    if kind == "FeatureCollection":
        features = geometry.get("features")
        if type(features) is not list or not features or type(features[0]) is not dict:
            return False
        geometry = features[0]
        kind = geometry.get("type")
    return kind == "Feature" and "geometry" in geometry and geometry["geometry"] is None


def feature_geometry(feature: dict) -> Any:
    """The geometry of a GeoJSON ``Feature``, or of a ``FeatureCollection``'s first feature: what
    Orion keeps of a ``geo:json`` attribute written as either (its notifications give the geometry
    alone; a producer posting the entity itself sends the Feature). Raises LocationError."""
    if feature.get("type") == "FeatureCollection":
        features = feature.get("features")
        if not isinstance(features, list) or not features or not isinstance(features[0], dict):
            raise LocationError("FeatureCollection without features")
        feature = features[0]
        if feature.get("type") != "Feature":
            raise LocationError("FeatureCollection whose first member is not a Feature")
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or geometry.get("type") in ("Feature", "FeatureCollection"):
        raise LocationError("Feature without a geometry")
    return geometry


def _collection_point(geometry: dict) -> tuple[Point, str | None]:
    """A GeoJSON GeometryCollection: the mean of its members' vertices (members that are
    collections themselves are refused: RFC 7946 §3.1.8 advises against nesting them)."""
    members = geometry.get("geometries")
    if not isinstance(members, list) or not members:
        raise LocationError("GeometryCollection without geometries")
    pts: list[Point] = []
    for m in members:
        kind = m.get("type") if isinstance(m, dict) else None
        depth = _DEPTH.get(kind) if isinstance(kind, str) else None
        if depth is None:
            raise LocationError(f"unsupported geometry type {str(kind)[:40]!r} in a GeometryCollection")
        pts += _positions(m.get("coordinates"), depth)
    pts = list(dict.fromkeys(pts))
    lon = sum(p[0] for p in pts) / len(pts)
    lat = sum(p[1] for p in pts) / len(pts)
    return (lon, lat), f"GeometryCollection represented by the mean of its {len(pts)} vertices"


def geo_point_text(text: str) -> Point:
    """NGSI-v2 ``geo:point`` ``"lat, lon"`` -> (lon, lat)."""
    parts = text.split(",")
    if len(parts) != 2:
        raise LocationError(f"geo:point {text[:60]!r} is not 'lat, lon'")
    try:
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError:
        raise LocationError(f"geo:point {text[:60]!r} is not 'lat, lon'") from None
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise LocationError("geo:point is not finite")
    return lon, lat


V2_SHAPES = frozenset({"geo:line", "geo:box", "geo:polygon"})


def geo_points_text(kind: str, points: Any) -> tuple[Point, str]:
    """NGSI-v2 ``geo:line`` / ``geo:box`` / ``geo:polygon`` (a list of ``"lat, lon"``) -> the mean of
    its vertices (a box: its centre) as (lon, lat), and the note saying so. Raises LocationError."""
    if not isinstance(points, list) or not points or not all(isinstance(p, str) for p in points):
        raise LocationError(f"{kind} value is not a list of 'lat, lon' texts")
    pts = list(dict.fromkeys(geo_point_text(p) for p in points))
    lon = sum(p[0] for p in pts) / len(pts)
    lat = sum(p[1] for p in pts) / len(pts)
    return (lon, lat), f"{kind} represented by the mean of its {len(pts)} vertices"


def _inside(lon: float, lat: float, area: tuple[float, float, float, float]) -> bool:
    return area[0] <= lon <= area[2] and area[1] <= lat <= area[3]


def check_point(p: Point, area: tuple[float, float, float, float]) -> str | None:
    """None when the point is plausible, else a data-quality warning. Raises on impossible values."""
    lon, lat = p
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        hint = " (lat,lon written instead of lon,lat?)" if abs(lon) <= 90.0 and abs(lat) <= 180.0 else ""
        raise LocationError(f"point [{lon}, {lat}] is outside the globe{hint}")
    if _inside(lon, lat, area):
        return None
    if _inside(lat, lon, area):
        return f"location-swapped: point [{lon}, {lat}] looks like lat,lon (GeoJSON is lon,lat); kept as sent"
    return f"location-outside-area: point [{lon}, {lat}] is outside the area of interest {list(area)}"
