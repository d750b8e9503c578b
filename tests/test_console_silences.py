"""Runtime silences through the console: the API (201/200, 401, 403 by role, 422 naming the field,
404, 409 for a maintenance window of incidents.yaml) and, in a real browser, "silence like this"
from an incident page, after which the next notification is withheld while the incident is still
recorded. Screenshots go to tests/screenshots/ (or $ATALAIA_SCREENSHOTS)."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.test_console_board import SHOTS, alarm, chromium, publish  # noqa: F401 (fixtures)

pytestmark = pytest.mark.broker


def wait_for(fn, timeout: float = 20.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(every)
    return fn()


def test_silences_api_roles_validation_and_expiry(make_worker, tmp_path):
    users = tmp_path / "users.yaml"
    tok = lambda s: hashlib.sha256(s.encode()).hexdigest()  # noqa: E731
    users.write_text(
        "users:\n"
        f"  - {{actor: vera, role: viewer, token_sha256: {tok('v')}}}\n"
        f"  - {{actor: rui, role: supervisor, token_sha256: {tok('s')}}}\n"
    )
    incidents = tmp_path / "incidents.yaml"
    incidents.write_text(
        "maintenance:\n  - {name: gauge-swap, matchers: ['entity=\"x\"'], start: 2026-01-01T00:00:00Z,"
        " end: 2099-01-01T00:00:00Z, reason: swap}\n"
    )
    w = make_worker(
        "--stages",
        "incidents,projection",
        extra_env={"ATALAIA_CONSOLE_USERS": str(users), "ATALAIA_INCIDENTS_PATH": str(incidents)},
    ).start(("incidents", "projection"))
    sup, viewer = {"Authorization": "Bearer s"}, {"Authorization": "Bearer v"}
    body = {"matchers": ['parish="Ribeira"', 'rule=~"river-.*"'], "comment": "works", "duration": "1h"}
    url = f"{w.url}/api/silences"
    assert httpx.get(url, timeout=5).status_code == 401
    assert httpx.post(url, json=body, timeout=5).status_code == 401
    r = httpx.post(url, json=body, headers=viewer, timeout=5)
    assert r.status_code == 403 and "viewer" in r.json()["detail"]
    bad = httpx.post(url, json={**body, "matchers": ['parish=~"(oops"']}, headers=sup, timeout=5)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "matchers"
    assert "regular expression" in bad.json()["detail"]
    # each matcher names a value, yet together they match every alarm (all have a rule)
    everything = httpx.post(url, json={**body, "matchers": ['rule=~".+"']}, headers=sup, timeout=5)
    assert everything.status_code == 422 and everything.json()["errors"][0]["field"] == "matchers"
    assert "every alarm" in everything.json()["detail"]
    nocomment = httpx.post(url, json={**body, "comment": ""}, headers=sup, timeout=5)
    assert nocomment.status_code == 422 and nocomment.json()["errors"][0]["field"] == "comment"
    assert httpx.post(url, content=b"x", headers=sup, timeout=5).status_code == 415
    r = httpx.post(url, json=body, headers=sup, timeout=10)
    assert r.status_code == 201, r.text
    sid = r.json()["silence"]
    assert sid.startswith("s-")
    listed = wait_for(
        lambda: [s for s in httpx.get(url, headers=viewer, timeout=5).json()["silences"] if s["id"] == sid]
    )
    assert listed and listed[0]["status"] == "active" and listed[0]["author"] == "rui"
    assert listed[0]["matchers"] == body["matchers"] and listed[0]["comment"] == "works"
    maint = [
        s for s in httpx.get(url, headers=viewer, timeout=5).json()["silences"] if s["source"] == "config"
    ]
    assert maint and maint[0]["name"] == "gauge-swap" and maint[0]["status"] == "active"
    assert httpx.delete(f"{url}/{maint[0]['id']}", headers=sup, timeout=5).status_code == 409
    assert httpx.delete(f"{url}/{sid}", headers=viewer, timeout=5).status_code == 403
    assert httpx.delete(f"{url}/{sid}", headers=sup, timeout=10).status_code == 200
    assert httpx.delete(f"{url}/s-nope", headers=sup, timeout=10).status_code == 404
    gone = wait_for(
        lambda: [
            s
            for s in httpx.get(url, params={"status": "expired"}, headers=viewer, timeout=5).json()[
                "silences"
            ]
            if s["id"] == sid
        ]
    )
    assert gone and gone[0]["expired_by"] == "rui"
    assert httpx.get(url, params={"status": "soon"}, headers=viewer, timeout=5).status_code == 400


def test_create_a_silence_and_see_the_next_notification_withheld(make_worker, publish, tmp_path, chromium):  # noqa: F811
    from atalaia.notifiers.testing import SmtpSink

    smtp = SmtpSink().start()
    try:
        policy = tmp_path / "escalation.yaml"
        policy.write_text(
            "timezone: Europe/Lisbon\nlang: en-GB\n"
            f'targets:\n  ana-email: {{channel: email, url: "{smtp.mailto("ana@cm-porto.pt")}"}}\n'
            "routes: [{policy: p}]\npolicies:\n  p:\n    steps:\n      - {targets: [ana-email], wait: 10m}\n"
        )
        stages = ("incidents", "projection", "escalation", "delivery")
        w = make_worker(
            "--stages", ",".join(stages), extra_env={"ATALAIA_ESCALATION_PATH": str(policy)}
        ).start(stages)
        now = datetime.now(UTC).replace(microsecond=0)
        publish(alarm("p1", now, "high", parish="Paranhos", value=3.7))
        assert wait_for(lambda: smtp.messages, 30), "the first page was delivered"
        inc = httpx.get(f"{w.url}/api/incidents", timeout=5).json()["incidents"][0]
        ack = httpx.post(
            f"{w.url}/api/incidents/{inc['id']}/commands",
            json={"action": "acknowledge", "actor": "ana", "role": "operator", "reason": "on it"},
            timeout=10,
        )
        assert ack.status_code == 200, ack.text

        page = chromium.new_context(locale="en-GB").new_page()
        page.goto(f"{w.url}/incidents/{inc['id']}")
        page.wait_for_selector("#incident:not([hidden])", timeout=10000)
        page.click("#silence-like")
        page.wait_for_selector("#silform")
        page.wait_for_function("document.getElementById('matchers').value !== ''", timeout=10000)
        assert 'parish="Paranhos"' in page.input_value("#matchers")
        assert 'rule="river-level-high"' in page.input_value("#matchers")
        page.fill("#comment", "crew working at the Paranhos gauge")
        page.select_option("#duration", "2h")
        page.screenshot(path=str(SHOTS / "silence-new.png"), full_page=True)
        page.click("#create")
        page.wait_for_function(
            "document.getElementById('msg').textContent.includes('created')", timeout=10000
        )
        page.wait_for_selector("tr[data-silence]", timeout=10000)
        assert "crew working" in page.inner_text("#silences") and "active" in page.inner_text("#silences")
        page.screenshot(path=str(SHOTS / "silence-created.png"), full_page=True)

        # the next page for Paranhos (a critical alarm needs acknowledgement again) is withheld ...
        publish(alarm("p2", now + timedelta(seconds=5), "critical", parish="Paranhos", value=4.9))
        # ... while another parish still pages: the pipeline is live
        publish(alarm("b1", now + timedelta(seconds=6), "high", parish="Bonfim", value=3.1))
        assert wait_for(lambda: len(smtp.messages) >= 2, 30)
        time.sleep(2.0)
        assert len(smtp.messages) == 2, [m.text[:80] for m in smtp.messages]
        assert "Bonfim" in smtp.messages[1].text and "Paranhos" not in smtp.messages[1].text

        # ... and the silenced incident is still recorded, its timeline saying by which silence
        d = wait_for(
            lambda: (
                x
                if (x := httpx.get(f"{w.url}/api/incidents/{inc['id']}", timeout=5).json())["incident"][
                    "alarm_count"
                ]
                == 2
                else None
            )
        )
        assert d["incident"]["state"] == "suppressed" and d["incident"]["severity"] == "critical"
        assert any("silenced by s-" in h["reason"] for h in d["history"])
        page.goto(f"{w.url}/incidents/{inc['id']}")
        page.wait_for_function(
            "document.getElementById('timeline').textContent.includes('silenced by')", timeout=10000
        )
        page.screenshot(path=str(SHOTS / "silence-incident-recorded.png"), full_page=True)
        page.context.close()
    finally:
        smtp.stop()


def test_a_silence_made_in_the_console_survives_a_worker_restart(make_worker, publish):  # noqa: F811
    stages = ("incidents", "projection")
    w = make_worker("--stages", ",".join(stages)).start(stages)
    body = {"matchers": ['parish="Aldoar"'], "comment": "survives", "duration": "2h"}
    # the demo console (no users) trusts actor and role as sent, as for incident commands: a
    # viewer may not silence, and the audit names who did (it said "operator" for anyone)
    viewer = httpx.post(f"{w.url}/api/silences", json={**body, "actor": "vera", "role": "viewer"}, timeout=10)
    assert viewer.status_code == 403, viewer.text
    r = httpx.post(f"{w.url}/api/silences", json={**body, "actor": "ana", "role": "operator"}, timeout=10)
    assert r.status_code == 201, r.text
    sid = r.json()["silence"]
    assert [s["author"] for s in httpx.get(f"{w.url}/api/silences", timeout=5).json()["silences"]] == ["ana"]
    assert w.stop() == 0
    w2 = make_worker("--stages", ",".join(stages), port=w.port).start(stages)
    publish(alarm("a1", datetime.now(UTC).replace(microsecond=0), "high", parish="Aldoar"))
    inc = wait_for(lambda: httpx.get(f"{w2.url}/api/incidents", timeout=5).json()["incidents"], 30)
    assert inc and inc[0]["state"] == "suppressed"
    d = httpx.get(f"{w2.url}/api/incidents/{inc[0]['id']}", timeout=5).json()
    assert any(f"silenced by {sid}" in h["reason"] for h in d["history"])
    listed = httpx.get(f"{w2.url}/api/silences", timeout=5).json()["silences"]
    assert [s["id"] for s in listed] == [sid]
