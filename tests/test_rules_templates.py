"""Templates made only of text and ``{{ variable }}`` skip Jinja's render machinery: the output must be
exactly Jinja's, for any text around the substitutions and any variable values."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import TemplateSyntaxError

from atalaia.rules.templates import VARIABLES, Template, _env

FRAGMENTS = st.sampled_from(
    [
        *(f"{{{{ {name} }}}}" for name in VARIABLES),
        "{{entity}}",
        "{{  value  }}",
        "{{ nope }}",
        "{{ none }}",
        "{{ value|round(1) }}",
        "{{- key -}}",
        "{% if value %}hi{% endif %}",
        "{# c #}",
        " at ",
        "x",
        "%",
        "#",
        "}}",
        "{",
        "}",
        "\n",
        "\r\n",
        "\t",
        " m",
        "é",
    ]
)
VALUES = st.one_of(
    st.none(),
    st.floats(allow_nan=True),
    st.integers(),
    st.text(max_size=5),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)


def jinja(source: str, variables: dict) -> str:
    try:
        return _env.from_string(source).render(variables)
    except Exception as exc:
        return f"<template error: {exc}>"


@settings(max_examples=500, deadline=None)
@given(
    st.lists(FRAGMENTS, min_size=1, max_size=6),
    st.fixed_dictionaries({}, optional=dict.fromkeys(VARIABLES, VALUES)),
)
def test_simple_templates_render_exactly_as_jinja(fragments: list[str], variables: dict) -> None:
    source = "".join(fragments)
    if "{" not in source:
        return  # plain text is returned as written, without Jinja (unchanged)
    try:
        template = Template(source)
    except TemplateSyntaxError:
        return
    assert template.render(variables) == jinja(source, variables)


def test_the_usual_annotation_takes_the_simple_path() -> None:
    template = Template("{{ entity }} at {{ value }} m")
    assert template._parts == ["", "entity", " at ", "value", " m"]
    assert template.render({"entity": "urn:x", "value": 4.25}) == "urn:x at 4.25 m"
    assert Template("{{ '%.2f' | format(value) }}")._parts is None
