"""Load rule files keeping line/column, so that every error reads ``file:line:col: message``.

>>> ruleset = load_rules(["config/rules"])          # files or directories       # doctest: +SKIP
>>> errors = check_paths(["config/rules/hydro.yaml"])  # [] when the files are good # doctest: +SKIP
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from atalaia.rules.alarm import SEVERITIES
from atalaia.rules.checks import semantic_errors
from atalaia.rules.errors import RuleError, RuleFileError
from atalaia.rules.schema import Rule, RuleFile

M = TypeVar("M", bound=BaseModel)
_TYPE_WORDS = {
    "float_parsing": "a number",
    "float_type": "a number",
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}


@dataclass(frozen=True, slots=True)
class LoadedRule:
    rule: Rule
    group: str
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class RuleSet:
    """Validated rules in file order (the order that breaks ties between same-time transitions)."""

    rules: list[LoadedRule] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rules)

    @classmethod
    def of(cls, rules: Iterable[Rule], group: str = "default") -> RuleSet:
        return cls([LoadedRule(r, group, "<memory>", 0) for r in rules])


class _Positions:
    """Maps a pydantic error location to a node position in the ruamel.yaml tree."""

    def __init__(self, tree: Any) -> None:
        self.tree = tree

    def find(self, loc: Sequence[Any], at_key: bool = False) -> tuple[int, int]:
        node, pos = self.tree, _node_pos(self.tree)
        for i, part in enumerate(loc):
            last = i == len(loc) - 1
            if isinstance(node, CommentedMap) and part in node:
                line, col = node.lc.key(part) if (last and at_key) else node.lc.value(part)
                pos, node = (line, col), node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                pos, node = node.lc.item(part), node[part]
            else:
                break
        return pos[0] + 1, pos[1] + 1


def _node_pos(node: Any) -> tuple[int, int]:
    lc = getattr(node, "lc", None)
    if lc is None or lc.line is None:
        return (0, 0)
    return (lc.line, lc.col)


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def _message(err: dict[str, Any], loc: tuple[Any, ...]) -> tuple[str, bool]:
    """(message, points at the key) for one pydantic error."""
    kind = err["type"]
    names = [p for p in loc if isinstance(p, str)]
    name = names[-1] if names else "value"
    got = err.get("input")
    if kind == "unknown_key":
        return err["msg"], True
    if kind == "missing":
        return f"missing required key '{name}'", False
    if kind in _TYPE_WORDS:
        return f"'{name}' must be {_TYPE_WORDS[kind]}, got {got!r}", False
    if kind == "literal_error":
        allowed = [
            str(x).strip("'")
            for x in err.get("ctx", {}).get("expected", "").replace(" or ", ", ").split(", ")
        ]
        what = "severity" if name == "severity" else f"'{name}'"
        close = difflib.get_close_matches(str(got), allowed, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown {what} {got!r}{hint}; use one of: {', '.join(allowed)}", False
    if kind == "value_error":
        return f"'{name}': {str(err['msg']).removeprefix('Value error, ')}", False
    if kind == "string_pattern_mismatch":
        return (
            f"'{name}' {got!r} may only contain letters, digits and _ . : - (and start with a letter or digit)",
            False,
        )
    if kind in ("string_too_short", "too_short"):
        return f"'{name}' must not be empty", False
    return f"'{name}': {err['msg']}", False


def _strip_union_branches(loc: tuple[Any, ...], tree: Any) -> tuple[Any, ...]:
    """The part of a pydantic location that exists in the tree (plus a missing key's name); drops the
    parts pydantic adds for union branches (``'str'``, ``'list[str]'``)."""
    node, out = tree, []
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            node = node[part]
        elif isinstance(node, dict):
            out.append(part)  # a missing key: named in the message, position stays on the parent
            break
        else:
            break
        out.append(part)
    return tuple(out)


def _yaml_error(exc: YAMLError, text: str, file: str) -> RuleError:
    """A ruamel.yaml error as ``file:line:col: YAML syntax error: ...``."""
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return RuleError(
            file, line, col, f"YAML syntax error: {exc.problem or exc.context or 'invalid YAML'}"
        )
    position = getattr(exc, "position", None)
    if isinstance(position, int):  # reader errors (control characters, bad encoding)
        before = text[:position]
        line, col = before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1
        char = getattr(exc, "character", "")
        char = chr(char) if isinstance(char, int) else char
        what = f"character {char!r} is not allowed" if char else str(exc).splitlines()[0]
        return RuleError(file, line, col, f"YAML syntax error: {what}")
    return RuleError(
        file, 1, 1, f"YAML syntax error: {str(exc).splitlines()[0] if str(exc) else 'invalid YAML'}"
    )


@dataclass(slots=True)
class ParsedFile:
    group: str
    rules: list[tuple[int, Rule]]  # (position in the file's 'rules' list, rule) of the rules that validated


def parse_text(text: str, file: str) -> tuple[ParsedFile | None, Any, list[RuleError]]:
    """Parse and validate one file's text: (valid part or None, ruamel tree, errors)."""
    try:
        tree = YAML(typ="rt").load(text)
    except YAMLError as exc:
        return None, None, [_yaml_error(exc, text, file)]
    if tree is None:
        return None, None, [RuleError(file, 1, 1, "empty rule file: expected 'group:' and 'rules:'")]
    if not isinstance(tree, CommentedMap):
        return None, tree, [RuleError(file, 1, 1, "a rule file must be a mapping with 'group:' and 'rules:'")]
    pos = _Positions(tree)
    plain = _plain(tree)
    errors: dict[tuple[int, int], RuleError] = {}

    def collect(exc: ValidationError, prefix: tuple[Any, ...]) -> None:
        for err in exc.errors():
            loc = _strip_union_branches((*prefix, *err["loc"]), tree)
            msg, at_key = _message(err, loc)
            if err["type"] == "unknown_key":
                loc = (*loc, err["ctx"]["key"])
            line, col = pos.find(loc, at_key=at_key)
            errors.setdefault((line, col), RuleError(file, line, col, msg))

    raw_rules = plain.get("rules")
    header = {k: v for k, v in plain.items() if k != "rules"}
    try:  # the file level first (unknown keys, group), then each rule on its own: one bad rule hides no other
        RuleFile.model_validate({**header, "rules": []})
    except ValidationError as exc:
        collect(exc, ())
    rules: list[tuple[int, Rule]] = []
    if raw_rules is None:
        if "rules" not in plain:
            line, col = pos.find(())
            errors.setdefault((line, col), RuleError(file, line, col, "missing required key 'rules'"))
    elif not isinstance(raw_rules, list):
        line, col = pos.find(("rules",))
        errors.setdefault((line, col), RuleError(file, line, col, "'rules' must be a list of rules"))
    else:
        for i, raw in enumerate(raw_rules):
            try:
                rules.append((i, Rule.model_validate(raw)))
            except ValidationError as exc:
                collect(exc, ("rules", i))
    group = header.get("group") if isinstance(header.get("group"), str) else None
    return ParsedFile(group or Path(file).stem, rules), tree, list(errors.values())


def load_model(text: str, file: str, model: type[M]) -> M:
    """Validate a YAML document against a pydantic model with ``file:line:col`` errors (RuleFileError)."""
    try:
        tree = YAML(typ="rt").load(text)
    except YAMLError as exc:
        raise RuleFileError([_yaml_error(exc, text, file)]) from None
    if not isinstance(tree, CommentedMap):
        raise RuleFileError([RuleError(file, 1, 1, "expected a mapping at the top of the file")])
    pos = _Positions(tree)
    try:
        return model.model_validate(_plain(tree))
    except ValidationError as exc:
        errors = {}
        for err in exc.errors():
            loc = _strip_union_branches(tuple(err["loc"]), tree)
            msg, at_key = _message(err, loc)
            if err["type"] == "unknown_key":
                loc = (*loc, err["ctx"]["key"])
            line, col = pos.find(loc, at_key=at_key)
            errors.setdefault((line, col), RuleError(file, line, col, msg))
        raise RuleFileError(list(errors.values())) from None


def _files(paths: Iterable[str | Path]) -> tuple[list[Path], list[RuleError]]:
    files, errors = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            if not found:
                errors.append(RuleError(str(p), 1, 1, "no rule files (*.yaml, *.yml) in this directory"))
            files += found
        elif p.is_file():
            files.append(p)
        else:
            errors.append(RuleError(str(p), 1, 1, "no such file or directory"))
    return files, errors


def load_texts(sources: Iterable[tuple[str, str]]) -> RuleSet:
    """Load ``(file name, text)`` pairs into one RuleSet; raises RuleFileError with every error."""
    errors: list[RuleError] = []
    ruleset = RuleSet()
    seen: dict[str, str] = {}
    for file, text in sources:
        model, tree, errs = parse_text(text, file)
        errors += errs
        if model is None:
            continue
        pos = _Positions(tree)
        errors += semantic_errors(
            model.rules, seen, lambda loc, at_key=False, p=pos, f=file: (f, *p.find(loc, at_key))
        )
        for i, rule in model.rules:
            line, _ = pos.find(("rules", i))
            ruleset.rules.append(LoadedRule(rule, model.group, file, line))
    if errors:
        raise RuleFileError(errors)
    return ruleset


def load_rules(paths: Iterable[str | Path]) -> RuleSet:
    """Load rule files and directories (``*.yaml``/``*.yml``); raises RuleFileError listing all errors."""
    files, errors = _files(paths)
    sources = []
    for f in files:
        try:
            sources.append((str(f), f.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(RuleError(str(f), 1, 1, f"cannot read: {exc}"))
    try:
        ruleset = load_texts(sources)
    except RuleFileError as exc:
        errors += exc.errors
    if errors:
        raise RuleFileError(errors)
    return ruleset


def check_paths(paths: Iterable[str | Path]) -> list[RuleError]:
    try:
        load_rules(paths)
    except RuleFileError as exc:
        return exc.errors
    return []


__all__ = [
    "SEVERITIES",
    "LoadedRule",
    "RuleError",
    "RuleFileError",
    "RuleSet",
    "check_paths",
    "load_rules",
    "load_texts",
    "parse_text",
]
