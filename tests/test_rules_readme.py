"""Every YAML example in rules/README.md is valid: rule files load, the rule-test example validates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from atalaia.rules.loader import load_model, load_texts
from atalaia.rules.ruletest import RuleTestFile

README = Path(__file__).resolve().parents[1] / "rules" / "README.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_has_yaml_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("n", range(len(BLOCKS)))
def test_readme_yaml_example_is_valid(n: int) -> None:
    text = BLOCKS[n]
    if text.lstrip().startswith("rule_files:"):
        load_model(text, f"README block {n}", RuleTestFile)
    else:
        ruleset = load_texts([(f"README block {n}.yaml", text)])
        assert len(ruleset) >= 1


def test_schema_covers_the_new_constructs_and_accepts_the_readme_rules() -> None:
    import jsonschema
    from ruamel.yaml import YAML

    from atalaia.rules.schema import json_schema

    schema = json_schema()
    rule = schema["$defs"]["Rule"]["properties"]
    level = schema["$defs"]["Level"]["properties"]
    assert "unit" in rule
    assert {"equals", "in", "changed_to"} <= set(level)
    assert {"range", "all", "any", "join"} <= set(rule)
    assert "ThresholdRef" in schema["$defs"] and "Condition" in schema["$defs"]
    for text in BLOCKS:
        if not text.lstrip().startswith("rule_files:"):
            jsonschema.validate(YAML(typ="safe").load(text), schema)


def test_the_readme_rule_test_example_passes_as_written(tmp_path: Path) -> None:
    """Valid is not enough: a newcomer copies it and runs it (its expected transitions were out
    of date and the example failed)."""
    from click.testing import CliRunner

    from atalaia.rules.cli import rules

    (text,) = [b for b in BLOCKS if b.lstrip().startswith("rule_files:")]
    config = README.parents[1] / "config"
    test_file = tmp_path / "t_test.yaml"
    test_file.write_text(text.replace("../../../config", str(config)), encoding="utf-8")
    result = CliRunner().invoke(rules, ["test", str(test_file)])
    assert result.exit_code == 0 and "1 passed, 0 failed" in result.output, result.output
