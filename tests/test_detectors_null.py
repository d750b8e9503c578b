"""`atalaia detectors null`: false alarms per sensor-week on anomaly-free synthetic series."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from click.testing import CliRunner

from atalaia.detectors import null
from atalaia.detectors.cli import detectors
from atalaia.detectors.config import load_config

CONFIG = load_config()
BY_NAME = {f.name: f for f in null.FAMILIES}


@pytest.mark.parametrize("family", null.FAMILIES, ids=lambda f: f.name)
def test_every_family_is_five_minute_readings_fixed_by_its_seed(family):
    times, values = null.series(family, 3, 4)
    assert len(times) == len(values) == 4 * 288
    assert all((b - a).total_seconds() == 300 for a, b in itertools.pairwise(times))
    assert np.isfinite(values).all()
    again = null.series(family, 3, 4)[1]
    assert np.array_equal(values, again)
    if family.name not in ("square", "flat", "cycle"):  # the noiseless ones are the same anyway
        assert not np.array_equal(values, null.series(family, 4, 4)[1])


def test_alarms_are_counted_per_sensor_week_after_the_settling_days():
    """At threshold 0 every reading alarms: 288 a day, 2016 a week, whatever the family; the
    first two days are not counted."""
    week = null.per_week(CONFIG.get(None), threshold=0.0, days=4, seeds=1)
    assert week == {f.name: 2016.0 for f in null.FAMILIES}


def test_the_default_is_silent_on_series_that_only_repeat_themselves():
    """A constant, a noiseless daily on/off and a noiseless daily cycle hold nothing new after
    their first day."""
    quiet = tuple(BY_NAME[n] for n in ("flat", "square", "cycle"))
    assert set(null.per_week(CONFIG.get(None), days=7, seeds=1, families=quiet).values()) == {0.0}


def test_the_default_pages_less_than_the_previous_one_for_a_stepping_sensor():
    """The reason the tail shape is held at >= 0: the previous default took a routine step for
    an impossible one."""
    fam = (BY_NAME["stepping"],)
    now = null.per_week(CONFIG.get(None), days=14, seeds=5, families=fam)["stepping"]
    before = null.per_week(CONFIG.get("novelty-evt-mean-v1"), days=14, seeds=5, families=fam)["stepping"]
    assert now * 2 < before


def test_the_command_prints_every_family_and_the_mean():
    result = CliRunner().invoke(
        detectors, ["null", "--days", "3", "--seeds", "1", "--detector", "record-novelty"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("family ") and "record-novelty @0.6" in line for line in lines)
    for family in null.FAMILIES:
        assert any(line.startswith(family.name + " ") for line in lines), family.name
    assert lines[-1].startswith("mean ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--detector", "nope"], "unknown detector 'nope'"),
        (["--detector", "gaussian"], "ships no threshold: give --threshold"),
        (["--days", "2"], "2 is not in the range 3<=x<=366"),
        (["--threshold", "1.5"], "1.5 is not in the range 0.0<=x<=1.0"),
        (["--threshold", "nan"], "--threshold must be between 0 and 1, not nan"),
    ],
)
def test_bad_requests_get_a_clear_error(args, message):
    result = CliRunner().invoke(detectors, ["null", *args])
    assert result.exit_code == (2 if "range" in message else 1)
    assert message in result.output


STUCK_WANTED = "a factor over the longest run of equal readings, 1 < stuck <= 1e6, or null"


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("shape_min: x", "shape_min must be a number between -0.5 and 1, or null, not 'x'"),
        ("shape_min: .nan", "shape_min must be a number between -0.5 and 1, or null, not nan"),
        ("shape_min: true", "shape_min must be a number between -0.5 and 1, or null, not True"),
        ("tail_floor: [1]", "tail_floor must be a fraction of the seen range, 0 <= tail_floor < 1, not [1]"),
        ("tail_floor: .inf", "tail_floor must be a fraction of the seen range, 0 <= tail_floor < 1, not inf"),
        ("stuck: 1", f"stuck must be {STUCK_WANTED}, not 1"),
        ("stuck: x", f"stuck must be {STUCK_WANTED}, not 'x'"),
        ("stuck: .nan", f"stuck must be {STUCK_WANTED}, not nan"),
        ("stuck: [3]", f"stuck must be {STUCK_WANTED}, not [3]"),
    ],
)
def test_the_mends_parameters_of_the_wrong_kind_get_a_positioned_error(param, message):
    from atalaia.detectors.config import ConfigError, parse_config

    text = f"default: d\ndetectors:\n  - name: d\n    model: novelty-extreme\n    params: {{{param}}}\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, "d.yaml")
    assert str(err.value) == f"d.yaml:5:5: detector 'd': {message}"
