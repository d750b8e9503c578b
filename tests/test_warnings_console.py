"""Population warnings in the console (issue 12): the API's answers (401, 403, 422 naming the
field, 409) and, in a real browser (Debian chromium driven by Playwright, screenshots under
tests/screenshots/), an operator drafting a warning from an incident, an approver (another user)
approving and issuing it, the Atom feed listing it, and self-approval refused with the reason shown."""

from __future__ import annotations

import doctest
import hashlib
import importlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait
from tests.test_console_api import served
from tests.test_console_board import SHOTS, alarm, chromium, publish  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]
TOKENS = {"ana": ("operator", "an4-op"), "rui": ("approver", "ru1-ap"), "vera": ("viewer", "v3ra")}


@pytest.mark.parametrize("module", ["atalaia.warnings.short_text", "atalaia.console.warnings_api"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0


def test_sms_text_counts_segments_and_keeps_the_link() -> None:
    from atalaia.notifiers.sms import segments
    from atalaia.warnings.catalogue import Catalogue
    from atalaia.warnings.short_text import sms_text

    draft = {
        "sender": "pc@cm-porto.pt",
        "status": "Exercise",
        "level": "red",
        "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
        "instruction": {"pt-PT": "Afaste-se das margens do rio Douro e siga as indicações. " * 6},
        "expires": "2026-07-05T06:00:00+00:00",
        "area": {"geocodes": {"DICOFRE": ["131203"]}},
    }
    link = "http://localhost:8080/cap/alerts/PT-CM-PORTO-20261204170000-0123456789.xml"
    s = sms_text(draft, Catalogue.load(), link, max_segments=2)
    assert s.text.startswith("EXERCICIO / EXERCISE: Aviso vermelho - Cheia."), s.text  # GSM-7
    assert s.text.endswith(link) and "Até 05/07 07:00." in s.text, s.text  # summer: UTC+1
    assert (s.segments, s.encoding) == segments(s.text) and s.segments <= 2


def test_every_warnings_page_key_is_in_both_languages() -> None:
    cat = json.loads((ROOT / "console" / "static" / "i18n.json").read_text())
    used: set[str] = set()
    for page in ("warnings.html", "warning.html", "incident.html"):
        used |= set(re.findall(r'data-t="([^"]+)"', served(page)))
    js = "".join(served(f) for f in ("warnings.html", "warning.html", "warnings.js"))
    used |= set(re.findall(r"\bt\('([a-z-]+\.[a-z_.-]+)'", js))
    for lang in ("pt-PT", "en-GB"):
        assert used - set(cat[lang]) == set(), f"keys used but not in the {lang} catalogue"


def test_the_level_picker_offers_every_level_a_draft_may_name_in_the_catalogues_order() -> None:
    """ANEPC's azul is a level a draft may name (``warnings render`` and the API take it): the
    console's picker offered green, yellow, orange and red only, so an operator could not draft it."""
    from atalaia.warnings.catalogue import Catalogue

    page = served("warning.html")
    picker = re.search(r'<select id="f-level">(.*?)</select>', page, re.S)
    assert picker, "the draft form has a level picker"
    offered = re.findall(r'<option value="([^"]+)" data-t="lvl\.\1">', picker.group(1))
    assert offered == Catalogue.load().colours()
    assert "azul: 'low'" in served("warnings.js"), "azul has a colour of its own on the badge"


# ---------------------------------------------------------------- live: API and browser


def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.yaml"
    lines = [
        f"  - {{actor: {a}, role: {r}, token_sha256: {hashlib.sha256(tok.encode()).hexdigest()}}}"
        for a, (r, tok) in TOKENS.items()
    ]
    path.write_text("users:\n" + "\n".join(lines) + "\n")
    return path


def h(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who][1]}"}


def issue_via_console(url: str) -> str:
    """An orange flood warning for Campanhã drafted and submitted by ana, approved and issued by
    rui, through the console API at ``url``; its id."""
    draft = {
        "sender": "protecao.civil@cm-porto.pt",
        "level": "orange",
        "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
        "headline": {"pt-PT": "Cheia no Douro", "en-GB": "Douro flood"},
        "instruction": {"pt-PT": "Afaste-se do rio.", "en-GB": "Keep away from the river."},
        "expires": (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).isoformat(),
        "area": {"geocodes": {"DICOFRE": ["131203"]}},
    }
    r = httpx.post(f"{url}/api/warnings", json={"draft": draft}, headers=h("ana"), timeout=10)
    assert r.status_code == 201, r.text
    wid = r.json()["warning"]
    for who, action in (("ana", "submit"), ("rui", "approve"), ("rui", "issue")):
        r = httpx.post(
            f"{url}/api/warnings/{wid}/commands", json={"action": action}, headers=h(who), timeout=10
        )
        assert r.status_code == 200, r.text
    return wid


def sign_in(browser, url: str, who: str, locale: str = "en-GB"):
    page = browser.new_context(locale=locale, viewport={"width": 1280, "height": 900}).new_page()
    page.goto(url)
    page.wait_for_selector("#login:not([hidden])", timeout=10000)
    page.fill("#token", TOKENS[who][1])
    page.click("#login button")
    page.wait_for_function(f"document.getElementById('userline').textContent.includes('{who}')")
    return page


def act(page, action: str, reason: str = "") -> str:
    page.fill("#w-reason", reason)
    page.evaluate("document.getElementById('msg').textContent = ''")
    page.click(f"#buttons button[data-action={action}]")
    page.wait_for_function("document.getElementById('msg').textContent !== ''", timeout=15000)
    return page.inner_text("#msg")


@pytest.mark.broker
def test_draft_from_an_incident_approve_issue_feed_and_four_eyes(make_worker, publish, chromium, tmp_path):  # noqa: F811
    import feedparser

    stages = ("incidents", "projection", "warnings")
    w = make_worker(
        "--stages", ",".join(stages), extra_env={"ATALAIA_CONSOLE_USERS": str(users_file(tmp_path))}
    ).start(stages)
    publish(alarm("w1", datetime.now(UTC).replace(microsecond=0), "high", parish="Campanhã", value=3.9))
    incidents = wait(
        lambda: httpx.get(f"{w.url}/api/incidents", headers=h("ana"), timeout=5).json()["incidents"],
        20,
        "the incident",
    )
    iid = incidents[0]["id"]

    # the API: 401 without a token, 403 for a viewer, 422 naming the field, 404 for an unknown id
    r = httpx.get(f"{w.url}/api/warnings", timeout=5)
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
    r = httpx.post(f"{w.url}/api/incidents/{iid}/warning-draft", json={}, headers=h("vera"), timeout=10)
    assert r.status_code == 403 and "viewer" in r.json()["detail"]
    r = httpx.post(
        f"{w.url}/api/incidents/{iid}/warning-draft",
        json={"draft": {"level": "purple"}},
        headers=h("ana"),
        timeout=10,
    )
    assert r.status_code == 422 and r.json()["field"] == "draft.level", r.text
    r = httpx.post(
        f"{w.url}/api/warnings/preview",
        json={
            "draft": {
                "sender": "a@b.pt",
                "level": "red",
                "event": "Cheia",
                "area": {"geocodes": {"DICOFRE": [9]}},
            }
        },
        headers=h("ana"),
        timeout=10,
    )
    assert r.status_code == 422 and r.json()["field"] == "draft.area.0.geocodes.DICOFRE.0", r.text
    assert httpx.get(f"{w.url}/api/warnings/W-nope", headers=h("ana"), timeout=5).status_code == 404

    # 1. ana (operator) drafts from the incident page; the editor shows the CAP and the SMS live
    ana = sign_in(chromium, f"{w.url}/incidents/{iid}", "ana")
    ana.wait_for_selector("#incident:not([hidden])", timeout=10000)
    ana.click("#draft-warning")
    ana.wait_for_url(re.compile(r".*/warnings/W-[0-9a-f]+$"), timeout=15000)
    wid = ana.url.rsplit("/", 1)[1]
    ana.wait_for_function("document.getElementById('cap').textContent.includes('<alert')", timeout=15000)
    cap = ana.inner_text("#cap")
    assert "<value>131203</value>" in cap and "<severity>Severe</severity>" in cap, "Campanhã, orange"
    assert "<event>Cheia</event>" in cap and "<event>Flood</event>" in cap, "the event from the hazard label"
    assert ana.input_value("#f-level") == "orange" and ana.input_value("#f-dicofre") == "131203"
    assert "Aviso laranja - Cheia" in ana.inner_text("#sms") and "segment" in ana.inner_text("#sms-meta")
    assert "Lisbon" in ana.inner_text("#f-onset >> xpath=..")
    ana.fill("#f-instruction-pt", "Afaste-se da zona ribeirinha.")
    ana.fill("#f-instruction-en", "Keep away from the riverside.")
    ana.wait_for_function(
        "document.getElementById('sms').textContent.includes('zona ribeirinha')", timeout=10000
    )
    assert "approve" not in [b.get_attribute("data-action") for b in ana.locator("#buttons button").all()]
    assert "refused" not in act(ana, "edit")
    assert "refused" not in act(ana, "submit")
    ana.wait_for_function("document.getElementById('state').textContent.includes('submitted')")
    ana.screenshot(path=str(SHOTS / "warning-drafted-and-submitted.png"), full_page=True)
    r = httpx.post(
        f"{w.url}/api/warnings/{wid}/commands", json={"action": "approve"}, headers=h("ana"), timeout=10
    )
    assert r.status_code == 403 and "approver" in r.json()["detail"], "an operator may not approve"

    # 2. rui (approver, another person) approves and issues
    rui = sign_in(chromium, f"{w.url}/warnings/{wid}", "rui")
    rui.wait_for_selector("#warning:not([hidden])", timeout=10000)
    rui.wait_for_function("document.getElementById('cap').textContent.includes('<alert')", timeout=15000)
    assert "Keep away from the riverside." in rui.inner_text("#cap")
    assert "refused" not in act(rui, "approve", "checked with the hydro team")
    rui.wait_for_function("document.getElementById('state').textContent.includes('approved')")
    assert "refused" not in act(rui, "issue")
    rui.wait_for_function("document.getElementById('state').textContent.includes('issued')", timeout=10000)
    rui.wait_for_selector("#cap-link")
    rui.screenshot(path=str(SHOTS / "warning-approved-and-issued.png"), full_page=True)
    detail = httpx.get(f"{w.url}/api/warnings/{wid}", headers=h("rui"), timeout=5).json()["warning"]
    assert detail["approver"] == "rui" and detail["authors"] == ["ana"] and detail["identifier"]
    assert detail["actions"] == ["update", "cancel"]
    # its CAP identifier named by another draft: refused when drafted (and in the preview), not
    # after that draft's approval
    again = {**detail["draft"], "identifier": detail["identifier"]}
    for path in ("/api/warnings", "/api/warnings/preview"):
        r = httpx.post(f"{w.url}{path}", json={"draft": again}, headers=h("ana"), timeout=10)
        assert r.status_code == 422 and r.json()["field"] == "draft.identifier", r.text
        assert "issued already" in r.text

    # 3. the feed lists it, linking to its CAP document
    feed = feedparser.parse(httpx.get(f"{w.url}/cap/feed.atom", timeout=5).content)
    assert len(feed.entries) == 1 and detail["identifier"] in feed.entries[0].link
    assert httpx.get(f"{w.url}{detail['cap_url']}", timeout=5).status_code == 200
    rui.goto(f"{w.url}/warnings")
    rui.wait_for_selector(f"#active tr[data-warning='{wid}']", timeout=10000)
    assert rui.locator("#active a[type='application/cap+xml']").count() == 1
    assert rui.get_attribute("#feed", "href") == "/cap/feed.atom"
    rui.screenshot(path=str(SHOTS / "warnings-list.png"), full_page=True)

    # an Update and a Cancel are new warnings referencing the issued one, with their own approval
    for action, kind in (("update", "Update"), ("cancel", "Cancel")):
        r = httpx.post(
            f"{w.url}/api/warnings/{wid}/commands",
            json={"action": action, "reason": "river falling", "draft": {"level": "yellow"}},
            headers=h("ana"),
            timeout=10,
        )
        assert r.status_code == 200 and r.json()["warning"] != wid, r.text
        new = httpx.get(f"{w.url}/api/warnings/{r.json()['warning']}", headers=h("ana"), timeout=5).json()
        new = new["warning"]
        assert (new["msgType"], new["supersedes"], new["state"]) == (kind, wid, "draft")
        assert new["draft"]["references"] == [detail["identifier"]]

    # 4. self-approval: rui drafts and submits another warning, then may not approve it himself
    draft = dict(detail["draft"], level="yellow")
    r = httpx.post(f"{w.url}/api/warnings", json={"draft": draft}, headers=h("rui"), timeout=10)
    assert r.status_code == 201, r.text
    own = r.json()["warning"]
    r = httpx.post(
        f"{w.url}/api/warnings/{own}/commands", json={"action": "submit"}, headers=h("rui"), timeout=10
    )
    assert r.status_code == 200, r.text
    rui.goto(f"{w.url}/warnings/{own}")
    rui.wait_for_selector("#buttons button[data-action=approve]", timeout=10000)
    msg = act(rui, "approve")
    assert "refused" in msg and "four eyes" in msg, msg
    rui.wait_for_function("document.getElementById('audit').textContent.includes('four eyes')")
    rui.screenshot(path=str(SHOTS / "warning-self-approval-refused.png"), full_page=True)
    assert (
        httpx.get(f"{w.url}/api/warnings/{own}", headers=h("rui"), timeout=5).json()["warning"]["state"]
        == "submitted"
    )

    # 5. a viewer sees the warning and its preview but is offered nothing
    vera = sign_in(chromium, f"{w.url}/warnings/{wid}", "vera", locale="pt-PT")
    vera.wait_for_selector("#warning:not([hidden])", timeout=10000)
    assert vera.locator("#buttons button").count() == 0 and vera.is_visible("#noactions")
    assert vera.is_disabled("#f-level") and vera.is_disabled("#f-instruction-pt")
    assert "emitido" in vera.inner_text("#state")
    vera.screenshot(path=str(SHOTS / "warning-viewer-pt-PT.png"), full_page=True)
    r = httpx.post(
        f"{w.url}/api/warnings/{wid}/commands", json={"action": "cancel"}, headers=h("vera"), timeout=10
    )
    assert r.status_code == 403

    # 6. the list holds every active and pending warning, and the newest past ones (?past=)
    r = httpx.post(
        f"{w.url}/api/warnings/{own}/commands",
        json={"action": "reject", "reason": "not needed"},
        headers=h("ana"),
        timeout=10,
    )
    assert r.status_code == 200, r.text
    listed = httpx.get(f"{w.url}/api/warnings", headers=h("ana"), timeout=5).json()
    assert own in {x["id"] for x in listed["warnings"]} and listed["past_omitted"] == 0
    listed = httpx.get(f"{w.url}/api/warnings?past=0", headers=h("ana"), timeout=5).json()
    assert own not in {x["id"] for x in listed["warnings"]} and listed["past_omitted"] == 1
    assert wid in {x["id"] for x in listed["warnings"]}  # (issued: always listed)
    r = httpx.get(f"{w.url}/api/warnings?past=1001", headers=h("ana"), timeout=5)
    assert r.status_code == 400 and r.json()["field"] == "past"


@pytest.mark.broker
def test_the_board_approves_the_version_its_form_shows(make_worker, chromium, tmp_path):  # noqa: F811
    """The board reloads a warning every 3 s but keeps its form while someone types in it: an
    approver who had touched a field kept reading the old draft (and its CAP preview) while the
    page sent the newest version with `approve`, so a warning its author changed and submitted
    again meanwhile was approved unseen. The page sends the version its form shows (refused: 409,
    then shown as it is now), and a form it refills brings its CAP preview up to date."""
    stages = ("incidents", "projection", "warnings")
    w = make_worker(
        "--stages", ",".join(stages), extra_env={"ATALAIA_CONSOLE_USERS": str(users_file(tmp_path))}
    ).start(stages)
    draft = {
        "sender": "protecao.civil@cm-porto.pt",
        "status": "Exercise",
        "level": "yellow",
        "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
        "headline": {"pt-PT": "Cheia no Douro", "en-GB": "Douro flood"},
        "instruction": {"pt-PT": "Afaste-se do rio.", "en-GB": "Keep away from the river."},
        "expires": (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).isoformat(),
        "area": {"geocodes": {"DICOFRE": ["131203"]}},
    }
    r = httpx.post(f"{w.url}/api/warnings", json={"draft": draft}, headers=h("ana"), timeout=10)
    assert r.status_code == 201, r.text
    wid = r.json()["warning"]
    path = f"{w.url}/api/warnings/{wid}/commands"

    def command(who: str, body: dict) -> None:
        r = httpx.post(path, json=body, headers=h(who), timeout=10)
        assert r.status_code == 200, r.text

    def version() -> int:
        return httpx.get(f"{w.url}/api/warnings/{wid}", headers=h("rui"), timeout=5).json()["warning"][
            "version"
        ]

    command("ana", {"action": "submit"})
    rui = sign_in(chromium, f"{w.url}/warnings/{wid}", "rui")
    rui.wait_for_function(
        "document.getElementById('cap').textContent.includes('<status>Exercise')", timeout=15000
    )
    rui.fill("#f-instruction-en", "Keep away from the riverside.")  # rui types in the form
    command("ana", {"action": "edit", "draft": {"status": "Actual", "level": "red"}})
    command("ana", {"action": "submit"})
    now = version()
    rui.wait_for_function(f"current && current.version === {now}", timeout=15000)  # reloaded
    assert rui.input_value("#f-status") == "Exercise", "the form rui types in is kept"
    msg = act(rui, "approve")
    assert "refused" in msg and "changed since" in msg, msg
    assert version() == now, "not approved"
    # the page now shows the warning as it is, its CAP preview too, and that version is approved
    rui.wait_for_function("document.getElementById('f-status').value === 'Actual'", timeout=15000)
    rui.wait_for_function(
        "document.getElementById('cap').textContent.includes('<status>Actual')", timeout=15000
    )

    # a form nobody typed in follows the warning, and its CAP preview with it
    command("ana", {"action": "edit", "draft": {"level": "orange"}})
    command("ana", {"action": "submit"})
    rui.wait_for_function(
        "document.getElementById('cap').textContent.includes('<severity>Severe')", timeout=15000
    )
    assert "refused" not in act(rui, "approve")
    detail = httpx.get(f"{w.url}/api/warnings/{wid}", headers=h("rui"), timeout=5).json()["warning"]
    assert (detail["state"], detail["level"], detail["approver"]) == ("approved", "orange", "rui"), detail


@pytest.mark.broker
def test_an_issued_warnings_page_shows_the_document_issued_and_what_an_update_would_publish(
    make_worker,
    chromium,  # noqa: F811
    tmp_path,
):
    """After its issue, a warning's page previewed its draft as a fresh Alert: another identifier
    and `sent`, and an SMS linking to a /cap/alerts/<identifier>.xml that does not exist. It shows
    the document issued (the one the link serves, with its SMS), and its preview is the Update or
    Cancel its buttons would draft: that msgType, referencing the issued document."""
    stages = ("incidents", "projection", "warnings")
    w = make_worker(
        "--stages", ",".join(stages), extra_env={"ATALAIA_CONSOLE_USERS": str(users_file(tmp_path))}
    ).start(stages)
    wid = issue_via_console(w.url)
    detail = httpx.get(f"{w.url}/api/warnings/{wid}", headers=h("ana"), timeout=5).json()["warning"]
    ident, sent = detail["identifier"], detail["sent"]
    served_xml = httpx.get(f"{w.url}{detail['cap_url']}", timeout=5).text

    ana = sign_in(chromium, f"{w.url}/warnings/{wid}", "ana")
    ana.wait_for_function(
        f"document.getElementById('issued-cap').textContent.includes('{ident}')", timeout=15000
    )
    assert ana.inner_text("#issued-cap").strip() == served_xml.strip(), "the document served, as issued"
    assert ana.is_visible("#h-issued") and "Issued" in ana.inner_text("#h-issued")
    assert ident in ana.inner_text("#issued-meta") and detail["cap_url"] in ana.inner_text("#issued-meta")
    sms = ana.inner_text("#issued-sms")
    link = re.search(r"https?://\S+/cap/alerts/\S+\.xml$", sms)
    assert link and link.group(0).endswith(detail["cap_url"]), sms
    # the preview: the Update the button drafts, referencing the issued document
    ana.wait_for_function(
        "document.getElementById('cap').textContent.includes('<msgType>Update</msgType>')", timeout=15000
    )
    cap = ana.inner_text("#cap")
    assert f"<references>protecao.civil@cm-porto.pt,{ident},{sent}</references>" in cap, cap
    assert f"<identifier>{ident}</identifier>" not in cap
    assert "Update" in ana.inner_text("#h-preview") and ident in ana.inner_text("#preview-kind")
    ana.select_option("#next-kind", "cancel")
    ana.wait_for_function(
        "document.getElementById('cap').textContent.includes('<msgType>Cancel</msgType>')", timeout=15000
    )
    assert ident in ana.inner_text("#cap") and "Cancel" in ana.inner_text("#h-preview")
    # a Cancel made on the page withdraws the advice: the form still shows the issued warning's
    # headline and instruction, which it used to send as the Cancel's own ("Douro flood: keep away
    # from the river" published as the withdrawal)
    cap = ana.inner_text("#cap")
    assert "<headline>Aviso cancelado: Cheia</headline>" in cap and "Cheia no Douro" not in cap, cap
    assert "<instruction>" not in cap, cap
    ana.screenshot(path=str(SHOTS / "warning-issued-document-and-cancel-preview.png"), full_page=True)
    before = {
        x["id"] for x in httpx.get(f"{w.url}/api/warnings", headers=h("ana"), timeout=5).json()["warnings"]
    }
    ana.fill("#w-reason", "the river is back within its banks")
    ana.click("#buttons button[data-action=cancel]")  # (the page moves to the Cancel drafted)
    ana.wait_for_url(re.compile(r".*/warnings/(?!" + re.escape(wid) + r"$).+"), timeout=15000)
    after = httpx.get(f"{w.url}/api/warnings", headers=h("ana"), timeout=5).json()["warnings"]
    (new,) = [x for x in after if x["id"] not in before]
    drafted = httpx.get(f"{w.url}/api/warnings/{new['id']}", headers=h("ana"), timeout=5).json()["warning"][
        "draft"
    ]
    assert drafted["msgType"] == "Cancel" and "instruction" not in drafted, drafted
    assert drafted["headline"] == {"pt-PT": "Aviso cancelado: Cheia", "en-GB": "Warning cancelled: Flood"}, (
        drafted
    )

    # a viewer, who may neither update nor cancel: the issued document, and no preview
    vera = sign_in(chromium, f"{w.url}/warnings/{wid}", "vera", locale="pt-PT")
    vera.wait_for_function(
        f"document.getElementById('issued-cap').textContent.includes('{ident}')", timeout=15000
    )
    assert "emitido" in vera.inner_text("#h-issued").lower() and vera.is_hidden("#preview-box")
    r = httpx.get(f"{w.url}/api/warnings/{wid}/issued", headers=h("vera"), timeout=5)
    assert r.status_code == 200 and r.json()["cap"] == served_xml, r.text
