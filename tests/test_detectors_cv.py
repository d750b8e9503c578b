"""`atalaia detectors cv`: file-level folds, thresholds chosen on training files only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from atalaia.detectors import cv
from atalaia.detectors.cli import detectors

NAB = Path(__file__).resolve().parents[1].parent / "shared" / "nab"
SMALL = "art_daily_jumpsup,art_daily_small_noise,exchange-3_cpc_results,TravelTime_451,occupancy_6005"

needs_nab = pytest.mark.skipif(not (NAB / "nabscore.py").is_file(), reason=f"{NAB} is absent")


@given(
    st.lists(st.sampled_from(["a", "b", "c", ""]), min_size=4, max_size=40).map(
        lambda cats: [f"{c}/f{i}.csv" if c else f"f{i}.csv" for i, c in enumerate(cats)]
    ),
    st.integers(2, 6),
    st.integers(0, 1000),
)
def test_folds_partition_the_files_and_never_share_one(rels, k, seed):
    k = min(k, len(rels))
    folds = cv.make_folds(rels, k, seed)
    flat = [r for f in folds for r in f]
    assert sorted(flat) == sorted(rels)  # every file once, in exactly one fold
    assert len(set(flat)) == len(flat)
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    assert cv.make_folds(rels, k, seed) == folds  # the seed fixes the split


@needs_nab
def test_threshold_is_chosen_on_training_files_only():
    kit = cv.Kit.load(NAB, SMALL.split(","))
    rng = np.random.default_rng(0)
    scores = {r: rng.random(kit.truths[r].n_rows) for r in kit.rels}
    folds = cv.make_folds(kit.rels, 5, 0)
    base = cv.cross_validate(kit, {"rand": scores}, folds, "rand")
    # rewriting a held-out file's scores changes its own fold's score, never the threshold
    # chosen for it (which only the training files decide)
    held = folds[0][0]
    changed = dict(scores, **{held: np.ones_like(scores[held])})
    other = cv.cross_validate(kit, {"rand": changed}, folds, "rand")
    assert other.folds[0].profiles["standard"]["threshold"] == base.folds[0].profiles["standard"]["threshold"]
    assert other.folds[0].profiles["standard"]["raw"] != base.folds[0].profiles["standard"]["raw"]


@needs_nab
def test_cv_command_reports_held_out_mean_spread_and_counts(tmp_path):
    result = CliRunner().invoke(
        detectors,
        ["cv", str(NAB), "--folds", "5", "--files", SMALL, "--cache-dir", str(tmp_path), "-v"],
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "5 files" in out and "CV standard" in out and "all files" in out
    assert out.count("fold ") == 5 and "±" in out
    assert len(list(tmp_path.rglob("*.npy"))) == 5  # score streams cached per file


def test_missing_kit_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(detectors, ["cv", str(tmp_path)])
    assert result.exit_code != 0 and "no NAB kit" in result.output


@given(
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=2, max_size=30)
    .filter(lambda cats: len(set(cats)) >= 2)
    .map(lambda cats: [f"{c}/f{i}.csv" for i, c in enumerate(cats)])
)
def test_leave_one_category_out_holds_out_each_category_whole(rels):
    folds = cv.category_folds(rels)
    assert sorted(r for f in folds for r in f) == sorted(rels)  # every file once
    assert all(len({cv.category_of(r) for r in f}) == 1 for f in folds)  # one category per fold
    assert len(folds) == len({cv.category_of(r) for r in rels})


@needs_nab
def test_cv_command_loco_reports_the_worst_category_and_the_standard_error(tmp_path):
    result = CliRunner().invoke(
        detectors, ["cv", str(NAB), "--folds", "5", "--files", SMALL, "--cache-dir", str(tmp_path), "--loco"]
    )
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if not ln.startswith(" ")]
    header = next(ln for ln in lines if ln.startswith("configuration"))
    row = lines[lines.index(header) + 1]
    assert "SE" in header and "LOCO worst category" in header
    # artificialNoAnomaly has no window, so it has no score and cannot be the worst category
    assert row.startswith("novelty-evt-mean") and "artificialNoAnomaly" not in row


@needs_nab
def test_cv_command_around_shows_the_score_beside_the_chosen_threshold(tmp_path):
    args = [
        "cv",
        str(NAB),
        "--folds",
        "5",
        "--files",
        SMALL,
        "--cache-dir",
        str(tmp_path),
        "--around",
        "0.05",
    ]
    result = CliRunner().invoke(detectors, args)
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if "threshold moved" in ln)
    assert "-0.050: " in line and "-0.025: " in line and "+0.025: " in line and "+0.050: " in line
