"""A console client that sends a warnings command again (its answer was lost on the way, or it was
``202 queued`` and it cannot tell whether the command went through) drafted a second warning for
each retry. With an ``Idempotency-Key`` header a retry is the same command: answered with the same
warning, nothing drafted twice; another key (or another user's same key) is another command. Runs
the real routes in-process over the real workflow (the harness of
``tests/test_warnings_tenancy_hostile.py``)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_warnings_tenancy_hostile import PORTO_SENDER, console, draft, h  # noqa: F401


async def send(c: Any, path: str, who: str, body: dict, key: str | None) -> tuple[int, dict]:
    headers = h(who) | ({"Idempotency-Key": key} if key is not None else {})
    r = await c.client.post(path, json=body, headers=headers)
    return r.status, await r.json(content_type=None)


async def test_a_draft_sent_again_with_its_key_is_drafted_once(console) -> None:  # noqa: F811
    body = {"draft": draft(None, PORTO_SENDER)}
    first = await send(console, "/api/warnings", "ana", body, "7b1e-draft-1")
    again = await send(console, "/api/warnings", "ana", body, "7b1e-draft-1")
    assert first[0] == again[0] == 201 and first[1]["warning"] == again[1]["warning"], (first, again)
    assert len(console.core.state.warnings) == 1
    # another key, or no key: another draft
    other = await send(console, "/api/warnings", "ana", body, "7b1e-draft-2")
    plain = await send(console, "/api/warnings", "ana", body, None)
    assert len({first[1]["warning"], other[1]["warning"], plain[1]["warning"]}) == 3
    # another user's same key is their own command
    root = await send(console, "/api/warnings", "root", body, "7b1e-draft-1")
    assert root[0] == 201 and root[1]["warning"] != first[1]["warning"]
    assert len(console.core.state.warnings) == 4


async def test_a_command_sent_again_with_its_key_is_answered_as_the_first(console) -> None:  # noqa: F811
    code, body = await send(console, "/api/warnings", "ana", {"draft": draft(None, PORTO_SENDER)}, None)
    wid = body["warning"]
    path = f"/api/warnings/{wid}/commands"
    first = await send(console, path, "ana", {"action": "submit"}, "submit-1")
    again = await send(console, path, "ana", {"action": "submit"}, "submit-1")
    assert first[0] == again[0] == 200 and first[1]["command"] == again[1]["command"]
    # without the key, a second submit is a second command, refused (it is submitted already)
    code, body = await send(console, path, "ana", {"action": "submit"}, None)
    assert code == 409, body
    audit = [a.action for a in console.core.state.warnings[wid].audit if a.ok]
    assert audit.count("submit") == 1, audit


@settings(max_examples=30, deadline=None)
@given(st.text(max_size=200))
def test_a_key_is_printable_ascii_of_at_most_128_characters(key: str) -> None:
    from atalaia.console.idempotency import IDEMPOTENCY_KEY

    ok = 1 <= len(key) <= 128 and all(" " <= ch <= "~" for ch in key)
    assert bool(IDEMPOTENCY_KEY.fullmatch(key)) == ok


async def test_a_bad_key_is_a_400_naming_the_header(console) -> None:  # noqa: F811
    for key in ("", "x" * 129, "é"):
        code, body = await send(console, "/api/warnings", "ana", {"draft": draft(None, PORTO_SENDER)}, key)
        assert code == 400 and body["field"] == "Idempotency-Key", (key, body)
    assert not console.core.state.warnings


async def test_a_key_sent_again_with_another_command_is_refused_not_answered_as_the_first(console) -> None:  # noqa: F811
    """A key is for one request: a client that kept one key for the warning had its `issue`
    answered with the `submit`'s 200 ("accepted") and the warning was never issued. Another body
    with a used key is a 422 naming the header (the IETF draft, Stripe); the same body is a retry."""
    code, body = await send(console, "/api/warnings", "ana", {"draft": draft(None, PORTO_SENDER)}, None)
    wid = body["warning"]
    path = f"/api/warnings/{wid}/commands"
    assert (await send(console, path, "ana", {"action": "submit"}, "one-key"))[0] == 200
    assert (await send(console, path, "app", {"action": "approve"}, None))[0] == 200
    code, body = await send(console, path, "ana", {"action": "issue"}, "one-key")
    assert code == 422 and body["field"] == "Idempotency-Key", (code, body)
    assert console.core.state.warnings[wid].state == "approved"
    assert (await send(console, path, "ana", {"action": "submit"}, "one-key"))[0] == 200  # a retry
    code, body = await send(console, path, "ana", {"action": "issue"}, "another-key")
    assert code == 200, body
    assert console.core.state.warnings[wid].state == "issued"


async def test_a_draft_from_an_incident_sent_again_later_is_still_a_retry(console, monkeypatch) -> None:  # noqa: F811
    """The request is compared as the client wrote it, not as the draft the console makes of it:
    a draft from an incident carries the time it was made, so a retry a second later makes another
    draft, and it is still the same command (answered with the same warning), not a 422."""
    from datetime import UTC, datetime, timedelta

    import atalaia.console.warnings_api as api

    now = [datetime(2026, 12, 4, 17, 0, tzinfo=UTC)]

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return now[0]

    monkeypatch.setattr(api, "datetime", Clock)
    path = "/api/incidents/inc-porto/warning-draft"
    first = await send(console, path, "ana", {"draft": {}}, "from-inc-1")
    now[0] += timedelta(seconds=61)
    again = await send(console, path, "ana", {"draft": {}}, "from-inc-1")
    assert first[0] == again[0] == 201 and first[1]["warning"] == again[1]["warning"], (first, again)
    assert len(console.core.state.warnings) == 1


async def test_an_approval_through_the_console_is_of_the_version_the_approver_read(console) -> None:  # noqa: F811
    """The board sends the version it shows with `approve`: a warning its author changed and
    submitted again meanwhile is not approved (409, read it again), and a version that is no
    integer is a 422 naming it. It used to approve whatever the warning had become."""
    code, body = await send(console, "/api/warnings", "ana", {"draft": draft(None, PORTO_SENDER)}, None)
    wid = body["warning"]
    path = f"/api/warnings/{wid}/commands"
    assert (await send(console, path, "ana", {"action": "submit"}, None))[0] == 200
    r = await console.client.get(f"/api/warnings/{wid}", headers=h("app"))
    read = (await r.json())["warning"]["version"]  # what the approver has in front of them
    changed = {"action": "edit", "draft": {"level": "red"}}
    assert (await send(console, path, "ana", changed, None))[0] == 200
    assert (await send(console, path, "ana", {"action": "submit"}, None))[0] == 200
    code, body = await send(console, path, "app", {"action": "approve", "version": read}, None)
    assert code == 409 and f"version {read}" in body["detail"], body
    assert console.core.state.warnings[wid].state == "submitted"
    for bad in ("2", True, -1, 1.5):
        code, body = await send(console, path, "app", {"action": "approve", "version": bad}, None)
        assert code == 422 and body["field"] == "version", (bad, body)
    now = console.core.state.warnings[wid].version
    assert (await send(console, path, "app", {"action": "approve", "version": now}, None))[0] == 200
    assert console.core.state.warnings[wid].state == "approved"


async def test_a_warning_command_s_reason_is_a_few_lines(console) -> None:  # noqa: F811
    """A reason (a rejection's, an edit's) is kept in the warning's audit trail in the stage's
    state: it took up to the 256 KiB body. At most 2 000 characters, 422 naming it."""
    code, body = await send(console, "/api/warnings", "ana", {"draft": draft(None, PORTO_SENDER)}, None)
    path = f"/api/warnings/{body['warning']}/commands"
    code, body = await send(console, path, "app", {"action": "reject", "reason": "x" * 2001}, None)
    assert code == 422 and body["field"] == "reason", body
    assert console.core.state.warnings[body.get("warning") or path.split("/")[3]].state == "draft"
    code, body = await send(console, path, "app", {"action": "reject", "reason": "x" * 2000}, None)
    assert code == 200, body


async def test_the_demo_s_actor_is_a_name(tmp_path) -> None:
    """A console without users trusts the body's actor (the demo): it took up to the 256 KiB body,
    kept among each warning's authors and in its audit trail in the stage's state. At most 128
    characters, as a user name: 422 naming it."""
    from types import SimpleNamespace

    from aiohttp.test_utils import TestClient, TestServer

    from atalaia.console.auth import Identity
    from tests.test_warnings_tenancy_hostile import Console

    c = Console(tmp_path)
    # no users file: the demo (as console/api.py's identify: anyone is an anonymous operator)
    c.auth = SimpleNamespace(enabled=False, identify=lambda _: Identity("operator", "operator"))
    async with TestClient(TestServer(c.app())) as client:
        body = {"draft": draft(None, PORTO_SENDER), "actor": "a" * 129, "role": "operator"}
        r = await client.post("/api/warnings", json=body)
        problem = await r.json(content_type=None)
        assert r.status == 422 and problem["field"] == "actor", problem
        assert c.core.state.warnings == {}
        r = await client.post("/api/warnings", json={**body, "actor": "a" * 128})
        assert r.status == 201, await r.text()
