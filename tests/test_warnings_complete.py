"""A warning is sent on towards the public only complete: "New warning" drafted a yellow warning
for Bonfim that could be submitted, approved and issued with no headline, description, instruction
or expiry (the SMS read "Aviso amarelo - Cheia. Bonfim. <link>"). A draft may still be saved
incomplete, but submitting it for approval, approving and issuing it are refused with a 422 naming
each missing field: a headline and an instruction in every language the warning has, and an
``expires`` (a Cancel: its headline). ``atalaia warnings render`` is unchanged: it is about CAP
validity, and renders such a draft as before."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from atalaia.warnings.core import Workflow
from tests import test_warnings_tenancy_hostile as th
from tests.test_console_board import SHOTS, chromium  # noqa: F401  (fixture)
from tests.test_warnings_console import h, sign_in, users_file
from tests.test_warnings_tenancy_hostile import PORTO_SENDER, Console, post

T0 = datetime(2026, 12, 4, 17, tzinfo=UTC)
LANGS = ("pt-PT", "en-GB")
TEXTS = {
    "headline": {"pt-PT": "Cheia no Douro", "en-GB": "Douro flood"},
    "instruction": {"pt-PT": "Afaste-se do rio.", "en-GB": "Keep away from the river."},
}
BARE = {  # what "New warning" drafts: level, event, area
    "sender": PORTO_SENDER,
    "level": "yellow",
    "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
    "area": {"geocodes": {"DICOFRE": ["131202"]}},
}


def missing_of(error: str) -> list[str]:
    return [p.split(":")[0] for p in error.removeprefix("bad draft: ").split("; ")]


@given(
    given_texts=st.sets(st.sampled_from([(f, lang) for f in TEXTS for lang in LANGS])),
    expires=st.booleans(),
    status=st.sampled_from(["Actual", "Exercise"]),
)
def test_submit_approve_and_issue_name_exactly_what_is_missing(given_texts, expires, status) -> None:
    """Whatever subset of texts and expiry a draft has: it is saved; submitting it is refused
    naming each missing one (in the warning's languages), exactly those; a complete one goes
    through to issue. An exercise that skips approval is refused at issue the same way."""
    from atalaia.warnings.config import Approval, WarningsConfig

    wf = Workflow(WarningsConfig(approval=Approval(skip_for=["Exercise"])))
    data = {**BARE, "status": status}
    for f, lang in given_texts:
        data.setdefault(f, {})[lang] = TEXTS[f][lang]
    if expires:
        data["expires"] = (T0 + timedelta(hours=12)).isoformat()
    want = [f"{f}.{lang}" for f in TEXTS for lang in LANGS if (f, lang) not in given_texts]
    want += [] if expires else ["expires"]
    state, out = wf.step(
        wf.initial_state(), {"action": "draft", "actor": "a", "role": "operator", "draft": data}, T0
    )
    assert out[-1].ok, out[-1].error  # a draft is saved incomplete
    wid = out[-1].warning
    if status == "Exercise":  # issued without approval: refused at issue
        state, out = wf.step(state, {"action": "issue", "warning": wid, "actor": "a", "role": "operator"}, T0)
        assert (out[-1].ok, state.warnings[wid].state) == (not want, "issued" if not want else "draft")
        if want:
            assert missing_of(out[-1].error) == want, out[-1].error
        return
    state, out = wf.step(state, {"action": "submit", "warning": wid, "actor": "a", "role": "operator"}, T0)
    if want:
        assert not out[-1].ok and missing_of(out[-1].error) == want, out[-1].error
        assert state.warnings[wid].state == "draft"
        return
    for who, role, action in (("b", "approver", "approve"), ("a", "operator", "issue")):
        state, out = wf.step(state, {"action": action, "warning": wid, "actor": who, "role": role}, T0)
        assert out[-1].ok, out[-1].error
    assert state.warnings[wid].state == "issued"


def test_a_warning_submitted_before_the_rule_is_not_approved_or_issued_incomplete() -> None:
    """A warning submitted (or approved) incomplete before this check, kept in the stage's state,
    is refused at its approval and at its issue too."""
    wf = Workflow()
    data = {**BARE, **TEXTS, "expires": (T0 + timedelta(hours=12)).isoformat()}
    state, out = wf.step(
        wf.initial_state(), {"action": "draft", "actor": "a", "role": "operator", "draft": data}, T0
    )
    wid = out[-1].warning
    state, out = wf.step(state, {"action": "submit", "warning": wid, "actor": "a", "role": "operator"}, T0)
    assert out[-1].ok
    del state.warnings[wid].draft["instruction"]  # (as an older version let it through)
    state, out = wf.step(state, {"action": "approve", "warning": wid, "actor": "b", "role": "approver"}, T0)
    assert not out[-1].ok and missing_of(out[-1].error) == ["instruction.pt-PT", "instruction.en-GB"]
    state.warnings[wid].state = "approved"
    state, out = wf.step(state, {"action": "issue", "warning": wid, "actor": "a", "role": "operator"}, T0)
    assert not out[-1].ok and state.warnings[wid].identifier is None


def test_a_cancel_needs_only_its_headline() -> None:
    wf = Workflow()
    data = {**BARE, **TEXTS, "expires": (T0 + timedelta(hours=12)).isoformat()}
    state, wid = wf.initial_state(), ""
    for action, who, role in (
        ("draft", "a", "operator"),
        ("submit", "a", "operator"),
        ("approve", "b", "approver"),
    ):
        extra = {"draft": data} if action == "draft" else {"warning": wid}
        state, out = wf.step(state, {"action": action, "actor": who, "role": role, **extra}, T0)
        wid = out[-1].warning
    state, out = wf.step(state, {"action": "issue", "warning": wid, "actor": "a", "role": "operator"}, T0)
    assert out[-1].ok, out[-1].error
    at = T0 + timedelta(minutes=1)
    state, out = wf.step(state, {"action": "cancel", "warning": wid, "actor": "a", "role": "operator"}, at)
    cancel = out[-1].warning
    for action, who, role in (
        ("submit", "a", "operator"),
        ("approve", "b", "approver"),
        ("issue", "a", "operator"),
    ):
        state, out = wf.step(state, {"action": action, "warning": cancel, "actor": who, "role": role}, at)
        assert out[-1].ok, out[-1].error  # no instruction, no expiry: "Aviso cancelado: Cheia"
    assert state.warnings[wid].state == "cancelled"


def test_render_still_renders_an_incomplete_draft(tmp_path) -> None:
    """``warnings render`` keeps its contract (CAP validity): the bare draft renders, exit 0."""
    from atalaia.warnings.cli import warnings as warnings_cli

    path = tmp_path / "bare.yaml"
    path.write_text(
        "sender: protecao.civil@cm-porto.pt\nlevel: yellow\nevent: {pt-PT: Cheia, en-GB: Flood}\n"
        "area: {geocodes: {DICOFRE: ['131202']}}\n"
    )
    r = CliRunner().invoke(warnings_cli, ["render", str(path), "--sent", "2026-12-04T17:00:00Z"])
    assert r.exit_code == 0 and "<msgType>Alert</msgType>" in r.output, r.output


@pytest.fixture
async def console(tmp_path, monkeypatch):
    from aiohttp.test_utils import TestClient, TestServer

    monkeypatch.setitem(th.TOKENS, "op", ("operator", None))
    monkeypatch.setitem(th.TOKENS, "boss", ("approver", None))
    c = Console(tmp_path)
    async with TestClient(TestServer(c.app())) as client:
        c.client = client
        yield c


async def test_the_api_refuses_submitting_an_incomplete_draft_naming_each_field(console) -> None:
    expires = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).isoformat()
    draft = {**BARE, "headline": {"pt-PT": "Cheia no Douro"}}
    code, body = await post(console, "/api/warnings", "op", {"draft": draft})
    assert code == 201, body  # saved incomplete
    wid = body["warning"]
    path = f"/api/warnings/{wid}/commands"
    r = await console.client.post(path, json={"action": "submit"}, headers=th.h("op"))
    assert r.status == 422 and r.headers["Content-Type"].startswith("application/problem+json")
    body = await r.json(content_type=None)
    assert [e["field"] for e in body["errors"]] == [
        "draft.headline.en-GB",
        "draft.instruction.pt-PT",
        "draft.instruction.en-GB",
        "draft.expires",
    ], body
    assert body["field"] == "draft.headline.en-GB" and "en-GB headline" in body["detail"], body
    assert console.core.state.warnings[wid].state == "draft", "nothing was submitted"
    changes = {"headline": TEXTS["headline"], "instruction": TEXTS["instruction"], "expires": expires}
    code, body = await post(console, path, "op", {"action": "edit", "draft": changes})
    assert code == 200, body
    code, body = await post(console, path, "op", {"action": "submit"})
    assert code == 200, body
    code, body = await post(console, path, "boss", {"action": "approve"})
    assert code == 200, body


@pytest.mark.broker
def test_the_page_shows_what_is_missing_next_to_the_form(make_worker, chromium, tmp_path):  # noqa: F811
    """An operator presses Submit on the bare draft "New warning" made: refused, and the page
    names each missing field next to its input, in the page's language around the server's words."""
    stages = ("incidents", "projection", "warnings")
    w = make_worker(
        "--stages", ",".join(stages), extra_env={"ATALAIA_CONSOLE_USERS": str(users_file(tmp_path))}
    ).start(stages)
    r = httpx.post(f"{w.url}/api/warnings", json={"draft": BARE}, headers=h("ana"), timeout=10)
    assert r.status_code == 201, r.text
    wid = r.json()["warning"]
    ana = sign_in(chromium, f"{w.url}/warnings/{wid}", "ana", locale="pt-PT")
    ana.wait_for_selector("#buttons button[data-action=submit]", timeout=15000)
    ana.click("#buttons button[data-action=submit]")
    ana.wait_for_function("document.querySelectorAll('#action-problems li').length > 0", timeout=15000)
    listed = ana.inner_text("#action-problems")
    for field in ("headline.pt-PT", "headline.en-GB", "instruction.pt-PT", "instruction.en-GB", "expires"):
        assert f"draft.{field}" in listed, listed
    for box in ("f-headline-pt", "f-headline-en", "f-instruction-pt", "f-instruction-en", "f-expires"):
        assert ana.get_attribute(f"#{box}", "aria-invalid") == "true", box
        assert "Obrigatório" in ana.inner_text(f"#{box} + .need"), box
    assert ana.get_attribute("#f-event-pt", "aria-invalid") is None
    assert re.search(r"recusad|refused", ana.inner_text("#msg")), ana.inner_text("#msg")
    ana.screenshot(path=str(SHOTS / "warning-submit-refused-incomplete.png"), full_page=True)
    ana.fill("#f-headline-pt", "Cheia no Douro")  # filled in: no longer marked
    assert ana.get_attribute("#f-headline-pt", "aria-invalid") is None
    assert ana.locator("#f-headline-pt + .need").count() == 0
    state = httpx.get(f"{w.url}/api/warnings/{wid}", headers=h("ana"), timeout=5).json()["warning"]["state"]
    assert state == "draft"
