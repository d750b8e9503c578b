"""Crash test: the notifier worker (a real subprocess) is SIGKILLed right after a send and
before the delivery log records it; on restart (recovery + Kafka replay of the same incident
events) no SMS or email is sent twice, nothing is lost, and the idempotent PGU upsert is redone.
An email killed before its SMTP DATA terminator (no commit marker) is re-sent and arrives once."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

import orjson
import pytest

from atalaia.notifiers.commit import CommitMarks
from atalaia.notifiers.log import SQLiteDeliveryLog
from atalaia.notifiers.testing import HttpSink, SmtpSink, incident_event

INCIDENTS = ["inc-ribeira", "inc-foz", "inc-campanha"]


def config(http: HttpSink, smtp: SmtpSink) -> str:
    port = http.port
    return f"""
timezone: Europe/Lisbon
targets:
  pgu: {{channel: ngsi-ld, url: "{http.url}"}}
  sala: {{channel: webhook, url: "{http.url}/hook", secret: "${{SECRET}}"}}
  ana-sms: {{channel: sms, url: "smseagle://tok@127.0.0.1:{port}/+351912000001"}}
  rui-sms: {{channel: sms, url: "smseagle://tok@127.0.0.1:{port}/+351912000002"}}
  ana-email: {{channel: email, url: "{smtp.mailto("ana@cm-porto.pt")}"}}
  rui-email: {{channel: email, url: "{smtp.mailto("rui@cm-porto.pt")}"}}
routes: [{{policy: p}}]
policies:
  p:
    steps: [{{targets: [pgu, sala, ana-sms, rui-sms, ana-email, rui-email], wait: 10m}}]
"""


async def run_worker(tmp_path, kill_on: str | None) -> tuple[int, str]:
    args = [
        sys.executable,
        "-m",
        "atalaia.notifiers.testing",
        str(tmp_path / "esc.yaml"),
        str(tmp_path / "d.sqlite"),
        str(tmp_path / "events.jsonl"),
        "--env",
        '{"SECRET": "k"}',
    ]
    if kill_on:
        args += ["--kill-on", kill_on]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode in (0, -9), err.decode()[-2000:]
    return proc.returncode, out.decode()


@pytest.mark.parametrize("kill_on", ["ana-sms:2", "rui-email:1", "rui-email:2:pre-commit", "pgu:2"])
async def test_kill_between_send_and_record_then_restart_sends_no_duplicate(tmp_path, kill_on):
    http = await HttpSink(secret="k").start()
    smtp = SmtpSink().start()
    try:
        (tmp_path / "esc.yaml").write_text(config(http, smtp))
        (tmp_path / "events.jsonl").write_bytes(
            b"".join(
                orjson.dumps(incident_event(incident=i, at=f"2026-03-01T10:0{k}:00Z")) + b"\n"
                for k, i in enumerate(INCIDENTS)
            )
        )
        rc, _ = await run_worker(tmp_path, kill_on)
        assert rc == -9  # SIGKILL: the worker really died mid-delivery

        log = SQLiteDeliveryLog(tmp_path / "d.sqlite")
        killed_target = kill_on.split(":")[0]
        assert len(log.deliveries()) == 18  # the whole batch was in the outbox before the kill
        in_flight = {d.notification_id: d.target for d in log.deliveries() if d.status == "sending"}
        # the killed send (and any send other lanes had in flight at that instant) is unrecorded
        assert killed_target in in_flight.values()
        # email (a commit-point channel): in doubt only past the DATA terminator (a marker) and
        # before the server's reply to it; an email killed before it was discarded by the server
        # and is re-sent, one killed after the server's 250 is known taken (the marker has the
        # reply) and is not sent again
        marks = tmp_path / "d.sqlite.smtp-commit"
        uncommitted = {
            i for i, t in in_flight.items() if t.endswith("-email") and not CommitMarks(marks).in_doubt(i)
        }
        doubtful = {i for i, t in in_flight.items() if t not in ("pgu", "sala")} - uncommitted
        if killed_target.endswith("-email"):
            # killed before the terminator (the server discarded it: re-sent), or after the 250
            # (the marker says it was taken: re-sent to nobody)
            assert killed_target in {in_flight[i] for i in uncommitted}
            assert killed_target not in {in_flight[i] for i in doubtful}
        log.close()

        rc, out = await run_worker(tmp_path, None)  # restart: recovery + replay of the same events
        assert rc == 0
        rec = orjson.loads(out.splitlines()[0])
        assert rec["in_doubt"] == len(doubtful)
        assert not marks.exists() or not any(marks.iterdir())  # markers cleared by recovery

        log = SQLiteDeliveryLog(tmp_path / "d.sqlite")
        final = {d.notification_id: d for d in log.deliveries()}
        assert {i for i, d in final.items() if d.status == "in-doubt"} == doubtful
        assert all(
            d.status == "delivered" for i, d in final.items() if i not in doubtful
        )  # nothing else lost
        expected = Counter((d.target, d.incident) for d in final.values() if d.status == "delivered")

        # SMS and email: never twice; everything recorded as delivered arrived exactly once
        sms_to = {"+351912000001": "ana-sms", "+351912000002": "rui-sms"}
        got = Counter(
            (sms_to[r.json["params"]["to"]], r.json["params"]["message"].rsplit(" ", 1)[1])
            for r in http.received("/jsonrpc/sms")
        )
        got += Counter(
            (
                {"ana@cm-porto.pt": "ana-email", "rui@cm-porto.pt": "rui-email"}[m.rcpt_tos[0]],
                m.text.split("Ref.: ")[1].split(" /")[0],
            )
            for m in smtp.messages
        )
        assert max(got.values()) == 1, got
        people = {k: v for k, v in expected.items() if k[0] not in ("pgu", "sala")}
        assert set(people) <= set(got) and len(got) - len(people) <= len(doubtful)
        # the send that was killed had completed: it arrived, and only once
        if killed_target not in ("pgu", "sala"):
            assert sum(1 for k in got if k[0] == killed_target) == len(INCIDENTS)

        # webhook: a receiver deduplicating on X-Atalaia-Delivery sees each notification once;
        # a redelivery (idempotent channel, in flight at the kill) carries the identical body
        by_id: dict[str, set[bytes]] = {}
        for r in http.received("/hook"):
            by_id.setdefault(r.headers["X-Atalaia-Delivery"], set()).add(r.body)
        assert len(by_id) == 3 and all(len(b) == 1 for b in by_id.values())
        # PGU: every incident's Alert entity is there; an in-flight upsert is redone, others not
        assert set(http.entities) == {f"urn:ngsi-ld:Alert:{i}" for i in INCIDENTS}
        redone = sum(1 for t in in_flight.values() if t == "pgu")
        statuses = Counter(a.status for a in log.attempts())
        assert statuses["sending"] == 0 and statuses["in-doubt"] == len(doubtful)
        assert statuses["unknown"] == sum(1 for t in in_flight.values() if t in ("pgu", "sala")) + len(
            uncommitted
        )
        assert len(http.received("/ngsi-ld/v1/entityOperations/upsert")) in range(3, 4 + redone)
        log.close()
    finally:
        smtp.stop()
        await http.stop()
