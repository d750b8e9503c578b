"""The pattern-rarity feature `pattern` (detectors/README.md, "A pattern-rarity feature"):
strictly online, exact across state round trips at any point, constant memory, and it sees a
pattern the series has not made although every reading stays inside its range."""

from __future__ import annotations

import math
import pickle
import random
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.detectors.base import Detector
from atalaia.detectors.extreme import NoveltyExtreme
from atalaia.detectors.novelty import PT_HORIZON, PT_WORDS, RecordNovelty

T0 = datetime(2026, 1, 1)
BASE = dict(shape_min=0.0, tail_floor=0.05, stuck=3.0, fast=0.1, warmup=150)


def model(record: bool = False, warmup: int = 150) -> NoveltyExtreme:
    rec = ["value", "shift", "seasonal"] + (["pattern"] if record else [])
    params = {**BASE, "warmup": warmup}
    return NoveltyExtreme(
        record_features=rec, features=["value", "diff", "shift", "seasonal", "pattern"], **params
    )


def cycle(n: int, seed: int = 0, noise: float = 0.3) -> list[float]:
    rng = random.Random(seed)
    return [10 + 3 * math.sin(i * 2 * math.pi / 288) + noise * rng.gauss(0, 1) for i in range(n)]


#: a series as a user's sensor sends it: readings (some repeated, some non-finite) at 5-minute
#: steps, with gaps of hours now and then
readings = st.lists(
    st.tuples(
        st.one_of(
            st.floats(-1e3, 1e3),
            st.sampled_from([0.0, 1.0, 2.0]),
            st.sampled_from([math.nan, math.inf]),
        ),
        st.sampled_from([5, 5, 5, 5, 10, 600]),  # minutes since the previous reading
    ),
    min_size=2,
    max_size=300,
)


def timed(rows: list[tuple[float, int]]) -> list[tuple[float, datetime]]:
    out, t = [], T0
    for x, minutes in rows:
        t += timedelta(minutes=minutes)
        out.append((x, t))
    return out


@settings(max_examples=60, deadline=None)
@given(rows=readings, cut=st.integers(0, 300), record=st.booleans())
def test_state_round_trip_is_exact_at_any_point(rows, cut, record):
    points = timed(rows)
    cut = min(cut, len(points))
    det = model(record, warmup=5)
    for x, t in points[:cut]:
        det.score_learn(x, t)
    data = det.to_state()
    copy = Detector.from_state(data)
    assert copy.to_state() == data
    rest = points[cut:]
    assert [det.score_learn(x, t) for x, t in rest] == [copy.score_learn(x, t) for x, t in rest]
    assert copy._w == det._w


@settings(max_examples=60, deadline=None)
@given(rows=readings, cut=st.integers(1, 300), record=st.booleans())
def test_scores_of_a_prefix_do_not_change_when_points_are_appended(rows, cut, record):
    # strictly online: the score at a point depends on the points before it only, and scoring
    # (without learning) changes nothing
    points = timed(rows)
    cut = min(cut, len(points))
    short, long_ = model(record, warmup=5), model(record, warmup=5)
    a = [short.score_learn(x, t) for x, t in points[:cut]]
    b = []
    for x, t in points:
        before = long_.to_state()
        long_.score_one(x, t)
        assert long_.to_state() == before
        b.append(long_.score_learn(x, t))
    assert a == b[:cut]
    assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in b)


def test_counts_stay_bounded_and_the_state_small():
    """Constant memory: 81 integer counters, halved when they total the horizon, so a series
    of any length keeps the same state size, under the per-entity budget."""
    det = model()
    xs = cycle(12000, seed=4, noise=1.0)
    sizes = []
    for i, x in enumerate(xs):
        det.score_learn(x, T0 + timedelta(minutes=5 * i))
        if i in (3000, 11999):
            sizes.append(len(det.to_state()))
    assert len(det._w) == PT_WORDS and sum(det._w) < PT_HORIZON
    assert det._s[det._p.pattern + 3] == sum(det._w)  # the total kept equals the counts'
    assert sizes[0] == sizes[1] <= 4096


def test_a_pattern_the_series_has_not_made_scores_inside_its_range():
    """A gate that holds low for 20 readings, then high for 20, starts hunting (low, high, low,
    ...) for an hour: every reading and every step is one it makes all the time, only their
    rhythm is new. The record test of the words' rarity scores it above the threshold (0.45),
    and nothing before it; the default (without the feature) sees nothing."""
    n, onset = 4000, 3000
    rng = random.Random(1)
    xs = [(12.0 if (i // 20) % 2 else 10.0) + 0.1 * rng.gauss(0, 1) for i in range(n)]
    for i in range(onset, onset + 12):
        xs[i] = (12.0 if i % 2 else 10.0) + 0.1 * rng.gauss(0, 1)
    ts = [T0 + timedelta(minutes=5 * i) for i in range(n)]
    with_it, default = model(record=True), NoveltyExtreme(**BASE)
    a = [with_it.score_learn(x, t) for x, t in zip(xs, ts, strict=True)]
    b = [default.score_learn(x, t) for x, t in zip(xs, ts, strict=True)]
    assert min(xs[:onset]) < min(xs[onset : onset + 12]) and max(xs[onset : onset + 12]) < max(xs[:onset])
    window = slice(onset, onset + 12)
    assert max(a[1000:onset]) < 0.45 < max(a[window])
    assert max(b[window]) < 0.3
    rarity = [v for v in with_it._values(xs[-1], ts[-1]) if v[2] == with_it._p.par[-1]]
    assert rarity and 0.0 < rarity[0][0] < math.log(2 * PT_HORIZON)


def test_on_noise_no_word_is_much_rarer_than_another():
    """The symbols are a Gaussian's terciles: on white noise every word is about as common
    (1/81), so the feature has no rare words to speak of."""
    det = RecordNovelty(features=["value", "pattern"], warmup=5)
    rng = random.Random(7)
    for i in range(6000):
        det.score_learn(50 + 5 * rng.gauss(0, 1), T0 + timedelta(minutes=5 * i))
    counts = sorted(det._w)
    assert counts[0] > 0 and counts[-1] < 3 * counts[0]


def test_a_gap_starts_the_word_afresh():
    det = model(warmup=5)
    for i, x in enumerate(cycle(400)):
        det.score_learn(x, T0 + timedelta(minutes=5 * i))
    assert [v for v in det._values(10.0, T0 + timedelta(minutes=5 * 400)) if v[2] == det._p.par[-1]]
    later = T0 + timedelta(days=3)  # more than max_gap typical steps: no word across the gap
    assert not [v for v in det._values(10.0, later) if v[2] == det._p.par[-1]]
    det.score_learn(10.0, later)
    assert det._s[det._p.pattern + 2] == 0.0


def test_the_default_state_is_unchanged_without_the_feature():
    """Configurations without `pattern` keep their layout and their state tuple (no counts), so
    their states and scores are those of before."""
    det = NoveltyExtreme(**BASE)
    assert det._p.pattern == -1 and det._w is None
    assert len(det.__getstate__()) == 7
    with_it = model()
    assert len(with_it.__getstate__()) == 8
    assert pickle.loads(pickle.dumps(with_it))._w == with_it._w
