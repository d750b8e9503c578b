"""The console end to end: a FIWARE notification → alarm → incident on the live board in a real
browser (Debian chromium driven by Playwright); the operator acknowledges it from the page."""

from __future__ import annotations

import json
import shutil
import time

import httpx
import pytest

from tests.conftest import shared_path

pytestmark = pytest.mark.broker

RULES = """
group: hydro
rules:
  - id: ribeira-level
    select: {type: WaterObserved, attribute: waterLevel}
    severities: [{severity: high, above: 3.0}]
    labels: {team: hydro}
"""
STAGES = ("ingest", "rules", "incidents", "projection")


@pytest.fixture
def console(make_worker, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    w = make_worker("--stages", ",".join(STAGES), extra_env={"ATALAIA_RULES_PATHS": json.dumps([str(rules)])})
    return w.start(STAGES)


def wait_for(fn, timeout=45.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def open_incidents(url: str) -> list[dict]:
    return httpx.get(f"{url}/api/incidents?state=open", timeout=5).json()["incidents"]


def test_api_rejects_bad_requests_with_problem_json(console):
    r = httpx.get(f"{console.url}/api/incidents/does-not-exist", timeout=5)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    r = httpx.post(
        f"{console.url}/api/incidents/x/commands",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert r.status_code == 400 and r.json()["status"] == 400
    r = httpx.post(
        f"{console.url}/api/incidents/x/commands",
        content=b'{"action": "acknowledge"}',
        headers={"Content-Type": "text/plain"},
        timeout=5,
    )
    assert r.status_code == 415, "no cross-site form posts: commands are JSON only"
    r = httpx.post(
        f"{console.url}/api/incidents/x/commands",
        json={"action": "explode", "actor": "a", "role": "operator"},
        timeout=5,
    )
    assert r.status_code == 422
    assert any(e["field"] == "action" for e in r.json()["errors"])
    r = httpx.post(
        f"{console.url}/api/incidents/no-such-incident/commands",
        json={"action": "acknowledge", "actor": "op", "role": "operator", "reason": "test"},
        timeout=10,
    )
    assert r.status_code == 404, r.text
    assert "unknown incident" in r.json()["detail"], "the operator is told why, at once"


def test_operator_acknowledges_an_incident_in_the_browser(console):
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    body = shared_path("fixtures", "ngsi-ld", "WaterObserved", "notification-normalized.jsonld").read_bytes()
    r = httpx.post(
        f"{console.url}/ngsi-ld/notify",
        content=body,
        headers={"Content-Type": "application/ld+json"},
        timeout=10,
    )
    assert r.status_code == 200
    incidents = wait_for(lambda: open_incidents(console.url), what="an incident in the projection")
    incident = incidents[0]
    assert incident["severity"] == "high" and incident["state"] == "unacknowledged"

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(locale="en-GB")
        page.goto(console.url + "/")
        row = page.locator(f'tr[data-incident="{incident["id"]}"]')
        row.wait_for(timeout=15000)
        assert "high" in row.inner_text() and "unacknowledged" in row.inner_text()
        row.locator("button.ack").click()
        page.wait_for_function("document.getElementById('msg').textContent !== ''", timeout=10000)
        # which incident: "Acknowledge: done" alone named none, the same text for every row
        assert page.inner_text("#msg") == f"Acknowledge: done — {incident['title']}", page.inner_text("#msg")
        page.wait_for_function(
            f"document.querySelector('tr[data-incident=\"{incident['id']}\"] .state')"
            '?.textContent.startsWith("acknowledged")',
            timeout=30000,
        )
        browser.close()
    detail = httpx.get(f"{console.url}/api/incidents/{incident['id']}", timeout=5).json()
    assert detail["incident"]["acknowledged_by"] == "operator-1"
    assert any(h.get("actor") == "operator-1" for h in detail["history"]), (
        "the audit trail names the operator"
    )
    metrics = httpx.get(f"{console.url}/metrics", timeout=5).text
    assert 'atalaia_alarm_flood{position="all"}' in metrics, "EEMUA 191 alarm-load KPIs are exported"
