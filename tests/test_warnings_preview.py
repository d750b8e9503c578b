"""``POST /api/warnings/preview`` and drafting, as an operations centre relies on them: the preview is
the drafting editor's (a viewer may not call it), a draft's areas are bounded (a 240 KB body of
24 000 geocodes held the whole ops process for seconds: the incident manager, the live board and the
broker's heartbeats share its event loop), the checking runs off that loop, and the preview refuses
what drafting refuses (tenancy, references, an expiry already past).

Runs the real routes of ``console/warnings_api.py`` in-process over the real workflow (the harness of
``tests/test_warnings_tenancy_hostile.py``)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from atalaia.warnings.draft import MAX_AREA_GEOCODES, MAX_GEOCODES
from tests import test_warnings_tenancy_hostile as th
from tests.test_warnings_tenancy_hostile import PORTO_SENDER, Console, draft, post


@pytest.fixture
async def console(tmp_path, monkeypatch):
    from aiohttp.test_utils import TestClient, TestServer

    monkeypatch.setitem(th.TOKENS, "vera", ("viewer", None))
    monkeypatch.setitem(th.TOKENS, "op", ("operator", None))
    c = Console(tmp_path)
    async with TestClient(TestServer(c.app())) as client:
        c.client = client
        yield c


def many_codes(n: int, start: int = 100000) -> list[str]:
    return [str(start + i) for i in range(n)]


async def test_a_viewer_may_not_preview(console) -> None:
    code, body = await post(console, "/api/warnings/preview", "vera", {"draft": draft(None, PORTO_SENDER)})
    assert code == 403 and "viewer" in body["detail"], body
    code, body = await post(console, "/api/warnings/preview", "op", {"draft": draft(None, PORTO_SENDER)})
    assert code == 200 and "<alert" in body["cap"], body


@pytest.mark.parametrize("path", ["/api/warnings/preview", "/api/warnings"])
async def test_an_area_with_too_many_geocodes_is_refused_naming_the_field(console, path) -> None:
    # the 240 KB body of the incident: 24 000 codes, under the body limit
    big = draft(None, PORTO_SENDER, area={"geocodes": {"DICOFRE": many_codes(24000)}})
    t0 = time.monotonic()
    code, body = await post(console, path, "op", {"draft": big})
    assert code == 422 and body["field"] == "draft.area.0.geocodes", body
    assert f"at most {MAX_AREA_GEOCODES}" in body["detail"] and len(body["errors"]) == 1, body
    assert time.monotonic() - t0 < 1.0, "refused before the codes are looked up one by one"
    # the total over several areas is bounded too
    areas = [{"geocodes": {"DICOFRE": many_codes(3000, 100000 + 3000 * k)}} for k in range(2)]
    code, body = await post(console, path, "op", {"draft": draft(None, PORTO_SENDER, area=areas)})
    assert code == 422 and body["field"] == "draft.area", body
    assert f"at most {MAX_GEOCODES}" in body["detail"], body
    # as are drawn shapes
    circles = [f"41.15,-8.6 {0.1 + k / 1000:.3f}" for k in range(150)]
    code, body = await post(
        console, path, "op", {"draft": draft(None, PORTO_SENDER, area={"circle": circles, "desc": "x"})}
    )
    assert code == 422 and body["field"] == "draft.area.0", body
    assert not console.core.state.warnings, "nothing reached the queue"


def test_a_polygon_written_as_cap_text_counts_as_a_shape() -> None:
    from atalaia.warnings.draft import MAX_AREA_SHAPES, size_problems

    circles = [f"41.15,-8.6 {0.1 + k / 1000:.3f}" for k in range(MAX_AREA_SHAPES)]
    text = "41.14,-8.62 41.15,-8.62 41.15,-8.61 41.14,-8.62"
    for polygon in (text, [[41.14, -8.62], [41.15, -8.62], [41.15, -8.61], [41.14, -8.62]]):
        found = size_problems({"area": {"circle": circles, "polygon": polygon}})
        assert found == [("area.0", f"at most {MAX_AREA_SHAPES} polygons and circles an area, got 101")]
    assert size_problems({"area": {"circle": circles[:-1], "polygon": text}}) == []


async def test_repeated_geocodes_count_once(console) -> None:
    same = draft(None, PORTO_SENDER, area={"geocodes": {"DICOFRE": ["131203"] * 5000}})
    code, body = await post(console, "/api/warnings/preview", "op", {"draft": same})
    assert code == 200, body
    assert body["cap"].count("<value>131203</value>") == body["cap"].count("<info>")


async def test_the_workflow_refuses_an_oversize_area_too() -> None:
    from atalaia.warnings.core import Workflow

    wf = Workflow()
    big = draft(None, PORTO_SENDER, area={"geocodes": {"DICOFRE": many_codes(MAX_AREA_GEOCODES + 1)}})
    _, out = wf.step(
        wf.initial_state(), {"action": "draft", "actor": "a", "role": "operator", "draft": big}, th.NOW
    )
    assert not out[-1].ok and "area.0.geocodes: at most" in out[-1].error, out[-1].error


async def test_checking_a_big_draft_does_not_hold_the_event_loop(console) -> None:
    """The largest draft allowed, every code unknown (each is looked up and named with the nearest
    known ones): the loop keeps ticking while it is checked."""
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            t = time.monotonic()
            await asyncio.sleep(0.005)
            lags.append(time.monotonic() - t - 0.005)

    big = draft(None, PORTO_SENDER, area={"geocodes": {"DICOFRE": many_codes(MAX_AREA_GEOCODES)}})
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    code, body = await post(console, "/api/warnings/preview", "op", {"draft": big})
    took = time.monotonic() - t0
    stop.set()
    await task
    assert code == 422 and body["field"].startswith("draft.area.0.geocodes.DICOFRE"), body
    if took < 0.2:
        pytest.skip(f"this machine checks the draft in {took:.2f}s: too fast to tell")
    assert max(lags) < took / 2, (max(lags), took)


# ---------------------------------------------------------------- the SMS the approver signs off


@pytest.fixture
async def wired(tmp_path, monkeypatch):
    """The console with an escalation file whose SMS target is a local SMSEagle gateway."""
    from aiohttp.test_utils import TestClient, TestServer

    from atalaia.notifiers.testing import HttpSink, SmtpSink
    from atalaia.streams.settings import Settings
    from tests.test_notifiers_warnings import SECRET, config_yaml

    http = await HttpSink(secret=SECRET).start()
    smtp = SmtpSink().start()
    text = config_yaml(http, smtp)
    path = tmp_path / "escalation.yaml"
    path.write_text(text)
    c = Console(tmp_path)
    c.settings = Settings(data_dir=tmp_path, console_url=None, escalation_path=path)
    async with TestClient(TestServer(c.app())) as client:
        c.client = client
        yield c, http, text
    smtp.stop()
    await http.stop()


LONG = "Afaste-se das margens do rio Douro, não estacione em zonas baixas e siga as indicações. " * 5
CASES = {
    "diacritics": {
        "event": {"pt-PT": "Inundação", "en-GB": "Flood"},
        "instruction": {"pt-PT": "Não atravesse.", "en-GB": "Do not cross."},
    },
    "long": {"instruction": {"pt-PT": LONG, "en-GB": "Keep away."}, "description": {"pt-PT": LONG}},
    "exercise": {
        "status": "Exercise",
        "instruction": {"pt-PT": "Simulacro: evacuação às 10h.", "en-GB": "Drill: evacuation at 10:00."},
    },
    "control characters": {"event": {"pt-PT": "Cheia\r\nBcc: x@y.pt", "en-GB": "Flood"}},
}


async def test_the_sms_preview_is_the_sms_sent(wired) -> None:
    """For each draft the preview's SMS (text, encoding, segments) is what the SMS target receives
    once the warning is issued and delivered: an Alert with diacritics, a long one, an exercise, an
    event with CR/LF, and an Update and a Cancel of an issued warning."""
    from atalaia.notifiers.sms import segments
    from atalaia.warnings.core import Workflow
    from tests.test_notifiers_warnings import deliver_twice
    from tests.test_warnings_cap import shared_checks
    from tests.test_warnings_tenancy_hostile import issue_via_api

    c, http, cfg_text = wired
    base = draft(None, PORTO_SENDER)
    cases = [
        (name, {**base, **extra, "identifier": f"PT-TEST-{k}"})
        for k, (name, extra) in enumerate(CASES.items())
    ]
    done = 0
    for name, d in [*cases, ("update", None), ("cancel", None)]:
        if d is None:  # an Update of the first warning issued, then a Cancel of that Update
            ref = "PT-TEST-0" if name == "update" else "PT-TEST-update"
            first = next(w for w in c.core.state.warnings.values() if w.identifier == ref)
            kind = "Update" if name == "update" else "Cancel"
            d = {**first.draft, "msgType": kind, "references": [ref], "identifier": f"PT-TEST-{name}"}
            d.pop("tenant", None)
            if kind == "Update":
                d["level"] = "red"
        code, pv = await post(c, "/api/warnings/preview", "ana", {"draft": d})
        assert code == 200, (name, pv)
        wid = await issue_via_api(c, d, "ana", "app")
        cap = Workflow._cap_record(c.core.state.warnings[wid])
        assert cap.identifier == d["identifier"]
        for xml in (pv["cap"], cap.xml):  # the shared CAP 1.2 validator (XSD and text rules)
            assert shared_checks(xml.encode()) == [], (name, xml)
        await deliver_twice(cfg_text, cap, c.settings.data_dir / name)
        got = [r.json["params"]["message"] for r in http.received("/jsonrpc/sms")][done:]
        done += len(got)
        assert [t["target"] for t in pv["sms_targets"]] == ["ana-sms"], (name, pv["sms_targets"])
        assert got == [pv["sms"]["text"]] == [t["text"] for t in pv["sms_targets"]], name
        (text,) = got
        assert (pv["sms"]["segments"], pv["sms"]["encoding"]) == segments(text), name
        assert text.endswith(f"https://atalaia.cm-porto.pt/cap/alerts/{d['identifier']}.xml"), text
        assert "\r" not in text and "\n" not in text, text
    assert done == len(cases) + 2


# ---------------------------------------------------------------- refused when drafted, not at issue


async def test_a_full_reference_with_a_wrong_sent_is_refused_when_drafted(console) -> None:
    """``sender,identifier,sent`` naming a warning issued here with another sent was accepted,
    submitted and approved, and only issuing refused it (409)."""
    from tests.test_warnings_tenancy_hostile import cancel_of, issue_via_api

    c = console
    wid = await issue_via_api(c, draft(None, PORTO_SENDER), "ana", "app")
    w = c.core.state.warnings[wid]
    wrong = f"{PORTO_SENDER},{w.identifier},2026-01-01T00:00:00+00:00"
    for path in ("/api/warnings/preview", "/api/warnings"):
        for kind in ("Cancel", "Update", "Alert"):
            code, body = await post(
                c, path, "ana", {"draft": cancel_of(wrong, None, PORTO_SENDER, msgType=kind, level="orange")}
            )
            assert code == 422 and body["field"] == "draft.references.0", (path, kind, body)
            assert "does not name the warning issued here" in body["detail"] and w.sent in body["detail"], (
                body
            )
    # the workflow says so on drafting too (a command on atalaia.commands)
    wf = c.wf
    _, out = wf.step(
        c.core.state,
        {
            "action": "draft",
            "actor": "ana",
            "role": "operator",
            "draft": cancel_of(wrong, "porto", PORTO_SENDER),
        },
        th.NOW,
    )
    assert not out[-1].ok and "references.0" in out[-1].error, out[-1].error
    # the right triple, also with the same instant written at another offset, is fine
    from datetime import datetime, timedelta, timezone

    later = datetime.fromisoformat(w.sent).astimezone(timezone(timedelta(hours=1))).isoformat()
    for sent in (w.sent, later):
        right = f"{PORTO_SENDER},{w.identifier},{sent}"
        code, body = await post(
            c, "/api/warnings/preview", "ana", {"draft": cancel_of(right, None, PORTO_SENDER)}
        )
        assert code == 200, (sent, body)


@pytest.mark.parametrize("action", ["cancel", "update"])
async def test_a_warning_never_issued_cannot_be_cancelled_or_updated(console, action) -> None:
    c = console
    code, body = await post(c, "/api/warnings", "ana", {"draft": draft(None, PORTO_SENDER)})
    assert code == 201, body
    wid = body["warning"]
    code, body = await post(c, f"/api/warnings/{wid}/commands", "ana", {"action": action})
    assert code == 409, body
    assert body["detail"] == f"cannot {action} a warning that is draft (only an issued one)", body
    assert "reference" not in body["detail"]
    w = c.core.state.warnings[wid]
    assert w.state == "draft" and w.audit[-1].action == action and not w.audit[-1].ok


async def test_the_preview_applies_the_senders_and_tenant_areas_of_the_warnings_file(console) -> None:
    """A gaia user previewed a draft with Porto's sender on a Porto parish and got a valid-looking
    CAP (200), while drafting it was refused."""
    from atalaia.warnings.config import WarningsConfig
    from atalaia.warnings.core import Workflow

    c = console
    c.wf = c.core.workflow = Workflow(
        WarningsConfig(
            senders={"porto": (PORTO_SENDER,), "gaia": (th.GAIA_SENDER,)},
            tenant_areas={"porto": ("1312",), "gaia": ("1317",)},
        )
    )
    for path in ("/api/warnings/preview", "/api/warnings"):
        code, body = await post(c, path, "gop", {"draft": draft(None, PORTO_SENDER)})
        assert code == 422, (path, body)
        fields = {e["field"] for e in body["errors"]}
        assert fields == {"draft.sender", "draft.area.0.geocodes.DICOFRE.0"}, (path, body)
        code, body = await post(c, path, "gop", {"draft": draft(None, th.GAIA_SENDER)})
        assert code == 422 and body["field"] == "draft.area.0.geocodes.DICOFRE.0", (path, body)
    assert not c.core.state.warnings
    # porto's own draft: fine in both
    code, body = await post(c, "/api/warnings/preview", "ana", {"draft": draft(None, PORTO_SENDER)})
    assert code == 200, body
    code, body = await post(c, "/api/warnings", "ana", {"draft": draft(None, PORTO_SENDER)})
    assert code == 201, body


# ---------------------------------------------------------------- an expiry already past; short texts


async def test_a_draft_that_has_expired_already_is_refused_when_drafted(console) -> None:
    from datetime import timedelta

    c = console
    past = (th.NOW - timedelta(hours=1)).isoformat()
    for path in ("/api/warnings/preview", "/api/warnings"):
        code, body = await post(c, path, "ana", {"draft": draft(None, PORTO_SENDER, expires=past)})
        assert code == 422 and body["field"] == "draft.expires", (path, body)
        assert "already past" in body["detail"], body
    assert not c.core.state.warnings
    # an edit that leaves it past, too; the workflow refuses a command drafting one
    code, body = await post(c, "/api/warnings", "ana", {"draft": draft(None, PORTO_SENDER)})
    assert code == 201, body
    wid = body["warning"]
    code, body = await post(
        c, f"/api/warnings/{wid}/commands", "ana", {"action": "edit", "draft": {"expires": past}}
    )
    assert code == 422 and body["field"] == "draft.expires", body
    _, out = c.wf.step(
        c.wf.initial_state(),
        {
            "action": "draft",
            "actor": "a",
            "role": "operator",
            "draft": draft("porto", PORTO_SENDER, expires=past),
        },
        th.NOW,
    )
    assert not out[-1].ok and "expires: " in out[-1].error and "already past" in out[-1].error


def test_short_texts_are_one_line_and_the_email_names_lisbon_time() -> None:
    """CR/LF in an event or an area's name reached the SMS as is ("Cheia\\r\\nBcc: ..."), and the
    pt-PT email said "(hora de Europe/Lisbon)"."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from atalaia.notifiers.warning import email, parse_cap, sms_message
    from atalaia.warnings.cap import render
    from atalaia.warnings.catalogue import Catalogue
    from atalaia.warnings.draft import Draft

    sent = datetime(2026, 12, 4, 17, tzinfo=UTC)
    d = Draft.model_validate(
        draft(
            None,
            PORTO_SENDER,
            event={"pt-PT": "Cheia\r\nBcc: x@y.pt\x85", "en-GB": "Flood\nX"},
            area={"geocodes": {"DICOFRE": ["131203"]}, "desc": {"pt-PT": "Campanhã\r\n\tRibeira"}},
            onset=sent.isoformat(),
            expires=(sent + timedelta(hours=12)).isoformat(),
        )
    )
    w = parse_cap(render(d, Catalogue.load(), sent).xml)
    tz = ZoneInfo("Europe/Lisbon")
    sms = sms_message(w, tz, link="https://x.pt/cap/alerts/1.xml").text
    assert sms.startswith("Aviso laranja - Cheia Bcc: x@y.pt. Campanha Ribeira. De 04/12 17:00"), sms
    subject, body = email(w, tz)
    assert "\r" not in subject and "\n" not in subject and "\x85" not in subject, subject
    assert subject.startswith(
        "Aviso laranja - Cheia Bcc: x@y.pt / Orange warning - Flood X — Campanhã Ribeira"
    ), subject
    assert "(hora de Lisboa)" in body and "(Lisbon time)" in body and "Europe/Lisbon" not in body, body


@pytest.mark.parametrize("path", ["/api/warnings/preview", "/api/warnings"])
async def test_a_reference_to_a_later_message_is_refused_by_the_preview_and_drafting(console, path) -> None:
    """The preview showed a valid-looking Update referencing a message sent next year (a typo),
    and drafting took it: only issuing refused it, after the approval."""
    later = f"{PORTO_SENDER},PT-EXT-9,{(th.NOW + timedelta(days=365)).isoformat()}"
    update = draft(None, PORTO_SENDER, msgType="Update", references=[later])
    code, body = await post(console, path, "op", {"draft": update})
    assert code == 422 and body["field"] == "draft.references.0", body
    assert "was sent after this message" in body["detail"], body
    earlier = f"{PORTO_SENDER},PT-EXT-9,{(th.NOW - timedelta(days=1)).isoformat()}"
    code, body = await post(console, path, "op", {"draft": {**update, "references": [earlier]}})
    assert code in (200, 201), body


async def test_the_preview_and_the_draft_answer_say_the_boundaries_were_simplified(
    console, monkeypatch
) -> None:
    """A warning whose areas file's boundaries make its CAP document too big was refused (422, 'its
    CAP document would be about ...'): the boundaries are now simplified to fit, and the preview
    and the draft's answer say so (here with the bound lowered, so Porto's parishes are too many)."""
    from atalaia.warnings import cap

    monkeypatch.setattr(cap, "MAX_CAP_BYTES", 12 * 1024)
    every = ["131202", "131203", "131210", "131211", "131216", "131217", "131218"]
    big = draft(None, PORTO_SENDER, area={"geocodes": {"DICOFRE": every, "DICO": ["1312"]}})
    code, body = await post(console, "/api/warnings/preview", "op", {"draft": big})
    assert code == 200, body
    assert len(body["cap"].encode()) <= 12 * 1024 and body["cap"].count("<polygon>") == 16
    (note,) = [n for n in body["notes"] if "boundaries" in n]
    assert note.startswith("the boundaries the areas file gives for the geocodes were simplified"), note
    assert "to fit the 12 KiB a warning may be" in note, note
    code, body = await post(console, "/api/warnings", "op", {"draft": big})
    assert code == 201 and body["notes"] == [note], body
    code, body = await post(console, "/api/warnings", "op", {"draft": draft(None, PORTO_SENDER)})
    assert code == 201 and body["notes"] == [], body
