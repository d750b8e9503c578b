"""Notifier benchmark: notifications/s to a local SMTP server (aiosmtpd, through apprise) and a
local HTTP server (signed webhooks, NGSI-LD upserts), p50/p99 from incident event to delivery,
and the cost of apprise's own per-plugin throttle. Everything on loopback; < 1 min.

    .venv/bin/python -m benchmarks.notifiers_bench [--quick]

The sinks run in the same process (a thread for SMTP, the event loop for HTTP), so the figures
include the receivers' cost; every delivery is recorded in a real SQLite delivery log.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from atalaia.notifiers.config import load_config_text
from atalaia.notifiers.engine import EscalationEngine, EscalationState
from atalaia.notifiers.log import SQLiteDeliveryLog
from atalaia.notifiers.service import Notifier
from atalaia.notifiers.testing import HttpSink, SmtpSink, incident_event
from atalaia.streams.clock import format_time, parse_time


def make_config(
    http: HttpSink, smtp: SmtpSink, n_email: int, n_hook: int, n_pgu: int, throttle: float = 0
) -> str:
    lines = ["timezone: Europe/Lisbon", "targets:"]
    names = []
    for i in range(n_email):
        lines.append(
            f'  email{i}: {{channel: email, throttle: {throttle}, url: "{smtp.mailto(f"p{i}@cm-porto.pt")}"}}'
        )
        names.append(f"email{i}")
    for i in range(n_hook):
        lines.append(f'  hook{i}: {{channel: webhook, url: "{http.url}/hook{i}", secret: s}}')
        names.append(f"hook{i}")
    for i in range(n_pgu):
        lines.append(f'  pgu{i}: {{channel: ngsi-ld, url: "{http.url}/b{i}"}}')
        names.append(f"pgu{i}")
    lines += [
        "routes: [{policy: p}]",
        "policies:",
        "  p:",
        f"    steps: [{{targets: [{', '.join(names)}], wait: 1h}}]",
    ]
    return "\n".join(lines) + "\n"


async def throughput(http, smtp, tmp: Path, label: str, n_incidents: int, **targets) -> None:
    cfg = load_config_text(make_config(http, smtp, **targets))
    engine, state = EscalationEngine(cfg), EscalationState()
    notes = []
    for i in range(n_incidents):
        ev = incident_event(incident=f"{label}-{i}")
        notes += engine.step(state, ev, parse_time(ev["at"]))[1]
    notifier = Notifier(cfg, SQLiteDeliveryLog(tmp / f"{label}.sqlite"))
    await notifier.start()
    t0 = time.perf_counter()
    delivered = await notifier.deliver(notes)
    dt = time.perf_counter() - t0
    await notifier.aclose()
    assert len(delivered) == len(notes), (len(delivered), len(notes))
    n_targets = sum(targets.values())
    print(
        f"{label:<34} {len(notes):>6} notifications to {n_targets:>3} targets in {dt:6.2f} s = "
        f"{len(notes) / dt:8.0f} /s"
    )


async def latency(http, smtp, tmp: Path, rate: float, seconds: float, email: bool = True) -> None:
    """Incident events at ``rate``/s, each notifying 1 webhook + 1 PGU (+ 1 email) target, spread
    over 10 shards of targets; latency = delivered − event handed to the engine (wall clock)."""
    txt = make_config(http, smtp, 10, 10, 10)
    # one policy per incident "shard" so that each event reaches different targets
    pol = "\n".join(
        f"  p{k}:\n    steps: [{{targets: [{f'email{k}, ' if email else ''}hook{k}, pgu{k}], wait: 1h}}]"
        for k in range(10)
    )
    routes = "\n".join(f"  - {{match: {{labels: {{shard: '{k}'}}}}, policy: p{k}}}" for k in range(10))
    head = txt.split("routes:")[0]
    cfg = load_config_text(head + "routes:\n" + routes + "\npolicies:\n" + pol + "\n")
    engine, state = EscalationEngine(cfg), EscalationState()
    submitted: dict[str, float] = {}
    lat: list[float] = []
    notifier = Notifier(cfg, SQLiteDeliveryLog(tmp / "latency.sqlite"))

    def on_result(n, result, attempt, latency_ms):  # called in the lane right after the send
        if result.ok:
            lat.append(time.perf_counter() - submitted[n.incident])

    notifier.ctx.on_result = on_result
    await notifier.start()
    n_events = int(rate * seconds)
    t_start = time.perf_counter()
    for i in range(n_events):
        target_t = t_start + i / rate
        delay = target_t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        now = parse_time("2026-03-01T10:00:00Z")
        ev = incident_event(incident=f"lat-{email}-{i}", at=format_time(now), labels={"shard": str(i % 10)})
        submitted[ev["incident"]] = time.perf_counter()
        _, notes = engine.step(state, ev, now)
        await notifier.submit(notes)
    await notifier.drain()
    await notifier.aclose()
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    print(
        f"event→delivery at {rate:>3.0f} events/s ({len(lat)} deliveries: {'email+' if email else ''}webhook+NGSI-LD): "
        f"p50 {p(0.50):.1f} ms  p99 {p(0.99):.1f} ms  max {lat[-1] * 1000:.1f} ms  "
        f"mean {statistics.fmean(lat) * 1000:.1f} ms"
    )


async def throttle_cost(http, smtp, tmp: Path) -> None:
    for throttle in (5.5, 0.0):
        cfg = load_config_text(make_config(http, smtp, 1, 0, 0, throttle))
        engine, state = EscalationEngine(cfg), EscalationState()
        notes = []
        for i in range(2):
            ev = incident_event(incident=f"thr-{throttle}-{i}")
            notes += engine.step(state, ev, parse_time(ev["at"]))[1]
        notifier = Notifier(cfg, SQLiteDeliveryLog(tmp / f"thr{throttle}.sqlite"))
        await notifier.start()
        t0 = time.perf_counter()
        await notifier.deliver(notes)
        dt = time.perf_counter() - t0
        await notifier.aclose()
        print(f"2 emails to one target, apprise plugin throttle {throttle:>3} s: {dt:5.2f} s")


def engine_speed(n: int) -> None:
    """The pure escalation core: n incidents opened, a tick per simulated minute, half acknowledged."""
    from datetime import timedelta

    from atalaia.notifiers.config import load_config
    from atalaia.notifiers.engine import TICK

    engine, state = (
        EscalationEngine(load_config(Path(__file__).resolve().parents[1] / "config/escalation.yaml")),
        EscalationState(),
    )
    t0 = parse_time("2026-03-02T10:00:00Z")
    events = []
    for i in range(n):
        at = t0 + timedelta(seconds=i * 0.05)
        events.append(
            incident_event(incident=f"e-{i}", at=format_time(at), severity="high", labels={"team": "hydro"})
        )
    acks = [
        incident_event(
            incident=f"e-{i}",
            version=2,
            at=format_time(t0 + timedelta(minutes=7)),
            state="acknowledged",
            change="acknowledged",
            labels={"team": "hydro"},
        )
        for i in range(0, n, 2)
    ]
    start = time.perf_counter()
    notes = 0
    for k in range(0, n, 1000):
        _, out = engine.step_batch(state, events[k : k + 1000], t0 + timedelta(seconds=k * 0.05))
        notes += len(out)
    _, out = engine.step_batch(state, acks, t0 + timedelta(minutes=7))
    notes += len(out)
    for m in range(8, 60):
        notes += len(engine.step(state, TICK, t0 + timedelta(minutes=m))[1])
    dt = time.perf_counter() - start
    s0 = time.perf_counter()
    blob = state.snapshot()
    EscalationState.restore(blob)
    sdt = time.perf_counter() - s0
    print(
        f"escalation engine: {n + len(acks)} events + 52 ticks → {notes} notifications in {dt:.2f} s "
        f"= {(n + len(acks)) / dt:,.0f} events/s; snapshot+restore {len(blob) / 1e6:.1f} MB in {sdt * 1000:.0f} ms"
    )


async def main(quick: bool) -> None:
    engine_speed(5000 if quick else 20000)
    http = await HttpSink(secret="s").start()
    smtp = SmtpSink().start()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        k = 0.3 if quick else 1.0  # notifications = incidents × targets
        await throughput(
            http, smtp, tmp, "email via apprise → aiosmtpd", int(10 * k), n_email=30, n_hook=0, n_pgu=0
        )
        await throughput(
            http, smtp, tmp, "email, one target (serial lane)", int(30 * k), n_email=1, n_hook=0, n_pgu=0
        )
        await throughput(
            http, smtp, tmp, "signed webhook → aiohttp", int(100 * k), n_email=0, n_hook=20, n_pgu=0
        )
        await throughput(
            http, smtp, tmp, "NGSI-LD Alert upsert → aiohttp", int(100 * k), n_email=0, n_hook=0, n_pgu=20
        )
        await latency(http, smtp, tmp, rate=10, seconds=4 if quick else 10)
        await latency(http, smtp, tmp, rate=200, seconds=2 if quick else 5, email=False)
        if not quick:
            await throttle_cost(http, smtp, tmp)
    smtp.stop()
    await http.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    asyncio.run(main(ap.parse_args().quick))
