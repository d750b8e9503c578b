"""The incident page's charts and linked warnings: the console's bounded ring buffer of recent
observations (per entity and attribute, fed from atalaia.observations with a bounded backfill),
``GET /api/incidents/{id}/series``, ``GET /api/incidents/{id}/warnings``, and the page drawing them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.console.series import POINTS, RingStore
from tests.test_console_board import SHOTS, Publisher, chromium  # noqa: F401  (fixtures)


def produce(broker: str, topic: str, items: list[dict]) -> None:
    """Publish from a loop thread of its own (Playwright's sync API owns this thread's loop), keyed
    by entity as ingest does (one entity stays on one partition, in order)."""
    import orjson

    p = Publisher(broker, topic)
    try:
        for x in items:
            key = (x.get("entity") or x.get("key") or "").encode()
            p._run(p.producer.send_and_wait(topic, orjson.dumps(x), key=key))
    finally:
        p.close()


def obs(entity: str, t: datetime, **attrs: float) -> dict:
    return {
        "time": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "entity": f"urn:ngsi-ld:WaterObserved:{entity}",
        "type": "WaterObserved",
        "attributes": attrs,
        "location": [-8.61, 41.14],
        "source": "test",
    }


def test_the_ring_buffer_stays_bounded_and_in_time_order():
    store = RingStore(points=10, series=3)
    t0 = datetime(2026, 1, 28, 10, tzinfo=UTC)
    for i in range(25):
        assert store.add_observation(obs("a", t0 + timedelta(minutes=i), height=i, flow=2 * i)) == 2
    pts = store.get("urn:ngsi-ld:WaterObserved:a", "height")
    assert len(pts) == 10 and [v for _, v in pts] == list(range(15, 25)), "the latest 10, oldest first"
    store.add_observation(obs("a", t0 + timedelta(minutes=3), height=99))  # late: left out
    assert store.get("urn:ngsi-ld:WaterObserved:a", "height")[-1][1] == 24
    for e in ("b", "c"):
        store.add_observation(obs(e, t0, height=1))
    assert store.held() == 3 and store.dropped_series == 1, "beyond 3 series the least recently fed goes"
    assert store.get("urn:ngsi-ld:WaterObserved:a", "height") == [], "a's height was fed least recently"
    assert len(store.get("urn:ngsi-ld:WaterObserved:a", "flow", limit=4)) == 4
    assert len(store) <= 3 * 10
    tenant = dict(obs("a", t0, height=1), tenant="gaia")
    store.add_observation(tenant)
    assert store.get("gaia|urn:ngsi-ld:WaterObserved:a", "height") == [(t0.timestamp(), 1.0)]
    assert store.add_observation({"entity": "x", "time": "bad", "attributes": {"h": 1}}) == 0
    assert store.add_observation(obs("d", t0, height=float("nan"))) == 0


def test_one_tenants_flood_does_not_push_out_another_tenants_series():
    """The buffer was one list for every tenant: gaia's 2 000 new sensors pushed every one of
    porto's series out of the incident pages' charts. Now each tenant has its own bound."""
    store = RingStore(points=5)
    t0 = datetime(2026, 1, 28, 10, tzinfo=UTC)
    for i in range(50):
        store.add_observation(dict(obs(f"porto-{i}", t0, height=1.0), tenant="porto"))
    for i in range(3 * store.series):  # gaia's storm: far more sensors than the buffer holds
        store.add_observation(dict(obs(f"gaia-{i}", t0 + timedelta(seconds=i), height=2.0), tenant="gaia"))
    kept = [store.get(f"porto|urn:ngsi-ld:WaterObserved:porto-{i}", "height") for i in range(50)]
    assert all(kept), f"porto lost {sum(not k for k in kept)} of its 50 series to gaia's flood"
    assert store.held("gaia") == store.series, "the flooding tenant keeps its own latest series"
    assert store.get(f"gaia|urn:ngsi-ld:WaterObserved:gaia-{3 * store.series - 1}", "height")


def test_beyond_the_total_the_tenant_holding_the_most_gives_way():
    store = RingStore(points=2, series=10, total=12)
    t0 = datetime(2026, 1, 28, 10, tzinfo=UTC)
    for i in range(10):
        store.add_observation(dict(obs(f"a{i}", t0, h=1), tenant="a"))
    for i in range(2):
        store.add_observation(dict(obs(f"b{i}", t0, h=1), tenant="b"))
    for i in range(5):  # c's new series take a's oldest, never b's
        store.add_observation(dict(obs(f"c{i}", t0, h=1), tenant="c"))
    assert (store.held("a"), store.held("b"), store.held("c")) == (5, 2, 5)
    assert store.held() == 12 and store.dropped_series == 5
    assert not store.get("a|urn:ngsi-ld:WaterObserved:a0", "h"), "a's least recently fed went first"
    assert store.get("a|urn:ngsi-ld:WaterObserved:a9", "h")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["", "a", "b", "c|d", "e\\"]), st.integers(0, 12)), max_size=120))
def test_the_buffer_is_bounded_and_fair_whatever_is_fed(feeds):
    """Per tenant at most ``series``, in all at most ``total``; a series is pushed out only from its
    own tenant at its bound, or from a tenant that held at least as many as the one adding."""
    from atalaia.console.series import tenant_of
    from atalaia.streams.ingest.observation import entity_key

    store = RingStore(points=1, series=6, total=10)
    for n, (tenant, sensor) in enumerate(feeds):
        key = entity_key(tenant or None, f"s{sensor}")
        assert tenant_of(key) == (key.rsplit("|", 1)[0] if tenant else "")
        before = {t: store.held(t) for t in store.tenants}
        had = set(before) and {(t, k) for t, d in store.tenants.items() for k in d}
        store.add(key, "h", float(n), 1.0)
        gone = {x for x in had if x[0] not in store.tenants or x[1] not in store.tenants[x[0]]}
        mine = tenant_of(key)
        for t, _ in gone:
            assert t == mine or before[t] >= before.get(mine, 0) + 1 - (t == mine), (t, before, mine)
        assert store.held() == sum(len(d) for d in store.tenants.values()) <= 10
        assert all(0 < len(d) <= 6 for d in store.tenants.values())
        assert store.get(key, "h")[-1] == (float(n), 1.0)


def test_a_series_is_read_in_the_rules_unit_as_the_rules_read_it():
    """A gauge reporting metres under a rule in cm: the chart showed 1.71 "cm" beside an alarm of
    171 cm, and a reading in a unit the rules refused (km/h) as the latest point."""
    store = RingStore()
    t0 = datetime(2026, 1, 28, 10, tzinfo=UTC)
    for i, (v, code) in enumerate([(1.55, "MTR"), (1.71, "MTR"), (1.3, "KMH"), (160.0, "CMT"), (0.5, None)]):
        o = obs("a", t0 + timedelta(minutes=i), waterLevel=v)
        if code:
            o["units"] = {"waterLevel": code}
        store.add_observation(o)
    key = "urn:ngsi-ld:WaterObserved:a"
    # waterLevel without a code: the unit WaterObserved documents for it (MTR), as the rules take it
    assert [v for _, v in store.get(key, "waterLevel", unit="cm")] == [155.0, 171.0, 160.0, 50.0]
    assert [v for _, v in store.get(key, "waterLevel", limit=2, unit="m")] == [1.6, 0.5]
    assert [v for _, v in store.get(key, "waterLevel")] == [1.55, 1.71, 1.3, 160.0, 0.5], "no unit: as sent"
    o = obs("b", t0, reading=7.0)  # an attribute of no documented unit, sent without one: as it is
    store.add_observation(o)
    assert store.get("urn:ngsi-ld:WaterObserved:b", "reading", unit="cm") == [(t0.timestamp(), 7.0)]


def alarm(entity: str, at: datetime, value: float) -> dict:
    t = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "id": f"{entity}-{t}",
        "at": t,
        "rule": "river-level-high",
        "group": "hydro",
        "key": f"urn:ngsi-ld:WaterObserved:{entity}",
        "state": "firing",
        "severity": "high",
        "value": value,
        "entity": f"urn:ngsi-ld:WaterObserved:{entity}",
        "type": "WaterObserved",
        "labels": {"parish": "Ribeira", "team": "hydro"},
        "annotations": {},
        "location": [-8.61, 41.14],
        "since": t,
    }


@pytest.mark.broker
def test_series_and_linked_warnings_of_an_incident(make_worker, broker, topic_prefix, chromium):  # noqa: F811
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(minutes=200)
    # 150 observations before the console starts (read back by the backfill), one more afterwards
    before = [obs("ribeira", start + timedelta(minutes=i), height=3 + i / 100) for i in range(150)]
    produce(broker, f"{topic_prefix}.observations", before)
    stages = ("incidents", "projection", "warnings")
    w = make_worker("--stages", ",".join(stages)).start(stages)
    # and an alarm of a rule that names no attribute (an absence rule; before the threshold rule in
    # name order): it took the gauge's height first, and the chart lost the rule's unit
    silent = {**alarm("ribeira", now, 4.49), "rule": "gauge-silent", "value": None, "id": "silent"}
    produce(broker, f"{topic_prefix}.alarms", [alarm("ribeira", now, 4.49), silent])
    produce(broker, f"{topic_prefix}.observations", [obs("ribeira", now, height=4.6)])

    deadline, iid = time.monotonic() + 30, None
    while iid is None and time.monotonic() < deadline:
        rows = httpx.get(f"{w.url}/api/incidents", timeout=5).json()["incidents"]
        iid = rows[0]["id"] if rows else None
        time.sleep(0.2)
    assert iid, "the alarm opened an incident"

    def series(**q) -> dict:
        return httpx.get(f"{w.url}/api/incidents/{iid}/series", params=q, timeout=5).json()

    def last() -> float | None:
        pts = series()["series"][0]["points"]
        return pts[-1]["value"] if pts else None

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and last() != 4.6:
        time.sleep(0.2)
    d = series()
    assert d["available"] and d["limits"]["points"] == POINTS
    (s,) = d["series"]
    assert (s["rule"], s["attribute"], s["unit"]) == ("river-level-high", "height", "m")
    assert len(s["points"]) == POINTS, "bounded: the latest 120 of 151"
    assert s["points"][-1]["value"] == 4.6 and s["points"][0]["value"] == pytest.approx(3 + 31 / 100)
    assert [p["at"] for p in s["points"]] == sorted(p["at"] for p in s["points"])
    assert len(series(points=5)["series"][0]["points"]) == 5
    r = httpx.get(f"{w.url}/api/incidents/{iid}/series?points=0", timeout=5)
    assert r.status_code == 400 and r.json()["field"] == "points"
    assert httpx.get(f"{w.url}/api/incidents/nope/series", timeout=5).status_code == 404

    # linked warnings: a draft from this incident is listed with a link to its page
    assert httpx.get(f"{w.url}/api/incidents/{iid}/warnings", timeout=5).json() == {
        "warnings": [],
        "available": True,
    }
    r = httpx.post(
        f"{w.url}/api/incidents/{iid}/warning-draft",
        json={"actor": "ana", "role": "operator"},
        timeout=15,
    )
    assert r.status_code == 201, r.text
    wid = r.json()["warning"]
    # "Ribeira" is no CAOP parish: the area is the parish the incident lies in (not all of Porto)
    drafted = httpx.get(f"{w.url}/api/warnings/{wid}", timeout=5).json()["warning"]["draft"]
    assert drafted["area"] == {"geocodes": {"DICOFRE": ["131217"]}}, drafted.get("area")
    linked = httpx.get(f"{w.url}/api/incidents/{iid}/warnings", timeout=5).json()["warnings"]
    assert [x["id"] for x in linked] == [wid] and linked[0]["state"] == "draft"
    assert httpx.get(f"{w.url}/api/incidents/nope/warnings", timeout=5).status_code == 404

    page = chromium.new_context(locale="en-GB", viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{w.url}/incidents/{iid}")
    page.wait_for_selector("#series svg polyline", timeout=15000)
    caption = page.inner_text("#series figcaption")
    assert "ribeira · height" in caption and "4.6 m" in caption
    label = page.get_attribute("#series svg", "aria-label")
    assert "120 observations" in label and "last 4.6 m" in label
    link = page.locator("#linked-warnings a")
    link.wait_for(timeout=10000)
    assert link.get_attribute("href") == f"/warnings/{wid}"
    assert "object" not in link.inner_text() and link.inner_text().strip()
    page.locator("#h-series").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "incident-series-warnings.png"), full_page=True)
    link.click()
    page.wait_for_url(f"**/warnings/{wid}")
    page.context.close()
