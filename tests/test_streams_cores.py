"""Stage cores never crash on poison records: whatever they cannot use goes to the DLQ with a
reason (a crash would stop every stage of the worker and loop on the same record)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from types import SimpleNamespace

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.rules.reorder import Reorder
from atalaia.streams.ingest import read_dlq_record
from atalaia.streams.settings import CONFIG_DIR, Settings


def rec(value, topic="t.observations", offset=0):
    raw = value if value is None or isinstance(value, bytes) else orjson.dumps(value)
    return SimpleNamespace(value=raw, topic=topic, offset=offset, headers=[], timestamp=1_769_594_400_000)


OBS = {
    "time": "2026-01-28T10:00:00Z",
    "entity": "urn:x",
    "type": "WaterObserved",
    "attributes": {"height": 5.0},
}
POISON = [
    None,
    b"",
    b"{nope",
    [1, 2],
    "text",
    {"entity": "urn:x"},
    {**OBS, "type": [1]},
    {**OBS, "time": 123},
    {**OBS, "time": "2026-01-28T10:00:00"},
    {**OBS, "attributes": {"height": "5"}},
    {**OBS, "attributes": {"height": True}},
    {**OBS, "labels": {"parish": 3}},
    {**OBS, "entity": ""},
]


@pytest.fixture(scope="module")
def rules_core():
    from atalaia.detectors.config import load_config
    from atalaia.rules.stage import RuleFiles, RulesCore

    return RulesCore(
        RuleFiles([CONFIG_DIR / "rules"]), load_config(CONFIG_DIR / "detectors.yaml"), Settings()
    )


def dlq_reasons(outs):
    return [read_dlq_record(o.value)["reasons"][0] for o in outs if o.topic == "dlq"]


@pytest.mark.parametrize("bad", POISON, ids=range(len(POISON)))
def test_rules_core_sends_poison_observations_to_the_dlq(rules_core, bad):
    outs = rules_core.process([rec(bad), rec(OBS, offset=1)], time.time())
    reasons = dlq_reasons(outs)
    assert len(reasons) == 1 and reasons[0], "one DLQ record with a reason"
    assert any(o.topic == "alarms" for o in outs) or rules_core.engine.state_count() > 0, (
        "the good one is used"
    )


@pytest.fixture(scope="module")
def other_cores():
    from atalaia.incidents.config import IncidentConfig
    from atalaia.incidents.stage import IncidentsCore
    from atalaia.notifiers.config import load_config as load_escalation
    from atalaia.notifiers.stage import EscalationCore

    return IncidentsCore(IncidentConfig()), EscalationCore(load_escalation(CONFIG_DIR / "escalation.yaml"))


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=12,
    )
)
@settings(max_examples=150, deadline=None)
def test_cores_never_raise_on_arbitrary_json(rules_core, other_cores, value):
    now = time.time()
    incidents, escalation = other_cores
    rules_core.process([rec(value)], now)
    incidents.process([rec(value, "t.alarms")], now)
    escalation.process([rec(value, "t.incidents")], now)


def test_incidents_core_refuses_bad_alarms_and_answers_bad_commands():
    from atalaia.incidents.config import IncidentConfig
    from atalaia.incidents.stage import IncidentsCore

    core = IncidentsCore(IncidentConfig())
    alarm = {
        "at": "2026-01-28T10:00:00Z",
        "rule": "r",
        "key": "k",
        "state": "firing",
        "severity": "high",
        "value": 5.0,
        "labels": {"parish": "Bonfim"},
    }
    bad = [
        None,
        {**alarm, "rule": ["a"]},
        {**alarm, "at": 1e30},
        {**alarm, "state": "on"},
        {**alarm, "at": "9999-12-31T23:59:59Z"},
        {**alarm, "labels": {"a": 1}},
    ]
    outs = core.process([rec(b, "t.alarms") for b in bad] + [rec(alarm, "t.alarms")], time.time())
    assert len(dlq_reasons(outs)) == len(bad)
    assert [o for o in outs if o.topic == "incidents"], "the good alarm opens an incident"
    outs = core.process(
        [rec({"id": "c1", "incident": "nope", "action": "explode", "actor": "a", "role": "x"}, "t.commands")],
        time.time(),
    )
    replies = [orjson.loads(o.value) for o in outs if o.topic == "replies"]
    assert replies and replies[0]["accepted"] is False and "invalid command" in replies[0]["reason"]
    core.snapshot()  # state is still serialisable


@pytest.mark.parametrize("duration", [1e308, "99999999999d", "367d", 1e30])
def test_a_command_whose_duration_overflows_is_refused_and_the_stage_goes_on(duration):
    """A silence or shelve for 1e308 seconds stopped the incidents stage (an OverflowError), and
    atalaia up with it, again at every restart while the command stayed on the topic."""
    from atalaia.incidents.config import IncidentConfig
    from atalaia.incidents.stage import IncidentsCore

    core = IncidentsCore(IncidentConfig())
    now = time.time()
    alarm = {"rule": "r", "key": "k", "state": "firing", "severity": "high", "value": 5.0}
    alarm["at"] = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    opened = [o for o in core.process([rec(alarm, "t.alarms")], now) if o.topic == "incidents"]
    iid = orjson.loads(opened[0].value)["incident"]
    body = {"actor": "ana", "role": "supervisor", "comment": "x", "reason": "x", "duration": duration}
    commands = [
        {**body, "id": "s1", "action": "silence", "matchers": ['parish="nowhere"']},
        {**body, "id": "c1", "incident": iid, "action": "shelve"},
    ]
    outs = core.process([rec(c, "t.commands") for c in commands], now)
    assert len(dlq_reasons(outs)) == 2
    replies = [orjson.loads(o.value) for o in outs if o.topic == "replies"]
    assert [r["accepted"] for r in replies] == [False, False]
    # and the stage goes on: a shelve it can use is applied
    ok = {**body, "id": "c2", "incident": iid, "action": "shelve", "duration": "1h"}
    replies = [
        orjson.loads(o.value) for o in core.process([rec(ok, "t.commands")], now) if o.topic == "replies"
    ]
    assert replies[0]["accepted"] is True, replies


def test_incidents_core_skips_warning_commands_and_refuses_bad_ones_in_order():
    """Alarms and commands share the stage: each record is decoded once by its topic; a warning
    command is the warnings stage's (skipped, neither refused nor answered)."""
    from atalaia.incidents.config import IncidentConfig
    from atalaia.incidents.stage import IncidentsCore

    core = IncidentsCore(IncidentConfig())
    warning = {"kind": "warning", "action": "approve", "actor": "a", "role": "supervisor", "warning": "W-1"}
    bad = {"id": "c1", "incident": "nope", "action": "explode", "actor": "a", "role": "x"}
    outs = core.process(
        [rec(warning, "t.commands"), rec(b"{nope", "t.alarms"), rec(bad, "t.commands")], time.time()
    )
    assert [o.topic for o in outs] == ["dlq", "dlq", "replies"]
    replies = [orjson.loads(o.value) for o in outs if o.topic == "replies"]
    assert replies[0]["accepted"] is False and replies[0]["command"] == "c1"
    assert core.process([rec(warning, "t.commands")], time.time()) == []


def test_reorder_ignores_clock_skewed_time_for_its_watermark():
    r = Reorder(slack_s=5, idle_s=60, max_ahead_s=300)
    now = 1_800_000_000.0
    t = lambda s: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + s))  # noqa: E731
    assert r.push([{"time": "2099-01-01T00:00:00Z"}], now) == []
    released = r.push([{"time": t(-20)}, {"time": t(-30)}], now)
    assert [o["time"] for o in released] == [t(-30), t(-20)], "the others are still released in time order"


def test_a_reorder_buffer_restored_after_a_takeover_waits_for_the_replay_before_flushing():
    """The label-keyed stage's buffer moves with its partition: restored on the surviving worker,
    its first tick must not count the time since the dead worker's last arrival as idle, or it
    releases the held observations ahead of the older ones the takeover replays next (a parish
    alarm then resolves and fires again where the replay of the file stays firing)."""
    now = 1_800_000_000.0
    t = lambda s: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + s))  # noqa: E731
    r = Reorder(slack_s=100_000, idle_s=30)
    assert r.push([{"time": t(-10)}], now - 100) == []
    restored = Reorder.restore(r.snapshot(), slack_s=100_000, idle_s=30)
    assert restored.flush_idle(now) == [], "restored: not idle yet"
    assert restored.push([{"time": t(-20)}], now + 5) == []  # the replayed, older observation
    assert restored.flush_idle(now + 20) == []
    assert [o["time"] for o in restored.flush_idle(now + 40)] == [t(-20), t(-10)]


def test_a_malformed_record_on_each_consumed_topic_ends_on_the_dlq_with_its_path(rules_core, other_cores):
    """Each consumer decodes its topic's record type once; what does not decode is kept on the
    DLQ with the decoder's reason, which names the field (``... - at `$.rule```)."""
    import asyncio

    from atalaia.incidents.projection import Projection
    from atalaia.incidents.stage import ProjectionCore
    from atalaia.notifiers.stage import DeliveryCore
    from atalaia.streams.sink import Sink

    now = time.time()
    incidents, escalation = other_cores
    alarm = {"at": "2026-01-28T10:00:00Z", "rule": 7, "key": "k", "state": "firing", "severity": "high"}
    event = {"id": "e", "incident": "i", "version": "one", "at": "2026-01-28T10:00:00Z"}
    command = {"id": "c9", "incident": "i", "action": "explode", "actor": "a", "role": "operator"}

    class Notifier:
        async def submit(self, notes):
            raise AssertionError("nothing to deliver")

    sink = Sink(lambda: Projection.connect("sqlite://:memory:"), "projection")
    try:
        cases = {
            "$.attributes[...]": rules_core.process([rec({**OBS, "attributes": {"height": "5"}})], now),
            "$.rule": incidents.process([rec(alarm, "t.alarms")], now),
            "$.action": incidents.process([rec(command, "t.commands")], now),
            "$.version": escalation.process([rec(event, "t.incidents")], now),
            "$.incident": asyncio.run(
                ProjectionCore(sink).aprocess([rec({**event, "incident": 3}, "t.incidents")], now)
            ),
            "$.snapshot": asyncio.run(
                DeliveryCore(Notifier()).aprocess(
                    [rec({"incident": "i", "snapshot": 1}, "t.notifications")], now
                )
            ),
        }
    finally:
        sink.close()
    for path, outs in cases.items():
        (reason,) = dlq_reasons(outs)
        assert reason.endswith(f"at `{path}`"), reason
    replies = [orjson.loads(o.value) for o in cases["$.action"] if o.topic == "replies"]
    assert replies[0]["accepted"] is False and replies[0]["command"] == "c9", "the console is answered"


def test_the_warnings_consumers_send_what_does_not_decode_to_the_dlq_with_its_path():
    """The warning notices stage decodes each record of atalaia.warnings once (warning events,
    CAP documents, replies) and the warnings stage each warning command of atalaia.commands: what
    does not decode is kept on the DLQ with the decoder's reason, which names the field; a
    malformed warning command is also answered with a refusal. The incident commands and the
    bytes that are no command at all on atalaia.commands are the incident manager's."""
    from atalaia.notifiers.config import load_config as load_escalation
    from atalaia.notifiers.stage import WarningNoticesCore
    from atalaia.warnings.stage import WarningsCore

    now = time.time()
    notices = WarningNoticesCore(load_escalation(CONFIG_DIR / "escalation.yaml"))
    cap = {"kind": "cap", "warning": "W-1", "version": "one", "identifier": "X", "xml": "<alert/>"}
    reply = {"kind": "reply", "command": "c1", "ok": True, "error": None, "warning": "W-1"}
    outs = notices.process(
        [rec(cap, "t.warnings"), rec(reply, "t.warnings"), rec({**reply, "kind": "memo"}, "t.warnings")], now
    )
    assert [o.topic for o in outs] == ["dlq", "dlq"], "the good reply gives no notification"
    assert [r.split(" - ")[-1] for r in dlq_reasons(outs)] == ["at `$.version`", "at `$.kind`"]

    warnings = WarningsCore()
    command = {"kind": "warning", "action": "explode", "actor": "a", "role": "operator"}
    incident_command = {
        "id": "c2",
        "incident": "i",
        "action": "acknowledge",
        "actor": "a",
        "role": "operator",
    }
    outs = warnings.process(
        [rec(command, "t.commands"), rec(incident_command, "t.commands"), rec(b"{nope", "t.commands")], now
    )
    (reason,) = dlq_reasons(outs)
    assert reason.endswith("at `$.action`"), reason
    replies = [orjson.loads(o.value) for o in outs if o.topic == "warnings"]
    assert replies == [{"kind": "reply", "command": None, "ok": False, "error": reason}]

    # a warning action without "kind": "warning" is not a warning command (the incident manager
    # refuses it), and one that decodes but cannot be used (no such date) is refused *and* kept
    approve = {"action": "approve", "actor": "a", "role": "supervisor", "warning": "W-1"}
    assert warnings.process([rec(approve, "t.commands")], now) == []
    # drafts the command's identity cannot hash (too deep, an integer beyond 64 bits): refused
    head = b'{"kind":"warning","action":"draft","actor":"a","role":"operator","draft":{"x":'
    for draft in (b"[" * 300 + b"]" * 300, str(2**100).encode()):
        outs = warnings.process([rec(head + draft + b"}}", "t.commands")], now)
        assert [o.topic for o in outs] == ["dlq", "warnings"], outs
        assert dlq_reasons(outs)[0].endswith("at `$.draft`")
    no_date = {**approve, "kind": "warning", "at": "2026-02-30T00:00:00Z", "id": "console-7"}
    outs = warnings.process([rec(no_date, "t.commands")], now)
    assert [o.topic for o in outs] == ["dlq", "warnings"]
    (reason,) = dlq_reasons(outs)
    assert reason.endswith("at `$.at`"), reason
    # the refusal names the command's id, so the console that sent it shows it at once
    assert orjson.loads(outs[1].value) == {
        "kind": "reply",
        "command": "console-7",
        "ok": False,
        "error": reason,
    }


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=12,
    ),
    st.sampled_from(["warning", "cap", "reply"]),
)
@settings(max_examples=100, deadline=None)
def test_the_warnings_cores_never_raise_on_arbitrary_json(value, kind):
    from atalaia.notifiers.config import load_config as load_escalation
    from atalaia.notifiers.stage import WarningNoticesCore
    from atalaia.warnings.stage import WarningsCore

    now = time.time()
    tagged = {**value, "kind": kind} if isinstance(value, dict) else value
    WarningNoticesCore(load_escalation(CONFIG_DIR / "escalation.yaml")).process(
        [rec(value, "t.warnings"), rec(tagged, "t.warnings")], now
    )
    WarningsCore().process([rec(value, "t.commands"), rec(tagged, "t.commands")], now)


def test_an_observation_refused_by_the_label_keyed_stage_names_that_stage_on_the_dlq(rules_core):
    """Both rule stages judge lateness on their own clock; the DLQ record (and its metric) says
    which one refused the observation."""
    from atalaia.detectors.config import load_config
    from atalaia.rules.stage import RuleFiles, RulesCore, label_keyed

    shared = RulesCore(
        RuleFiles([CONFIG_DIR / "rules"]),
        load_config(CONFIG_DIR / "detectors.yaml"),
        Settings(),
        part=label_keyed,
        forward=False,
    )
    late = [
        {**OBS, "labels": {"parish": "Ribeira"}, "time": t}
        for t in ("2026-01-28T10:00:00Z", "2026-01-28T06:00:00Z")
    ]
    for core, source in ((shared, "rules-shared"), (rules_core, "rules")):
        outs = [o for o in core._evaluate([dict(o) for o in late]) if o.topic == "dlq"]
        assert [read_dlq_record(o.value)["source"] for o in outs] == [source]


def test_every_partition_and_stage_of_a_worker_counts_against_one_entity_limit(rules_core):
    """max_entities bounds the models of the worker process, not of each partition: the rules
    cores (entity-keyed and label-keyed, fresh or restored from a checkpoint) share one pool."""
    from atalaia.detectors.bank import WORKER
    from atalaia.detectors.config import load_config
    from atalaia.rules.stage import RuleFiles, RulesCore, label_keyed

    files, config = RuleFiles([CONFIG_DIR / "rules"]), load_config(CONFIG_DIR / "detectors.yaml")
    other = RulesCore(files, config, Settings())
    shared = RulesCore(files, config, Settings(), part=label_keyed, forward=False)
    restored = RulesCore(files, config, Settings(), state=rules_core.snapshot())
    for core in (rules_core, other, shared, restored):
        assert core.bank.pool is WORKER
    assert {rules_core.bank, other.bank, shared.bank, restored.bank} <= set(WORKER.banks)


def test_health_says_starting_until_every_stage_has_taken_its_first_assignment():
    """A worker whose consumer groups have not assigned partitions yet processes nothing: its
    /health is 503 "starting", not "ok"; an empty assignment counts as assigned."""
    from atalaia.streams.metrics import health_report

    def stage(assigned, cores=()):
        return SimpleNamespace(assigned=assigned, processed=0, cores=dict.fromkeys(cores))

    body, status = health_report({"rules": stage(True, (0, 1)), "incidents": stage(False)})
    assert (body["status"], status) == ("starting", 503)
    body, status = health_report({"rules": stage(True, (0, 1)), "incidents": stage(True)})
    assert (body["status"], status) == ("ok", 200)
    # (lag and how long the oldest record waited: unknown until the stage's first fetch)
    assert body["stages"]["incidents"] == {"processed": 0, "partitions": [], "lag": None, "behind_s": None}
