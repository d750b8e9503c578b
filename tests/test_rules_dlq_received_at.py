"""A DLQ record written by a stage says when its record was received. The rules stages wrote
``"received_at": null`` on every observation they refused (too late, ahead of the clock, not
decodable), and so did every stage on a record it could not decode: an operator could not tell
when the refused reading had come in. The time is the consumed record's own Kafka timestamp (the
ingest stages give an observation its event's, the reception; the rules stage its forwarded ones),
never a clock: the cores stay pure, and the same record refused at any ``now`` says the same."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atalaia.detectors.config import load_config
from atalaia.rules.alarm import decode_alarm
from atalaia.rules.reorder import Reorder
from atalaia.rules.stage import RuleFiles, RulesCore, entity_keyed, label_keyed
from atalaia.streams.ingest.events import RawEvent
from atalaia.streams.records import decode, received_time
from atalaia.streams.settings import CONFIG_DIR, Settings

RULES = """
group: t
rules:
  - id: river-high
    select: {type: WaterObserved, attribute: height}
    severities: [{severity: high, above: 4.0}]
  - id: parish-max
    select: {type: WaterObserved, attribute: height}
    key: [parish]
    aggregate: {function: max, window: 10m}
    severities: [{severity: high, above: 4.0}]
"""
NOW = 1_769_594_400.0  # 2026-01-28T10:00:00Z
RECEIVED_MS = 1_769_594_399_250  # the record's Kafka timestamp: 09:59:59.250, its event's reception
RECEIVED_TEXT = "2026-01-28T09:59:59.25Z"


def _record(at: str, timestamp: int | None, topic: str = "t.observations", value: bytes | None = None):
    obs = {
        "time": at,
        "entity": "urn:e:1",
        "type": "WaterObserved",
        "attributes": {"height": 1.0},
        "labels": {"parish": "Ribeira"},
        "time_source": "observed",
    }
    return SimpleNamespace(
        value=orjson.dumps(obs) if value is None else value,
        topic=topic,
        offset=0,
        headers=[],
        timestamp=timestamp,
    )


def _core(tmp_path: Path, part=entity_keyed, forward: bool = True) -> RulesCore:
    (tmp_path / "r.yaml").write_text(RULES)
    files, detectors = RuleFiles([tmp_path]), load_config(CONFIG_DIR / "detectors.yaml")
    return RulesCore(files, detectors, Settings(allowed_lateness_s=300), part=part, forward=forward)


def _dlq(outs: list) -> list[dict]:
    return [orjson.loads(o.value) for o in outs if o.topic == "dlq"]


def test_the_rules_stage_writes_when_a_refused_observation_was_received(tmp_path: Path) -> None:
    core = _core(tmp_path)
    core.process([_record("2026-01-28T10:00:00Z", RECEIVED_MS)], NOW)
    late = core.process([_record("2026-01-28T09:00:00Z", RECEIVED_MS)], NOW + 600)  # an hour late
    [record] = _dlq(late)
    assert "too late" in record["reasons"][0]
    assert record["received_at"] == RECEIVED_TEXT
    ahead = core.process([_record("2026-01-28T12:00:00Z", RECEIVED_MS + 1000)], NOW + 900)
    [record] = _dlq(ahead)
    assert record["received_at"] == "2026-01-28T10:00:00.25Z"


def test_a_record_without_a_timestamp_has_no_received_time(tmp_path: Path) -> None:
    core = _core(tmp_path)
    core.process([_record("2026-01-28T10:00:00Z", None)], NOW)
    [record] = _dlq(core.process([_record("2026-01-28T09:00:00Z", 0)], NOW + 600))
    assert record["received_at"] is None  # unknown, never the stage's clock


def test_a_record_that_does_not_decode_keeps_its_received_time(tmp_path: Path) -> None:
    core = _core(tmp_path)
    [record] = _dlq(core.process([_record("", RECEIVED_MS, value=b'{"time": 3}')], NOW))
    assert record["received_at"] == RECEIVED_TEXT and record["source"] == "t.observations"
    # (every stage's decode: the same helper)
    _, _, outs = decode([_record("", RECEIVED_MS, topic="t.alarms", value=b"[")], decode_alarm)
    assert _dlq(outs)[0]["received_at"] == RECEIVED_TEXT


def test_the_label_keyed_stage_keeps_the_time_through_its_reorder_buffer_and_checkpoint(
    tmp_path: Path,
) -> None:
    """The parish stage holds observations in its reorder buffer (and its checkpoint) before it
    evaluates and may refuse them: the received time travels with each. (A reading two hours
    ahead is held, released when the stream goes idle, then refused as ahead of the clock.)"""
    shared = _core(tmp_path, part=label_keyed, forward=False)
    topic = "t.shared-observations"
    held = shared.process([_record("2026-01-28T12:00:00Z", RECEIVED_MS, topic)], NOW)
    assert _dlq(held) == []  # held in the buffer, not evaluated yet
    restored = _core(tmp_path, part=label_keyed, forward=False)
    restored.restore(shared.snapshot())
    outs = restored.tick(NOW + 10) + restored.tick(NOW + 3600)  # (restored: idle counted from then)
    [record] = _dlq(outs)
    assert "ahead" in record["reasons"][0] and record["received_at"] == RECEIVED_TEXT


def test_the_fused_stage_writes_the_events_received_time(tmp_path: Path) -> None:
    from atalaia.rules.fused import IngestRulesCore

    (tmp_path / "r.yaml").write_text(RULES)
    core = IngestRulesCore(
        0,
        Settings(partitions=1, allowed_lateness_s=300),
        RuleFiles([tmp_path]),
        load_config(CONFIG_DIR / "detectors.yaml"),
    )

    def event(observed_at: str, timestamp: int) -> SimpleNamespace:
        body = orjson.dumps(
            {
                "id": f"urn:ngsi-ld:Notification:{observed_at}",
                "type": "Notification",
                "notifiedAt": "2026-01-28T10:00:00Z",
                "data": [
                    {
                        "id": "urn:ngsi-ld:WaterObserved:1",
                        "type": "WaterObserved",
                        "height": {"type": "Property", "value": 1.0, "observedAt": observed_at},
                    }
                ],
            }
        )
        ev = RawEvent(body, "http", "application/ld+json", None, "2026-01-28T09:59:59Z")
        return SimpleNamespace(
            value=ev.body, headers=ev.headers(), timestamp=timestamp, topic="atalaia.events", offset=0
        )

    assert _dlq(core.process([event("2026-01-28T10:00:00Z", RECEIVED_MS - 1000)], NOW)) == []
    [record] = _dlq(core.process([event("2026-01-28T09:00:00Z", RECEIVED_MS)], NOW + 5))
    assert "too late" in record["reasons"][0] and record["received_at"] == RECEIVED_TEXT


def test_received_time_is_the_timestamp_or_nothing() -> None:
    assert received_time(RECEIVED_MS) == datetime(2026, 1, 28, 9, 59, 59, 250000, tzinfo=UTC)
    assert [received_time(x) for x in (None, 0, -1, True, 1.5, "1")] == [None] * 6


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.tuples(
            st.lists(st.tuples(st.integers(0, 600), st.none() | st.integers(1, 2**41)), max_size=5),
            st.integers(0, 400),  # seconds of wall clock before this batch
            st.booleans(),  # checkpoint and restore before it
        ),
        max_size=8,
    )
)
def test_the_reorder_buffer_releases_each_observation_with_its_stamp(steps) -> None:
    """Whatever the batches, the wall clock, the checkpoints: each observation comes out once,
    with the stamp it went in with (the observations are numbered to tell them apart)."""
    buffer = Reorder(slack_s=60, idle_s=120)
    now, n = NOW, 0
    given_stamps: dict[int, int | None] = {}
    released: list[tuple[dict, int | None]] = []
    for batch, wait, checkpoint in steps:
        now += wait
        if checkpoint:
            buffer = Reorder.restore(buffer.snapshot(), slack_s=60, idle_s=120)
        observations, stamps = [], []
        for offset, stamp in batch:
            t = datetime.fromtimestamp(NOW - offset, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            observations.append({"time": t, "n": n})
            stamps.append(stamp)
            given_stamps[n] = stamp
            n += 1
        released += buffer.push_stamped(observations, stamps, now)
        released += buffer.flush_idle_stamped(now)
    released += buffer.flush_idle_stamped(now + 10_000) + buffer.flush_idle_stamped(now + 20_000)
    assert sorted(o["n"] for o, _ in released) == list(range(n))
    assert {o["n"]: s for o, s in released} == given_stamps
    assert buffer.stamps == {}
