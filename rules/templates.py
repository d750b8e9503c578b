"""Labels and annotations are Jinja2 templates rendered in a sandbox (rule files are user input)."""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

VARIABLES = ("entity", "key", "value", "severity", "labels", "rule", "type", "attributes", "state")

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


class Template:
    """A compiled label/annotation value. Plain text (no ``{``) is returned as is, without Jinja."""

    __slots__ = ("_template", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._template = _env.from_string(source) if ("{" in source) else None

    def render(self, variables: dict[str, Any]) -> str:
        if self._template is None:
            return self.source
        try:
            return self._template.render(variables)
        except Exception as exc:  # a template must never stop alarm processing
            return f"<template error: {exc}>"


def template_problem(source: str) -> str | None:
    """A message for a template that cannot work (syntax error, unknown variable), else None."""
    try:
        ast: nodes.Template = _env.parse(source)
    except TemplateSyntaxError as exc:
        return f"template syntax error: {exc.message}"
    unknown = sorted(meta.find_undeclared_variables(ast) - set(VARIABLES))
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], VARIABLES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; available: {', '.join(VARIABLES)}"
        return f"unknown template variable '{unknown[0]}'{hint}"
    return None
