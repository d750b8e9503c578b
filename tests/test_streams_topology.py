"""The declarative topology (streams/topology.py): what workers run and what the README shows."""

from __future__ import annotations

from atalaia.rules.fused import partition_of
from atalaia.streams.topology import USER_STAGES, diagram, plan, process_groups
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


def test_partition_of_matches_the_producer():
    from aiokafka.partitioner import DefaultPartitioner

    parts = list(range(6))
    for i in range(200):
        key = f"urn:ngsi-ld:WaterObserved:e{i}".encode()
        assert partition_of(key, 6) == DefaultPartitioner()(key, parts, parts)
