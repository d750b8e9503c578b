"""The console maps (issue 13: a parish map of the open incidents; issue 12: the warning editor's
area tool), in a real browser (Debian chromium driven by Playwright), screenshots under
tests/screenshots/ (or $ATALAIA_SCREENSHOTS):

* ``GET /api/areas`` serves the configured CAOP parishes as GeoJSON (DICOFRE, names), with an ETag;
* the board's map colours a parish by its most severe open incident (text legend too), follows the
  server push, and a click on a parish filters the board (a second click clears it); at 390 px
  nothing scrolls sideways; the incident page shows the incident's location as a pin;
* the warning editor picks a parish on the map and the CAP preview carries its DICOFRE geocode; a
  drawn polygon reaches the preview as lat,lon pairs; a saved area comes back after a reload;
* no request leaves localhost (no tile server, no CDN).
"""

from __future__ import annotations

import doctest
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import wait
from tests.test_console_board import SHOTS, alarm, chromium, publish  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "console" / "static"
LOCAL = {"127.0.0.1", "localhost", "::1", "[::1]"}


def test_areas_docstring_examples() -> None:
    import atalaia.console.areas as mod

    res = doctest.testmod(mod)
    assert res.failed == 0 and res.attempted > 0


def test_every_map_key_is_in_both_languages() -> None:
    cat = json.loads((STATIC / "i18n.json").read_text())
    used: set[str] = set()
    for page in ("index.html", "incident.html", "warning.html"):
        used |= {
            k for k in re.findall(r'data-t="([^"]+)"', (STATIC / page).read_text()) if k.startswith("map.")
        }
    for f in ("map.js", "index.html", "incident.html", "warning.html"):
        used |= set(re.findall(r"\bt\('(map\.[a-z_.-]+)'", (STATIC / f).read_text()))
    assert len(used) > 20
    for lang in ("pt-PT", "en-GB"):
        assert used - set(cat[lang]) == set(), f"keys used but not in the {lang} catalogue"


def test_leaflet_is_vendored_with_its_licence() -> None:
    vendor = STATIC / "vendor" / "leaflet"
    assert "BSD 2-Clause" in (vendor / "LICENSE").read_text()
    assert 't.version="1.9.4"' in (vendor / "leaflet.js").read_text()
    for f in ("leaflet.css", "images/marker-icon.png", "images/marker-shadow.png", "images/layers.png"):
        assert (vendor / f).is_file(), f


class Requests:
    """Every request a page makes; none may leave this machine."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def watch(self, ctx) -> None:
        ctx.on("request", lambda r: self.urls.append(r.url))

    def assert_local(self) -> None:
        assert self.urls, "no requests recorded"
        away = [u for u in self.urls if urlsplit(u).scheme in ("http", "https", "ws", "wss")
                and urlsplit(u).hostname not in LOCAL]  # fmt: skip
        assert away == [], f"requests left localhost: {away[:5]}"


def parish_path(page, code: str):
    return page.locator(f'#board-map path[data-code="{code}"]')


def click_shape(page, selector: str) -> None:
    """A real mouse click on a point inside an SVG shape (its box's centre may lie in a neighbour)."""
    at = page.evaluate(
        """sel => {
          const el = document.querySelector(sel); el.scrollIntoView({block: "center"});
          const b = el.getBoundingClientRect();
          for (let i = 1; i < 12; i++) for (let j = 1; j < 12; j++) {
            const x = b.left + b.width * ((i * 5) % 12) / 12, y = b.top + b.height * ((j * 7) % 12) / 12;
            if (document.elementFromPoint(x, y) === el) return [x, y];
          }
          return null;
        }""",
        selector,
    )
    assert at, f"no visible point inside {selector}"
    page.mouse.click(*at)


@pytest.mark.broker
def test_board_map_colours_parishes_filters_the_board_and_pins_the_incident(make_worker, publish, chromium):  # noqa: F811
    w = make_worker("--stages", "incidents,projection").start(("incidents", "projection"))

    # the areas endpoint: the 7 Porto parishes with their DICOFRE codes, cached by ETag
    r = httpx.get(f"{w.url}/api/areas", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    parishes = {f["properties"]["dicofre"]: f["properties"]["name"] for f in r.json()["features"]
                if f["properties"]["kind"] == "DICOFRE"}  # fmt: skip
    assert len(parishes) == 7 and parishes["131202"] == "Bonfim" and parishes["131203"] == "Campanhã"
    again = httpx.get(f"{w.url}/api/areas", headers={"If-None-Match": r.headers["etag"]}, timeout=10)
    assert again.status_code == 304
    assert httpx.get(f"{w.url}/console/vendor/leaflet/images/marker-icon.png", timeout=10).status_code == 200
    assert httpx.get(f"{w.url}/console/vendor/leaflet/..%2Fmap.js", timeout=10).status_code == 404

    now = datetime.now(UTC).replace(microsecond=0)
    publish(alarm("m1", now, "high", parish="Bonfim"), alarm("m2", now, "medium", parish="Campanhã"))

    reqs = Requests()
    ctx = chromium.new_context(locale="en-GB", viewport={"width": 1280, "height": 900})
    reqs.watch(ctx)
    page = ctx.new_page()
    page.goto(w.url + "/")
    page.wait_for_selector("#status.live", timeout=15000)
    page.wait_for_selector("#map-box[data-ready=true]", timeout=15000)
    page.wait_for_function("document.querySelectorAll('tr[data-incident]').length === 2", timeout=15000)

    # 1. each parish is coloured by its most severe open incident, with a text legend
    page.wait_for_selector('#board-map path[data-code="131202"][data-severity=high]', timeout=10000)
    assert parish_path(page, "131202").get_attribute("fill") == "#a63c06"
    assert parish_path(page, "131203").get_attribute("data-severity") == "medium"
    assert parish_path(page, "131210").get_attribute("data-severity") == ""
    assert "high" in parish_path(page, "131202").get_attribute("aria-label").lower()
    legend = page.inner_text("#board-legend")
    assert "high" in legend and "medium" in legend and "no open incident" in legend
    assert "Bonfim" in page.inner_text("#board-parishes")

    # 2. the server push recolours the map: a critical incident in Paranhos, no reload
    publish(alarm("m3", now, "critical", parish="Paranhos"))
    page.wait_for_selector('#board-map path[data-code="131210"][data-severity=critical]', timeout=10000)
    page.wait_for_function("document.querySelectorAll('tr[data-incident]').length === 3", timeout=10000)
    page.screenshot(path=str(SHOTS / "map-board.png"), full_page=True)

    # 3. a click on Bonfim filters the board; another click clears the filter
    click_shape(page, '#board-map path[data-code="131202"]')
    page.wait_for_function("document.querySelectorAll('tr[data-incident]').length === 1", timeout=5000)
    rows = page.locator("tr[data-incident]").all_inner_texts()
    assert all("Bonfim" in t for t in rows), rows
    assert "Bonfim" in page.inner_text("#map-filter")
    page.screenshot(path=str(SHOTS / "map-board-filtered.png"), full_page=True)
    click_shape(page, '#board-map path[data-code="131202"]')
    page.wait_for_function("document.querySelectorAll('tr[data-incident]').length === 3", timeout=5000)
    assert page.is_hidden("#map-filter")

    # ... and from the keyboard: the parish list's buttons, Enter on a parish shape
    page.locator('#board-parishes button[data-code="131203"]').press("Enter")
    page.wait_for_function("document.querySelectorAll('tr[data-incident]').length === 1", timeout=5000)
    assert "Campanhã" in page.inner_text("tr[data-incident]")
    parish_path(page, "131203").focus()
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelectorAll('tr[data-incident]').length === 3", timeout=5000)

    # 4. the map folds away (and stays folded for this browser)
    page.click("#map-box > summary")
    assert page.is_hidden("#board-map")
    # the details' toggle event (which remembers the choice) fires after the click returns
    page.wait_for_function("localStorage.getItem('atalaia.boardMap') === 'closed'", timeout=5000)
    page.reload()
    page.wait_for_selector("tr[data-incident]", timeout=15000)
    assert page.evaluate("document.getElementById('map-box').open") is False
    page.click("#map-box > summary")
    page.wait_for_selector("#board-map:visible")

    # 5. the incident page: the location as a pin over the parishes
    iid = page.locator("tr[data-incident]", has_text="Campanhã").first.get_attribute("data-incident")
    page.goto(f"{w.url}/incidents/{iid}")
    page.wait_for_selector("#inc-map[data-ready=true]", timeout=15000)
    assert page.locator("#inc-map .leaflet-marker-icon").count() == 1
    assert page.get_attribute("#inc-map", "data-parish") == "131203", "by its parish label"
    assert "41.14000, -8.61000" in page.inner_text("#inc-map-caption")
    page.screenshot(path=str(SHOTS / "map-incident-pin.png"), full_page=True)
    reqs.assert_local()
    ctx.close()

    # 6. 390 px: the board with its map still has no sideways scroll
    small = chromium.new_context(locale="pt-PT", viewport={"width": 390, "height": 844}, is_mobile=True)
    reqs390 = Requests()
    reqs390.watch(small)
    m = small.new_page()
    m.goto(w.url + "/")
    m.wait_for_selector("#map-box[data-ready=true]", timeout=15000)
    m.wait_for_selector("tr[data-incident]", timeout=10000)
    m.screenshot(path=str(SHOTS / "map-board-390.png"), full_page=True)
    width = m.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the board is {width} px wide at 390 px"
    assert "crítico" in m.inner_text("#board-legend") and "freguesia" in m.inner_text("#board-legend")
    reqs390.assert_local()
    small.close()


DRAFT = {
    "sender": "protecao.civil@cm-porto.pt",
    "status": "Exercise",
    "level": "yellow",
    "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
    "headline": {"pt-PT": "Aviso amarelo: cheia", "en-GB": "Yellow warning: flood"},
    "area": {"geocodes": {"DICOFRE": ["131203"]}},
}


@pytest.mark.broker
def test_warning_editor_area_tool_parishes_polygon_and_saved_areas(make_worker, chromium):  # noqa: F811
    stages = ("incidents", "projection", "warnings")
    w = make_worker("--stages", ",".join(stages)).start(stages)
    body = {"draft": DRAFT, "actor": "ana", "role": "operator"}
    r = wait(
        lambda: (x := httpx.post(f"{w.url}/api/warnings", json=body, timeout=10)).status_code == 201 and x,
        30,
        "a draft",
    )
    wid = r.json()["warning"]

    reqs = Requests()
    ctx = chromium.new_context(locale="en-GB", viewport={"width": 1280, "height": 1000})
    reqs.watch(ctx)
    page = ctx.new_page()
    page.goto(f"{w.url}/warnings/{wid}")
    page.wait_for_selector("#w-map[data-ready=true]", timeout=15000)
    page.wait_for_function(
        "document.getElementById('cap').textContent.includes('<value>131203</value>')", timeout=15000
    )
    assert page.is_checked('#w-parishes input[data-code="131203"]')
    assert page.get_attribute('#w-map path[data-code="131203"]', "aria-pressed") == "true"

    # 1. a click on Paranhos adds its DICOFRE geocode; the CAP preview follows
    click_shape(page, '#w-map path[data-code="131210"]')
    page.wait_for_function(
        "document.getElementById('cap').textContent.includes('<value>131210</value>')", timeout=10000
    )
    assert page.input_value("#f-dicofre") == "131203, 131210"
    assert "Paranhos" in page.inner_text("#cap")
    # ... and a second click removes it (here from the keyboard: the parish checkbox)
    page.locator('#w-parishes input[data-code="131203"]').uncheck()
    page.wait_for_function(
        "!document.getElementById('cap').textContent.includes('<value>131203</value>')", timeout=10000
    )
    assert page.input_value("#f-dicofre") == "131210"

    # 2. draw a polygon: click points, close it; the preview carries it as closed lat,lon pairs
    page.click("#draw-start")
    page.evaluate("document.getElementById('w-map').scrollIntoView({block: 'center'})")
    box = page.locator("#w-map").bounding_box()
    for dx, dy in ((0.30, 0.30), (0.45, 0.30), (0.40, 0.45)):
        page.mouse.click(box["x"] + box["width"] * dx, box["y"] + box["height"] * dy)
    assert page.input_value("#f-dicofre") == "131210", "drawing does not pick parishes"
    page.click("#draw-close")
    page.wait_for_function(
        r"/<polygon>(\S+ ){3}\S+<\/polygon>/.test(document.getElementById('cap').textContent)", timeout=10000
    )
    polys = re.findall(r"<polygon>([^<]+)</polygon>", page.inner_text("#cap"))
    drawn = [p for p in polys if len(p.split()) == 4]
    assert drawn, polys
    pairs = drawn[0].split()
    assert pairs[0] == pairs[-1], "closed"
    lat, lon = map(float, pairs[0].split(","))
    assert 41.0 < lat < 41.3 and -8.8 < lon < -8.5, "lat,lon, in Porto"
    assert "3 points" in page.inner_text("#w-polygons")
    page.screenshot(path=str(SHOTS / "map-warning-area-tool.png"), full_page=True)

    # 3. save the area in this browser, change it, then use the saved one again after a reload
    page.fill("#saved-name", "Paranhos e margem")
    page.click("#saved-save")
    click_shape(page, '#w-map path[data-code="131202"]')
    page.wait_for_function(
        "document.getElementById('cap').textContent.includes('<value>131202</value>')", timeout=10000
    )
    page.reload()
    page.wait_for_selector("#w-map[data-ready=true]", timeout=15000)
    page.wait_for_function(
        "document.getElementById('cap').textContent.includes('<value>131203</value>')", timeout=15000
    )
    page.select_option("#saved-areas", "Paranhos e margem")
    page.click("#saved-use")
    page.wait_for_function(
        "(c => c.includes('<value>131210</value>') && !c.includes('<value>131203</value>')"
        " && c.split('<polygon>').length > 2)(document.getElementById('cap').textContent)",
        timeout=10000,
    )
    assert page.input_value("#f-dicofre") == "131210"

    # 4. the edit is stored with the area as the draft format wants it
    page.click("#buttons button[data-action=edit]")

    def stored_area():  # the draft as created holds one area mapping; the edit stores a list of areas
        area = httpx.get(f"{w.url}/api/warnings/{wid}", timeout=5).json()["warning"]["draft"]["area"]
        return area[0] if isinstance(area, list) and area and area[0].get("polygon") else None

    area = wait(stored_area, 15, "the stored polygon")
    assert area["geocodes"]["DICOFRE"] == ["131210"]
    ring = area["polygon"][0]
    assert len(ring) == 4 and ring[0] == ring[-1] and 41.0 < ring[0][0] < 41.3
    page.screenshot(path=str(SHOTS / "map-warning-saved-area.png"), full_page=True)
    reqs.assert_local()
    ctx.close()
