"""One-shot shelving ("shelve until it clears", ISA-18.2) through the console: the API takes
``{"action": "shelve", "until": "clear", "reason": ...}`` (422 naming ``until`` when nothing fires:
nothing to wait for), the incident page offers "until it clears" beside the durations and says
"shelved until its alarms clear (at most until …)", and when the last alarm returns to normal the
incident is unshelved by itself, its timeline saying so in the page's language. A real worker
(incidents and projection stages on the embedded broker) and, for the page, Debian chromium."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import wait
from tests.test_console_board import SHOTS, alarm, chromium, publish  # noqa: F401  (fixtures)

pytestmark = pytest.mark.broker
STAGES = ("incidents", "projection")


def resolved(key: str, at: datetime) -> dict:
    return {**alarm(key, at), "id": f"{key}-resolved", "state": "resolved"}


def incident_of(url: str, parish: str) -> dict:
    rows = httpx.get(f"{url}/api/incidents?state=open", timeout=5).json()["incidents"]
    return next((r for r in rows if (r.get("correlation") or {}).get("parish") == parish), {})


def detail(url: str, incident: str) -> dict:
    return httpx.get(f"{url}/api/incidents/{incident}", timeout=5).json()


def shelve(url: str, incident: str, **body) -> httpx.Response:
    return httpx.post(
        f"{url}/api/incidents/{incident}/commands",
        json={"action": "shelve", "actor": "ana", "role": "operator", **body},
        timeout=15,
    )


def test_the_api_shelves_until_the_alarms_clear_and_refuses_it_when_nothing_fires(make_worker, publish):  # noqa: F811
    w = make_worker("--stages", ",".join(STAGES)).start(STAGES)
    now = datetime.now(UTC).replace(microsecond=0)
    publish(alarm("oneshot-api", now, parish="Bonfim"))
    inc = wait(lambda: incident_of(w.url, "Bonfim"), timeout=30, what="the incident in the projection")

    r = shelve(w.url, inc["id"], until="tomorrow", reason="crew on site")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "until", r.text
    r = shelve(w.url, inc["id"], until="clear")
    assert r.status_code == 409 and r.json()["detail"] == "shelve needs a reason", r.text

    r = shelve(w.url, inc["id"], until="clear", reason="crew on site")
    assert r.status_code == 200, r.text
    version = r.json()["reply"]["version"]
    d = wait(
        lambda: (x := detail(w.url, inc["id"]))["incident"]["version"] >= version and x,
        timeout=30,
        what="shelved",
    )
    shelved = d["incident"]
    assert (shelved["state"], shelved["overlay"], shelved["shelved_until_clear"]) == (
        "shelved",
        "shelved",
        True,
    )
    bound = datetime.fromisoformat(shelved["shelved_until"])
    assert timedelta(hours=8) <= bound - now <= timedelta(hours=8, minutes=2), "at most shelving.max (8 h)"
    board = incident_of(w.url, "Bonfim")
    assert board["shelved_until_clear"] is True, "the board's rows say it too"

    # its alarm returns to normal: unshelved by itself; it was never acknowledged, so it comes
    # back returned-unacknowledged (the table's footnote 1)
    publish(resolved("oneshot-api", now + timedelta(seconds=5)))
    d = wait(
        lambda: (x := detail(w.url, inc["id"]))["incident"]["overlay"] is None and x,
        timeout=30,
        what="unshelved",
    )
    assert (d["incident"]["state"], d["incident"]["shelved_until"], d["incident"]["shelved_until_clear"]) == (
        "returned-unacknowledged",
        None,
        None,
    )
    last = d["history"][-1]
    assert (last["change"], last["actor"], last["reason"], last["shelve_end"]) == (
        "unshelved",
        "policy:shelving",
        "unshelved: its alarms returned to normal",
        "cleared",
    )

    # now nothing fires: a one-shot shelve has nothing to wait for (a timed one is still taken)
    r = shelve(w.url, inc["id"], until="clear", reason="crew on site")
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["detail"] == (
        "nothing to wait for: no alarm of this incident is firing (it is returned-unacknowledged); "
        "shelve it for a duration instead"
    )
    assert problem["errors"] == [
        {
            "field": "until",
            "message": "no alarm of this incident is firing (it is returned-unacknowledged); "
            "shelve it for a duration instead",
        }
    ]
    assert shelve(w.url, inc["id"], duration="30m", reason="crew on site").status_code == 200


def test_the_incident_page_shelves_until_it_clears(make_worker, publish, chromium):  # noqa: F811
    w = make_worker("--stages", ",".join(STAGES)).start(STAGES)
    now = datetime.now(UTC).replace(microsecond=0)
    publish(alarm("oneshot-page", now, parish="Campanhã"))
    inc = wait(lambda: incident_of(w.url, "Campanhã"), timeout=30, what="the incident in the projection")

    page = chromium.new_context(locale="pt-PT", timezone_id="UTC").new_page()
    # while its alarm fires, the board's shelve dialog offers "until it clears"
    page.goto(w.url + "/")
    button = page.locator(f'tr[data-incident="{inc["id"]}"] button[data-action=shelve]')
    button.wait_for(timeout=15000)
    button.click()
    page.wait_for_selector("#dlg[open]")
    assert not page.eval_on_selector("#dlg-duration option[value=clear]", "o => o.disabled"), "it fires"
    page.goto(f"{w.url}/incidents/{inc['id']}")
    page.wait_for_selector("#incident:not([hidden])")
    page.select_option("#action", "shelve")
    options = page.eval_on_selector_all("#duration option", "os => os.map(o => [o.value, o.textContent])")
    assert ["clear", "até normalizar"] in options, "beside the durations"
    page.select_option("#duration", "clear")
    page.fill("#reason", "equipa no local")
    page.click("#send")
    page.wait_for_function("document.getElementById('msg').textContent !== ''", timeout=15000)
    assert page.inner_text("#msg") == "Arquivar: feito", page.inner_text("#msg")
    page.wait_for_function(
        "document.getElementById('facts').textContent.includes('os alarmes voltarem ao normal')",
        timeout=15000,
    )
    bound = detail(w.url, inc["id"])["incident"]["shelved_until"]
    shown = page.evaluate("t => when(t)", bound)  # (the page's time format: Lisbon time, its zone)
    assert page.inner_text("#shelved-until") == f"os alarmes voltarem ao normal (no máximo até {shown})"
    page.screenshot(path=str(SHOTS / "incident-shelved-until-clear.png"), full_page=True)
    # the board says it too, and its shelve dialog offers it
    board = page.context.new_page()
    board.goto(w.url + "/")
    state = board.locator(f'tr[data-incident="{inc["id"]}"] .state')
    state.wait_for(timeout=15000)
    until = board.evaluate("t => when(t, false)", bound)
    assert state.inner_text() == f"arquivado · até os alarmes voltarem ao normal, no máximo {until}"
    assert (
        board.eval_on_selector("#dlg-duration option[value=clear]", "o => o.textContent") == "até normalizar"
    )
    board.close()

    # the alarm returns to normal: the page follows live, its timeline says why in pt-PT
    publish(resolved("oneshot-page", now + timedelta(seconds=5)))
    page.wait_for_function(
        "document.getElementById('timeline').textContent.includes('desarquivado: os alarmes voltaram ao normal')",
        timeout=15000,
    )
    assert page.inner_text("#state") == "normalizado, por reconhecer", page.inner_text("#state")
    assert page.locator("#shelved-until").count() == 0
    # with nothing firing, "until it clears" is not offered (the manager would refuse it)
    page.select_option("#action", "shelve")
    assert page.eval_on_selector("#duration option[value=clear]", "o => o.disabled")
    page.screenshot(path=str(SHOTS / "incident-unshelved-cleared.png"), full_page=True)
    # nor in the board's shelve dialog (it offered it, and the console answered 422)
    board = page.context.new_page()
    board.goto(w.url + "/")
    button = board.locator(f'tr[data-incident="{inc["id"]}"] button[data-action=shelve]')
    button.wait_for(timeout=15000)
    button.click()
    board.wait_for_selector("#dlg[open]")
    assert board.eval_on_selector("#dlg-duration option[value=clear]", "o => o.disabled")
    assert board.eval_on_selector("#dlg-duration", "s => s.value") != "clear"
