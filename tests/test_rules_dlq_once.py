"""An observation refused by its time reaches the DLQ once, and is never lost to a stage that can
still use it. The partitioned rules stage refused a late observation and forwarded it to the
label-keyed stage (``rules-shared``), which refused it again: two DLQ records of one observation (a
DLQ replay then fed it twice). It is still forwarded (that stage has its own clock), marked, and a
second refusal writes no second record."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import orjson

from atalaia.detectors.config import load_config
from atalaia.rules.stage import RuleFiles, RulesCore, entity_keyed, label_keyed
from atalaia.streams.settings import CONFIG_DIR, Settings

RULES = """
group: t
rules:
  - id: river-high
    select: {type: WaterObserved, attribute: height}
    unit: m
    severities: [{severity: high, above: 4.0}]
  - id: parish-max
    select: {type: WaterObserved, attribute: height}
    key: [parish]
    aggregate: {function: max, window: 10m}
    severities: [{severity: high, above: 4.0}]
"""


def _record(
    at: str, height: float, entity: str = "urn:e:1", topic: str = "t.observations"
) -> SimpleNamespace:
    o = {
        "time": at,
        "entity": entity,
        "type": "WaterObserved",
        "attributes": {"height": height},
        "labels": {"parish": "Ribeira"},
        "time_source": "observed",
    }
    return SimpleNamespace(value=orjson.dumps(o), topic=topic, offset=0, headers=[], timestamp=0)


def _cores(tmp_path: Path) -> tuple[RulesCore, RulesCore]:
    (tmp_path / "r.yaml").write_text(RULES)
    files, detectors = RuleFiles([tmp_path]), load_config(CONFIG_DIR / "detectors.yaml")
    settings = Settings(allowed_lateness_s=300)
    partitioned = RulesCore(files, detectors, settings, part=entity_keyed, forward=True)
    shared = RulesCore(files, detectors, settings, part=label_keyed, forward=False)
    return partitioned, shared


def _run(partitioned: RulesCore, shared: RulesCore, records: list, now: float) -> list:
    outs = partitioned.process(records, now)
    forwarded = [
        SimpleNamespace(
            value=o.value, topic="t.shared-observations", offset=0, headers=o.headers, timestamp=0
        )
        for o in outs
        if o.topic == "shared-observations"
    ]
    outs += shared.process(forwarded, now)
    outs += shared.tick(now + 3600)  # the reorder buffer lets everything through
    return outs


def _topics(outs: list) -> list[tuple[str, str]]:
    got = []
    for o in outs:
        body = orjson.loads(o.value)
        if o.topic == "alarms":
            got.append(("alarms", f"{body['rule']} {body['state']}"))
        elif o.topic == "dlq":
            got.append(("dlq", body.get("source", "?")))
        elif o.topic == "shared-observations":
            got.append(("shared-observations", body["time"][11:16]))
    return got


def test_a_late_observation_has_one_dlq_record_from_the_stage_that_refused_it(tmp_path: Path) -> None:
    partitioned, shared = _cores(tmp_path)
    now = 1_769_594_400.0  # 2026-01-28T10:00:00Z
    outs = _run(partitioned, shared, [_record("2026-01-28T10:00:00Z", 1.0)], now)
    assert [o for o in outs if o.topic == "dlq"] == []
    # an hour late for both stages (allowed lateness 5m): one record, from the first stage
    outs = _run(
        partitioned,
        shared,
        [_record("2026-01-28T09:00:00Z", 9.0), _record("2026-01-28T10:01:00Z", 9.0)],
        now + 60,
    )
    dlq = [orjson.loads(o.value) for o in outs if o.topic == "dlq"]
    assert len(dlq) == 1, dlq
    assert "too late" in orjson.dumps(dlq[0]).decode()
    got = _topics(outs)
    assert ("shared-observations", "09:00") in got and ("shared-observations", "10:01") in got
    assert {x for x in got if x[0] == "alarms"} == {
        ("alarms", "river-high firing"),
        ("alarms", "parish-max firing"),
    }


def test_late_for_the_partition_but_not_for_the_parish_stage_is_still_evaluated(tmp_path: Path) -> None:
    """The partitioned stage's latest event time is pushed by every type in its partition (a
    weather station reporting now); the parish stage sees only the types its rules read. An
    observation late for the first (a gauge's reading of 6 minutes ago, delivered late) may be on
    time for the second: it must still reach the parish rule."""
    (tmp_path / "r.yaml").write_text(
        RULES
        + """  - id: wind
    select: {type: WeatherObserved, attribute: windSpeed}
    severities: [{severity: high, above: 30}]
"""
    )
    files, detectors = RuleFiles([tmp_path]), load_config(CONFIG_DIR / "detectors.yaml")
    settings = Settings(allowed_lateness_s=300)
    partitioned = RulesCore(files, detectors, settings, part=entity_keyed, forward=True)
    shared = RulesCore(files, detectors, settings, part=label_keyed, forward=False)
    now = 1_769_594_400.0
    station = _record("2026-01-28T10:00:00Z", 1.0)  # a weather station, reporting now
    body = orjson.loads(station.value)
    body.update(type="WeatherObserved", entity="urn:e:ws", attributes={"windSpeed": 3.0})
    station.value = orjson.dumps(body)
    outs = _run(partitioned, shared, [station, _record("2026-01-28T09:54:00Z", 9.0)], now)
    got = _topics(outs)
    assert got.count(("dlq", "rules")) == 1  # river-high did not evaluate it: said once
    assert ("alarms", "parish-max firing") in got  # the parish stage did
    assert not any(x == ("dlq", "rules-shared") for x in got)


def test_an_observation_refused_by_one_rule_only_is_still_forwarded(tmp_path: Path) -> None:
    """A value one rule cannot use is that rule's refusal, not the observation's: the parish rule
    still sees the observation."""
    partitioned, shared = _cores(tmp_path)
    rec = _record("2026-01-28T10:00:00Z", 5.0)
    body = orjson.loads(rec.value)
    body["units"] = {"height": "KGM"}  # kilograms: river-high (in metres) refuses it, with its reason
    rec.value = orjson.dumps(body)
    outs = _run(partitioned, shared, [rec], 1_769_594_400.0)
    topics = [o.topic for o in outs]
    assert topics.count("dlq") == 1 and topics.count("shared-observations") == 1
