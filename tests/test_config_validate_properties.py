"""Property: the one validation path (``config_yaml.validate``) answers any YAML mapping, for every
configuration model and the wording its loader uses, with the model or with ``YamlErrors`` whose
every line reads ``file:line:col: message`` inside the file, never with another exception."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from ruamel.yaml import YAML

from atalaia.console.auth import Users
from atalaia.detectors.config import DetectorsConfig
from atalaia.incidents.config import IncidentConfig
from atalaia.notifiers.config import EscalationConfig
from atalaia.rules.loader import explain as rule_words
from atalaia.rules.ruletest import RuleTestFile
from atalaia.rules.schema import Rule, RuleFile
from atalaia.streams.config_yaml import YamlError, YamlErrors, parse, validate
from atalaia.warnings.config import WarningsConfig
from atalaia.warnings.draft import Draft
from atalaia.warnings.loader import _explain as draft_words

# (model, at, explain) as each loader calls validate
MODELS: dict[str, tuple[type[BaseModel], str, Any]] = {
    "rule-file": (RuleFile, "value", rule_words),
    "rule": (Rule, "value", rule_words),
    "rule-tests": (RuleTestFile, "value", rule_words),
    "warnings-config": (WarningsConfig, "value", rule_words),
    "escalation": (EscalationConfig, "auto", None),
    "detectors": (DetectorsConfig, "key", None),
    "incidents": (IncidentConfig, "key", None),
    "users": (Users, "auto", None),
    "draft": (Draft, "auto", draft_words),
}


def _walk(model: type[BaseModel], seen: set[type] | None = None) -> tuple[set[str], set[str]]:
    """(every field name and alias of ``model`` and of the models inside it, so that the drawn
    mappings reach the nested validators instead of stopping at an unknown key; the names of
    those fields that hold another model, at any depth)."""
    seen = seen if seen is not None else set()
    if model in seen:
        return set(), set()
    seen.add(model)
    names: set[str] = set()
    holders: set[str] = set()
    for name, field in model.model_fields.items():
        own = {name, *([field.alias] if field.alias else [])}
        names |= own
        stack = [field.annotation]
        while stack:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                inner, inner_holders = _walk(t, seen)
                names |= inner
                holders |= own | inner_holders
            stack += [a for a in typing.get_args(t) if a is not None]
    return names, holders


def _field_names(model: type[BaseModel]) -> set[str]:
    return _walk(model)[0]


def _values(keys: list[str]) -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(10**6), 10**6)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.sampled_from(["", "x", "30s", "5m", "red", "operator", "2026-01-01T00:00:00Z", "a.b", "-1"])
        | st.sampled_from(keys)
        | st.text(max_size=8)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(keys) | st.text(min_size=1, max_size=5), inner, max_size=4)
        ),
        max_leaves=12,
    )


def _yaml(value: Any) -> str:
    import io

    out = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False  # block style: problems on many lines
    yaml.dump(value, out)
    return out.getvalue()


@pytest.mark.parametrize("kind", sorted(MODELS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_validate_answers_any_mapping_with_positioned_errors(kind: str, data: st.DataObject) -> None:
    model, at, explain = MODELS[kind]
    keys = sorted(_field_names(model))
    mapping = data.draw(st.dictionaries(st.sampled_from(keys), _values(keys), min_size=1, max_size=6))
    text = _yaml(mapping)
    try:
        tree = parse(text, "c.yaml")
    except YamlError:  # the dumper wrote what it cannot read back ('?0'): not what is tested here
        assume(False)
    lines = text.count("\n") + 1
    try:
        validate(tree, model, "c.yaml", at, explain=explain)
    except YamlErrors as exc:
        assert exc.errors, "YamlErrors without an error"
        for e in exc.errors:
            assert (e.file, e.kind) == ("c.yaml", "value"), e
            assert 1 <= e.line <= lines and e.col >= 1, e
            assert str(e).startswith(f"c.yaml:{e.line}:{e.col}: ") and e.message.strip(), e


ODD = [None, 0, 2.5, "", [None], {}, {"x": None}]


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_validate_answers_every_field_given_an_odd_value_at_any_depth(kind: str) -> None:
    """The sweep the property above samples: each field name, with each odd value (null, a number,
    an empty list or mapping...), at the top and one level down under every field that holds a
    model (and under a free-form key, for mappings of models). A nested
    ``area: {circle: null}`` once raised TypeError from a before-validator instead of an error at
    its line."""
    model, at, explain = MODELS[kind]
    keys = sorted(_field_names(model))
    for outer in [None, "x", *sorted(_walk(model)[1])]:
        for name in keys:
            for odd in ODD:
                mapping = {name: odd} if outer is None else {outer: {name: odd}}
                tree = parse(_yaml(mapping), "c.yaml")
                try:
                    validate(tree, model, "c.yaml", at, explain=explain)
                except YamlErrors as exc:
                    assert exc.errors and all(e.file == "c.yaml" and e.line >= 1 for e in exc.errors), mapping
