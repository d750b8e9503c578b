"""Tenant-scoped console users: the same entity id in two tenants gives two incidents; an operator
scoped to one tenant sees and acts only on that tenant's incidents (list, detail, deliveries, live
stream, commands); an unscoped supervisor sees both."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time

import httpx
import orjson
import pytest

from atalaia.console.auth import Authenticator, User
from tests.test_incidents_live import produce

ENTITY = "urn:ngsi-ld:WaterObserved:gauge-1"


def alarm(tenant: str, entity: str = ENTITY, n: int = 1) -> dict:
    return {
        "id": f"{tenant}-{entity}-{n}",
        "at": "2026-01-28T10:00:00Z",
        "rule": "river-level-high",
        "group": "hydro",
        "key": f"{tenant}|{entity}",
        "state": "firing",
        "severity": "high",
        "value": 4.8,
        "entity": entity,
        "type": "WaterObserved",
        "tenant": tenant,
        "labels": {"parish": "Bonfim"},
        "annotations": {},
        "location": None,
        "since": "2026-01-28T10:00:00Z",
    }


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_scoped_identity_sees_only_its_tenants():
    auth = Authenticator(
        [
            User(actor="eva", role="operator", token_sha256=sha("e"), tenants=["porto"]),
            User(actor="rui", role="supervisor", token_sha256=sha("r")),
        ]
    )
    eva, rui = auth.identify("Bearer e"), auth.identify("Bearer r")
    porto, gaia = {"correlation": {"tenant": "porto"}}, {"correlation": {"tenant": "gaia"}}
    assert eva.sees(porto) and not eva.sees(gaia)
    assert not eva.sees({"correlation": {}}) and not eva.sees(None), "no tenant: not eva's"
    assert rui.sees(porto) and rui.sees(gaia) and rui.sees({"correlation": {}})


@pytest.mark.broker
def test_a_tenant_scoped_operator_sees_and_acts_only_on_their_tenant(
    make_worker, broker, topic_prefix, tmp_path
):
    users = tmp_path / "users.yaml"
    users.write_text(
        "users:\n"
        f"  - {{actor: eva, role: operator, token_sha256: {sha('porto-op')}, tenants: [porto]}}\n"
        f"  - {{actor: gil, role: operator, token_sha256: {sha('gaia-op')}, tenants: [gaia]}}\n"
        f"  - {{actor: rui, role: supervisor, token_sha256: {sha('boss')}}}\n"
    )
    w = make_worker(
        "--stages", "incidents,projection", extra_env={"ATALAIA_CONSOLE_USERS": str(users)}
    ).start(("incidents", "projection"))
    asyncio.run(produce(broker, f"{topic_prefix}.alarms", [alarm("porto"), alarm("gaia")]))
    deadline, rows = time.monotonic() + 30, []
    while len(rows) < 2 and time.monotonic() < deadline:
        rows = httpx.get(f"{w.url}/api/incidents", headers=bearer("boss"), timeout=5).json()["incidents"]
        time.sleep(0.3)
    assert len(rows) == 2, "the same entity id in two tenants: two incidents"
    by_tenant = {r["correlation"]["tenant"]: r["id"] for r in rows}
    assert set(by_tenant) == {"porto", "gaia"}
    porto, gaia = by_tenant["porto"], by_tenant["gaia"]

    # the list, the incident page and its deliveries
    mine = httpx.get(f"{w.url}/api/incidents", headers=bearer("porto-op"), timeout=5).json()["incidents"]
    assert [r["id"] for r in mine] == [porto]
    assert (
        httpx.get(f"{w.url}/api/incidents/{gaia}", headers=bearer("porto-op"), timeout=5).status_code == 404
    )
    assert (
        httpx.get(f"{w.url}/api/incidents/{porto}", headers=bearer("porto-op"), timeout=5).status_code == 200
    )
    r = httpx.get(f"{w.url}/api/incidents/{gaia}/deliveries", headers=bearer("porto-op"), timeout=5)
    assert r.status_code == 404
    who = httpx.get(f"{w.url}/api/whoami", headers=bearer("porto-op"), timeout=5).json()
    assert who["tenants"] == ["porto"]

    # commands: another tenant's incident is as unknown; their own is accepted
    ack = {"action": "acknowledge", "reason": "seen"}
    r = httpx.post(f"{w.url}/api/incidents/{gaia}/commands", json=ack, headers=bearer("porto-op"), timeout=10)
    assert r.status_code == 404, r.text
    r = httpx.post(
        f"{w.url}/api/incidents/{porto}/commands", json=ack, headers=bearer("porto-op"), timeout=10
    )
    assert r.status_code == 200, r.text
    gaia_row = httpx.get(f"{w.url}/api/incidents/{gaia}", headers=bearer("gaia-op"), timeout=5).json()
    assert gaia_row["incident"]["state"] == "unacknowledged", "porto's operator changed nothing in gaia"

    # the live stream: gil (gaia) gets gaia's changes and never porto's
    seen: list[dict] = []
    ready = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{w.url}/api/stream", headers=bearer("gaia-op"), timeout=30) as resp:
            event = None
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                    ready.set()
                elif line.startswith("data: ") and event == "incident":
                    row = orjson.loads(line[6:])
                    seen.append(row)
                    if len(seen) >= 2:
                        return  # a change after the replay of the last 5 minutes

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert ready.wait(15)
    other = "urn:ngsi-ld:WaterObserved:gauge-2"
    asyncio.run(produce(broker, f"{topic_prefix}.alarms", [alarm("porto", other), alarm("gaia", other)]))
    t.join(30)
    assert seen and {r["correlation"]["tenant"] for r in seen} == {"gaia"}, seen
    # the replay (incidents changed in the last 5 minutes) held porto's acknowledged incident
    # too: only gaia's was sent, and gaia's next change (its second alarm) came live after it
    assert seen[0]["id"] == gaia and seen[0]["alarm_count"] == 1 and seen[1]["alarm_count"] == 2, seen
