"""DetectorBank memory bounds: idle eviction with exact resume, the entity limit."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.detectors.bank import DetectorBank
from atalaia.detectors.config import load_config

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG = load_config()
NAME = CONFIG.default


def _value(e: int, i: int) -> float:
    return 10.0 * (e + 1) + (i * 7919 % 13) * 0.1 + (30.0 if i % 97 == 0 and i else 0.0)


# Each step: which entity reports, and how many minutes pass before it does (long gaps make
# entities idle, so they are evicted and later resume from their checkpoints).
steps = st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from([1, 1, 1, 5, 90, 400])), min_size=1, max_size=400
)


@settings(max_examples=25, deadline=None)
@given(steps)
def test_eviction_and_return_give_exactly_the_uninterrupted_scores(plan):
    evicting = DetectorBank(CONFIG, idle_after=3600.0, max_entities=None)
    keeping = DetectorBank(CONFIG, idle_after=None, max_entities=None)
    t = T0
    warm = [(e, i) for i in range(160) for e in range(4)]  # past the warm-up: real scores
    for n, (e, i) in enumerate(warm):
        row = (f"urn:e{e}", "flow", T0 - timedelta(days=30) + timedelta(minutes=n), _value(e, i))
        assert evicting.score_learn(NAME, *row) == keeping.score_learn(NAME, *row)
    for i, (e, gap) in enumerate(plan):
        t += timedelta(minutes=gap)
        row = (f"urn:e{e}", "flow", t, _value(e, i))
        assert evicting.score_learn(NAME, *row) == keeping.score_learn(NAME, *row)
    for e in range(4):
        assert evicting.state_of(NAME, f"urn:e{e}", "flow") == keeping.state_of(NAME, f"urn:e{e}", "flow")
    assert evicting.stats["evicted"] >= 1  # the 30-day jump alone idles every entity


def test_idle_entities_leave_memory_and_resume_from_their_checkpoint():
    bank = DetectorBank(CONFIG, idle_after=3600.0, max_entities=None)
    for i in range(200):
        for e in range(3):
            bank.score_learn(NAME, f"urn:e{e}", "flow", T0 + timedelta(minutes=i), _value(e, i))
    before = bank.state_of(NAME, "urn:e2", "flow")
    # only e0 keeps reporting, for two hours: e1 and e2 are checkpointed and evicted
    for i in range(200, 320):
        bank.score_learn(NAME, "urn:e0", "flow", T0 + timedelta(minutes=i), _value(0, i))
    assert len(bank) == 1 and len(bank.checkpoints) == 2
    assert bank.checkpoints[(NAME, "urn:e2", "flow")] == before
    assert bank.metrics()["atalaia_detector_entities_evicted"] == 2
    # a snapshot carries the checkpoints; the returning entity resumes its exact state
    bank = DetectorBank.restore(CONFIG, bank.snapshot(), idle_after=3600.0, max_entities=None)
    bank.score_learn(NAME, "urn:e2", "flow", T0 + timedelta(minutes=321), 12.0)
    assert bank.stats["resumed"] == 1 and len(bank.checkpoints) == 1
    assert bank.model(NAME, "urn:e2", "flow").n_seen == 201


def test_full_bank_refuses_new_entities_keeps_old_ones_and_says_so(caplog):
    bank = DetectorBank(CONFIG, max_entities=2, idle_after=None)
    for i in range(160):
        for e in range(2):
            bank.score_learn(NAME, f"urn:e{e}", "flow", T0 + timedelta(minutes=i), _value(e, i))
    states = [bank.state_of(NAME, f"urn:e{e}", "flow") for e in range(2)]
    with caplog.at_level(logging.WARNING, logger="atalaia.detectors.bank"):
        for i in range(5):
            assert bank.score_learn(NAME, "urn:new", "flow", T0 + timedelta(minutes=200 + i), 1.0) is None
    assert len(bank) == 2
    assert bank.state_of(NAME, "urn:new", "flow") is None
    assert [bank.state_of(NAME, f"urn:e{e}", "flow") for e in range(2)] == states
    assert bank.metrics()["atalaia_detector_entities_refused"] == 5
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "detector bank full" in lines[0] and "max_entities" in lines[0]
    # old entities still score
    assert bank.score_learn(NAME, "urn:e0", "flow", T0 + timedelta(minutes=300), 10.0) is not None


def test_full_bank_makes_room_by_evicting_idle_entities():
    bank = DetectorBank(CONFIG, max_entities=2, idle_after=3600.0)
    bank.score_learn(NAME, "urn:a", "flow", T0, 1.0)
    bank.score_learn(NAME, "urn:b", "flow", T0 + timedelta(hours=2), 1.0)
    bank.score_learn(NAME, "urn:c", "flow", T0 + timedelta(hours=2, minutes=1), 1.0)
    assert set(k for _, k, _ in bank._models) == {"urn:b", "urn:c"}
    assert bank.stats["refused"] == 0 and (NAME, "urn:a", "flow") in bank.checkpoints


def test_limits_come_from_the_config():
    bank = DetectorBank(CONFIG)
    assert bank.max_entities == CONFIG.bank.max_entities
    assert bank.idle_after == CONFIG.bank.idle_seconds
