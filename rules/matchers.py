"""The one label matcher: rule ``where``, notification route ``labels``, inhibition, positions,
maintenance windows and silences all match labels with :class:`Matcher`.

Two spellings, both accepted where they were before:

* Alertmanager syntax (inhibition, positions, maintenance, silences): ``name="v"``,
  ``name!="v"``, ``name=~"re"``, ``name!~"re"``. Regular expressions are fully anchored, as in
  Alertmanager, and use RE2 syntax and semantics (``google-re2``), as Prometheus and Alertmanager
  (Go ``regexp``) do: matching takes time linear in the label value, whatever the pattern (a
  pattern like ``(a+)+b`` cannot stall the stage), and what RE2 cannot do (backreferences,
  lookahead/lookbehind, ``\\Z``) is refused when the matcher is parsed. A matcher on a label the alarm
  does not carry sees the empty string (so ``team!="hydro"`` matches an alarm without ``team``).
* The map shorthand (rule ``where``, route ``labels``): ``{name: value}`` or
  ``{name: [v1, v2]}``, :meth:`Matcher.any_of`: the label is present and equals the value (or one
  of the values).

>>> m = Matcher.parse('rule=~"station-(power|comms)-failure"')
>>> m.matches({"rule": "station-power-failure"})
True
>>> w = Matcher.any_of("district", ["13", "14"])
>>> str(w), w.matches({"district": "14"}), w.matches({})
('district=~"13|14"', True, False)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import re2

Op = Literal["=", "!=", "=~", "!~"]
_SYNTAX = re.compile(
    r'^\s*([A-Za-z_][A-Za-z0-9_:.\-]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|([^"\s][^"]*?))\s*$'
)
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error comes back as our ValueError, not on stderr
_RE2_OPTIONS.never_capture = True
#: a matcher remembers its verdict for this many short label values (rule names, parishes repeat)
_MEMO_SIZE = 1024
_MEMO_VALUE_LEN = 200


def compile_regex(value: str) -> Any:
    """The RE2 program of a matcher's regular expression (fully anchored by ``fullmatch``); a
    ValueError saying why for a pattern RE2 refuses (backreferences, lookaround, ``\\Z``, a
    repetition over 1000, a program over RE2's memory budget)."""
    try:
        return re2.compile(value, _RE2_OPTIONS)
    except re2.error as e:
        why = e.args[0] if e.args else e
        if isinstance(why, bytes):
            why = why.decode("utf-8", "replace")
        if "perl operator" in str(why) or "escape" in str(why):
            why = f"{why} (RE2 syntax, as in Prometheus and Alertmanager: no backreferences or lookaround)"
        raise ValueError(str(why)) from None
    except UnicodeError:
        raise ValueError("the regular expression is not valid Unicode text") from None


_ESCAPES = {'"': '"', "\\": "\\", "n": "\n"}


def _unquote(quoted: str) -> str:
    """A quoted value as Alertmanager reads it: ``\\"``, ``\\\\`` and ``\\n`` are unescaped, any
    other backslash is kept, so the regex ``station-\\d+`` means what it says (dropping it made
    ``station-d+``, matching no station, without a word)."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[0]), quoted, flags=re.DOTALL)


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: Op
    value: str
    _regex: Any = field(default=None, compare=False, repr=False)  # an RE2 program (=~, !~)
    _any: frozenset[str] | None = field(default=None, compare=False, repr=False)  # the map shorthand
    _memo: dict[str, bool] | None = field(default=None, init=False, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        m = _SYNTAX.match(text)
        if not m:
            raise ValueError(
                f'bad matcher {text!r}: expected name="value", name!="value", name=~"regex" or name!~"regex"'
            )
        name, op, quoted, bare = m.groups()
        value = _unquote(quoted) if quoted is not None else bare.strip()
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = compile_regex(value)
            except ValueError as e:
                raise ValueError(f"bad regular expression in matcher {text[:200]!r}: {e}") from None
        return cls(name, op, value, regex)  # type: ignore[arg-type]

    @classmethod
    def any_of(cls, name: str, values: str | Sequence[str]) -> Matcher:
        """The map shorthand ``{name: value}`` / ``{name: [v1, v2]}``: the label is present and is
        the value (or one of the values)."""
        vals = [values] if isinstance(values, str) else list(values)
        if len(vals) == 1:
            return cls(name, "=", vals[0], None, frozenset(vals))
        value = "|".join(re.escape(v) for v in vals)
        return cls(name, "=~", value, None, frozenset(vals))  # matched by the set, never by the regex

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~") and self._regex is None and self._any is None:
            object.__setattr__(self, "_regex", compile_regex(self.value))  # built directly: compile
        if self._regex is not None:
            object.__setattr__(self, "_memo", {})

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.accepts(labels.get(self.name))

    def accepts(self, actual: str | None) -> bool:
        """Whether a label's value (None: the label is absent) satisfies this matcher."""
        if self._any is not None:  # the map shorthand: a present label, one of the values
            return actual in self._any
        if actual is None:
            actual = ""
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = self._memo.get(actual) if self._memo is not None else None
        if hit is None:
            # RE2 reads UTF-8; a lone surrogate (from a YAML escape) is passed through, never raised
            assert self._regex is not None
            hit = self._regex.fullmatch(actual.encode("utf-8", "surrogatepass")) is not None
            if self._memo is not None and len(actual) <= _MEMO_VALUE_LEN:
                if len(self._memo) >= _MEMO_SIZE:
                    self._memo.clear()
                self._memo[actual] = hit
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def matches_all(matchers: tuple[Matcher, ...], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def from_map(where: Mapping[str, str | Sequence[str]]) -> tuple[Matcher, ...]:
    """The matchers of a ``{name: value | [values]}`` map (rule ``where``, route ``labels``)."""
    return tuple(Matcher.any_of(name, values) for name, values in where.items())
