"""Refusals said in the operator's language. The console API answered a refused command (nothing
to acknowledge, nothing firing for a one-shot shelve, a silence of every alarm, a draft with errors)
with an English ``title``/``detail``, and the pt-PT pages showed that English text. Now each refusal
the API can explain has a stable problem ``type`` (``urn:atalaia:console:<code>``) and the values
its text names (``params``); the pages say ``pb.<code>`` of ``console/static/i18n.json`` with them,
and the English ``detail`` only for a code they do not know."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests import test_warnings_tenancy_hostile as th
from tests.conftest import wait
from tests.test_console_board import SHOTS, alarm, chromium, publish  # noqa: F401  (fixtures)
from tests.test_warnings_tenancy_hostile import PORTO_SENDER, Console, draft, post

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "console" / "static"
CAT = json.loads((STATIC / "i18n.json").read_text())
PREFIX = "urn:atalaia:console:"
STAGES = ("incidents", "projection")


def codes_in_source() -> set[str]:
    """Every refusal code the server writes: the incident manager's ``Refusal(text, code, ...)``
    and the console's ``code="..."`` (and ``DRAFT_ERROR_CODES``, as ``draft.<code>``)."""
    found: set[str] = set()
    files = [
        ROOT / "incidents" / "operator.py",
        ROOT / "incidents" / "manager.py",
        *(ROOT / "console").glob("*.py"),
    ]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name == "Refusal" and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
                    found.add(node.args[1].value)
                for kw in node.keywords:
                    if (
                        kw.arg == "code"
                        and isinstance(kw.value, ast.Constant)
                        and isinstance(kw.value.value, str)
                    ):
                        found.add(kw.value.value)
            if isinstance(node, ast.Dict) and path.name == "warnings_api.py":
                values = [v.value for v in node.values if isinstance(v, ast.Constant)]
                if "empty-text" in values:
                    found |= {f"draft.{v}" for v in values}
    return found


def test_every_refusal_code_is_said_in_both_languages():
    codes = codes_in_source()
    assert {"nothing-to-acknowledge", "nothing-firing", "silences-everything", "invalid-draft"} <= codes
    for lang in ("pt-PT", "en-GB"):
        missing = sorted(c for c in codes if f"pb.{c}" not in CAT[lang])
        assert missing == [], f"{lang} has no words for {missing}"
    assert all(CAT["pt-PT"][f"pb.{c}"] != CAT["en-GB"][f"pb.{c}"] for c in codes if c != "draft.missing")


def command(url: str, incident: str, **body) -> httpx.Response:
    return httpx.post(
        f"{url}/api/incidents/{incident}/commands",
        json={"actor": "ana", "role": "operator", **body},
        timeout=15,
    )


def coded(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"] == PREFIX + code, body
    assert isinstance(body["title"], str) and isinstance(body["detail"], str) and body["status"] == status
    return body


def test_the_api_names_each_refusal_with_a_type_and_its_values(make_worker, publish, chromium):  # noqa: F811
    w = make_worker("--stages", ",".join(STAGES)).start(STAGES)
    now = datetime.now(UTC).replace(microsecond=0)
    publish(alarm("refusal-1", now, parish="Bonfim"))
    inc = wait(
        lambda: next(
            iter(httpx.get(f"{w.url}/api/incidents?state=open", timeout=5).json()["incidents"]), None
        ),
        timeout=30,
        what="the incident in the projection",
    )
    assert command(w.url, inc["id"], action="acknowledge").status_code == 200
    body = coded(command(w.url, inc["id"], action="acknowledge"), 409, "nothing-to-acknowledge")
    assert body["params"] == {"state": "acknowledged"}
    assert body["detail"] == "nothing to acknowledge: incident is acknowledged", "the English text as before"
    body = coded(command(w.url, inc["id"], action="shelve", duration="1h"), 409, "reason-needed")
    assert body["params"] == {"action": "shelve"}
    body = coded(
        command(w.url, inc["id"], action="shelve", duration="1h", reason="x" * 2001), 422, "too-long"
    )
    assert body["params"] == {"field": "reason", "max": 2000}
    body = coded(
        command(w.url, inc["id"], action="shelve", duration="soon", reason="r"), 422, "invalid-command"
    )
    assert body["params"] == {"fields": "duration"}
    body = coded(command(w.url, inc["id"], action="close", reason="done"), 409, "role-not-allowed")
    assert body["params"] == {"role": "operator", "action": "close", "allowed": "supervisor"}
    body = coded(
        command(w.url, inc["id"], action="close", reason="done", role="supervisor"), 409, "close-while-firing"
    )
    assert body["params"] == {}

    publish(
        {**alarm("refusal-1", now + timedelta(seconds=2), parish="Bonfim"), "state": "resolved", "id": "r1"}
    )
    wait(
        lambda: not httpx.get(f"{w.url}/api/incidents/{inc['id']}", timeout=5).json()["incident"]["active"],
        timeout=30,
        what="the alarm resolved",
    )
    body = coded(
        command(w.url, inc["id"], action="shelve", until="clear", reason="crew"), 422, "nothing-firing"
    )
    assert body["params"] == {"state": "normal"} and body["errors"][0]["field"] == "until"

    r = httpx.post(
        f"{w.url}/api/silences",
        json={"matchers": ['rule=~".*"'], "comment": "storm", "duration": "1h"},
        timeout=15,
    )
    coded(r, 422, "silences-everything")  # (a matcher that matches "" too)
    r = httpx.post(
        f"{w.url}/api/silences",
        json={"matchers": ['rule=~".+"'], "comment": "storm", "duration": "1h"},
        timeout=15,
    )
    coded(r, 422, "silences-everything")  # (every alarm has a rule)
    r = httpx.post(
        f"{w.url}/api/silences", json={"matchers": ['parish="Bonfim"'], "duration": "1h"}, timeout=15
    )
    assert coded(r, 422, "invalid-silence")["params"] == {"fields": "comment"}

    # the silences page in pt-PT says it in Portuguese (it showed the English detail)
    ctx = chromium.new_context(locale="pt-PT", viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    try:
        page.goto(w.url + "/silences?lang=pt-PT")
        page.fill("#matchers", 'rule=~".*"')
        page.fill("#comment", "tempestade")
        page.click("#create")
        page.wait_for_function("document.getElementById('msg').textContent.length > 0", timeout=10000)
        said = page.inner_text("#msg")
        page.screenshot(path=str(SHOTS / "refusal-silence-pt.png"))
    finally:
        ctx.close()
    assert "silenciariam todos os alarmes" in said, said
    assert "would silence" not in said, said


@pytest.fixture
async def warnings_console(tmp_path, monkeypatch):
    from aiohttp.test_utils import TestClient, TestServer

    monkeypatch.setitem(th.TOKENS, "vera", ("viewer", None))
    monkeypatch.setitem(th.TOKENS, "op", ("operator", None))
    c = Console(tmp_path)
    async with TestClient(TestServer(c.app())) as client:
        c.client = client
        yield c


async def test_a_draft_with_errors_names_them_with_codes(warnings_console) -> None:
    bad = draft(None, PORTO_SENDER, headline={"pt-PT": " ", "en-GB": "Flood"})
    code, body = await post(warnings_console, "/api/warnings/preview", "op", {"draft": bad})
    assert code == 422 and body["type"] == PREFIX + "invalid-draft", body
    assert body["params"] == {"count": 1, "fields": "draft.headline.pt-PT"}
    assert body["errors"] == [
        {"field": "draft.headline.pt-PT", "message": "empty text", "code": "empty-text"}
    ]
    code, body = await post(
        warnings_console, "/api/warnings/preview", "vera", {"draft": draft(None, PORTO_SENDER)}
    )
    assert code == 403 and body["type"] == PREFIX + "viewer-may-not-act", body


def test_the_page_says_a_known_refusal_in_its_language_and_an_unknown_one_as_sent(chromium) -> None:  # noqa: F811
    page = chromium.new_page()
    try:
        page.set_content("<!doctype html><html><body></body></html>")
        page.add_script_tag(content=(STATIC / "console.js").read_text())
        said = page.evaluate(
            """cat => {
              C.cat = cat;
              const p = (code, params, detail) => ({type: 'urn:atalaia:console:' + code, params, detail});
              return [
                refusal(p('nothing-to-acknowledge', {state: 'acknowledged'}, 'nothing to acknowledge: incident is acknowledged'), 409),
                refusal(p('role-not-allowed', {role: 'viewer', action: 'shelve', allowed: 'operator'}, 'x'), 409),
                refusal(p('not-in-state', {needed: 'shelved', state: 'normal'}, 'x'), 409),
                refusal(p('no-such-code-yet', {}, 'an English detail'), 409),
                refusal({type: 'about:blank', detail: 'plain'}, 400),
                refusal({}, 503),
                problemText({field: 'draft.headline.pt-PT', message: 'empty text', code: 'empty-text'}),
                problemText({field: 'draft.level', message: "unknown level 'x'"}),
              ];
            }""",
            CAT["pt-PT"],
        )
    finally:
        page.close()
    assert said == [
        "nada a reconhecer: o incidente está reconhecido",
        "o perfil «consulta» não pode «Arquivar» (podem: operator)",
        "o incidente não está arquivado (está normal)",
        "an English detail",
        "plain",
        "503",
        "texto vazio",
        "unknown level 'x'",
    ]
