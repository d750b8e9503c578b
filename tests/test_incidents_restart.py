"""Restart: the worker dies with incidents open and a shelve running; a new core restored from the
snapshot has the same incidents, the shelve expires at its time, and replaying the batch processed
after the checkpoint (at-least-once) produces the same event ids."""

from __future__ import annotations

import zlib

import orjson
import pytest

from atalaia.incidents import snapshot
from atalaia.incidents.config import IncidentConfig
from atalaia.incidents.events import IncidentEvent
from atalaia.incidents.manager import IncidentManager
from atalaia.incidents.model import SECOND, to_us
from atalaia.incidents.scenarios import STORM_CONFIG, porto_storm
from atalaia.incidents.stage import IncidentsCore as IncidentCore
from atalaia.incidents.testing import T0, Driver, at_s

CONFIG = IncidentConfig.model_validate(STORM_CONFIG)
T0_S = to_us(T0) / SECOND


class Rec:  # what the stage hands the core: a Kafka record
    def __init__(self, topic: str, value: dict) -> None:
        self.topic, self.value = f"atalaia.{topic}", orjson.dumps(value)


def decode(outs) -> list[dict]:
    return [orjson.loads(o.value) for o in outs]


def test_restart_keeps_incidents_and_the_shelve_expires_on_time() -> None:
    storm = porto_storm()
    core = IncidentCore(CONFIG)
    first = decode(core.process([Rec("alarms", t) for t in storm[:60]], T0_S + 900))
    incident = next(
        e["incident"] for e in first if e.get("kind") == "incident" and e["correlation"]["parish"] == "Bonfim"
    )
    shelve = {
        "id": "cmd-1",
        "incident": incident,
        "action": "shelve",
        "actor": "ana",
        "role": "operator",
        "reason": "crew on site",
        "duration": "20m",
        "at": at_s(1000),
    }
    out = decode(core.process([Rec("commands", shelve)], T0_S + 1000))
    assert out[0]["accepted"] and out[1]["state"] == "shelved" and out[1]["shelved_until"] == at_s(2200)

    checkpoint = core.snapshot()
    # the worker processes one more batch, then is killed before its next checkpoint
    after = [Rec("alarms", t) for t in storm[60:80]]
    lost = decode(core.process(after, T0_S + 1100))
    del core

    restarted = IncidentCore(CONFIG, checkpoint)
    assert sorted(restarted.state.incidents) == sorted(IncidentManager(CONFIG).restore(checkpoint).incidents)
    assert restarted.state.incidents[incident].state == "shelved"
    replay = decode(restarted.process(after, T0_S + 1100))  # redelivered from the committed offset
    assert [e["id"] for e in replay] == [e["id"] for e in lost]
    early = [e for e in decode(restarted.tick(T0_S + 2199)) if e["incident"] == incident]
    assert all(e["change"] != "unshelved" for e in early)  # not a second early (chattering shelves may end)
    expired = [e for e in decode(restarted.tick(T0_S + 2500)) if e["incident"] == incident]
    assert (
        expired[0]["change"] == "unshelved"
        and expired[0]["at"] == at_s(2200)
        and expired[0]["actor"] == "timer"
    )


def test_bad_records_do_not_stop_the_core() -> None:
    core = IncidentCore(CONFIG)
    good = porto_storm()[0]
    bad_command = {"id": "c1", "incident": "i", "action": "dance", "actor": "a", "role": "operator"}
    outs = core.process(
        [Rec("alarms", {"rule": "x"}), Rec("commands", bad_command), Rec("alarms", good)], T0_S
    )
    assert sorted(o.topic for o in outs) == ["dlq", "dlq", "incidents", "replies"]
    reply = orjson.loads(next(o.value for o in outs if o.topic == "replies"))
    assert not reply["accepted"] and "invalid command" in reply["reason"] and reply["command"] == "c1"


def test_step_batch_skips_what_is_not_an_alarm_or_command_when_asked() -> None:
    mgr = IncidentManager(CONFIG)
    errors: list[tuple[int, str]] = []
    state, out = mgr.step_batch(
        mgr.initial_state(), [[1, 2], 42, porto_storm()[0], {"rule": "r"}], at_s(0), errors
    )
    assert [i for i, _ in errors] == [0, 1, 3] and len(out) == 1
    with pytest.raises(ValueError, match="not an alarm transition"):
        mgr.step_batch(state, ["nope"], at_s(0))


def test_a_corrupt_snapshot_is_refused() -> None:
    with pytest.raises(ValueError, match="snapshot"):
        IncidentCore(CONFIG, b"garbage")


def test_a_runtime_silence_survives_a_restart_of_the_incidents_stage() -> None:
    core = IncidentCore(CONFIG)
    cmd = {
        "action": "silence",
        "id": "cmd-s1",
        "actor": "rui",
        "role": "supervisor",
        "matchers": ['parish="Bonfim"'],
        "comment": "works on the Bonfim gauges",
        "duration": "1h",
    }
    out = decode(core.process([Rec("commands", cmd)], T0_S))
    assert [o["kind"] for o in out] == ["reply", "silence"] and out[0]["accepted"]
    sid = out[1]["id"]
    restarted = IncidentCore(CONFIG, core.snapshot())
    alarm = {
        "at": at_s(60),
        "rule": "river-level-high",
        "key": "porto-09",
        "state": "firing",
        "severity": "high",
        "value": 3.9,
        "labels": {"parish": "Bonfim"},
    }
    ev = decode(restarted.process([Rec("alarms", alarm)], T0_S + 60))[-1]
    assert ev["state"] == "suppressed" and ev["alarms"][0]["suppressed"].startswith(f"silenced by {sid}")
    ends = decode(restarted.tick(T0_S + 3601))
    assert [e["change"] for e in ends if e["kind"] == "silence"] == ["expired"]
    assert [e["state"] for e in ends if e["kind"] == "incident"] == ["unacknowledged"]


def previous_version_snapshot(mgr: IncidentManager, state) -> bytes:
    """A snapshot as the version before ``overlay_severity``, ``ack_asked`` and ``chatter_until``
    wrote it: the same format, without those fields (a checkpoint taken before the upgrade)."""
    blob = mgr.snapshot(state)
    d = orjson.loads(zlib.decompress(blob[len(snapshot.MAGIC) :]))
    for inc in d["incidents"].values():
        del inc["overlay_severity"], inc["ack_asked"], inc["shelve_until_clear"]
        for a in inc["alarms"].values():
            del a["chatter_until"]
    return snapshot.MAGIC + zlib.compress(orjson.dumps(d))


def test_an_incident_shelved_before_the_upgrade_asks_again_for_a_severity_that_rises_after() -> None:
    """A checkpoint of the previous version knows no severity at the shelve's start: restored, a
    rise from high to critical during the shelve came back acknowledged at critical (nobody asked,
    the escalation paged nobody). The shelve takes the severity it is restored with."""
    d = Driver()
    d.fire("river-level-high", "porto-01", at=0, parish="Ribeira", severity="high")
    d.command("acknowledge", at=10)
    d.command("shelve", at=20, reason="crew on site", duration="30m")
    d.state = d.manager.restore(previous_version_snapshot(d.manager, d.state))
    d.fire("river-level-high", "porto-01", at=60, parish="Ribeira", severity="critical")
    ev = d.command("unshelve", at=120)
    assert isinstance(ev, IncidentEvent)
    assert (ev.state, ev.severity, ev.acknowledged_by) == ("unacknowledged", "critical", None)


def test_an_alarm_flagged_chattering_before_the_upgrade_stops_being_counted() -> None:
    """Restored from a checkpoint of the previous version, an alarm that chattered and then stayed
    firing was counted in atalaia_chattering_alarms (and shown chattering) until its next change."""
    d = Driver()
    for i, state in enumerate(["firing", "resolved", "firing"]):
        d.alarm("river-level-high", "porto-01", state, at=10 * i, parish="Ribeira")
    assert d.current().alarms[0].chattering
    d.state = d.manager.restore(previous_version_snapshot(d.manager, d.state))
    assert d.manager.kpis(d.state, at_s(59)).chattering_alarms == 1
    assert d.manager.kpis(d.state, at_s(3600)).chattering_alarms == 0
    ev = d.command("comment", at=3600, reason="still high")
    assert isinstance(ev, IncidentEvent) and not ev.alarms[0].chattering


def before_one_shot_snapshot(mgr: IncidentManager, state) -> bytes:
    """A snapshot as the version before one-shot shelving wrote it (no ``shelve_until_clear``)."""
    d = orjson.loads(zlib.decompress(mgr.snapshot(state)[len(snapshot.MAGIC) :]))
    for inc in d["incidents"].values():
        assert inc.pop("shelve_until_clear") is False
    return snapshot.MAGIC + zlib.compress(orjson.dumps(d))


def test_a_timed_shelve_restored_from_a_snapshot_before_one_shot_shelving_stays_timed() -> None:
    """A checkpoint written before one-shot shelving restores; its shelve is for a duration: the
    alarm clearing does not end it, its time does, as before."""
    d = Driver()
    d.fire("river-level-high", "porto-01", at=0, parish="Ribeira")
    d.command("acknowledge", at=10)
    d.command("shelve", at=20, reason="crew on site", duration="30m")
    d.state = d.manager.restore(before_one_shot_snapshot(d.manager, d.state))
    assert d.resolve("river-level-high", "porto-01", at=60, parish="Ribeira").state == "shelved"
    ev = next(o for o in d.tick(3600) if isinstance(o, IncidentEvent))
    assert (ev.change, ev.at, ev.actor, ev.reason, ev.state) == (
        "unshelved",
        at_s(1820),
        "timer",
        "shelve expired",
        "normal",
    )


def test_a_one_shot_shelve_survives_a_restart_and_ends_when_its_alarms_clear() -> None:
    core = IncidentCore(CONFIG)
    alarm = {"at": at_s(0), "rule": "river-level-high", "key": "porto-01", "state": "firing",
             "severity": "high", "value": 4.0, "entity": "porto-01", "labels": {"parish": "Bonfim"}}  # fmt: skip
    incident = decode(core.process([Rec("alarms", alarm)], T0_S))[0]["incident"]
    shelve = {"id": "cmd-1", "incident": incident, "action": "shelve", "actor": "ana", "role": "operator",
              "reason": "crew on site", "until": "clear"}  # fmt: skip
    out = decode(core.process([Rec("commands", shelve)], T0_S + 10))
    assert out[0]["accepted"] and out[1]["shelved_until_clear"] is True
    restarted = IncidentCore(CONFIG, core.snapshot())
    cleared = decode(
        restarted.process([Rec("alarms", {**alarm, "at": at_s(100), "state": "resolved"})], T0_S + 100)
    )
    assert [(e["change"], e["state"], e["reason"]) for e in cleared][-1] == (
        "unshelved",
        "returned-unacknowledged",
        "unshelved: its alarms returned to normal",
    )
