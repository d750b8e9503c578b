"""The one label matcher: rule ``where``, notification route ``labels``, inhibition, positions,
maintenance windows and silences all match labels with :class:`Matcher`.

Two spellings, both accepted where they were before:

* Alertmanager syntax (inhibition, positions, maintenance, silences): ``name="v"``,
  ``name!="v"``, ``name=~"re"``, ``name!~"re"``. Regular expressions are fully anchored, as in
  Alertmanager. A matcher on a label the alarm does not carry sees the empty string (so
  ``team!="hydro"`` matches an alarm without ``team``).
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
from typing import Literal

Op = Literal["=", "!=", "=~", "!~"]
_SYNTAX = re.compile(
    r'^\s*([A-Za-z_][A-Za-z0-9_:.\-]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|([^"\s][^"]*?))\s*$'
)


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: Op
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)
    _any: frozenset[str] | None = field(default=None, compare=False, repr=False)  # the map shorthand

    @classmethod
    def parse(cls, text: str) -> Matcher:
        m = _SYNTAX.match(text)
        if not m:
            raise ValueError(
                f'bad matcher {text!r}: expected name="value", name!="value", name=~"regex" or name!~"regex"'
            )
        name, op, quoted, bare = m.groups()
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare.strip()
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(f"(?:{value})\\Z")
            except re.error as e:
                raise ValueError(f"bad regular expression in matcher {text!r}: {e}") from None
        return cls(name, op, value, regex)  # type: ignore[arg-type]

    @classmethod
    def any_of(cls, name: str, values: str | Sequence[str]) -> Matcher:
        """The map shorthand ``{name: value}`` / ``{name: [v1, v2]}``: the label is present and is
        the value (or one of the values)."""
        vals = [values] if isinstance(values, str) else list(values)
        if len(vals) == 1:
            return cls(name, "=", vals[0], None, frozenset(vals))
        value = "|".join(re.escape(v) for v in vals)
        return cls(name, "=~", value, re.compile(f"(?:{value})\\Z"), frozenset(vals))

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
        assert self._regex is not None
        hit = self._regex.match(actual) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def matches_all(matchers: tuple[Matcher, ...], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def from_map(where: Mapping[str, str | Sequence[str]]) -> tuple[Matcher, ...]:
    """The matchers of a ``{name: value | [values]}`` map (rule ``where``, route ``labels``)."""
    return tuple(Matcher.any_of(name, values) for name, values in where.items())
