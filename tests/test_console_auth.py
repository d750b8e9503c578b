"""Console authentication: with a users file, the actor and role of a command come from its
token, never from the body, and a command without a valid token is refused with 401."""

from __future__ import annotations

import asyncio
import hashlib
import time

import httpx
import orjson
import pytest

from atalaia.console.auth import Authenticator, User
from tests.test_incidents_live import produce


def user(actor: str, role: str, token: str) -> User:
    return User(actor=actor, role=role, token_sha256=hashlib.sha256(token.encode()).hexdigest())


def test_tokens_identify_users_by_hash_only():
    auth = Authenticator([user("ana", "operator", "s3cret"), user("rui", "supervisor", "b0ss")])
    assert auth.identify("Bearer s3cret").actor == "ana"
    assert auth.identify("bearer b0ss").role == "supervisor"
    assert auth.identify("Bearer nope") is None
    assert auth.identify("Basic s3cret") is None and auth.identify(None) is None
    assert not Authenticator(None).enabled


@pytest.mark.broker
def test_commands_need_a_token_and_cannot_claim_a_role(make_worker, broker, topic_prefix, tmp_path):
    users = tmp_path / "users.yaml"
    users.write_text(
        f"users:\n  - {{actor: ana, role: viewer, token_sha256: {hashlib.sha256(b'v13w').hexdigest()}}}\n"
        f"  - {{actor: rui, role: operator, token_sha256: {hashlib.sha256(b'0p').hexdigest()}}}\n"
    )
    w = make_worker(
        "--stages", "incidents,projection", extra_env={"ATALAIA_CONSOLE_USERS": str(users)}
    ).start(("incidents", "projection"))
    alarm = {
        "id": "a1",
        "at": "2026-01-28T10:00:00Z",
        "rule": "river-level-high",
        "group": "hydro",
        "key": "urn:ngsi-ld:WaterObserved:x",
        "state": "firing",
        "severity": "high",
        "value": 4.8,
        "entity": "urn:ngsi-ld:WaterObserved:x",
        "type": "WaterObserved",
        "labels": {"parish": "Bonfim"},
        "annotations": {},
        "location": None,
        "since": "2026-01-28T10:00:00Z",
    }
    asyncio.run(produce(broker, f"{topic_prefix}.alarms", [alarm]))
    assert httpx.get(f"{w.url}/api/incidents", timeout=5).status_code == 401, "reading needs a token too"
    deadline = time.monotonic() + 30
    incidents = []
    while not incidents and time.monotonic() < deadline:
        incidents = httpx.get(
            f"{w.url}/api/incidents", headers={"Authorization": "Bearer v13w"}, timeout=5
        ).json()["incidents"]
        time.sleep(0.3)
    assert incidents, "the alarm opened an incident"
    url = f"{w.url}/api/incidents/{incidents[0]['id']}/commands"
    ack = {"action": "acknowledge", "actor": "boss", "role": "supervisor", "reason": "seen"}

    r = httpx.post(url, json=ack, timeout=10)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = httpx.post(url, json=ack, headers={"Authorization": "Bearer v13w"}, timeout=10)
    assert r.status_code == 409, "a viewer may not acknowledge, whatever the body claims"
    r = httpx.post(url, json=ack, headers={"Authorization": "Bearer 0p"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["reply"]["actor"] == "rui", "the actor is the token's, not the body's"
    assert httpx.get(f"{w.url}/api/whoami", headers={"Authorization": "Bearer 0p"}, timeout=5).json() == {
        "authentication": "token",
        "actor": "rui",
        "role": "operator",
        "tenants": None,
    }
    assert orjson.loads(orjson.dumps(r.json()))["status"] == "accepted"
