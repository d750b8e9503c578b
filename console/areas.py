"""The map's data and code: the configured CAOP areas as GeoJSON, and the vendored Leaflet.

* ``GET /api/areas``                      the parishes (DICOFRE) and municipalities (DICO) of the
  CAOP GeoJSON files ``config/warnings.yaml`` names (``areas:``), as one FeatureCollection; built
  once per process, answered with an ``ETag`` (``If-None-Match`` gets a 304)
* ``GET /console/vendor/leaflet/{name}``  Leaflet 1.9.4 (BSD-2, ``static/vendor/leaflet/LICENSE``)

The boundaries are the ones CAP warnings carry (``warnings.catalogue``: outer rings, closed), so
what an operator picks on the map is what the warning's polygons will be. The maps draw these
polygons on a plain background: no tile server, nothing fetched from the internet.

>>> body = areas_geojson(Catalogue.load())
>>> doc = orjson.loads(body)
>>> [(f["properties"]["code"], f["properties"]["name"]) for f in doc["features"]][:2]
[('131202', 'Bonfim'), ('131203', 'Campanhã')]
>>> doc["features"][1]["geometry"]["coordinates"][0][0][0]     # [lon, lat]   # doctest: +ELLIPSIS
[-8.5..., 41.1...]
>>> "cedofeita" in doc["features"][5]["properties"]["names"]
True
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import faust
import orjson

from atalaia.warnings.catalogue import Catalogue

VENDOR = Path(__file__).parent / "static" / "vendor" / "leaflet"
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".md": "text/plain",
    "": "text/plain",
}
ATTRIBUTION = "CAOP © Direção-Geral do Território (DGT), CC BY 4.0; DICO/DICOFRE codes: INE"


def vendor_files() -> dict[str, tuple[Path, str]]:
    """Every vendored file by its path under ``vendor/leaflet/`` (only these are served)."""
    out = {}
    for p in sorted(VENDOR.rglob("*")):
        if p.is_file():
            out[p.relative_to(VENDOR).as_posix()] = (p, _TYPES.get(p.suffix, "application/octet-stream"))
    return out


def areas_geojson(cat: Catalogue) -> bytes:
    """The catalogue's areas as a GeoJSON FeatureCollection ([lon, lat], RFC 7946), parishes first."""
    features = []
    order = {"DICOFRE": 0, "DICO": 1}
    for (kind, code), a in sorted(cat.areas.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1])):
        props: dict[str, Any] = {"kind": kind, "code": code, "name": a.name, "names": a.names()}
        if kind == "DICOFRE":
            props.update(level="freguesia", dicofre=code, dico=code[:4])
        else:
            props.update(level="municipio", dico=code)
        features.append(
            {
                "type": "Feature",
                "id": f"{kind}:{code}",
                "properties": props,
                "geometry": {
                    "type": "MultiPolygon",
                    "coordinates": [[[[lon, lat] for lat, lon in ring]] for ring in a.rings],
                },
            }
        )
    return orjson.dumps({"type": "FeatureCollection", "attribution": ATTRIBUTION, "features": features})


def install(app: faust.App, settings: Any, ctx: dict[str, Any]) -> None:
    """Add ``/api/areas`` and the vendored Leaflet files to ``app``."""
    fail = ctx["fail"]
    files = vendor_files()
    cache: dict[str, Any] = {}

    def body() -> tuple[bytes, str]:
        if "body" not in cache:
            from atalaia.warnings.config import load_config

            data = areas_geojson(load_config(settings.warnings_path).catalogue())
            cache["body"] = (data, '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"')
        return cache["body"]

    @app.page("/api/areas")
    class Areas(faust.web.View):
        async def get(self, request: Any) -> Any:
            try:
                data, etag = body()
            except Exception as e:  # a missing or bad GeoJSON / warnings.yaml: say so, not a 500
                return fail(self, 503, "Areas unavailable", f"the CAOP areas could not be read: {e}")
            headers = {"ETag": etag, "Cache-Control": "public, max-age=300"}
            if etag in (request.headers.get("If-None-Match") or ""):
                return self.bytes(b"", status=304, headers=headers)
            return self.bytes(data, content_type="application/geo+json", headers=headers)

    @app.page("/console/vendor/leaflet/{name}")
    class Leaflet(faust.web.View):
        async def get(self, request: Any, name: str) -> Any:
            return serve(self, name)

    @app.page("/console/vendor/leaflet/images/{name}")
    class LeafletImages(faust.web.View):
        async def get(self, request: Any, name: str) -> Any:
            return serve(self, "images/" + name)

    def serve(view: Any, name: str) -> Any:
        hit = files.get(name)
        if hit is None:
            return fail(view, 404, "Not found", name)
        path, ctype = hit
        return view.bytes(
            path.read_bytes(), content_type=ctype, headers={"Cache-Control": "public, max-age=86400"}
        )
