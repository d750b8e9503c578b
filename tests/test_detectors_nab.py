"""`atalaia detectors nab` writes NAB result files the scorer accepts (two small files)."""

from __future__ import annotations

import csv
import importlib
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from atalaia.detectors.cli import detectors

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NAB = SHARED / "nab"
FILES = [
    "artificialNoAnomaly/art_daily_small_noise.csv",
    "realKnownCause/ec2_request_latency_system_failure.csv",
]


@pytest.fixture
def small_nab(tmp_path: Path) -> Path:
    if not (NAB / "data").is_dir():
        pytest.skip(f"{NAB} is absent: the NAB smoke test needs the project's ../shared folder")
    data = tmp_path / "data"
    for rel in FILES:
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(NAB / "data" / rel, data / rel)
    return data


def test_nab_cli_writes_scorable_result_csvs(small_nab: Path, tmp_path: Path, monkeypatch):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        detectors, ["nab", str(small_nab), str(out), "--detector", "hst-default", "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    for rel in FILES:
        data_rows = list(csv.reader((small_nab / rel).read_text().splitlines()))
        res = out / Path(rel).parent / f"record-novelty_{Path(rel).name}"  # the alias resolves
        rows = list(csv.reader(res.read_text().splitlines()))
        assert rows[0] == ["timestamp", "value", "anomaly_score"]
        assert len(rows) == len(data_rows)
        for d, r in zip(data_rows[1:], rows[1:], strict=True):
            assert r[0] == d[0] and float(r[1]) == float(d[1])
            assert 0.0 <= float(r[2]) <= 1.0

    monkeypatch.syspath_prepend(str(NAB))
    nabscore = importlib.import_module("nabscore")
    report = nabscore.score_results(
        out, small_nab, NAB / "labels" / "combined_windows.json", profiles=["standard"]
    )
    assert report["files"] == 2
    assert "warnings" not in report or not any("outside" in w for w in report["warnings"])
    assert report["profiles"]["standard"]["score"] > 0  # it finds the latency failure


def test_unknown_detector_is_reported(small_nab: Path, tmp_path: Path):
    result = CliRunner().invoke(detectors, ["nab", str(small_nab), str(tmp_path / "o"), "--detector", "nope"])
    assert result.exit_code != 0
    assert "unknown detector 'nope'" in result.output


def test_list_marks_the_default():
    result = CliRunner().invoke(detectors, ["list"])
    assert result.exit_code == 0
    assert "* novelty-evt-mean " in result.output
    assert re.search(r"^  hst-default +deprecated alias of record-novelty", result.output, re.M)


def test_list_columns_line_up():
    """Every configuration's model, warm-up and selection start in the same column, whatever
    the length of its model's name (novelty-extreme is 15 characters, hst 3)."""
    lines = [ln for ln in CliRunner().invoke(detectors, ["list"]).output.splitlines() if "warmup=" in ln]
    assert len(lines) > 3
    assert len({ln.index("warmup=") for ln in lines}) == 1
    models = {ln[2:].split()[1] for ln in lines}
    assert {"novelty-extreme", "hst"} <= models


def test_bad_data_file_is_reported_with_its_line(tmp_path: Path):
    data = tmp_path / "data" / "cat"
    data.mkdir(parents=True)
    (data / "f.csv").write_text("timestamp,value\n2015-01-01 00:00:00,1\n2015-01-01 00:05:00,abc\n")
    result = CliRunner().invoke(
        detectors, ["nab", str(tmp_path / "data"), str(tmp_path / "o"), "--workers", "1"]
    )
    assert result.exit_code != 0
    assert "f.csv:3:1: bad row" in result.output


def test_empty_data_dir_is_reported(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(detectors, ["nab", str(tmp_path / "empty"), str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "no CSV data files" in result.output


def test_odd_but_readable_values_and_times_are_scored(tmp_path: Path):
    """A gap written as nan or inf (not learned, scored 0) and one time with an offset among
    naive ones (read as UTC) are scored like the rest; they stopped the run with a traceback."""
    data = tmp_path / "data" / "cat"
    data.mkdir(parents=True)
    rows = [f"2015-01-01 {h:02d}:{m:02d}:00,{(h * 12 + m) % 7}" for h in range(20) for m in range(0, 60, 5)]
    rows[200] = "2015-01-01 16:40:00,inf"
    rows[201] = "2015-01-01 16:45:00,nan"
    rows[202] = "2015-01-01T16:50:00+00:00,3.5"
    (data / "f.csv").write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    result = CliRunner().invoke(
        detectors, ["nab", str(tmp_path / "data"), str(tmp_path / "o"), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    out = list(csv.reader((tmp_path / "o" / "cat" / "novelty-evt-mean_f.csv").read_text().splitlines()))
    assert len(out) == len(rows) + 1
    assert out[201][1:] == ["inf", "0.0"] and out[202][1:] == ["nan", "0.0"]
    assert out[203][0] == "2015-01-01T16:50:00+00:00" and out[203][1] == "3.5"
    assert all(0.0 <= float(r[2]) <= 1.0 for r in out[1:])


def test_a_file_saved_with_a_byte_order_mark_and_crlf_is_scored(tmp_path: Path):
    """A CSV saved by a spreadsheet (UTF-8 with a BOM, CRLF lines) stopped the whole run: its first
    column read as '\\ufefftimestamp'."""
    data = tmp_path / "data" / "cat"
    data.mkdir(parents=True)
    rows = [f"2015-01-01 {h:02d}:{m:02d}:00,{(h + m) % 5}" for h in range(10) for m in range(0, 60, 5)]
    (data / "f.csv").write_bytes(("\ufefftimestamp,value\r\n" + "\r\n".join(rows) + "\r\n").encode())
    result = CliRunner().invoke(
        detectors, ["nab", str(tmp_path / "data"), str(tmp_path / "o"), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    out = list(csv.reader((tmp_path / "o" / "cat" / "novelty-evt-mean_f.csv").read_text().splitlines()))
    assert out[0] == ["timestamp", "value", "anomaly_score"] and len(out) == len(rows) + 1
    assert [r[0] for r in out[1:]] == [r.split(",")[0] for r in rows]
