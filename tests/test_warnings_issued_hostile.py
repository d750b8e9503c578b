"""The issued document (``GET /api/warnings/<id>/issued``) and the Update/Cancel preview (``POST
/api/warnings/preview`` with ``warning`` and ``action``) against hostile callers and bodies: no
token, a viewer, another tenant's user, unknown or unissued warnings, and arbitrary JSON. Each is
answered 4xx problem+json (or 200 for who may see it), never a 5xx, and another tenant's warning
is answered as if unknown."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_warnings_tenancy_hostile import (  # noqa: F401  (fixture)
    PORTO_SENDER,
    console,
    draft,
    h,
    issue_via_api,
    post,
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
    max_leaves=12,
)


async def test_the_issued_document_and_its_update_preview_are_the_tenants_own(console) -> None:  # noqa: F811
    c = console
    wid = await issue_via_api(c, draft("porto", PORTO_SENDER), "ana", "app")
    path = f"/api/warnings/{wid}/issued"
    r = await c.client.get(path)
    assert r.status == 401, await r.text()
    r = await c.client.get(path, headers=h("gop"))  # another tenant's operator: as if unknown
    assert r.status == 404 and r.headers["Content-Type"].startswith("application/problem+json")
    r = await c.client.get(path, headers=h("ana"))
    body = await r.json()
    assert r.status == 200 and body["identifier"] == c.core.state.warnings[wid].identifier, body
    r = await c.client.get("/api/warnings/W-nothing/issued", headers=h("root"))
    assert r.status == 404
    for action in ("update", "cancel"):
        code, body = await post(
            c, "/api/warnings/preview", "gop", {"warning": wid, "action": action, "draft": {}}
        )
        assert code == 404 and c.core.state.warnings[wid].identifier not in orjson.dumps(body).decode(), body
        code, body = await post(
            c, "/api/warnings/preview", "ana", {"warning": wid, "action": action, "draft": {}}
        )
        assert code == 200 and body["msgType"] == action.capitalize(), body
    # a draft never issued: no document, no Update of it
    code, body = await post(c, "/api/warnings", "ana", {"draft": draft("porto", PORTO_SENDER)})
    fresh = body["warning"]
    r = await c.client.get(f"/api/warnings/{fresh}/issued", headers=h("ana"))
    assert r.status == 404
    code, body = await post(
        c, "/api/warnings/preview", "ana", {"warning": fresh, "action": "update", "draft": {}}
    )
    assert code == 409, body


async def test_hostile_preview_and_command_bodies_are_answered_4xx_never_5xx(console) -> None:  # noqa: F811
    c = console
    wid = await issue_via_api(c, draft("porto", PORTO_SENDER), "ana", "app")
    seen: list[int] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        body=st.fixed_dictionaries(
            {},
            optional={
                "warning": st.sampled_from([wid, "W-x", ""]) | JSON,
                "action": st.sampled_from(["update", "cancel", "submit", "issue", "approve"]) | JSON,
                "draft": JSON
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "headline",
                            "instruction",
                            "expires",
                            "msgType",
                            "references",
                            "tenant",
                            "event",
                            "area",
                            "status",
                        ]
                    ),
                    JSON,
                    max_size=4,
                ),
            },
        )
        | JSON,
        who=st.sampled_from(["ana", "gop", "root"]),
        where=st.sampled_from(["/api/warnings/preview", f"/api/warnings/{wid}/commands"]),
    )
    def one(body: Any, who: str, where: str) -> None:
        seen.append((body, who, where))

    one()
    for body, who, where in seen:
        r = await c.client.post(
            where, data=json.dumps(body), headers={**h(who), "Content-Type": "application/json"}
        )
        text = await r.text()
        assert r.status < 500, (body, who, where, r.status, text)
        if r.status >= 400:
            assert r.headers["Content-Type"].startswith("application/problem+json"), (body, text)
    assert c.core.state.warnings[wid].state in ("issued", "updated", "cancelled")


async def test_a_scoped_users_draft_whose_tenant_is_not_a_name_is_refused_not_a_crash(console) -> None:  # noqa: F811
    """A tenant-scoped user's draft with a ``tenant`` that is a list or an object was answered
    500 (the check of their tenants could not look it up): now 422 problem+json naming the field,
    on drafting, editing and previewing alike, and nothing is drafted."""
    c = console
    for tenant in (["porto"], {"porto": 1}, [[]]):
        data = {**draft(None, PORTO_SENDER), "tenant": tenant}
        for path in ("/api/warnings", "/api/warnings/preview", "/api/incidents/inc-porto/warning-draft"):
            r = await c.client.post(path, json={"draft": data}, headers=h("ana"))
            body = await r.json(content_type=None)
            assert r.status == 422 and body["field"] == "draft.tenant", (path, tenant, r.status, body)
            assert r.headers["Content-Type"].startswith("application/problem+json")
    assert not c.core.state.warnings, "nothing was drafted"
    code, made = await post(c, "/api/warnings", "ana", {"draft": draft("porto", PORTO_SENDER)})
    assert code == 201, made
    for tenant in (["porto"], {"porto": 1}, [[]]):  # an edit that would move it to such a "tenant"
        change = {"action": "edit", "draft": {"tenant": tenant}}
        code, body = await post(c, f"/api/warnings/{made['warning']}/commands", "ana", change)
        assert code == 422 and body["field"] == "draft.tenant", (tenant, code, body)
