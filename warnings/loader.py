"""Read a warning draft from YAML, every error at ``file:line:col`` (as the rule files do).

>>> try:
...     load_draft("sender: pc@cm-porto.pt\\nlevel: purple\\nevent: Cheia\\n"
...                "area: {geocodes: {DICOFRE: ['131203']}}\\n", "d.yaml")
... except DraftError as e:
...     print(e)
d.yaml:2:8: unknown level 'purple'; use one of: green, azul, yellow, orange, red
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from ruamel.yaml.comments import CommentedMap

from atalaia.rules.errors import RuleError, RuleFileError
from atalaia.rules.loader import explain as rule_words
from atalaia.streams.config_yaml import Where, YamlError, YamlErrors, YamlLimits, located, parse, validate
from atalaia.warnings.catalogue import Catalogue
from atalaia.warnings.draft import PT_BBOX, Draft, problems, size_problems


class DraftError(RuleFileError):
    """A bad draft: ``errors`` are ``file:line:col: message`` (RuleError), sorted."""


def _explain(err: dict[str, Any], loc: tuple[Any, ...]) -> tuple[str, tuple[Any, ...], Where]:
    """A draft's wording of one pydantic error: the rule files' one, and an unknown key with the
    field it may have meant."""
    if err["type"] != "extra_forbidden":
        return rule_words(err, loc)
    if not loc:  # a key that is no text (a mapping or a list): nowhere to name it
        return "keys must be text", loc, "key"
    key = loc[-1]
    fields = [*Draft.model_fields, "msgType", "responseType", "senderName"]
    close = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown key '{key}'{hint}", loc, "key"


def load_draft(
    text: str,
    file: str = "<draft>",
    catalogue: Catalogue | None = None,
    bbox: tuple[float, float, float, float] | None = PT_BBOX,
    limits: YamlLimits | None = None,
    more: Callable[[Draft], list[tuple[tuple[Any, ...], str]]] | None = None,
) -> Draft:
    """A checked draft; :class:`DraftError` with every problem otherwise. The YAML is read within
    the safe-loading limits of ``atalaia.streams.config_yaml`` (size, depth, aliases). ``more``
    adds (location, message) problems of a valid draft (the warnings settings' tenancy)."""
    try:
        # every scalar as written: a draft's values are texts (contact 00351222090000, eventCode
        # 0289, a parameter 4.50), and the model reads a number only where it wants one (polygon
        # coordinates; geocodes get their leading zeros back)
        tree = parse(text, file, limits, times_as_text=True, numbers_as_text=True)
    except YamlError as exc:
        raise DraftError([RuleError(exc.file, exc.line, exc.col, exc.message)]) from None
    if not isinstance(tree, CommentedMap):
        raise DraftError([RuleError(file, 1, 1, "a draft is a mapping: sender, status, msgType, level, ...")])
    bad = []
    for field, what in (("parameters", "a parameter name"), ("eventCode", "an event code name")):
        params = tree.get(field)
        if not isinstance(params, CommentedMap):
            continue
        for k in params:  # (the loader writes every key as text: None -> "None")
            if not isinstance(k, str):
                try:
                    line, col = params.lc.key(k)
                except (KeyError, TypeError, AttributeError):
                    line, col = params.lc.line, params.lc.col
                bad.append(RuleError(file, line + 1, col + 1, f"{what} is a text, not {k!r}"))
    if bad:
        raise DraftError(bad)
    # the console's bounds (areas, geocodes, polygons and circles), before anything else looks at
    # the areas: a file past them was checked code by code and shape by shape, or rendered
    too_big = size_problems(tree)
    if too_big:
        raise DraftError([_at(tree, file, field, msg) for field, msg in too_big])
    try:
        draft = validate(tree, Draft, file, explain=_explain)
    except YamlErrors as exc:
        errors = [RuleError(e.file, e.line, e.col, e.message) for e in exc.errors]
        # a text is a string or a {language: string} mapping: when the string was refused for
        # what it holds, "must be a mapping" (the other branch) is noise at the same place
        said = {(e.line, e.col) for e in errors if " must be a mapping, got " not in e.message}
        errors = [
            e for e in errors if " must be a mapping, got " not in e.message or (e.line, e.col) not in said
        ]
        raise DraftError(list({(e.line, e.col, e.message): e for e in errors}.values())) from None
    found = problems(draft, catalogue or Catalogue.load(), bbox)
    if not found and more is not None:
        found = more(draft)
    if found:
        errors = {}
        for loc, msg in found:
            if loc == ("references",) and "references" not in tree:
                loc = ("msgType",)  # an Update/Cancel without references: point at what needs them
            e = located(tree, file, loc, msg, "value")
            errors.setdefault((e.line, e.col, msg), RuleError(file, e.line, e.col, msg))
        raise DraftError(list(errors.values()))
    return draft


def _at(tree: Any, file: str, field: str, message: str) -> RuleError:
    """``field`` (``area.0.geocodes``, as :func:`size_problems` names it) at its ``file:line:col``
    (an area written as one mapping has no index: the index is skipped)."""
    loc = tuple(int(p) if p.isdigit() else p for p in field.split("."))
    e = located(tree, file, loc, message, "value")
    return RuleError(file, e.line, e.col, f"{field}: {message}")


def field_path(data: Any, loc: tuple[Any, ...]) -> str:
    """The field a pydantic error ``loc`` names in ``data``, as ``area.0.geocodes.DICOFRE.0``:
    the parts of ``loc`` that are keys or indices of the data, in order. pydantic's own tags for
    the branches of a union (``function-after[_xml_text(), ...]``, ``dict[str,...]``) are no
    field, and are left out (walked alongside the data, so a key that looks like one is kept)."""
    parts: list[str] = []
    node = data
    for p in loc:
        in_dict = isinstance(node, dict) and p in node
        if in_dict or (isinstance(node, list | tuple) and isinstance(p, int) and -len(node) <= p < len(node)):
            node = node[p]
        elif isinstance(p, str) and _TAG.fullmatch(p):
            continue  # a union branch's tag
        else:
            node = None  # (not in the data: an extra key, a missing field) named as pydantic does
        parts.append(str(p))
    return ".".join(parts)


# pydantic's tags of union branches and validators: "str", "function-after[...]", "dict[str,int]"
_TAG = re.compile(r"(?:str|int|float|bool|list|dict|tuple|none|[\w-]+\[.*\])")


def unique_errors(data: Any, errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    """pydantic's errors as ``{"field", "message"}``, each once (the branches of a union can
    say the same thing of one field)."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for e in errors:
        field = field_path(data, tuple(e["loc"]))
        msg = str(e["msg"]).removeprefix("Value error, ")
        out.setdefault((field, msg), {"field": field, "message": msg})
    return list(out.values())


def field_errors(
    draft_data: dict[str, Any], catalogue: Catalogue
) -> tuple[Draft | None, list[dict[str, str]]]:
    """For the API: the draft, or its problems as ``{"field": "area.geocodes.DICOFRE.0", "message": ...}``
    (a draft whose areas hold too much is refused before anything else looks at it)."""
    too_big = size_problems(draft_data)
    if too_big:
        return None, [{"field": f, "message": m} for f, m in too_big]
    try:
        draft = Draft.model_validate(draft_data)
    except ValidationError as exc:
        return None, unique_errors(draft_data, exc.errors())
    return (
        draft,
        [
            {"field": ".".join(map(str, loc)) or "draft", "message": msg}
            for loc, msg in problems(draft, catalogue)
        ],
    )
