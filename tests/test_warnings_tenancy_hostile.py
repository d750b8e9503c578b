"""Warnings and tenant-scoped console users (found by attacking the product): a porto-only
operator could draft into gaia's queue through ``POST /api/incidents/<id>/warning-draft``, publish
a CAP Cancel of gaia's issued warning with gaia's sender (references were resolved across
tenants and the sender was free), and read gaia's drafts linked to a porto incident through
``GET /api/incidents/<id>/warnings``. Now a warning references only its own tenant's warnings, an
Update or Cancel keeps the sender of the warning it references, a scoped user neither drafts for
another tenant, links another tenant's incident, nor sends with another tenant's sender, and
every read is filtered by the user's tenants.

The console part runs the real routes of ``console/warnings_api.py`` in-process, over the real
workflow (no broker): the command the API publishes is stepped at once and its reply returned."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import faust.web  # noqa: F401  (faust.web.View, as the console imports it)
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from atalaia.console.auth import Authenticator, User
from atalaia.console.problem import PROBLEM, problem
from atalaia.warnings.core import Workflow
from atalaia.warnings.records import WarningReply, warning_command_from_dict

NOW = datetime.now(UTC).replace(microsecond=0)
GAIA_SENDER = "protecao.civil@cm-gaia.pt"
PORTO_SENDER = "protecao.civil@cm-porto.pt"


def draft(tenant: str | None, sender: str, **kw: Any) -> dict[str, Any]:
    d = {
        "sender": sender,
        "level": "orange",
        "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
        "headline": {"pt-PT": "Cheia", "en-GB": "Flood"},
        "instruction": {"pt-PT": "Afaste-se do rio.", "en-GB": "Keep away from the river."},
        "expires": (NOW + timedelta(days=1)).isoformat(),
        "area": {"geocodes": {"DICOFRE": ["131203"]}},
        **kw,
    }
    if tenant is not None:
        d["tenant"] = tenant
    return d


def cancel_of(identifier: str, tenant: str | None, sender: str, **kw: Any) -> dict[str, Any]:
    return {
        "sender": sender,
        "msgType": "Cancel",
        "references": [identifier],
        "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
        "headline": {"pt-PT": "Aviso cancelado", "en-GB": "Warning cancelled"},
        "area": {"geocodes": {"DICOFRE": ["131203"]}},
        **({"tenant": tenant} if tenant else {}),
        **kw,
    }


def step(wf: Workflow, st, actor: str, role: str, action: str, **kw: Any):
    st, out = wf.step(st, {"action": action, "actor": actor, "role": role, **kw}, NOW)
    return st, out[-1]


def issued(wf: Workflow, st, data: dict[str, Any]):
    """A warning drafted, approved and issued: (state, warning id, CAP identifier)."""
    st, r = step(wf, st, "gop", "operator", "draft", draft=data)
    assert r.ok, r.error
    wid = r.warning
    st, _ = step(wf, st, "gop", "operator", "submit", warning=wid)
    st, _ = step(wf, st, "gapp", "approver", "approve", warning=wid)
    st, r = step(wf, st, "gop", "operator", "issue", warning=wid)
    assert r.ok, r.error
    return st, wid, st.warnings[wid].identifier


# ---------------------------------------------------------------- the workflow (pure)


def test_a_warning_may_not_reference_another_tenants_warning() -> None:
    wf = Workflow()
    st, gaia_wid, gid = issued(wf, wf.initial_state(), draft("gaia", GAIA_SENDER))
    sent = st.warnings[gaia_wid].sent
    for ref in (gid, f"{GAIA_SENDER},{gid},{sent}"):  # bare, or the full triple (not resolved)
        for sender in (GAIA_SENDER, PORTO_SENDER):
            st, r = step(
                wf, st, "ana", "operator", "draft", draft=cancel_of(ref, "porto", sender, references=[ref])
            )
            assert not r.ok and "another tenant" in r.error and r.error.startswith("bad draft"), r.error
    # a draft made before the check (an older state): refused on issue, the original stays issued
    st, r = step(
        wf,
        st,
        "ana",
        "operator",
        "draft",
        draft=cancel_of("PT-CM-GAIA-20261204170000-0123456789", "porto", GAIA_SENDER),
    )
    wid = r.warning
    st.warnings[wid].draft["references"] = [gid]
    st, _ = step(wf, st, "ana", "operator", "submit", warning=wid)
    st, _ = step(wf, st, "app", "approver", "approve", warning=wid)
    st, r = step(wf, st, "ana", "operator", "issue", warning=wid)
    assert not r.ok and "another tenant" in r.error, r.error
    assert st.warnings[gaia_wid].state == "issued" and st.warnings[wid].identifier is None
    # an edit that points a draft at gaia's warning: refused
    st, r = step(wf, st, "ana", "operator", "draft", draft=draft("porto", PORTO_SENDER))
    st, r = step(wf, st, "ana", "operator", "edit", warning=r.warning, draft={"references": [gid]})
    assert not r.ok and "another tenant" in r.error
    # an update of gaia's warning that moves it to porto: refused
    st, r = step(wf, st, "gop", "operator", "update", warning=gaia_wid, draft={"tenant": "porto"})
    assert not r.ok and "another tenant" in r.error


def test_an_update_or_cancel_keeps_the_referenced_warnings_sender() -> None:
    wf = Workflow()
    st, wid, pid = issued(wf, wf.initial_state(), draft("porto", PORTO_SENDER))
    st, r = step(wf, st, "ana", "operator", "draft", draft=cancel_of(pid, "porto", GAIA_SENDER))
    assert not r.ok and "keeps the sender" in r.error and PORTO_SENDER in r.error, r.error
    sent = st.warnings[wid].sent
    st, r = step(
        wf,
        st,
        "ana",
        "operator",
        "draft",
        draft=cancel_of(f"{GAIA_SENDER},{pid},{sent}", "porto", PORTO_SENDER),
    )
    assert not r.ok and f"sent by {PORTO_SENDER}" in r.error, r.error
    st, r = step(wf, st, "ana", "operator", "cancel", warning=wid, draft={"sender": GAIA_SENDER})
    assert not r.ok and "keeps the sender" in r.error
    # the same tenant and sender: a Cancel is drafted, issued, and cancels the original
    st, r = step(wf, st, "ana", "operator", "cancel", warning=wid, draft={})
    assert r.ok, r.error
    cid = r.warning
    st, _ = step(wf, st, "ana", "operator", "submit", warning=cid)
    st, _ = step(wf, st, "app", "approver", "approve", warning=cid)
    st, r = step(wf, st, "ana", "operator", "issue", warning=cid)
    assert r.ok and st.warnings[wid].state == "cancelled", r.error
    # an unknown reference (bare and not Atalaia's): refused on drafting, not after the approval
    st, r = step(
        wf, st, "ana", "operator", "draft", draft=cancel_of("SOMEONE-ELSES-1", "porto", PORTO_SENDER)
    )
    assert not r.ok and "references.0: no issued warning 'SOMEONE-ELSES-1'" in r.error, r.error


# ---------------------------------------------------------------- the console API, in-process

TOKENS = {
    "ana": ("operator", ["porto"]),
    "app": ("approver", ["porto"]),
    "gop": ("operator", ["gaia"]),
    "gapp": ("approver", ["gaia"]),
    "root": ("supervisor", None),
}
INCIDENTS = {
    "inc-porto": {
        "id": "inc-porto",
        "severity": "high",
        "title": "flood — porto",
        "labels": {"hazard": "flood", "parish": "Campanhã"},
        "correlation": {"tenant": "porto", "parish": "Campanhã"},
    },
    "inc-gaia": {
        "id": "inc-gaia",
        "severity": "high",
        "title": "flood — gaia",
        "labels": {"hazard": "flood", "parish": "Campanhã"},
        "correlation": {"tenant": "gaia", "parish": "Campanhã"},
    },
}


def h(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer tok-{who}"}


class Console:
    """The warnings routes over one workflow; ``publish`` steps it and keeps the reply."""

    def __init__(self, tmp_path) -> None:
        from atalaia.streams.settings import Settings

        self.wf = Workflow()
        self.core = SimpleNamespace(workflow=self.wf, state=self.wf.initial_state())
        self.views: dict[str, Any] = {}
        self.atalaia_stages = {"warnings": SimpleNamespace(cores={0: self.core})}
        self.replies: dict[str, dict[str, Any]] = {}
        self.settings = Settings(data_dir=tmp_path, console_url=None)
        users = [
            User(actor=a, role=r, token_sha256=hashlib.sha256(f"tok-{a}".encode()).hexdigest(), tenants=t)
            for a, (r, t) in TOKENS.items()
        ]
        self.auth = Authenticator(users)

    # the faust app's surface the routes use
    def page(self, path: str):
        def register(cls):
            self.views[path] = cls
            return cls

        return register

    def service(self, _: Any) -> Any:
        return self  # the reply watcher: ``wait`` below

    async def wait(self, command: str, timeout: float) -> dict[str, Any] | None:
        return self.replies.get(command)

    async def publish(self, topic: str, value: bytes, key: bytes) -> None:
        cmd = warning_command_from_dict(orjson.loads(value))
        self.core.state, out = self.wf.step(self.core.state, cmd, datetime.now(UTC))
        reply = next(o for o in out if isinstance(o, WarningReply))
        self.replies[reply.command] = {"ok": reply.ok, "error": reply.error, "warning": reply.warning}

    def app(self) -> web.Application:
        from atalaia.console import warnings_api

        def fail(view: Any, status: int, title: str, detail: str, **extra: Any) -> Any:
            return view.json(problem(status, title, detail, **extra), status=status, content_type=PROBLEM)

        async def projection(read: Any) -> Any:
            return read(SimpleNamespace(incident=INCIDENTS.get, alarms=lambda _: []))

        ctx = {
            "fail": fail,
            "identify": lambda request: self.auth.identify(request.headers.get("Authorization")),
            "projection": projection,
            "page": lambda name: b"<!doctype html>",
            "auth": self.auth,
        }
        warnings_api.install(self, self.settings, self.publish, "127.0.0.1:9", ctx)
        web_stub = SimpleNamespace(
            json=lambda value, content_type=None, status=200, reason=None, headers=None: web.json_response(
                value, status=status, content_type=content_type or "application/json", headers=headers
            ),
            bytes=lambda value, content_type=None, status=200, reason=None, headers=None: web.Response(
                body=value, status=status, content_type=content_type, headers=headers
            ),
        )
        app = web.Application()
        for path, cls in self.views.items():

            async def handler(request: web.Request, cls: Any = cls) -> Any:
                view = cls(self, web_stub)
                return await getattr(view, request.method.lower())(request, **request.match_info)

            app.router.add_route("*", path, handler)
        return app


@pytest.fixture
async def console(tmp_path):
    c = Console(tmp_path)
    async with TestClient(TestServer(c.app())) as client:
        c.client = client
        yield c


async def post(c: Console, path: str, who: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    r = await c.client.post(path, json=body, headers=h(who))
    return r.status, await r.json(content_type=None)


async def issue_via_api(c: Console, data: dict[str, Any], drafter: str, approver: str) -> str:
    code, body = await post(c, "/api/warnings", drafter, {"draft": data})
    assert code == 201, body
    wid = body["warning"]
    for who, action in ((drafter, "submit"), (approver, "approve"), (drafter, "issue")):
        code, body = await post(c, f"/api/warnings/{wid}/commands", who, {"action": action})
        assert code == 200, body
    return wid


async def test_a_scoped_operator_may_not_draft_from_an_incident_into_another_tenant(console) -> None:
    c = console
    code, body = await post(
        c,
        "/api/incidents/inc-porto/warning-draft",
        "ana",
        {"draft": {"tenant": "gaia", "incident": "inc-gaia"}},
    )
    assert code == 403 and "gaia" in body["detail"], body
    code, body = await post(
        c, "/api/incidents/inc-porto/warning-draft", "ana", {"draft": {"incident": "inc-gaia"}}
    )
    assert code == 422 and body["field"] == "draft.incident", body
    code, body = await post(c, "/api/incidents/inc-gaia/warning-draft", "ana", {})
    assert code == 404, body  # another tenant's incident: as if unknown
    assert not c.core.state.warnings, "nothing reached any queue"
    # their own incident: a porto draft
    code, body = await post(c, "/api/incidents/inc-porto/warning-draft", "ana", {"draft": {}})
    assert code == 201, body
    assert c.core.state.warnings[body["warning"]].draft["tenant"] == "porto"
    r = await c.client.get("/api/warnings", headers=h("gop"))
    assert (await r.json())["warnings"] == [], "gaia's queue stays empty"


async def test_another_tenants_warning_cannot_be_cancelled_nor_its_sender_used(console) -> None:
    c = console
    gaia = await issue_via_api(c, draft("gaia", GAIA_SENDER), "gop", "gapp")
    gid = c.core.state.warnings[gaia].identifier
    # the pentest's Cancel: refused on drafting (and on preview), naming the reference
    for path in ("/api/warnings", "/api/warnings/preview"):
        code, body = await post(c, path, "ana", {"draft": cancel_of(gid, None, PORTO_SENDER)})
        assert code == 422 and body["field"] == "draft.references.0" and "another tenant" in body["detail"], (
            body
        )
    # gaia's sender, which only gaia's warnings carry: refused for a porto user
    code, body = await post(c, "/api/warnings", "ana", {"draft": draft(None, GAIA_SENDER)})
    assert code == 403 and body["field"] == "draft.sender", body
    # ... also when an edit sets it
    code, body = await post(c, "/api/warnings", "ana", {"draft": draft(None, PORTO_SENDER)})
    assert code == 201, body
    wid = body["warning"]
    code, body = await post(
        c, f"/api/warnings/{wid}/commands", "ana", {"action": "edit", "draft": {"sender": GAIA_SENDER}}
    )
    assert code == 403, body
    # a draft that names gaia's warning in full (sender,identifier,sent) gets no further
    full = f"{GAIA_SENDER},{gid},{c.core.state.warnings[gaia].sent}"
    code, body = await post(
        c, f"/api/warnings/{wid}/commands", "ana", {"action": "edit", "draft": {"references": [full]}}
    )
    assert code == 422 and "another tenant" in body["detail"], body
    assert c.core.state.warnings[gaia].state == "issued"
    # gaia's own Cancel is fine, and an unscoped user may use any sender
    code, body = await post(c, f"/api/warnings/{gaia}/commands", "gop", {"action": "cancel"})
    assert code == 200, body
    code, body = await post(c, "/api/warnings", "root", {"draft": draft("gaia", GAIA_SENDER)})
    assert code == 201, body


async def test_a_bare_reference_to_nothing_issued_here_is_refused_on_drafting(console) -> None:
    """A Cancel of "PT-NOPE-1" was accepted (201), submitted and approved, and only issuing
    refused it (409): the officers found out after the four eyes, when the warning was to go out."""
    c = console
    for path in ("/api/warnings", "/api/warnings/preview"):
        code, body = await post(c, path, "ana", {"draft": cancel_of("PT-NOPE-1", None, PORTO_SENDER)})
        assert code == 422 and body["field"] == "draft.references.0", body
        assert "no issued warning 'PT-NOPE-1'" in body["detail"], body
    # a full reference to a warning issued elsewhere, and an identifier Atalaia made: as documented
    elsewhere = "protecao.civil@cm-gaia.pt,GAIA-77,2026-12-04T16:00:00+00:00"
    for ref in (elsewhere, "PT-CM-PORTO-20261204170000-0123456789"):
        code, body = await post(c, "/api/warnings", "ana", {"draft": cancel_of(ref, None, PORTO_SENDER)})
        assert code == 201, (ref, body)
    # one issued here, referenced bare: fine
    wid = await issue_via_api(c, draft(None, PORTO_SENDER), "ana", "app")
    ident = c.core.state.warnings[wid].identifier
    code, body = await post(c, "/api/warnings", "ana", {"draft": cancel_of(ident, None, PORTO_SENDER)})
    assert code == 201, body


async def test_a_bad_draft_names_its_fields_never_pydantics_validators(console) -> None:
    """A wrong type inside a text answered field "draft.headline.function-after[_xml_text(),
    function-before[_text(), str]]": an officer (and the page highlighting the field) needs the
    field, "draft.headline" or "draft.headline.pt-PT"."""
    c = console
    bad = [
        ({"headline": {"pt-PT": {"a": [1]}}}, {"draft.headline", "draft.headline.pt-PT"}),
        ({"web": [1]}, {"draft.web"}),
        ({"area": {"geocodes": {"DICOFRE": [{"x": 1}]}}}, {"draft.area.0.geocodes.DICOFRE.0"}),
        ({"parameters": {"str": [1]}}, {"draft.parameters.str"}),  # a name like a tag: kept
    ]
    for extra, fields in bad:
        code, body = await post(c, "/api/warnings", "ana", {"draft": draft(None, PORTO_SENDER, **extra)})
        assert code == 422, body
        assert {e["field"] for e in body["errors"]} == fields, body
        assert body["field"] in fields and "[" not in body["detail"], body
    # the workflow's refusal (a command on atalaia.commands) names the fields the same way
    wf = Workflow()
    _, r = step(
        wf, wf.initial_state(), "ana", "operator", "draft", draft=draft("porto", PORTO_SENDER, web=[1])
    )
    assert not r.ok and "function" not in r.error and "web: Input should be a valid string" in r.error, (
        r.error
    )


async def test_an_incidents_warnings_and_every_read_are_filtered_by_tenant(console) -> None:
    c = console
    # a gaia draft linked to porto's incident: gop may not link an incident they do not see
    code, body = await post(
        c, "/api/warnings", "gop", {"draft": draft(None, GAIA_SENDER, incident="inc-porto")}
    )
    assert code == 422 and body["field"] == "draft.incident", body
    # one linked anyway (an unscoped user, or made before this check): porto's users do not see it
    code, body = await post(
        c, "/api/warnings", "root", {"draft": draft("gaia", GAIA_SENDER, incident="inc-porto")}
    )
    assert code == 201, body
    gaia_draft = body["warning"]
    code, body = await post(c, "/api/incidents/inc-porto/warning-draft", "ana", {})
    assert code == 201, body
    porto_draft = body["warning"]
    r = await c.client.get("/api/incidents/inc-porto/warnings", headers=h("ana"))
    assert r.status == 200 and [w["id"] for w in (await r.json())["warnings"]] == [porto_draft]
    r = await c.client.get("/api/incidents/inc-porto/warnings", headers=h("root"))
    assert {w["id"] for w in (await r.json())["warnings"]} == {porto_draft, gaia_draft}
    # the other reads and commands: another tenant's warning is as unknown
    r = await c.client.get(f"/api/warnings/{gaia_draft}", headers=h("ana"))
    assert r.status == 404
    code, _ = await post(c, f"/api/warnings/{gaia_draft}/commands", "ana", {"action": "submit"})
    assert code == 404
    r = await c.client.get("/api/warnings", headers=h("ana"))
    assert [w["id"] for w in (await r.json())["warnings"]] == [porto_draft]
