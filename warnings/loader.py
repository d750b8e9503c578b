"""Read a warning draft from YAML, every error at ``file:line:col`` (as the rule files do).

>>> try:
...     load_draft("sender: pc@cm-porto.pt\\nlevel: purple\\nevent: Cheia\\n"
...                "area: {geocodes: {DICOFRE: ['131203']}}\\n", "d.yaml")
... except DraftError as e:
...     print(e)
d.yaml:2:8: unknown level 'purple'; use one of: green, yellow, orange, red
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import ValidationError
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from atalaia.rules.errors import RuleError, RuleFileError
from atalaia.rules.loader import _message
from atalaia.streams.config_yaml import YamlError, YamlLimits, parse, plain
from atalaia.warnings.catalogue import Catalogue
from atalaia.warnings.draft import PT_BBOX, Draft, Loc, problems


class DraftError(RuleFileError):
    """A bad draft: ``errors`` are ``file:line:col: message`` (RuleError), sorted."""


def position(tree: Any, loc: Loc, at_key: bool = False) -> tuple[int, int]:
    """1-based line and column of the deepest node of ``loc`` that the YAML tree has. A list index
    into a mapping (a single area written without a list) stays on the mapping."""
    node = tree
    lc = getattr(tree, "lc", None)
    pos = (lc.line, lc.col) if lc is not None and lc.line is not None else (0, 0)
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, CommentedMap) and not isinstance(part, int) and part in node:
            pos = node.lc.key(part) if (last and at_key) else node.lc.value(part)
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            pos, node = node.lc.item(part), node[part]
        elif isinstance(node, CommentedMap) and part == 0:
            continue
        else:
            break
    return pos[0] + 1, pos[1] + 1


def _shape_errors(exc: ValidationError, tree: Any, file: str) -> list[RuleError]:
    out = []
    for err in exc.errors():
        # drop what pydantic adds for union branches and wrappers ('str', 'dict[str,...]', 'function-before')
        loc = tuple(p for p in err["loc"] if isinstance(p, int) or ("[" not in p and "function" not in p))
        loc = tuple(p for p in loc if p not in ("str", "int", "float", "list", "dict"))
        if err["type"] == "extra_forbidden":
            key = loc[-1]
            fields = [*Draft.model_fields, "msgType", "responseType", "senderName"]
            close = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            msg, at_key = f"unknown key '{key}'{hint}", True
        else:
            msg, at_key = _message(err, loc)
            if err["type"] == "missing":
                loc = loc[:-1]
        line, col = position(tree, loc, at_key)
        out.append(RuleError(file, line, col, msg))
    return out


def load_draft(
    text: str,
    file: str = "<draft>",
    catalogue: Catalogue | None = None,
    bbox: tuple[float, float, float, float] | None = PT_BBOX,
    limits: YamlLimits | None = None,
) -> Draft:
    """A checked draft; :class:`DraftError` with every problem otherwise. The YAML is read within
    the safe-loading limits of ``atalaia.streams.config_yaml`` (size, depth, aliases)."""
    try:
        tree = parse(text, file, limits, times_as_text=True)
    except YamlError as exc:
        raise DraftError([RuleError(exc.file, exc.line, exc.col, exc.message)]) from None
    if not isinstance(tree, CommentedMap):
        raise DraftError([RuleError(file, 1, 1, "a draft is a mapping: sender, status, msgType, level, ...")])
    try:
        draft = Draft.model_validate(plain(tree))
    except ValidationError as exc:
        errors = _shape_errors(exc, tree, file)
        raise DraftError(list({(e.line, e.col): e for e in errors}.values())) from None
    found = problems(draft, catalogue or Catalogue.load(), bbox)
    if found:
        errors = {}
        for loc, msg in found:
            if loc == ("references",) and "references" not in tree:
                loc = ("msgType",)  # an Update/Cancel without references: point at what needs them
            line, col = position(tree, loc)
            errors.setdefault((line, col, msg), RuleError(file, line, col, msg))
        raise DraftError(list(errors.values()))
    return draft


def field_errors(
    draft_data: dict[str, Any], catalogue: Catalogue
) -> tuple[Draft | None, list[dict[str, str]]]:
    """For the API: the draft, or its problems as ``{"field": "area.geocodes.DICOFRE.0", "message": ...}``."""
    try:
        draft = Draft.model_validate(draft_data)
    except ValidationError as exc:
        return None, [
            {
                "field": ".".join(str(p) for p in e["loc"]),
                "message": str(e["msg"]).removeprefix("Value error, "),
            }
            for e in exc.errors()
        ]
    return (
        draft,
        [
            {"field": ".".join(map(str, loc)) or "draft", "message": msg}
            for loc, msg in problems(draft, catalogue)
        ],
    )
