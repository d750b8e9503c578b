"""Storm digests: when a target already got ``storm.threshold`` messages in ``storm.window``, the next
ones are held for ``storm.wait`` and go out as ONE message that sums them up (people's channels
only; machines still get each incident). Deterministic digest ids, so a replay sends nothing twice,
and the delivery log keeps the digest like any notification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from atalaia.notifiers.config import load_config_text
from atalaia.notifiers.engine import TICK, EscalationEngine, EscalationState
from atalaia.notifiers.log import SQLiteDeliveryLog
from atalaia.notifiers.model import Notification
from atalaia.notifiers.render import render
from atalaia.notifiers.testing import incident_event
from atalaia.streams.clock import format_time

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
CONFIG = """
timezone: Europe/Lisbon
storm: {threshold: 2, window: 2m, wait: 30s}
targets:
  pgu: {channel: ngsi-ld, url: "http://127.0.0.1:9/"}
  ana-sms: {channel: sms, url: "smseagle://t@127.0.0.1:9/+351912000001"}
routes: [{policy: p}]
policies:
  p: {steps: [{targets: [pgu, ana-sms], wait: 10m}]}
"""
PARISHES = [
    "Bonfim",
    "Campanhã",
    "Paranhos",
    "Ramalde",
    "Lordelo",
    "Foz",
    "Aldoar",
    "Massarelos",
    "Sé",
    "Miragaia",
]


def storm(n: int = 10, severity=lambda i: "critical" if i % 3 == 0 else "high") -> list[dict]:
    out = []
    for i in range(n):
        ev = incident_event(incident=f"inc-{i}", version=1, at=format_time(T0), severity=severity(i))
        ev["correlation"] = {"parish": PARISHES[i % len(PARISHES)]}
        ev["opened_at"] = format_time(T0)
        out.append(ev)
    return out


def run(
    events: list[dict], until: float = 120, extra: list[tuple[float, dict]] = ()
) -> tuple[list, EscalationState]:
    e = EscalationEngine(load_config_text(CONFIG, "escalation.yaml"))
    s = EscalationState()
    _, out = e.step_batch(s, events, T0)
    for sec in range(1, int(until) + 1):
        now = T0 + timedelta(seconds=sec)
        for at, ev in extra:
            if at == sec:
                out += e.step(s, ev, now)[1]
        out += e.step(s, TICK, now)[1]
    return out, s


def test_ten_incidents_at_once_make_two_sms_and_one_digest_while_the_pgu_gets_all_ten():
    out, _ = run(storm())
    sms = [n for n in out if n.target == "ana-sms"]
    assert [n.kind for n in sms] == ["escalation", "escalation", "digest"]
    digest = sms[-1]
    assert digest.due == "2026-03-02T10:00:30Z" and len(digest.digest) == 8
    assert [s.severity for s in digest.digest][:3] == ["critical", "critical", "critical"], (
        "most severe first"
    )
    assert len([n for n in out if n.target == "pgu"]) == 10
    again, _ = run(storm())
    assert [n.id for n in again] == [n.id for n in out], "deterministic ids: a replay sends nothing new"


def test_an_incident_acknowledged_before_the_digest_goes_drops_out_and_one_left_goes_as_itself():
    ack = incident_event(
        incident="inc-5",
        version=2,
        at=format_time(T0 + timedelta(seconds=10)),
        state="acknowledged",
        change="acknowledged",
    )
    out, _ = run(storm(), extra=[(10, ack)])
    digest = next(n for n in out if n.kind == "digest")
    assert "inc-5" not in {s.incident for s in digest.digest} and len(digest.digest) == 7
    out3, _ = run(storm(3))
    assert [n.kind for n in out3 if n.target == "ana-sms"] == ["escalation", "escalation", "escalation"]
    assert [n.incident for n in out3 if n.target == "ana-sms"] == ["inc-0", "inc-1", "inc-2"]


def test_a_snapshot_taken_while_a_digest_is_held_restores_it():
    e = EscalationEngine(load_config_text(CONFIG, "escalation.yaml"))
    s = EscalationState()
    e.step_batch(s, storm(), T0)
    r = EscalationState.restore(s.snapshot())
    assert r.next_wakeup() == T0 + timedelta(seconds=30)
    a = e.step(s, TICK, T0 + timedelta(seconds=31))[1]
    b = e.step(r, TICK, T0 + timedelta(seconds=31))[1]
    assert [n.to_dict() for n in a] == [n.to_dict() for n in b] and a[0].kind == "digest"


def test_after_a_broker_reset_a_storms_pages_are_said_again_as_their_digest_never_one_by_one():
    """A restart of atalaia up re-sends each escalation's latest page (the delivery log skips
    what it had). The pages that had gone, or were held, in a storm digest were sent one by one:
    every incident of the storm paged once more each, the digest's whole point undone. They are
    said again as the digest (its id, which the delivery log refuses a second time), and what
    is still held goes out when its timer fires, as before the restart."""
    e = EscalationEngine(load_config_text(CONFIG, "escalation.yaml"))
    s = EscalationState()
    e.step_batch(s, storm(), T0)
    held = EscalationState.restore(s.snapshot())  # a restart while the digest is held
    again = e.announce(held)
    sms = [n for n in again if n.target == "ana-sms"]
    assert [n.incident for n in sms] == ["inc-0", "inc-1"], "only the two sent before the storm"
    assert len([n for n in again if n.target == "pgu"]) == 10, "machines still get each incident"
    released = e.step(held, TICK, T0 + timedelta(seconds=31))[1]
    assert [n.kind for n in released] == ["digest"] and len(released[0].digest) == 8

    out, s = run(storm())  # and once the digest went out
    digest = next(n for n in out if n.kind == "digest")
    after = e.announce(EscalationState.restore(s.snapshot()))
    sms = [n for n in after if n.target == "ana-sms"]
    assert [n.kind for n in sms] == ["escalation", "escalation", "digest"], [n.kind for n in sms]
    assert sms[-1].id == digest.id and sms[-1].to_dict() == digest.to_dict()


def test_the_digest_reads_well_in_both_languages_and_is_kept_in_the_delivery_log(tmp_path):
    out, _ = run(storm())
    digest = next(n for n in out if n.kind == "digest")
    pt = render(digest, "pt-PT", None, "http://atalaia.local")
    assert pt.subject.startswith("[Atalaia] 8 incidentes novos (")
    assert "(crítico: 3, alto: 5)" in pt.subject
    assert "10:00 WET" in pt.body and "http://atalaia.local/incidents/inc-3" in pt.body
    assert "Paranhos 4,7" in pt.short, "rounded, decimal comma (units come from the rules' annotations)"
    assert "http://atalaia.local/?state=unacknowledged" in pt.short
    en = render(digest, "en-GB", None, "http://atalaia.local")
    assert "in one message instead of 8" in en.body
    back = Notification.from_dict(orjson.loads(digest.to_json()))
    assert back == digest, "a digest crosses atalaia.notifications intact"
    log = SQLiteDeliveryLog(tmp_path / "d.sqlite")
    log.enqueue([(digest, "sms")], 0.0)
    assert log.known([digest.id]) == {digest.id: "queued"}
    row = log.deliveries()[0]
    assert row.kind == "digest" and row.incident == digest.incident
    log.close()


def test_a_storm_of_ten_thousand_incidents_makes_one_sendable_digest_that_counts_them_all():
    """10 000 incidents held for one person: the digest listed every incident's snapshot, a 7 MB
    record no producer would send (the escalation stage crashed at each restart and nobody was
    paged). It lists the most severe 50 and counts the rest by severity; the message says so."""
    from atalaia.notifiers.model import DIGEST_LISTED

    n = 10_000
    out, _ = run(storm(n, severity=lambda i: "critical" if i % 100 == 0 else "high"), until=31)
    digest = next(x for x in out if x.kind == "digest")
    assert len(digest.digest) == DIGEST_LISTED and {
        s.severity for s in digest.digest[: DIGEST_LISTED // 2]
    } == {"critical"}
    assert sum(digest.digest_more.values()) == n - 2 - DIGEST_LISTED  # 2 went one by one
    assert len(digest.to_json()) < 256 << 10
    assert Notification.from_dict(orjson.loads(digest.to_json())) == digest
    pt = render(digest, "pt-PT", None, "http://atalaia.local")
    assert pt.subject.startswith(
        f"[Atalaia] {n - 2} incidentes novos (crítico: 99, alto: {n - 101})"
    )  # inc-0 went alone
    assert f"… e mais {n - 2 - DIGEST_LISTED} (os menos graves), no painel." in pt.body
    en = render(digest, "en-GB", None, "http://atalaia.local")
    assert f"in one message instead of {n - 2}" in en.body and f"(+{n - 2 - 4})" in en.short
