"""The context features `spread`, `shape` and `pattern` (detectors/README.md, "Two context
features" and "A pattern-rarity feature"): strictly online, exact across state round trips, in range on hostile series, and the quiet
sensor seen by `spread`."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.detectors.base import Detector
from atalaia.detectors.extreme import NoveltyExtreme
from atalaia.detectors.novelty import RecordNovelty

T0 = datetime(2026, 1, 1)
BASE = dict(shape_min=0.0, tail_floor=0.05, stuck=3.0, fast=0.1, warmup=150)
FEATURES = ("spread", "shape", "pattern")


def model(feature: str, record: bool = True) -> NoveltyExtreme:
    rec = ["value", "shift", "seasonal"] + ([feature] if record else [])
    return NoveltyExtreme(
        record_features=rec, features=["value", "diff", "shift", "seasonal", feature], **BASE
    )


def series(n: int, seed: int = 0, quiet: tuple[int, int] | None = None) -> list[float]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        q = 0.2 if quiet and quiet[0] <= i < quiet[1] else 1.0
        out.append(10 + 3 * math.sin(i * 2 * math.pi / 288) + q * rng.gauss(0, 1))
    return out


def times(n: int) -> list[datetime]:
    return [T0 + timedelta(minutes=5 * i) for i in range(n)]


@pytest.mark.parametrize("feature", FEATURES)
@pytest.mark.parametrize("record", [True, False])
def test_scores_of_a_prefix_do_not_change_when_points_are_appended(feature, record):
    xs, ts = series(1500, seed=3), times(1500)
    short, long_ = model(feature, record), model(feature, record)
    a = [short.score_learn(x, t) for x, t in zip(xs[:900], ts[:900], strict=True)]
    b = [long_.score_learn(x, t) for x, t in zip(xs, ts, strict=True)]
    assert a == b[:900]


@pytest.mark.parametrize("feature", FEATURES)
def test_state_round_trip_is_exact_mid_stream(feature):
    xs, ts = series(1200, seed=5), times(1200)
    # a gap of a day in the middle: the change features (and these) wait for the next point
    ts = ts[:600] + [t + timedelta(days=1) for t in ts[600:]]
    det = model(feature)
    for x, t in zip(xs[:700], ts[:700], strict=True):
        det.score_learn(x, t)
    data = det.to_state()
    copy = Detector.from_state(data)
    assert copy.to_state() == data
    rest = list(zip(xs[700:], ts[700:], strict=True))
    assert [det.score_learn(x, t) for x, t in rest] == [copy.score_learn(x, t) for x, t in rest]
    assert len(data) <= 4096  # the per-entity budget, pickled


@pytest.mark.parametrize("feature", FEATURES)
@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=400))
def test_any_sequence_gives_unit_scores(feature, values):
    det = RecordNovelty(features=["value", feature], warmup=5)
    for x, t in zip(values, times(len(values)), strict=True):
        s = det.score_learn(x, t)
        assert math.isfinite(s) and 0.0 <= s <= 1.0


def test_default_layout_is_unchanged_without_the_context_features():
    # the default's state array has no context slots (its states and scores are untouched)
    det = NoveltyExtreme(**BASE)
    assert det._p.spread == det._p.shape == -1 and not det._p.lagged


def test_spread_sees_a_sensor_that_goes_quiet():
    n, onset = 4000, 3000
    quiet = model("spread")
    xs = series(n, seed=1, quiet=(onset, onset + 288))
    scores = [quiet.score_learn(x, t) for x, t in zip(xs, times(n), strict=True)]
    assert max(scores[onset : onset + 144]) > 0.5


@pytest.mark.parametrize("feature", FEATURES)
def test_each_feature_learns_its_own_slots_and_the_stuck_test_still_speaks(feature):
    # every feature value carries its own record and tail offsets (a mix-up would write one
    # feature's tail over another's state, e.g. the stuck test's)
    n = 1500
    det, xs, ts = model(feature), series(n, seed=2), times(n)
    for x, t in zip(xs[:1000], ts[:1000], strict=True):
        det.score_learn(x, t)
    p = det._p
    got = [(e, o) for _, e, o, _ in det._values(xs[1000], ts[1000])]
    assert got == list(zip(p.ext, p.par, strict=True))
    # then the sensor freezes: the stuck test tells it at 0.95 within a few readings
    frozen = [det.score_learn(xs[1000], t) for t in ts[1000:1040]]
    assert max(frozen) >= 0.9
