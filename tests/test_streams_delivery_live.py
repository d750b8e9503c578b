"""Issue 7, end to end on the real broker: "never lost, never twice".

An NGSI-LD notification → ingest → rule alarm → incident → escalation → delivery to real local
servers (aiosmtpd SMTP, an aiohttp NGSI-LD broker + signed-webhook receiver). The worker is
SIGKILLed in the middle of the escalation, at a chosen instant: step 1 is delivered and recorded,
and step 2's first NGSI-LD upsert, signed webhook and email have each reached their server while
the answer is held back (sent, not yet recorded); the other step-2 messages wait in the lanes and
the repeats are still timers. After the restart the crash policy of ``notifiers/README.md`` holds
exactly:

* a ``sending`` row on an idempotent channel (NGSI-LD upsert, signed webhook) is re-sent once,
  its first attempt recorded ``unknown``; nothing else is ever sent twice;
* a ``sending`` row on email is NOT re-sent: it is ``in-doubt`` in the delivery log;
* every notification id the escalation engine put on ``atalaia.notifications`` is in the log,
  ``delivered`` (and found at its target) or ``in-doubt``.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from atalaia.notifiers.model import notification_id
from atalaia.notifiers.testing import HttpSink, SmtpSink
from tests.conftest import ATALAIA, consume_all

pytestmark = pytest.mark.broker

STAGES = ("ingest", "rules", "incidents", "projection", "escalation", "delivery")
SECRET = "s3cr3t-hook-key"
UPSERT = "/ngsi-ld/v1/entityOperations/upsert"
HOOK = "/hook"
GAUGES = {
    "urn:ngsi-ld:WaterObserved:live-ribeira": "Sé",
    "urn:ngsi-ld:WaterObserved:live-foz": "Foz do Douro",
}
STEP2_TARGETS = ("pgu", "sala", "chefe-email")
IDEMPOTENT = {"pgu", "sala"}  # NGSI-LD upsert, signed webhook
EMAIL_TARGET = {"ana@cm-porto.pt": "ana-email", "chefe@cm-porto.pt": "chefe-email"}

RULES = """
group: hydro
rules:
  - id: level-high
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: high, above: 3.5}]
    labels: {team: hydro}
"""
INCIDENTS = """
correlation: {window: 30m}
chattering: {auto_shelve: false}
"""


def escalation_yaml(http: HttpSink, smtp: SmtpSink) -> str:
    return f"""
timezone: Europe/Lisbon
console_url: http://127.0.0.1:8080
targets:
  pgu: {{channel: ngsi-ld, url: "{http.url}", tenant: porto}}
  sala: {{channel: webhook, url: "{http.url}{HOOK}", secret: "${{LIVE_HOOK_SECRET}}"}}
  ana-email: {{channel: email, url: "{smtp.mailto("ana@cm-porto.pt")}"}}
  chefe-email: {{channel: email, url: "{smtp.mailto("chefe@cm-porto.pt")}"}}
routes: [{{policy: cheia}}]
policies:
  cheia:
    steps:
      - {{targets: [pgu, sala, ana-email], wait: 2s}}
      - {{targets: [pgu, sala, chefe-email], wait: 2s, repeat: 2}}
"""


class HoldingHttpSink(HttpSink):
    """An HttpSink that, for requests ``hold(path, body)`` picks, processes the request (records
    it, upserts the entity) and then keeps the answer back until ``release`` is set: the sender's
    outcome is unknown if it dies meanwhile."""

    def __init__(self, secret: str, release: threading.Event) -> None:
        super().__init__(secret=secret)
        self.release = release
        self.held: list[str] = []

    def hold(self, path: str, body: bytes) -> bool:
        if path == UPSERT:  # pgu is in each step once: an Alert upserted before means step 2
            ids = [e["id"] for e in orjson.loads(body)]
            seen = any(e["id"] in ids for r in self.received(UPSERT) for e in r.json)
            return seen and UPSERT not in self.held
        if path == HOOK:
            msg = orjson.loads(body)
            return (msg["step"], msg["repeat"]) == (1, 0) and HOOK not in self.held
        return False

    async def _handle(self, request):
        path = "/" + request.match_info["tail"]
        body = await request.read()  # cached by aiohttp: the base handler reads it again
        held = self.hold(path, body)
        response = await super()._handle(request)
        if held:
            self.held.append(path)
            await asyncio.to_thread(self.release.wait, 60)
        return response


class SinkThread:
    """The HTTP sink's event loop in a thread (the worker is a subprocess; this test is sync)."""

    def __init__(self, sink: HttpSink) -> None:
        self.sink = sink
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> HttpSink:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.sink.start(), self.loop).result(10)
        return self.sink

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.sink.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def hold_first_mail_to(smtp: SmtpSink, rcpt: str, release: threading.Event, held: list[str]) -> None:
    """The first message to ``rcpt`` is received (kept in ``smtp.messages``) but its 250 answer
    is held back until ``release`` is set."""
    handler = smtp._controller.handler
    received = handler.handle_DATA

    async def handle_DATA(server, session, envelope):
        answer = await received(server, session, envelope)
        if rcpt in envelope.rcpt_tos and rcpt not in held:
            held.append(rcpt)
            await asyncio.to_thread(release.wait, 60)
        return answer

    handler.handle_DATA = handle_DATA  # aiosmtpd binds the hooks per connection: none is open yet


def ngsi_ld_notification(observed: str) -> bytes:
    data = [
        {
            "id": entity,
            "type": "WaterObserved",
            "parish": {"type": "Property", "value": parish},
            "height": {"type": "Property", "value": 4.2, "observedAt": observed, "unitCode": "MTR"},
        }
        for entity, parish in GAUGES.items()
    ]
    return orjson.dumps(
        {
            "id": f"urn:ngsi-ld:Notification:live-{observed}",
            "type": "Notification",
            "subscriptionId": "urn:ngsi-ld:Subscription:atalaia:live",
            "notifiedAt": observed,
            "data": data,
            "@context": "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
        }
    )


def read_log(db: Path) -> dict[str, dict]:
    """The deliveries table, read-only (the worker may be writing)."""
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        con.row_factory = sqlite3.Row
        return {r["notification_id"]: dict(r) for r in con.execute("SELECT * FROM deliveries")}
    except sqlite3.OperationalError:  # the schema is not there yet
        return {}
    finally:
        con.close()


def notify_log(env: dict, db: Path, *extra: str) -> list[dict]:
    r = subprocess.run(
        [ATALAIA, "notify", "log", "--db", str(db), "--json", "--limit", "10000", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def wait_for(pred, timeout: float, what: str, diag=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{diag()}")
        time.sleep(0.1)


def test_escalation_survives_a_kill_mid_delivery_never_lost_never_twice(
    broker, topic_prefix, make_worker, tmp_path: Path
) -> None:
    release = threading.Event()
    smtp = SmtpSink().start()
    held_mail: list[str] = []
    hold_first_mail_to(smtp, "chefe@cm-porto.pt", release, held_mail)
    try:
        with SinkThread(HoldingHttpSink(SECRET, release)) as http:
            run(broker, topic_prefix, make_worker, tmp_path, http, smtp, release, held_mail)
    finally:
        release.set()
        smtp.stop()


def run(broker, topic_prefix, make_worker, tmp_path, http, smtp, release, held_mail) -> None:
    for name, text in (
        ("rules.yaml", RULES),
        ("incidents.yaml", INCIDENTS),
        ("escalation.yaml", escalation_yaml(http, smtp)),
    ):
        (tmp_path / name).write_text(text)
    env = {
        "ATALAIA_RULES_PATHS": json.dumps([str(tmp_path / "rules.yaml")]),
        "ATALAIA_INCIDENTS_PATH": str(tmp_path / "incidents.yaml"),
        "ATALAIA_ESCALATION_PATH": str(tmp_path / "escalation.yaml"),
        "LIVE_HOOK_SECRET": SECRET,
    }
    w1 = make_worker("--stages", ",".join(STAGES), extra_env=env).start(STAGES)
    db = Path(w1.env["ATALAIA_DATA_DIR"]) / "deliveries.sqlite"
    diag = lambda: f"log: {list(read_log(db).values())}\nworker:\n{w1.log.read_text()[-3000:]}"  # noqa: E731

    # the FIWARE broker's notification: both gauges above 3.5 m, observed now (wall-clock timers)
    observed = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    r = httpx.post(
        f"{w1.url}/ngsi-ld/notify",
        content=ngsi_ld_notification(observed),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 200 and r.json()["accepted"] == len(GAUGES), r.text

    # step 2 has begun: one upsert, one webhook and one email reached their servers, unanswered
    def step2_in_flight() -> bool:
        step1 = [d for d in read_log(db).values() if d["step"] == 0]
        done = len(step1) == 3 * len(GAUGES) and all(d["status"] == "delivered" for d in step1)
        return done and len(http.held) == 2 and bool(held_mail)

    wait_for(step2_in_flight, 40, "step 1 delivered and step 2's first sends at the servers", diag)
    w1.kill()
    at_kill = read_log(db)
    release.set()

    # the kill landed where intended: step 1 delivered and recorded, step 2 partly in flight
    incidents = sorted({d["incident"] for d in at_kill.values()})
    assert len(incidents) == len(GAUGES), at_kill
    step1 = {i: d for i, d in at_kill.items() if d["step"] == 0}
    assert len(step1) == 3 * len(incidents) and all(d["status"] == "delivered" for d in step1.values())
    in_flight = {i: d for i, d in at_kill.items() if d["status"] == "sending"}
    assert sorted(d["target"] for d in in_flight.values()) == sorted(STEP2_TARGETS), at_kill
    assert all((d["step"], d["repeat"]) == (1, 0) for d in in_flight.values())
    queued_at_kill = {i for i, d in at_kill.items() if d["status"] == "queued"}
    delivered_at_kill = {i for i, d in at_kill.items() if d["status"] == "delivered"}
    assert set(at_kill) == set(step1) | set(in_flight) | queued_at_kill, at_kill

    # restart on the same data dir: recovery, then Kafka replays whatever was not checkpointed
    w2 = make_worker("--stages", ",".join(STAGES), extra_env=env, port=w1.port).start(STAGES)
    diag = lambda: f"log: {list(read_log(db).values())}\nworker:\n{w2.log.read_text()[-3000:]}"  # noqa: E731
    last = {notification_id(inc, "cheia", 0, 1, 2, target) for inc in incidents for target in STEP2_TARGETS}

    def finished() -> bool:
        log = read_log(db)
        return last <= set(log) and all(d["status"] in ("delivered", "in-doubt") for d in log.values())

    wait_for(finished, 60, "the escalation to run to its last repeat, every row final", diag)

    # every notification the escalation engine produced (duplicates on the topic are replays)
    records = asyncio.run(consume_all(broker, f"{topic_prefix}.notifications", idle=2.0, timeout=30))
    produced = {}
    for rec in records:
        n = orjson.loads(rec.value)
        produced[n["id"]] = n
    deliveries = {d["notification_id"]: d for d in notify_log(w2.env, db)}
    attempts: dict[str, list[dict]] = {}
    for a in notify_log(w2.env, db, "--attempts"):
        attempts.setdefault(a["notification_id"], []).append(a)
    w2.stop()

    # nothing lost: the log holds exactly the produced ids, each delivered or in doubt
    assert set(deliveries) == set(produced)
    assert last <= set(produced) and step1.keys() <= set(produced)
    assert {d["incident"] for d in deliveries.values()} == set(incidents)
    in_doubt = {i for i, d in deliveries.items() if d["status"] == "in-doubt"}
    assert all(d["status"] == "delivered" for i, d in deliveries.items() if i not in in_doubt)

    # the engine's documented shape: each step's first message to all its targets and the last
    # repeat; the middle repeat may collapse into the last (both overdue while the worker was down)
    for inc in incidents:
        got: dict[tuple[int, int], set[str]] = {}
        for n in produced.values():
            if n["incident"] == inc:
                got.setdefault((n["step"], n["repeat"]), set()).add(n["target"])
        assert {(0, 0), (1, 0), (1, 2)} <= set(got) <= {(0, 0), (1, 0), (1, 1), (1, 2)}, got
        assert all(
            t == ({"pgu", "sala", "ana-email"} if s == 0 else set(STEP2_TARGETS)) for (s, _), t in got.items()
        )

    # the crash policy, exactly: in flight at the kill → idempotent re-sent, email in doubt
    assert in_doubt == {i for i, d in in_flight.items() if d["target"] not in IDEMPOTENT}
    for i, d in in_flight.items():
        if d["target"] in IDEMPOTENT:
            assert [a["status"] for a in attempts[i]] == ["unknown", "delivered"], attempts[i]
            assert deliveries[i]["attempts"] == 2
        else:
            assert [a["status"] for a in attempts[i]] == ["in-doubt"], attempts[i]
            assert deliveries[i]["attempts"] == 1
    for i in set(deliveries) - set(in_flight):  # sent once, recorded once (before or after the kill)
        assert [a["status"] for a in attempts[i]] == ["delivered"], (deliveries[i], attempts[i])
    assert all(len(attempts[i]) == 1 for i in delivered_at_kill | queued_at_kill if i not in in_flight)
    unknown = Counter(i for i, rows in attempts.items() for a in rows if a["status"] == "unknown")
    assert all(deliveries[i]["target"] in IDEMPOTENT for i in unknown)

    # email (not idempotent): every message at most once; each delivered or in-doubt one arrived
    got_mail = Counter()
    for m in smtp.messages:
        ref = re.search(r"Ref\.: (\S+) / (\w+)", m.text)
        assert ref, m.text
        assert (
            deliveries[ref[2]]["target"] == EMAIL_TARGET[m.rcpt_tos[0]]
            and deliveries[ref[2]]["incident"] == ref[1]
        )
        got_mail[ref[2]] += 1
    assert max(got_mail.values()) == 1, got_mail
    emails = {i for i, d in deliveries.items() if d["target"].endswith("-email")}
    assert set(got_mail) == emails  # the in-doubt one had reached the server before the kill

    # signed webhook: each delivery id once, twice only after an `unknown` attempt (same body)
    hook_bodies: dict[str, list[bytes]] = {}
    for req in http.received(HOOK):
        assert req.signature_ok, req.headers
        hook_bodies.setdefault(req.headers["X-Atalaia-Delivery"], []).append(req.body)
    hooks = {i for i, d in deliveries.items() if d["target"] == "sala"}
    assert set(hook_bodies) == hooks
    for i, bodies in hook_bodies.items():
        assert len(bodies) == 1 + unknown[i], (i, len(bodies), attempts[i])
        assert len(set(bodies)) == 1 and orjson.loads(bodies[0])["id"] == i

    # NGSI-LD upsert: one per pgu notification of the incident, plus one per `unknown` attempt
    upserts = Counter(e["id"] for req in http.received(UPSERT) for e in req.json)
    assert upserts == Counter(
        {
            f"urn:ngsi-ld:Alert:{inc}": sum(
                1 + unknown[i] for i, d in deliveries.items() if d["target"] == "pgu" and d["incident"] == inc
            )
            for inc in incidents
        }
    )
    assert set(http.entities) == {f"urn:ngsi-ld:Alert:{inc}" for inc in incidents}
    assert sum(unknown.values()) == len(IDEMPOTENT)  # exactly the two idempotent sends in flight
