"""Safe YAML with positions: the one loader behind every configuration file Atalaia reads (rules,
incidents, escalation, detectors, console users, settings, warnings).

Every refusal is a :class:`YamlError` that reads ``file:line:col: message``. Before a value is
built, a file must pass these limits (each an environment variable, see :class:`YamlLimits`):

* its size, checked with ``stat`` before reading (a 1 GB file is never read; FIFOs and devices
  are refused);
* the nesting depth;
* the number of values, **counting every alias at each use** — a billion-laughs file is refused
  at the alias that would blow the count, before anything is expanded;
* the number of aliases; an alias that refers to the node that contains it is refused;
* a parse-time limit (checked while composing; :func:`run_isolated` adds a hard one).

>>> tree = parse("a: &x [1, 2]\\nb: *x\\n", "demo.yaml")
>>> plain(tree), position(tree, ("a", 1))
({'a': [1, 2], 'b': [1, 2]}, (1, 11))
>>> parse("a: &x [1, 2]\\nb: [*x, *x, *x]\\n", "bomb.yaml", YamlLimits(max_nodes=8))
Traceback (most recent call last):
...
atalaia.streams.config_yaml.YamlError: bomb.yaml:2:5: alias *x expands to 3 values: alias expansion exceeds the limit of 8 values per file (ATALAIA_YAML_MAX_NODES); is this a YAML bomb?

:func:`run_isolated` runs a loader in a child process with a hard time and memory limit (the
live rule reload uses it, so a hostile file never touches the worker's event loop or memory).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer
from ruamel.yaml.constructor import DuplicateKeyError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, ScalarEvent
from ruamel.yaml.scalarbool import ScalarBoolean

MiB = 1024 * 1024
log = logging.getLogger("atalaia.config")

#: a lone UTF-16 surrogate, which a double-quoted "\\ud800" escape yields
_SURROGATE = re.compile(r"[\ud800-\udfff]")
#: a UTF-16 surrogate pair, which a double-quoted "\\ud83c\\udf0a" yields (JSON's way to write a
#: character beyond U+FFFF, RFC 8259 §7, and what Python's json.dump writes): one character
_SURROGATE_PAIR = re.compile(r"[\ud800-\udbff][\udc00-\udfff]")


def _join_pairs(text: str) -> str:
    return _SURROGATE_PAIR.sub(lambda m: m[0].encode("utf-16-le", "surrogatepass").decode("utf-16-le"), text)


#: the values ruamel quotes in a duplicate-key message
_DUPLICATE_VALUES = re.compile(r" with value .*\Z", re.S)


def _env_number(name: str, default: float, kind: type = int) -> Any:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r}: must be positive")
    return value


@dataclass(frozen=True, slots=True)
class YamlLimits:
    """What one configuration file may cost. ``YamlLimits.from_env()`` reads the overrides."""

    max_bytes: int = 4 * MiB  # ATALAIA_YAML_MAX_BYTES
    max_depth: int = 64  # ATALAIA_YAML_MAX_DEPTH
    max_nodes: int = 100_000  # ATALAIA_YAML_MAX_NODES, aliases counted at each use (≈ 5 s of parsing)
    max_aliases: int = 1_000  # ATALAIA_YAML_MAX_ALIASES
    timeout_s: float = 10.0  # ATALAIA_YAML_TIMEOUT_S
    max_memory_mb: int = 1024  # ATALAIA_YAML_MAX_MEMORY_MB (only for run_isolated's child)

    @classmethod
    def from_env(cls) -> YamlLimits:
        d = cls()
        return cls(
            max_bytes=_env_number("ATALAIA_YAML_MAX_BYTES", d.max_bytes),
            max_depth=_env_number("ATALAIA_YAML_MAX_DEPTH", d.max_depth),
            max_nodes=_env_number("ATALAIA_YAML_MAX_NODES", d.max_nodes),
            max_aliases=_env_number("ATALAIA_YAML_MAX_ALIASES", d.max_aliases),
            timeout_s=_env_number("ATALAIA_YAML_TIMEOUT_S", d.timeout_s, float),
            max_memory_mb=_env_number("ATALAIA_YAML_MAX_MEMORY_MB", d.max_memory_mb),
        )


class YamlError(ValueError):
    """One problem in one file, ``file:line:col: message`` (line and col 1-based).

    ``kind`` says what failed: ``read`` (cannot read the file), ``syntax`` (not YAML), ``limit``
    (over a :class:`YamlLimits` limit), ``value`` (does not validate, see :func:`validate`)."""

    def __init__(self, file: str, line: int, col: int, message: str, kind: str = "limit") -> None:
        self.file, self.line, self.col, self.message, self.kind = file, line, col, message, kind
        super().__init__(f"{file}:{line}:{col}: {message}")

    def __reduce__(self) -> tuple:
        return (YamlError, (self.file, self.line, self.col, self.message, self.kind))


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" or n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def read_text(path: str | Path, limits: YamlLimits | None = None) -> str:
    """A configuration file's UTF-8 text, refused (``YamlError``) when it is not a regular file or
    is larger than ``limits.max_bytes``: the size is checked before reading, and at most one byte
    over the limit is ever read (a file that grows meanwhile is refused too)."""
    limits = limits or YamlLimits.from_env()
    name = str(path)
    try:
        st = os.stat(path)  # before opening: opening a FIFO would block
        if not stat.S_ISREG(st.st_mode):
            raise YamlError(name, 1, 1, "not a regular file", "read")
        if st.st_size > limits.max_bytes:
            raise YamlError(name, 1, 1, _too_big(st.st_size, limits), "read")
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # replaced meanwhile
                raise YamlError(name, 1, 1, "not a regular file", "read")
            data = f.read(limits.max_bytes + 1)
    except OSError as exc:
        raise YamlError(name, 1, 1, f"cannot read: {exc.strerror or exc}", "read") from None
    if len(data) > limits.max_bytes:
        raise YamlError(name, 1, 1, _too_big(len(data), limits, "over"), "read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        col = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        raise YamlError(
            name, line, col, f"cannot read: not UTF-8 text (byte 0x{data[exc.start]:02x})", "read"
        ) from None


def _too_big(size: int, limits: YamlLimits, prefix: str = "") -> str:
    got = f"{prefix} {_size(limits.max_bytes)}" if prefix else _size(size)
    return (
        f"file is {got}, over the {_size(limits.max_bytes)} limit for configuration files"
        " (ATALAIA_YAML_MAX_BYTES); not read"
    )


# --- parsing with limits ------------------------------------------------------------------------


def _error_at(composer: _SafeComposer, mark: Any, message: str) -> YamlError:
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return YamlError(composer.loader._atalaia_file, line, col, message, "limit")


class _SafeComposer(Composer):
    """ruamel's composer, counting as it goes: depth, values (aliases at their expanded size),
    aliases and time. The count runs before any value is built, so nothing is ever expanded."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.limits: YamlLimits = loader._atalaia_limits
        self.deadline = time.monotonic() + self.limits.timeout_s
        self.total = 0  # values so far, each alias counted at its expanded size
        self.aliases = 0
        self.level = 0
        self.expanded: dict[int, int] = {}  # id(anchored node) -> its expanded size, once complete

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        limits = self.limits
        if isinstance(event, AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:  # (an undefined alias is ruamel's own error)
                self.aliases += 1
                if self.aliases > limits.max_aliases:
                    raise _error_at(
                        self,
                        event.start_mark,
                        f"more than {limits.max_aliases} aliases in one file (ATALAIA_YAML_MAX_ALIASES)",
                    )
                size = self.expanded.get(id(target))
                if size is None:
                    raise _error_at(
                        self,
                        event.start_mark,
                        f"alias *{event.anchor} refers to the value that contains it"
                        " (a recursive structure cannot be loaded)",
                    )
                if self.total + size > limits.max_nodes:
                    raise _error_at(
                        self,
                        event.start_mark,
                        f"alias *{event.anchor} expands to {size} values: alias expansion exceeds the limit"
                        f" of {limits.max_nodes} values per file (ATALAIA_YAML_MAX_NODES); is this a YAML bomb?",
                    )
                self.total += size
            return super().compose_node(parent, index)
        if isinstance(event, ScalarEvent) and _SURROGATE.search(event.value):
            event.value = _join_pairs(event.value)
        if isinstance(event, ScalarEvent) and _SURROGATE.search(event.value):
            # a "\\ud800" escape: not a character, so no UTF-8 (JSON, XML, Kafka) can carry it,
            # and it failed far from here (an alarm's encoding, a CAP document) after a clean check
            raise _error_at(
                self,
                event.start_mark,
                "a lone UTF-16 surrogate escape (\\ud800-\\udfff) is not a character:"
                " write the character itself, or its \\U escape",
            )
        self.level += 1
        if self.level > limits.max_depth:
            raise _error_at(
                self,
                event.start_mark,
                f"nesting deeper than {limits.max_depth} levels (ATALAIA_YAML_MAX_DEPTH)",
            )
        self.total += 1
        if self.total > limits.max_nodes:
            raise _error_at(
                self,
                event.start_mark,
                f"more than {limits.max_nodes} values in one file (ATALAIA_YAML_MAX_NODES)",
            )
        if self.total & 255 == 0 and time.monotonic() > self.deadline:
            raise _error_at(
                self,
                event.start_mark,
                f"parsing took longer than {limits.timeout_s:g} s (ATALAIA_YAML_TIMEOUT_S); refused here",
            )
        before = self.total
        node = super().compose_node(parent, index)
        self.level -= 1
        if event.anchor is not None:
            self.expanded[id(node)] = self.total - before + 1
        return node


class _SafeConstructor(RoundTripConstructor):
    """A value that cannot be built (an out-of-range date, a 5 000-digit integer) is a positioned
    error instead of a ValueError from deep inside ruamel."""

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (YAMLError, YamlError):
            raise
        except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
            raise self._error_at(node, f"cannot read this value: {exc}") from None

    def _error_at(self, node: Any, message: str) -> YamlError:
        """A syntax error at ``node``'s start in the file being read."""
        mark = node.start_mark
        return YamlError(self.loader._atalaia_file, mark.line + 1, mark.column + 1, message, "syntax")

    def construct_tagged_str(self, node: Any) -> Any:
        """A scalar with an explicit core tag it is read as text under (``!!str 0289``, the YAML
        way to say "this is text"; ``!!int``, ``!!float``, ``!!timestamp`` where those are read as
        written) is that text, as if quoted: ruamel's round-trip reader kept it as a
        ``TaggedScalar`` (to write the tag back), which no model takes ('must be text, got
        TaggedScalar(...)')."""
        return self.construct_scalar(node)

    def construct_unknown_tag(self, node: Any) -> Any:
        """A tag no loader knows (``!foo``, ``!!python/object:...``) is an error at the tag:
        ruamel's round-trip reader kept the value with its tag, and the model said "must be text,
        got TaggedScalar(value='bar', style=None, tag=Tag('!foo'))"."""
        tag = node.ctag
        written = f"{tag.handle}{tag.suffix}" if tag.handle else str(tag)
        raise self._error_at(
            node, f"unknown YAML tag {written}: no tags are read here; write the value without it"
        )


_SafeConstructor.add_constructor("tag:yaml.org,2002:str", _SafeConstructor.construct_tagged_str)
_SafeConstructor.add_constructor(None, _SafeConstructor.construct_unknown_tag)


class _TimesAsText(_SafeConstructor):
    """Timestamps stay text (the caller checks them itself: a bad one is an error at its position,
    and an offset is never lost to ruamel's conversion)."""


_TimesAsText.add_constructor("tag:yaml.org,2002:timestamp", _SafeConstructor.construct_tagged_str)


class _NumbersAsText(_TimesAsText):
    """Numbers stay text too, exactly as written (``00351222090000``, ``0289``, ``4.50``, ``0x1F``,
    ``1_000``): for files whose values are texts (a warning draft's phone number, event code,
    parameter), where the caller reads a number itself only where its model wants one."""


for _tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
    _NumbersAsText.add_constructor(_tag, _SafeConstructor.construct_tagged_str)


def _in_plain_words(exc: Any, text: str, mark: Any, said: str) -> tuple[Any, str]:
    """(where, what) for the YAML mistakes people make by hand, in words a rule author can act
    on, the parser's own words kept after them; the place is where the mistake starts (the
    opening quote or bracket of one never closed, not the end of the file). Anything else: the
    parser's words at its mark."""
    problem, context = str(exc.problem or ""), str(exc.context or "")
    start = exc.context_mark
    at = f"line {start.line + 1}, column {start.column + 1}" if start else ""
    words = ""
    if problem.startswith("expected <block end>, but found"):
        kind = "list" if "collection" in context else "mapping"
        words = (
            f"this line does not line up with the {kind} it follows (from {at}): indent it with "
            "spaces to the same column as the entries it belongs with"
        )
        if problem.endswith("'-'"):
            words += "; a list item is '- ' with a space after the dash"
    elif problem == "but found another document":
        words = (
            "a second YAML document starts here: a file holds one document; remove this '---' "
            "and what follows it, or put that in a file of its own"
        )
    elif problem.startswith("found character '\\t'"):
        words = "a tab: YAML indents with spaces only"
    elif problem == "found unexpected end of stream" and "quoted scalar" in context and start:
        quote = text[start.index : start.index + 1]  # (the mark's index: exact with \r and a BOM)
        quote = quote if quote in ("'", '"') else '"'
        return start, f"a string opened with {quote} here is never closed ({said})"
    elif problem == "mapping values are not allowed here":
        words = (
            "a ': ' inside a value: a colon and a space start a key, so quote a value that holds "
            "one, or check this line's indentation"
        )
    elif problem == "could not find expected ':'" and start:
        return start, f"this line is not 'key: value' (or the string before it is not closed) ({said})"
    elif problem.startswith("expected ',' or ") and "flow" in context and start:
        close = "}" if "mapping" in context else "]"
        opened = "{" if close == "}" else "["
        if problem.endswith("'<stream end>'"):
            return start, f"a '{opened}' here is never closed with '{close}' ({said})"
        words = (
            f"expected ',' or '{close}' here: is the '{opened}' opened at {at} closed? (or a comma is "
            "missing, or a value with ': ' needs quotes)"
        )
    return (mark, f"{words} ({said})") if words else (mark, said)


def _syntax_error(exc: YAMLError, text: str, file: str) -> YamlError:
    """A ruamel.yaml error as ``file:line:col: <what ruamel says>`` (kind ``syntax``)."""
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = str(exc.problem or exc.context or "invalid YAML")
        if isinstance(exc, DuplicateKeyError):
            # ruamel quotes both values: a password hash, an HMAC secret, a token in a URL
            what = _DUPLICATE_VALUES.sub("", what) + " (values not shown)"
        else:
            try:
                mark, what = _in_plain_words(exc, text, mark, what)
            except Exception:  # plain words are a courtesy: never a crash instead of the error
                log.debug("no plain words for %r", exc, exc_info=True)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return YamlError(file, line, col, what, "syntax")
    position = getattr(exc, "position", None)
    if isinstance(position, int):  # reader errors (control characters, bad encoding)
        before = text[:position]
        line, col = before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1
        char = getattr(exc, "character", "")
        char = chr(char) if isinstance(char, int) else char
        what = f"character {char!r} is not allowed" if char else str(exc).splitlines()[0]
        return YamlError(file, line, col, what, "syntax")
    first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
    return YamlError(file, 1, 1, first, "syntax")


_COMMENT_HINT = "a comment here cannot be read (ruamel); put the comment on a line of its own"


def _comment_position(message: str) -> tuple[int, int]:
    """The first ``line: N, col: M`` of a ruamel comment-overlap message (0-based line), 1-based."""
    m = re.search(r"line: (\d+), col: (\d+)", message)
    return (int(m.group(1)) + 1, int(m.group(2)) + 1) if m else (1, 1)


def parse(
    text: str,
    file: str,
    limits: YamlLimits | None = None,
    times_as_text: bool = False,
    numbers_as_text: bool = False,
) -> Any:
    """One YAML document as a ruamel round-trip tree (``None`` when empty), within ``limits``;
    raises :class:`YamlError`. Values keep their positions for :func:`position`. With
    ``times_as_text`` timestamps are kept as written, with ``numbers_as_text`` timestamps and
    numbers (``0289`` stays ``"0289"``, not 289)."""
    limits = limits or YamlLimits.from_env()
    if len(text) > limits.max_bytes:
        raise YamlError(file, 1, 1, _too_big(len(text), limits), "read")
    yaml = YAML(typ="rt")
    yaml.Composer = _SafeComposer
    yaml.Constructor = (
        _NumbersAsText if numbers_as_text else _TimesAsText if times_as_text else _SafeConstructor
    )
    yaml._atalaia_limits = limits
    yaml._atalaia_file = file
    try:
        return yaml.load(text)
    except YamlError:
        raise
    except YAMLError as exc:
        raise _syntax_error(exc, text, file) from None
    except RecursionError:  # not reachable within max_depth; kept as a guard
        raise YamlError(file, 1, 1, "nesting too deep", "limit") from None
    except (ValueError, TypeError, OverflowError, ArithmeticError, LookupError, AttributeError) as exc:
        raise YamlError(file, 1, 1, f"cannot read this file as YAML: {exc}", "syntax") from None
    except NotImplementedError as exc:  # ruamel's round-trip reader cannot place some comments
        raise YamlError(file, *_comment_position(str(exc)), _COMMENT_HINT, "syntax") from None
    except AssertionError as exc:  # ruamel asserts the %YAML version it reads (1.1 or 1.2)
        if "version" not in str(exc):
            raise
        raise YamlError(
            file,
            _directive_line(text),
            1,
            f"unsupported %YAML version ({exc}): write %YAML 1.2, or no directive",
            "syntax",
        ) from None


def _directive_line(text: str) -> int:
    """The 1-based line of the first ``%YAML`` directive (1 when there is none)."""
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("%YAML"):
            return n
    return 1


def load_file(path: str | Path, limits: YamlLimits | None = None) -> Any:
    """:func:`read_text` then :func:`parse`."""
    limits = limits or YamlLimits.from_env()
    return parse(read_text(path, limits), str(path), limits)


# --- using the tree -------------------------------------------------------------------------------


def plain(node: Any) -> Any:
    """The tree as plain Python (dict with str keys, list, str, int, float, bool, ...): ruamel's
    scalar subclasses become their base type. Linear in the size the limits allowed."""
    if isinstance(node, dict):
        return {k if isinstance(k, str) else str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool | ScalarBoolean):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def _lc(node: Any) -> tuple[int, int] | None:
    lc = getattr(node, "lc", None)
    if lc is None or lc.line is None:
        return None
    return lc.line, lc.col


Where = Literal["value", "key", "auto"]  # which part of a node a position points at


def position(tree: Any, loc: Sequence[Any], at: Where = "value") -> tuple[int, int]:
    """1-based (line, col) of the deepest node on ``loc`` that exists in the tree: the value's
    position (``at="value"``), its key's (``"key"``), or the key of a mapping or list and the
    value of a scalar (``"auto"``). List items are at their item. Parts of ``loc`` that are not in
    the tree (pydantic's union tags) end the walk."""
    node = tree
    pos = _lc(tree) or (0, 0)
    for part in loc:
        try:
            if isinstance(node, CommentedMap) and isinstance(part, str) and part not in node:
                # a key that is no text (~, true, [a, b]) is named by its text (plain()'s str(key))
                part = next((k for k in node if not isinstance(k, str) and str(k) == part), part)
            if isinstance(node, CommentedMap) and not isinstance(part, list | dict) and part in node:
                child = node[part]
                key = at == "key" or (at == "auto" and isinstance(child, dict | list))
                found = node.lc.key(part) if key else node.lc.value(part)
                node = child
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                found, node = node.lc.item(part), node[part]
            else:
                break
        except (KeyError, TypeError, AttributeError, IndexError):  # merged keys carry no position
            break
        if found is None:  # (a key merged from a '<<' mapping may have none: its parent's stays)
            break
        pos = found
    return pos[0] + 1, pos[1] + 1


def in_tree(tree: Any, loc: Sequence[Any]) -> tuple[Any, ...]:
    """The parts of a pydantic error location that name nodes of the tree, in order, plus a final
    missing key: pydantic's union and discriminator tags (``'str'``, ``'list[str]'``,
    ``'function-after[...]'``, ``'hours'``) are dropped."""
    node, out = tree, []
    for i, part in enumerate(loc):
        in_map = isinstance(node, dict) and not isinstance(part, list | dict) and part in node
        if in_map or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and i == len(loc) - 1 and not _is_tag(part):
            out.append(part)  # a missing (or extra) key: named, the position stays on the parent
            break
        else:
            continue  # a tag pydantic adds: skip it
        out.append(part)
    return tuple(out)


def _is_tag(part: str) -> bool:
    """A pydantic union/validator tag (``function-before[_text(), str]``, ``list[str]``), never a key
    the user could have written with its brackets."""
    return "[" in part or part.startswith("function-")


class YamlErrors(ValueError):
    """Several problems in one file; ``errors`` holds them, the message has one per line."""

    def __init__(self, errors: list[YamlError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))

    def __reduce__(self) -> tuple:
        return (YamlErrors, (self.errors,))


# A loader's own wording of one pydantic error: ``explain(error, loc)`` -> (message, the location
# to point at, which part of that node). ``loc`` is the error's location in the tree (``in_tree``).
Explain = Callable[[dict[str, Any], tuple[Any, ...]], tuple[str, tuple[Any, ...], Where]]


def _plain_message(at: Where) -> Explain:
    """The default wording: ``where.in.the.tree: pydantic's message``."""

    def explain(err: dict[str, Any], loc: tuple[Any, ...]) -> tuple[str, tuple[Any, ...], Where]:
        where = ".".join(str(p) for p in loc)
        msg = str(err["msg"]).removeprefix("Value error, ")
        return f"{where + ': ' if where else ''}{msg}", loc, at

    return explain


def located(tree: Any, file: str, loc: Sequence[Any], message: str, at: Where = "auto") -> YamlError:
    """A problem found after validation (a cross-reference, a semantic check) at the node of the
    tree that ``loc`` names (pydantic's tags dropped, see :func:`in_tree`)."""
    line, col = position(tree, in_tree(tree, tuple(loc)), at)
    return YamlError(file, line, col, message, "value")


_TREE: Any = object()


def validate(
    tree: Any,
    model: Any,
    file: str,
    at: Where = "auto",
    *,
    data: Any = _TREE,
    prefix: tuple[Any, ...] = (),
    explain: Explain | None = None,
) -> Any:
    """``model.model_validate(plain(tree))`` (a pydantic model) with every validation error as a
    :class:`YamlError` ``file:line:col: where: message`` in :class:`YamlErrors`: the one path from
    a pydantic error to a position that every configuration loader takes::

        draft = validate(load_file(path), Draft, str(path))

    ``at`` says where a problem points (the value, its key, or ``auto``: the key of a mapping or
    list, the value of a scalar). ``data`` validates something else than the whole tree (a part
    of it, already :func:`plain`) that sits at ``prefix`` in the tree. ``explain`` words each
    error the loader's way and may move where it points (see :data:`Explain`)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(plain(tree) if data is _TREE else data)
    except ValidationError as exc:
        explain = explain or _plain_message(at)
        problems = []
        for err in exc.errors():
            message, loc, where = explain(err, in_tree(tree, (*prefix, *err["loc"])))
            line, col = position(tree, loc, where)
            problems.append(YamlError(file, line, col, message, "value"))
        raise YamlErrors(problems) from None


# --- loading off the event loop -------------------------------------------------------------------


class IsolatedLoadError(RuntimeError):
    """The child process of :func:`run_isolated` timed out or died (e.g. its memory limit)."""


@dataclass(slots=True)
class _Call:
    target: str  # "module:function"
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


def run_isolated(
    target: Callable[..., Any] | str, *args: Any, limits: YamlLimits | None = None, **kwargs: Any
) -> Any:
    """Call ``target(*args, **kwargs)`` (a module-level function, e.g. ``load_rules``) in a fresh
    Python process with an address-space limit of ``limits.max_memory_mb`` and a hard wall-clock
    limit of ``limits.timeout_s`` + 5 s (start-up); return its result or raise its exception.
    Blocking: call it from a worker thread (``asyncio.to_thread``), never on the event loop.
    Raises :class:`IsolatedLoadError` when the child times out or dies."""
    limits = limits or YamlLimits.from_env()
    if not isinstance(target, str):
        target = f"{target.__module__}:{target.__qualname__}"
    payload = pickle.dumps(_Call(target, args, kwargs))
    env = {**os.environ, "ATALAIA_YAML_MAX_MEMORY_MB": str(limits.max_memory_mb)}
    for name, value in (
        ("MAX_BYTES", limits.max_bytes),
        ("MAX_DEPTH", limits.max_depth),
        ("MAX_NODES", limits.max_nodes),
        ("MAX_ALIASES", limits.max_aliases),
        ("TIMEOUT_S", limits.timeout_s),
    ):
        env[f"ATALAIA_YAML_{name}"] = str(value)
    hard = limits.timeout_s + 5.0
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "atalaia.streams.config_yaml"],
            input=payload,
            capture_output=True,
            timeout=hard,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:  # subprocess.run has killed the child
        raise IsolatedLoadError(f"took longer than {hard:g} s (ATALAIA_YAML_TIMEOUT_S); stopped") from None
    if proc.returncode != 0 or not proc.stdout:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise IsolatedLoadError(
            f"the loader process failed (exit {proc.returncode}; memory limit"
            f" {limits.max_memory_mb} MiB, ATALAIA_YAML_MAX_MEMORY_MB): {tail[0]}"
        )
    ok, value = pickle.loads(proc.stdout)  # our own child's answer
    if ok:
        return value
    raise value


def _child() -> None:  # pragma: no cover - runs in the child process of run_isolated
    import importlib
    import resource

    limits = YamlLimits.from_env()
    try:
        cap = limits.max_memory_mb * MiB
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or hard > cap:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap if hard != resource.RLIM_INFINITY else hard))
    except (ValueError, OSError):
        pass
    call: _Call = pickle.loads(sys.stdin.buffer.read())
    module, _, name = call.target.partition(":")
    func: Any = importlib.import_module(module)
    for part in name.split("."):
        func = getattr(func, part)
    try:
        answer = (True, func(*call.args, **call.kwargs))
    except Exception as exc:
        answer = (False, exc)
    try:
        out = pickle.dumps(answer)
        pickle.loads(out)  # an exception that cannot travel back is sent as text
    except Exception:
        out = pickle.dumps((False, IsolatedLoadError(f"{type(answer[1]).__name__}: {answer[1]}")))
    sys.stdout.buffer.write(out)
    sys.stdout.flush()


if __name__ == "__main__":  # pragma: no cover
    from atalaia.streams.config_yaml import _child as child  # the module's own classes, not __main__'s

    child()
