"""An operator's client that sends an incident command again (its answer was lost on the way, or it
was ``202 queued`` and it cannot tell whether the command went through) had no ``Idempotency-Key``
on ``POST /api/incidents/{id}/commands``, while the warnings commands had one: the header was
ignored, and a retried comment or assignment was applied twice. Now the same key from the same user
to the same path is the same command, answered as the first and applied once (the code of the
warnings commands, ``console/idempotency.py``); another key, user or incident is another command; a
malformed key is a 400 problem+json naming the header, before anything is sent.

Over real HTTP to a worker's console, with the incident manager on the embedded broker (the harness
of ``tests/test_console_auth.py``), and in process for the refusals that come before Kafka."""

from __future__ import annotations

import asyncio
import hashlib
import time

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from atalaia.console.problem import PROBLEM
from tests.test_incidents_live import produce

TOKENS = {"rui": ("operator", "0p-rui"), "ana": ("operator", "0p-ana")}


def _alarm(key: str, parish: str) -> dict:
    return {
        "id": f"a-{key}",
        "at": "2026-01-28T10:00:00Z",
        "rule": "river-level-high",
        "group": "hydro",
        "key": f"urn:ngsi-ld:WaterObserved:{key}",
        "state": "firing",
        "severity": "high",
        "value": 4.8,
        "entity": f"urn:ngsi-ld:WaterObserved:{key}",
        "type": "WaterObserved",
        "labels": {"parish": parish},
        "annotations": {},
        "location": None,
        "since": "2026-01-28T10:00:00Z",
    }


def _users(tmp_path) -> str:
    users = tmp_path / "users.yaml"
    users.write_text(
        "users:\n"
        + "".join(
            f"  - {{actor: {a}, role: {r}, token_sha256: {hashlib.sha256(t.encode()).hexdigest()}}}\n"
            for a, (r, t) in TOKENS.items()
        )
    )
    return str(users)


def _headers(who: str, key: str | bytes | None) -> dict:
    return {"Authorization": f"Bearer {TOKENS[who][1]}"} | (
        {"Idempotency-Key": key} if key is not None else {}
    )


@pytest.mark.broker
def test_an_incident_command_sent_again_with_its_key_is_answered_as_the_first_and_applied_once(
    make_worker, broker, topic_prefix, tmp_path
) -> None:
    w = make_worker(
        "--stages", "incidents,projection", extra_env={"ATALAIA_CONSOLE_USERS": _users(tmp_path)}
    ).start(("incidents", "projection"))
    asyncio.run(produce(broker, f"{topic_prefix}.alarms", [_alarm("x", "Bonfim"), _alarm("y", "Paranhos")]))
    deadline = time.monotonic() + 30
    incidents: list = []
    while len(incidents) < 2 and time.monotonic() < deadline:
        incidents = httpx.get(f"{w.url}/api/incidents", headers=_headers("rui", None), timeout=5).json()[
            "incidents"
        ]
        time.sleep(0.3)
    assert len(incidents) == 2, incidents
    first_id, other_id = (i["id"] for i in incidents)

    def post(who: str, key: str | bytes | None, body: dict, incident: str = first_id) -> httpx.Response:
        return httpx.post(
            f"{w.url}/api/incidents/{incident}/commands", json=body, headers=_headers(who, key), timeout=10
        )

    comment = {"action": "comment", "reason": "crew on site"}
    first = post("rui", "retry-7f3a", comment)
    assert first.status_code == 200, first.text
    again = post("rui", "retry-7f3a", {**comment, "id": "my-own-id"})
    assert again.status_code == 200, again.text
    assert again.json() == first.json(), "the first answer: the same command, the same incident version"
    # the retry was not applied: the next comment makes the very next version
    version = first.json()["reply"]["version"]
    nxt = post("rui", "retry-8b2c", comment)
    assert nxt.status_code == 200 and nxt.json()["reply"]["version"] == version + 1, nxt.text
    assert nxt.json()["command"] != first.json()["command"]
    # another user's same key is their own command; so is the same key on another incident
    theirs = post("ana", "retry-7f3a", comment)
    assert theirs.status_code == 200 and theirs.json()["command"] != first.json()["command"]
    assert theirs.json()["reply"]["version"] == version + 2 and theirs.json()["reply"]["actor"] == "ana"
    elsewhere = post("rui", "retry-7f3a", comment, other_id)
    assert elsewhere.status_code == 200 and elsewhere.json()["command"] != first.json()["command"]
    # a refusal is the first answer too: acknowledge, then the same key again (without the key, a
    # second acknowledge is a second command, refused: there is nothing left to acknowledge)
    ack = post("rui", "ack-1", {"action": "acknowledge"})
    assert ack.status_code == 200, ack.text
    assert post("rui", "ack-1", {"action": "acknowledge"}).json() == ack.json()
    refused = post("rui", None, {"action": "acknowledge"})
    assert refused.status_code == 409 and "nothing to acknowledge" in refused.json()["detail"], refused.text
    # a malformed key: 400 problem+json naming the header, and nothing applied
    for bad in ("", "x" * 129, "chave-é".encode(), "tab\there"):
        r = post("rui", bad, comment)
        assert r.status_code == 400 and r.headers["content-type"].startswith(PROBLEM), (bad, r.text)
        assert r.json()["field"] == "Idempotency-Key", r.json()
    last = post("rui", "retry-9d4e", comment)
    assert last.status_code == 200 and last.json()["reply"]["version"] == version + 4, last.text


async def test_a_malformed_key_is_refused_before_anything_is_sent(tmp_path) -> None:
    """No broker here: a command that reached Kafka would be a 503; the key is refused first."""
    from atalaia.streams.app import create_app
    from atalaia.streams.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", console_url=None, console_users=_users(tmp_path))
    app = create_app(settings, "127.0.0.1:9", stages=(), http="console")
    async with TestClient(TestServer(app.web.web_app)) as client:
        for path in ("/api/incidents/i-1/commands", "/api/warnings"):
            r = await client.post(
                path,
                json={"action": "comment", "reason": "x", "draft": {}},
                headers={"Host": "localhost", **_headers("rui", "x" * 129)},
            )
            body = await r.json(content_type=None)
            if path == "/api/warnings":  # (no warnings stage in this process: 503 before the key)
                assert r.status == 503, body
                continue
            assert r.status == 400 and body["field"] == "Idempotency-Key", body
            assert "1 to 128 printable ASCII" in body["detail"], body


def test_the_openapi_document_offers_the_key_on_every_command_route() -> None:
    from atalaia.console.openapi import document

    paths = document()["paths"]
    for path in (
        "/api/incidents/{incident}/commands",
        "/api/warnings",
        "/api/warnings/{warning}/commands",
        "/api/incidents/{incident}/warning-draft",
    ):
        post = paths[path]["post"]
        assert "Idempotency-Key" in [p["name"] for p in post["parameters"]], path
        assert "Idempotency-Key" in post["responses"]["400"]["description"], path


def test_docstring_examples() -> None:
    import doctest

    import atalaia.console.idempotency as module

    assert doctest.testmod(module).failed == 0


async def test_a_key_sent_again_with_another_command_is_refused_not_answered_as_the_first(tmp_path) -> None:
    """A key is for one request (the IETF draft and Stripe: another body with a used key is an
    error). It was the same command id whatever the body, so a client that kept one key for its
    session had its `close` answered with the `acknowledge`'s 200 and never applied (and a
    warning's `issue` sent with its `approve`'s key was "accepted" and never issued). No broker
    here: a command that reaches Kafka is a 503; one refused for its key is a 422 before that."""
    from atalaia.streams.app import create_app
    from atalaia.streams.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", console_url=None, console_users=_users(tmp_path))
    app = create_app(settings, "127.0.0.1:9", stages=(), http="console")
    path = "/api/incidents/i-1/commands"

    async with TestClient(TestServer(app.web.web_app)) as client:

        async def post(who: str, key: str, body: dict, where: str = path) -> tuple[int, dict]:
            r = await client.post(where, json=body, headers={"Host": "localhost", **_headers(who, key)})
            return r.status, await r.json(content_type=None)

        ack = {"action": "acknowledge"}
        status, _ = await post("rui", "k-1", ack)
        assert status == 503  # sent (to no broker)
        status, body = await post("rui", "k-1", {"action": "close", "reason": "done"})
        assert status == 422 and body["field"] == "Idempotency-Key", (status, body)
        assert "another request" in body["detail"], body
        # the same request again is a retry, whatever the client's own id or key order; another
        # user, path or key is another command
        for who, key, body_, where in (
            ("rui", "k-1", {"id": "mine", **ack}, path),
            ("ana", "k-1", {"action": "close", "reason": "done"}, path),
            ("rui", "k-1", {"action": "close", "reason": "done"}, "/api/incidents/i-2/commands"),
            ("rui", "k-2", {"action": "close", "reason": "done"}, path),
        ):
            status, body = await post(who, key, body_, where)
            assert status == 503, (who, key, body_, where, status, body)
        # a command refused before it is sent (422: it cannot be read) does not take its key
        status, _ = await post("rui", "k-3", {"action": "shelve", "duration": "soon", "reason": "x"})
        assert status == 422
        status, _ = await post("rui", "k-3", {"action": "shelve", "duration": "30m", "reason": "x"})
        assert status == 503
