"""The console API against hostile or careless clients, over real HTTP to the console's own web
server (in this process, no broker: every answer here comes before anything is sent to Kafka).

* a body nested hundreds of levels deep is refused 400 problem+json (it was a 500 with aiohttp's
  text/plain), on incident commands (any signed-in user, a viewer too) and silences;
* the answer to a sign-in, which carries a token, is never cached;
* expiring a silence asks who is asking first: 401 without a token, whatever the silence;
* one user signing in again and again ends only their own sessions;
* live streams are capped per user as well as per client, an IPv6 client being its /64.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from atalaia.console.auth import hash_password
from atalaia.console.problem import PROBLEM

HOST = {"Host": "localhost"}
VIEWER = {**HOST, "Authorization": "Bearer v13w"}
SUPERVISOR = {**HOST, "Authorization": "Bearer s3pr"}
DEEP = b'{"action":"comment","x":' + b"[" * 300 + b"]" * 300 + b"}"


def _sha(token: bytes) -> str:
    return hashlib.sha256(token).hexdigest()


@pytest.fixture(scope="module")
def ana_hash() -> str:
    return hash_password("correct horse")


@contextlib.asynccontextmanager
async def _console(tmp_path: Path, ana_hash: str) -> AsyncIterator[TestClient]:
    """The console of a worker with users ana (password "correct horse", operator), vic and ines
    (the same password, viewers), eva (token v13w, viewer) and rui (token s3pr, supervisor), and
    one maintenance window in incidents.yaml."""
    from atalaia.streams.app import create_app
    from atalaia.streams.settings import Settings

    users = tmp_path / "users.yaml"
    users.write_text(
        "users:\n"
        f'  - {{actor: ana, role: operator, password_argon2: "{ana_hash}"}}\n'
        f'  - {{actor: vic, role: viewer, password_argon2: "{ana_hash}"}}\n'
        f'  - {{actor: ines, role: viewer, password_argon2: "{ana_hash}"}}\n'
        f"  - {{actor: eva, role: viewer, token_sha256: {_sha(b'v13w')}}}\n"
        f"  - {{actor: rui, role: supervisor, token_sha256: {_sha(b's3pr')}}}\n"
    )
    incidents = tmp_path / "incidents.yaml"
    incidents.write_text(
        "maintenance:\n  - {name: gauge-swap, matchers: ['entity=\"x\"'], start: 2026-01-01T00:00:00Z,"
        " end: 2099-01-01T00:00:00Z, reason: swap}\n"
    )
    settings = Settings(
        data_dir=tmp_path / "data", console_url=None, console_users=users, incidents_path=incidents
    )
    app = create_app(settings, "127.0.0.1:9", stages=(), http="console")
    async with TestClient(TestServer(app.web.web_app)) as client:
        yield client


@pytest.fixture
async def console(tmp_path: Path, ana_hash: str) -> AsyncIterator[TestClient]:
    async with _console(tmp_path, ana_hash) as client:
        yield client


async def _problem(r, status: int) -> dict:
    assert r.status == status, (r.status, r.headers)  # (not its body: it may be a stream)
    assert r.headers["Content-Type"].startswith(PROBLEM), r.headers
    body = await r.json(content_type=None)
    assert body["status"] == status
    return body


async def test_a_body_nested_hundreds_deep_is_a_400_problem_not_a_500(console) -> None:
    json = {"Content-Type": "application/json"}
    r = await console.post("/api/incidents/i-1/commands", data=DEEP, headers={**VIEWER, **json})
    body = await _problem(r, 400)
    assert body["title"] == "Bad command" and "deep" in body["detail"]
    r = await console.post("/api/silences", data=DEEP, headers={**SUPERVISOR, **json})
    body = await _problem(r, 400)
    assert body["title"] == "Bad silence" and "deep" in body["detail"]
    # a silence nested deep inside its matchers, not only beside them
    deep_matchers = b'{"matchers":' + b"[" * 300 + b'"a=\\"b\\""' + b"]" * 300 + b',"comment":"c"}'
    r = await console.post("/api/silences", data=deep_matchers, headers={**SUPERVISOR, **json})
    await _problem(r, 400)
    r = await console.get("/api/whoami", headers=VIEWER)
    assert r.status == 200, "the console still answers"


async def test_a_sign_in_answer_carrying_a_token_is_never_cached(console) -> None:
    """The session token came back without Cache-Control: a shared or browser cache could keep
    it (and hand it to the next user of a kiosk). It is ``no-store`` (and ``Pragma: no-cache``
    for HTTP/1.0 caches), and the token still works."""
    r = await console.post("/api/login", json={"username": "ana", "password": "correct horse"}, headers=HOST)
    assert r.status == 200, await r.text()
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Pragma"] == "no-cache", r.headers
    token = (await r.json())["token"]
    who = await console.get("/api/whoami", headers={**HOST, "Authorization": f"Bearer {token}"})
    assert who.status == 200 and (await who.json())["actor"] == "ana"


async def test_expiring_a_silence_without_a_token_is_401_whatever_the_silence(console) -> None:
    """DELETE of a maintenance window of incidents.yaml answered 409 without a token (and named
    it), an unknown id 401: who is asking is now checked first, for every id; a signed-in user
    is still told a maintenance window is edited in the file."""
    from atalaia.incidents.silences import config_silence_id

    maintenance = config_silence_id("gauge-swap")
    for silence in (maintenance, "s-unknown"):
        for headers in (HOST, {**HOST, "Authorization": "Bearer wrong"}):
            r = await console.delete(f"/api/silences/{silence}", headers=headers)
            body = await _problem(r, 401)
            assert silence not in body["detail"] and r.headers["WWW-Authenticate"] == "Bearer"
    r = await console.delete(f"/api/silences/{maintenance}", headers=SUPERVISOR)
    assert "incidents.yaml" in (await _problem(r, 409))["detail"]


async def test_a_viewer_signing_in_in_a_loop_never_signs_the_operator_out(tmp_path, ana_hash, monkeypatch):
    """A viewer's sign-ins end only the viewer's own oldest sessions; with every place taken, a
    user who holds none is refused 503 problem+json with Retry-After (nobody is signed out to
    make room), and one who holds some ends their own oldest. Here with room for 3 sessions, 2
    per user."""
    from atalaia.console import auth

    monkeypatch.setattr(auth, "MAX_SESSIONS", 3)
    monkeypatch.setattr(auth, "SESSIONS_PER_USER", 2)

    async with _console(tmp_path, ana_hash) as console:

        async def sign_in(user: str) -> tuple[int, dict[str, str]]:
            r = await console.post(
                "/api/login", json={"username": user, "password": "correct horse"}, headers=HOST
            )
            body = await r.json(content_type=None)
            return r.status, {**HOST, "Authorization": f"Bearer {body.get('token')}"}

        async def actor(headers: dict[str, str]) -> str | None:
            r = await console.get("/api/whoami", headers=headers)
            return (await r.json(content_type=None))["actor"] if r.status == 200 else None

        status, ana = await sign_in("ana")
        assert status == 200
        vic = [await sign_in("vic") for _ in range(6)]
        assert [s for s, _ in vic] == [200] * 6
        assert await actor(ana) == "ana", "the operator is still signed in"
        assert [await actor(h) for _, h in vic] == [None] * 4 + ["vic"] * 2, "vic's own oldest ended"

        r = await console.post(
            "/api/login", json={"username": "ines", "password": "correct horse"}, headers=HOST
        )
        body = await _problem(r, 503)
        assert int(r.headers["Retry-After"]) >= 1 and body["retry_after"] >= 1
        assert await actor(ana) == "ana" and [await actor(h) for _, h in vic[-2:]] == ["vic"] * 2

        status, again = await sign_in("ana")  # full: ana's own oldest ends, nobody else's
        assert status == 200 and await actor(again) == "ana" and await actor(ana) is None
        assert [await actor(h) for _, h in vic[-2:]] == ["vic"] * 2


async def _open(console, headers: dict[str, str], client: str):
    """A live stream (/api/stream) opened as ``client`` (the address the front or a local proxy
    names in X-Forwarded-For); the answer once its headers are in, the stream left open."""
    r = await console.get("/api/stream", headers={**headers, "X-Forwarded-For": client})
    if r.status == 200:
        assert r.headers["Content-Type"] == "text/event-stream"
        assert (await r.content.readline()).startswith(b"retry:")
    return r


async def test_one_token_holds_a_few_live_streams_not_all_of_them(console) -> None:
    """Live streams were capped per address (16) and in all (500), nothing per user: one viewer
    token from many addresses held all 500 and every operator's board got 503. A user now holds
    STREAMS_PER_USER at most, whatever the address; another user still gets theirs."""
    from atalaia.console.api import STREAMS_PER_USER

    held = [await _open(console, VIEWER, f"198.51.100.{i + 1}") for i in range(STREAMS_PER_USER)]
    assert [r.status for r in held] == [200] * STREAMS_PER_USER
    over = await _open(console, VIEWER, "203.0.113.50")  # a fresh address: still the same user
    body = await _problem(over, 429)
    assert body["detail"] == f"at most {STREAMS_PER_USER} open boards per user"
    other = await _open(console, SUPERVISOR, "203.0.113.50")
    assert other.status == 200, "another user's board still gets its stream"
    r = await console.get("/api/incidents", headers=VIEWER)
    assert r.status != 429, "only streams are capped"
    for r in [*held, other]:
        r.close()


async def test_an_ipv6_client_is_its_whole_64_for_live_streams(console) -> None:
    """The per-client cap took the raw address: an IPv6 client rotating through its /64 (2**64
    addresses) was a new client each time. Streams from one /64 now count together, as the
    front's request limits do; another /64 and an IPv4 client are others."""
    from atalaia.console.api import STREAMS_PER_CLIENT, STREAMS_PER_USER

    r = await console.post("/api/login", json={"username": "ana", "password": "correct horse"}, headers=HOST)
    status, token = r.status, (await r.json())["token"]
    assert status == 200
    ana = {**HOST, "Authorization": f"Bearer {token}"}
    users = [VIEWER, SUPERVISOR, ana]
    held = []
    for i in range(STREAMS_PER_CLIENT):  # each from its own address of one /64, spread over users
        who = users[i // STREAMS_PER_USER]
        held.append(await _open(console, who, f"2001:db8:0:1::{i + 1:x}"))
    assert [r.status for r in held] == [200] * STREAMS_PER_CLIENT
    over = await _open(console, ana, "2001:db8:0:1:ffff:ffff:ffff:fffe")
    body = await _problem(over, 429)
    assert body["detail"] == f"at most {STREAMS_PER_CLIENT} open boards per client"
    for elsewhere in ("2001:db8:0:2::1", "198.51.100.77"):
        r = await _open(console, ana, elsewhere)
        assert r.status == 200, elsewhere
        held.append(r)
    for r in held:
        r.close()


@given(a=st.ip_addresses(v=6), b=st.ip_addresses(v=6))
def test_client_groups_are_ipv6_64s_and_ipv4_addresses(a, b) -> None:
    from atalaia.console.problem import client_group

    same64 = int(a) >> 64 == int(b) >> 64
    if a.ipv4_mapped is None and b.ipv4_mapped is None:
        assert (client_group(str(a)) == client_group(str(b))) == same64
    if a.ipv4_mapped is not None:
        assert client_group(str(a)) == str(a.ipv4_mapped), "an IPv4 client written as IPv6"


async def test_a_command_the_console_cannot_read_says_why_without_pydantic_s_prefix(console) -> None:
    """A bad `duration` answered "duration: Value error, bad duration 'soon': ..." (pydantic's
    wording); the silences API already said it without the prefix, as every loader does."""
    r = await console.post(
        "/api/incidents/i-1/commands",
        json={"action": "shelve", "duration": "soon", "reason": "crew on site"},
        headers=SUPERVISOR,
    )
    body = await _problem(r, 422)
    assert body["errors"][0]["field"] == "duration", body
    assert body["errors"][0]["message"].startswith("bad duration 'soon'"), body
    assert "Value error" not in body["detail"], body


async def test_a_comment_or_an_assignee_is_a_few_lines_not_the_whole_body(console) -> None:
    """A command's ``reason`` (a comment, a shelve's reason) and ``assignee`` took anything up to
    the 64 KiB body: one operator posting 500 comments of 60 KB grew the incident manager's
    checkpoint from 1.8 MB to 23 MB (the 50 latest audit entries of each open incident are kept
    in its state, and written every few seconds), pushed 60 KB rows to every live board and
    slowed every other command. A reason has at most 2 000 characters (as a silence's comment),
    an assignee at most 128 (a user name): 422 naming the field, before anything is sent."""
    json = {"Content-Type": "application/json"}
    for body, field in (
        ({"action": "comment", "reason": "z" * 2001}, "reason"),
        ({"action": "shelve", "duration": "30m", "reason": "é" * 2001}, "reason"),
        ({"action": "assign", "assignee": "y" * 129}, "assignee"),
    ):
        r = await console.post("/api/incidents/i-1/commands", json=body, headers={**SUPERVISOR, **json})
        problem = await _problem(r, 422)
        assert problem["errors"][0]["field"] == field and "at most" in problem["detail"], problem
    # who is asking still comes first
    r = await console.post(
        "/api/incidents/i-1/commands", json={"action": "comment", "reason": "z" * 3000}, headers=HOST
    )
    await _problem(r, 401)


async def test_a_command_id_or_the_demo_s_actor_is_a_name_not_the_whole_body(tmp_path: Path, console) -> None:
    """The same for what else of a command the incident manager keeps: an ``id`` the client chose
    (the manager remembers its last 10 000 command ids, in its state: 60 KB ids made that 600 MB)
    and, on a console without users (the demo trusts the body), the ``actor`` (in every audit
    entry). An id has at most 128 characters, as an ``Idempotency-Key``; the demo's actor 128,
    as a user name; a silence's id too. 422 naming the field, before anything is sent."""
    from atalaia.streams.app import create_app
    from atalaia.streams.settings import Settings

    json = {"Content-Type": "application/json"}
    comment = {"action": "comment", "reason": "crew on site"}
    r = await console.post(
        "/api/incidents/i-1/commands", json={**comment, "id": "k" * 129}, headers={**SUPERVISOR, **json}
    )
    problem = await _problem(r, 422)
    assert problem["errors"][0]["field"] == "id" and "at most 128" in problem["detail"], problem
    silence = {"action": "silence", "matchers": ['entity="x"'], "duration": "1h", "comment": "swap"}
    r = await console.post("/api/silences", json={**silence, "id": "k" * 129}, headers={**SUPERVISOR, **json})
    problem = await _problem(r, 422)
    assert problem["errors"][0]["field"] == "id", problem
    # 128 is an id (the command goes on: no incident manager answers here)
    r = await console.post(
        "/api/incidents/i-1/commands", json={**comment, "id": "k" * 128}, headers={**SUPERVISOR, **json}
    )
    assert r.status != 422, await r.text()

    settings = Settings(data_dir=tmp_path / "demo", console_url=None)
    app = create_app(settings, "127.0.0.1:9", stages=(), http="console")
    async with TestClient(TestServer(app.web.web_app)) as demo:
        as_sent = {**comment, "actor": "a" * 129, "role": "operator"}
        r = await demo.post("/api/incidents/i-1/commands", json=as_sent, headers={**HOST, **json})
        problem = await _problem(r, 422)
        assert problem["errors"][0]["field"] == "actor", problem
