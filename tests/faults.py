"""The fault scenarios of issue 10, written once and run at two scales: short in ``make test``
(``tests/test_faults_*.py``) and long in ``make soak`` (``tests/soak/``). Each scenario returns
its figures (a dict) and prints them as one ``FAULT-FIGURES`` JSON line, which
``tests/README.md`` quotes.

* :func:`kill_scenario` — a recorded stream through every stage, the worker SIGKILLed N times
  at random instants: alarms equal ``atalaia rules replay``; every notification id the
  escalation produced reaches its SMTP / signed-webhook sink, none twice.
* :func:`freeze_scenario` — the broker SIGSTOPped under a running worker: the worker recovers
  (or says so loudly), events sent after the thaw become observations and alarms, and the ERROR
  lines written during the outage are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import re
import signal
import sqlite3
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from atalaia.notifiers.testing import HttpSink, SmtpSink
from tests.conftest import consume_all, water_notification
from tests.test_streams_delivery_live import SinkThread
from tests.test_streams_rules_live import per_key, replay, send

ALL_STAGES = ("ingest", "rules", "incidents", "projection", "escalation", "delivery")
SECRET = "fault-hook-key"

RULES = """
group: hydro
rules:
  - id: level-high
    select: {type: WaterObserved, attribute: height}
    severities:
      - {severity: critical, above: 4.5, clear_below: 4.2, for: 2m}
      - {severity: high, above: 3.8}
  - id: level-avg
    select: {type: WaterObserved, attribute: height}
    aggregate: {function: avg, window: 10m}
    severities: [{severity: medium, above: 3.6}]
  - id: rising
    select: {type: WaterObserved, attribute: height}
    aggregate: {function: delta, window: 5m}
    severities: [{severity: high, above: 0.6}]
"""
# one incident per entity episode: keyed by entity (no parish label), closed when it clears
INCIDENTS = """
correlation: {window: 5m}
closing: {after: 0s}
chattering: {auto_shelve: false}
"""


def escalation_yaml(http: HttpSink, smtp: SmtpSink) -> str:
    return f"""
timezone: Europe/Lisbon
console_url: http://127.0.0.1:8080
targets:
  sala: {{channel: webhook, url: "{http.url}/hook", secret: "${{FAULT_HOOK_SECRET}}"}}
  ana-email: {{channel: email, url: "{smtp.mailto("ana@cm-porto.pt")}"}}
routes: [{{policy: cheia}}]
policies:
  cheia:
    steps:
      - {{targets: [sala, ana-email], wait: 10m}}
"""


def figures(name: str, **values: Any) -> dict[str, Any]:
    out = {"scenario": name, **values}
    print("FAULT-FIGURES " + json.dumps(out, sort_keys=True))
    return out


def wave_history(path: Path, entities: int, steps: int, seed: int = 7) -> int:
    """Gauges whose level swings across the thresholds (a flood wave every ~40 min per gauge, out
    of phase), one observation per gauge per minute, ending now (wall-clock escalation timers)."""
    rng = random.Random(seed)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=steps)
    lines = []
    phase = [rng.uniform(0, 2 * math.pi) for _ in range(entities)]
    for k in range(steps):
        for e in range(entities):
            h = 3.2 + 1.5 * math.sin(2 * math.pi * k / 40 + phase[e]) + rng.gauss(0, 0.08)
            t = start + timedelta(minutes=k, seconds=(e * 3) % 60)
            lines.append(
                json.dumps(
                    {
                        "time": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "entity": f"urn:ngsi-ld:WaterObserved:k{e:02d}",
                        "type": "WaterObserved",
                        "attributes": {"height": round(h, 3)},
                    }
                )
            )
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def chunks(history: Path, parts: int) -> list[Path]:
    """The history in ``parts`` files, cut at whole minutes (sent one after another)."""
    lines = history.read_text().splitlines()
    size = math.ceil(len(lines) / parts)
    out = []
    for i in range(parts):
        p = history.with_name(f"chunk{i:02d}.jsonl")
        p.write_text("\n".join(lines[i * size : (i + 1) * size]) + "\n")
        out.append(p)
    return out


def read_log(db: Path) -> dict[str, dict]:
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        con.row_factory = sqlite3.Row
        return {r["notification_id"]: dict(r) for r in con.execute("SELECT * FROM deliveries")}
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()


def read_attempts(db: Path) -> list[dict]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM attempts")]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def _health(w) -> dict:
    try:
        return w.health()
    except (httpx.HTTPError, ValueError):
        return {}


def kill_scenario(
    broker: str, topic_prefix: str, make_worker, tmp_path: Path, *, kills: int, entities: int, steps: int
) -> dict[str, Any]:
    smtp = SmtpSink().start()
    try:
        with SinkThread(HttpSink(secret=SECRET)) as http:
            return _kill_run(broker, topic_prefix, make_worker, tmp_path, http, smtp, kills, entities, steps)
    finally:
        smtp.stop()


def _kill_run(broker, topic_prefix, make_worker, tmp_path, http, smtp, kills, entities, steps):
    t_begin = time.monotonic()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    (tmp_path / "incidents.yaml").write_text(INCIDENTS)
    (tmp_path / "escalation.yaml").write_text(escalation_yaml(http, smtp))
    history = tmp_path / "history.jsonl"
    n = wave_history(history, entities, steps)
    expected = replay(rules, history)
    env = {
        "ATALAIA_RULES_PATHS": json.dumps([str(rules)]),
        "ATALAIA_INCIDENTS_PATH": str(tmp_path / "incidents.yaml"),
        "ATALAIA_ESCALATION_PATH": str(tmp_path / "escalation.yaml"),
        "FAULT_HOOK_SECRET": SECRET,
    }
    rng = random.Random(kills)
    w = make_worker("--stages", ",".join(ALL_STAGES), extra_env=env).start(ALL_STAGES)
    port = w.port
    db = Path(w.env["ATALAIA_DATA_DIR"]) / "deliveries.sqlite"
    parts = chunks(history, kills + 1)
    kill_log: list[dict] = []
    for i, part in enumerate(parts):
        send(w.env, part)
        if i == len(parts) - 1:
            break
        # kill while the chunk is being worked on: after a random share of it went through rules,
        # or (every other kill) while the delivery stage is sending
        size = len(part.read_text().splitlines())
        rows_before = len(read_log(db))
        deadline = time.monotonic() + 60
        if i % 2 == 0:
            goal = rng.uniform(0.1, 0.8) * size
            while _health(w).get("stages", {}).get("rules", {}).get("processed", 0) < goal:
                assert time.monotonic() < deadline, w.log.read_text()[-4000:]
                time.sleep(0.02)
        else:
            while len(read_log(db)) <= rows_before and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 0.3))
        at_kill = _health(w).get("stages", {})
        w.kill()
        kill_log.append(
            {
                "after_chunk": i,
                "rules_processed": at_kill.get("rules", {}).get("processed"),
                "log_rows": len(read_log(db)),
            }
        )
        w = make_worker("--stages", ",".join(ALL_STAGES), extra_env=env, port=port).start(ALL_STAGES)

    # the end: the alarms topic equals the replay, and every delivery row is final and stays so
    want = per_key(expected)
    deadline = time.monotonic() + 180
    while True:
        records = asyncio.run(consume_all(broker, f"{topic_prefix}.alarms", idle=3.0, timeout=90))
        got = [orjson.loads(r.value) for r in records]
        unique = list({t["id"]: t for t in got}.values())
        live = per_key(unique)
        if live == want or time.monotonic() > deadline:
            break
    diff = {k: (live.get(k), want.get(k)) for k in set(live) | set(want) if live.get(k) != want.get(k)}
    assert not diff, "\n".join(f"{k}:\n  live   {a}\n  replay {b}" for k, (a, b) in sorted(diff.items())[:5])

    def settled() -> bool:
        log = read_log(db)
        return bool(log) and all(d["status"] in ("delivered", "in-doubt", "failed") for d in log.values())

    deadline = time.monotonic() + 120
    stable_since, last_rows = None, -1
    while time.monotonic() < deadline:
        rows = len(read_log(db))
        if settled() and rows == last_rows:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since > 5:
                break
        else:
            stable_since = None
        last_rows = rows
        time.sleep(0.5)
    assert settled(), f"{Counter(d['status'] for d in read_log(db).values())}\n{w.log.read_text()[-3000:]}"

    records = asyncio.run(consume_all(broker, f"{topic_prefix}.notifications", idle=3.0, timeout=90))
    produced: dict[str, dict] = {}
    for rec in records:
        note = orjson.loads(rec.value)
        produced[note["id"]] = note
    log = read_log(db)
    attempts = read_attempts(db)
    unknown = Counter(a["notification_id"] for a in attempts if a["status"] == "unknown")
    w.stop()

    # nothing lost: every produced notification is in the delivery log, final
    assert set(log) == set(produced), (len(log), len(produced))
    statuses = Counter(d["status"] for d in log.values())
    assert statuses["failed"] == 0, statuses
    in_doubt = {i for i, d in log.items() if d["status"] == "in-doubt"}
    assert all(log[i]["target"] == "ana-email" for i in in_doubt), "only a non-idempotent channel is in doubt"

    # SMTP: every email notification arrived exactly once (an in-doubt one at most once)
    mail = Counter()
    for m in smtp.messages:
        ref = re.search(r"Ref\.: (\S+) / (\w+)", m.text)
        assert ref, m.text
        mail[ref[2]] += 1
    emails = {i for i, d in log.items() if d["target"] == "ana-email"}
    mail_dups = sum(c - 1 for c in mail.values())
    mail_lost = emails - set(mail)
    assert mail_dups == 0, mail
    assert set(mail) <= emails
    assert mail_lost <= in_doubt, f"emails lost without being in doubt: {mail_lost - in_doubt}"

    # signed webhook: each delivery id arrives; a second copy only after an `unknown` attempt (one
    # killed in flight, which may or may not have reached the receiver before the kill)
    hooks: dict[str, list[bytes]] = {}
    for r in http.received("/hook"):
        assert r.signature_ok
        hooks.setdefault(r.headers["X-Atalaia-Delivery"], []).append(r.body)
    webhook_ids = {i for i, d in log.items() if d["target"] == "sala"}
    assert set(hooks) == webhook_ids, (len(hooks), len(webhook_ids))
    hook_resends = sum(len(b) - 1 for b in hooks.values())
    for i, bodies in hooks.items():
        assert 1 <= len(bodies) <= 1 + unknown[i], (i, len(bodies), unknown[i])
        assert len(set(bodies)) == 1, "a re-sent webhook carries the identical body"

    return figures(
        "kill",
        kills=kills,
        observations=n,
        alarm_transitions=len(expected),
        alarm_duplicates_on_topic=len(got) - len(unique),
        notifications=len(produced),
        smtp_expected=len(emails),
        smtp_received=sum(mail.values()),
        smtp_duplicates=mail_dups,
        smtp_in_doubt=len(in_doubt),
        smtp_lost_in_doubt=len(mail_lost),
        webhook_expected=len(webhook_ids),
        webhook_ids_received=len(hooks),
        webhook_resent_after_unknown=hook_resends,
        kill_points=kill_log,
        seconds=round(time.monotonic() - t_begin, 1),
    )


# --- broker frozen -------------------------------------------------------------------------


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(r"\bERROR\b", line)]


def freeze_scenario(make_worker, tmp_path: Path, *, freeze_s: float) -> dict[str, Any]:
    """The broker process SIGSTOPped for ``freeze_s`` under a worker running ingest and rules;
    HTTP ingest is tried during the freeze (answers are counted: accepted, refused, timed out)."""
    from atalaia.streams.broker import EmbeddedBroker, ensure_topics
    from tests.test_broker_reset import send_events

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - {id: lvl, select: {type: WaterObserved, attribute: height},"
        " severities: [{severity: high, above: 3.5}]}\n"
    )
    broker = EmbeddedBroker().start()
    try:
        env = {"ATALAIA_KAFKA": broker.bootstrap, "ATALAIA_RULES_PATHS": json.dumps([str(rules)])}
        w = make_worker("--stages", "ingest,rules", extra_env=env)
        prefix = w.env["ATALAIA_TOPIC_PREFIX"]
        asyncio.run(ensure_topics(broker.bootstrap, prefix, partitions=3))
        w.start(("ingest", "rules"))
        before = [f"before-{i}" for i in range(20)]
        asyncio.run(send_events(broker.bootstrap, f"{prefix}.events", before))
        _wait(lambda: _health(w)["stages"]["rules"]["processed"] >= 20, 60, "the first events", w)

        errors_before = len(error_lines(w.log.read_text()))
        lines_before = len(w.log.read_text().splitlines())
        pid = broker.proc.pid
        os.kill(pid, signal.SIGSTOP)
        t_stop = time.monotonic()
        answers: Counter = Counter()
        latencies: list[float] = []
        health_during: Counter = Counter()

        def post(k: int) -> None:  # a FIWARE broker's notification during the freeze
            t0 = time.monotonic()
            try:
                r = httpx.post(
                    f"{w.url}/ngsi-ld/notify",
                    content=water_notification(f"frozen-{k}", 5.0),
                    headers={"Content-Type": "application/json"},
                    timeout=freeze_s + 60,
                )
                answers[r.status_code] += 1
            except httpx.HTTPError:
                answers["no answer"] += 1
            latencies.append(time.monotonic() - t0)

        pool = ThreadPoolExecutor(8)
        k = 0
        try:
            while time.monotonic() - t_stop < freeze_s:
                if k < 8:
                    k += 1
                    pool.submit(post, k)
                try:
                    health_during[httpx.get(f"{w.url}/livez", timeout=2).status_code] += 1
                except httpx.HTTPError:
                    health_during["timeout"] += 1
                time.sleep(max(1.0, freeze_s / 10))
        finally:
            os.kill(pid, signal.SIGCONT)
        t_cont = time.monotonic()
        outage_s = t_cont - t_stop

        # after the thaw: new events become observations and alarms, promptly
        after = [f"after-{i}" for i in range(20)]
        asyncio.run(send_events(broker.bootstrap, f"{prefix}.events", after))
        sent_at = time.monotonic()

        def all_after_observed() -> bool:
            recs = asyncio.run(consume_all(broker.bootstrap, f"{prefix}.observations", idle=0.5, timeout=10))
            seen = {orjson.loads(r.value)["entity"].rsplit(":", 1)[1] for r in recs}
            return set(after) <= seen

        _wait(all_after_observed, 120, "the events sent after the thaw", w)
        recovered_s = time.monotonic() - sent_at
        alarms = asyncio.run(consume_all(broker.bootstrap, f"{prefix}.alarms", idle=2.0, timeout=60))
        firing = {orjson.loads(r.value)["key"].rsplit(":", 1)[1] for r in alarms}
        assert set(after) <= firing, sorted(firing)[:10]
        # what HTTP ingest accepted during the freeze was not lost either
        pool.shutdown(wait=True)
        accepted_frozen = answers.get(200, 0)
        recs = asyncio.run(consume_all(broker.bootstrap, f"{prefix}.observations", idle=2.0, timeout=30))
        frozen_seen = {
            orjson.loads(r.value)["entity"].rsplit(":", 1)[1]
            for r in recs
            if ":frozen-" in orjson.loads(r.value)["entity"]
        }
        assert len(frozen_seen) >= accepted_frozen, (frozen_seen, answers)
        assert set(answers) <= {200, 503}, f"ingest during the freeze: {answers} (503 = retry later)"
        time.sleep(2)
        text = w.log.read_text()
        errors = error_lines(text)[errors_before:]
        health = _health(w)
        w.stop()
        return figures(
            "broker-frozen",
            freeze_s=round(outage_s, 1),
            http_answers_during_freeze={str(k): v for k, v in answers.items()},
            http_slowest_answer_s=round(max(latencies, default=0), 1),
            livez_during_freeze={str(k): v for k, v in health_during.items()},
            frozen_accepted_then_observed=len(frozen_seen),
            recovered_s=round(recovered_s, 2),
            error_lines=len(errors),
            warning_lines=sum(1 for line in text.splitlines()[lines_before:] if "WARNING" in line),
            error_kinds=len({re.sub(r"\d+", "N", e.split("ERROR", 1)[1])[:80] for e in errors}),
            health_after=health.get("status"),
            sample_errors=[e[-200:] for e in errors[:3]],
        )
    finally:
        with contextlib.suppress(ProcessLookupError, AttributeError):
            os.kill(broker.proc.pid, signal.SIGCONT)
        broker.stop()


def _wait(pred, timeout: float, what: str, w=None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return
        except (httpx.HTTPError, OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}" + (f":\n{w.log.read_text()[-6000:]}" if w else "")
            )
        time.sleep(0.3)
