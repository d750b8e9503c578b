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
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import YAMLError

from atalaia.rules.errors import RuleError, RuleFileError
from atalaia.rules.loader import _message, _plain, _yaml_error
from atalaia.warnings.catalogue import Catalogue
from atalaia.warnings.draft import PT_BBOX, Draft, Loc, problems


class _TimesAsText(RoundTripConstructor):
    """Times stay text: the draft checks them itself (a bad one is an error at its position, not a crash
    of the YAML reader, and its offset is never lost)."""


_TimesAsText.add_constructor("tag:yaml.org,2002:timestamp", RoundTripConstructor.construct_yaml_str)


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.Constructor = _TimesAsText
    return y


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
) -> Draft:
    """A checked draft; :class:`DraftError` with every problem otherwise."""
    try:
        tree = _yaml().load(text)
    except YAMLError as exc:
        raise DraftError([_yaml_error(exc, text, file)]) from None
    except ValueError as exc:
        raise DraftError([RuleError(file, 1, 1, f"cannot read the YAML: {exc}")]) from None
    if not isinstance(tree, CommentedMap):
        raise DraftError([RuleError(file, 1, 1, "a draft is a mapping: sender, status, msgType, level, ...")])
    try:
        draft = Draft.model_validate(_plain(tree))
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
