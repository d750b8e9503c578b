"""DetectorBank: per-entity models, warm-up, snapshot/restore equality, memory report."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from atalaia.detectors.bank import DetectorBank
from atalaia.detectors.config import DEFAULT_PATH, load_config, parse_config

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG = load_config()


def feed(rng: random.Random, n: int, entities: int, start: int = 0):
    for i in range(start, start + n):
        for e in range(entities):
            level = 10.0 * (e + 1)
            v = level + rng.gauss(0, 1) + (25.0 if i % 173 == 0 and i else 0.0)
            yield f"urn:ngsi-ld:WaterObserved:porto-{e:02d}", "flow", T0 + timedelta(minutes=5 * i), v


def test_warmup_returns_none_then_scores():
    bank = DetectorBank(CONFIG)
    warmup = CONFIG.get("hst-default").warmup
    out = [
        bank.score_learn("hst-default", "e1", "flow", T0 + timedelta(minutes=i), float(i % 4))
        for i in range(warmup + 5)
    ]
    assert out[:warmup] == [None] * warmup
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in out[warmup:])


def test_entities_are_independent():
    bank = DetectorBank(CONFIG)
    alone = DetectorBank(CONFIG)
    rng = random.Random(1)
    rows = list(feed(rng, 300, 3))
    mixed = bank.score_learn_many("ensemble", [(k, a, t, v) for k, a, t, v in rows])
    mine = [alone.score_learn("ensemble", k, a, t, v) for k, a, t, v in rows if k.endswith("01")]
    assert [s for (k, *_), s in zip(rows, mixed, strict=True) if k.endswith("01")] == mine
    assert len(bank) == 3


def test_non_finite_values_are_neither_scored_nor_learned():
    bank = DetectorBank(CONFIG)
    assert bank.score_learn("gaussian", "e", "flow", T0, math.nan) is None
    assert len(bank) == 0
    bank.score_learn("gaussian", "e", "flow", T0, 1.0)
    assert bank.model("gaussian", "e", "flow").n_seen == 1


def test_unknown_detector_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown detector 'nope'"):
        DetectorBank(CONFIG).score_learn("nope", "e", "flow", T0, 1.0)


@pytest.mark.parametrize("name", CONFIG.names)
def test_restored_bank_scores_exactly_like_an_uninterrupted_one(name):
    rows = list(feed(random.Random(7), 500, 4))
    cut = 1200
    uninterrupted = DetectorBank(CONFIG)
    expected = [uninterrupted.score_learn(name, k, a, t, v) for k, a, t, v in rows]

    first = DetectorBank(CONFIG)
    got = [first.score_learn(name, k, a, t, v) for k, a, t, v in rows[:cut]]
    data = first.snapshot()
    del first  # the worker dies
    restored = DetectorBank.restore(load_config(), data)
    got += [restored.score_learn(name, k, a, t, v) for k, a, t, v in rows[cut:]]
    assert got == expected
    # the comparison has teeth: scores after the cut are real and varied
    assert len({s for s in expected[cut:] if s is not None}) > 20


def test_changed_detector_config_restarts_only_that_detector():
    bank = DetectorBank(CONFIG)
    for k, a, t, v in feed(random.Random(3), 200, 2):
        bank.score_learn("gaussian", k, a, t, v)
        bank.score_learn("ensemble", k, a, t, v)
    text = DEFAULT_PATH.read_text()
    assert "params: {window: 6400, warmup: 30}" in text
    changed = parse_config(
        text.replace("params: {window: 6400, warmup: 30}", "params: {window: 500, warmup: 30}")
    )
    restored = DetectorBank.restore(changed, bank.snapshot())
    names = {mk[0] for mk in restored._models}
    assert names == {"ensemble"}


def test_snapshot_rejects_foreign_bytes():
    import pickle

    with pytest.raises(ValueError, match="snapshot"):
        DetectorBank.restore(CONFIG, pickle.dumps({"version": 99}))


def test_memory_per_entity_is_reported_per_detector():
    bank = DetectorBank(CONFIG)
    for k, a, t, v in feed(random.Random(2), 300, 3):
        bank.score_learn("hst-default", k, a, t, v)
        bank.score_learn("gaussian", k, a, t, v)
    mem = bank.memory_per_entity()
    assert set(mem) == {"record-novelty", "gaussian"}  # the deprecated alias resolves
    assert all(1_000 < b < 2_000_000 for b in mem.values()), mem


def test_per_entity_state_round_trip_matches_uninterrupted():
    rows = [r for r in feed(random.Random(11), 400, 2)]
    whole, part = DetectorBank(CONFIG), DetectorBank(CONFIG)
    expected = [whole.score_learn("hst-default", k, a, t, v) for k, a, t, v in rows]
    got = [part.score_learn("hst-default", k, a, t, v) for k, a, t, v in rows[:500]]
    states = {(k, a): part.state_of("hst-default", k, a) for k, a, _, _ in rows[:2]}
    fresh = DetectorBank(CONFIG)
    for (k, a), data in states.items():
        fresh.load_state("hst-default", k, a, data)
    got += [fresh.score_learn("hst-default", k, a, t, v) for k, a, t, v in rows[500:]]
    assert got == expected
    assert fresh.state_of("hst-default", "nobody", "flow") is None


def test_rules_sharing_a_model_score_each_reading_once_and_learn_it_once():
    """Two rules with one detector on one attribute (a warning and a critical threshold, or an
    entity of two types with a rule each) share the entity's model: each reading is learned once
    and both get the score a single rule gets (the second had scored against a model that had
    learned the reading already, and the model learned every reading twice)."""
    rng = random.Random(7)
    rows = list(feed(rng, 400, 2))
    single, shared = DetectorBank(CONFIG), DetectorBank(CONFIG)
    alone = [single.score_learn("novelty-evt-mean", k, a, t, v) for k, a, t, v in rows]
    both = []
    for k, a, t, v in rows:  # the rules of one reading, other models' calls between them
        first = shared.score_learn("novelty-evt-mean", k, a, t, v)
        shared.score_learn("novelty-evt-mean", k, "level", t, v * 2)
        both.append((first, shared.score_learn("novelty-evt-mean", k, a, t, v)))
    assert [f for f, _ in both] == [s for s, _ in both] == alone
    assert any(s is not None and s > 0.45 for s in alone)  # (scores that matter, not only warm-up)
    key = rows[0][0]
    assert (
        shared.model("novelty-evt-mean", key, "flow").n_seen
        == single.model("novelty-evt-mean", key, "flow").n_seen
        == 400
    )
