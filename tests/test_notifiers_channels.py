"""Channels and the delivery pipeline against real local servers: aiosmtpd receives the emails,
an aiohttp server receives NGSI-LD upserts, signed webhooks, SMSEagle SMS-gateway requests and
Alertmanager webhooks; failing targets are retried with backoff while the others are on time."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from pathlib import Path

import orjson
import pytest

from atalaia.notifiers.config import load_config_text
from atalaia.notifiers.engine import EscalationEngine, EscalationState
from atalaia.notifiers.log import SQLiteDeliveryLog
from atalaia.notifiers.pipeline import Backoff
from atalaia.notifiers.service import Notifier
from atalaia.notifiers.signing import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from atalaia.notifiers.sms import segments
from atalaia.notifiers.testing import HttpSink, SmtpSink, incident_event
from atalaia.streams.clock import parse_time

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SECRET = "porto-webhook-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_yaml(http: str, smtp: SmtpSink, extra_targets: str = "", step_targets: str = "") -> str:
    return f"""
timezone: Europe/Lisbon
lang: pt-PT
console_url: https://atalaia.cm-porto.pt
targets:
  pgu: {{channel: ngsi-ld, url: "{http}", tenant: porto}}
  sala: {{channel: webhook, url: "{http}/hook", secret: "${{HOOK_SECRET}}", lang: en-GB}}
  am: {{channel: alertmanager, url: "{http}/alertmanager"}}
  ana-sms: {{channel: sms, url: "smseagle://tok3n@127.0.0.1:{http.rsplit(":", 1)[1]}/+351912000001", max_sms_segments: 1}}
  ana-email: {{channel: email, url: "{smtp.mailto("ana.silva@cm-porto.pt")}"}}
  rui-email: {{channel: email, url: "{smtp.mailto("rui.costa@cm-porto.pt")}", lang: en-GB}}
{extra_targets}
routes:
  - {{match: {{min_severity: medium}}, policy: all}}
policies:
  all:
    steps:
      - targets: [pgu, sala, am, ana-sms, ana-email, rui-email{step_targets}]
        wait: 10m
"""


@pytest.fixture
async def servers():
    http = await HttpSink(secret=SECRET).start()
    smtp = SmtpSink().start()
    yield http, smtp
    smtp.stop()
    await http.stop()


async def run_once(cfg_text: str, tmp_path: Path, backoff: Backoff | None = None):
    cfg = load_config_text(cfg_text, "test.yaml")
    engine = EscalationEngine(cfg)
    ev = incident_event(severity="critical")
    _, notes = engine.step(EscalationState(), ev, parse_time(ev["at"]))
    log = SQLiteDeliveryLog(tmp_path / "deliveries.sqlite")
    notifier = Notifier(cfg, log, env={"HOOK_SECRET": SECRET}, backoff=backoff or Backoff(0.05, 0.4))
    await notifier.start()
    return notifier, log, notes


async def test_every_channel_reaches_its_local_server(servers, tmp_path):
    http, smtp = servers
    notifier, log, notes = await run_once(config_yaml(http.url, smtp), tmp_path)
    try:
        delivered = await notifier.deliver(notes)
    finally:
        await notifier.aclose()
    assert {n.target for n in delivered} == {"pgu", "sala", "am", "ana-sms", "ana-email", "rui-email"}

    # email: one message per recipient, pt-PT and en-GB texts
    by_rcpt = {m.rcpt_tos[0]: m for m in smtp.messages}
    assert set(by_rcpt) == {"ana.silva@cm-porto.pt", "rui.costa@cm-porto.pt"}
    assert by_rcpt["ana.silva@cm-porto.pt"].subject == "[Atalaia CRÍTICO] Nível do Douro elevado na Ribeira"
    assert (
        "Reconheça o incidente na consola: https://atalaia.cm-porto.pt/incidents/inc-douro-1"
        in by_rcpt["ana.silva@cm-porto.pt"].text
    )
    assert "Severity: critical" in by_rcpt["rui.costa@cm-porto.pt"].text

    # SMS gateway (SMSEagle JSON-RPC) got one single-segment GSM-7 message for the number
    (sms,) = http.received("/jsonrpc/sms")
    params = sms.json["params"]
    assert sms.json["method"] == "sms.send_sms" and params["to"] == "+351912000001"
    assert params["access_token"] == "tok3n"
    assert segments(params["message"]) == (1, "gsm7")
    assert params["message"].startswith("ATALAIA CRITICO: Nivel do Douro elevado na Ribeira.")

    # PGU: the NGSI-LD Alert entity, deterministic id, normalized, tenant header
    (up,) = http.received("/ngsi-ld/v1/entityOperations/upsert")
    assert up.headers["Content-Type"] == "application/ld+json" and up.headers["NGSILD-Tenant"] == "porto"
    ent = http.entities["urn:ngsi-ld:Alert:inc-douro-1"]
    assert ent["type"] == "Alert" and ent["severity"] == {"type": "Property", "value": "critical"}
    assert ent["category"]["value"] == "naturalDisaster" and ent["subCategory"]["value"] == "flood"
    assert ent["location"]["value"] == {"type": "Point", "coordinates": [-8.6132, 41.1405]}
    assert ent["dateIssued"]["value"] == {"@type": "DateTime", "@value": "2026-03-01T09:58:00Z"}

    # signed webhook: the receiver verifies the signature with the shared secret
    (hook,) = http.received("/hook")
    assert hook.signature_ok is True
    assert verify_signature(SECRET, hook.body, hook.headers[TIMESTAMP_HEADER], hook.headers[SIGNATURE_HEADER])
    assert not verify_signature(
        "other", hook.body, hook.headers[TIMESTAMP_HEADER], hook.headers[SIGNATURE_HEADER]
    )
    assert not verify_signature(
        SECRET, hook.body + b" ", hook.headers[TIMESTAMP_HEADER], hook.headers[SIGNATURE_HEADER]
    )
    assert hook.json["incident"] == "inc-douro-1" and hook.json["message"]["lang"] == "en-GB"
    assert hook.headers[DELIVERY_HEADER] == hook.json["id"]

    # Alertmanager webhook v4
    (am,) = http.received("/alertmanager")
    assert am.json["version"] == "4" and am.json["status"] == "firing" and am.json["receiver"] == "am"
    (alert,) = am.json["alerts"]
    assert alert["labels"]["alertname"] == "river-level-high" and alert["endsAt"] == "0001-01-01T00:00:00Z"

    # delivery log: one delivered attempt per target, visible per incident
    rows = log.deliveries("inc-douro-1")
    assert sorted(r.status for r in rows) == ["delivered"] * 6
    assert all(
        a.attempt == 1 and a.status == "delivered" and a.latency_ms >= 0 for a in log.attempts("inc-douro-1")
    )


def test_alert_entity_validates_against_the_sdm_schema():
    if not (SHARED / "fixtures/sdm/Alert/schema.json").exists():
        pytest.skip("../shared/fixtures not present")
    from atalaia.notifiers.channels.http import alert_entity
    from atalaia.notifiers.model import IncidentSnapshot

    ent = alert_entity(
        IncidentSnapshot.from_event(incident_event(state="closed", at="2026-03-01T12:00:00Z")),
        "https://atalaia.cm-porto.pt",
    )
    schema = orjson.loads((SHARED / "fixtures/sdm/Alert/schema.json").read_bytes())
    # the checks of the schema's own definitions (enum values, required keys) on the keyValues view
    key_values = {
        k: (
            v["value"]["@value"]
            if isinstance(v, dict) and isinstance(v.get("value"), dict) and "@value" in v["value"]
            else v["value"]
            if isinstance(v, dict) and "value" in v
            else v
        )
        for k, v in ent.items()
        if k != "@context"
    }
    for key in schema["required"]:
        assert key in key_values, key
    common = orjson.loads((SHARED / "fixtures/sdm/_common/alert-schema.json").read_bytes())
    props = common["definitions"]["Common-Alert"]["properties"]
    assert key_values["category"] in props["category"]["enum"]
    assert key_values["severity"] in props["severity"]["enum"]
    assert key_values["validTo"] == "2026-03-01T12:00:00Z"


async def test_down_targets_are_retried_with_backoff_while_others_are_on_time(servers, tmp_path):
    http, smtp = servers
    refused = free_port()  # nothing listens there: connection refused
    extra = f"""  dead: {{channel: webhook, url: "http://127.0.0.1:{refused}/hook", secret: s, max_attempts: 4}}
  flaky: {{channel: alertmanager, url: "{http.url}/flaky", max_attempts: 5}}
  slow: {{channel: alertmanager, url: "{http.url}/slow", timeout: 1s, max_attempts: 2}}
  dead-sms: {{channel: sms, url: "smseagle://t@127.0.0.1:{refused}/+351912000009", max_attempts: 2}}"""
    http.fail["/flaky"] = 2  # 500, 500, then 200
    http.delay["/slow"] = 2.0  # longer than the target's 1 s timeout
    notifier, log, notes = await run_once(
        config_yaml(http.url, smtp, extra, ", dead, flaky, slow, dead-sms"), tmp_path, Backoff(0.2, 1.0)
    )
    try:
        await notifier.submit(notes)
        # the healthy targets are all delivered quickly, long before the failing ones give up
        for _ in range(100):
            healthy = [
                d
                for d in log.deliveries("inc-douro-1")
                if d.target not in ("dead", "flaky", "slow", "dead-sms")
            ]
            if all(d.status == "delivered" for d in healthy):
                break
            await asyncio.sleep(0.02)
        assert len(healthy) == 6 and all(d.status == "delivered" for d in healthy)
        # ... while the slow target is still on its attempts (two of a 1 s timeout each): the
        # healthy ones did not wait for it (an order, not a time: a loaded machine is slow for both)
        slow_now = [d.status for d in log.deliveries("inc-douro-1") if d.target == "slow"]
        assert "failed" not in slow_now, slow_now
        await notifier.drain()
    finally:
        await notifier.aclose()
    status = {d.target: d for d in log.deliveries("inc-douro-1")}
    # failed after the (deprecated) max_attempts, but kept: re-sent when the target recovers
    # (the circuit breaker may have probed it again while the slow target was still timing out)
    assert status["dead"].status == "failed" and status["dead"].attempts >= 4
    assert "re-sent when the target recovers" in (status["dead"].last_error or "")
    assert status["dead"].resend_until is not None
    assert status["flaky"].status == "delivered" and status["flaky"].attempts == 3
    assert status["slow"].status == "failed" and "timeout" in (status["slow"].last_error or "")

    # apprise's reason for a failure reaches the delivery log
    assert status["dead-sms"].status == "failed" and "SMSEagle" in (status["dead-sms"].last_error or "")

    dead = [a for a in log.attempts("inc-douro-1") if a.target == "dead"][:4]
    assert [a.status for a in dead] == ["retryable"] * 4
    assert "Connect" in (dead[0].error or "")  # connection refused
    gaps = [b.started_at - a.started_at for a, b in itertools.pairwise(dead)]
    # equal jitter: gap k is in [base·2^(k-1)/2, base·2^(k-1)] (+ the attempt's own time)
    for k, gap in enumerate(gaps, start=1):
        d = min(1.0, 0.2 * 2 ** (k - 1))
        # (the upper bound is generous: an attempt's own time grows on a loaded machine)
        assert d / 2 - 0.01 <= gap <= d + 2.0, (k, gap)
    flaky = [a.status for a in log.attempts("inc-douro-1") if a.target == "flaky"]
    assert flaky == ["retryable", "retryable", "delivered"]
    assert len(http.received("/flaky")) == 3


async def test_replay_of_the_same_notifications_sends_nothing_twice(servers, tmp_path):
    http, smtp = servers
    notifier, _log, notes = await run_once(config_yaml(http.url, smtp), tmp_path)
    try:
        assert len(await notifier.deliver(notes)) == 6
        assert await notifier.deliver(notes) == []  # the same batch replayed
        assert await notifier.deliver(notes + notes) == []
    finally:
        await notifier.aclose()
    assert (
        len(smtp.messages) == 2
        and len(http.received("/jsonrpc/sms")) == 1
        and len(http.received("/hook")) == 1
    )


async def test_rate_limit_paces_one_target_without_blocking_others(servers, tmp_path):
    http, smtp = servers
    extra = f'  paced: {{channel: alertmanager, url: "{http.url}/paced", rate: {{max: 2, per: 1s}}}}'
    notifier, _log, _ = await run_once(config_yaml(http.url, smtp, extra, ", paced"), tmp_path)
    cfg = notifier.config
    engine = EscalationEngine(cfg)
    state, notes = EscalationState(), []
    for i in range(5):
        ev = incident_event(incident=f"inc-{i}", severity="high")
        notes += [n for n in engine.step(state, ev, parse_time(ev["at"]))[1] if n.target in ("paced", "am")]
    t0 = time.time()
    try:
        await notifier.deliver(notes)
    finally:
        await notifier.aclose()
    paced = [r.at - t0 for r in http.received("/paced")]
    am = [r.at - t0 for r in http.received("/alertmanager")]
    assert len(paced) == 5 and len(am) == 5
    assert max(am) < 0.5  # the unpaced target is not held back
    assert 1.2 <= paced[-1] <= 2.5  # burst of 2, then 2 per second: the 5th at ≈1.5 s


async def test_starttls_email_and_the_cached_ssl_context_keeps_verification_apart(tmp_path):
    """The SSL-context cache (apprise builds one per email otherwise) must not let a
    ``verify=no`` target's relaxed context leak into a verifying one."""
    import shutil
    import ssl
    import subprocess

    from aiosmtpd.controller import Controller

    from atalaia.notifiers.channels.apprise import AppriseChannel
    from atalaia.notifiers.channels.base import ChannelContext
    from atalaia.notifiers.model import IncidentSnapshot, Notification

    if shutil.which("openssl") is None:
        pytest.skip("openssl not available to make a test certificate")
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    got = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            got.append((envelope.rcpt_tos[0], session.ssl is not None))
            return "250 OK"

    port = free_port()
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=tls, require_starttls=True)
    ctl.start()
    try:
        url = f"mailto://127.0.0.1:{port}?mode=starttls&from=a@cm-porto.pt&to={{to}}&user=&pass="
        lax = AppriseChannel(
            "lax", ChannelContext(), url.format(to="lax@cm-porto.pt") + "&verify=no", "email"
        )
        strict = AppriseChannel(
            "strict", ChannelContext(), url.format(to="strict@cm-porto.pt"), "email", timeout=3
        )
        snap = IncidentSnapshot.from_event(incident_event())
        for i in range(2):
            n = Notification("inc", "p", 0, 0, i, "lax", "escalation", "2026-03-01T10:00:00Z", snap)
            assert (await lax.send(n)).ok
        n = Notification("inc", "p", 0, 0, 0, "strict", "escalation", "2026-03-01T10:00:00Z", snap)
        res = await strict.send(n)
        assert not res.ok  # self-signed certificate: a verifying target refuses it
        assert (
            await lax.send(
                Notification("inc", "p", 0, 0, 9, "lax", "escalation", "2026-03-01T10:00:00Z", snap)
            )
        ).ok
    finally:
        ctl.stop()
    assert got == [("lax@cm-porto.pt", True)] * 3


async def test_markup_a_sensor_sent_reaches_an_email_as_text_not_as_html(servers, tmp_path):
    """An incident's labels come from sensors and urban platforms; a parish label with a script and
    a link ended in the email's HTML part as markup (a phishing link in mail to civil-protection
    officers). It is text: escaped in the HTML part, as sent in the plain one."""
    http, smtp = servers
    cfg = load_config_text(config_yaml(http.url, smtp), "test.yaml")
    evil = '<script>alert(2)</script><a href="http://evil.example">Clique aqui</a>'
    ev = incident_event(severity="critical", title=f"Cheia {evil}", correlation={"parish": evil})
    _, notes = EscalationEngine(cfg).step(EscalationState(), ev, parse_time(ev["at"]))
    notifier = Notifier(
        cfg, SQLiteDeliveryLog(tmp_path / "d.sqlite"), env={"HOOK_SECRET": SECRET}, backoff=Backoff(0.05, 0.4)
    )
    await notifier.start()
    try:
        await notifier.deliver([n for n in notes if n.target == "ana-email"])
    finally:
        await notifier.aclose()
    (mail,) = smtp.messages
    assert evil in mail.text  # the plain part: as sent
    # no HTML part a mail reader would render (or, if apprise sends one, escaped)
    assert "<script>" not in mail.html and "<a href" not in mail.html
