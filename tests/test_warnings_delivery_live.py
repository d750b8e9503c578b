"""Issue 12, end to end on the real (embedded) broker: an alarm → incident → escalation whose
``propose_warning`` step drafts a warning (nothing is published) → a person submits, another
approves → the worker is killed (-9) between approval and publication → after the restart the
warning is issued: exactly one CAP document on ``atalaia.warnings``, the feed lists it, and the
local SMTP and HTTP sinks (SMSEagle gateway, NGSI-LD broker, signed webhook) receive it once each,
recorded once per target in the delivery log."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import httpx
import orjson
import pytest

from atalaia.notifiers.testing import HttpSink, SmtpSink
from atalaia.notifiers.warning import alert_entity_id
from tests.conftest import consume_all
from tests.test_incidents_live import produce, wait_for
from tests.test_streams_delivery_live import SinkThread

pytestmark = pytest.mark.broker
STAGES = ("incidents", "escalation", "warnings", "delivery")
SECRET = "live-warning-hook"


def on_topic(broker: str, topic: str) -> list[dict]:
    return [orjson.loads(r.value) for r in asyncio.run(consume_all(broker, topic, idle=1.0, timeout=30))]


def escalation_yaml(http: HttpSink, smtp: SmtpSink) -> str:
    port = http.url.rsplit(":", 1)[1]
    return f"""
timezone: Europe/Lisbon
targets:
  pgu: {{channel: ngsi-ld, url: "{http.url}", tenant: porto}}
  sala: {{channel: webhook, url: "{http.url}/hook", secret: "{SECRET}"}}
  ana-sms: {{channel: sms, url: "smseagle://tok@127.0.0.1:{port}/+351912000001"}}
  piquete: {{channel: email, url: "{smtp.mailto("piquete@cm-porto.pt")}"}}
  drill: {{channel: email, url: "{smtp.mailto("simulacro@cm-porto.pt")}"}}
warnings:
  targets: [pgu, sala, ana-sms, piquete, {{target: drill, exercise: only}}]
routes: [{{policy: cheia}}]
policies:
  cheia:
    steps:
      - {{propose_warning: {{sender: protecao.civil@cm-porto.pt, valid_for: 6h}}, wait: 1h}}
"""


def test_incident_to_issued_warning_on_every_channel_once_across_a_kill(
    broker, topic_prefix, make_worker, tmp_path: Path
) -> None:
    http, smtp = HttpSink(secret=SECRET), SmtpSink().start()
    try:
        with SinkThread(http):
            run(broker, topic_prefix, make_worker, tmp_path, http, smtp)
    finally:
        smtp.stop()


def run(broker, topic_prefix, make_worker, tmp_path, http, smtp) -> None:
    (tmp_path / "escalation.yaml").write_text(escalation_yaml(http, smtp))
    env = {"ATALAIA_ESCALATION_PATH": str(tmp_path / "escalation.yaml")}
    warnings_topic, commands = f"{topic_prefix}.warnings", f"{topic_prefix}.commands"
    w1 = make_worker("--stages", ",".join(STAGES), extra_env=env).start(STAGES)

    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    alarm = {
        "at": now,
        "since": now,
        "rule": "level-high",
        "key": "urn:ngsi-ld:WaterObserved:campanha",
        "entity": "urn:ngsi-ld:WaterObserved:campanha",
        "state": "firing",
        "severity": "high",
        "value": 4.1,
        "labels": {"hazard": "flood", "parish": "Campanhã", "team": "hydro"},
    }
    asyncio.run(produce(broker, f"{topic_prefix}.alarms", [alarm]))

    def draft_reply() -> dict | None:
        return next(
            (
                o
                for o in on_topic(broker, warnings_topic)
                if o["kind"] == "warning" and o["change"] == "drafted"
            ),
            None,
        )

    wait_for(lambda: draft_reply() is not None, 60, "the proposed draft")
    drafted = draft_reply()
    assert drafted["actor"] == "escalation:cheia" and drafted["state"] == "draft"
    wid = drafted["warning"]
    time.sleep(2)
    assert not [o for o in on_topic(broker, warnings_topic) if o["kind"] == "cap"]  # never by itself
    assert not http.requests and not smtp.messages

    def cmd(cid: str, action: str, actor: str, role: str) -> dict:
        return {"kind": "warning", "id": cid, "action": action, "warning": wid, "actor": actor, "role": role}

    asyncio.run(
        produce(
            broker,
            commands,
            [
                {  # (the instruction a proposal cannot know: the operator writes it before submitting)
                    **cmd("e1", "edit", "ana", "operator"),
                    "draft": {
                        "instruction": {"pt-PT": "Evite a zona ribeirinha.", "en-GB": "Avoid the riverside."}
                    },
                },
                cmd("s1", "submit", "ana", "operator"),
                cmd("a1", "approve", "rui", "approver"),
            ],
        )
    )
    wait_for(
        lambda: any(o.get("command") == "a1" for o in on_topic(broker, warnings_topic)), 30, "the approval"
    )
    w1.kill()  # -9 between approval and publication

    w2 = make_worker("--stages", ",".join(STAGES), extra_env=env, port=w1.port).start(STAGES)
    asyncio.run(produce(broker, commands, [cmd("i1", "issue", "ana", "operator")]))
    wait_for(
        lambda: any(o["kind"] == "cap" for o in on_topic(broker, warnings_topic)), 30, "the CAP document"
    )
    out = on_topic(broker, warnings_topic)
    (cap,) = [o for o in out if o["kind"] == "cap"]
    replies = {o["command"]: o for o in out if o["kind"] == "reply"}
    assert replies["a1"]["ok"] and replies["i1"]["ok"], replies

    def delivered() -> bool:
        return (
            len(http.received("/jsonrpc/sms")) >= 1
            and len(http.received("/hook")) >= 1
            and len(http.received("/ngsi-ld/v1/entityOperations/upsert")) >= 1
            and len(smtp.messages) >= 1
        )

    wait_for(delivered, 60, "the deliveries")
    time.sleep(3)  # anything sent twice would arrive meanwhile
    # the same records read again after another restart: nothing is sent twice
    w2.stop()
    w3 = make_worker("--stages", ",".join(STAGES), extra_env=env, port=w1.port).start(STAGES)
    time.sleep(3)

    assert len(http.received("/jsonrpc/sms")) == 1
    assert len(http.received("/hook")) == 1
    assert len(http.received("/ngsi-ld/v1/entityOperations/upsert")) == 1
    assert [m.rcpt_tos for m in smtp.messages] == [["piquete@cm-porto.pt"]]  # not the drill mailbox
    mail = smtp.messages[0]
    assert "Cheia" in mail.subject and "Flood" in mail.subject
    assert http.received("/hook")[0].signature_ok and http.received("/hook")[0].json["cap"] == cap["xml"]
    ent = http.entities[alert_entity_id(cap["identifier"])]
    assert (
        ent["data"]["value"]["status"] == "Actual"
        and ent["address"]["value"]["addressLocality"] == "Campanhã"
    )

    db = Path(w3.env["ATALAIA_DATA_DIR"]) / "deliveries.sqlite"
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT target, status FROM deliveries WHERE incident=?", (cap["identifier"],)
        ).fetchall()
    assert Counter(rows) == Counter(
        {
            ("pgu", "delivered"): 1,
            ("sala", "delivered"): 1,
            ("ana-sms", "delivered"): 1,
            ("piquete", "delivered"): 1,
        }
    )

    feed = feedparser.parse(httpx.get(f"{w3.url}/cap/feed.atom", timeout=5).content)
    assert not feed.bozo and [e.id.rsplit("/", 1)[-1] for e in feed.entries] == [f"{cap['identifier']}.xml"]
    # a tenant no feed can name (a control character answered 500 on this public page)
    for bad in ("%01", "%00", "%EF%BF%BE", "a%20b"):
        r = httpx.get(f"{w3.url}/cap/feed.atom?tenant={bad}", timeout=5)
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json"), bad
