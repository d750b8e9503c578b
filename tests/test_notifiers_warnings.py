"""Issue 12: population warnings on the escalation channels.

SMS segment counting against a reference GSM 03.38 encoder (the ``gsm0338`` codec) and UTF-16;
an issued warning reaches real local servers (aiosmtpd SMTP, an aiohttp NGSI-LD broker, signed
webhook and SMSEagle gateway) exactly once per target, also when replayed; an Exercise warning
never reaches a target not marked for exercises; a ``propose_warning`` step drafts a warning and
publishes nothing."""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import gsm0338  # noqa: F401 - registers the "gsm03.38" codec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.notifiers.config import load_config_text
from atalaia.notifiers.log import SQLiteDeliveryLog
from atalaia.notifiers.pipeline import Backoff
from atalaia.notifiers.service import Notifier
from atalaia.notifiers.sms import GSM7_BASIC, GSM7_EXT, fit, segments
from atalaia.notifiers.stage import EscalationCore, WarningNoticesCore
from atalaia.notifiers.testing import HttpSink, SmtpSink, incident_event
from atalaia.notifiers.warning import alert_entity_id, warning_notification_id, warning_notifications
from atalaia.streams.clock import parse_time
from atalaia.warnings.config import WarningsConfig
from atalaia.warnings.core import Workflow
from atalaia.warnings.records import CapRecord
from atalaia.warnings.stage import WarningsCore

SECRET = "porto-webhook-secret"
MARK = "EXERCÍCIO / EXERCISE"
SMS_MARK = "EXERCICIO / EXERCISE"  # (an SMS is GSM-7: Í is not in it)

# ------------------------------------------------------------------ SMS segments vs a reference


def reference_segments(text: str) -> tuple[int, str]:
    """Encode for real and split as a gateway would: GSM 03.38 septets (the ``gsm0338`` codec,
    an escape pair never split) in 160 / 153, else UTF-16 code units (a surrogate pair never
    split) in 70 / 67."""
    try:
        data, unit, enc = text.encode("gsm03.38"), 1, "gsm7"
    except UnicodeEncodeError:
        data, unit, enc = text.encode("utf-16-be"), 2, "ucs2"
    single, multi = (160, 153) if enc == "gsm7" else (70, 67)
    if len(data) // unit <= single:
        return 1, enc
    count, i = 0, 0
    while i < len(data):
        end = min(i + multi * unit, len(data))
        if end < len(data):
            if enc == "gsm7" and data[end - 1] == 0x1B:  # the escape and its character stay together
                end -= 1
            if enc == "ucs2" and 0xD8 <= data[end - 2] <= 0xDB:  # a high surrogate stays with its pair
                end -= 2
        count, i = count + 1, end
    return count, enc


PT = "ãõçáíóúâêôÁÍÓÚÃÕÊÔ"  # pt-PT letters outside GSM-7 (é à Ç are in it)
ALPHABET = "".join(sorted(GSM7_BASIC | GSM7_EXT)) + PT + "🌊€"
texts = st.text(alphabet=ALPHABET, max_size=700) | st.text(
    alphabet="".join(sorted(GSM7_BASIC | GSM7_EXT)), max_size=700
)


@settings(max_examples=400, deadline=None)
@given(texts)
def test_segments_match_a_reference_encoder(text: str) -> None:
    assert segments(text) == reference_segments(text)


@settings(max_examples=200, deadline=None)
@given(texts, st.integers(1, 4))
def test_warning_sms_fits_its_segments_without_transliteration(text: str, n: int) -> None:
    body = fit(MARK + ": " + text, n, translit=False)
    assert reference_segments(body)[0] <= n
    assert body.startswith(MARK)  # the mark is never cut, never transliterated


def test_portuguese_accents() -> None:
    assert segments("Cheia: evacuação da Ribeira")[1] == "ucs2"  # ç, ã: not in GSM-7
    assert segments("Atenção")[1] == "ucs2"
    assert segments("Évora à noite, Ç")[1] == "gsm7"  # É, à, Ç are GSM-7
    assert segments("x" * 160) == (1, "gsm7") and segments("x" * 161) == (2, "gsm7")
    assert segments("€" * 80) == (1, "gsm7") and segments("€" * 81) == (2, "gsm7")  # 2 septets each
    assert segments("ã" * 70) == (1, "ucs2") and segments("ã" * 71) == (2, "ucs2")


# ------------------------------------------------------------------ delivery to local servers


def config_yaml(http: HttpSink, smtp: SmtpSink, exercises: str = "marked") -> str:
    port = http.url.rsplit(":", 1)[1]
    return f"""
timezone: Europe/Lisbon
console_url: https://atalaia.cm-porto.pt
targets:
  pgu: {{channel: ngsi-ld, url: "{http.url}", tenant: porto}}
  sala: {{channel: webhook, url: "{http.url}/hook", secret: "${{HOOK_SECRET}}"}}
  sala-cap: {{channel: webhook, url: "{http.url}/cap", secret: "${{HOOK_SECRET}}", warning_format: cap}}
  ana-sms: {{channel: sms, url: "smseagle://tok3n@127.0.0.1:{port}/+351912000001", max_sms_segments: 3}}
  ana-email: {{channel: email, url: "{smtp.mailto("ana.silva@cm-porto.pt")}"}}
  rui-email: {{channel: email, url: "{smtp.mailto("rui.costa@cm-porto.pt")}", lang: en-GB}}
  drill-email: {{channel: email, url: "{smtp.mailto("simulacro@cm-porto.pt")}"}}
warnings:
  exercises: {exercises}
  targets:
    - pgu
    - sala
    - sala-cap
    - {{target: ana-sms, exercise: true}}
    - ana-email
    - rui-email
    - {{target: drill-email, exercise: only}}
"""


DRAFT = {
    "sender": "protecao.civil@cm-porto.pt",
    "level": "orange",
    "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
    "headline": {"pt-PT": "Aviso laranja de cheia no Douro", "en-GB": "Orange flood warning on the Douro"},
    "description": {
        "pt-PT": "Subida do nível do rio Douro na zona ribeirinha de Campanhã.",
        "en-GB": "The Douro is rising along the Campanhã riverside.",
    },
    "instruction": {
        "pt-PT": "Evite a zona ribeirinha e retire viaturas das zonas baixas.",
        "en-GB": "Avoid the riverside and move vehicles away from low areas.",
    },
    "area": {"geocodes": {"DICOFRE": ["131203"]}},
}
T0 = datetime(2026, 12, 4, 17, tzinfo=UTC)


def issue(status: str = "Actual", **extra) -> CapRecord:
    """A warning drafted by ana, approved by rui, issued: its ``kind: "cap"`` record."""
    wf = Workflow()
    st_ = wf.initial_state()
    draft = {
        **DRAFT,
        "status": status,
        "onset": T0.isoformat(),
        "expires": (T0 + timedelta(hours=12)).isoformat(),
        **extra,
    }
    st_, out = wf.step(st_, {"action": "draft", "actor": "ana", "role": "operator", "draft": draft}, T0)
    wid = out[0].warning
    for cmd in (
        {"action": "submit", "actor": "ana", "role": "operator"},
        {"action": "approve", "actor": "rui", "role": "approver"},
        {"action": "issue", "actor": "ana", "role": "operator"},
    ):
        st_, out = wf.step(st_, {**cmd, "warning": wid}, T0)
    (cap,) = [o for o in out if o.kind == "cap"]
    return cap


@pytest.fixture
async def servers():
    http = await HttpSink(secret=SECRET).start()
    smtp = SmtpSink().start()
    yield http, smtp
    smtp.stop()
    await http.stop()


async def deliver_twice(cfg_text: str, cap: CapRecord, tmp_path: Path):
    """Deliver the warning's notifications, then replay the same record (a crash and replay):
    the second pass must send nothing."""
    cfg = load_config_text(cfg_text, "test.yaml")
    log = SQLiteDeliveryLog(tmp_path / "deliveries.sqlite")
    notifier = Notifier(cfg, log, env={"HOOK_SECRET": SECRET}, backoff=Backoff(0.05, 0.4))
    await notifier.start()
    try:
        notes = warning_notifications(cap, cfg)
        delivered = await notifier.deliver(notes)
        again = await notifier.deliver(warning_notifications(cap, cfg))
    finally:
        await notifier.aclose()
    return notes, delivered, again, log


async def test_an_issued_warning_reaches_every_channel_once(servers, tmp_path) -> None:
    http, smtp = servers
    cap = issue()
    notes, delivered, again, log = await deliver_twice(config_yaml(http, smtp), cap, tmp_path)
    targets = {"pgu", "sala", "sala-cap", "ana-sms", "ana-email", "rui-email"}
    assert {n.target for n in delivered} == targets and again == []
    assert {n.id for n in notes} == {warning_notification_id(cap.identifier, cap.version, t) for t in targets}
    rows = log.deliveries(incident=cap.identifier)
    assert {(r.target, r.status, r.kind) for r in rows} == {(t, "delivered", "warning") for t in targets}

    # email: both languages in each, the target's language first
    by_rcpt = {m.rcpt_tos[0]: m for m in smtp.messages}
    assert set(by_rcpt) == {"ana.silva@cm-porto.pt", "rui.costa@cm-porto.pt"}  # not the drill mailbox
    ana, rui = by_rcpt["ana.silva@cm-porto.pt"], by_rcpt["rui.costa@cm-porto.pt"]
    assert ana.subject == "Aviso laranja - Cheia / Orange warning - Flood — Campanhã"
    assert rui.subject == "Orange warning - Flood / Aviso laranja - Cheia — Campanhã"
    for mail in (ana, rui):
        assert "Evite a zona ribeirinha" in mail.text and "Avoid the riverside" in mail.text
        assert cap.identifier in mail.text
        assert f"https://atalaia.cm-porto.pt/cap/alerts/{cap.identifier}.xml" in mail.text
    assert ana.text.index("Evite") < ana.text.index("Avoid") and rui.text.index("Avoid") < rui.text.index(
        "Evite"
    )
    assert "De 04/12 17:00 a 05/12 05:00 (hora de Lisboa)" in ana.text  # WET in December
    assert "From 04/12 17:00 to 05/12 05:00 (Lisbon time)" in ana.text

    # SMS: pt-PT in GSM-7 (ã -> a: 160 characters a segment, not 70), within 3 segments, the link
    # to the CAP document whole at its end, counted as the reference counts
    (sms,) = http.received("/jsonrpc/sms")
    text = sms.json["params"]["message"]
    assert text.startswith("Aviso laranja - Cheia. Campanha. De 04/12 17:00 a 05/12 05:00.")
    assert text.endswith(f" https://atalaia.cm-porto.pt/cap/alerts/{cap.identifier}.xml"), text
    assert reference_segments(text)[1] == "gsm7" and reference_segments(text)[0] <= 3
    assert segments(text) == reference_segments(text)

    # PGU: the Smart Data Models Alert, deterministic id, from the CAP document
    (up,) = http.received("/ngsi-ld/v1/entityOperations/upsert")
    assert up.headers["NGSILD-Tenant"] == "porto"
    ent = http.entities[alert_entity_id(cap.identifier)]
    assert ent["type"] == "Alert" and ent["id"] == f"urn:ngsi-ld:Alert:warning:{cap.identifier}"
    assert ent["category"]["value"] == "weather" and ent["subCategory"]["value"] == "flood"
    assert ent["severity"]["value"] == "high"  # CAP Severe (orange)
    assert ent["validFrom"]["value"]["@value"] == cap.sent
    assert ent["validTo"]["value"]["@value"] == cap.expires
    assert ent["address"]["value"]["addressLocality"] == "Campanhã"
    geom = ent["location"]["value"]
    assert geom["type"] in ("Polygon", "MultiPolygon")
    ring = geom["coordinates"][0] if geom["type"] == "Polygon" else geom["coordinates"][0][0]
    lon, lat = ring[0]
    assert -9 < lon < -8 and 41 < lat < 42 and ring[0] == ring[-1]  # GeoJSON lon,lat, closed
    assert ent["data"]["value"]["identifier"] == cap.identifier

    # webhooks: signed JSON with the CAP XML, and the CAP XML itself; one delivery each
    (hook,) = http.received("/hook")
    assert hook.signature_ok and hook.json["kind"] == "warning" and hook.json["cap"] == cap.xml
    assert hook.headers["X-Atalaia-Delivery"] == warning_notification_id(cap.identifier, cap.version, "sala")
    (raw,) = http.received("/cap")
    assert raw.signature_ok and raw.headers["Content-Type"] == "application/cap+xml"
    assert raw.body.decode() == cap.xml


async def test_an_exercise_never_reaches_a_target_not_marked_for_exercises(servers, tmp_path) -> None:
    http, smtp = servers
    cap = issue("Exercise")
    _, delivered, again, _ = await deliver_twice(config_yaml(http, smtp), cap, tmp_path)
    assert {n.target for n in delivered} == {"ana-sms", "drill-email"} and again == []
    assert [m.rcpt_tos for m in smtp.messages] == [["simulacro@cm-porto.pt"]]
    assert smtp.messages[0].subject.startswith(MARK) and smtp.messages[0].text.startswith(MARK)
    (sms,) = http.received("/jsonrpc/sms")
    assert sms.json["params"]["message"].startswith(SMS_MARK + ": Aviso laranja - Cheia.")
    assert not http.received("/hook") and not http.received("/cap") and not http.entities


async def test_exercises_all_marks_every_channel(servers, tmp_path) -> None:
    http, smtp = servers
    cap = issue("Exercise")
    _, delivered, _, _ = await deliver_twice(config_yaml(http, smtp, exercises="all"), cap, tmp_path)
    assert len(delivered) == 7
    assert all(m.subject.startswith(MARK) and m.text.startswith(MARK) for m in smtp.messages)
    assert http.received("/jsonrpc/sms")[0].json["params"]["message"].startswith(SMS_MARK)
    hook = http.received("/hook")[0].json
    assert hook["message"]["subject"].startswith(MARK) and hook["message"]["text"].startswith(MARK)
    ent = next(iter(http.entities.values()))
    assert ent["description"]["value"].startswith(MARK) and ent["name"]["value"].startswith(MARK)
    assert "<status>Exercise</status>" in http.received("/cap")[0].body.decode()


async def test_a_cancel_ends_the_pgu_alert(servers, tmp_path) -> None:
    http, smtp = servers
    wf = Workflow()
    s = wf.initial_state()
    draft = {**DRAFT, "expires": (T0 + timedelta(hours=12)).isoformat()}
    s, out = wf.step(s, {"action": "draft", "actor": "ana", "role": "operator", "draft": draft}, T0)
    wid = out[0].warning
    caps = []
    for cmd in (
        {"action": "submit", "warning": wid, "actor": "ana", "role": "operator"},
        {"action": "approve", "warning": wid, "actor": "rui", "role": "approver"},
        {"action": "issue", "warning": wid, "actor": "ana", "role": "operator"},
        {"action": "cancel", "warning": wid, "actor": "ana", "role": "operator"},
    ):
        s, out = wf.step(s, cmd, T0 + timedelta(minutes=len(caps)))
        caps += [o for o in out if o.kind == "cap"]
    cid = next(o for o in out if o.kind == "reply").warning
    for cmd in (
        {"action": "submit", "warning": cid, "actor": "ana", "role": "operator"},
        {"action": "approve", "warning": cid, "actor": "rui", "role": "approver"},
        {"action": "issue", "warning": cid, "actor": "ana", "role": "operator"},
    ):
        s, out = wf.step(s, cmd, T0 + timedelta(hours=1))
        caps += [o for o in out if o.kind == "cap"]
    original, cancel = caps
    cfg = load_config_text(config_yaml(http, smtp), "test.yaml")
    notifier = Notifier(cfg, SQLiteDeliveryLog(tmp_path / "d.sqlite"), env={"HOOK_SECRET": SECRET})
    await notifier.start()
    try:
        for cap in caps:
            await notifier.deliver(warning_notifications(cap, cfg))
    finally:
        await notifier.aclose()
    ended = http.entities[alert_entity_id(original.identifier)]
    assert ended["validTo"]["value"]["@value"] == cancel.sent
    assert http.entities[alert_entity_id(cancel.identifier)]["data"]["value"]["msgType"] == "Cancel"
    sms = [r.json["params"]["message"] for r in http.received("/jsonrpc/sms")]
    assert sms[1].startswith("Aviso cancelado - Cheia.")


# ------------------------------------------------------------------ propose_warning


PROPOSE = """
timezone: Europe/Lisbon
targets:
  sala: {channel: webhook, url: "http://127.0.0.1:9/hook", secret: x}
warnings: {targets: [sala]}
routes: [{policy: cheia}]
policies:
  cheia:
    steps:
      - {targets: [sala], wait: 5m}
      - {propose_warning: {sender: protecao.civil@cm-porto.pt, valid_for: 6h}, wait: 10m, repeat: 2}
"""


def test_propose_warning_drafts_and_publishes_nothing() -> None:
    cfg = load_config_text(PROPOSE, "p.yaml")
    esc = EscalationCore(cfg)
    ev = incident_event(
        severity="critical", labels={"team": "hydro", "hazard": "flood", "parish": "Campanhã"}, tenant="porto"
    )
    t = parse_time(ev["at"]).timestamp()
    rec = SimpleNamespace(value=orjson.dumps(ev), topic="incidents")
    outs = esc.process([rec], t)
    assert [o.topic for o in outs] == ["notifications"]  # step 1: the webhook only
    outs = esc.tick(t + 5 * 60 + 1)  # step 2: the proposal, once (not on its repeats)
    outs += esc.tick(t + 15 * 60 + 1) + esc.tick(t + 25 * 60 + 1)
    assert [o.topic for o in outs] == ["commands"]
    cmd = orjson.loads(outs[0].value)
    assert cmd["kind"] == "warning" and cmd["action"] == "draft" and cmd["incident"] == ev["incident"]
    assert cmd["draft"]["level"] == "red" and cmd["draft"]["event"] == {"pt-PT": "Cheia", "en-GB": "Flood"}
    # the incident's correlation names the Centro Histórico union (without its prefix), its
    # label Campanhã: both parishes
    assert cmd["draft"]["area"] == {"geocodes": {"DICOFRE": ["131217", "131203"]}}
    assert cmd["draft"]["tenant"] == "porto", "the proposal stays the incident's tenant's"

    warnings = WarningsCore(WarningsConfig())
    command = SimpleNamespace(value=outs[0].value, topic="commands")
    produced = warnings.process([command, command], t + 301)  # a redelivery drafts nothing twice
    kinds = [orjson.loads(o.value)["kind"] for o in produced]
    assert "cap" not in kinds and kinds.count("warning") == 1
    (w,) = warnings.state.warnings.values()
    assert w.state == "draft" and w.authors == ["escalation:cheia"] and w.draft["incident"] == ev["incident"]
    assert w.draft["tenant"] == "porto"
    notices = WarningNoticesCore(cfg).process(
        [SimpleNamespace(value=o.value, topic="warnings") for o in produced], t + 302
    )
    assert notices == []  # nothing reaches a channel before a person approves and issues it
    # a proposal is the submitter's: the four-eyes rule still needs a second person (ana writes
    # the instruction a proposal cannot know, then submits it)
    instruction = {"pt-PT": "Evite a zona ribeirinha.", "en-GB": "Avoid the riverside."}
    st_, out = warnings.workflow.step(
        warnings.state,
        {
            "action": "edit",
            "warning": w.id,
            "actor": "ana",
            "role": "operator",
            "draft": {"instruction": instruction},
        },
        datetime.fromtimestamp(t + 303, UTC),
    )
    assert out[-1].ok, out[-1].error
    st_, out = warnings.workflow.step(
        st_,
        {"action": "submit", "warning": w.id, "actor": "ana", "role": "operator"},
        datetime.fromtimestamp(t + 304, UTC),
    )
    assert out[-1].ok, out[-1].error
    st_, out = warnings.workflow.step(
        st_, {"action": "approve", "warning": w.id, "actor": "ana", "role": "approver"}, T0
    )
    assert out[-1].ok is False and "four eyes" in out[-1].error
    st_, out = warnings.workflow.step(
        st_, {"action": "approve", "warning": w.id, "actor": "rui", "role": "approver"}, T0
    )
    assert out[-1].ok and not [o for o in out if o.kind == "cap"]


def test_propose_warning_step_is_checked() -> None:
    from atalaia.notifiers.config import ConfigError

    bad = PROPOSE.replace("{propose_warning: {sender: protecao.civil@cm-porto.pt, valid_for: 6h}, ", "{")
    with pytest.raises(ConfigError, match="a step needs targets"):
        load_config_text(bad, "p.yaml")
    with pytest.raises(ConfigError, match="unknown target 'nobody'"):
        load_config_text(
            PROPOSE.replace("warnings: {targets: [sala]}", "warnings: {targets: [nobody]}"), "p.yaml"
        )


def test_drill_from_a_recorded_incident_renders_an_exercise(tmp_path) -> None:
    import subprocess

    from tests.conftest import ATALAIA

    events = [
        incident_event(severity="high", labels={"hazard": "flood", "parish": "Campanhã"}),
        incident_event(severity="critical", labels={"hazard": "flood", "parish": "Campanhã"}, version=2),
    ]
    rec = tmp_path / "incidents.jsonl"
    rec.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    drill = subprocess.run(
        [ATALAIA, "warnings", "drill", str(rec)], capture_output=True, text=True, timeout=60
    )
    assert drill.returncode == 0, drill.stderr
    (tmp_path / "drill.yaml").write_text(drill.stdout)
    assert "status: Exercise" in drill.stdout and "level: red" in drill.stdout  # the latest version
    cap = subprocess.run(
        [ATALAIA, "warnings", "render", str(tmp_path / "drill.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cap.returncode == 0, cap.stderr
    assert "<status>Exercise</status>" in cap.stdout and "EXERCÍCIO / EXERCISE" in cap.stdout
    cmd = subprocess.run(
        [ATALAIA, "warnings", "drill", str(rec), "--command"], capture_output=True, text=True, timeout=60
    )
    body = orjson.loads(cmd.stdout)
    assert body["kind"] == "warning" and body["action"] == "draft" and body["draft"]["status"] == "Exercise"


def test_a_proposal_for_an_incident_in_no_known_parish_has_no_area_and_says_so(caplog) -> None:
    """It proposed a draft for the whole municipality; now no area (the warnings stage refuses
    it) and a warning in the log asks an operator to draft it and choose the area."""
    cfg = load_config_text(PROPOSE, "p.yaml")
    esc = EscalationCore(cfg)
    ev = incident_event(
        severity="critical", labels={"team": "hydro", "hazard": "flood"}, correlation={}, location=None
    )
    t = parse_time(ev["at"]).timestamp()
    esc.process([SimpleNamespace(value=orjson.dumps(ev), topic="incidents")], t)
    with caplog.at_level(logging.WARNING, logger="atalaia.notifiers"):
        outs = esc.tick(t + 5 * 60 + 1)
    cmd = orjson.loads(outs[0].value)
    assert "area" not in cmd["draft"]
    assert f"for incident {ev['incident']}: none of its parishes is known" in caplog.text
    produced = WarningsCore(WarningsConfig()).process(
        [SimpleNamespace(value=outs[0].value, topic="commands")], t + 301
    )
    reply = next(orjson.loads(o.value) for o in produced if orjson.loads(o.value)["kind"] == "reply")
    assert reply["ok"] is False and "area" in reply["error"]


def test_a_third_language_or_short_tags_are_delivered_not_a_target_outage() -> None:
    """A draft in pt/en/es-ES (or pt-PT, en-GB and es-ES): email, SMS and the urban platform's
    Alert are written, each block with its own text and the fixed words in Portuguese or English.
    Before, formatting raised KeyError 'es-ES' (or 'pt'), counted as a failure of the target,
    which was then held back as unavailable for every other warning and incident."""
    from zoneinfo import ZoneInfo

    from atalaia.notifiers.warning import alert_entity, email, parse_cap, sms_text
    from atalaia.warnings.cap import render
    from atalaia.warnings.catalogue import Catalogue
    from atalaia.warnings.draft import Draft

    tz = ZoneInfo("Europe/Lisbon")
    for event in (
        {"pt-PT": "Vento forte", "en-GB": "Strong wind", "es-ES": "Viento fuerte"},
        {"pt": "Vento forte", "en": "Strong wind", "es-ES": "Viento fuerte"},
    ):
        draft = Draft.model_validate(
            {
                "sender": "protecao.civil@cm-porto.pt",
                "level": "orange",
                "event": event,
                "expires": "2026-12-05T06:00:00+00:00",
                "area": {"desc": "Porto", "circle": "41.15,-8.61 2"},
            }
        )
        w = parse_cap(render(draft, Catalogue.load(), "2026-12-04T17:00:00+00:00").xml)
        subject, body = email(w, tz)
        assert subject.startswith("Aviso laranja - Vento forte") and "Viento fuerte" in body
        assert sms_text(w, tz, "pt-PT").startswith("Aviso laranja - Vento forte")
        assert sms_text(w, tz, "es-ES").startswith("Orange warning - Viento fuerte")
        location = alert_entity(w)["location"]["value"]
        ring = location["coordinates"][0]
        assert location["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) == 33
        area2 = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring))
        assert area2 > 0, "an outer ring runs counter-clockwise (RFC 7946)"
        # every vertex 2 km from the centre (a circle-only area reached the platform unplaced)
        assert all(abs(_km(41.15, -8.61, lat, lon) - 2) < 0.01 for lon, lat in ring)


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    import math

    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    c = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return 6371.0088 * math.acos(min(1.0, c))


def test_the_largest_warning_allowed_fits_every_record_under_kafkas_default_message_size() -> None:
    """A warning notification carries its CAP document twice (the XML and the parsed document): the
    bound on the document (``cap.MAX_CAP_BYTES``) keeps the cap record and every notification
    record under Apache Kafka's default ``message.max.bytes`` (1 MiB), which the broker would
    refuse, stopping the stage at that output on every restart."""
    from atalaia.warnings.cap import MAX_CAP_BYTES, size_problem
    from atalaia.warnings.catalogue import Catalogue
    from atalaia.warnings.draft import Draft

    cat = Catalogue.load()
    codes = ["131202", "131203", "131210", "131211", "131216", "131217", "131218"]

    def areas(n: int) -> list[dict]:
        return [{"desc": f"zona {i}", "geocodes": {"DICOFRE": codes, "DICO": ["1312"]}} for i in range(n)]

    def fits(kib: int) -> bool:
        d = {
            **DRAFT,
            "area": areas(1),
            "description": "x" * (kib * 1024),
            "onset": T0.isoformat(),
            "expires": (T0 + timedelta(hours=12)).isoformat(),
        }
        return size_problem(Draft.model_validate(d), cat) is None

    # (the areas file's boundaries no longer make a document too big: they are simplified to fit
    # it, so the draft's own text makes the largest one)
    n = 1
    while fits(n + 1):
        n += 1
    cap = issue(area=areas(1), description="x" * (n * 1024))
    assert MAX_CAP_BYTES * 0.9 < len(cap.xml) <= MAX_CAP_BYTES, len(cap.xml)
    cfg = load_config_text(
        "targets:\n  pgu: {channel: ngsi-ld, url: 'http://127.0.0.1:9', tenant: porto}\n"
        "  sala: {channel: webhook, url: 'http://127.0.0.1:9/hook', secret: s3cret-s3cret}\n"
        "warnings:\n  targets: [pgu, sala]\n",
        "t.yaml",
    )
    records = [cap.to_json(), *(n.to_json() for n in warning_notifications(cap, cfg))]
    assert len(records) == 3 and max(map(len, records)) < 1024 * 1024, [len(r) for r in records]
