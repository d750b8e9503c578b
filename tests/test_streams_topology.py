"""The declarative topology (streams/topology.py): what workers run and what the README shows."""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from atalaia.rules.fused import partition_of
from atalaia.streams.settings import Settings
from atalaia.streams.topology import USER_STAGES, diagram, flowchart, plan, process_groups
from tests.conftest import ROOT


def test_ingest_and_rules_run_fused_unless_told_not_to():
    assert [(s.name, s.fused) for s in plan(("ingest", "rules"))] == [
        ("rules", True),
        ("rules-shared", False),
    ]
    assert [s.name for s in plan(("ingest", "rules"), fuse=False)] == ["ingest", "rules", "rules-shared"]
    assert [s.name for s in plan(("ingest",))] == ["ingest"]
    assert [s.name for s in plan(("rules",))] == ["rules", "rules-shared"]


def test_up_keeps_the_alarm_path_apart_from_incident_work():
    groups = process_groups()
    assert groups["alarms"] == ("ingest", "rules")
    assert set(groups["ops"]) == set(USER_STAGES) - {"ingest", "rules"}
    for spec in plan(USER_STAGES):
        assert spec.process == ("alarms" if spec.needs & {"ingest", "rules"} else "ops"), spec.name


def test_the_readme_table_is_the_topology():
    assert diagram() in (ROOT / "README.md").read_text()


def test_the_readme_diagram_is_the_topology():
    readme = (ROOT / "README.md").read_text()
    chart = flowchart()
    assert chart in readme
    for spec in plan(USER_STAGES):  # every stage and every topic it reads or writes is drawn
        node = "s_" + spec.name.replace("-", "_")
        for t in spec.sources:
            assert f"t_{t.replace('-', '_')} --> {node}" in chart
        for t in spec.outputs:
            assert f"{node} {'-.->' if t == 'dlq' else '-->'} t_{t.replace('-', '_')}" in chart


def test_the_warnings_stage_writes_what_its_spec_says():
    from atalaia.warnings.stage import WarningsCore

    (spec,) = plan(("warnings",))
    draft = {
        "sender": "pc@cm-porto.pt",
        "level": "red",
        "event": "Cheia",
        "area": {"geocodes": {"DICOFRE": ["131203"]}},
    }
    cmds = [
        {
            "kind": "warning",
            "id": "c1",
            "action": "draft",
            "actor": "ana",
            "role": "operator",
            "draft": draft,
        },
        {"kind": "warning", "action": "nonsense", "actor": "ana", "role": "operator"},  # refused
    ]
    records = [SimpleNamespace(value=orjson.dumps(c), topic="atalaia.commands") for c in cmds]
    outs = WarningsCore().process(records, 1796403600.0)
    assert {o.topic for o in outs} <= set(spec.outputs)
    assert {o.topic for o in outs} == {"warnings", "dlq"}


def test_partition_of_matches_the_producer():
    from aiokafka.partitioner import DefaultPartitioner

    parts = list(range(6))
    for i in range(200):
        key = f"urn:ngsi-ld:WaterObserved:e{i}".encode()
        assert partition_of(key, 6) == DefaultPartitioner()(key, parts, parts)


def test_the_stages_partition_keys_as_the_producer_does():
    """The stages pick a record batch's partition themselves (streams.stage._send_batches): for
    every partition count the choice is aiokafka's DefaultPartitioner's, keyless records too."""
    from aiokafka.partitioner import DefaultPartitioner

    from atalaia.streams.partition import pick

    for n in (1, 2, 3, 6, 12, 32):
        parts = list(range(n))
        for i in range(300):
            key = f"tenant/urn:ngsi-ld:Device:{i}".encode()
            assert pick(key, parts) == DefaultPartitioner()(key, parts, parts)
        assert {pick(None, parts) for _ in range(50 * n)} <= set(parts)


def _notification(entity: str, height: float, at: str) -> bytes:
    return orjson.dumps(
        {
            "subscriptionId": "urn:s",
            "data": [
                {
                    "id": entity,
                    "type": "WaterObserved",
                    "height": {"type": "Property", "value": height, "observedAt": at},
                }
            ],
        }
    )


def _records(topic: str, values: list[bytes], start: int = 0) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(
            value=v,
            key=None,
            topic=topic,
            partition=0,
            offset=start + i,
            headers=[("content-type", b"application/json")],
            timestamp=1_769_594_400_000,
        )
        for i, v in enumerate(values)
    ]


def _stateful_stage_inputs(settings: Settings) -> dict[str, tuple[list, list]]:
    """Per stage: records before the checkpoint, records after it (each stage's own topic)."""
    t = settings.topic
    alarm = {
        "at": "2026-01-28T10:00:00Z",
        "rule": "river-level-high",
        "key": "urn:ngsi-ld:WaterObserved:porto-01",
        "state": "firing",
        "severity": "high",
        "value": 5.0,
        "group": "hydro",
        "entity": "urn:ngsi-ld:WaterObserved:porto-01",
        "labels": {"parish": "Ribeira"},
    }
    resolved = {**alarm, "at": "2026-01-28T10:05:00Z", "state": "resolved"}
    events = [
        _notification(f"urn:ngsi-ld:WaterObserved:e{i}", 2.0 + i, "2026-01-28T10:00:00Z") for i in range(5)
    ]
    later = [_notification(f"urn:ngsi-ld:WaterObserved:e{i}", 9.0, "2026-01-28T10:10:00Z") for i in range(5)]
    return {
        "rules": (_records(t("events"), events + events[:2]), _records(t("events"), later + events[:1], 7)),
        "ingest": (_records(t("events"), events), _records(t("events"), events[:2] + later, 5)),
        "incidents": (
            _records(t("alarms"), [orjson.dumps(alarm)]),
            _records(t("alarms"), [orjson.dumps(resolved)], 1),
        ),
    }


def test_a_core_restored_through_the_protocol_goes_on_exactly_like_the_one_never_stopped(tmp_path):
    """What a worker does when it takes over a partition: a fresh core from the topology's factory,
    ``restore(checkpoint)``, then the records after the checkpoint. Its outputs and its next
    checkpoint equal those of the core that processed everything without stopping."""
    settings = Settings(data_dir=tmp_path)
    app = SimpleNamespace()
    inputs = _stateful_stage_inputs(settings)
    specs = {s.name: s for s in plan(USER_STAGES)}
    now = 1_769_594_400.0
    for name, (before, after) in inputs.items():
        spec = plan(("ingest",))[0] if name == "ingest" else specs[name]  # "rules": fused with ingest
        make = spec.cores(settings, app)
        kept = make(0)
        kept.process(before, now)
        checkpoint = kept.snapshot()
        resumed = make(0)
        resumed.restore(checkpoint)
        assert resumed.snapshot() == checkpoint, name
        out_kept = kept.process(after, now + 1) + kept.tick(now + 400)
        out_resumed = resumed.process(after, now + 1) + resumed.tick(now + 400)
        assert [(o.topic, o.key, o.value) for o in out_resumed] == [
            (o.topic, o.key, o.value) for o in out_kept
        ], name
        assert any(o.topic != "dlq" for o in out_kept), f"{name}: the test records produce nothing"
        assert resumed.snapshot() == kept.snapshot(), name


def test_the_factories_read_the_warning_files_before_the_loop_needs_them(tmp_path):
    """The escalation stage's warning catalogue (when a policy proposes warnings) and the warnings
    stage's catalogue and CAP XSD are read when the stage is built, not on the event loop."""
    from atalaia.warnings.cap import schema

    escalation = tmp_path / "escalation.yaml"
    escalation.write_text(
        "timezone: Europe/Lisbon\n"
        "targets:\n  sala: {channel: webhook, url: 'http://127.0.0.1:9/hook', secret: x}\n"
        "routes: [{policy: cheia}]\n"
        "policies:\n  cheia:\n    steps:\n"
        "      - {propose_warning: {sender: pc@cm-porto.pt, valid_for: 6h}, wait: 10m}\n"
    )
    settings = Settings(data_dir=tmp_path, escalation_path=escalation)
    specs = {s.name: s for s in plan(USER_STAGES)}
    assert specs["escalation"].cores(settings, SimpleNamespace())(0)._catalogue is not None
    schema.cache_clear()
    specs["warnings"].cores(settings, SimpleNamespace())
    assert schema.cache_info().currsize == 1
    # without a propose_warning step the escalation stage needs no catalogue
    plain = Settings(data_dir=tmp_path)
    assert specs["escalation"].cores(plain, SimpleNamespace())(0)._catalogue is None
