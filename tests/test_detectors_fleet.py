"""DetectorBank memory bounds: idle eviction with exact resume, the entity limit."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.detectors.bank import DetectorBank, Pool
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
    # (checkpoints are never forgotten here: the plan may leave an entity silent for months)
    evicting = DetectorBank(CONFIG, idle_after=3600.0, max_entities=None, forget_after=None)
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
    assert bank.forget_after == CONFIG.bank.forget_seconds == 30 * 86400
    assert bank.max_checkpoints == CONFIG.bank.max_checkpoints


def _report(bank: DetectorBank, entity: str, t: datetime, n: int = 1) -> float | None:
    score = None
    for i in range(n):
        score = bank.score_learn(NAME, entity, "flow", t + timedelta(minutes=i), _value(0, i))
    return score


def test_the_entity_limit_is_the_workers_not_each_partitions(caplog):
    """The banks of a pool (the worker's partitions) hold at most max_entities models together:
    a worker that takes over more partitions does not hold more models. A dropped bank (a
    revoked partition's) frees its room."""
    pool = Pool()
    p0 = DetectorBank(CONFIG, max_entities=3, idle_after=None, pool=pool)
    p1 = DetectorBank(CONFIG, max_entities=3, idle_after=None, pool=pool)
    _report(p0, "urn:a", T0)
    _report(p0, "urn:b", T0)
    _report(p1, "urn:c", T0)
    with caplog.at_level(logging.WARNING, logger="atalaia.detectors.bank"):
        assert _report(p1, "urn:d", T0) is None and _report(p0, "urn:e", T0) is None
    assert len(p0) + len(p1) == 3 and p0.stats["refused"] + p1.stats["refused"] == 2
    assert "3 entity models in memory" in caplog.text
    # the old entities still score
    assert _report(p1, "urn:c", T0 + timedelta(hours=1), 200) is not None
    del p0  # its partition was revoked
    assert pool.models() == 1
    _report(p1, "urn:d", T0 + timedelta(hours=5))
    assert len(p1) == 2 and p1.stats["refused"] == 1  # room again
    # the banks of another worker (another pool) do not count
    other = DetectorBank(CONFIG, max_entities=3, idle_after=None)
    _report(other, "urn:z", T0)
    assert len(other) == 1 and other.stats["refused"] == 0 and pool.models() == 2


def test_a_checkpoint_silent_for_forget_after_is_forgotten_and_the_entity_starts_afresh():
    day = 86400.0
    bank = DetectorBank(CONFIG, idle_after=3600.0, forget_after=10 * day, max_entities=None)
    _report(bank, "urn:gone", T0, 200)
    _report(bank, "urn:back", T0, 200)
    _report(bank, "urn:here", T0, 200)
    back = bank.state_of(NAME, "urn:back", "flow")
    # urn:here reports daily: the others are checkpointed after an hour
    for d in range(1, 12):
        _report(bank, "urn:here", T0 + timedelta(days=d))
        if d == 5:  # urn:back returns within forget_after: its exact state resumes
            assert bank.checkpoints[(NAME, "urn:back", "flow")] == back
            _report(bank, "urn:back", T0 + timedelta(days=d))
            assert (NAME, "urn:back", "flow") not in bank.checkpoints
            assert bank.model(NAME, "urn:back", "flow").n_seen == 201
    # urn:gone has been silent for 11 days: forgotten, counted, and it would start afresh
    assert (NAME, "urn:gone", "flow") not in bank.checkpoints
    assert bank.metrics()["atalaia_detector_entities_forgotten"] == 1
    assert (NAME, "urn:back", "flow") in bank.checkpoints  # silent for 6 days: kept
    assert _report(bank, "urn:gone", T0 + timedelta(days=12)) is None  # warming up again
    assert bank.model(NAME, "urn:gone", "flow").n_seen == 1


def test_checkpoints_beyond_max_checkpoints_forget_the_oldest_over_the_pool():
    pool = Pool()
    banks = [
        DetectorBank(CONFIG, idle_after=60.0, max_checkpoints=3, max_entities=None, pool=pool)
        for _ in range(2)
    ]
    for e in range(5):  # one entity after another: each idles the one before
        _report(banks[e % 2], f"urn:e{e}", T0 + timedelta(hours=e))
    _report(banks[0], "urn:tick", T0 + timedelta(hours=6))
    _report(banks[1], "urn:tick", T0 + timedelta(hours=6))
    assert pool.checkpoints() == 3
    kept = {k for b in banks for _, k, _ in b.checkpoints}
    assert "urn:e4" in kept and "urn:e0" not in kept
    assert sum(b.stats["forgotten"] for b in banks) == 2


# Each step: which entity reports and how many hours pass; a snapshot and restore may come at
# any step (a worker restart)
forget_plans = st.lists(
    st.tuples(st.integers(0, 4), st.sampled_from([0, 1, 2, 30, 100]), st.booleans()), min_size=1, max_size=60
)


@settings(max_examples=40, deadline=None)
@given(forget_plans)
def test_a_restarted_bank_evicts_and_forgets_exactly_as_an_uninterrupted_one(plan):
    limits = {"idle_after": 3600.0, "forget_after": 3 * 86400.0, "max_checkpoints": 2, "max_entities": None}
    steady = DetectorBank(CONFIG, **limits)
    restarted = DetectorBank(CONFIG, **limits)
    t = T0
    for i, (e, hours, restart) in enumerate(plan):
        t += timedelta(hours=hours, minutes=1)
        row = (NAME, f"urn:e{e}", "flow", t, _value(e, i))
        assert steady.score_learn(*row) == restarted.score_learn(*row)
        if restart:
            restarted = DetectorBank.restore(CONFIG, restarted.snapshot(), **limits)
        assert dict(restarted.checkpoints) == dict(steady.checkpoints)
        assert restarted.metrics() == steady.metrics()
