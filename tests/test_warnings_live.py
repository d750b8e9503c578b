"""The warnings stage on the real (embedded) broker: draft → submit → approve (another person) on
``atalaia.commands``; the worker is killed (-9) between approval and issue; after the restart the
issue publishes exactly one CAP document on ``atalaia.warnings``, the feed lists it and its CAP
document is served. The incidents stage, reading the same topic, leaves warning commands alone."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import feedparser
import httpx
import orjson
import pytest

from atalaia.warnings.cap import validate
from tests.conftest import consume_all
from tests.test_incidents_live import produce, wait_for

pytestmark = pytest.mark.broker
STAGES = ("incidents", "warnings")


def on_topic(broker: str, topic: str) -> list[dict]:
    return [orjson.loads(r.value) for r in asyncio.run(consume_all(broker, topic, idle=1.0, timeout=30))]


def test_issue_after_a_kill_publishes_once(broker, topic_prefix, make_worker) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    draft = {
        "sender": "protecao.civil@cm-porto.pt",
        "level": "orange",
        "event": {"pt-PT": "Cheia", "en-GB": "Flood"},
        "headline": {"pt-PT": "Aviso laranja de cheia", "en-GB": "Orange flood warning"},
        "instruction": {"pt-PT": "Afaste-se do rio.", "en-GB": "Keep away from the river."},
        "expires": (now + timedelta(days=1)).isoformat(),
        "area": {"geocodes": {"DICOFRE": ["131203"]}},
    }
    commands = f"{topic_prefix}.commands"
    warnings_topic = f"{topic_prefix}.warnings"

    def cmd(cid: str, action: str, actor: str, role: str, **kw) -> dict:
        return {"kind": "warning", "id": cid, "action": action, "actor": actor, "role": role, **kw}

    w1 = make_worker("--stages", ",".join(STAGES)).start(STAGES)
    asyncio.run(produce(broker, commands, [cmd("c1", "draft", "ana", "operator", draft=draft)]))
    wait_for(lambda: any(o["kind"] == "reply" for o in on_topic(broker, warnings_topic)), 30, "the draft")
    wid = next(o for o in on_topic(broker, warnings_topic) if o["kind"] == "reply")["warning"]
    asyncio.run(
        produce(
            broker,
            commands,
            [
                cmd("c2", "submit", "ana", "operator", warning=wid),
                cmd("c3", "approve", "ana", "approver", warning=wid),  # self-approval: refused
                cmd("c4", "approve", "rui", "approver", warning=wid),
            ],
        )
    )
    wait_for(
        lambda: any(o.get("command") == "c4" for o in on_topic(broker, warnings_topic)), 30, "the approval"
    )
    w1.kill()  # -9 between approval and publication

    w2 = make_worker("--stages", ",".join(STAGES), port=w1.port).start(STAGES)
    asyncio.run(produce(broker, commands, [cmd("c5", "issue", "ana", "operator", warning=wid)]))
    wait_for(
        lambda: any(o["kind"] == "cap" for o in on_topic(broker, warnings_topic)), 30, "the CAP document"
    )
    out = on_topic(broker, warnings_topic)
    caps = [o for o in out if o["kind"] == "cap"]
    assert len(caps) == 1, caps
    replies = {o["command"]: o for o in out if o["kind"] == "reply"}
    assert not replies["c3"]["ok"] and "four eyes" in replies["c3"]["error"]
    assert replies["c4"]["ok"] and replies["c5"]["ok"]
    identifier = caps[0]["identifier"]

    feed = feedparser.parse(httpx.get(f"{w2.url}/cap/feed.atom", timeout=5).content)
    assert not feed.bozo and [e.id.rsplit("/", 1)[-1] for e in feed.entries] == [f"{identifier}.xml"]
    r = httpx.get(f"{w2.url}/cap/alerts/{identifier}.xml", timeout=5)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/cap+xml")
    assert validate(r.content) == [] and r.content.decode() == caps[0]["xml"]
    assert httpx.get(f"{w2.url}/cap/alerts/nope.xml", timeout=5).status_code == 404
    # the incidents stage put none of the warning commands on the DLQ
    dlq = on_topic(broker, f"{topic_prefix}.dlq")
    assert not [d for d in dlq if "warning" in str(d.get("reasons", ""))]
    w2.stop()


def test_a_replayed_issue_publishes_the_same_cap_document(
    broker, topic_prefix, make_worker, tmp_path
) -> None:
    """Issued from the console, then the worker is killed (-9) before its stage checkpointed the
    issue: the restarted stage reads the command again and publishes the same CAP document (same
    `sent`, same identifier, so the same delivery ids), not a second warning. Before, the console
    left the command's time out and the replay stamped a new `sent`: a second identifier, a second
    SMS and a first document that could never be cancelled."""
    from tests.test_warnings_console import issue_via_console, users_file

    env = {"ATALAIA_CONSOLE_USERS": str(users_file(tmp_path)), "ATALAIA_CHECKPOINT_S": "600"}
    w1 = make_worker("--stages", "warnings", extra_env=env).start(("warnings",))
    issue_via_console(w1.url)
    first = [o for o in on_topic(broker, f"{topic_prefix}.warnings") if o["kind"] == "cap"]
    assert len(first) == 1
    w1.kill()  # -9: nothing of this was checkpointed (every 600 s)
    time.sleep(1.5)  # a new second: a `sent` stamped on replay would differ
    w2 = make_worker("--stages", "warnings", extra_env=env, port=w1.port).start(("warnings",))
    wait_for(
        lambda: len([o for o in on_topic(broker, f"{topic_prefix}.warnings") if o["kind"] == "cap"]) > 1,
        30,
        "the replayed issue",
    )
    caps = [o for o in on_topic(broker, f"{topic_prefix}.warnings") if o["kind"] == "cap"]
    assert {c["identifier"] for c in caps} == {first[0]["identifier"]}
    assert {c["xml"] for c in caps} == {first[0]["xml"]}
    assert httpx.get(f"{w2.url}/cap/alerts/{first[0]['identifier']}.xml", timeout=5).status_code == 200
    w2.stop()
