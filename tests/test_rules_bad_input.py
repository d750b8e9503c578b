"""Issue 15, "Bad input": each is a `file:line:col` error a rule author understands, checked here
at its exact place through `atalaia rules check` (the command authors run)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import ATALAIA

COMPOUND = """rules:
  - id: x
    select: {{type: WaterObserved}}
{body}
    severity: high
"""

CASES = [
    (  # a join on a label the selected types do not carry
        "    join: {on: [parishh], within: 10m}\n    all: [{attribute: height, above: 1}]",
        ":4:17: join on label 'parishh': WaterObserved does not carry it",
        "(did you mean 'parish'?)",
    ),
    (  # a unit pint does not know, on a condition
        "    all:\n      - {attribute: flow, unit: m3/sx, above: 1}\n      - {attribute: height, above: 1}",
        ":5:33: unknown unit 'm3/sx': write it as pint reads units",
        "UN/CEFACT common code",
    ),
    (  # a condition's unit that cannot be converted from the one its type documents
        "    all:\n      - {attribute: flow, unit: mm, above: 1}\n      - {attribute: height, above: 1}",
        ":5:33: WaterObserved documents 'flow' in MQS",
        "cannot be converted to mm",
    ),
    (  # a table that is missing
        "    all:\n      - {attribute: height, above: {table: missing.csv, column: high}}",
        ":5:44: missing.csv:1: threshold table not readable",
        "No such file",
    ),
    (  # a table with a bad row (file:line of the table too)
        "    all:\n      - {attribute: height, above: {table: bad.csv, column: high}}",
        ":5:44: bad.csv:3: 'high' is not a number: 'lots'",
        "",
    ),
    (  # a compound rule mixing a text condition with a numeric aggregate
        "    any:\n      - {attribute: height, above: 4}\n"
        "      - {attribute: status, in: [fault], aggregate: {function: max, window: 5m}}",
        ":6:42: a text or boolean condition (equals, in) cannot have a numeric aggregate",
        "drop 'aggregate' or compare a number",
    ),
]


@pytest.mark.parametrize(("body", "where_message", "hint"), CASES)
def test_bad_input_is_a_file_line_col_error(tmp_path: Path, body: str, where_message: str, hint: str) -> None:
    (tmp_path / "bad.csv").write_text("entity,high\ng1,4.0\ng2,lots\n")
    f = tmp_path / "flood.yaml"
    f.write_text(COMPOUND.format(body=body))
    r = subprocess.run([ATALAIA, "rules", "check", str(f)], capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    where, message = where_message.split(" ", 1)  # ":line:col:", then the message (a table's
    # file:line is its path as the rule file names it, resolved)
    line = next((x for x in out.splitlines() if x.startswith(f"{f}{where} ")), None)
    assert line is not None, out
    assert message in line and hint in line, line


def test_the_projects_rules_check_clean_and_the_schema_has_the_compound_constructs() -> None:
    import json

    from tests.conftest import ROOT

    r = subprocess.run(
        [ATALAIA, "rules", "check", "--strict", str(ROOT / "config" / "rules")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "warning" not in r.stdout + r.stderr, r.stdout + r.stderr
    schema = subprocess.run([ATALAIA, "rules", "schema"], capture_output=True, text=True, timeout=60)
    text = json.dumps(json.loads(schema.stdout))
    for construct in ('"all"', '"any"', '"join"', '"within"', '"range"', '"changed_to"', '"unit"', '"table"'):
        assert construct in text, construct
