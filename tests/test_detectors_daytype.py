"""The day-type profile (`day_types: 2`): the seasonal feature against one time-of-day profile for
Monday–Friday and one for Saturday–Sunday. A weekday that behaves like a Sunday is seen; the
default (`day_types: 1`) is untouched; strictly online, exact across state round trips, and a
changed `day_types` is a changed model (its signature)."""

from __future__ import annotations

import math
import pickle
import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from atalaia.detectors.base import Detector
from atalaia.detectors.config import load_config
from atalaia.detectors.extreme import ExtremeTail, NoveltyExtreme
from atalaia.detectors.novelty import RecordNovelty

MONDAY = datetime(2026, 1, 5)
#: the default detector's parameters (config/detectors.yaml's novelty-evt-mean)
BASE = dict(shape_min=0.0, tail_floor=0.05, stuck=3.0, fast=0.1, warmup=150)
HOLIDAY = 23  # the Wednesday of the fourth week
DAY = 288  # 5-minute readings a day


def weekly(weeks: int, seed: int = 0, holiday: int | None = HOLIDAY, start: datetime = MONDAY):
    """A traffic-like series every 5 minutes: a daytime hump of 8 on weekdays, of 1 on Saturdays
    and Sundays, noise of sd 0.5; the day ``holiday`` (counted from ``start``) behaves like a
    Sunday."""
    rng = random.Random(seed)
    xs, ts = [], []
    for i in range(weeks * 7 * DAY):
        t = start + timedelta(minutes=5 * i)
        h = t.hour + t.minute / 60
        hump = math.sin(math.pi * (h - 6) / 14) if 6 <= h <= 20 else 0.0
        quiet = t.weekday() >= 5 or (t - start).days == holiday
        xs.append(10 + (1.0 if quiet else 8.0) * hump + rng.gauss(0, 0.5))
        ts.append(t)
    return xs, ts


def model(day_types: int = 2) -> NoveltyExtreme:
    return NoveltyExtreme(**BASE, day_types=day_types)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_weekday_that_behaves_like_a_sunday_is_seen_only_with_day_types(seed):
    xs, ts = weekly(5, seed)
    day = slice(HOLIDAY * DAY, (HOLIDAY + 1) * DAY)
    scores = {}
    for k in (1, 2):
        det = model(k)
        scores[k] = [det.score_learn(x, t) for x, t in zip(xs, ts, strict=True)]
    assert ts[day.start].weekday() == 2  # a Wednesday
    # the shipped threshold of novelty-evt-mean is 0.45
    assert max(scores[2][day]) > 0.45
    assert max(scores[1][day]) < 0.45
    # and ordinary weekends, which widen the single profile's deviations, alarm less with two
    before = slice(7 * DAY, HOLIDAY * DAY)
    assert sum(s > 0.45 for s in scores[2][before]) <= sum(s > 0.45 for s in scores[1][before])


def test_day_types_1_is_the_default_model():
    # the default's layout, parameters and scores are those of a model without the option
    det, same = NoveltyExtreme(**BASE), model(1)
    assert det.signature() == same.signature()
    assert det._p is same._p and det._p.weekend == 0
    assert det._p.size == det._p.profile + det._p.bins + 3  # one profile, then the stuck slots
    xs, ts = weekly(2, seed=4)
    assert [det.score_learn(x, t) for x, t in zip(xs, ts, strict=True)] == [
        same.score_learn(x, t) for x, t in zip(xs, ts, strict=True)
    ]


def test_day_types_changes_the_signature_so_a_bank_restarts_the_model():
    assert model(2).signature() != model(1).signature()
    assert model(2).day_types == 2 and model(1).day_types == 1
    for cls in (RecordNovelty, ExtremeTail):
        assert cls(day_types=2).signature() != cls().signature()


@pytest.mark.parametrize("bad", [0, 3, -1, True, "2", None])
def test_day_types_must_be_1_or_2(bad):
    with pytest.raises(ValueError, match="day_types"):
        NoveltyExtreme(**BASE, day_types=bad)


def test_weekends_learn_their_own_profile_and_an_unlearned_bin_gives_no_seasonal_value():
    xs, ts = weekly(1, holiday=None)
    det = model(2)
    p = det._p
    seasonal = p.features.index("seasonal")
    for x, t in zip(xs[: 5 * DAY], ts[: 5 * DAY], strict=True):  # Monday to Friday
        det.learn_one(x, t)
    weekdays = det._s[p.profile : p.profile + p.bins]
    weekend = det._s[p.profile + p.bins : p.profile + 2 * p.bins]
    assert all(v == v for v in weekdays) and all(v != v for v in weekend)
    # the first Saturday reading: its bin is not learned, so the seasonal feature is absent
    # (not the weekday profile's deviation, which would enter its seen range for good)
    sat = 5 * DAY
    assert ts[sat].weekday() == 5
    values = det._values(xs[sat], ts[sat])
    assert p.ext[seasonal] not in [e for _, e, _, _ in values]
    for x, t in zip(xs[sat:], ts[sat:], strict=True):
        det.learn_one(x, t)
    # the weekend learned its bins; the weekday bins are as Friday left them
    assert all(v == v for v in det._s[p.profile + p.bins : p.profile + 2 * p.bins])
    assert det._s[p.profile : p.profile + p.bins] == weekdays
    # at noon, the weekday profile holds the weekday hump, the weekend one the weekend's
    noon = 12 * 60 // p.bin_minutes
    assert det._s[p.profile + noon] - det._s[p.profile + p.bins + noon] > 5.0


@pytest.mark.parametrize("record", [True, False])
def test_scores_of_a_prefix_do_not_change_when_points_are_appended(record):
    # from a Thursday, across the first weekend and the Monday after
    xs, ts = weekly(2, seed=3, holiday=8, start=datetime(2026, 1, 1))
    rec = ["value", "shift", "seasonal"] if record else ["value"]
    short, long_ = (NoveltyExtreme(**BASE, day_types=2, record_features=rec) for _ in range(2))
    cut = 5 * DAY
    a = [short.score_learn(x, t) for x, t in zip(xs[:cut], ts[:cut], strict=True)]
    b = [long_.score_learn(x, t) for x, t in zip(xs, ts, strict=True)]
    assert a == b[:cut]


@pytest.mark.parametrize("cut_day", [3, 5])  # cut on a Thursday, on a Saturday
def test_state_round_trip_is_exact_mid_stream(cut_day):
    xs, ts = weekly(3, seed=5)
    # a gap of a day in the second week: the change features wait for the next point
    ts = ts[: 9 * DAY] + [t + timedelta(days=1) for t in ts[9 * DAY :]]
    det = model(2)
    cut = cut_day * DAY + 100
    for x, t in zip(xs[:cut], ts[:cut], strict=True):
        det.score_learn(x, t)
    data = det.to_state()
    copy = Detector.from_state(data)
    assert copy.to_state() == data and copy.signature() == det.signature()
    rest = list(zip(xs[cut:], ts[cut:], strict=True))
    assert [det.score_learn(x, t) for x, t in rest] == [copy.score_learn(x, t) for x, t in rest]
    assert len(data) <= 4096  # the per-entity budget, pickled


def test_a_state_written_before_day_types_loads_as_one_profile():
    xs, ts = weekly(1, seed=6)
    det = NoveltyExtreme(**BASE)
    for x, t in zip(xs[:1000], ts[:1000], strict=True):
        det.score_learn(x, t)
    state = pickle.loads(pickle.dumps(det.__getstate__()))  # (a copy: not det's estimators)
    old = (state[0], tuple(state[1])[:-1], *state[2:])  # the parameters without day_types
    copy = NoveltyExtreme.__new__(NoveltyExtreme)
    copy.__setstate__(old)
    assert copy.day_types == 1 and copy.signature() == det.signature()
    rest = list(zip(xs[1000:], ts[1000:], strict=True))
    assert [det.score_learn(x, t) for x, t in rest] == [copy.score_learn(x, t) for x, t in rest]


def test_the_candidate_is_the_default_plus_day_types():
    path = Path(__file__).resolve().parent.parent / "detectors" / "candidates.yaml"
    specs = {d.name: d for d in load_config(path).detectors}
    default, daytype = specs["novelty-evt-mean"], specs["novelty-evt-mean-daytype"]
    assert daytype.threshold == default.threshold == 0.45
    a, b = default.build(), daytype.build()
    assert b.inner.day_types == 2 and a.inner.day_types == 1
    assert b.inner._p.params._replace(day_types=1) == a.inner._p.params
