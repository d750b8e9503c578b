"""config/detectors.yaml: validation with file:line:col errors."""

from __future__ import annotations

import pytest

from atalaia.detectors.config import ConfigError, load_config, parse_config

GOOD = """\
default: g
detectors:
  - name: g
    model: gaussian
    params: {window: 100}
"""


def test_repository_config_loads_and_builds():
    config = load_config()
    for name in config.names:
        assert config.get(name).build().score_one(1.0, __import__("datetime").datetime(2026, 1, 1)) == 0.0


def test_minimal_config():
    assert parse_config(GOOD, "d.yaml").get().name == "g"


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (GOOD.replace("model: gaussian", "model: lstm"), "d.yaml:3:5", "unknown model 'lstm'"),
        (
            GOOD.replace("window: 100", "window: 100, colour: red"),
            "d.yaml:5:5",
            "unexpected keyword argument 'colour'",
        ),
        (GOOD.replace("default: g", "default: h"), "d.yaml:1:1", "default 'h' is not a detector name"),
        (
            GOOD.replace("params: {window: 100}", "params: {window: 100}\n    warmup: -3"),
            "d.yaml:6:5",
            "warmup",
        ),
        (
            GOOD.replace("    model: gaussian\n", "    model: gaussian\n    colour: red\n"),
            "d.yaml:5:5",
            "colour",
        ),
        (GOOD.replace("params: {window: 100}", "params: {window: [100}"), "d.yaml:5:", ""),
        (GOOD + "  - name: g\n    model: hst\n", "d.yaml:1:1", "duplicate detector names"),
        (GOOD.replace("model: gaussian\n", "model: ensemble\n"), "d.yaml:3:5", "needs members"),
        # the bank's limits: each error on its own line
        (GOOD + "bank:\n  max_entities: 10\n  forget_after: soon\n", "d.yaml:8:3", "bad duration 'soon'"),
        (GOOD + "bank:\n  idle_evict_after: 3x\n", "d.yaml:7:3", "bad duration '3x'"),
        (GOOD + "bank:\n  max_checkpoints: 0\n", "d.yaml:7:3", "greater than or equal to 1"),
        # a model that could never score (it failed only when run, or scored 0 for ever)
        (GOOD.replace("window: 100", "window: 0"), "d.yaml:5:5", "window must be an integer >= 2"),
        (
            GOOD.replace("model: gaussian", "model: hst").replace("window: 100", "n_trees: 0"),
            "d.yaml:5:5",
            "n_trees must be an integer >= 1",
        ),
    ],
)
def test_errors_point_at_the_line(text, where, message):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "d.yaml")
    assert str(err.value).startswith(where), str(err.value)
    assert message in str(err.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
