"""A frozen sensor (the record-novelty family's ``stuck`` test, in the default) and
`atalaia detectors faults`: sensor faults injected into anomaly-free synthetic series."""

from __future__ import annotations

import itertools
import math
import random
from datetime import datetime, timedelta

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.detectors import faults, null
from atalaia.detectors.base import Detector
from atalaia.detectors.cli import detectors
from atalaia.detectors.config import load_config
from atalaia.detectors.novelty import STUCK_RUNS, RecordNovelty

CONFIG = load_config()
T0 = datetime(2026, 1, 5)
FAMILY = {f.name: f for f in null.FAMILIES}


def at(i: int) -> datetime:
    return T0 + timedelta(minutes=5 * i)


def noise(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [round(50.0 + rng.gauss(0.0, 5.0), 3) for _ in range(n)]


def scores(det: Detector, values: list[float], start: int = 0) -> list[float]:
    return [det.score_learn(v, at(i)) for i, v in enumerate(values, start)]


# -- the stuck test ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_the_default_alarms_within_minutes_when_a_noisy_sensor_freezes(seed):
    """A sensor that read 50 ± 5 for three days freezes on its last reading: the default
    alarms on the third equal reading (10 minutes after the first), where the one before it says nothing for
    hours."""
    values = noise(864, seed)
    frozen = values + [values[-1]] * 144
    now = scores(CONFIG.get(None).build(), frozen)
    before = scores(CONFIG.get("novelty-evt-mean-v2").build(), frozen)
    assert now[:864] == before[:864]  # the same until it freezes
    first = next(i for i, s in enumerate(now) if i >= 864 and s >= 0.45)
    assert first == 865  # the third equal reading: a run 3 times the longest (1) so far
    # at the stuck test's own score, not halved by the mean with the tail model (to which a
    # frozen reading is an ordinary one), so a rule alarming above 0.5 or 0.9 sees it too
    assert now[865] >= TOLD
    assert not [s for s in before[864:] if s >= 0.45]


TOLD = 0.9525  # the stuck test's score at a run of exactly 3 times the longest: 1 / (1 + e^-3)


def test_a_sensor_frozen_for_good_is_told_again_only_at_three_times_the_run():
    """A run that alarmed becomes the longest, so a sensor that stays frozen for a week speaks
    at 3, 9, 27, ... equal readings (records of records), not every few hours."""
    det = RecordNovelty(features=["value"], stuck=3.0, warmup=50)
    values = noise(300, 1) + [42.0] * 2016
    got = scores(det, values)
    told = [i - 299 for i, s in enumerate(got) if i >= 300 and s >= TOLD]
    runs = []  # the first reading of each told stretch, as a run length
    for r in told:
        if not runs or r != runs[-1][1] + 1:
            runs.append([r, r])
        else:
            runs[-1][1] = r
    assert [a for a, _ in runs] == [3, 9, 27, 81, 243, 729]


def test_the_default_tells_a_sensor_frozen_for_good_once_per_tripling():
    """Three weeks frozen: the default alarms on the third equal reading and then only when the
    run has tripled again (9, 27, 81, ... readings), not once per refractory period."""
    values = noise(864, 5)
    frozen = values + [values[-1]] * (21 * 288)
    got = scores(CONFIG.get(None).build(), frozen)
    told = [i - 863 + 1 for i, s in enumerate(got) if i >= 864 and s >= 0.45]
    assert told[0] == 3
    assert len(told) <= 8  # log3(6048) < 8
    assert all(b >= 3 * a for a, b in itertools.pairwise(told))


def test_a_duplicate_delivery_does_not_lengthen_a_run_and_a_gap_ends_it():
    """The same reading delivered again at the same time is not a frozen sensor; a sensor
    that reports the same value after a long silence has not been frozen through it, and
    readings at the usual step after that make a new run."""

    def model() -> RecordNovelty:
        det = RecordNovelty(features=["value"], stuck=3.0, warmup=50)
        scores(det, noise(600, 6))
        return det

    last = noise(600, 6)[-1]
    det = model()
    assert max(det.score_learn(last, at(599)) for _ in range(5)) < 0.5  # five more copies, same time
    assert det.score_learn(last, at(600)) < 0.5  # the next at the usual step: a run of 2
    assert det.score_learn(last, at(601)) >= TOLD  # and of 3
    det = model()
    assert det.score_learn(last, at(799)) < 0.5  # after 16 h of silence (max_gap: 10 steps)
    assert det.score_learn(last, at(800)) < 0.5
    assert det.score_learn(last, at(801)) >= TOLD


@pytest.mark.parametrize(
    "family", ["flat", "square", "cycle", "stepping", "blips", "counts", "trend", "walk"]
)
def test_series_that_hold_values_by_nature_do_not_look_frozen(family):
    """A constant never completes a run, so the test never speaks; a square wave, a stepping
    sensor, a quantised gauge and low counts hold values routinely: over twelve days (after
    two of settling), 8 sensors of a family raise at most 2 alarms more with the stuck test
    than without it."""
    now = before = 0
    for seed in range(8):
        times, values = null.series(FAMILY[family], seed, 14)
        now += len([i for i in null.alarms(CONFIG.get(None), 0.45, times, values) if i >= 576])
        before += len(
            [i for i in null.alarms(CONFIG.get("novelty-evt-mean-v2"), 0.45, times, values) if i >= 576]
        )
    assert now <= before + 2
    if family in ("flat", "square", "cycle"):
        assert now == 0


def told(values: list[float], factor: float) -> list[bool]:
    """Where the stuck test speaks, by its definition: the reading that makes a run of equal
    readings factor times the longest run (completed or told) once STUCK_RUNS runs have
    completed; a told run is the new longest."""
    out, run, longest, completed, prev = [], 0, 0, 0, None
    for v in values:
        if v == prev:
            run += 1
        else:
            if run:
                longest, completed = max(longest, run), completed + 1
            run = 1
        speaks = run > 1 and completed >= STUCK_RUNS and run >= factor * longest
        if speaks:
            longest = run
        out.append(speaks)
        prev = v
    return out


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(0, 3), min_size=40, max_size=400),
    st.sampled_from([1.5, 3.0, 10.0]),
)
def test_the_stuck_test_speaks_exactly_on_a_record_run(levels, factor):
    """Against an independent count of the runs: where the test speaks a reading scores at
    least 0.95, and everywhere else exactly what it scores without the test (whatever the
    series)."""
    values = [float(v) for v in levels]
    plain = scores(RecordNovelty(features=["value", "seasonal"], warmup=5), values)
    stuck = scores(RecordNovelty(features=["value", "seasonal"], warmup=5, stuck=factor), values)
    for i, speaks in enumerate(told(values, factor)):
        if speaks and i >= 5:
            assert stuck[i] >= TOLD, i
        else:
            assert stuck[i] == plain[i], i


def test_the_run_survives_a_state_round_trip_mid_freeze():
    values = noise(400, 2) + [50.0] * 30 + noise(100, 3)
    whole = scores(CONFIG.get(None).build(), values)
    head = CONFIG.get(None).build()
    scores(head, values[:410])
    resumed = Detector.from_state(head.to_state())
    assert scores(resumed, values[410:], 410) == whole[410:]
    assert max(whole[400:430]) >= 0.45


def test_the_stuck_test_is_refused_where_nothing_would_score_it():
    from atalaia.detectors.config import ConfigError, parse_config

    text = "default: d\ndetectors:\n  - name: d\n    model: extreme\n    params: {stuck: 3}\n"
    with pytest.raises(ConfigError, match=r"d.yaml:5:5: .*stuck is a record test"):
        parse_config(text, "d.yaml")


# -- atalaia detectors faults ------------------------------------------------------------


@pytest.mark.parametrize("fault", faults.FAULTS, ids=lambda f: f.name)
def test_each_fault_changes_the_series_from_its_onset_only(fault):
    _, values = null.series(FAMILY["white"], 0, 14)
    at_ = faults.onset(FAMILY["white"], 0, 14, 2)
    assert 5 * 288 <= at_ < 12 * 288
    assert at_ == faults.onset(FAMILY["white"], 0, 14, 2)
    y = faults.faulty(fault, values, at_)
    assert np.array_equal(y[:at_], values[:at_]) and not np.array_equal(y, values)
    assert np.array_equal(values, null.series(FAMILY["white"], 0, 14)[1])  # not in place
    sd = float(np.std(values[:at_]))
    if fault.name in ("spike", "dip"):
        assert np.flatnonzero(y != values).tolist() == [at_]
        assert math.isclose(abs(y[at_] - values[at_]), 6 * sd)
    if fault.name in ("stuck", "zero", "noisy", "no-cycle", "late-cycle", "quiet", "double-speed"):
        assert np.array_equal(y[at_ + 288 :], values[at_ + 288 :])  # a day long


def test_detection_is_counted_in_the_window_after_the_onset():
    """At threshold 0 every reading alarms: every fault is detected at once, and by chance."""
    fams = (FAMILY["white"], FAMILY["daily"])
    got = faults.detection(CONFIG.get(None), threshold=0.0, days=8, seeds=1, families=fams)
    assert got == {f.name: faults.Result(1.0, 1.0, 0) for f in faults.FAULTS}


def test_contextual_faults_keep_the_readings_in_range_and_change_only_their_time_of_day():
    """The daily cycle stopped or six hours late: every faulty reading is one the series makes
    every day (within its range), yet it differs from the usual reading at that hour."""
    _, values = null.series(FAMILY["cycle"], 0, 14)
    at_ = faults.onset(FAMILY["cycle"], 0, 14, 2)
    for name in ("no-cycle", "late-cycle"):
        fault = next(f for f in faults.FAULTS if f.name == name)
        y = faults.faulty(fault, values, at_)
        day = y[at_ : at_ + 288]
        assert values[:at_].min() - 0.5 <= day.min() and day.max() <= values[:at_].max() + 0.5, name
        assert np.max(np.abs(day - values[at_ : at_ + 288])) > 15.0, name  # the amplitude is 20
    late = faults.faulty(next(f for f in faults.FAULTS if f.name == "late-cycle"), values, at_)
    assert np.array_equal(late[at_ : at_ + 288], values[at_ - 72 : at_ + 216])  # six hours late


def test_double_speed_keeps_the_series_own_readings_and_only_changes_their_pace():
    """A day of the series' own readings of the next two days, every other one: inside its
    range, and only in families with an order to speed up (not noise, nor a trend or a walk
    whose next days leave the range)."""
    fault = next(f for f in faults.FAULTS if f.name == "double-speed")
    for name in ("cycle", "stepping", "wandering"):
        _, values = null.series(FAMILY[name], 0, 14)
        at_ = faults.onset(FAMILY[name], 0, 14, 2)
        y = faults.faulty(fault, values, at_)
        assert np.array_equal(y[at_ : at_ + 288], values[at_ : at_ + 576 : 2]), name
        assert np.array_equal(y[at_ + 288 :], values[at_ + 288 :]), name
        assert np.isin(y[at_ : at_ + 288], values).all(), name
    hosts = {f.name for f in faults.hosts(fault)}
    assert hosts == {"daily", "weekly", "counts", "square", "cycle", "wandering", "stepping"}


def test_a_fault_is_judged_only_on_the_families_that_can_show_it():
    """No daily cycle to stop in white noise: the cyclic faults are left out there (not counted
    as missed), and a quieter sensor is not injected into a noiseless square wave."""
    assert {f.name for f in faults.hosts_of("white")} >= {"spike", "quiet"}
    assert "no-cycle" not in {f.name for f in faults.hosts_of("white")}
    assert "quiet" not in {f.name for f in faults.hosts_of("square")}
    got = faults.detection(CONFIG.get(None), threshold=0.0, days=8, seeds=1, families=(FAMILY["white"],))
    assert "no-cycle" not in got and "late-cycle" not in got and got["quiet"] == faults.Result(1.0, 1.0, 0)


def test_the_default_sees_a_frozen_sensor_the_previous_one_does_not():
    """On sensors whose readings never repeat, a frozen one is seen on its third equal reading
    in every case; the default before the test saw it less often than its chance alarms."""
    fams = tuple(FAMILY[n] for n in ("white", "daily", "wandering", "skewed"))
    stuck = tuple(f for f in faults.FAULTS if f.name == "stuck")
    now = faults.detection(CONFIG.get(None), days=9, seeds=2, faults=stuck, families=fams)["stuck"]
    before = faults.detection(CONFIG.get("novelty-evt-mean-v2"), days=9, seeds=2, faults=stuck, families=fams)
    assert now.detected == 1.0 and now.delay == 2
    assert before["stuck"].detected <= 0.5


def test_the_command_prints_every_fault_and_the_mean():
    result = CliRunner().invoke(
        detectors, ["faults", "--days", "8", "--seeds", "1", "--detector", "record-novelty", "--window", "12"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("faults detected within 12 readings of their onset (8 days")
    assert any(line.startswith("fault ") and "record-novelty @0.6" in line for line in lines)
    for fault in faults.FAULTS:
        assert any(line.startswith(fault.name + " ") and "chance" in line for line in lines), fault.name
    assert lines[-1].startswith("mean ") and lines[-1].endswith("detected")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--detector", "nope"], "unknown detector 'nope'"),
        (["--detector", "gaussian"], "ships no threshold: give --threshold"),
        (["--days", "7"], "7 is not in the range 8<=x<=366"),
        (["--window", "0"], "0 is not in the range 1<=x<=10000"),
        (["--threshold", "nan"], "--threshold must be between 0 and 1, not nan"),
    ],
)
def test_bad_requests_get_a_clear_error(args, message):
    result = CliRunner().invoke(detectors, ["faults", *args])
    assert result.exit_code == (2 if "range" in message else 1)
    assert message in result.output


def test_a_bad_detectors_file_is_quoted_whole_in_the_error(tmp_path):
    bad = tmp_path / "d.yaml"
    bad.write_text("default: d\ndetectors:\n  - name: d\n    model: novelty\n    params: {stuck: x}\n")
    result = CliRunner().invoke(detectors, ["faults", "--config", str(bad)])
    assert result.exit_code == 1
    assert result.output.rstrip().endswith("or null, not 'x'")
