"""The console API: filters (bad ones are 400 naming the field), triage order, the actions a state
allows, the "why" of the timeline, units from the rules, 404 for unknown incidents, the delivery
log, server push, and the OpenAPI document checked by schemathesis against the live server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from atalaia.console.filters import FilterError, parse_filter
from atalaia.console.present import allowed_actions, explain, triage
from atalaia.incidents.config import DEFAULT_PERMISSIONS
from atalaia.notifiers.log import SQLiteDeliveryLog
from atalaia.notifiers.model import DeliveryResult, IncidentSnapshot, Notification
from atalaia.notifiers.render import render
from atalaia.rules.info import rule_catalog
from atalaia.streams.settings import Settings
from tests.test_incidents_live import produce

ROOT = Path(__file__).resolve().parents[1]


def served(name: str) -> str:
    """A console file as the browser gets it (pages with their shared parts in place)."""
    from atalaia.console.api import page

    return page(name).decode() if name.endswith(".html") else (ROOT / "console" / "static" / name).read_text()


# ---------------------------------------------------------------- pure parts


def test_the_boards_text_fields_take_no_more_than_the_console_accepts() -> None:
    """A reason (a comment, a rejection's), an assignee and a silence's comment have a maximum
    length the console accepts (422 beyond): the board's fields stop there, so an operator typing
    a long comment sees it end rather than have the whole command refused after sending it."""
    import re

    from atalaia.console.auth import MAX_ACTOR_CHARS
    from atalaia.incidents.commands import MAX_REASON_CHARS
    from atalaia.incidents.silences import SilenceCommand

    comment_most = next(
        m.max_length for m in SilenceCommand.model_fields["comment"].metadata if hasattr(m, "max_length")
    )
    fields = {
        ("incident.html", "reason"): MAX_REASON_CHARS,
        ("incident.html", "assignee"): MAX_ACTOR_CHARS,
        ("index.html", "dlg-reason"): MAX_REASON_CHARS,
        ("warning.html", "w-reason"): MAX_REASON_CHARS,
        ("silences.html", "comment"): comment_most,
    }
    for (name, field), most in fields.items():
        tag = re.search(rf'<input id="{field}"[^>]*>', served(name))
        assert tag is not None, (name, field)
        assert f'maxlength="{most}"' in tag.group(0), (name, tag.group(0), most)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"state": "opn"}, "state"),
        ({"severity": "huge"}, "severity"),
        ({"min_severity": "x"}, "min_severity"),
        ({"label": "parish"}, "label"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-01-01T00:00:00"}, "until"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"limit": "many"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"sort": "random"}, "sort"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_filter_names_its_field(query, field):
    with pytest.raises(FilterError) as e:
        parse_filter(query)
    assert e.value.field == field


def incident(id, state="unacknowledged", severity="high", opened="2026-01-28T10:00:00Z", **kw):
    row = {
        "id": id,
        "state": state,
        "severity": severity,
        "opened_at": opened,
        "updated_at": opened,
        "title": f"t-{id}",
        "labels": {},
        "correlation": {},
        "active": True,
    }
    return {**row, **kw}


def test_filters_select_by_state_severity_label_text_and_time():
    rows = [
        incident("a", labels={"parish": "Bonfim", "team": "hydro"}),
        incident("b", state="acknowledged", severity="critical", updated_at="2026-01-28T12:00:00Z"),
        incident("c", state="closed", severity="low"),
    ]
    ids = lambda q: [r["id"] for r in parse_filter(q).apply(rows)]  # noqa: E731
    assert ids({}) == ["a", "b"], "open by default, closed left out"
    assert ids({"state": "all"}) == ["a", "b", "c"]
    assert ids({"state": "closed"}) == ["c"]
    assert ids({"state": "acknowledged,closed"}) == ["b", "c"]
    assert ids({"severity": "critical"}) == ["b"]
    assert ids({"min_severity": "high"}) == ["a", "b"]
    assert ids({"label": "parish=Bonfim"}) == ["a"]
    assert ids({"q": "HYDRO"}) == ["a"]
    assert ids({"since": "2026-01-28T11:00:00Z"}) == ["b"]
    assert ids({"until": "2026-01-28T11:00:00+00:00"}) == ["a"]


def test_a_list_cut_by_its_limit_says_how_many_match():
    rows = [incident(f"i{n}", severity="critical" if n % 3 == 0 else "high") for n in range(10)]
    chosen, total = parse_filter({"limit": "4"}).choose(rows)
    assert len(chosen) == 4 and total == 10
    chosen, total = parse_filter({"severity": "critical", "limit": "4"}).choose(rows)
    assert [r["id"] for r in chosen] == ["i0", "i3", "i6", "i9"] and total == 4


def test_triage_puts_unacknowledged_first_then_severity_then_age():
    rows = [
        incident("acked-critical", state="acknowledged", severity="critical"),
        incident("new-medium", severity="medium", opened="2026-01-28T09:00:00Z"),
        incident("new-critical-late", severity="critical", opened="2026-01-28T11:00:00Z"),
        incident("new-critical-early", severity="critical", opened="2026-01-28T10:00:00Z"),
        incident("returned", state="returned-unacknowledged", severity="low"),
    ]
    assert [r["id"] for r in triage(rows)] == [
        "new-critical-early",
        "new-critical-late",
        "new-medium",
        "returned",
        "acked-critical",
    ]


def test_rows_offer_only_what_the_state_and_role_allow():
    perms = dict(DEFAULT_PERMISSIONS)
    assert allowed_actions(incident("x"), "operator", perms) == [
        "acknowledge",
        "shelve",
        "comment",
        "assign",
        "escalate",
    ]
    acked = allowed_actions(incident("x", state="acknowledged"), "operator", perms)
    assert "acknowledge" not in acked and "shelve" in acked
    assert allowed_actions(incident("x", state="shelved"), "operator", perms) == [
        "unshelve",
        "comment",
        "assign",
    ]
    assert allowed_actions(incident("x"), "viewer", perms) == [], "a viewer cannot act"
    assert allowed_actions(incident("x", state="closed"), "supervisor", perms) == []
    sup = allowed_actions(incident("x", state="normal", active=False), "supervisor", perms)
    assert "close" in sup and "out-of-service" in sup


def test_the_timeline_says_why_acknowledgement_is_needed_again():
    h = [
        {"version": 1, "change": "opened", "changes": ["opened"], "state": "unacknowledged", "severity": "medium"},
        {"version": 2, "change": "acknowledged", "changes": ["acknowledged"], "state": "acknowledged",
         "severity": "medium"},
        {"version": 3, "change": "alarm-updated", "changes": ["alarm-updated", "severity-changed"],
         "state": "unacknowledged", "severity": "high"},
        {"version": 4, "change": "alarm-updated", "changes": ["alarm-updated"], "state": "unacknowledged",
         "severity": "medium"},
    ]  # fmt: skip
    why = [e["why"] for e in explain(h)]
    assert why[0] == ""
    assert why[1] == "unacknowledged → acknowledged"
    assert why[2] == "severity rose from medium to high: acknowledgement required again"
    assert why[3] == "severity fell from high to medium"


def _luminance(hex_colour: str) -> float:
    r, g, b = (int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
    f = lambda c: c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4  # noqa: E731
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b)


def test_severity_badges_meet_wcag_aa_and_carry_a_shape():
    css = (ROOT / "console" / "static" / "console.css").read_text()
    for sev in ("critical", "high", "medium", "low", "informational"):
        m = re.search(rf"\.sev\.{sev} {{ background: (#[0-9a-f]{{6}}); color: (#[0-9a-f]{{3,6}}); }}", css)
        assert m, f"no colours for {sev}"
        bg, fg = m.group(1), m.group(2)
        fg = "#" + "".join(c * 2 for c in fg[1:]) if len(fg) == 4 else fg
        hi, lo = sorted((_luminance(bg), _luminance(fg)), reverse=True)
        assert (hi + 0.05) / (lo + 0.05) >= 4.5, f"{sev} badge contrast below 4.5:1"
        assert re.search(rf'\.sev\.{sev}::before {{ content: "."; }}', css), f"{sev} has no shape"


def test_links_follow_the_running_console():
    assert Settings(http_port=18123, console_url=None).public_url() == "http://127.0.0.1:18123"
    assert Settings(console_url="https://atalaia.cm-porto.pt/").public_url() == "https://atalaia.cm-porto.pt"


def test_units_and_runbooks_come_from_the_rules():
    rules = rule_catalog([ROOT / "config" / "rules"])
    assert rules["river-level-high"].unit == "m"
    assert rules["river-level-high"].runbook.startswith("https://")
    assert rules["river-flow-high"].unit == "m³/s"
    assert rules["heavy-rain"].unit == "mm"
    assert rules["no2-high"].unit == "µg/m³"
    assert rules["station-silent"].unit is None, "an absence has no value to carry a unit"
    assert rule_catalog(["/nonexistent"]) == {}


GAUGE_RULE = """rules:
  - id: {id}
    description: {description}
    select: {{type: WaterObserved, attribute: height}}
    unit: {unit}
    severities: [{{severity: high, above: 1.8}}]
    annotations: {{runbook: "https://example.org/{id}"}}
"""


def test_units_and_runbooks_follow_the_rule_files(tmp_path):
    """Rules reload while Atalaia runs; what the console and the messages say about their alarms
    follows them. Before, the console and the notifier read the rule files once, at start: the
    alarms of a rule added later were shown and paged without unit, description or runbook (and
    an edited runbook kept its old link) until a restart."""
    from atalaia.rules.info import RuleCatalog
    from atalaia.rules.loader import file_stamps

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text(GAUGE_RULE.format(id="gauge-a", description="Aldoar", unit="m"))
    catalog = RuleCatalog([rules], every_s=0)
    assert catalog["gauge-a"].unit == "m" and "gauge-b" not in catalog
    (rules / "b.yaml").write_text(GAUGE_RULE.format(id="gauge-b", description="Ramalde", unit="cm"))
    wait_for(lambda: "gauge-b" in catalog, 10, "the added rule")
    assert catalog["gauge-b"].unit == "cm" and catalog["gauge-b"].description == "Ramalde"
    assert catalog["gauge-b"].runbook == "https://example.org/gauge-b"
    (rules / "b.yaml").write_text("rules: [{id: gauge-b, select: {type: WaterObserved}")  # does not load
    wait_for(lambda: catalog.current() is not None and catalog.stamp == file_stamps([rules]), 10, "the look")
    assert catalog["gauge-b"].unit == "cm", "files that do not load leave what is shown as it was"


# ---------------------------------------------------------------- live, on the real broker


def alarm(n: int, severity: str = "high", parish: str = "Bonfim", value: float = 4.8123456) -> dict:
    at = f"2026-01-28T10:00:{n:02d}Z"
    return {
        "id": f"a{n}-{severity}",
        "at": at,
        "rule": "river-level-high",
        "group": "hydro",
        "key": f"urn:ngsi-ld:WaterObserved:g{n}",
        "state": "firing",
        "severity": severity,
        "value": value,
        "entity": f"urn:ngsi-ld:WaterObserved:g{n}",
        "type": "WaterObserved",
        "labels": {"parish": parish, "team": "hydro"},
        "annotations": {},
        "location": [-8.61, 41.14],
        "since": at,
    }


def wait_for(fn, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


class StreamReader:
    """Reads /api/stream in a thread; ``events`` collects (monotonic time, type, data)."""

    def __init__(self, url: str, headers: dict | None = None) -> None:
        self.events: list[tuple[float, str, dict]] = []
        self.status: int | None = None
        self.open = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(url, headers or {}), daemon=True)
        self.thread.start()

    def _run(self, url: str, headers: dict) -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server stops at the end of the test
            self._read(url, headers)

    def _read(self, url: str, headers: dict) -> None:
        with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(5, read=60)) as r:
            self.status = r.status_code
            self.open.set()
            kind = "message"
            for line in r.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    self.events.append((time.monotonic(), kind, json.loads(line[6:])))


@pytest.mark.broker
def test_console_api_live(make_worker, broker, topic_prefix, tmp_path):
    stages = ("incidents", "projection", "warnings")  # warnings: its console routes are fuzzed too
    w = make_worker("--stages", ",".join(stages)).start(stages)
    stream = StreamReader(f"{w.url}/api/stream")
    assert stream.open.wait(10) and stream.status == 200
    wait_for(lambda: any(k == "ping" for _, k, _ in stream.events), 10, "the first heartbeat")

    sent = time.monotonic()
    asyncio.run(produce(broker, f"{topic_prefix}.alarms", [alarm(1)]))
    pushed = wait_for(lambda: [e for e in stream.events if e[1] == "incident"], 10, "a pushed incident")
    latency = pushed[0][0] - sent
    # pushed, not polled: it comes on the stream by itself (a generous bound, not a timing test: on
    # a quiet machine it is ~0.1 s; under the suite's load a hop can take a second)
    assert latency < 5.0, f"the incident reached the board's stream {latency:.2f} s after its alarm"
    row = pushed[0][2]
    assert row["state"] == "unacknowledged" and row["severity"] == "high"
    assert "acknowledge" in row["actions"]
    iid = row["id"]

    wait_for(lambda: httpx.get(f"{w.url}/api/incidents", timeout=5).json()["incidents"], what="projection")
    body = httpx.get(f"{w.url}/api/incidents?state=unacknowledged&label=parish=Bonfim", timeout=5).json()
    assert [i["id"] for i in body["incidents"]] == [iid]
    assert body["counts"]["state"] == {"unacknowledged": 1}
    assert httpx.get(f"{w.url}/api/incidents?state=acknowledged", timeout=5).json()["incidents"] == []
    assert httpx.get(f"{w.url}/api/incidents?q=nowhere", timeout=5).json()["incidents"] == []
    r = httpx.get(f"{w.url}/api/incidents?severity=huge", timeout=5)
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["field"] == "severity"

    detail = httpx.get(f"{w.url}/api/incidents/{iid}", timeout=5).json()
    assert detail["alarms"][0]["unit"] == "m" and detail["alarms"][0]["runbook"]
    assert detail["history"][0]["why"] == "" and detail["actions"][0] == "acknowledge"

    r = httpx.get(f"{w.url}/api/incidents/nope", timeout=5)
    assert r.status_code == 404 and r.json()["status"] == 404
    r = httpx.post(
        f"{w.url}/api/incidents/nope/commands",
        json={"action": "acknowledge", "actor": "op", "role": "operator", "reason": "x"},
        timeout=10,
    )
    assert r.status_code == 404, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert httpx.get(f"{w.url}/api/incidents/nope/deliveries", timeout=5).status_code == 404
    d = httpx.get(f"{w.url}/api/incidents/{iid}/deliveries", timeout=5).json()
    assert d == {"deliveries": [], "attempts": [], "available": False}, "no notifier here: said so"
    # the notifier's delivery log in the shared data directory: who, when, channel, result
    snap = IncidentSnapshot.from_event({**row, "incident": iid, "at": row["updated_at"], "alarms": []})
    n = Notification(iid, "p", 0, 0, 0, "ana-sms", "escalation", row["updated_at"], snap)
    dlog = SQLiteDeliveryLog(tmp_path / "data" / "deliveries.sqlite")
    dlog.enqueue([(n, "sms")], 1_769_594_400.0)
    dlog.begin(n, "sms", 1, 1_769_594_400.5)
    dlog.finish(n, 1, DeliveryResult("delivered", detail="1 segment"), "delivered", 1_769_594_401.0, 500.0)
    dlog.close()
    d = httpx.get(f"{w.url}/api/incidents/{iid}/deliveries", timeout=5).json()
    assert d["available"] and len(d["deliveries"]) == 1 and len(d["attempts"]) == 1
    assert {
        k: d["deliveries"][0][k] for k in ("target", "channel", "status", "attempts", "delivered_at")
    } == {
        "target": "ana-sms",
        "channel": "sms",
        "status": "delivered",
        "attempts": 1,
        "delivered_at": "2026-01-28T10:00:01Z",
    }
    assert httpx.get(f"{w.url}/api/deliveries?limit=5", timeout=5).json()["deliveries"][0]["incident"] == iid
    assert httpx.get(f"{w.url}/api/deliveries?limit=0", timeout=5).status_code == 400

    # acknowledged, then a severity rise: the timeline says why it needs acknowledging again
    r = httpx.post(
        f"{w.url}/api/incidents/{iid}/commands",
        json={"action": "acknowledge", "actor": "ana", "role": "operator", "reason": "seen"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    asyncio.run(
        produce(broker, f"{topic_prefix}.alarms", [alarm(1, "critical") | {"at": "2026-01-28T10:00:30Z"}])
    )

    def reacked():
        h = httpx.get(f"{w.url}/api/incidents/{iid}", timeout=5).json()["history"]
        return h[-1]["state"] == "unacknowledged" and h

    history = wait_for(reacked, 15, "the severity rise in the projection")
    assert history[-1]["why"] == "severity rose from high to critical: acknowledgement required again"
    assert history[-2]["actor"] == "ana" and history[-2]["reason"] == "seen"

    page = httpx.get(f"{w.url}/incidents/{iid}", timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    # the link in SMS and email, as the delivery stage of this worker builds it, answers 200
    ev = httpx.get(f"{w.url}/api/incidents/{iid}", timeout=5).json()["incident"]
    snap = IncidentSnapshot.from_event(
        {**ev, "incident": iid, "at": ev["updated_at"], "change": "opened", "alarms": detail["alarms"]}
    )
    base = Settings(http_port=w.port, console_url=None).public_url()
    for lang in ("pt-PT", "en-GB"):
        msg = render(
            Notification(iid, "p", 0, 0, 0, "ana", "escalation", ev["updated_at"], snap), lang, None, base
        )
        (link,) = re.findall(r"http://\S+/incidents/\w+", msg.short + msg.body)[:1]
        assert httpx.get(link, timeout=5).status_code == 200, link
    doc = httpx.get(f"{w.url}/openapi.json", timeout=5).json()
    assert doc["openapi"].startswith("3.1") and "/api/incidents/{incident}/deliveries" in doc["paths"]
    assert httpx.get(f"{w.url}/docs", timeout=5).status_code == 200
    for name in ("console.js", "console.css", "i18n.json"):
        assert httpx.get(f"{w.url}/console/{name}", timeout=5).status_code == 200
    assert httpx.get(f"{w.url}/console/../api.py", timeout=5).status_code == 404

    # schemathesis against the live server: no 5xx, every response as documented
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    if st is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    out = subprocess.run(
        [
            st,
            "run",
            f"{w.url}/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--exclude-path",
            "/api/stream",
            "--max-examples",
            "25",
            "--phases",
            "examples,fuzzing",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,  # its cache stays out of the work tree
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "/api/incidents" in out.stdout and "passed" in out.stdout.lower(), out.stdout[-3000:]
    print(out.stdout[-1500:])

    # a worker with open streams still stops promptly
    late = StreamReader(f"{w.url}/api/stream")
    assert late.open.wait(10)
    t0 = time.monotonic()
    w.stop()
    assert time.monotonic() - t0 < 12, "an open event stream held the worker's shutdown"
    late.thread.join(5)
    assert not late.thread.is_alive(), "the stream ended with the worker"


@pytest.mark.broker
def test_an_added_rule_shows_its_unit_and_runbook_without_a_restart(
    make_worker, broker, topic_prefix, tmp_path
):
    """The incident page of a rule written while the console runs: its value with its unit, its
    description and runbook, once the rule file is there (before: bare values until a restart)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text(GAUGE_RULE.format(id="gauge-a", description="Aldoar", unit="m"))
    stages = ("incidents", "projection")
    env = {"ATALAIA_RULES_PATHS": json.dumps([str(rules)])}
    w = make_worker("--stages", ",".join(stages), extra_env=env).start(stages)
    asyncio.run(produce(broker, f"{topic_prefix}.alarms", [{**alarm(1), "rule": "gauge-b"}]))
    rows = wait_for(
        lambda: httpx.get(f"{w.url}/api/incidents", timeout=5).json()["incidents"], what="projection"
    )

    def shown() -> dict:
        return httpx.get(f"{w.url}/api/incidents/{rows[0]['id']}", timeout=5).json()["alarms"][0]

    assert shown()["unit"] is None, "a rule the files do not have: a bare value"
    (rules / "b.yaml").write_text(GAUGE_RULE.format(id="gauge-b", description="Ramalde", unit="cm"))
    got = wait_for(lambda: shown()["unit"] and shown(), 15, "the added rule's unit")
    assert (got["unit"], got["description"], got["runbook"]) == (
        "cm",
        "Ramalde",
        "https://example.org/gauge-b",
    )


def test_every_page_is_served_with_its_shared_parts_in_place():
    for name in ("index.html", "incident.html", "silences.html", "warnings.html", "warning.html"):
        html = served(name)
        assert "<!--#include" not in html, name
        for element in ('id="userline"', 'id="actorbox"', 'id="logout"', 'id="lang"', '<form id="login"'):
            assert html.count(element) == 1, (name, element)
        assert html.index('id="logout"') < html.index("</header>") < html.index('<form id="login"'), name


def test_no_page_sends_the_browser_for_an_icon_that_is_not_there():
    """Every page names its icon (an empty one, inline). Before, the browser asked for
    /favicon.ico, which the console does not have: a 404 shown as an error in the browser's
    console on the first page of every session, beside the ones that matter."""
    for name in ("index", "incident", "silences", "warnings", "warning", "docs"):
        html = served(f"{name}.html")
        assert '<link rel="icon" href="data:,">' in html[: html.index("</head>")], name


def test_the_board_links_to_the_silences_and_the_warnings_in_its_language():
    """An operator reaches the silences and the population warnings from the board. Before, only
    an incident page linked to /warnings, and the silences link read "Silences / Silêncios"
    whatever the language."""
    cat = json.loads((ROOT / "console" / "static" / "i18n.json").read_text())
    html = served("index.html")
    header = html[: html.index("</header>")]
    for path in ("/silences", "/warnings"):
        link = re.search(rf'<a href="{path}"[^>]*\bdata-t="([^"]+)"', header)
        assert link, f"the board's header has no translated link to {path}"
        assert cat["en-GB"][link[1]] != cat["pt-PT"][link[1]], path


def test_no_page_declares_a_function_twice():
    """A page's scripts share one global scope: a second declaration of a name silently replaces
    the first (the warnings pages' start-up `signIn` replaced the console's password sign-in)."""
    static = ROOT / "console" / "static"
    declared = re.compile(r"^(?:async\s+)?function\s+(\w+)|^(?:const|let|var|class)\s+(\w+)", re.M)
    for name in ("index", "incident", "silences", "warnings", "warning"):
        html = served(f"{name}.html")
        scripts = [
            (static / src).read_text()
            for src in re.findall(r'<script src="/console/([^"]+)"', html)
            if not src.startswith("vendor/")
        ]
        seen: dict[str, int] = {}
        for text in [*scripts, *re.findall(r"<script>(.*?)</script>", html, re.S)]:
            for m in declared.finditer(text):
                seen[m[1] or m[2]] = seen.get(m[1] or m[2], 0) + 1
        assert [n for n, count in seen.items() if count > 1] == [], name


def test_the_catalogue_has_every_key_in_both_languages():
    cat = json.loads((ROOT / "console" / "static" / "i18n.json").read_text())
    assert set(cat["pt-PT"]) == set(cat["en-GB"])
    used = set()
    for page in ("index.html", "incident.html"):
        used |= set(re.findall(r'data-t="([^"]+)"', served(page)))
    js = "".join(served(f) for f in ("index.html", "incident.html", "console.js"))
    used |= set(re.findall(r"\bt\('([a-z-]+\.[a-z_.-]+)'", js))
    assert used - set(cat["en-GB"]) == set(), "keys used but not in the catalogue"


@pytest.mark.broker
def test_the_incident_list_says_how_many_match_beyond_its_limit(make_worker, broker, topic_prefix):
    """The list stops at ``limit`` (at most 1 000): in a storm an operator saw 1 000 incidents and
    believed that was all. The answer says how many match and that the list was cut."""
    stages = ("incidents", "projection")
    w = make_worker("--stages", ",".join(stages)).start(stages)
    parishes = ["Bonfim", "Campanhã", "Paranhos", "Ramalde", "Lordelo"]
    sev = ["critical", "high", "high", "critical", "high"]
    asyncio.run(
        produce(broker, f"{topic_prefix}.alarms", [alarm(n, sev[n], p) for n, p in enumerate(parishes)])
    )
    get = lambda q: httpx.get(f"{w.url}/api/incidents{q}", timeout=5).json()  # noqa: E731
    wait_for(lambda: len(get("")["incidents"]) == 5, what="five incidents in the projection")
    body = get("?limit=2")
    assert [i["severity"] for i in body["incidents"]] == ["critical", "critical"]  # the most urgent
    assert (body["total"], body["truncated"], body["total_exact"]) == (5, True, True)
    body = get("?severity=high&limit=2")
    assert (len(body["incidents"]), body["total"], body["truncated"]) == (2, 3, True)
    body = get("")
    assert (len(body["incidents"]), body["total"], body["truncated"]) == (5, 5, False)
    body = get("?state=closed")
    assert (body["incidents"], body["total"], body["truncated"]) == ([], 0, False)
