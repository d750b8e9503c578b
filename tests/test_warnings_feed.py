"""The Atom feed of active warnings (read by feedparser) and the warnings stage core: commands in,
warning events and CAP documents out, state restored from its checkpoint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import feedparser
import orjson

from atalaia.incidents.stage import IncidentsCore
from atalaia.warnings.cap import validate
from atalaia.warnings.config import WarningsConfig
from atalaia.warnings.feed import atom_feed
from atalaia.warnings.http import feed_bytes
from atalaia.warnings.stage import WarningsCore

T0 = datetime(2026, 12, 4, 17, tzinfo=UTC)
DRAFT = {
    "sender": "protecao.civil@cm-porto.pt",
    "level": "orange",
    "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
    "headline": {"pt-PT": "Aviso laranja de cheia", "en-GB": "Orange flood warning"},
    "description": {"pt-PT": "O Douro sobe.", "en-GB": "The Douro rises."},
    "instruction": {"pt-PT": "Afaste-se da zona ribeirinha.", "en-GB": "Keep away from the riverside."},
    "expires": "2026-12-05T06:00:00+00:00",
    "area": {"desc": {"pt-PT": "Campanhã", "en-GB": "Campanhã"}, "geocodes": {"DICOFRE": ["131203"]}},
}


def record(value: dict) -> SimpleNamespace:
    return SimpleNamespace(value=orjson.dumps(value), topic="atalaia.commands", headers=[])


class Stage:
    """What the HTTP pages need of a BatchStage: its cores by partition."""

    def __init__(self, core: WarningsCore) -> None:
        self.cores = {0: core}


def run(core: WarningsCore, at: datetime, **cmd) -> list[dict]:
    outs = core.process([record({"kind": "warning", **cmd})], at.timestamp())
    assert {o.topic for o in outs} <= {"warnings"}
    return [orjson.loads(o.value) for o in outs]


def issue(core: WarningsCore, draft: dict, at: datetime) -> tuple[str, dict]:
    w = run(core, at, action="draft", actor="ana", role="operator", draft=draft)[-1]["warning"]
    run(core, at, action="submit", warning=w, actor="ana", role="operator")
    run(core, at, action="approve", warning=w, actor="rui", role="approver")
    out = run(core, at, action="issue", warning=w, actor="ana", role="operator")
    caps = [o for o in out if o["kind"] == "cap"]
    assert len(caps) == 1, out
    return w, caps[0]


def test_feed_lists_active_warnings_and_feedparser_reads_it() -> None:
    core = WarningsCore()
    cfg = WarningsConfig(base_url="https://avisos.cm-porto.example/")
    _, cap = issue(core, DRAFT, T0)
    _, cap2 = issue(core, {**DRAFT, "status": "Exercise", "level": "red"}, T0 + timedelta(minutes=5))
    feed = feedparser.parse(feed_bytes(Stage(core), cfg, now=T0 + timedelta(minutes=6)))
    assert not feed.bozo, feed.bozo_exception
    assert feed.version == "atom10"
    assert [e.id for e in feed.entries] == [
        f"https://avisos.cm-porto.example/cap/alerts/{c['identifier']}.xml" for c in (cap2, cap)
    ]
    first = feed.entries[1]
    assert first.title == "Aviso laranja de cheia"
    assert first.title.startswith("Aviso")
    assert feed.entries[0].title.startswith("[Exercise] EXERCÍCIO / EXERCISE")
    links = [link for link in first.links if link.type == "application/cap+xml"]
    assert links and links[0].href.endswith(f"/cap/alerts/{cap['identifier']}.xml")
    assert core.document(cap["identifier"]) == cap["xml"] and validate(cap["xml"].encode()) == []
    # expiry: the warning leaves the feed, its document is still served
    core.tick((T0 + timedelta(hours=14)).timestamp())
    feed = feedparser.parse(feed_bytes(Stage(core), cfg, now=T0 + timedelta(hours=14)))
    assert not feed.bozo and feed.entries == []
    assert core.document(cap["identifier"]) == cap["xml"]


def test_a_cancelled_warning_is_replaced_in_the_feed_by_its_cancel_until_it_would_have_expired() -> None:
    """A reader of the feed alone saw the warning vanish and never received the Cancel."""
    core = WarningsCore()
    w, cap = issue(core, DRAFT, T0)
    t = T0 + timedelta(hours=1)
    c = run(core, t, action="cancel", warning=w, actor="ana", role="operator", reason="river falling")[-1][
        "warning"
    ]
    run(core, t, action="submit", warning=c, actor="ana", role="operator")
    run(core, t, action="approve", warning=c, actor="rui", role="approver")
    out = run(core, t, action="issue", warning=c, actor="ana", role="operator")
    cancel = next(o for o in out if o["kind"] == "cap")
    assert cancel["msgType"] == "Cancel" and cap["identifier"] in cancel["references"][0]
    feed = feedparser.parse(feed_bytes(Stage(core), WarningsConfig(), now=t))
    assert [e.id.rsplit("/", 1)[-1] for e in feed.entries] == [f"{cancel['identifier']}.xml"]
    assert core.document(cancel["identifier"]) == cancel["xml"]
    assert "<msgType>Cancel</msgType>" in cancel["xml"]
    # once the cancelled warning would have expired, the Cancel leaves the feed too
    later = T0 + timedelta(hours=14)
    core.tick(later.timestamp())
    assert feedparser.parse(feed_bytes(Stage(core), WarningsConfig(), now=later)).entries == []


def test_stage_restores_from_its_checkpoint_and_answers_redeliveries_once() -> None:
    core = WarningsCore()
    w = run(core, T0, action="draft", actor="ana", role="operator", draft=DRAFT, id="c1")[-1]["warning"]
    run(core, T0, action="submit", warning=w, actor="ana", role="operator", id="c2")
    run(core, T0, action="approve", warning=w, actor="rui", role="approver", id="c3")
    restored = WarningsCore(state=core.snapshot())
    issue_cmd = {"action": "issue", "warning": w, "actor": "ana", "role": "operator", "id": "c4"}
    a = run(core, T0, **issue_cmd)
    b = run(restored, T0, **issue_cmd)  # a crash after approval: the replayed issue is the same one
    assert a == b and [o["kind"] for o in a].count("cap") == 1
    again = run(restored, T0, **issue_cmd)
    assert [o["kind"] for o in again] == ["reply"]


def test_incidents_leave_warning_commands_to_the_warnings_stage() -> None:
    from atalaia.incidents.config import IncidentConfig

    core = IncidentsCore(IncidentConfig())
    outs = core.process(
        [
            record(
                {"kind": "warning", "action": "approve", "warning": "W-1", "actor": "rui", "role": "approver"}
            )
        ],
        T0.timestamp(),
    )
    assert outs == []


def test_empty_feed_is_valid_atom() -> None:
    feed = feedparser.parse(atom_feed([], "http://localhost:8080", updated="2026-12-04T17:00:00+00:00"))
    assert not feed.bozo and feed.version == "atom10" and feed.feed.updated == "2026-12-04T17:00:00+00:00"


def test_a_draft_from_an_incident_renders() -> None:
    from atalaia.warnings.cap import render
    from atalaia.warnings.catalogue import Catalogue
    from atalaia.warnings.draft import Draft, problems
    from atalaia.warnings.from_incident import draft_from_incident

    cat = Catalogue.load()
    cases = [
        ({"severity": "critical", "labels": {"hazard": "flood", "parish": "Miragaia"}}, "red", ["131217"]),
        ({"severity": "medium", "correlation": {"parish": "131210"}}, "yellow", ["131210"]),
        # a union as people write it, and the name its junta uses
        (
            {
                "severity": "high",
                "correlation": {"parish": "União de Freguesias de Lordelo do Ouro e Massarelos"},
            },
            "orange",
            ["131218"],
        ),
        (
            {"severity": "high", "labels": {"parish": "União de Freguesias do Centro Histórico do Porto"}},
            "orange",
            ["131217"],
        ),
        # a name the CAOP does not know: the parish the incident's location lies in
        (
            {"severity": "high", "labels": {"parish": "Ribeira"}, "location": [-8.6115, 41.1405]},
            "orange",
            ["131217"],
        ),
        (
            {"severity": "low", "alarms": [{"labels": {"parish": "Aldoar"}, "location": [-8.677, 41.156]}]},
            "yellow",
            ["131216"],
        ),
        # nothing to go on: no area (the operator chooses), never the whole municipality
        (
            {"severity": "low", "alarms": [{"labels": {"parish": "Ribeira", "hazard": "wind"}}]},
            "yellow",
            None,
        ),
        ({"severity": "low", "labels": {"parish": "Ribeira"}, "location": [-9.5, 38.7]}, "yellow", None),
    ]
    for incident, level, codes in cases:
        d = draft_from_incident({"incident": "inc-1", **incident}, cat, "pc@cm-porto.pt", T0)
        assert d["level"] == level
        if codes is None:
            assert "area" not in d, d["area"]
            assert "missing required key 'area' (geocodes and/or a polygon)" in [
                m for _, m in problems(Draft.model_validate(d), cat)
            ]
            d["area"] = {"geocodes": {"DICOFRE": ["131217"]}}  # the operator's choice
        else:
            assert d["area"]["geocodes"] == {"DICOFRE": codes}, incident
        doc = render(Draft.model_validate(d), cat, T0)
        assert validate(doc.xml) == []


def test_feed_of_one_tenant_lists_only_its_warnings() -> None:
    """One Atalaia for several municipalities: ``/cap/feed.atom?tenant=porto`` is Porto's feed."""
    core = WarningsCore()
    cfg = WarningsConfig(base_url="https://avisos.example/")
    _, porto = issue(core, {**DRAFT, "tenant": "porto"}, T0)
    _, gaia = issue(core, {**DRAFT, "tenant": "gaia"}, T0 + timedelta(minutes=1))
    at = T0 + timedelta(minutes=2)
    everything = feedparser.parse(feed_bytes(Stage(core), cfg, now=at))
    assert len(everything.entries) == 2
    feed = feedparser.parse(feed_bytes(Stage(core), cfg, now=at, tenant="porto"))
    assert not feed.bozo, feed.bozo_exception
    assert [e.id for e in feed.entries] == [f"https://avisos.example/cap/alerts/{porto['identifier']}.xml"]
    assert feed.feed.id == "https://avisos.example/cap/feed.atom?tenant=porto"
    assert "porto" in feed.feed.title
    assert feedparser.parse(feed_bytes(Stage(core), cfg, now=at, tenant="matosinhos")).entries == []
    assert core.document(gaia["identifier"]) == gaia["xml"]


def test_feed_links_lead_to_the_running_server_unless_the_file_names_one(tmp_path) -> None:
    """With ATALAIA_HTTP_PORT=8181 the feed's id, its links and the SMS's link said
    localhost:8080 (the file's base_url): dead links. The file no longer sets it: the server's
    public URL (ATALAIA_CONSOLE_URL, else http://host:port) is used, unless a file names one."""
    from atalaia.streams.settings import CONFIG_DIR, Settings
    from atalaia.warnings.config import load_config

    running = Settings(http_port=8181).public_url()
    assert load_config(CONFIG_DIR / "warnings.yaml", running).base_url == "http://127.0.0.1:8181"
    assert (
        load_config(
            CONFIG_DIR / "warnings.yaml", Settings(console_url="https://sala.example/").public_url()
        ).base_url
        == "https://sala.example"
    )
    named = tmp_path / "w.yaml"
    named.write_text("base_url: https://avisos.example.pt\n")
    assert load_config(named, running).base_url == "https://avisos.example.pt"
