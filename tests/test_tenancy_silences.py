"""Silences scoped to a tenant (a ``tenant="X"`` matcher on the alarms' tenant label), and a
tenant-scoped console user who sees and makes only their tenants' silences and warnings."""

from __future__ import annotations

import time

import httpx
import pytest

from atalaia.incidents.silences import silence_tenant
from atalaia.incidents.testing import Driver, at_s
from tests.test_console_tenants import bearer, sha

GAUGE = "urn:ngsi-ld:WaterObserved:gauge-1"


def test_a_tenant_matcher_scopes_a_silence_to_one_tenant() -> None:
    d = Driver()
    porto = d.fire("river-level-high", f"porto|{GAUGE}", at=0, tenant="porto", parish="Bonfim")
    gaia = d.fire("river-level-high", f"gaia|{GAUGE}", at=1, tenant="gaia", parish="Bonfim")
    assert porto.incident != gaia.incident  # one id, two tenants: two incidents
    d.step(
        {
            "action": "silence",
            "id": "s-gaia",
            "actor": "gil",
            "role": "supervisor",
            "matchers": ['tenant="gaia"', 'rule="river-level-high"'],
            "comment": "gaia gauge swap",
            "duration": "1h",
            "at": at_s(60),
        },
        60,
    )
    assert d.current(gaia.incident).state == "suppressed"
    assert d.current(porto.incident).state == "unacknowledged", "porto's alarm is not gaia's silence"


def test_silence_tenant_reads_the_equality_matcher_only() -> None:
    assert silence_tenant(['tenant="gaia"', 'rule="x"']) == "gaia"
    assert silence_tenant(['tenant=~"ga.*"']) is None and silence_tenant(['rule="x"']) is None
    assert silence_tenant(["not a matcher"]) is None


@pytest.mark.broker
def test_a_scoped_user_sees_and_makes_only_their_tenants_silences_and_warnings(make_worker, tmp_path):
    users = tmp_path / "users.yaml"
    users.write_text(
        "users:\n"
        f"  - {{actor: eva, role: supervisor, token_sha256: {sha('porto-op')}, tenants: [porto]}}\n"
        f"  - {{actor: gil, role: supervisor, token_sha256: {sha('gaia-op')}, tenants: [gaia]}}\n"
        f"  - {{actor: rui, role: supervisor, token_sha256: {sha('boss')}}}\n"
    )
    from atalaia.streams.settings import CONFIG_DIR

    bound = tmp_path / "warnings.yaml"  # senders and territory bound to the tenants
    bound.write_text(
        f"levels: {CONFIG_DIR / 'levels.yaml'}\nareas: [{CONFIG_DIR / 'geo' / 'porto.geojson'}]\n"
        "senders: {porto: [pc@cm-porto.pt], gaia: [pc@cm-gaia.pt]}\n"
        "tenant_areas: {porto: ['1312'], gaia: ['1317']}\n"
    )
    stages = ("incidents", "projection", "warnings")
    env = {"ATALAIA_CONSOLE_USERS": str(users), "ATALAIA_WARNINGS_PATH": str(bound)}
    w = make_worker("--stages", ",".join(stages), extra_env=env).start(stages)
    url = f"{w.url}/api/silences"
    body = {"matchers": ['rule="river-level-high"'], "comment": "gauge swap", "duration": "1h"}
    r = httpx.post(url, json=body, headers=bearer("porto-op"), timeout=15)
    assert r.status_code == 201, r.text
    sid = r.json()["silence"]
    bad = {**body, "matchers": ['tenant="gaia"']}
    assert httpx.post(url, json=bad, headers=bearer("porto-op"), timeout=15).status_code == 403
    # matchers as an object of equalities (the command reads that form too) skipped the check:
    # another tenant's silence, or one over every tenant
    bad = {**body, "matchers": {"tenant": "gaia"}}
    assert httpx.post(url, json=bad, headers=bearer("porto-op"), timeout=15).status_code == 403
    r = httpx.post(url, json={**body, "matchers": {"rule": "river-level-high"}}, headers=bearer("porto-op"))
    assert r.status_code == 201, r.text
    wide = r.json()["silence"]
    for odd in (42, None, {"x": 1, "tenant": "gaia"}):
        r = httpx.post(url, json={**body, "matchers": odd}, headers=bearer("porto-op"), timeout=15)
        assert r.status_code in (403, 422), (odd, r.status_code, r.text)

    def listed(token: str) -> list[str]:
        return [s["id"] for s in httpx.get(url, headers=bearer(token), timeout=5).json()["silences"]]

    deadline = time.monotonic() + 20
    while sid not in listed("boss") and time.monotonic() < deadline:
        time.sleep(0.3)
    hit = httpx.get(f"{url}/{sid}", headers=bearer("porto-op"), timeout=5).json()
    assert 'tenant="porto"' in hit["matchers"], "a scoped user's silence is scoped to their tenant"
    while wide not in listed("boss") and time.monotonic() < deadline:
        time.sleep(0.3)
    hit = httpx.get(f"{url}/{wide}", headers=bearer("porto-op"), timeout=5).json()
    assert 'tenant="porto"' in hit["matchers"], "the object form is scoped too"
    assert sid in listed("porto-op") and sid not in listed("gaia-op")
    assert httpx.get(f"{url}/{sid}", headers=bearer("gaia-op"), timeout=5).status_code == 404
    assert httpx.delete(f"{url}/{sid}", headers=bearer("gaia-op"), timeout=15).status_code == 404

    # warnings: eva's draft is porto's; gil does not see it, rui (unscoped) does
    draft = {
        "sender": "pc@cm-porto.pt",
        "level": "orange",
        "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
        "area": {"geocodes": {"DICOFRE": ["131203"]}},
    }
    wurl = f"{w.url}/api/warnings"
    # the warnings page starts a new draft with the user's tenant's sender and one of its parishes
    start = httpx.get(wurl, headers=bearer("porto-op"), timeout=5).json()
    assert start["sender"] == "pc@cm-porto.pt" and start["area"]["geocodes"]["DICOFRE"][0].startswith("1312")
    start = httpx.get(wurl, headers=bearer("gaia-op"), timeout=5).json()
    assert start["sender"] == "pc@cm-gaia.pt" and start["area"] is None, start  # (no gaia parish configured)
    r = httpx.post(wurl, json={"draft": draft}, headers=bearer("porto-op"), timeout=15)
    assert r.status_code == 201, r.text
    r = httpx.post(wurl, json={"draft": {**draft, "tenant": "gaia"}}, headers=bearer("porto-op"), timeout=15)
    assert r.status_code == 403

    def warnings(token: str) -> list[dict]:
        return httpx.get(wurl, headers=bearer(token), timeout=5).json()["warnings"]

    deadline = time.monotonic() + 20
    while not warnings("boss") and time.monotonic() < deadline:
        time.sleep(0.3)
    (mine,) = warnings("porto-op")
    assert warnings("gaia-op") == [] and [x["id"] for x in warnings("boss")] == [mine["id"]]
    assert httpx.get(f"{wurl}/{mine['id']}", headers=bearer("gaia-op"), timeout=5).status_code == 404
    cmd = {"action": "submit"}
    r = httpx.post(f"{wurl}/{mine['id']}/commands", json=cmd, headers=bearer("gaia-op"), timeout=15)
    assert r.status_code == 404
