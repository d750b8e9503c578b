"""Labels and annotations are Jinja2 templates rendered in a sandbox (rule files are user input)."""

from __future__ import annotations

import re
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

VARIABLES = (
    "entity",
    "key",
    "value",
    "severity",
    "labels",
    "rule",
    "type",
    "attributes",
    "state",
    "tenant",
    "values",
)

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


class Template:
    """A compiled label/annotation value. Plain text (no ``{``) is returned as is, without Jinja; text
    with only ``{{ variable }}`` substitutions is rendered as Jinja would (``str`` of each value) without
    Jinja's per-render context (they are rendered at every transition)."""

    __slots__ = ("_parts", "_template", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._template = _env.from_string(source) if ("{" in source) else None
        self._parts = _simple_parts(source) if self._template is not None else None

    def render(self, variables: dict[str, Any]) -> str:
        if self._template is None:
            return self.source
        parts = self._parts
        if parts is not None:
            try:
                return "".join([p if i % 2 == 0 else str(variables[p]) for i, p in enumerate(parts)])
            except Exception:  # a missing variable, a failing str(): Jinja says why
                pass
        try:
            return self._template.render(variables)
        except Exception as exc:  # a template must never stop alarm processing
            return f"<template error: {exc}>"


_SUBSTITUTION = re.compile(r"\{\{ *([a-z]+) *\}\}")


def _simple_parts(source: str) -> list[str] | None:
    """[text, variable, text, variable, ..., text] when the template is plain text (no braces, no line
    breaks: nothing Jinja would read or rewrite) and ``{{ variable }}`` of known variables, else None."""
    parts = _SUBSTITUTION.split(source)
    if any(name not in VARIABLES for name in parts[1::2]):
        return None
    if any(c in text for text in parts[0::2] for c in "{}\r\n"):
        return None
    return parts


def template_problem(source: str) -> str | None:
    """A message for a template that cannot work (syntax error, unknown variable), else None."""
    try:
        ast: nodes.Template = _env.parse(source)
        declared = meta.find_undeclared_variables(ast)  # compiles: an unknown filter or test fails here
    except TemplateSyntaxError as exc:
        return f"template syntax error: {exc.message}"
    unknown = sorted(declared - set(VARIABLES))
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], VARIABLES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; available: {', '.join(VARIABLES)}"
        return f"unknown template variable '{unknown[0]}'{hint}"
    return None
