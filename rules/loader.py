"""Load rule files keeping line/column, so that every error reads ``file:line:col: message``.

>>> ruleset = load_rules(["config/rules"])          # files or directories       # doctest: +SKIP
>>> errors = check_paths(["config/rules/hydro.yaml"])  # [] when the files are good # doctest: +SKIP
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel
from ruamel.yaml.comments import CommentedMap

from atalaia.rules.alarm import SEVERITIES
from atalaia.rules.checks import authoring_warnings, semantic_errors
from atalaia.rules.errors import RuleError, RuleFileError
from atalaia.rules.schema import Rule, RuleFile
from atalaia.streams.config_yaml import (
    Where,
    YamlError,
    YamlErrors,
    YamlLimits,
    parse,
    plain,
    position,
    read_text,
    validate,
)

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
    # what ``rules check`` warns about without refusing (names not in the Smart Data Models schema...)
    warnings: list[RuleError] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rules)

    @classmethod
    def of(cls, rules: Iterable[Rule], group: str = "default") -> RuleSet:
        return cls([LoadedRule(r, group, "<memory>", 0) for r in rules])


def _find(tree: Any, loc: Sequence[Any], at_key: bool = False) -> tuple[int, int]:
    return position(tree, loc, "key" if at_key else "value")


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


def explain(err: dict[str, Any], loc: tuple[Any, ...]) -> tuple[str, tuple[Any, ...], Where]:
    """The rule files' wording of one pydantic error (``config_yaml.validate``'s hook); an unknown
    key points at that key."""
    msg, at_key = _message(err, loc)
    if err["type"] == "unknown_key":
        loc = (*loc, err["ctx"]["key"])
    return msg, loc, "key" if at_key else "value"


def _rule_error(exc: YamlError) -> RuleError:
    """A refusal of the YAML loader as a rule error (syntax errors say so)."""
    prefix = "YAML syntax error: " if exc.kind == "syntax" else ""
    return RuleError(exc.file, exc.line, exc.col, prefix + exc.message)


def _first_per_place(errors: dict[tuple[int, int], RuleError], found: YamlErrors) -> None:
    """Add the validation errors of ``found`` to ``errors``, one per position (the first)."""
    for e in found.errors:
        errors.setdefault((e.line, e.col), _rule_error(e))


@dataclass(slots=True)
class ParsedFile:
    group: str
    rules: list[tuple[int, Rule]]  # (position in the file's 'rules' list, rule) of the rules that validated


def parse_text(
    text: str, file: str, limits: YamlLimits | None = None
) -> tuple[ParsedFile | None, Any, list[RuleError]]:
    """Parse and validate one file's text: (valid part or None, ruamel tree, errors)."""
    try:
        tree = parse(text, file, limits)
    except YamlError as exc:
        return None, None, [_rule_error(exc)]
    if tree is None:
        return None, None, [RuleError(file, 1, 1, "empty rule file: expected 'group:' and 'rules:'")]
    if not isinstance(tree, CommentedMap):
        return None, tree, [RuleError(file, 1, 1, "a rule file must be a mapping with 'group:' and 'rules:'")]
    plain_tree = plain(tree)
    errors: dict[tuple[int, int], RuleError] = {}

    def check(model: type[M], data: Any, prefix: tuple[Any, ...] = ()) -> M | None:
        try:
            return validate(tree, model, file, data=data, prefix=prefix, explain=explain)
        except YamlErrors as exc:
            _first_per_place(errors, exc)
            return None

    raw_rules = plain_tree.get("rules")
    header = {k: v for k, v in plain_tree.items() if k != "rules"}
    # the file level first (unknown keys, group), then each rule on its own: one bad rule hides no other
    check(RuleFile, {**header, "rules": []})
    rules: list[tuple[int, Rule]] = []
    if raw_rules is None:
        if "rules" not in plain_tree:
            line, col = _find(tree, ())
            errors.setdefault((line, col), RuleError(file, line, col, "missing required key 'rules'"))
    elif not isinstance(raw_rules, list):
        line, col = _find(tree, ("rules",))
        errors.setdefault((line, col), RuleError(file, line, col, "'rules' must be a list of rules"))
    else:
        for i, raw in enumerate(raw_rules):
            rule = check(Rule, raw, ("rules", i))
            if rule is not None:
                rules.append((i, rule))
    group = header.get("group") if isinstance(header.get("group"), str) else None
    return ParsedFile(group or Path(file).stem, rules), tree, list(errors.values())


def load_model(text: str, file: str, model: type[M], limits: YamlLimits | None = None) -> M:
    """Validate a YAML document against a pydantic model with ``file:line:col`` errors (RuleFileError)."""
    try:
        tree = parse(text, file, limits)
    except YamlError as exc:
        raise RuleFileError([_rule_error(exc)]) from None
    if not isinstance(tree, CommentedMap):
        raise RuleFileError([RuleError(file, 1, 1, "expected a mapping at the top of the file")])
    try:
        return validate(tree, model, file, explain=explain)
    except YamlErrors as exc:
        errors: dict[tuple[int, int], RuleError] = {}
        _first_per_place(errors, exc)
        raise RuleFileError(list(errors.values())) from None


def _files(paths: Iterable[str | Path]) -> tuple[list[Path], list[RuleError]]:
    files, errors = [], []
    for p in map(Path, paths):
        if p.is_dir():
            # hidden names are an editor's or a file system's, never rules: an Emacs lock
            # (.#city.yaml, a dangling link), a macOS resource fork (._city.yaml), a vim swap
            found = sorted(f for f in [*p.glob("*.yaml"), *p.glob("*.yml")] if not f.name.startswith("."))
            if not found:
                errors.append(RuleError(str(p), 1, 1, "no rule files (*.yaml, *.yml) in this directory"))
            files += found
        elif p.is_file():
            files.append(p)
        elif p.exists():  # a FIFO, a device (a link to /dev/zero), a socket: never read
            errors.append(RuleError(str(p), 1, 1, "not a regular file (a FIFO, device or socket); not read"))
        else:
            errors.append(RuleError(str(p), 1, 1, "no such file or directory"))
    return files, errors


def file_stamps(paths: Iterable[str | Path]) -> tuple[tuple[str, int], ...]:
    """(file, mtime in ns) of every rule file the paths name, as ``load_rules`` would read them:
    equal stamps, unchanged files (the rules stage and the console compare them to reload)."""
    files = []
    for p in map(Path, paths):
        cands = (
            sorted(f for f in [*p.glob("*.yaml"), *p.glob("*.yml")] if not f.name.startswith("."))
            if p.is_dir()
            else [p]
        )  # (hidden files are not rule files: an editor's lock, macOS's ._ files)
        for f in cands:
            try:
                files.append((str(f), f.stat().st_mtime_ns))
            except FileNotFoundError:
                continue
    return tuple(files)


def detector_errors(
    rules: list[tuple[int, Rule]], detectors: Collection[str], locate: Callable[..., tuple[str, int, int]]
) -> list[RuleError]:
    """A rule naming a detector the detectors configuration does not have (a typo would
    otherwise pass every check and fail on the first observation it scores)."""
    errors = []
    for i, rule in rules:
        if rule.detector is None or rule.detector in detectors:
            continue
        close = difflib.get_close_matches(rule.detector, sorted(detectors), n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        errors.append(
            RuleError(
                *locate(("rules", i, "detector")),
                f"unknown detector '{rule.detector}' ({hint}the detectors configuration has "
                f"{', '.join(sorted(detectors))})",
            )
        )
    return errors


def load_texts(
    sources: Iterable[tuple[str, str]],
    limits: YamlLimits | None = None,
    detectors: Collection[str] | None = None,
) -> RuleSet:
    """Load ``(file name, text)`` pairs into one RuleSet; raises RuleFileError with every error.
    With ``detectors`` (the names the detectors configuration knows, ``DetectorsConfig.known``)
    a rule's ``detector:`` must be one of them."""
    limits = limits or YamlLimits.from_env()
    errors: list[RuleError] = []
    ruleset = RuleSet()
    seen: dict[str, str] = {}
    for file, text in sources:
        model, tree, errs = parse_text(text, file, limits)
        errors += errs
        if model is None:
            continue
        errors += semantic_errors(
            model.rules, seen, lambda loc, at_key=False, t=tree, f=file: (f, *_find(t, loc, at_key))
        )
        ruleset.warnings += authoring_warnings(
            model.rules, lambda loc, at_key=False, t=tree, f=file: (f, *_find(t, loc, at_key))
        )
        if detectors is not None:
            errors += detector_errors(model.rules, detectors, lambda loc, t=tree, f=file: (f, *_find(t, loc)))
        for i, rule in model.rules:
            line, _ = _find(tree, ("rules", i))
            ruleset.rules.append(LoadedRule(rule, model.group, file, line))
    if errors:
        raise RuleFileError(errors)
    return ruleset


def load_rules(
    paths: Iterable[str | Path], limits: YamlLimits | None = None, detectors: Collection[str] | None = None
) -> RuleSet:
    """Load rule files and directories (``*.yaml``/``*.yml``); raises RuleFileError listing all errors.
    Each file is held to ``limits`` (default: ``YamlLimits.from_env()``); a file over the size
    limit is refused without being read. ``detectors``: as for ``load_texts``."""
    limits = limits or YamlLimits.from_env()
    files, errors = _files(paths)
    sources = []
    for f in files:
        try:
            sources.append((str(f), read_text(f, limits)))
        except YamlError as exc:
            errors.append(_rule_error(exc))
    try:
        ruleset = load_texts(sources, limits, detectors)
    except RuleFileError as exc:
        errors += exc.errors
    if errors:
        raise RuleFileError(errors)
    return ruleset


def check_paths(
    paths: Iterable[str | Path], limits: YamlLimits | None = None, detectors: Collection[str] | None = None
) -> list[RuleError]:
    try:
        load_rules(paths, limits, detectors)
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
