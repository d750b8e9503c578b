"""Every replay case (shared promtool-derived ones and our own) reproduced exactly by `atalaia rules replay`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from atalaia.rules.cli import rules

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
OWN = Path(__file__).resolve().parent / "data" / "rules_cases"
FIELDS = ("at", "rule", "key", "state", "severity")


def _cases(root: Path) -> list[Path]:
    return sorted(d for d in root.glob("[0-9][0-9]-*") if d.is_dir()) if root.is_dir() else []


def _replay(case: Path) -> list[dict]:
    result = CliRunner().invoke(rules, ["replay", str(case / "rules.yaml"), str(case / "observations.jsonl")])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def _expected(case: Path) -> list[dict]:
    return [json.loads(line) for line in (case / "expected.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("case", _cases(SHARED / "rulecases"), ids=lambda p: p.name)
def test_shared_rulecase(case: Path) -> None:
    got = [{k: line[k] for k in FIELDS} for line in _replay(case)]
    assert got == _expected(case)


def test_shared_rulecases_present() -> None:
    if not (SHARED / "rulecases").is_dir():
        pytest.skip(f"shared test data not found at {SHARED / 'rulecases'}")
    assert len(_cases(SHARED / "rulecases")) >= 4


@pytest.mark.parametrize("case", _cases(OWN), ids=lambda p: p.name)
def test_own_case(case: Path) -> None:
    lines = _replay(case)
    assert [{k: line[k] for k in FIELDS} for line in lines] == _expected(case)
    assert all(list(line) in ([*FIELDS, "value"], [*FIELDS, "value", "values"]) for line in lines)


def test_replay_values_are_the_evaluated_aggregate() -> None:
    case = SHARED / "rulecases" / "05-avg-window"
    if not case.is_dir():
        pytest.skip(f"shared test data not found at {case}")
    first = _replay(case)[0]
    # avg of 3.8 x6 and 7.0 over (00:-4:20, 00:05:40]
    assert first["value"] == pytest.approx((3.8 * 6 + 7.0) / 7)
